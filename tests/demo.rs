//! `ra demo` runs to a passing verdict and leaves nothing behind.

use std::path::Path;
use std::process::Command;

use ra::event::{Event, read_log};

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ra-test-{name}-"))
        .tempdir()
        .expect("a scratch directory")
}

fn demo(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ra"))
        .arg("demo")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run ra demo");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn demo_passes_and_cleans_up() {
    let dir = scratch("demo");
    let stdout = demo(dir.path(), &["--hold-ms", "20", "--rounds", "2"]);
    assert!(
        stdout.contains("mutual exclusion HELD; every request was served"),
        "{stdout}"
    );
    assert!(stdout.contains("most holders at once:      1"), "{stdout}");
    // The story was told: contention, a deferred reply, a spectator served
    // through a member, then seated.
    assert!(stdout.contains("DEFER"), "{stdout}");
    assert!(stdout.contains("FORWARDED to"), "{stdout}");
    assert!(stdout.contains("ENTER through"), "{stdout}");
    assert!(stdout.contains("LEFT (graceful)"), "{stdout}");
    // Every node process is gone: each log ends with the node leaving.
    let mut logs = Vec::new();
    for node in ["n1", "n2", "n3", "n4"] {
        let path = dir.path().join(format!("{node}.log"));
        let records = read_log(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            records.last().is_some_and(|r| r.event == Event::Left),
            "{node} did not leave: {:?}",
            records.last()
        );
        logs.push(path);
    }
    // Its shared file passes `ra check`, with and without the logs.
    let cs = dir.path().join("cs.jsonl");
    for with_logs in [false, true] {
        let mut check = Command::new(env!("CARGO_BIN_EXE_ra"));
        check.arg("check").arg(&cs);
        if with_logs {
            check.arg("--logs").args(&logs);
        }
        let check = check.output().expect("run ra check");
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

#[test]
fn demo_with_spectators_from_the_start_serves_everyone() {
    let dir = scratch("demo4");
    let stdout = demo(
        dir.path(),
        &[
            "--nodes",
            "4",
            "--rounds",
            "1",
            "--hold-ms",
            "20",
            "--quiet",
        ],
    );
    assert!(stdout.contains("requests outstanding:      0"), "{stdout}");
}
