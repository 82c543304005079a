//! Real `ra` processes on loopback, for the integration tests.

#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub fn ra() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ra"))
}

/// A port free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    ra::tools::free_loopback_port().expect("a free loopback port")
}

/// A directory for one test's files, removed unless the test failed.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ra-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("test files kept in {}", self.dir.display());
        }
    }
}

/// One `ra` process; killed when dropped.
pub struct Node {
    pub port: u16,
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub log: PathBuf,
}

impl Node {
    /// Start `ra --bind :PORT [args...] --log-format json`, logs to a file.
    pub fn start(scratch: &Scratch, port: u16, args: &[&str]) -> Self {
        let log = scratch.path(&format!("node-{port}.log"));
        let out = scratch.path(&format!("node-{port}.out"));
        let child = ra()
            .arg("--bind")
            .arg(format!(":{port}"))
            .args(args)
            .args(["--log-format", "json"])
            .stdin(Stdio::piped())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("start ra");
        let mut node = Self {
            port,
            child,
            stdin: None,
            log,
        };
        node.stdin = node.child.stdin.take();
        node
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Type a line on the node's stdin (an empty line asks for the critical section).
    pub fn type_line(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            writeln!(stdin, "{line}").expect("write to the node's stdin");
            stdin.flush().expect("flush stdin");
        }
    }

    pub fn request(&mut self, times: usize) {
        let lines = "\n".repeat(times);
        if let Some(stdin) = self.stdin.as_mut() {
            stdin
                .write_all(lines.as_bytes())
                .expect("write to the node's stdin");
            stdin.flush().expect("flush stdin");
        }
    }

    /// End of input, as when a script's stdin runs out.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The node's log events as JSON values.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn has_event(&self, pick: impl Fn(&serde_json::Value) -> bool) -> bool {
        self.events().iter().any(pick)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety concerns.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Wait for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
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

pub fn event_is(event: &serde_json::Value, kind: &str) -> bool {
    event.get("event").and_then(|e| e.as_str()) == Some(kind)
}

/// The active set a node last logged, as addresses.
pub fn last_active_set(node: &Node) -> Vec<String> {
    node.events()
        .iter()
        .rev()
        .find(|e| event_is(e, "active_set"))
        .and_then(|e| e.get("members")?.as_str().map(parse_list))
        .unwrap_or_default()
}

pub fn parse_list(text: &str) -> Vec<String> {
    text.trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The shared critical-section file's records.
pub fn cs_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Check the shared file: entries and exits alternate, exits by the holder,
/// fences increase. Returns the entries as (node, fence, unix_us).
pub fn assert_mutual_exclusion(path: &Path) -> Vec<(String, u64, u64)> {
    let mut holder: Option<(String, u64)> = None;
    let mut entries = Vec::new();
    let mut last_fence = 0;
    for (i, record) in cs_records(path).iter().enumerate() {
        let node = record["node"].as_str().expect("node").to_string();
        let fence = record["fence"].as_u64().expect("fence");
        let at = record["unix_us"].as_u64().expect("unix_us");
        match record["event"].as_str() {
            Some("enter") => {
                assert!(
                    holder.is_none(),
                    "line {}: {node} entered while {holder:?} held",
                    i + 1
                );
                assert!(
                    fence > last_fence,
                    "line {}: fence {fence} not above {last_fence}",
                    i + 1
                );
                last_fence = fence;
                holder = Some((node.clone(), fence));
                entries.push((node, fence, at));
            }
            Some("exit") => {
                assert_eq!(
                    holder.take(),
                    Some((node, fence)),
                    "line {}: exit by a non-holder",
                    i + 1
                );
            }
            other => panic!("line {}: unknown event {other:?}", i + 1),
        }
    }
    entries
}
