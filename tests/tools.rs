//! `ra check` and `ra trace`, through their library functions and the real binary.
//!
//! Fixtures live in tests/data/: check/*.jsonl are critical-section files (good.jsonl
//! from a real 3-node run, the others written by hand to break one rule each);
//! trace/node*.jsonl are the JSON logs of a real 3-node run, trace/contention/ of a
//! run with 4 entries per node.
//!
//! The trace outputs are compared with golden files (trace/*.mmd, trace/*.txt).
//! After an intended change of the output, regenerate them with
//!
//!     RA_BLESS=1 cargo test --test tools
//!
//! and review the diff of tests/data/ before committing.

use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ra::cli::TraceFormat;
use ra::tools::check::{self, CheckError, ViolationKind};
use ra::tools::trace::{self, Focus, TraceOptions};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn read(rel: &str) -> String {
    fs::read_to_string(data(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn ra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ra"))
        .args(args)
        .output()
        .expect("cannot run the ra binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------
// ra check

#[test]
fn check_passes_a_good_file_with_the_right_numbers() {
    let report = check::check_lines(&read("check/good.jsonl")).expect("a good file checks");
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(report.records, 24);
    assert_eq!(report.entries, 12);
    assert_eq!(report.exits, 12);
    let per_node: Vec<(&str, u64)> = report
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
    assert_eq!(report.fence_range, Some((1_000_001, 2_000_011)));
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
        "line 7: enter by 127.0.0.1:17002 (fence 2000004) while 127.0.0.1:17001 holds since line 5 (fence 2000003)"
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
    assert_eq!(report.per_node.len(), 5);
    assert_eq!(report.fence_range, Some((1_000_001, 1_000_000 + entries)));
}

#[test]
fn check_binary_exit_codes_and_output() {
    let good = ra(&["check", data("check/good.jsonl").to_str().unwrap()]);
    assert_eq!(good.status.code(), Some(0), "{}", text(&good.stderr));
    let out = text(&good.stdout);
    assert!(
        out.starts_with("12 entries, 12 exits (24 records)\n"),
        "{out}"
    );
    assert!(out.contains("  127.0.0.1:17101  4 entries\n"), "{out}");
    assert!(out.contains("fences: 1000001 .. 2000011\n"), "{out}");
    assert!(out.ends_with("OK: mutual exclusion held\n"), "{out}");

    let overlap = ra(&["check", data("check/overlap.jsonl").to_str().unwrap()]);
    assert_eq!(overlap.status.code(), Some(1));
    let out = text(&overlap.stdout);
    assert!(
        out.contains("line 7: enter by 127.0.0.1:17002 (fence 2000004) while 127.0.0.1:17001 holds since line 5"),
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
}

// ---------------------------------------------------------------------------
// ra trace

const SAMPLE: [&str; 3] = [
    "trace/node0.jsonl",
    "trace/node1.jsonl",
    "trace/node2.jsonl",
];
const CONTENTION: [&str; 3] = [
    "trace/contention/node0.jsonl",
    "trace/contention/node1.jsonl",
    "trace/contention/node2.jsonl",
];

/// (file name, contents), as `ra trace` passes them.
fn logs(files: &[&str]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|f| {
            let name = Path::new(f)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, read(f))
        })
        .collect()
}

fn options(format: TraceFormat) -> TraceOptions {
    TraceOptions {
        format,
        ..TraceOptions::default()
    }
}

fn focus(format: TraceFormat, node: &str, entry: usize) -> TraceOptions {
    TraceOptions {
        format,
        focus: Some(Focus {
            node: node.to_string(),
            entry,
        }),
        ..TraceOptions::default()
    }
}

fn bless() -> bool {
    std::env::var("RA_BLESS").is_ok_and(|v| v != "0")
}

/// Compares with the golden file, or rewrites it under RA_BLESS=1.
fn golden(rel: &str, actual: &str) {
    let path = data(rel);
    if bless() {
        fs::write(&path, actual).unwrap_or_else(|e| panic!("cannot write {rel}: {e}"));
        return;
    }
    let expected = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {rel} ({e}); run with RA_BLESS=1 to create it"));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{rel} differs from the output from line {}:\n--- expected\n{}\n--- actual\n{}\n(RA_BLESS=1 rewrites the golden files)",
            first + 1,
            expected
                .lines()
                .skip(first)
                .take(5)
                .collect::<Vec<_>>()
                .join("\n"),
            actual
                .lines()
                .skip(first)
                .take(5)
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
}

/// Checks a sequence diagram against the Mermaid grammar rules the renderer
/// relies on: declared participants, text after `:` free of `#` and `;` (a
/// comment and a statement end), ASCII only, `rect`/`end` balanced, and no
/// `deactivate` of an inactive participant (Mermaid rejects that).
fn assert_valid_mermaid(diagram: &str) {
    let mut lines = diagram.lines();
    assert_eq!(lines.next(), Some("sequenceDiagram"));
    let mut declared: Vec<String> = Vec::new();
    let mut active: std::collections::HashMap<String, usize> = Default::default();
    let mut blocks = 0usize;
    let is_id = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    let check_text = |line: &str, text: &str| {
        assert!(!text.trim().is_empty(), "empty text: {line}");
        assert!(!text.contains(['#', ';']), "# or ; after the colon: {line}");
    };
    for line in lines {
        assert!(line.is_ascii(), "not ASCII: {line}");
        let l = line.trim();
        let known = |id: &str| {
            assert!(
                declared.iter().any(|d| d == id),
                "undeclared participant {id}: {line}"
            );
        };
        if l.is_empty() || l.starts_with("%%") {
            assert!(!l.starts_with("%%{"), "a directive, not a comment: {line}");
        } else if let Some(rest) = l.strip_prefix("participant ") {
            let (id, label) = rest.split_once(" as ").expect("participant ID as LABEL");
            assert!(is_id(id), "participant id: {line}");
            assert!(!label.contains(['#', ';']), "label: {line}");
            assert!(!declared.iter().any(|d| d == id), "declared twice: {line}");
            declared.push(id.to_string());
        } else if let Some(id) = l.strip_prefix("activate ") {
            known(id);
            *active.entry(id.to_string()).or_default() += 1;
        } else if let Some(id) = l.strip_prefix("deactivate ") {
            known(id);
            let n = active.entry(id.to_string()).or_default();
            assert!(*n > 0, "deactivates an inactive participant: {line}");
            *n -= 1;
        } else if let Some(color) = l.strip_prefix("rect ") {
            assert!(!color.contains(['#', ';']), "{line}");
            blocks += 1;
        } else if l == "end" {
            assert!(blocks > 0, "end without a block");
            blocks -= 1;
        } else if let Some(rest) = l.strip_prefix("Note over ") {
            let (who, text) = rest.split_once(": ").expect("Note over X: text");
            for id in who.split(',') {
                known(id);
            }
            check_text(line, text);
        } else {
            let (head, text) = l.split_once(": ").expect("A->>B: text");
            let (from, to) = head
                .split_once("-->>")
                .or_else(|| head.split_once("->>"))
                .unwrap_or_else(|| panic!("not an arrow: {line}"));
            assert!(is_id(from) && is_id(to), "{line}");
            known(from);
            known(to);
            check_text(line, text);
        }
    }
    assert_eq!(blocks, 0, "a rect is not closed");
}

#[test]
fn trace_sample_to_mermaid_matches_golden() {
    let out = trace::render(&logs(&SAMPLE), &options(TraceFormat::Mermaid)).expect("renders");
    assert_valid_mermaid(&out);
    golden("trace/run.mmd", &out);
    // The things the diagram exists to show.
    assert!(out.contains("    N2->>N1: REQUEST 1 ts=11\n"), "{out}");
    assert!(out.contains("    N2-->>N3: REPLY 1 (deferred)\n"), "{out}");
    assert!(
        out.contains(
            "Note over N2: defers REQUEST 1 of 127.0.0.1:17002<br>own ts=11 before ts=12\n"
        )
    );
    // Three nodes log that 127.0.0.1:17002 joined or left: said once each.
    assert_eq!(out.matches("127.0.0.1:17002 left").count(), 1);
    assert_eq!(out.matches("127.0.0.1:17002 joined").count(), 1);
    assert_eq!(out.matches("active set epoch 3").count(), 1);
}

#[test]
fn trace_sample_to_text_matches_golden() {
    let out = trace::render(&logs(&SAMPLE), &options(TraceFormat::Text)).expect("renders");
    golden("trace/run.txt", &out);
    assert!(
        out.lines().all(|l| l.len() <= 160),
        "wider than 160 columns"
    );
}

#[test]
fn trace_focus_matches_golden() {
    let out = trace::render(
        &logs(&SAMPLE),
        &focus(TraceFormat::Mermaid, "127.0.0.1:17002", 1),
    )
    .expect("renders");
    assert_valid_mermaid(&out);
    golden("trace/focus.mmd", &out);
    // Its own request and the reply 127.0.0.1:17001 deferred until its exit...
    assert!(out.contains("N3->>N2: REQUEST 1 ts=12"));
    assert!(out.contains("N2-->>N3: REPLY 1 (deferred)"));
    // ...but not the requests between the other two nodes.
    assert!(!out.contains("N2->>N1"), "{out}");
    assert!(!out.contains("joined"), "{out}");

    let out =
        trace::render(&logs(&CONTENTION), &focus(TraceFormat::Text, ":17101", 3)).expect("renders");
    golden("trace/contention-focus.txt", &out);
    assert!(out.contains("focus: entry 3 of 127.0.0.1:17101: REQUEST 3, fence 2000007"));
}

#[test]
fn trace_contention_run_is_valid_mermaid() {
    let all = logs(&CONTENTION);
    assert_valid_mermaid(&trace::render(&all, &options(TraceFormat::Mermaid)).expect("renders"));
    for entry in 1..=4 {
        for node in ["127.0.0.1:17100", "127.0.0.1:17101", "127.0.0.1:17102"] {
            let out =
                trace::render(&all, &focus(TraceFormat::Mermaid, node, entry)).expect("renders");
            assert_valid_mermaid(&out);
            assert!(out.contains("ENTER"), "{node} {entry}: {out}");
        }
    }
    let err = trace::render(&all, &focus(TraceFormat::Mermaid, "127.0.0.1:17101", 5))
        .expect_err("no entry 5");
    assert!(err.to_string().contains("4 time(s)"), "{err}");
    let err = trace::render(&all, &focus(TraceFormat::Mermaid, "10.0.0.1:1", 1))
        .expect_err("no such node");
    assert!(err.to_string().contains("no such node"), "{err}");
}

#[test]
fn trace_skips_garbage_lines_and_counts_them() {
    let clean = logs(&SAMPLE);
    let garbage = [
        "not json at all",
        "[1, 2, 3]",
        r#"{"timestamp":"2026-11-27T13:29:39.448146Z","event":"enter"}"#,
        r#"{"timestamp":"yesterday","node":"127.0.0.1:17001","event":"enter"}"#,
        r#"{"timestamp":"2026-11-27T13:29:39.448146Z","node":"127.0.0.1:17001","event":"teleported"}"#,
        "{\"truncated\":",
        "",
    ];
    let dirty: Vec<(String, String)> = clean
        .iter()
        .map(|(name, text)| {
            let mut mixed = String::new();
            for (i, line) in text.lines().enumerate() {
                mixed.push_str(garbage[i % garbage.len()]);
                mixed.push('\n');
                mixed.push_str(line);
                mixed.push('\n');
            }
            (name.clone(), mixed)
        })
        .collect();
    for format in [TraceFormat::Mermaid, TraceFormat::Text] {
        let a = trace::render(&clean, &options(format)).expect("renders");
        let b = trace::render(&dirty, &options(format)).expect("renders with garbage");
        // Same story; only the count of skipped lines and of events differs. The
        // unknown event kind is an event, just not drawn.
        let strip = |s: &str| {
            s.lines()
                .filter(|l| !l.contains("skipped") && !l.contains("node events"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(&a), strip(&b));
    }
    // Per file, line i got garbage[i % 7] before it: 5 of the 7 are skipped (the
    // blank line is not counted, the unknown kind is an event), and the logs
    // already had 3 lines of the shell without a node.
    let skipped: usize = clean
        .iter()
        .map(|(_, t)| {
            (0..t.lines().count())
                .filter(|i| ![4, 6].contains(&(i % garbage.len())))
                .count()
        })
        .sum();
    let out = trace::render(&dirty, &options(TraceFormat::Mermaid)).expect("renders");
    assert!(
        out.contains(&format!("%% {} log lines skipped", skipped + 3)),
        "{out}"
    );
    let only_garbage = vec![("x.jsonl".to_string(), "nope\n{}\n[]\n\n".to_string())];
    let out = trace::render(&only_garbage, &options(TraceFormat::Mermaid)).expect("renders");
    assert!(out.contains("%% 3 log lines skipped"), "{out}");
    assert_valid_mermaid(&out);
}

#[test]
fn trace_survives_restarts_and_missing_logs() {
    // 127.0.0.1:1 crashes inside the critical section and restarts; its second
    // life is in another file. 127.0.0.1:3 sent no log: its messages are drawn
    // from the receiving side.
    let ev = |t: &str, node: &str, rest: &str| {
        format!(r#"{{"timestamp":"2026-01-01T00:00:{t}Z","node":"{node}","event":{rest}}}"#)
    };
    let first = [
        ev("01.000000", "127.0.0.1:1", r#""started""#),
        ev(
            "02.000000",
            "127.0.0.1:1",
            r#""request","request_id":1,"ts":5,"members":"[127.0.0.1:2]""#,
        ),
        ev(
            "02.000100",
            "127.0.0.1:1",
            r#""request_sent","peer":"127.0.0.1:2","request_id":1,"ts":5"#,
        ),
        ev(
            "02.000300",
            "127.0.0.1:1",
            r#""reply_received","peer":"127.0.0.1:2","request_id":1,"remaining":0"#,
        ),
        ev(
            "02.000400",
            "127.0.0.1:1",
            r#""enter","request_id":1,"ts":5,"fence":1000001,"lamport":7,"waited_ms":0.4"#,
        ),
    ]
    .join("\n");
    let second = [
        ev("05.000000", "127.0.0.1:1", r#""started""#),
        ev(
            "06.000000",
            "127.0.0.1:1",
            r#""request_received","peer":"127.0.0.1:3","request_id":9,"ts":2,"deferred":false"#,
        ),
        ev(
            "06.000100",
            "127.0.0.1:1",
            r#""reply_sent","peer":"127.0.0.1:3","request_id":9,"deferred":false"#,
        ),
        ev(
            "07.000000",
            "127.0.0.1:1",
            r#""exit","request_id":4,"fence":3000001,"lamport":9"#,
        ),
    ]
    .join("\n");
    let other = [
        ev(
            "02.000200",
            "127.0.0.1:2",
            r#""reply_sent","peer":"127.0.0.1:1","request_id":1,"deferred":false"#,
        ),
        ev(
            "04.000000",
            "127.0.0.1:2",
            r#""member_failed","peer":"127.0.0.1:1""#,
        ),
        ev(
            "05.100000",
            "127.0.0.1:2",
            r#""member_restarted","peer":"127.0.0.1:1""#,
        ),
        ev(
            "06.500000",
            "127.0.0.1:2",
            r#""reply_received","peer":"127.0.0.1:3","request_id":2,"remaining":0"#,
        ),
    ]
    .join("\n");
    let logs = vec![
        ("a.jsonl".to_string(), first),
        ("b.jsonl".to_string(), other),
        ("c.jsonl".to_string(), second),
    ];
    let out = trace::render(&logs, &options(TraceFormat::Mermaid)).expect("renders");
    assert_valid_mermaid(&out);
    assert_eq!(out.matches("participant").count(), 3, "{out}");
    assert!(out.contains("127.0.0.1:1 FAILED"), "{out}");
    // The restart is said once, by whoever saw it first.
    assert_eq!(out.matches("127.0.0.1:1 restarted").count(), 1, "{out}");
    assert!(out.contains("N3->>N1: REQUEST 9 ts=2"), "{out}");
    assert!(out.contains("N3-->>N2: REPLY 2"), "{out}");
    // The entry that never exited is closed when its holder failed.
    let failed = out.find("FAILED").unwrap();
    assert!(out[..failed].contains("activate N1"), "{out}");
    assert!(
        out[..failed].rfind("deactivate N1") > out[..failed].rfind("activate N1 "),
        "{out}"
    );
    let text = trace::render(&logs, &options(TraceFormat::Text)).expect("renders as text");
    assert!(text.contains("127.0.0.1:1 restarted"), "{text}");
}

#[test]
fn trace_time_window() {
    let all = logs(&SAMPLE);
    let window = TraceOptions {
        from: Some("4.05".to_string()),
        to: Some("2026-11-27T13:29:39.8Z".to_string()),
        ..options(TraceFormat::Mermaid)
    };
    let out = trace::render(&all, &window).expect("renders");
    assert_valid_mermaid(&out);
    assert!(out.contains("ENTER fence 2000001"), "{out}");
    assert!(out.contains("ENTER fence 2000002"), "{out}");
    assert!(!out.contains("EXIT fence 2000002"), "after --to: {out}");
    assert!(!out.contains("joined"), "before --from: {out}");
    let bad = TraceOptions {
        from: Some("soon".to_string()),
        ..options(TraceFormat::Mermaid)
    };
    let err = trace::render(&all, &bad).expect_err("bad --from");
    assert!(err.to_string().contains("--from"), "{err}");
}

#[test]
fn trace_binary_prints_the_golden_diagram() {
    let paths: Vec<String> = SAMPLE
        .iter()
        .map(|f| data(f).to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["trace"];
    args.extend(paths.iter().map(String::as_str));
    let out = ra(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    if !bless() {
        assert_eq!(text(&out.stdout), read("trace/run.mmd"));
    }
    let mut args = vec!["trace", "--node", "127.0.0.1:17009"];
    args.extend(paths.iter().map(String::as_str));
    let out = ra(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no such node"),
        "{}",
        text(&out.stderr)
    );
    let out = ra(&["trace", "/nonexistent/node.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("/nonexistent/node.jsonl"),
        "{}",
        text(&out.stderr)
    );
}

/// README.md shows a diagram and says which command made it: keep that true.
#[test]
fn readme_diagram_is_ra_trace_output() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let start = readme
        .find("```mermaid\n")
        .expect("a mermaid block in README.md")
        + "```mermaid\n".len();
    let end = start
        + readme[start..]
            .find("```")
            .expect("the end of the mermaid block");
    let logs: Vec<(String, String)> = ["node-7000.jsonl", "node-7001.jsonl", "node-7002.jsonl"]
        .iter()
        .map(|name| (name.to_string(), read(&format!("readme/{name}"))))
        .collect();
    let options = TraceOptions {
        format: TraceFormat::Mermaid,
        focus: Some(Focus {
            node: "127.0.0.1:7001".into(),
            entry: 1,
        }),
        from: None,
        to: None,
    };
    let rendered = trace::render(&logs, &options).expect("renders");
    assert_eq!(readme[start..end].trim_end(), rendered.trim_end());
}
