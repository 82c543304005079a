//! `ra demo` runs to a passing verdict and leaves nothing behind.

use std::process::Command;

#[test]
fn demo_passes_and_cleans_up() {
    let dir = std::env::temp_dir().join(format!("ra-test-demo-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_ra"))
        .args(["demo", "--hold-ms", "20", "--rounds", "2", "--dir"])
        .arg(&dir)
        .output()
        .expect("run ra demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("mutual exclusion HELD; every request was served"),
        "{stdout}"
    );
    assert!(stdout.contains("most holders at once:      1"), "{stdout}");
    // The story was told: contention, a deferred reply, the spectator's seat.
    assert!(stdout.contains("DEFER"), "{stdout}");
    assert!(stdout.contains("waiting for a seat"), "{stdout}");
    assert!(stdout.contains("LEFT (graceful)"), "{stdout}");
    // Every node process is gone: each log ends with the node leaving.
    for node in ["n1", "n2", "n3", "n4"] {
        let log = std::fs::read_to_string(dir.join(format!("{node}.log"))).expect("node log");
        assert!(
            log.trim_end()
                .lines()
                .last()
                .is_some_and(|l| l.contains("\"left\"")),
            "{node} did not leave:\n{log}"
        );
    }
    // Its shared file passes `ra check`.
    let check = Command::new(env!("CARGO_BIN_EXE_ra"))
        .arg("check")
        .arg(dir.join("cs.jsonl"))
        .output()
        .expect("run ra check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_with_spectators_from_the_start_serves_everyone() {
    let dir = std::env::temp_dir().join(format!("ra-test-demo4-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_ra"))
        .args([
            "demo",
            "--nodes",
            "4",
            "--rounds",
            "1",
            "--hold-ms",
            "20",
            "--quiet",
            "--dir",
        ])
        .arg(&dir)
        .output()
        .expect("run ra demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("requests outstanding:      0"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
