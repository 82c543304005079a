//! `ra check`: proves from the shared critical-section file (see [`crate::cs`])
//! that no two entries overlapped.
//!
//! The file is read once, line by line, so a file of millions of lines needs
//! memory only for the per-node counts and the first violations.
//!
//! Exit codes: 0 when mutual exclusion held, 1 on a violation, 2 when the file
//! cannot be read or is not a critical-section file.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;

use crate::cs::CsRecord;

/// Violations kept in detail; the rest are only counted, so a file that is
/// wrong everywhere does not fill memory or the terminal.
const MAX_REPORTED: usize = 1000;

/// What mutual exclusion rule a line broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// An `enter` while another entry had not exited.
    Overlap,
    /// An `exit` while nobody held the critical section.
    ExitWithoutHolder,
    /// An `exit` by another node, or with another fence, than the holder's.
    ExitByNonHolder,
    /// An entry whose fence does not exceed the previous entry's.
    FenceNotIncreasing,
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

/// A time span between two lines of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// Microseconds; negative only when the writers' clocks disagree.
    pub micros: i64,
    pub from_line: u64,
    pub to_line: u64,
    /// The node concerned (the holder, for a hold; the next holder, for a gap).
    pub node: String,
    pub fence: u64,
}

/// Everything `ra check` learned from a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Records read (lines that are not empty).
    pub records: u64,
    pub entries: u64,
    pub exits: u64,
    /// The most entries without exit at any point: 1 when mutual exclusion held.
    pub max_holders: usize,
    /// Entries per node, ordered by node.
    pub per_node: BTreeMap<String, u64>,
    /// Lowest and highest fence of all entries.
    pub fence_range: Option<(u64, u64)>,
    /// The longest time between an exit and the next entry.
    pub longest_gap: Option<Span>,
    /// The longest time between an entry and its exit.
    pub longest_hold: Option<Span>,
    /// The first [`MAX_REPORTED`] violations, in file order.
    pub violations: Vec<Violation>,
    /// All violations, including those not kept.
    pub violation_count: u64,
    /// Things that do not break mutual exclusion but deserve a look, such as an
    /// entry that never exits.
    pub warnings: Vec<String>,
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
        }
    }
}

impl std::error::Error for CheckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckError::Io { source, .. } => Some(source),
            CheckError::Malformed { .. } => None,
        }
    }
}

/// An entry that has not exited yet.
#[derive(Clone, Debug)]
struct Holder {
    node: String,
    fence: u64,
    line: u64,
    unix_us: u64,
}

/// The streaming checker: feed it records in file order, then [`Checker::finish`].
#[derive(Default)]
pub struct Checker {
    report: CheckReport,
    /// Entries that have not exited. More than one only after an overlap; keeping
    /// them all lets each later exit match its own entry instead of cascading
    /// into a violation per line.
    holders: Vec<Holder>,
    /// The previous entry's fence and line, for the increasing-fence rule.
    last_entry: Option<(u64, u64)>,
    /// The last exit, for the gap to the next entry: (unix_us, line).
    last_exit: Option<(u64, u64)>,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses and checks one line (1-based `line`); empty lines are skipped.
    pub fn feed_line(&mut self, line: u64, text: &str) -> Result<(), CheckError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        let record: CsRecord = serde_json::from_str(text).map_err(|e| {
            // serde counts lines within this one line: keep only the column.
            let message = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            CheckError::Malformed {
                line,
                reason: format!(
                    "not a critical-section record: {} (column {})",
                    message.strip_suffix(&position).unwrap_or(&message),
                    e.column()
                ),
            }
        })?;
        self.feed(line, &record)
    }

    /// Checks one record read from line `line`.
    pub fn feed(&mut self, line: u64, record: &CsRecord) -> Result<(), CheckError> {
        match record.event.as_str() {
            "enter" => self.enter(line, record),
            "exit" => self.exit(line, record),
            other => {
                return Err(CheckError::Malformed {
                    line,
                    reason: format!("unknown event {other:?} (expected \"enter\" or \"exit\")"),
                });
            }
        }
        self.report.records += 1;
        Ok(())
    }

    fn enter(&mut self, line: u64, r: &CsRecord) {
        let report = &mut self.report;
        report.entries += 1;
        *report.per_node.entry(r.node.clone()).or_default() += 1;
        report.fence_range = Some(match report.fence_range {
            Some((lo, hi)) => (lo.min(r.fence), hi.max(r.fence)),
            None => (r.fence, r.fence),
        });

        if let Some(holder) = self.holders.last() {
            let message = format!(
                "line {line}: enter by {} (fence {}) while {} holds since line {} (fence {})",
                r.node, r.fence, holder.node, holder.line, holder.fence
            );
            let earlier = holder.line;
            self.violation(ViolationKind::Overlap, line, Some(earlier), message);
        } else if let Some((exit_us, exit_line)) = self.last_exit {
            let gap = Span {
                micros: signed_diff(r.unix_us, exit_us),
                from_line: exit_line,
                to_line: line,
                node: r.node.clone(),
                fence: r.fence,
            };
            if self
                .report
                .longest_gap
                .as_ref()
                .is_none_or(|g| gap.micros > g.micros)
            {
                self.report.longest_gap = Some(gap);
            }
        }

        if let Some((fence, fence_line)) = self.last_entry
            && r.fence <= fence
        {
            let message = format!(
                "line {line}: enter by {} with fence {}, not above fence {fence} of the previous entry on line {fence_line}",
                r.node, r.fence
            );
            self.violation(
                ViolationKind::FenceNotIncreasing,
                line,
                Some(fence_line),
                message,
            );
        }
        self.last_entry = Some((r.fence, line));
        self.holders.push(Holder {
            node: r.node.clone(),
            fence: r.fence,
            line,
            unix_us: r.unix_us,
        });
        self.report.max_holders = self.report.max_holders.max(self.holders.len());
    }

    fn exit(&mut self, line: u64, r: &CsRecord) {
        self.report.exits += 1;
        let found = self
            .holders
            .iter()
            .rposition(|h| h.node == r.node && h.fence == r.fence);
        match found {
            Some(i) => {
                let holder = self.holders.remove(i);
                let hold = Span {
                    micros: signed_diff(r.unix_us, holder.unix_us),
                    from_line: holder.line,
                    to_line: line,
                    node: holder.node,
                    fence: holder.fence,
                };
                if self
                    .report
                    .longest_hold
                    .as_ref()
                    .is_none_or(|h| hold.micros > h.micros)
                {
                    self.report.longest_hold = Some(hold);
                }
                if self.holders.is_empty() {
                    self.last_exit = Some((r.unix_us, line));
                }
            }
            None => match self.holders.last() {
                None => {
                    let earlier = self.last_exit.map(|(_, l)| l);
                    let since = match earlier {
                        Some(l) => format!(" (the last exit was on line {l})"),
                        None => " (no entry before it)".to_string(),
                    };
                    let message = format!(
                        "line {line}: exit by {} (fence {}) while nobody holds{since}",
                        r.node, r.fence
                    );
                    self.violation(ViolationKind::ExitWithoutHolder, line, earlier, message);
                }
                Some(holder) => {
                    let message = format!(
                        "line {line}: exit by {} (fence {}) but {} holds since line {} (fence {})",
                        r.node, r.fence, holder.node, holder.line, holder.fence
                    );
                    let earlier = holder.line;
                    self.violation(ViolationKind::ExitByNonHolder, line, Some(earlier), message);
                }
            },
        }
    }

    fn violation(
        &mut self,
        kind: ViolationKind,
        line: u64,
        earlier_line: Option<u64>,
        message: String,
    ) {
        self.report.violation_count += 1;
        if self.report.violations.len() < MAX_REPORTED {
            self.report.violations.push(Violation {
                kind,
                line,
                earlier_line,
                message,
            });
        }
    }

    /// The report, with a warning for each entry that never exited.
    pub fn finish(mut self) -> CheckReport {
        for h in &self.holders {
            self.report.warnings.push(format!(
                "line {}: enter by {} (fence {}) has no exit: the holder crashed inside the critical section, is still inside, or the file was cut short",
                h.line, h.node, h.fence
            ));
        }
        self.report
    }
}

fn signed_diff(later: u64, earlier: u64) -> i64 {
    (i128::from(later) - i128::from(earlier)).clamp(i128::from(i64::MIN), i128::from(i64::MAX))
        as i64
}

/// Checks the records of a whole file held in memory (tests, small files).
pub fn check_lines(text: &str) -> Result<CheckReport, CheckError> {
    let mut checker = Checker::new();
    for (i, line) in text.lines().enumerate() {
        checker.feed_line(i as u64 + 1, line)?;
    }
    Ok(checker.finish())
}

/// Checks records as they are read: one line in memory at a time.
pub fn check_reader(mut reader: impl BufRead) -> Result<CheckReport, CheckError> {
    let mut checker = Checker::new();
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
    let file = File::open(path).map_err(|source| CheckError::Io { line: None, source })?;
    check_reader(BufReader::with_capacity(1 << 16, file))
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

/// The summary printed on stdout, violations and verdict included.
pub fn summary(report: &CheckReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}, {} ({})",
        plural(report.entries, "entry", "entries"),
        plural(report.exits, "exit", "exits"),
        plural(report.records, "record", "records")
    );
    if !report.per_node.is_empty() {
        let _ = writeln!(out, "holders:");
        let width = report.per_node.keys().map(String::len).max().unwrap_or(0);
        for (node, n) in &report.per_node {
            let _ = writeln!(out, "  {node:<width$}  {}", plural(*n, "entry", "entries"));
        }
    }
    if let Some((lo, hi)) = report.fence_range {
        let _ = writeln!(out, "fences: {lo} .. {hi}");
    }
    let _ = writeln!(out, "most holders at once: {}", report.max_holders);
    if let Some(h) = &report.longest_hold {
        let _ = writeln!(
            out,
            "longest hold: {} by {} (fence {}, lines {}-{})",
            duration(h.micros),
            h.node,
            h.fence,
            h.from_line,
            h.to_line
        );
    }
    if let Some(g) = &report.longest_gap {
        let _ = writeln!(
            out,
            "longest gap between an exit and the next entry: {} (lines {}-{}, then {} entered)",
            duration(g.micros),
            g.from_line,
            g.to_line,
            g.node
        );
    }
    if report.entries > 0 {
        // The file records entries and exits, not when a request was made.
        let _ = writeln!(
            out,
            "longest wait: not in this file (it has no request times); see waited_ms on the enter events of the node logs"
        );
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

pub fn run(args: &crate::cli::CheckArgs) -> anyhow::Result<ExitCode> {
    let path = &args.file;
    match check_file(path) {
        Ok(report) => {
            print!("{}", summary(&report));
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(e) => {
            // Not Err: main would exit with 1, which means "violation" here.
            eprintln!("error: {}: {e}", path.display());
            Ok(ExitCode::from(2))
        }
    }
}
