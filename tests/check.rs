//! `ra check`, through its library functions and the real binary.
//!
//! Fixtures live in tests/data/check/: good.jsonl is a real 3-node run from
//! before locks had names (its records have no `lock`: they read as `default`),
//! the small files are written by hand to break one rule each, and paused/ and
//! killed/ are real runs (tests/data/record.sh) in which a holder was stopped
//! or killed inside the critical section and the others went on without it:
//! its shared file and every node's log. tests/data/trace/locks/cs.jsonl is a
//! real run with two locks.
//!
//! `ra check --logs` outputs are compared with golden files (check/*/check.txt);
//! `RA_BLESS=1 cargo test --release --test check` rewrites them.
//!
//! One job, past 500 lines: every rule of `ra check`, each with the file or the
//! log records that break it.

mod fixtures;

use std::fs;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;

use fixtures::{data, golden, ra, read, text};
use ra::event::{Event, FailureCause, LogRecord};
use ra::protocol::ids::ProcessId;
use ra::protocol::lock::{Fence, LockName};
use ra::tools::check::{self, CheckError, Checker, Evictions, ViolationKind};

/// The node logs of a recorded run, as paths.
fn logs_of(dir: &str) -> Vec<String> {
    let mut logs: Vec<String> = fs::read_dir(data(dir))
        .expect("the run's directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("node-"))
        })
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    logs.sort();
    logs
}

#[test]
fn check_passes_a_good_file_with_the_right_numbers() {
    let report = check::check_lines(&read("check/good.jsonl")).expect("a good file checks");
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(report.records, 24);
    assert_eq!(report.entries, 12);
    assert_eq!(report.exits, 12);
    let lock = &report.locks["default"];
    let per_node: Vec<(&str, u64)> = lock
        .per_node
        .iter()
        .map(|(n, c)| (n.as_str(), *c))
        .collect();
    assert_eq!(
        per_node,
        [
            ("127.0.0.1:17100", 4),
            ("127.0.0.1:17101", 4),
            ("127.0.0.1:17102", 4)
        ]
    );
    assert_eq!(lock.fence_range, Some((1_000_001, 2_000_011)));
    let hold = report.longest_hold.expect("a longest hold");
    assert_eq!(
        (hold.from_line, hold.to_line, hold.fence),
        (17, 18, 2_000_008)
    );
    assert_eq!(hold.micros, 1_795_786_564_576_741 - 1_795_786_564_524_927);
    let gap = report.longest_gap.expect("a longest gap");
    assert_eq!((gap.from_line, gap.to_line), (8, 9));
    assert!(report.warnings.is_empty());
}

#[test]
fn check_judges_each_lock_on_its_own() {
    // A real run: two locks held at the same time by different nodes is fine.
    let report = check::check_lines(&read("trace/locks/cs.jsonl")).expect("checks");
    assert!(report.ok(), "{}", check::summary(&report));
    assert_eq!(report.locks.len(), 2, "{:?}", report.locks.keys());
    for (name, lock) in &report.locks {
        assert_eq!(lock.entries, 6, "{name}");
        assert_eq!(lock.exits, 6, "{name}");
        assert_eq!(lock.per_node.values().sum::<u64>(), 6, "{name}");
        let (lo, hi) = lock.fence_range.expect("fences");
        assert!(lo < hi, "{name}");
    }
    assert_eq!(report.max_holders, 1);
    // Fences rise per lock: the same fence in two locks is not a falling fence,
    // and an overlap is only one within a lock.
    let text = concat!(
        r#"{"event":"enter","node":"a:1","lock":"x","fence":5,"lamport":1,"unix_us":1}"#,
        "\n",
        r#"{"event":"enter","node":"b:1","lock":"y","fence":5,"lamport":2,"unix_us":2}"#,
        "\n",
        r#"{"event":"exit","node":"a:1","lock":"x","fence":5,"lamport":3,"unix_us":3}"#,
        "\n",
        r#"{"event":"enter","node":"c:1","lock":"y","fence":4,"lamport":4,"unix_us":4}"#,
        "\n",
    );
    let report = check::check_lines(text).expect("checks");
    let found: Vec<(ViolationKind, u64)> =
        report.violations.iter().map(|v| (v.kind, v.line)).collect();
    assert_eq!(
        found,
        [
            (ViolationKind::Overlap, 4),
            (ViolationKind::FenceNotIncreasing, 4)
        ]
    );
    assert!(
        report.violations[0]
            .message
            .starts_with("line 4: enter of y by c:1"),
        "{}",
        report.violations[0].message
    );
}

#[test]
fn check_catches_an_overlap_on_the_right_line() {
    let report = check::check_lines(&read("check/overlap.jsonl")).expect("checks");
    assert!(!report.ok());
    assert_eq!(report.max_holders, 2);
    // Exactly one: the two exits that follow match their own entries.
    assert_eq!(report.violation_count, 1, "{:?}", report.violations);
    let v = &report.violations[0];
    assert_eq!(v.kind, ViolationKind::Overlap);
    // Line 6 is empty: it still counts.
    assert_eq!((v.line, v.earlier_line), (7, Some(5)));
    assert_eq!(
        v.message,
        "line 7: enter of default by 127.0.0.1:17002 (fence 2000004) while 127.0.0.1:17001 holds since line 5 (fence 2000003)"
    );
}

#[test]
fn check_catches_a_falling_fence() {
    let report = check::check_lines(&read("check/falling-fence.jsonl")).expect("checks");
    assert_eq!(report.violation_count, 1, "{:?}", report.violations);
    let v = &report.violations[0];
    assert_eq!(v.kind, ViolationKind::FenceNotIncreasing);
    assert_eq!((v.line, v.earlier_line), (5, Some(3)));
    assert!(v.message.contains("fence 2000002"), "{}", v.message);
}

#[test]
fn check_catches_an_exit_by_a_non_holder_and_an_exit_without_holder() {
    let report = check::check_lines(&read("check/wrong-exit.jsonl")).expect("checks");
    let found: Vec<(ViolationKind, u64, Option<u64>)> = report
        .violations
        .iter()
        .map(|v| (v.kind, v.line, v.earlier_line))
        .collect();
    assert_eq!(
        found,
        [
            (ViolationKind::ExitByNonHolder, 2, Some(1)),
            (ViolationKind::ExitWithoutHolder, 4, Some(3)),
        ]
    );
    // Same node, other fence: still not the holder.
    let text = concat!(
        r#"{"event":"enter","node":"a:1","fence":5,"lamport":1,"unix_us":1}"#,
        "\n",
        r#"{"event":"exit","node":"a:1","fence":4,"lamport":2,"unix_us":2}"#,
        "\n"
    );
    let report = check::check_lines(text).expect("checks");
    assert_eq!(report.violations[0].kind, ViolationKind::ExitByNonHolder);
    assert_eq!(report.violations[0].line, 2);
}

#[test]
fn check_warns_about_an_entry_without_exit() {
    let report = check::check_lines(&read("check/unfinished.jsonl")).expect("checks");
    assert!(report.ok());
    assert_eq!(report.warnings.len(), 1);
    assert!(
        report.warnings[0].starts_with("line 3: "),
        "{}",
        report.warnings[0]
    );
}

#[test]
fn check_rejects_malformed_lines_naming_the_line() {
    match check::check_lines(&read("check/malformed.jsonl")) {
        Err(CheckError::Malformed { line: 3, reason }) => {
            assert!(reason.contains("not a critical-section record"), "{reason}")
        }
        other => panic!("expected a malformed line 3, got {other:?}"),
    }
    let unknown = r#"{"event":"jump","node":"a:1","fence":1,"lamport":1,"unix_us":1}"#;
    let err = check::check_lines(unknown).expect_err("unknown event");
    assert_eq!(
        err.to_string(),
        r#"line 1: unknown event "jump" (expected "enter" or "exit")"#
    );
    let missing = r#"{"event":"enter","node":"a:1","lamport":1,"unix_us":1}"#;
    let err = check::check_lines(missing).expect_err("missing fence");
    assert!(err.to_string().contains("missing field `fence`"), "{err}");
    // A last line cut in the middle of a write says so.
    let cut = "{\"event\":\"enter\",\"node\":\"a:1\",\"fence\":1,\"lamport\":1,\"unix_us\":1}\n{\"event\":\"ex";
    let err = check::check_reader(cut.as_bytes()).expect_err("cut short");
    assert!(err.to_string().starts_with("line 2: "), "{err}");
    assert!(err.to_string().contains("cut short"), "{err}");
}

#[test]
fn check_reports_a_missing_file() {
    let err = check::check_file(&data("check/no-such-file.jsonl")).expect_err("missing file");
    assert!(matches!(err, CheckError::Io { line: None, .. }), "{err:?}");
}

/// Makes a good critical-section file line by line, never all of it in memory.
struct Generated {
    entries: u64,
    next: u64,
    pending: Vec<u8>,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() && self.next < self.entries * 2 {
            let i = self.next;
            let (event, fence) = (
                if i.is_multiple_of(2) { "enter" } else { "exit" },
                1_000_000 + i / 2 + 1,
            );
            let node = format!("127.0.0.1:{}", 17000 + (i / 2) % 5);
            self.pending = format!(
                "{{\"event\":\"{event}\",\"node\":\"{node}\",\"fence\":{fence},\"lamport\":{i},\"unix_us\":{}}}\n",
                1000 * i
            )
            .into_bytes();
            self.next += 1;
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

#[test]
fn check_streams_a_large_file() {
    let entries = 100_000;
    let reader = BufReader::new(Generated {
        entries,
        next: 0,
        pending: Vec::new(),
    });
    let report = check::check_reader(reader).expect("checks");
    assert!(report.ok());
    assert_eq!(report.entries, entries);
    let lock = &report.locks["default"];
    assert_eq!(lock.per_node.len(), 5);
    assert_eq!(lock.fence_range, Some((1_000_001, 1_000_000 + entries)));
}

#[test]
fn check_binary_exit_codes_and_output() {
    let good = ra(&["check", data("check/good.jsonl").to_str().unwrap()]);
    assert_eq!(good.status.code(), Some(0), "{}", text(&good.stderr));
    let out = text(&good.stdout);
    assert!(
        out.starts_with("12 entries, 12 exits (24 records) of 1 lock\n"),
        "{out}"
    );
    assert!(
        out.contains("lock default: 12 entries, fences 1000001 .. 2000011 (epoch 0 seq 1000001 .. epoch 0 seq 2000011)\n"),
        "{out}"
    );
    assert!(out.contains("  127.0.0.1:17101  4 entries\n"), "{out}");
    assert!(out.ends_with("OK: mutual exclusion held\n"), "{out}");

    let overlap = ra(&["check", data("check/overlap.jsonl").to_str().unwrap()]);
    assert_eq!(overlap.status.code(), Some(1));
    let out = text(&overlap.stdout);
    assert!(
        out.contains("line 7: enter of default by 127.0.0.1:17002 (fence 2000004) while 127.0.0.1:17001 holds since line 5"),
        "{out}"
    );
    assert!(out.ends_with("FAILED: 1 violation\n"), "{out}");

    let path = data("check/malformed.jsonl");
    let malformed = ra(&["check", path.to_str().unwrap()]);
    assert_eq!(malformed.status.code(), Some(2));
    let err = text(&malformed.stderr);
    assert!(
        err.starts_with(&format!("error: {}: line 3: ", path.display())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    let missing = ra(&["check", "/nonexistent/cs.jsonl"]);
    assert_eq!(missing.status.code(), Some(2));
    let err = text(&missing.stderr);
    assert!(
        err.starts_with("error: /nonexistent/cs.jsonl: cannot read: "),
        "{err}"
    );

    // A node log that cannot be read is not a verdict either.
    let cs = data("check/paused/cs.jsonl");
    let bad_log = ra(&[
        "check",
        cs.to_str().unwrap(),
        "--logs",
        data("check/good.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(bad_log.status.code(), Some(2), "{}", text(&bad_log.stdout));
    let err = text(&bad_log.stderr);
    assert!(err.starts_with("error: the node log "), "{err}");
    assert!(err.contains("good.jsonl, line 1: "), "{err}");
}

// ---------------------------------------------------------------------------
// ra check --logs: holders the cluster evicted

/// Real runs: the founder holds for 5 s and is stopped (paused/) or killed
/// (killed/) meanwhile; the others declare it failed, decide a set without it,
/// and one of them enters under a newer epoch. Alone, the shared file shows an
/// overlap; with the logs, the overlap is with an evicted holder whose fence is
/// the smaller, which is no violation.
#[test]
fn check_with_logs_ends_an_evicted_holder_at_its_eviction() {
    for run in ["check/paused", "check/killed"] {
        let cs = data(&format!("{run}/cs.jsonl"));
        let cs = cs.to_str().unwrap();
        let plain = ra(&["check", cs]);
        assert_eq!(
            plain.status.code(),
            Some(1),
            "{run}: {}",
            text(&plain.stdout)
        );
        assert!(text(&plain.stdout).contains("FAILED: 1 violation"));

        let logs = logs_of(run);
        assert_eq!(logs.len(), 3, "{run}: {logs:?}");
        let mut args = vec!["check", cs, "--logs"];
        args.extend(logs.iter().map(String::as_str));
        let with_logs = ra(&args);
        let out = text(&with_logs.stdout);
        assert_eq!(
            with_logs.status.code(),
            Some(0),
            "{run}: {out}{}",
            text(&with_logs.stderr)
        );
        golden(&format!("{run}/check.txt"), &out);

        let report = check::check_file_with_logs(
            &data(&format!("{run}/cs.jsonl")),
            &logs.iter().map(PathBuf::from).collect::<Vec<_>>(),
        )
        .expect("checks");
        assert!(report.ok());
        assert_eq!(report.max_holders, 1, "{run}");
        assert_eq!(report.evicted_overlaps.len(), 1, "{run}");
        assert!(
            report.evicted_overlaps[0].message.contains("failed at"),
            "{}",
            report.evicted_overlaps[0].message
        );
    }
}

fn pid(addr: &str, incarnation: u64) -> ProcessId {
    ProcessId::new(addr.parse().unwrap(), incarnation)
}

/// A record of `node` at `us` microseconds past the epoch.
fn record(us: i64, node: ProcessId, event: Event) -> LogRecord {
    LogRecord {
        time: jiff::Timestamp::from_microsecond(us).unwrap(),
        level: "INFO".into(),
        node: Some(node),
        event,
        message: String::new(),
    }
}

fn enter(request_id: u64, token: u64) -> Event {
    Event::Enter {
        lock: LockName::default_lock(),
        ticket: 1,
        request_id,
        timestamp: 1,
        fence: Fence::from_token(token),
        lamport: 1,
        waited: std::time::Duration::ZERO,
        handed_on: false,
    }
}

fn cs_line(event: &str, node: &str, token: u64, us: u64, pid: u32) -> String {
    format!(
        r#"{{"event":"{event}","node":"{node}","lock":"default","fence":{token},"lamport":1,"unix_us":{us},"pid":{pid}}}"#
    )
}

fn check_with(cs: &[String], records: &[LogRecord]) -> check::CheckReport {
    check::check_lines_with(
        &cs.join("\n"),
        Checker::with_evictions(Evictions::from_records(records)),
    )
    .expect("checks")
}

#[test]
fn an_evicted_holder_with_the_larger_fence_is_still_a_violation() {
    let (a, b, c) = (
        pid("127.0.0.1:1", 1),
        pid("127.0.0.1:2", 1),
        pid("127.0.0.1:3", 1),
    );
    let cs = [
        cs_line("enter", "127.0.0.1:1", 20, 1_000, 7),
        cs_line("enter", "127.0.0.1:2", 10, 3_000, 8),
    ];
    let records = [
        record(1_000, a, enter(1, 20)),
        record(
            2_000,
            c,
            Event::MemberFailed {
                member: a,
                cause: FailureCause::Unresponsive,
            },
        ),
        record(3_000, b, enter(1, 10)),
    ];
    let report = check_with(&cs, &records);
    assert_eq!(report.violation_count, 1, "{}", check::summary(&report));
    assert_eq!(
        report.violations[0].kind,
        ViolationKind::EvictedFenceNotBelow
    );
    // Evidence from before the entry does not count: that hold was not evicted.
    let records = [
        record(
            500,
            c,
            Event::MemberFailed {
                member: a,
                cause: FailureCause::Unresponsive,
            },
        ),
        record(1_000, a, enter(1, 20)),
    ];
    let cs = [
        cs_line("enter", "127.0.0.1:1", 10, 1_000, 7),
        cs_line("enter", "127.0.0.1:2", 20, 3_000, 8),
    ];
    let report = check_with(&cs, &records);
    assert_eq!(report.violations[0].kind, ViolationKind::Overlap);
}

#[test]
fn an_excused_overlap_still_needs_a_rising_fence() {
    // a held fence 10 and was declared failed; b entered with 30 and left; c
    // then enters with 20: above a's, but below b's, the entry before it.
    let (a, b, c, d) = (
        pid("127.0.0.1:1", 1),
        pid("127.0.0.1:2", 1),
        pid("127.0.0.1:3", 1),
        pid("127.0.0.1:4", 1),
    );
    let cs = [
        cs_line("enter", "127.0.0.1:1", 10, 1_000, 7),
        cs_line("enter", "127.0.0.1:2", 30, 3_000, 8),
        cs_line("exit", "127.0.0.1:2", 30, 4_000, 8),
        cs_line("enter", "127.0.0.1:3", 20, 5_000, 9),
    ];
    let records = [
        record(1_000, a, enter(1, 10)),
        record(
            2_000,
            d,
            Event::MemberFailed {
                member: a,
                cause: FailureCause::Unresponsive,
            },
        ),
        record(3_000, b, enter(1, 30)),
        record(5_000, c, enter(1, 20)),
    ];
    let report = check_with(&cs, &records);
    assert_eq!(
        report.evicted_overlaps.len(),
        2,
        "{}",
        check::summary(&report)
    );
    let found: Vec<(ViolationKind, u64)> =
        report.violations.iter().map(|v| (v.kind, v.line)).collect();
    assert_eq!(found, [(ViolationKind::FenceNotIncreasing, 4)]);
}

#[test]
fn evictions_count_for_the_holders_process_only() {
    // 127.0.0.1:1 restarted as incarnation 2; the failure of incarnation 1,
    // logged late, says nothing about the hold of incarnation 2.
    let (old, new, c) = (
        pid("127.0.0.1:1", 1),
        pid("127.0.0.1:1", 2),
        pid("127.0.0.1:3", 1),
    );
    let cs = [
        cs_line("enter", "127.0.0.1:1", 10, 1_000, 7),
        cs_line("enter", "127.0.0.1:3", 20, 3_000, 9),
    ];
    let records = [
        record(1_000, new, enter(1, 10)),
        record(
            2_000,
            c,
            Event::MemberFailed {
                member: old,
                cause: FailureCause::Unresponsive,
            },
        ),
    ];
    let report = check_with(&cs, &records);
    assert_eq!(report.violations[0].kind, ViolationKind::Overlap);
    // Removed from the active set by a decision its own node logged: evicted.
    let removal = Event::ActiveSetInstalled {
        epoch: 3,
        members: vec![c],
        added: vec![],
        removed: vec![new],
        source: ra::event::SetSource::Decided,
        seated: false,
        max_active: 3,
    };
    let records = [
        record(1_000, new, enter(1, 10)),
        record(2_000, new, removal),
    ];
    let report = check_with(&cs, &records);
    assert!(report.ok(), "{}", check::summary(&report));
    assert!(
        report.evicted_overlaps[0]
            .message
            .contains("logged its removal from the active set"),
        "{}",
        report.evicted_overlaps[0].message
    );
}

#[test]
fn a_restart_with_a_new_pid_ends_the_old_hold() {
    // The holder crashed inside and its address came back as a new process,
    // which entered: the shared file alone shows the new pid.
    let cs = [
        cs_line("enter", "127.0.0.1:1", 10, 1_000, 7),
        cs_line("enter", "127.0.0.1:1", 20, 5_000, 8),
        cs_line("exit", "127.0.0.1:1", 20, 6_000, 8),
    ];
    let report = check_with(&cs, &[]);
    assert!(report.ok(), "{}", check::summary(&report));
    assert!(
        report.evicted_overlaps[0].message.contains("restarted"),
        "{}",
        report.evicted_overlaps[0].message
    );
    // Without logs, the plain check keeps calling it an overlap.
    assert!(!check::check_lines(&cs.join("\n")).expect("checks").ok());
}

#[test]
fn a_node_evicted_while_it_waited_enters_with_a_stale_fence() {
    // b asked at 1 ms, was declared failed at 2 ms (cut off, its permission
    // already gathered), c entered with a newer fence, then b entered late with
    // its older one: a fenced resource refuses it, and the check says so.
    let (b, c, d) = (
        pid("127.0.0.1:2", 1),
        pid("127.0.0.1:3", 1),
        pid("127.0.0.1:4", 1),
    );
    let asked = Event::RequestIssued {
        lock: LockName::default_lock(),
        request_id: 4,
        timestamp: 9,
        epoch: 2,
        awaiting: vec![],
    };
    let cs = [
        cs_line("enter", "127.0.0.1:3", 30, 3_000, 9),
        cs_line("exit", "127.0.0.1:3", 30, 4_000, 9),
        cs_line("enter", "127.0.0.1:2", 20, 5_000, 8),
        cs_line("exit", "127.0.0.1:2", 20, 6_000, 8),
    ];
    let records = [
        record(1_000, b, asked),
        record(
            2_000,
            d,
            Event::MemberFailed {
                member: b,
                cause: FailureCause::Unresponsive,
            },
        ),
        record(3_000, c, enter(1, 30)),
        record(5_000, b, enter(4, 20)),
    ];
    let report = check_with(&cs, &records);
    assert!(report.ok(), "{}", check::summary(&report));
    assert_eq!(report.stale_entries.len(), 1);
    assert!(
        report.stale_entries[0]
            .message
            .contains("was evicted before it entered"),
        "{}",
        report.stale_entries[0].message
    );
    // Without the eviction, the same file has a falling fence.
    let report = check::check_lines(&cs.join("\n")).expect("checks");
    assert_eq!(report.violations[0].kind, ViolationKind::FenceNotIncreasing);
}
