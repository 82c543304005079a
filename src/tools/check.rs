//! `ra check`: proves from the shared critical-section file (see [`crate::cs`])
//! that no two holders of one lock overlapped, lock by lock.
//!
//! The file is read once, line by line, so a file of millions of lines needs
//! memory only for the counts and the first violations.
//!
//! With `--logs`, the nodes' JSON logs say which holders the cluster evicted
//! ([`evictions`]): an entry that no exit closes ends when its holder was
//! removed from the active set, declared failed, or replaced by a restart.
//! A later holder then overlapping it is not a violation if its fence is the
//! larger (a resource that checks fences refuses the evicted one); such cases
//! are counted apart.
//!
//! Exit codes: 0 when mutual exclusion held, 1 on a violation, 2 when a file
//! cannot be read or is not what it should be.

mod checker;
pub mod evictions;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::protocol::lock::Fence;
pub use checker::Checker;
pub use evictions::Evictions;

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// The shared critical-section file (JSON lines from --cs-file).
    pub file: PathBuf,
    /// The JSON logs of the nodes (--log-format json), all of them: a holder
    /// the cluster evicted (removed from the active set, declared failed, or
    /// restarted) stops holding at its eviction.
    #[arg(long, value_name = "LOG", num_args = 1..)]
    pub logs: Vec<PathBuf>,
}

/// What mutual exclusion rule a line broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// An `enter` while another entry of that lock had not exited.
    Overlap,
    /// An `exit` while nobody held that lock.
    ExitWithoutHolder,
    /// An `exit` by another node, or with another fence, than the holder's.
    ExitByNonHolder,
    /// An entry whose fence does not exceed the previous entry's of that lock.
    FenceNotIncreasing,
    /// An overlap with an evicted holder in which the fence of the holder that
    /// was not evicted is not the larger: a fenced resource would take both.
    EvictedFenceNotBelow,
}

/// One broken rule: the offending line and the earlier line it conflicts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    /// 1-based line number of the offending record.
    pub line: u64,
    /// The earlier line it conflicts with, if there is one.
    pub earlier_line: Option<u64>,
    /// The whole sentence, starting with `line N:`.
    pub message: String,
}

/// An overlap or a falling fence that an eviction explains (with `--logs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excused {
    pub line: u64,
    pub earlier_line: Option<u64>,
    pub message: String,
}

/// A time span between two lines of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// Microseconds; negative only when the writers' clocks disagree.
    pub micros: i64,
    pub from_line: u64,
    pub to_line: u64,
    pub lock: String,
    /// The node concerned (the holder, for a hold; the next holder, for a gap).
    pub node: String,
    pub fence: u64,
}

/// What one lock's records say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockReport {
    pub entries: u64,
    pub exits: u64,
    /// Entries per node, ordered by node.
    pub per_node: BTreeMap<String, u64>,
    /// Lowest and highest fence of its entries.
    pub fence_range: Option<(u64, u64)>,
}

/// Everything `ra check` learned from a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Records read (lines that are not empty).
    pub records: u64,
    pub entries: u64,
    pub exits: u64,
    /// The most holders of one lock at once, evicted ones not counted: 1 when
    /// mutual exclusion held.
    pub max_holders: usize,
    pub locks: BTreeMap<String, LockReport>,
    /// The longest time between an exit and the next entry of the same lock.
    pub longest_gap: Option<Span>,
    /// The longest time between an entry and its exit.
    pub longest_hold: Option<Span>,
    /// The first thousand violations, in file order.
    pub violations: Vec<Violation>,
    /// All violations, including those not kept.
    pub violation_count: u64,
    /// Entries that overlapped a holder the cluster had evicted, with the
    /// larger fence (only with `--logs`).
    pub evicted_overlaps: Vec<Excused>,
    /// Entries by a node evicted while it waited, with a fence below the one
    /// before (only with `--logs`): a fenced resource refuses them.
    pub stale_entries: Vec<Excused>,
    /// Things that do not break mutual exclusion but deserve a look, such as an
    /// entry that never exits.
    pub warnings: Vec<String>,
    /// Whether node logs were given.
    pub with_logs: bool,
}

impl CheckReport {
    /// Mutual exclusion held.
    pub fn ok(&self) -> bool {
        self.violation_count == 0
    }
}

/// Why a file could not be checked at all.
#[derive(Debug)]
pub enum CheckError {
    /// Reading failed (at a line, or on opening when `line` is `None`).
    Io {
        line: Option<u64>,
        source: std::io::Error,
    },
    /// A line that is not a critical-section record.
    Malformed { line: u64, reason: String },
    /// A node log given with `--logs` that cannot be read.
    Log(crate::event::LogError),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Io {
                line: Some(line),
                source,
            } => write!(f, "line {line}: cannot read: {source}"),
            CheckError::Io { line: None, source } => write!(f, "cannot read: {source}"),
            CheckError::Malformed { line, reason } => write!(f, "line {line}: {reason}"),
            CheckError::Log(e) => write!(f, "the node log {e}"),
        }
    }
}

impl std::error::Error for CheckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckError::Io { source, .. } => Some(source),
            CheckError::Malformed { .. } => None,
            CheckError::Log(e) => Some(e),
        }
    }
}

/// Checks the records of a whole file held in memory (tests, small files).
pub fn check_lines(text: &str) -> Result<CheckReport, CheckError> {
    check_lines_with(text, Checker::new())
}

/// Checks the records of a text with a prepared checker.
pub fn check_lines_with(text: &str, mut checker: Checker) -> Result<CheckReport, CheckError> {
    for (i, line) in text.lines().enumerate() {
        checker.feed_line(i as u64 + 1, line)?;
    }
    Ok(checker.finish())
}

/// Checks records as they are read: one line in memory at a time.
pub fn check_reader(reader: impl BufRead) -> Result<CheckReport, CheckError> {
    check_reader_with(reader, Checker::new())
}

fn check_reader_with(
    mut reader: impl BufRead,
    mut checker: Checker,
) -> Result<CheckReport, CheckError> {
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        line += 1;
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| CheckError::Io {
                line: Some(line),
                source,
            })?;
        if n == 0 {
            break;
        }
        let cut_short = buf.last() != Some(&b'\n');
        let text = std::str::from_utf8(&buf).map_err(|e| CheckError::Malformed {
            line,
            reason: format!("not UTF-8 text: {e}"),
        })?;
        checker.feed_line(line, text).map_err(|e| match e {
            // A last line without its newline is most likely a write cut short.
            CheckError::Malformed { line, reason } if cut_short => CheckError::Malformed {
                line,
                reason: format!(
                    "{reason} (the last line has no newline: the file may be cut short)"
                ),
            },
            e => e,
        })?;
    }
    Ok(checker.finish())
}

/// Checks a file by path.
pub fn check_file(path: &Path) -> Result<CheckReport, CheckError> {
    check_file_with_logs(path, &[])
}

/// Checks a file by path, ending evicted holders' entries at their eviction as
/// the node logs show it (no logs: the plain check).
pub fn check_file_with_logs(path: &Path, logs: &[PathBuf]) -> Result<CheckReport, CheckError> {
    let checker = if logs.is_empty() {
        Checker::new()
    } else {
        Checker::with_evictions(Evictions::read(logs).map_err(CheckError::Log)?)
    };
    let file = File::open(path).map_err(|source| CheckError::Io { line: None, source })?;
    check_reader_with(BufReader::with_capacity(1 << 16, file), checker)
}

fn duration(micros: i64) -> String {
    let ms = micros as f64 / 1000.0;
    if ms.abs() >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A token with its (epoch, seq) pair, when it reads as one.
fn fence_pair(token: u64) -> String {
    let f = Fence::from_token(token);
    format!("epoch {} seq {}", f.epoch, f.seq)
}

/// The summary printed on stdout, violations and verdict included.
pub fn summary(report: &CheckReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}, {} ({}) of {}",
        plural(report.entries, "entry", "entries"),
        plural(report.exits, "exit", "exits"),
        plural(report.records, "record", "records"),
        plural(report.locks.len() as u64, "lock", "locks")
    );
    let width = report
        .locks
        .values()
        .flat_map(|l| l.per_node.keys())
        .map(String::len)
        .max()
        .unwrap_or(0);
    for (name, lock) in &report.locks {
        let _ = write!(
            out,
            "lock {name}: {}",
            plural(lock.entries, "entry", "entries")
        );
        if let Some((lo, hi)) = lock.fence_range {
            let _ = write!(
                out,
                ", fences {lo} .. {hi} ({} .. {})",
                fence_pair(lo),
                fence_pair(hi)
            );
        }
        let _ = writeln!(out);
        for (node, n) in &lock.per_node {
            let _ = writeln!(out, "  {node:<width$}  {}", plural(*n, "entry", "entries"));
        }
    }
    let _ = writeln!(
        out,
        "most holders of one lock at once: {}",
        report.max_holders
    );
    if let Some(h) = &report.longest_hold {
        let _ = writeln!(
            out,
            "longest hold: {} of {} by {} (fence {}, lines {}-{})",
            duration(h.micros),
            h.lock,
            h.node,
            h.fence,
            h.from_line,
            h.to_line
        );
    }
    if let Some(g) = &report.longest_gap {
        let _ = writeln!(
            out,
            "longest gap between an exit and the next entry: {} (lines {}-{}, then {} took {})",
            duration(g.micros),
            g.from_line,
            g.to_line,
            g.node,
            g.lock
        );
    }
    if report.entries > 0 {
        // The file records entries and exits, not when a request was made.
        let _ = writeln!(
            out,
            "longest wait: not in this file (it has no request times); see `waited` on the enter events of the node logs"
        );
    }
    if report.with_logs {
        let _ = writeln!(
            out,
            "overlaps with an evicted holder (the later fence the larger): {}",
            report.evicted_overlaps.len()
        );
        for e in &report.evicted_overlaps {
            let _ = writeln!(out, "  {}", e.message);
        }
        let _ = writeln!(
            out,
            "entries by a node evicted while it waited (the fence the smaller): {}",
            report.stale_entries.len()
        );
        for e in &report.stale_entries {
            let _ = writeln!(out, "  {}", e.message);
        }
    }
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    for v in &report.violations {
        let _ = writeln!(out, "{}", v.message);
    }
    let hidden = report.violation_count - report.violations.len() as u64;
    if hidden > 0 {
        let _ = writeln!(out, "... and {hidden} more violations");
    }
    if report.ok() {
        let _ = writeln!(out, "OK: mutual exclusion held");
    } else {
        let _ = writeln!(
            out,
            "FAILED: {}",
            plural(report.violation_count, "violation", "violations")
        );
    }
    out
}

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let path = &args.file;
    match check_file_with_logs(path, &args.logs) {
        Ok(report) => {
            print!("{}", summary(&report));
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(e @ CheckError::Log(_)) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => {
            // Not Err: main would exit with 1, which means "violation" here.
            eprintln!("error: {}: {e}", path.display());
            Ok(ExitCode::from(2))
        }
    }
}
