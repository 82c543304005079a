//! `--data-dir` on real processes, as a user runs it: three nodes with data
//! directories take locks with `ra lock`, are all stopped with SIGTERM, start
//! again on the same addresses, and hand out fences above every fence of the
//! first run; `ra check` passes on the shared file of both runs. A corrupt
//! state file is one error line and exit status 1.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use ra::cs::CsEvent;
use ra::event::Event;
use support::{Node, Scratch, active_set, cs_records, logged, wait_for};

const FORMED_WITHIN: Duration = Duration::from_secs(30);

struct Run<'a> {
    scratch: &'a Scratch,
    config: String,
}

impl Run<'_> {
    fn data(&self, i: usize) -> PathBuf {
        self.scratch.path(&format!("data{i}"))
    }

    fn api(&self, i: usize) -> PathBuf {
        self.scratch.path(&format!("n{i}.sock"))
    }

    /// Node `i` (run `run`), on `bind`, joining through `join`.
    fn start(&self, i: usize, run: usize, bind: &str, join: Option<&Node>) -> Node {
        let (data, api) = (self.data(i), self.api(i));
        let cs = self.scratch.path("cs.jsonl");
        let mut spawn = self
            .scratch
            .spawn(&format!("n{i}-run{run}"))
            .bind(bind)
            .args([
                "--config",
                self.config.as_str(),
                "--data-dir",
                data.to_str().expect("utf-8"),
                "--api",
                api.to_str().expect("utf-8"),
                "--cs-file",
                cs.to_str().expect("utf-8"),
            ]);
        if let Some(seed) = join {
            spawn = spawn.join(seed.addr());
        }
        Node::start(spawn).unwrap_or_else(|e| panic!("start n{i}: {e:#}"))
    }

    /// `ra lock --node API NAME -- true`; its stderr.
    fn lock(&self, i: usize, name: &str) -> String {
        let output = support::ra()
            .arg("lock")
            .arg("--node")
            .arg(self.api(i))
            .args(["--timeout", "30s", name, "--", "true"])
            .env_remove("RA_NODE")
            .stdin(Stdio::null())
            .output()
            .expect("run ra lock");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "ra lock on n{i}: {stderr}");
        stderr
    }
}

fn formed(nodes: &mut [Node]) {
    wait_for("the cluster to form", FORMED_WITHIN, || {
        nodes.iter_mut().all(|n| active_set(n).len() == 3)
    });
}

fn fences(scratch: &Scratch) -> Vec<u64> {
    cs_records(&scratch.path("cs.jsonl"))
        .into_iter()
        .filter(|r| r.event == CsEvent::Enter)
        .map(|r| r.fence)
        .collect()
}

#[test]
fn a_whole_cluster_restart_hands_out_fences_above_the_first_runs() {
    let scratch = Scratch::new("durable");
    let config = scratch.path("quick.toml");
    ra::tools::process::write_quick_config(&config, Duration::from_millis(200))
        .expect("settings file");
    let run = Run {
        scratch: &scratch,
        config: config.to_str().expect("utf-8").to_string(),
    };

    // First run: the quick start's commands, each node with its data directory.
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3 {
        let seed = nodes.last();
        let node = run.start(i, 1, "127.0.0.1:0", seed);
        nodes.push(node);
    }
    formed(&mut nodes);
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
    for i in 0..3 {
        for name in ["backup", "report"] {
            run.lock(i, name);
        }
    }
    let first = fences(&scratch);
    assert_eq!(first.len(), 6, "{first:?}");
    let highest = first.iter().copied().max().expect("fences");

    // Stop every node (SIGTERM: they leave gracefully), then start them all again.
    for node in &nodes {
        node.signal(libc::SIGTERM);
    }
    for node in &mut nodes {
        assert!(
            node.wait_exit(Duration::from_secs(20)).is_some(),
            "{} did not stop",
            node.name
        );
    }
    drop(nodes);
    let mut nodes: Vec<Node> = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let seed = nodes.last();
        let node = run.start(i, 2, addr, seed);
        nodes.push(node);
    }
    // `Listening` is logged before the node reads its state, so wait for it.
    for node in &mut nodes {
        let what = format!("{} to restore its state", node.name);
        wait_for(&what, FORMED_WITHIN, || {
            logged(node, |e| matches!(e, Event::Restored { .. }))
        });
    }
    formed(&mut nodes);
    assert!(
        !nodes
            .iter_mut()
            .any(|n| logged(n, |e| matches!(e, Event::Founded { .. }))),
        "a node founded a new cluster instead of starting the old one again"
    );
    for i in 0..3 {
        for name in ["backup", "report"] {
            run.lock(i, name);
        }
    }
    let all = fences(&scratch);
    let second = &all[first.len()..];
    assert_eq!(second.len(), 6, "{all:?}");
    assert!(
        second.iter().all(|f| *f > highest),
        "a fence of the second run is not above the first run's {highest}: {second:?}"
    );

    // `ra check` on the shared file of both runs.
    let check = support::ra()
        .arg("check")
        .arg(scratch.path("cs.jsonl"))
        .output()
        .expect("run ra check");
    assert!(
        check.status.success(),
        "ra check: {}",
        String::from_utf8_lossy(&check.stdout)
    );

    // A corrupt state file: one error line, exit status 1, no fresh start.
    nodes[1].kill();
    let state = run.data(1).join("state");
    let mut bytes = std::fs::read(&state).expect("the state file");
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    std::fs::write(&state, &bytes).expect("corrupt it");
    let output = support::ra()
        .args(["--bind", &addrs[1], "--data-dir"])
        .arg(run.data(1))
        .arg("--no-api")
        .stdin(Stdio::null())
        .output()
        .expect("run ra");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains("is corrupt"),
        "{stderr}"
    );
}
