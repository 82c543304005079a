//! The story both formats draw: which events to show (a time window, one lock,
//! or the messages that led to one entry), turned into rows of arrows and notes,
//! each membership fact said once.
//!
//! One job, past 500 lines: most of it is the one match that says what each
//! kind of event looks like in the story, with the state that match needs (who
//! holds which lock, what was already said); split, a reader would have to
//! hold two files to follow one event.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;

use anyhow::{Result, bail};

use super::TraceOptions;
use super::parse::{Ev, Parsed};
use crate::event::{Event, Expiry, LossReason};
use crate::protocol::lock::{Fence, LockName};
use crate::protocol::ricart_agrawala::{Decision, DeferReason};

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Item {
    Arrow {
        from: SocketAddr,
        to: SocketAddr,
        label: String,
        /// Replies are drawn dashed.
        reply: bool,
    },
    Note {
        at: SocketAddr,
        lines: Vec<String>,
    },
    /// A fact of the whole cluster, drawn across every participant.
    Wide {
        lines: Vec<String>,
    },
    /// `activate`: the node holds a lock. `rect` opens the highlight band
    /// (only one at a time, so the blocks nest).
    Enter {
        at: SocketAddr,
        lines: Vec<String>,
        rect: bool,
    },
    /// `active`: the node was drawn as holding; `rect`: this closes the band.
    Exit {
        at: SocketAddr,
        lines: Vec<String>,
        active: bool,
        rect: bool,
    },
    /// A holder gone without an exit (it crashed, restarted, or the logs end).
    Release {
        at: SocketAddr,
        rect: bool,
    },
}

#[derive(Clone, Debug)]
pub(super) struct Row {
    /// Microseconds since the Unix epoch.
    pub t: i64,
    pub item: Item,
}

pub(super) struct Model {
    pub files: Vec<String>,
    pub events: usize,
    pub skipped: usize,
    /// The first event's time: times are shown relative to it.
    pub t0: i64,
    pub t0_text: String,
    pub focus: Option<String>,
    pub window: Option<String>,
    pub lock: Option<String>,
    /// Addresses, in numeric order.
    pub participants: Vec<SocketAddr>,
    pub rows: Vec<Row>,
}

pub(super) fn build(parsed: Parsed, options: &TraceOptions) -> Result<Model> {
    let mut events = parsed.events;
    if let Some(name) = &options.lock {
        let locks: BTreeSet<&LockName> = events.iter().filter_map(Ev::lock).collect();
        if !locks.iter().any(|l| l.as_str() == name) {
            bail!(
                "--lock {name}: no such lock in these logs (locks: {})",
                names(&locks)
            );
        }
        events.retain(|e| e.lock().is_none_or(|l| l.as_str() == name));
    }
    let t0 = events.first().map_or(0, |e| e.t);
    let t0_text = events
        .first()
        .map_or_else(String::new, |e| format!("{:.6}", e.time));
    let from = options
        .from
        .as_deref()
        .map(|s| parse_time(s, t0, "--from"))
        .transpose()?;
    let to = options
        .to
        .as_deref()
        .map(|s| parse_time(s, t0, "--to"))
        .transpose()?;

    let mut keep = vec![true; events.len()];
    let mut focus_text = None;
    if let Some(focus) = &options.focus {
        let (selected, text) = super::focus::focus_on(&events, focus)?;
        keep = selected;
        focus_text = Some(text);
    }
    for (k, e) in keep.iter_mut().zip(&events) {
        if from.is_some_and(|f| e.t < f) || to.is_some_and(|t| e.t > t) {
            *k = false;
        }
    }

    let locks: BTreeSet<&LockName> = events.iter().filter_map(Ev::lock).collect();
    let mut builder = Builder {
        log_nodes: events.iter().map(Ev::node).collect(),
        name_locks: locks.len() > 1,
        rows: Vec::new(),
        facts: HashMap::new(),
        sets_seen: HashSet::new(),
        incarnations: HashMap::new(),
        holding: Vec::new(),
        rect_owner: None,
    };
    for (e, keep) in events.iter().zip(&keep) {
        builder.event(e, *keep);
    }
    builder.release_all();

    let mut participants: BTreeSet<SocketAddr> = BTreeSet::new();
    for row in &builder.rows {
        match &row.item {
            Item::Arrow { from, to, .. } => {
                participants.insert(*from);
                participants.insert(*to);
            }
            Item::Note { at, .. }
            | Item::Enter { at, .. }
            | Item::Exit { at, .. }
            | Item::Release { at, .. } => {
                participants.insert(*at);
            }
            Item::Wide { .. } => {}
        }
    }
    if participants.is_empty() {
        participants = events.iter().map(Ev::node).collect();
    }

    let window = match (&options.from, &options.to) {
        (None, None) => None,
        (f, t) => Some(format!(
            "window: {} to {}",
            f.as_deref().unwrap_or("the start"),
            t.as_deref().unwrap_or("the end")
        )),
    };
    Ok(Model {
        files: parsed.files,
        events: events.len(),
        skipped: parsed.skipped,
        t0,
        t0_text,
        focus: focus_text,
        window,
        lock: options.lock.clone(),
        // SocketAddr orders numerically: IP, then port.
        participants: participants.into_iter().collect(),
        rows: builder.rows,
    })
}

fn names(locks: &BTreeSet<&LockName>) -> String {
    locks
        .iter()
        .map(|l| l.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--from`/`--to`: an RFC 3339 time, or seconds since the first event.
fn parse_time(s: &str, t0: i64, flag: &str) -> Result<i64> {
    if let Ok(t) = s.trim().parse::<jiff::Timestamp>() {
        return Ok(t.as_microsecond());
    }
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() => Ok(t0.saturating_add((secs * 1e6).round() as i64)),
        _ => bail!(
            "{flag} {s:?}: expected an RFC 3339 time (2026-11-27T13:29:39Z) or seconds since the first event (3.5)"
        ),
    }
}

/// A fence as the logs of a resource see it (the token), with the pair.
pub(super) fn fence_text(f: &Fence) -> String {
    format!("{f} (epoch {} seq {})", f.epoch, f.seq)
}

/// Turns events into rows, remembering what was already said.
struct Builder {
    /// Nodes whose own log is among the inputs: their messages are drawn when
    /// sent; messages of others only when received.
    log_nodes: HashSet<SocketAddr>,
    /// More than one lock in the logs: every lock line names its lock.
    name_locks: bool,
    rows: Vec<Row>,
    /// The membership state last shown for each address, so the same fact
    /// logged by every node appears once.
    facts: HashMap<SocketAddr, &'static str>,
    /// Active sets already shown: (epoch, members).
    sets_seen: HashSet<(u64, Vec<SocketAddr>)>,
    /// The process last seen starting at each address: another one is a restart.
    incarnations: HashMap<SocketAddr, u64>,
    /// (node, lock) drawn as holding, in order of entry.
    holding: Vec<(SocketAddr, LockName)>,
    /// The hold whose entry opened the highlight band.
    rect_owner: Option<(SocketAddr, LockName)>,
}

impl Builder {
    fn push(&mut self, t: i64, item: Item) {
        self.rows.push(Row { t, item });
    }

    fn note(&mut self, e: &Ev, lines: Vec<String>) {
        self.push(
            e.t,
            Item::Note {
                at: e.node(),
                lines,
            },
        );
    }

    /// `jobs: ` before what concerns a lock, when the logs have several.
    fn tag(&self, e: &Ev) -> String {
        match (self.name_locks, e.lock()) {
            (true, Some(lock)) => format!("{lock}: "),
            _ => String::new(),
        }
    }

    /// Records a membership fact; true if it is news (not what was last said
    /// about that address, or an active set not seen before). Every event goes
    /// through here, shown or not, so a fact known before a window or a focus
    /// is not repeated inside it.
    fn remember(&mut self, e: &Ev, restarted: bool) -> bool {
        let (subject, state) = match &e.event {
            Event::Started { .. } if restarted => (e.node(), "restarted"),
            Event::MemberJoined { member } => (member.addr, "joined"),
            Event::MemberLeft { member } => (member.addr, "left"),
            Event::Left => (e.node(), "left"),
            Event::MemberFailed { member, .. } => (member.addr, "failed"),
            Event::MemberRestarted { member, .. } => (member.addr, "restarted"),
            Event::MemberBack { member } => (member.addr, "back"),
            Event::PeerLeaving { member } => (member.addr, "leaving"),
            Event::Leaving { .. } => (e.node(), "leaving"),
            Event::ActiveSetInstalled { epoch, members, .. } => {
                let members = members.iter().map(|m| m.addr).collect();
                return self.sets_seen.insert((*epoch, members));
            }
            _ => return true,
        };
        let before = self.facts.insert(subject, state);
        match (before, state) {
            (Some(b), s) if b == s => false,
            // Gone already: a peer hearing of it late is no news.
            (Some("left"), "leaving" | "failed") => {
                self.facts.insert(subject, "left");
                false
            }
            _ => true,
        }
    }

    /// `subject` no longer holds `lock` (or any lock, for `None`) without having
    /// exited.
    fn release(&mut self, t: i64, subject: SocketAddr, lock: Option<&LockName>) {
        while let Some(pos) = self
            .holding
            .iter()
            .position(|(n, l)| *n == subject && lock.is_none_or(|x| x == l))
        {
            let hold = self.holding.remove(pos);
            let rect = self.rect_owner.as_ref() == Some(&hold);
            if rect {
                self.rect_owner = None;
            }
            self.push(t, Item::Release { at: subject, rect });
        }
    }

    fn release_all(&mut self) {
        let t = self.rows.last().map_or(0, |r| r.t);
        while let Some((node, lock)) = self.holding.last().cloned() {
            self.release(t, node, Some(&lock));
        }
    }

    fn event(&mut self, e: &Ev, keep: bool) {
        // Restarts are detected over all events, shown or not.
        let restarted = match &e.event {
            Event::Started { me, .. } => self
                .incarnations
                .insert(me.addr, me.incarnation)
                .is_some_and(|before| before != me.incarnation),
            _ => false,
        };
        let novel = self.remember(e, restarted);
        if !keep {
            return;
        }
        let node = e.node();
        let tag = self.tag(e);
        match &e.event {
            Event::RequestSent {
                to,
                request_id,
                timestamp,
                attempt,
                ..
            } => {
                let again = if *attempt > 0 { " again" } else { "" };
                let label = format!("{tag}REQUEST {request_id} ts={timestamp}{again}");
                self.arrow(e, node, to.addr, label, false);
            }
            Event::RequestReceived {
                from,
                request_id,
                timestamp,
                own_timestamp,
                decision,
                ..
            } => {
                let peer = from.addr;
                if !self.log_nodes.contains(&peer) {
                    let label = format!("{tag}REQUEST {request_id} ts={timestamp}");
                    self.arrow(e, peer, node, label, false);
                }
                let ts = format!("ts={timestamp}");
                let why = match (decision, own_timestamp) {
                    (Decision::Defer(DeferReason::OwnRequestFirst { own_timestamp }), _) => Some((
                        "defers",
                        precedence(
                            &format!("own ts={own_timestamp}"),
                            &ts,
                            timestamp == own_timestamp,
                        ),
                    )),
                    (Decision::Defer(DeferReason::InCriticalSection), _) => {
                        Some(("defers", "it holds the lock".to_string()))
                    }
                    (Decision::Defer(DeferReason::EvictionPending), _) => Some((
                        "defers",
                        "its eviction from the active set is being decided".to_string(),
                    )),
                    (Decision::Grant, Some(own)) => Some((
                        "grants",
                        precedence(&ts, &format!("own ts={own}"), timestamp == own),
                    )),
                    (Decision::Grant, None) => None,
                };
                if let Some((verb, why)) = why {
                    self.note(
                        e,
                        vec![format!("{tag}{verb} REQUEST {request_id} of {peer}"), why],
                    );
                }
            }
            Event::ReplySent {
                to,
                request_id,
                deferred,
                ..
            } => {
                let label = if *deferred {
                    format!("{tag}REPLY {request_id} (deferred)")
                } else {
                    format!("{tag}REPLY {request_id}")
                };
                self.arrow(e, node, to.addr, label, true);
            }
            Event::ReplyReceived {
                from, request_id, ..
            } if !self.log_nodes.contains(&from.addr) => {
                self.arrow(e, from.addr, node, format!("{tag}REPLY {request_id}"), true);
            }
            Event::NewerSetSent { to, epoch, .. } => {
                let label = format!("{tag}NEWER SET epoch {epoch}: ask again");
                self.arrow(e, node, to.addr, label, true);
            }
            Event::ReplyIgnored {
                from, request_id, ..
            } => self.note(
                e,
                vec![format!(
                    "{tag}ignores a stale REPLY {request_id} of {}",
                    from.addr
                )],
            ),
            Event::ReplyExpired {
                from,
                request_id,
                when,
                ..
            } => self.note(
                e,
                vec![format!(
                    "{tag}REPLY {request_id} of {} {}: asks again",
                    from.addr,
                    match when {
                        Expiry::OnArrival => "came after its lease",
                        Expiry::WhileWaiting => "outlived its lease while others were awaited",
                    }
                )],
            ),
            Event::Reissued {
                request_id, epoch, ..
            } => self.note(
                e,
                vec![format!(
                    "{tag}asks again for REQUEST {request_id} (epoch {epoch})"
                )],
            ),
            Event::Withdrawn {
                request_id, why, ..
            } => {
                let why = crate::runtime::log::withdraw_reason(*why);
                self.note(
                    e,
                    vec![
                        format!("{tag}REQUEST {request_id} withdrawn"),
                        why.to_string(),
                    ],
                );
            }
            Event::RequestIssued {
                request_id,
                timestamp,
                awaiting,
                ..
            } if awaiting.is_empty() => self.note(
                e,
                vec![format!(
                    "{tag}REQUEST {request_id} ts={timestamp}: alone, no one to ask"
                )],
            ),
            Event::Enter {
                lock,
                fence,
                lamport,
                waited,
                ..
            } => {
                let second = format!(
                    "epoch {} seq {}, Lamport {lamport}, waited {:.1} ms",
                    fence.epoch,
                    fence.seq,
                    waited.as_secs_f64() * 1e3
                );
                self.enter(e, lock, fence, second);
            }
            Event::Exit {
                lock,
                fence,
                lamport,
                ..
            } => self.exit(e, lock, fence, *lamport),
            Event::Lost {
                lock, fence, why, ..
            } => {
                let why = match why {
                    LossReason::Evicted => "evicted from the active set",
                    LossReason::QuorumLost => "a quorum of the active set is down",
                    LossReason::Paused => "paused for longer than failure detection",
                    LossReason::NodeLeaving => "the node is leaving",
                    LossReason::ProxyLost => "the member holding it for us lost it",
                    LossReason::ProxySilent => "the member holding it for us fell silent",
                };
                let what = match fence {
                    Some(f) => format!("{tag}LOST the lock, fence {f}"),
                    None => format!("{tag}LOST a ticket still waiting"),
                };
                self.note(e, vec![what, why.to_string()]);
                if fence.is_some() {
                    self.release(e.t, node, Some(lock));
                }
            }
            Event::Paused { stopped_for, .. } => self.note(
                e,
                vec![format!(
                    "was stopped for {:.1} s",
                    stopped_for.as_secs_f64()
                )],
            ),
            Event::Started { .. } if restarted => {
                self.release(e.t, node, None);
                if novel {
                    self.note(e, vec![format!("{node} restarted")]);
                }
            }
            Event::MemberLeft { member }
            | Event::MemberFailed { member, .. }
            | Event::MemberRestarted {
                previous: member, ..
            } => {
                // A holder that is gone no longer holds, exit or not.
                let subject = member.addr;
                self.release(e.t, subject, None);
                if novel {
                    let what = match &e.event {
                        Event::MemberFailed { .. } => "FAILED",
                        Event::MemberRestarted { .. } => "restarted",
                        _ => "left",
                    };
                    self.note(e, vec![format!("{subject} {what}")]);
                }
            }
            Event::Left => {
                self.release(e.t, node, None);
                if novel {
                    self.note(e, vec![format!("{node} left")]);
                }
            }
            Event::MemberJoined { member } if novel => {
                self.note(e, vec![format!("{} joined", member.addr)])
            }
            Event::MemberBack { member } if novel => {
                self.note(e, vec![format!("{} is back", member.addr)])
            }
            Event::PeerLeaving { member } if novel => {
                self.note(e, vec![format!("{} is leaving", member.addr)])
            }
            Event::Leaving { .. } if novel => self.note(e, vec![format!("{node} is leaving")]),
            Event::ActiveSetInstalled { epoch, members, .. } if novel => {
                let members: Vec<String> = members.iter().map(|m| m.addr.to_string()).collect();
                self.push(
                    e.t,
                    Item::Wide {
                        lines: vec![format!("active set epoch {epoch}"), members.join(", ")],
                    },
                );
            }
            Event::Founded { .. } => self.note(e, vec!["founded a new cluster".to_string()]),
            Event::Rejoined { .. } => self.note(e, vec!["declared failed: rejoins".to_string()]),
            Event::ClusterMerged { .. } => self.note(e, vec!["joins an older cluster".to_string()]),
            Event::Alone => self.note(e, vec!["alone: no live member in view".to_string()]),
            Event::LeaveTimedOut => {
                self.note(e, vec!["leave not confirmed: leaves anyway".to_string()])
            }
            Event::FenceSpaceExhausted { epoch, .. } => self.note(
                e,
                vec![format!("{tag}no fence left in epoch {epoch}: waits")],
            ),
            Event::Dropped { .. } => {
                let line = crate::runtime::log::sentence(e.process, &e.event);
                self.note(e, vec![line]);
            }
            // Progress the arrows already show, chatter, and kinds not drawn.
            _ => {}
        }
    }

    fn arrow(&mut self, e: &Ev, from: SocketAddr, to: SocketAddr, label: String, reply: bool) {
        self.push(
            e.t,
            Item::Arrow {
                from,
                to,
                label,
                reply,
            },
        );
    }

    fn enter(&mut self, e: &Ev, lock: &LockName, fence: &Fence, second: String) {
        let node = e.node();
        let mut first = format!("{}ENTER fence {fence}", self.tag(e));
        // Two holders of one lock at once is the bug this tool exists to show.
        if let Some((other, _)) = self.holding.iter().find(|(n, l)| *n != node && l == lock) {
            first.push_str(&format!(" while {other} holds: OVERLAP"));
        }
        let hold = (node, lock.clone());
        let rect = self.rect_owner.is_none();
        if rect {
            self.rect_owner = Some(hold.clone());
        }
        self.holding.push(hold);
        self.push(
            e.t,
            Item::Enter {
                at: node,
                lines: vec![first, second],
                rect,
            },
        );
    }

    fn exit(&mut self, e: &Ev, lock: &LockName, fence: &Fence, lamport: u64) {
        let node = e.node();
        let text = format!("{}EXIT fence {fence} (Lamport {lamport})", self.tag(e));
        let hold = (node, lock.clone());
        let active = match self.holding.iter().position(|h| *h == hold) {
            Some(pos) => {
                self.holding.remove(pos);
                true
            }
            None => false,
        };
        let rect = active && self.rect_owner.as_ref() == Some(&hold);
        if rect {
            self.rect_owner = None;
        }
        self.push(
            e.t,
            Item::Exit {
                at: node,
                lines: vec![text],
                active,
                rect,
            },
        );
    }
}

/// Why the first request comes before the second: an earlier timestamp, or on a
/// tie the lower address.
fn precedence(first: &str, second: &str, tie: bool) -> String {
    if tie {
        format!("{first} = {second}, lower address first")
    } else {
        format!("{first} before {second}")
    }
}
