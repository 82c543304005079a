//! The streaming checker behind `ra check`: records in file order, one state
//! per lock (who holds it, the last fence, the last exit), each rule judged as
//! its line arrives.

use std::collections::BTreeMap;

use super::evictions::Evictions;
use super::{CheckError, CheckReport, Excused, Span, Violation, ViolationKind};
use crate::cs::{CsEvent, CsRecord};

/// Only a line's event, to name an unknown one.
#[derive(serde::Deserialize)]
struct EventName {
    event: String,
}

/// Violations kept in detail; the rest are only counted, so a file that is
/// wrong everywhere does not fill memory or the terminal.
const MAX_REPORTED: usize = 1000;

/// An entry that has not exited yet.
#[derive(Clone, Debug)]
pub(crate) struct Holder {
    pub node: String,
    pub pid: u32,
    pub fence: u64,
    pub line: u64,
    pub unix_us: u64,
    /// Set once the logs show it evicted: why, in words.
    pub evicted: Option<String>,
}

#[derive(Default)]
struct LockState {
    /// Entries that have not exited. More than one only after an overlap;
    /// keeping them all lets each later exit match its own entry instead of
    /// cascading into a violation per line.
    holders: Vec<Holder>,
    /// The previous entry's fence and line, for the increasing-fence rule.
    last_entry: Option<(u64, u64)>,
    /// The last exit, for the gap to the next entry: (unix_us, line).
    last_exit: Option<(u64, u64)>,
}

/// The streaming checker: feed it records in file order, then [`Checker::finish`].
#[derive(Default)]
pub struct Checker {
    report: CheckReport,
    locks: BTreeMap<String, LockState>,
    evictions: Option<Evictions>,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A checker that ends a holder's entry at its eviction.
    pub fn with_evictions(evictions: Evictions) -> Self {
        Self {
            report: CheckReport {
                with_logs: true,
                ..CheckReport::default()
            },
            evictions: Some(evictions),
            ..Self::default()
        }
    }

    /// Parses and checks one line (1-based `line`); empty lines are skipped.
    pub fn feed_line(&mut self, line: u64, text: &str) -> Result<(), CheckError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        let record: CsRecord = serde_json::from_str(text).map_err(|e| {
            // Another event than enter and exit is named as such, as when the
            // field was free text, rather than as serde's "unknown variant".
            if let Ok(EventName { event }) = serde_json::from_str(text)
                && !matches!(event.as_str(), "enter" | "exit")
            {
                return CheckError::Malformed {
                    line,
                    reason: format!("unknown event {event:?} (expected \"enter\" or \"exit\")"),
                };
            }
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
        self.feed(line, &record);
        Ok(())
    }

    /// Checks one record read from line `line`.
    pub fn feed(&mut self, line: u64, record: &CsRecord) {
        match record.event {
            CsEvent::Enter => self.enter(line, record),
            CsEvent::Exit => self.exit(line, record),
        }
        self.report.records += 1;
    }

    fn enter(&mut self, line: u64, r: &CsRecord) {
        self.report.entries += 1;
        let lock_report = self.report.locks.entry(r.lock.clone()).or_default();
        lock_report.entries += 1;
        *lock_report.per_node.entry(r.node.clone()).or_default() += 1;
        lock_report.fence_range = Some(match lock_report.fence_range {
            Some((lo, hi)) => (lo.min(r.fence), hi.max(r.fence)),
            None => (r.fence, r.fence),
        });

        let state = self.locks.entry(r.lock.clone()).or_default();
        // Holders the cluster evicted by now stop counting.
        let mut stale = None;
        if let Some(evictions) = &self.evictions {
            for h in state.holders.iter_mut().filter(|h| h.evicted.is_none()) {
                h.evicted = evictions.evicted(&r.lock, h, r.unix_us, Some(r));
            }
            stale = evictions.stale_entry(r);
        }
        let live = state.holders.iter().rev().find(|h| h.evicted.is_none());
        // Of the evicted holders still open, the one the new fence must beat.
        let evicted = state
            .holders
            .iter()
            .filter(|h| h.evicted.is_some())
            .max_by_key(|h| h.fence);
        let mut found: Vec<(ViolationKind, Option<u64>, String)> = Vec::new();
        let mut excused_overlap = None;
        let mut excused_stale = None;
        let mut fence_judged = false;
        let lock = &r.lock;
        if let Some(holder) = live {
            let head = format!(
                "line {line}: enter of {lock} by {} (fence {}) while {} holds since line {} (fence {})",
                r.node, r.fence, holder.node, holder.line, holder.fence
            );
            match &stale {
                Some(why) if r.fence < holder.fence => {
                    fence_judged = true;
                    excused_stale = Some(Excused {
                        line,
                        earlier_line: Some(holder.line),
                        message: format!("{head}: {why}; its fence is the smaller"),
                    });
                }
                Some(why) => {
                    fence_judged = true;
                    found.push((
                        ViolationKind::EvictedFenceNotBelow,
                        Some(holder.line),
                        format!("{head}: {why}, yet its fence is not the smaller"),
                    ));
                }
                None => found.push((ViolationKind::Overlap, Some(holder.line), head)),
            }
        } else if let Some(holder) = evicted {
            let why = holder.evicted.clone().unwrap_or_default();
            let head = format!(
                "line {line}: enter of {lock} by {} (fence {}) while {} (fence {}, line {}) had not exited: {why}",
                r.node, r.fence, holder.node, holder.fence, holder.line
            );
            if r.fence > holder.fence {
                // Excused; the fence rule below still compares with the
                // previous entry, whoever made it.
                excused_overlap = Some(Excused {
                    line,
                    earlier_line: Some(holder.line),
                    message: format!("{head}; the later fence is the larger"),
                });
            } else {
                fence_judged = true;
                found.push((
                    ViolationKind::EvictedFenceNotBelow,
                    Some(holder.line),
                    format!("{head}; yet the later fence is not the larger"),
                ));
            }
        }
        if state.holders.is_empty()
            && let Some((exit_us, exit_line)) = state.last_exit
        {
            let gap = Span {
                micros: signed_diff(r.unix_us, exit_us),
                from_line: exit_line,
                to_line: line,
                lock: r.lock.clone(),
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

        if let Some((fence, fence_line)) = state.last_entry
            && r.fence <= fence
            && !fence_judged
        {
            let message = format!(
                "line {line}: enter of {lock} by {} with fence {}, not above fence {fence} of the previous entry on line {fence_line}",
                r.node, r.fence
            );
            match &stale {
                Some(why) => {
                    excused_stale = Some(Excused {
                        line,
                        earlier_line: Some(fence_line),
                        message: format!("{message}: {why}"),
                    })
                }
                None => found.push((ViolationKind::FenceNotIncreasing, Some(fence_line), message)),
            }
        }
        // A stale entry's old fence says nothing about the next one's.
        if stale.is_none() || state.last_entry.is_none_or(|(f, _)| r.fence > f) {
            state.last_entry = Some((r.fence, line));
        }
        state.holders.push(Holder {
            node: r.node.clone(),
            pid: r.pid,
            fence: r.fence,
            line,
            unix_us: r.unix_us,
            evicted: None,
        });
        let live = state.holders.iter().filter(|h| h.evicted.is_none()).count();
        self.report.max_holders = self.report.max_holders.max(live);
        self.report.evicted_overlaps.extend(excused_overlap);
        self.report.stale_entries.extend(excused_stale);
        for (kind, earlier, message) in found {
            self.violation(kind, line, earlier, message);
        }
    }

    fn exit(&mut self, line: u64, r: &CsRecord) {
        self.report.exits += 1;
        self.report.locks.entry(r.lock.clone()).or_default().exits += 1;
        let state = self.locks.entry(r.lock.clone()).or_default();
        let found = state
            .holders
            .iter()
            .rposition(|h| h.node == r.node && h.fence == r.fence);
        let lock = &r.lock;
        match found {
            Some(i) => {
                let holder = state.holders.remove(i);
                if holder.evicted.is_none() {
                    let hold = Span {
                        micros: signed_diff(r.unix_us, holder.unix_us),
                        from_line: holder.line,
                        to_line: line,
                        lock: r.lock.clone(),
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
                }
                if state.holders.is_empty() {
                    state.last_exit = Some((r.unix_us, line));
                }
            }
            None => match state.holders.last() {
                None => {
                    let earlier = state.last_exit.map(|(_, l)| l);
                    let since = match earlier {
                        Some(l) => format!(" (the last exit of {lock} was on line {l})"),
                        None => format!(" (no entry of {lock} before it)"),
                    };
                    let message = format!(
                        "line {line}: exit of {lock} by {} (fence {}) while nobody holds it{since}",
                        r.node, r.fence
                    );
                    self.violation(ViolationKind::ExitWithoutHolder, line, earlier, message);
                }
                Some(holder) => {
                    let message = format!(
                        "line {line}: exit of {lock} by {} (fence {}) but {} holds it since line {} (fence {})",
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
        for (lock, state) in &mut self.locks {
            for h in &mut state.holders {
                if h.evicted.is_none()
                    && let Some(evictions) = &self.evictions
                {
                    h.evicted = evictions.evicted(lock, h, u64::MAX, None);
                }
                let warning = match &h.evicted {
                    Some(why) => format!(
                        "line {}: enter of {lock} by {} (fence {}) has no exit: it ended there, {why}",
                        h.line, h.node, h.fence
                    ),
                    None => format!(
                        "line {}: enter of {lock} by {} (fence {}) has no exit: the holder crashed inside the critical section, is still inside, or the file was cut short",
                        h.line, h.node, h.fence
                    ),
                };
                self.report.warnings.push(warning);
            }
        }
        self.report
    }
}

fn signed_diff(later: u64, earlier: u64) -> i64 {
    (i128::from(later) - i128::from(earlier)).clamp(i128::from(i64::MIN), i128::from(i64::MAX))
        as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> String {
        match Checker::new().feed_line(7, text) {
            Err(CheckError::Malformed { line: 7, reason }) => reason,
            other => panic!("expected line 7 refused, got {other:?}"),
        }
    }

    /// An event other than enter and exit is refused by name, like any line
    /// that is not a record, and is not counted.
    #[test]
    fn an_unknown_event_is_refused_by_name() {
        let line = |event: &str| {
            format!(r#"{{"event":"{event}","node":"a:1","fence":1,"lamport":1,"unix_us":1}}"#)
        };
        assert_eq!(
            reason(&line("jump")),
            r#"unknown event "jump" (expected "enter" or "exit")"#
        );
        assert_eq!(
            reason(&line("Enter")),
            r#"unknown event "Enter" (expected "enter" or "exit")"#
        );
        // Not a string: the decoder's own words.
        let numbered = r#"{"event":1,"node":"a:1","fence":1,"lamport":1,"unix_us":1}"#;
        assert!(
            reason(numbered).starts_with("not a critical-section record: "),
            "{}",
            reason(numbered)
        );
        // A known event with a missing field is about the field.
        let missing = r#"{"event":"exit","node":"a:1","lamport":1,"unix_us":1}"#;
        assert!(reason(missing).contains("missing field `fence`"));
        let mut checker = Checker::new();
        checker
            .feed_line(1, &line("enter"))
            .expect("an entry is a record");
        assert!(checker.feed_line(2, &line("jump")).is_err());
        assert_eq!(checker.finish().records, 1);
    }
}
