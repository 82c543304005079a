//! What the node logs say about holders the cluster evicted: for `ra check
//! --logs`. A holder stops holding when the cluster has moved on without it:
//!
//! - a node logged an active set that removed its process (its own node
//!   included: a holder that learns it was removed logs it);
//! - another node declared its process failed;
//! - its process was replaced: another process started at its address (a log's
//!   first records, or a peer logging the restart), or the shared file shows
//!   its address writing with another pid;
//! - its own node logged the lock lost under that fence.
//!
//! Each fact is a time; an entry that has not exited is evicted by the first
//! fact about its process after it entered. The entry's process (address and
//! start time) comes from the `enter` event with the same lock and fence; when
//! no log has it, any fact about its address counts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::cs::CsRecord;
use crate::event::{Event, LogError, LogRecord, read_log};
use crate::protocol::ids::ProcessId;

use super::checker::Holder;

/// What a fact says happened to a process.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fact {
    /// An active set without it was installed by `by`.
    Removed { by: ProcessId },
    /// `by` declared it failed.
    Failed { by: ProcessId },
    /// A newer process, `by`, started at its address.
    Replaced { by: ProcessId },
    /// Its own node told its client the lock is lost (lock, fence token).
    Lost { lock: String, token: u64 },
}

#[derive(Clone, Debug)]
struct Evidence {
    /// Unix microseconds.
    at_us: u64,
    /// The process it is about.
    about: ProcessId,
    fact: Fact,
}

/// One entry as its node logged it.
#[derive(Clone, Debug)]
struct EntryInfo {
    process: ProcessId,
    /// When its request was issued, if the log has it.
    asked_us: Option<u64>,
}

/// The eviction facts of a set of node logs.
#[derive(Clone, Debug, Default)]
pub struct Evictions {
    /// Facts per address, in time order.
    facts: HashMap<SocketAddr, Vec<Evidence>>,
    /// (address, lock, fence token) of every logged entry.
    entries: HashMap<(SocketAddr, String, u64), EntryInfo>,
}

fn micros(t: jiff::Timestamp) -> u64 {
    u64::try_from(t.as_microsecond()).unwrap_or(0)
}

fn clock(us: u64) -> String {
    match jiff::Timestamp::from_microsecond(us as i64) {
        Ok(t) => t.strftime("%H:%M:%S%.6f").to_string(),
        Err(_) => us.to_string(),
    }
}

impl Evictions {
    /// Reads every log; a log that cannot be read is an error.
    pub fn read(paths: &[PathBuf]) -> Result<Self, LogError> {
        let mut records = Vec::new();
        for path in paths {
            records.extend(read_log(path)?);
        }
        Ok(Self::from_records(&records))
    }

    /// The facts of records from any number of logs, in any order.
    pub fn from_records(records: &[LogRecord]) -> Self {
        let mut sorted: Vec<&LogRecord> = records.iter().filter(|r| r.node.is_some()).collect();
        sorted.sort_by_key(|r| r.time);
        let mut this = Self::default();
        // Requests issued, per (process, lock, request id): the latest.
        let mut asked: HashMap<(ProcessId, String, u64), u64> = HashMap::new();
        // The newest process seen at each address.
        let mut newest: HashMap<SocketAddr, ProcessId> = HashMap::new();
        for r in sorted {
            let Some(by) = r.node else { continue };
            let at_us = micros(r.time);
            let mut add = |about: ProcessId, fact: Fact| {
                this.facts
                    .entry(about.addr)
                    .or_default()
                    .push(Evidence { at_us, about, fact });
            };
            // Any record of a newer process at an address replaces the older one.
            match newest.get(&by.addr) {
                Some(old) if old.incarnation < by.incarnation => {
                    add(*old, Fact::Replaced { by });
                    newest.insert(by.addr, by);
                }
                None => {
                    newest.insert(by.addr, by);
                }
                _ => {}
            }
            match &r.event {
                Event::ActiveSetInstalled { removed, .. } => {
                    for p in removed {
                        add(*p, Fact::Removed { by });
                    }
                }
                Event::MemberFailed { member, .. } => add(*member, Fact::Failed { by }),
                Event::MemberRestarted { previous, member } => {
                    add(*previous, Fact::Replaced { by: *member })
                }
                Event::Lost {
                    lock,
                    fence: Some(fence),
                    ..
                } => {
                    if let Some(token) = fence.token() {
                        add(
                            by,
                            Fact::Lost {
                                lock: lock.to_string(),
                                token,
                            },
                        );
                    }
                }
                Event::RequestIssued {
                    lock, request_id, ..
                } => {
                    asked.insert((by, lock.to_string(), *request_id), at_us);
                }
                Event::Enter {
                    lock,
                    request_id,
                    fence,
                    ..
                } => {
                    if let Some(token) = fence.token() {
                        let asked_us = asked.get(&(by, lock.to_string(), *request_id)).copied();
                        this.entries.insert(
                            (by.addr, lock.to_string(), token),
                            EntryInfo {
                                process: by,
                                asked_us,
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        this
    }

    fn entry(&self, node: &str, lock: &str, token: u64) -> Option<(SocketAddr, &EntryInfo)> {
        let addr: SocketAddr = node.parse().ok()?;
        self.entries
            .get(&(addr, lock.to_string(), token))
            .map(|e| (addr, e))
    }

    /// Why `holder`, which entered `lock` and has not exited, no longer holds
    /// by `until_us` (Unix microseconds), or `None`. `next` is the record being
    /// checked: its own address writing with another pid replaces the holder.
    pub(crate) fn evicted(
        &self,
        lock: &str,
        holder: &Holder,
        until_us: u64,
        next: Option<&CsRecord>,
    ) -> Option<String> {
        if let Some(next) = next
            && next.node == holder.node
            && next.pid != 0
            && holder.pid != 0
            && next.pid != holder.pid
        {
            return Some(format!(
                "{} restarted: pid {} entered on line {}, pid {} writes now",
                holder.node, holder.pid, holder.line, next.pid
            ));
        }
        let addr: SocketAddr = holder.node.parse().ok()?;
        let process = self
            .entry(&holder.node, lock, holder.fence)
            .map(|(_, e)| e.process);
        let facts = self.facts.get(&addr)?;
        facts
            .iter()
            .filter(|e| e.at_us > holder.unix_us && e.at_us <= until_us)
            .find(|e| concerns(e, process, lock, holder.fence))
            .map(|e| describe(e, &holder.node))
    }

    /// Why the entry `r` was made by a node the cluster had evicted while it
    /// waited for it (between its request and its entry), or `None`.
    pub(crate) fn stale_entry(&self, r: &CsRecord) -> Option<String> {
        let (addr, info) = self.entry(&r.node, &r.lock, r.fence)?;
        let asked = info.asked_us?;
        self.facts
            .get(&addr)?
            .iter()
            .filter(|e| e.at_us >= asked && e.at_us <= r.unix_us)
            .find(|e| {
                e.about == info.process
                    && matches!(e.fact, Fact::Removed { .. } | Fact::Failed { .. })
            })
            .map(|e| {
                format!(
                    "{} asked at {} and was evicted before it entered: {}",
                    r.node,
                    clock(asked),
                    describe(e, &r.node)
                )
            })
    }
}

/// Whether a fact ends the hold of `process` (unknown: any process at its
/// address) on `lock` under `token`.
fn concerns(e: &Evidence, process: Option<ProcessId>, lock: &str, token: u64) -> bool {
    let newer_or_same = process.is_none_or(|p| e.about.incarnation >= p.incarnation);
    match &e.fact {
        Fact::Removed { .. } | Fact::Failed { .. } | Fact::Replaced { .. } => newer_or_same,
        Fact::Lost { lock: l, token: t } => newer_or_same && l == lock && *t == token,
    }
}

fn describe(e: &Evidence, node: &str) -> String {
    let at = clock(e.at_us);
    match &e.fact {
        Fact::Removed { by } if by.addr == e.about.addr => {
            format!("{node} logged its removal from the active set at {at}")
        }
        Fact::Removed { by } => {
            format!("{} removed {node} from the active set at {at}", by.addr)
        }
        Fact::Failed { by } => format!("{} declared {node} failed at {at}", by.addr),
        Fact::Replaced { .. } => format!("{node} was restarted as a new process at {at}"),
        Fact::Lost { .. } => format!("{node} logged the lock lost at {at}"),
    }
}
