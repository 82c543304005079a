//! `ra bench` end to end with tiny sizes: it runs, stops everything it started,
//! and its JSON holds every figure. Speed is never asserted here.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Scratch, active_set, wait_for};

mod support;

/// Keys every row has, with a number.
const FIGURES: &[&str] = &[
    "nodes",
    "max_active",
    "spectators",
    "acquire_p50_us",
    "acquire_p99_us",
    "floor_p50_us",
    "acquire_vs_floor",
    "client_path_p50_us",
    "client_path_p99_us",
    "throughput_cs_per_s",
    "handoff_p50_us",
    "messages_per_entry",
    "seat_changes_per_entry",
    "rss_kb",
    "idle_cpu_percent",
    "throughput_1_name_cs_per_s",
    "throughput_10_names_cs_per_s",
    "throughput_100_names_cs_per_s",
];

/// Keys with a number unless --idle-names 0, then null.
const NAMES_MEMORY: &[&str] = &["rss_idle_names_kb", "rss_idle_names_base_kb"];

/// Keys with a number unless --skip-membership, then null.
const MEMBERSHIP: &[&str] = &[
    "join_ms",
    "join_max_ms",
    "leave_ms",
    "leave_max_ms",
    "crash_detect_ms",
    "crash_detect_max_ms",
    "failover_ms",
    "failover_max_ms",
    "host_loss_detect_ms",
    "host_loss_detect_max_ms",
    "threads_throughput_1_name_cs_per_s",
    "threads_throughput_100_names_cs_per_s",
    "threads_names_speedup",
];

/// Keys with a number unless --skip-data-dir, then null.
const DATA_DIR: &[&str] = &[
    "data_dir_acquire_p50_us",
    "data_dir_acquire_p99_us",
    "data_dir_acquire_ratio",
    "data_dir_throughput_cs_per_s",
    "data_dir_throughput_ratio",
];

/// Run `ra` with `args`, killing it after `limit`.
fn ra(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ra"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ra");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for ra") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ra {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout).expect("read stdout");
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_end(&mut stderr).expect("read stderr");
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Exit 0 and exactly one JSON object on stdout.
fn bench_json(args: &[&str]) -> Value {
    let output = ra(args, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ra {args:?} failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "ra {args:?} printed more than one line: {stdout}"
    );
    let value: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert!(value.is_object(), "not an object: {value}");
    value
}

fn number(row: &Value, key: &str) -> f64 {
    row.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{key} is not a number in {row}"))
}

fn check_row(row: &Value, membership: bool, names_memory: bool, data_dir: bool) {
    for key in FIGURES {
        let value = number(row, key);
        assert!(
            value.is_finite() && value >= 0.0,
            "{key} = {value} in {row}"
        );
    }
    let messages = number(row, "messages_per_entry");
    assert!(messages > 0.0, "no mutex messages counted: {row}");
    // Every node contends, spectators included, and every one is served.
    let per_node = row
        .get("per_node")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("per_node is not an array in {row}"));
    assert_eq!(per_node.len() as f64, number(row, "nodes"), "{row}");
    for node in per_node {
        assert!(number(node, "entries") > 0.0, "a node starved: {row}");
    }
    let active = number(row, "nodes").min(number(row, "max_active"));
    assert_eq!(
        number(row, "spectators"),
        number(row, "nodes") - active,
        "{row}"
    );
    let skippable = [
        (NAMES_MEMORY, names_memory),
        (DATA_DIR, data_dir),
        (MEMBERSHIP, membership),
    ];
    for (keys, measured) in skippable {
        for key in keys {
            if measured {
                let value = number(row, key);
                assert!(value > 0.0, "{key} = {value} in {row}");
            } else {
                assert!(
                    row.get(key).is_some_and(Value::is_null),
                    "{key} should be null when skipped: {row}"
                );
            }
        }
    }
}

#[test]
fn bench_prints_every_figure_as_json() {
    let row = bench_json(&[
        "bench",
        "--json",
        "--entries",
        "50",
        "--idle-seconds",
        "0.5",
        "--idle-names",
        "300",
        "--stall-seconds",
        "6",
    ]);
    check_row(&row, true, true, true);
    assert_eq!(number(&row, "idle_names"), 300.0);
    assert_eq!(number(&row, "nodes"), 3.0);
    assert!(number(&row, "join_max_ms") >= number(&row, "join_ms"));
    // Two stalls of a second (one every 3 s), and the verdicts on them as a number.
    assert_eq!(number(&row, "stalls"), 2.0, "{row}");
    number(&row, "false_downs");
}

#[test]
fn bench_sweeps_every_size() {
    let value = bench_json(&[
        "bench",
        "--sweep",
        "--json",
        "--entries",
        "30",
        "--skip-membership",
        "--skip-data-dir",
        "--idle-seconds",
        "0.2",
        "--idle-names",
        "0",
    ]);
    let rows = value["sweep"]
        .as_array()
        .unwrap_or_else(|| panic!("no sweep array: {value}"));
    let sizes: Vec<f64> = rows.iter().map(|row| number(row, "nodes")).collect();
    assert_eq!(sizes, (2..=10).map(f64::from).collect::<Vec<_>>());
    for row in rows {
        check_row(row, false, false, false);
    }
}

#[test]
fn bench_refuses_a_cluster_of_one_in_one_line() {
    let output = ra(&["bench", "--nodes", "1"], Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--nodes must be at least 2"), "{stderr}");
}

/// `--node`: acquire and release through the API of a node running as its own
/// process, and nothing else; the lock taken is `bench`, as documented.
#[test]
fn bench_times_a_running_node_through_its_api() {
    let scratch = Scratch::new("bench-node");
    let api = scratch.path("a.sock");
    let api = api.to_str().expect("utf-8 path");
    let mut founder = scratch.start("a", &["--api", api]);
    let _other = scratch.start_joining("b", &founder, &[]);
    wait_for("a cluster of two", Duration::from_secs(20), || {
        active_set(&mut founder).len() == 2
    });
    let row = bench_json(&["bench", "--node", api, "--entries", "40", "--json"]);
    assert_eq!(number(&row, "entries"), 40.0, "{row}");
    let (p50, p99) = (
        number(&row, "client_path_p50_us"),
        number(&row, "client_path_p99_us"),
    );
    assert!(p50 > 0.0 && p99 >= p50, "{row}");
    assert!(
        support::logged(&mut founder, |e| matches!(
            e,
            ra::event::Event::Enter { lock, .. } if lock.as_str() == "bench"
        )),
        "the founder logged no entry of `bench`"
    );
}
