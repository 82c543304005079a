//! `ra trace`, through its library function and the real binary, on real logs.
//!
//! Fixtures live in tests/data/ (see tests/data/record.sh, which made them):
//! trace/node-*.jsonl are the JSON logs of a real 3-node run (the card's
//! commands, Enter pressed on all three), trace/contention/ of a run with 4
//! entries per node, trace/locks/ of three nodes on which `ra lock` took two
//! locks at once, readme/ the run README.md shows.
//!
//! The outputs are compared with golden files (trace/*.mmd, trace/*.txt).
//! After an intended change of the output, regenerate them with
//!
//!     RA_BLESS=1 cargo test --release --test tools
//!
//! and review the diff of tests/data/ before committing.
//!
//! One job, past 500 lines: the golden tests of `ra trace`, with the Mermaid
//! grammar check and the recorder of the two-lock logs they need.

mod fixtures;

use std::path::Path;
use std::time::Duration;

use fixtures::{bless, data, golden, ra, read, text};
use ra::event::{Event, LogRecord};
use ra::protocol::ids::ProcessId;
use ra::protocol::lock::{Fence, LockName};
use ra::protocol::ricart_agrawala::Decision;
use ra::tools::trace::{self, Focus, TraceFormat, TraceOptions};

const SAMPLE: [&str; 3] = [
    "trace/node-17000.jsonl",
    "trace/node-17001.jsonl",
    "trace/node-17002.jsonl",
];
const CONTENTION: [&str; 3] = [
    "trace/contention/node-17100.jsonl",
    "trace/contention/node-17101.jsonl",
    "trace/contention/node-17102.jsonl",
];
const LOCKS: [&str; 3] = [
    "trace/locks/node-17400.jsonl",
    "trace/locks/node-17401.jsonl",
    "trace/locks/node-17402.jsonl",
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
    // The things the diagram exists to show: the requests, a tie broken by
    // address, the deferred replies sent on exit, three entries in fence order.
    assert!(out.contains("    N1->>N2: REQUEST 1 ts=11\n"), "{out}");
    assert!(out.contains("    N3->>N1: REQUEST 1 ts=12\n"), "{out}");
    assert!(out.contains("    N1-->>N2: REPLY 1 (deferred)\n"), "{out}");
    assert!(
        out.contains("Note over N2: grants REQUEST 1 of 127.0.0.1:17000<br>ts=11 = own ts=11, lower address first\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "Note over N1: defers REQUEST 1 of 127.0.0.1:17002<br>own ts=11 before ts=12\n"
        ),
        "{out}"
    );
    let first = out
        .find("ENTER fence 2199023255553<br>epoch 2 seq 1,")
        .expect("entry 1");
    let second = out
        .find("ENTER fence 2199023255554<br>epoch 2 seq 2,")
        .expect("entry 2");
    let third = out
        .find("ENTER fence 2199023255555<br>epoch 2 seq 3,")
        .expect("entry 3");
    assert!(first < second && second < third);
    // One lock in these logs: labels do not name it.
    assert!(!out.contains("default:"), "{out}");
    // Every node logs the others joining and leaving: said once each.
    assert_eq!(out.matches("127.0.0.1:17002 joined").count(), 1, "{out}");
    assert_eq!(out.matches("127.0.0.1:17000 left").count(), 1, "{out}");
    assert_eq!(out.matches("active set epoch 2").count(), 1, "{out}");
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
    assert!(out.contains("N3->>N2: REQUEST 1 ts=12"), "{out}");
    assert!(out.contains("N2-->>N3: REPLY 1 (deferred)"), "{out}");
    // ...but not the requests between the other two nodes.
    assert!(!out.contains("N2->>N1"), "{out}");
    assert!(!out.contains("joined"), "{out}");

    let out =
        trace::render(&logs(&CONTENTION), &focus(TraceFormat::Text, ":17101", 3)).expect("renders");
    golden("trace/contention-focus.txt", &out);
    assert!(
        out.contains("focus: entry 3 of 127.0.0.1:17101: lock default, REQUEST 3, fence "),
        "{out}"
    );
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
            assert!(!out.contains("OVERLAP"), "{node} {entry}: {out}");
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
fn trace_names_the_lock_when_there_are_several() {
    let all = logs(&LOCKS);
    let out = trace::render(&all, &options(TraceFormat::Mermaid)).expect("renders");
    assert_valid_mermaid(&out);
    golden("trace/locks.mmd", &out);
    for lock in ["jobs", "backup"] {
        assert!(
            out.contains(&format!(": {lock}: REQUEST ")),
            "{lock}: {out}"
        );
        assert!(
            out.contains(&format!(": {lock}: ENTER fence ")),
            "{lock}: {out}"
        );
    }
    assert!(!out.contains("OVERLAP"), "{out}");
    // Two locks held at once by two nodes: both drawn as holding.
    let text = trace::render(&all, &options(TraceFormat::Text)).expect("renders");
    golden("trace/locks.txt", &text);

    // --lock keeps one lock (and membership); its labels need no name then.
    let jobs = TraceOptions {
        lock: Some("jobs".into()),
        ..options(TraceFormat::Mermaid)
    };
    let out = trace::render(&all, &jobs).expect("renders");
    assert_valid_mermaid(&out);
    assert!(out.contains("%% lock: jobs only"), "{out}");
    assert!(out.contains("ENTER fence"), "{out}");
    assert!(!out.contains("backup"), "{out}");
    assert!(!out.contains("jobs:"), "{out}");
    // A focus counts the entries of that lock.
    let focused = TraceOptions {
        focus: Some(Focus {
            node: node_of(&all[1].1),
            entry: 2,
        }),
        ..jobs.clone()
    };
    let out = trace::render(&all, &focused).expect("renders");
    assert_valid_mermaid(&out);
    assert!(out.contains("lock jobs, REQUEST"), "{out}");
    let unknown = TraceOptions {
        lock: Some("nightly".into()),
        ..options(TraceFormat::Mermaid)
    };
    let err = trace::render(&all, &unknown).expect_err("no such lock");
    assert_eq!(
        err.to_string(),
        "--lock nightly: no such lock in these logs (locks: backup, jobs)"
    );
}

/// The address of the node whose log this is.
fn node_of(log: &str) -> String {
    let first = LogRecord::from_json(log.lines().next().expect("a record")).unwrap();
    first.node.expect("a node").addr.to_string()
}

/// A real run in which the holder was stopped inside the critical section,
/// declared failed, and replaced (tests/data/check/paused/): the holder is no
/// longer drawn holding once it failed, so the next entry is no overlap, and
/// its late loss and exit are told when it wakes up.
#[test]
fn trace_draws_an_evicted_holder() {
    let files: Vec<String> = ["17200", "17201", "17202"]
        .iter()
        .map(|p| format!("check/paused/node-{p}.jsonl"))
        .collect();
    let all = logs(&files.iter().map(String::as_str).collect::<Vec<_>>());
    let out = trace::render(&all, &options(TraceFormat::Text)).expect("renders");
    golden("trace/paused.txt", &out);
    let failed = out.find("127.0.0.1:17200 FAILED").expect("the failure");
    let lost = out.find("LOST the lock").expect("the loss");
    let entered = out
        .find("ENTER fence 3298534883329")
        .expect("the next entry");
    assert!(failed < entered && entered < lost, "{out}");
    assert!(out.contains("was stopped for"), "{out}");
    assert!(!out.contains("OVERLAP"), "{out}");
    assert_valid_mermaid(&trace::render(&all, &options(TraceFormat::Mermaid)).expect("renders"));
}

#[test]
fn trace_skips_garbage_lines_and_counts_them() {
    let clean = logs(&SAMPLE);
    let garbage = [
        "not json at all",
        "[1, 2, 3]",
        r#"{"time":"2026-11-28T12:21:12.209496Z","event":"enter"}"#,
        r#"{"time":"yesterday","level":"INFO","node":"127.0.0.1:17001~1","event":"left","message":""}"#,
        r#"{"time":"2026-11-28T12:21:12.209496Z","level":"INFO","node":"127.0.0.1:17001~1","event":"teleported","message":""}"#,
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
        // Same story; only the count of skipped lines differs.
        let strip = |s: &str| {
            s.lines()
                .filter(|l| !l.contains("skipped"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(&a), strip(&b));
    }
    // Per file, line i got garbage[i % 7] before it: 6 of the 7 are skipped
    // (the blank line is not counted).
    let skipped: usize = clean
        .iter()
        .map(|(_, t)| {
            (0..t.lines().count())
                .filter(|i| i % garbage.len() != 6)
                .count()
        })
        .sum();
    let out = trace::render(&dirty, &options(TraceFormat::Mermaid)).expect("renders");
    assert!(
        out.contains(&format!("%% {skipped} log lines skipped")),
        "{out}"
    );
    let only_garbage = vec![("x.jsonl".to_string(), "nope\n{}\n[]\n\n".to_string())];
    let out = trace::render(&only_garbage, &options(TraceFormat::Mermaid)).expect("renders");
    assert!(out.contains("%% 3 log lines skipped"), "{out}");
    assert_valid_mermaid(&out);
}

fn pid(addr: &str, incarnation: u64) -> ProcessId {
    ProcessId::new(addr.parse().unwrap(), incarnation)
}

/// One JSON log line: `node` logged `event` at `secs` seconds into 2026.
fn line(secs: f64, node: ProcessId, event: Event) -> String {
    let base = jiff::Timestamp::from_second(1_767_225_600).unwrap();
    let record = LogRecord {
        time: base + jiff::SignedDuration::from_secs_f64(secs),
        level: "INFO".into(),
        node: Some(node),
        event,
        message: String::new(),
    };
    record.to_json().unwrap()
}

fn lock() -> LockName {
    LockName::default_lock()
}

#[test]
fn trace_survives_restarts_and_missing_logs() {
    // 127.0.0.1:1 crashes inside the critical section and restarts; its second
    // life is in another file. 127.0.0.1:3 sent no log: its messages are drawn
    // from the receiving side.
    let (one, one_again) = (pid("127.0.0.1:1", 10), pid("127.0.0.1:1", 50));
    let (two, three) = (pid("127.0.0.1:2", 10), pid("127.0.0.1:3", 10));
    let started = |me| Event::Started {
        me,
        seeds: vec![],
        found_in: None,
    };
    let first = [
        line(1.0, one, started(one)),
        line(
            2.0,
            one,
            Event::RequestIssued {
                lock: lock(),
                request_id: 1,
                timestamp: 5,
                epoch: 1,
                awaiting: vec![two],
            },
        ),
        line(
            2.0001,
            one,
            Event::RequestSent {
                lock: lock(),
                to: two,
                request_id: 1,
                attempt: 0,
                timestamp: 5,
                epoch: 1,
            },
        ),
        line(
            2.0003,
            one,
            Event::ReplyReceived {
                lock: lock(),
                from: two,
                request_id: 1,
                epoch: 1,
                remaining: 0,
            },
        ),
        line(
            2.0004,
            one,
            Event::Enter {
                lock: lock(),
                ticket: 1,
                request_id: 1,
                timestamp: 5,
                fence: Fence { epoch: 1, seq: 1 },
                lamport: 7,
                waited: Duration::from_micros(400),
                handed_on: false,
            },
        ),
    ]
    .join("\n");
    let second = [
        line(5.0, one_again, started(one_again)),
        line(
            6.0,
            one_again,
            Event::RequestReceived {
                lock: lock(),
                from: three,
                request_id: 9,
                timestamp: 2,
                epoch: 3,
                own_timestamp: None,
                decision: Decision::Grant,
            },
        ),
        line(
            6.0001,
            one_again,
            Event::ReplySent {
                lock: lock(),
                to: three,
                request_id: 9,
                epoch: 3,
                deferred: false,
            },
        ),
        line(
            7.0,
            one_again,
            Event::Exit {
                lock: lock(),
                ticket: 4,
                fence: Fence { epoch: 3, seq: 1 },
                lamport: 9,
                held: Duration::from_millis(1),
                released: vec![],
            },
        ),
    ]
    .join("\n");
    let other = [
        line(
            2.0002,
            two,
            Event::ReplySent {
                lock: lock(),
                to: one,
                request_id: 1,
                epoch: 1,
                deferred: false,
            },
        ),
        line(
            4.0,
            two,
            Event::MemberFailed {
                member: one,
                cause: Default::default(),
            },
        ),
        line(
            5.1,
            two,
            Event::MemberRestarted {
                previous: one,
                member: one_again,
            },
        ),
        line(
            6.5,
            two,
            Event::ReplyReceived {
                lock: lock(),
                from: three,
                request_id: 2,
                epoch: 3,
                remaining: 0,
            },
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
    // The three entries are 6.01 s, 6.32 s and 6.62 s after the first event.
    let first = LogRecord::from_json(all[0].1.lines().next().unwrap()).unwrap();
    let to = first.time + jiff::SignedDuration::from_millis(6_500);
    let window = TraceOptions {
        from: Some("6.0".to_string()),
        to: Some(to.to_string()),
        ..options(TraceFormat::Mermaid)
    };
    let out = trace::render(&all, &window).expect("renders");
    assert_valid_mermaid(&out);
    assert!(out.contains("ENTER fence 2199023255553"), "{out}");
    assert!(out.contains("ENTER fence 2199023255554"), "{out}");
    assert!(
        !out.contains("EXIT fence 2199023255554"),
        "after --to: {out}"
    );
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
    let mut args = vec!["trace", "--lock", "jobs"];
    args.extend(paths.iter().map(String::as_str));
    let out = ra(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--lock jobs: no such lock in these logs (locks: default)"),
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
        ..TraceOptions::default()
    };
    let rendered = trace::render(&logs, &options).expect("renders");
    assert_eq!(readme[start..end].trim_end(), rendered.trim_end());
}
