//! Every read of what `ra` writes, in one place: the node logs (`--log-format json`,
//! one typed [`LogRecord`] per line on stderr) and the shared `--cs-file`
//! ([`ra::cs::CsRecord`]). Only this module looks at events, through the
//! library's types: a renamed field fails to compile here.
//!
//! A little over 500 lines with its tests: reading the nodes' logs and the shared
//! file into holds and gaps.

// A toolkit: later fault tests use parts the current ones do not.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use std::collections::BTreeMap;

use ra::event::{Event, LogRecord, SetSource};
use ra::protocol::ids::ProcessId;

/// One line of a node log: a typed record, or a line that is not one (a panic
/// message, say).
#[derive(Clone, Debug)]
pub struct LogEvent {
    /// When it was logged, microseconds since the Unix epoch (0 if unparsed).
    pub at_us: u64,
    record: Result<LogRecord, String>,
}

impl LogEvent {
    fn event(&self) -> Option<&Event> {
        self.record.as_ref().ok().map(|r| &r.event)
    }

    /// The sentence `ra` logged, or the raw line.
    pub fn message(&self) -> &str {
        match &self.record {
            Ok(r) => &r.message,
            Err(line) => line,
        }
    }
}

/// The active set as a node last logged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveSet {
    pub epoch: u64,
    pub members: Vec<String>,
}

impl std::fmt::Display for ActiveSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {} [{}]", self.epoch, self.members.join(", "))
    }
}

/// An active set as one node installed it.
#[derive(Clone, Debug)]
pub struct Install {
    pub at_us: u64,
    pub epoch: u64,
    pub members: Vec<ProcessId>,
    pub removed: Vec<ProcessId>,
    /// Decided (or founded) by this node's own round, not learned.
    pub decided: bool,
}

/// Dropped input, as a node logged it.
#[derive(Clone, Debug, Default)]
pub struct Drops {
    /// `dropped` records (one per input, the first few of a burst).
    pub logged: u64,
    /// `drops_summarised` records.
    pub summaries: u64,
    /// Inputs those summaries count.
    pub summarised: u64,
    pub reasons: BTreeMap<String, u64>,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.logged + self.summarised
    }
}

/// A node's log, read whole (all incarnations of the host, in order).
pub struct NodeLog {
    pub path: PathBuf,
    pub events: Vec<LogEvent>,
}

/// Events worth counting in a fault test's report, with a short label.
fn notable(event: &Event) -> Option<&'static str> {
    Some(match event {
        Event::MemberFailed { .. } => "failed",
        Event::MemberBack { .. } => "back",
        Event::MemberRestarted { .. } => "restarted",
        Event::Rejoined { .. } => "rejoined",
        Event::Alone => "alone",
        Event::NewerSetSent { .. } => "told-newer",
        Event::Reissued { .. } => "reissued",
        Event::Withdrawn { .. } => "withdrawn",
        Event::ReplyExpired { .. } => "reply-expired",
        Event::Lost { .. } => "lost",
        Event::Paused { .. } => "paused",
        Event::ClusterMerged { .. } => "merged",
        Event::Founded { .. } => "founded",
        Event::Dropped { .. } => "dropped",
        _ => return None,
    })
}

impl NodeLog {
    /// Unreadable or missing files read as empty; lines that are not a node's
    /// record are kept as unparsed.
    pub fn read(path: &Path) -> NodeLog {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let events = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| match LogRecord::from_json(line) {
                Ok(record) => LogEvent {
                    at_us: u64::try_from(record.time.as_microsecond()).unwrap_or(0),
                    record: Ok(record),
                },
                Err(_) => LogEvent {
                    at_us: 0,
                    record: Err(line.to_string()),
                },
            })
            .collect();
        NodeLog {
            path: path.to_path_buf(),
            events,
        }
    }

    fn events(&self) -> impl DoubleEndedIterator<Item = (u64, &Event)> {
        self.events
            .iter()
            .filter_map(|e| e.event().map(|ev| (e.at_us, ev)))
    }

    /// The last active set this node logged (learned, decided or founded).
    pub fn active_set(&self) -> Option<ActiveSet> {
        self.events().rev().find_map(|(_, e)| match e {
            Event::ActiveSetInstalled { epoch, members, .. } => Some(ActiveSet {
                epoch: *epoch,
                members: members.iter().map(|m| m.addr.to_string()).collect(),
            }),
            _ => None,
        })
    }

    /// When this node first declared `peer` failed at or after `after_us`.
    pub fn failed_at(&self, peer: &str, after_us: u64) -> Option<u64> {
        self.events()
            .find(|(at, e)| {
                *at >= after_us
                    && matches!(e, Event::MemberFailed { member, .. } if member.addr.to_string() == peer)
            })
            .map(|(at, _)| at)
    }

    /// Whether the entry with this fence token had its permission complete (the
    /// last reply counted, or nobody to ask) before `t_us`: an entry that was
    /// due when a cut happened, rather than one granted across it.
    pub fn permission_complete_before(&self, fence: u64, t_us: u64) -> bool {
        let Some((lock, request)) = self.events().find_map(|(_, e)| match e {
            Event::Enter {
                lock,
                request_id,
                fence: f,
                ..
            } if f.token() == Some(fence) => Some((lock.clone(), *request_id)),
            _ => None,
        }) else {
            return false;
        };
        self.events().any(|(at, e)| {
            at < t_us
                && match e {
                    Event::ReplyReceived {
                        lock: l,
                        request_id,
                        remaining: 0,
                        ..
                    } => *l == lock && *request_id == request,
                    Event::RequestIssued {
                        lock: l,
                        request_id,
                        awaiting,
                        ..
                    }
                    | Event::Reissued {
                        lock: l,
                        request_id,
                        awaiting,
                        ..
                    } => *l == lock && *request_id == request && awaiting.is_empty(),
                    _ => false,
                }
        })
    }

    /// Every entry this node logged: (when, lock, fence token).
    pub fn entries(&self) -> Vec<(u64, String, u64)> {
        self.events()
            .filter_map(|(at, e)| match e {
                Event::Enter { lock, fence, .. } => {
                    Some((at, lock.to_string(), fence.token().unwrap_or(0)))
                }
                _ => None,
            })
            .collect()
    }

    /// Every active set this node installed, in order.
    pub fn installs(&self) -> Vec<Install> {
        self.events()
            .filter_map(|(at, e)| match e {
                Event::ActiveSetInstalled {
                    epoch,
                    members,
                    removed,
                    source,
                    ..
                } => Some(Install {
                    at_us: at,
                    epoch: *epoch,
                    members: members.clone(),
                    removed: removed.clone(),
                    decided: matches!(source, SetSource::Decided | SetSource::Founded),
                }),
                _ => None,
            })
            .collect()
    }

    /// The processes this log's node ran as (one per start).
    pub fn processes(&self) -> Vec<ProcessId> {
        self.events()
            .filter_map(|(_, e)| match e {
                Event::Listening { node, .. } => Some(*node),
                Event::Started { me, .. } => Some(*me),
                _ => None,
            })
            .fold(Vec::new(), |mut v, p| {
                if !v.contains(&p) {
                    v.push(p);
                }
                v
            })
    }

    /// Members this node learned of (joined, restarted, renamed) in `[from, to)`.
    pub fn members_learned(&self, from_us: u64, to_us: u64) -> Vec<ProcessId> {
        self.events()
            .filter(|(at, _)| *at >= from_us && *at < to_us)
            .filter_map(|(_, e)| match e {
                Event::MemberJoined { member }
                | Event::MemberRestarted { member, .. }
                | Event::MemberBack { member }
                | Event::MemberRenamed { member, .. } => Some(*member),
                _ => None,
            })
            .collect()
    }

    /// The bumps of this node's identity renewals (`rejoined`) in `[from, to)`.
    pub fn rejoined(&self, from_us: u64, to_us: u64) -> Vec<u32> {
        self.events()
            .filter(|(at, _)| *at >= from_us && *at < to_us)
            .filter_map(|(_, e)| match e {
                Event::Rejoined { bump } => Some(*bump),
                _ => None,
            })
            .collect()
    }

    /// Drops in `[from, to)`: (lines logged one by one, summary records, inputs
    /// the summaries count, the summaries' reasons with counts).
    pub fn drops(&self, from_us: u64, to_us: u64) -> Drops {
        let mut d = Drops::default();
        for (at, e) in self.events() {
            if at < from_us || at >= to_us {
                continue;
            }
            match e {
                Event::Dropped { why, .. } => {
                    d.logged += 1;
                    *d.reasons.entry(why.kind().to_string()).or_default() += 1;
                }
                Event::DropsSummarised { count, reasons, .. } => {
                    d.summaries += 1;
                    d.summarised += count;
                    for (reason, n) in reasons {
                        *d.reasons.entry(reason.clone()).or_default() += n;
                    }
                }
                _ => {}
            }
        }
        d
    }

    /// Replies that reached this node in `[from, to)`: (when, "counted",
    /// "expired" or "ignored <why>", the epoch it was given under if logged).
    pub fn replies(&self, from_us: u64, to_us: u64) -> Vec<(u64, String, Option<u64>)> {
        self.events()
            .filter(|(at, _)| *at >= from_us && *at < to_us)
            .filter_map(|(at, e)| match e {
                Event::ReplyReceived { epoch, .. } => Some((at, "counted".into(), Some(*epoch))),
                Event::ReplyExpired { .. } => Some((at, "expired".into(), None)),
                Event::ReplyIgnored { epoch, why, .. } => {
                    Some((at, format!("ignored {why:?}"), Some(*epoch)))
                }
                _ => None,
            })
            .collect()
    }

    /// Lines of this log that tell of a panic.
    pub fn panics(&self) -> Vec<String> {
        self.events
            .iter()
            .map(LogEvent::message)
            .filter(|m| m.contains("panicked"))
            .map(str::to_string)
            .collect()
    }

    /// Loss events (a holder's ticket ended without release): (when, why).
    pub fn losses(&self) -> Vec<(u64, String)> {
        self.events()
            .filter_map(|(at, e)| match e {
                Event::Lost { why, .. } => Some((at, format!("{why:?}"))),
                _ => None,
            })
            .collect()
    }

    /// Pauses this node measured: (when it noticed, how long it was stopped).
    pub fn pauses(&self) -> Vec<(u64, std::time::Duration)> {
        self.events()
            .filter_map(|(at, e)| match e {
                Event::Paused { stopped_for, .. } => Some((at, *stopped_for)),
                _ => None,
            })
            .collect()
    }

    /// Counts of notable events (failures, renewals, drops, ...) logged in
    /// `[from_us, to_us)`, as "label n" pieces.
    pub fn notable(&self, from_us: u64, to_us: u64) -> Vec<String> {
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        for (at, e) in self.events() {
            if at < from_us || at >= to_us {
                continue;
            }
            if let Some(label) = notable(e) {
                match counts.iter_mut().find(|(l, _)| *l == label) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((label, 1)),
                }
            }
        }
        counts.iter().map(|(l, n)| format!("{l} {n}")).collect()
    }

    /// Lines in `[from_us, to_us)` that are warnings or errors, or not records at all.
    pub fn warnings(&self, from_us: u64, to_us: u64) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| match &e.record {
                Ok(r) => {
                    e.at_us >= from_us
                        && e.at_us < to_us
                        && matches!(r.level.as_str(), "WARN" | "ERROR")
                }
                Err(_) => true,
            })
            .map(|e| e.message().to_string())
            .collect()
    }

    /// Events logged in `[from_us, to_us)`, as "hh:mm:ss.mmm message" lines, for a report.
    pub fn excerpt(&self, from_us: u64, to_us: u64) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e.at_us >= from_us && e.at_us < to_us)
            .map(|e| format!("{} {}", clock(e.at_us), e.message()))
            .collect()
    }
}

/// "hh:mm:ss.mmm" (UTC) of a Unix time in microseconds.
pub fn clock(us: u64) -> String {
    match jiff::Timestamp::from_microsecond(us as i64) {
        Ok(t) => t.strftime("%H:%M:%S%.3f").to_string(),
        Err(_) => us.to_string(),
    }
}

/// One record of the shared critical-section file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsRecord {
    /// 1-based line number in the file.
    pub line: usize,
    pub enter: bool,
    pub node: String,
    pub lock: String,
    pub fence: u64,
    pub unix_us: u64,
}

fn parse_cs_line(line: usize, text: &str) -> Option<CsRecord> {
    let r: ra::cs::CsRecord = serde_json::from_str(text).ok()?;
    Some(CsRecord {
        line,
        enter: r.event == ra::cs::CsEvent::Enter,
        node: r.node,
        lock: r.lock,
        fence: r.fence,
        unix_us: r.unix_us,
    })
}

/// The whole critical-section file (missing: empty). Lines that do not parse are
/// skipped here; `ra check` judges them.
pub fn cs_records(path: &Path) -> Vec<CsRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .enumerate()
        .filter_map(|(i, l)| parse_cs_line(i + 1, l))
        .collect()
}

/// Follows the critical-section file as it grows, reading only what is new.
pub struct CsTail {
    path: std::path::PathBuf,
    offset: u64,
    partial: String,
    lines: usize,
}

impl CsTail {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
            lines: 0,
        }
    }

    /// Records appended since the last call (complete lines only).
    pub fn poll(&mut self) -> Vec<CsRecord> {
        let Ok(mut file) = File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut fresh = String::new();
        let Ok(n) = file.read_to_string(&mut fresh) else {
            return Vec::new();
        };
        self.offset += n as u64;
        self.partial.push_str(&fresh);
        let mut out = Vec::new();
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.lines += 1;
            if let Some(r) = parse_cs_line(self.lines, line.trim_end()) {
                out.push(r);
            }
        }
        out
    }
}

/// One stay in the critical section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub node: String,
    pub lock: String,
    pub fence: u64,
    pub enter_us: u64,
    /// None: no exit recorded (still inside, or the process died inside).
    pub exit_us: Option<u64>,
}

/// Pair entries with their exits (by node and fence).
pub fn holds(records: &[CsRecord]) -> Vec<Hold> {
    let mut holds: Vec<Hold> = Vec::new();
    for r in records {
        if r.enter {
            holds.push(Hold {
                node: r.node.clone(),
                lock: r.lock.clone(),
                fence: r.fence,
                enter_us: r.unix_us,
                exit_us: None,
            });
        } else if let Some(h) = holds.iter_mut().rev().find(|h| {
            h.node == r.node && h.lock == r.lock && h.fence == r.fence && h.exit_us.is_none()
        }) {
            h.exit_us = Some(r.unix_us);
        }
    }
    holds
}

/// Pairs of holds of one lock that overlap in time (an open hold lasts
/// forever), judged from the file's own timestamps, independently of `ra check`.
pub fn overlaps(holds: &[Hold]) -> Vec<(Hold, Hold)> {
    let mut out = Vec::new();
    for (i, a) in holds.iter().enumerate() {
        for b in &holds[i + 1..] {
            let a_end = a.exit_us.unwrap_or(u64::MAX);
            let b_end = b.exit_us.unwrap_or(u64::MAX);
            if a.lock == b.lock && a.enter_us < b_end && b.enter_us < a_end {
                out.push((a.clone(), b.clone()));
            }
        }
    }
    out
}

/// `ra check FILE --logs LOG...`: whether it passed, and what it printed. The
/// logs let it tell an overlap with a holder the cluster had evicted (the later
/// fence the larger) from a violation.
pub fn ra_check(path: &Path, logs: &[NodeLog]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ra"));
    command.arg("check").arg(path);
    if !logs.is_empty() {
        command.arg("--logs").args(logs.iter().map(|l| &l.path));
    }
    match command.output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("cannot run ra check: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_utc() {
        assert_eq!(clock(1_795_865_659_953_974), "11:34:19.953");
    }

    #[test]
    fn overlapping_holds_are_found() {
        let h = |node: &str, lock: &str, fence, a, b| Hold {
            node: node.into(),
            lock: lock.into(),
            fence,
            enter_us: a,
            exit_us: b,
        };
        let hs = [
            h("a", "x", 1, 0, Some(10)),
            h("b", "x", 2, 10, Some(20)),
            h("c", "x", 3, 15, None),
            h("d", "y", 1, 15, None),
        ];
        let o = overlaps(&hs);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].0.fence, o[0].1.fence), (2, 3));
    }
}
