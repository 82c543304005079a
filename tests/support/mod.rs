//! Real `ra` processes on loopback, for the integration tests: the library's
//! process harness ([`ra::tools::process`]) with the test binary's `ra`, a
//! scratch directory per test, and typed reads of the logs and the shared file.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ra::cs::{CsEvent, CsRecord};
use ra::event::Event;
use ra::protocol::ids::ProcessId;
pub use ra::tools::process::{RaProcess as Node, Spawn};

pub fn ra() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ra"))
}

/// A directory for one test's files (a fresh name each time, so two runs
/// never collide), removed unless the test failed.
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ra-test-{name}-"))
            .tempdir()
            .expect("a scratch directory");
        Self { dir: Some(dir) }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the scratch directory").path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// How to start a node named `name` here: `ra --bind 127.0.0.1:0 ...`.
    pub fn spawn(&self, name: &str) -> Spawn {
        Spawn::new(env!("CARGO_BIN_EXE_ra"), self.dir(), name)
    }

    /// Start a node named `name` with these arguments.
    pub fn start(&self, name: &str, args: &[&str]) -> Node {
        Node::start(self.spawn(name).args(args)).unwrap_or_else(|e| panic!("start {name}: {e:#}"))
    }

    /// Start a node that joins through `seed`.
    pub fn start_joining(&self, name: &str, seed: &Node, args: &[&str]) -> Node {
        Node::start(self.spawn(name).join(seed.addr()).args(args))
            .unwrap_or_else(|e| panic!("start {name}: {e:#}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("test files kept in {}", dir.keep().display());
        }
    }
}

/// Poll `condition` until it holds or `within` passes.
pub fn wait_for(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// Read what the node logged since the last look; a log line that does not fit
/// the schema fails the test.
pub fn read(node: &mut Node) -> &mut Node {
    node.poll()
        .unwrap_or_else(|e| panic!("{}'s log: {e:#}", node.name));
    node
}

/// Whether the node logged an event `pick` takes (reading its log first).
pub fn logged(node: &mut Node, pick: impl Fn(&Event) -> bool) -> bool {
    read(node).logged(pick)
}

/// The active set the node last installed, as addresses (reading its log first).
pub fn active_set(node: &mut Node) -> Vec<std::net::SocketAddr> {
    read(node)
        .active_set()
        .map(|set| set.iter().map(|p| p.addr).collect())
        .unwrap_or_default()
}

/// Whether `member` is the process `node` is.
pub fn is(member: &ProcessId, node: &Node) -> bool {
    *member == node.me
}

/// The shared critical-section file's records.
pub fn cs_records(path: &Path) -> Vec<CsRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Exits recorded in the shared file.
pub fn exits(path: &Path) -> usize {
    cs_records(path)
        .iter()
        .filter(|r| r.event == CsEvent::Exit)
        .count()
}

/// Check the shared file with `ra check`'s own checker: entries and exits
/// alternate per lock, exits by the holder, fences increase. Returns the
/// entries as (node, fence, unix_us).
pub fn assert_mutual_exclusion(path: &Path) -> Vec<(String, u64, u64)> {
    let report = ra::tools::check::check_file(path).expect("a readable shared file");
    assert!(
        report.ok() && report.max_holders <= 1,
        "{}",
        ra::tools::check::summary(&report)
    );
    cs_records(path)
        .into_iter()
        .filter(|r| r.event == CsEvent::Enter)
        .map(|r| (r.node, r.fence, r.unix_us))
        .collect()
}
