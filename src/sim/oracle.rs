//! The checks a simulated run must pass, fed with every event every node emits.
//! Every check is per lock: locks are independent.
//!
//! A little over 500 lines, one job: each check below needs the same running
//! view of holders, sets and tickets, so they stay together.
//!
//! - Safety: never two processes holding one lock. An overlap is excused only
//!   when one of the two is a *stale holder*: a process that entered before a
//!   quorum decided an active set without it (it was paused or cut off inside
//!   the critical section, and declared failed). That is the limit of any lock
//!   built on a failure detector. Then the other holder's fence must be the
//!   larger, so a resource that checks fences refuses the stale one. A process
//!   that enters *after* the decision that evicted it is a violation, whatever
//!   epoch it entered under.
//! - Fencing: each entry's fence is larger than the previous entry's, unless the
//!   later entry is by a stale holder.
//! - The epoch check: a reply is only ever sent under the replier's own epoch.
//! - Bounded waiting, for requests: while the active set stays the same, a
//!   request is overtaken by at most two holds of each other member (once by a
//!   request stamped before it, once by one stamped after it but granted
//!   before it reached the granter).
//! - Bounded waiting, for tickets, spectators' included: while membership
//!   stays still (no failure, return, rename, reissue, lost lock or new set),
//!   from the moment a ticket is its node's oldest in a member's line until it
//!   enters, every other origin enters that lock at most twice, and once more
//!   for each fresh hold (a request of its own, because a hold outlasted its
//!   grants' lease and was not passed on) its member gave another of its
//!   origins first. An origin is a member's own clients, or a spectator
//!   through the member carrying it: a hold is passed on to each origin in the
//!   member's line once. A spectator has one origin, but for a while after it
//!   moves (it got a seat, or its member fell silent) the tickets it left
//!   behind make a second.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::time::Duration;

use crate::event::{Event, SetSource};
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::{Fence, LockName};

#[derive(Clone, Debug)]
struct Holder {
    request_id: u64,
    cluster: Option<ProcessId>,
    fence: Fence,
    since: Duration,
}

#[derive(Clone, Debug)]
struct TrackedRequest {
    issued_at: Duration,
    /// The cluster and epoch it was issued under.
    cluster: Option<ProcessId>,
    epoch: u64,
    members: usize,
    /// The active set changed while it waited (the bound is for a stable set).
    unstable: bool,
    overtaken: usize,
}

/// A ticket in a member's line, for the per-origin bound.
#[derive(Clone, Debug)]
struct TrackedTicket {
    /// The node whose client it is: the member, or the spectator it serves.
    node: ProcessId,
    cluster: Option<ProcessId>,
    epoch: u64,
    asked_at: Duration,
    /// The cluster's membership count of changes when it was asked.
    flux: u64,
    /// Asked before its member had a set, or the epoch changed while it
    /// waited: not judged.
    unstable: bool,
    /// Entries by each other origin while it waited: (node, the member that
    /// entered for it).
    overtaken_by: BTreeMap<(ProcessId, ProcessId), usize>,
    /// Fresh holds (requests of their own, not holds passed on) its member
    /// gave its other origins first, while it was its node's oldest: each is
    /// a round in which every other member may enter once more.
    member_rounds_before: usize,
}

/// One entry, as the checks read it.
struct Entry<'a> {
    lock: &'a LockName,
    ticket: u64,
    request_id: u64,
    fence: Fence,
    handed_on: bool,
}

/// Entries by one other origin that a waiting ticket may see.
pub const TICKET_OVERTAKES_PER_ORIGIN: usize = 2;

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub entries: u64,
    pub requests_issued: u64,
    pub fenced_overlaps: u64,
    /// Overlaps between two different clusters: a node started without seeds
    /// founded a second cluster while cut off from the first.
    pub split_overlaps: u64,
    pub stale_fences: u64,
    pub minority_entries: u64,
    pub max_overtaken: usize,
    /// The most entries one other origin made while a ticket waited.
    pub max_ticket_overtaken_by_one: usize,
    /// Tickets checked against the per-origin bound (membership held still).
    pub tickets_bounded: u64,
    /// Entries passed on within a hold, without a round of requests.
    pub handed_on: u64,
    pub mutex_messages: u64,
    pub false_suspicions: u64,
    pub set_changes: u64,
    /// Replies that arrived after their grant lease and were asked for again.
    pub expired_replies: u64,
    /// Holders told their lock was lost (evicted, quorum gone, paused).
    pub losses: u64,
    pub cancelled: u64,
    /// Members removed from the active set though running, connected and not
    /// paused for a while: needless reconfigurations (stale verdicts).
    pub healthy_evictions: u64,
    /// The same, but decided by a vote cast during a fault that Paxos had to
    /// carry through (the decider itself wanted the member kept): undone at
    /// once by the next epoch.
    pub carried_evictions: u64,
}

/// When a process was first removed from the active set while it ran.
#[derive(Clone, Copy, Debug)]
struct Eviction {
    cluster: Option<ProcessId>,
    epoch: u64,
    at: Duration,
}

#[derive(Default)]
pub struct Oracle {
    holders: BTreeMap<(LockName, ProcessId), Holder>,
    /// The last entry of each lock in each cluster (fences are per cluster).
    last_entry: BTreeMap<(Option<ProcessId>, LockName), (ProcessId, Fence)>,
    requests: BTreeMap<(ProcessId, LockName, u64), TrackedRequest>,
    /// Tickets in members' lines, by (member, lock, ticket).
    tickets: BTreeMap<(ProcessId, LockName, u64), TrackedTicket>,
    /// Whose each ticket a member serves for a spectator is: (member, ticket).
    serving: BTreeMap<(ProcessId, u64), ProcessId>,
    /// Membership events seen in each cluster so far: the per-origin bound
    /// holds while nobody fails, comes back, is renamed, reissues, loses a lock
    /// or changes sets.
    flux: BTreeMap<Option<ProcessId>, u64>,
    /// For each process removed from the active set while it ran: every
    /// decision that did so.
    evicted: BTreeMap<ProcessId, Vec<Eviction>>,
    /// The epoch each process has installed, from its own events.
    epoch_of: BTreeMap<ProcessId, u64>,
    /// Requests granted by a reply outside the replier's epoch: their holders
    /// are never excused as stale.
    bad_grants: BTreeSet<(ProcessId, LockName, u64)>,
    pub stats: Stats,
    pub violations: Vec<String>,
}

impl Oracle {
    /// `running(p)`: whether process `p` is alive right now (the simulator knows).
    /// `cluster`: the cluster of the emitting process's active set, if any.
    pub fn on_event(
        &mut self,
        now: Duration,
        at: ProcessId,
        cluster: Option<ProcessId>,
        event: &Event,
        running: impl Fn(&ProcessId) -> bool,
    ) {
        if matches!(
            event,
            Event::ActiveSetInstalled { .. }
                | Event::MemberFailed { .. }
                | Event::MemberLeft { .. }
                | Event::ProcessGone { .. }
                | Event::MemberRestarted { .. }
                | Event::MemberBack { .. }
                | Event::MemberRenamed { .. }
                | Event::Rejoined { .. }
                | Event::ProposalStarted { .. }
                | Event::Reissued { .. }
                | Event::Withdrawn { .. }
                | Event::Paused { .. }
                | Event::Lost { .. }
        ) {
            *self.flux.entry(cluster).or_default() += 1;
        }
        match event {
            Event::MemberFailed { member, .. } if running(member) => {
                self.stats.false_suspicions += 1
            }
            Event::ActiveSetInstalled {
                epoch,
                removed,
                source,
                ..
            } => {
                self.stats.set_changes += 1;
                self.epoch_of.insert(at, *epoch);
                if *source == SetSource::Decided {
                    for member in removed.iter().filter(|m| running(m)) {
                        self.evicted.entry(*member).or_default().push(Eviction {
                            cluster,
                            epoch: *epoch,
                            at: now,
                        });
                    }
                }
            }
            Event::ReplySent {
                lock,
                to,
                epoch,
                request_id,
                ..
            } => {
                self.stats.mutex_messages += 1;
                // The epoch check as an invariant: permission is only ever given
                // under the epoch the replier itself is in.
                let own = self.epoch_of.get(&at).copied();
                if own != Some(*epoch) {
                    self.bad_grants.insert((*to, lock.clone(), *request_id));
                    self.violations.push(format!(
                        "{at} replied to {to} for {lock} under epoch {epoch} while itself in epoch {own:?}"
                    ));
                }
            }
            Event::RequestIssued {
                lock,
                request_id,
                awaiting,
                epoch,
                ..
            } => {
                self.stats.requests_issued += 1;
                self.requests.insert(
                    (at, lock.clone(), *request_id),
                    TrackedRequest {
                        issued_at: now,
                        cluster,
                        epoch: *epoch,
                        members: awaiting.len() + 1,
                        unstable: false,
                        overtaken: 0,
                    },
                );
            }
            Event::Reissued {
                lock, request_id, ..
            } => {
                if let Some(r) = self.requests.get_mut(&(at, lock.clone(), *request_id)) {
                    r.unstable = true;
                }
            }
            Event::Withdrawn {
                lock, request_id, ..
            } => {
                self.requests.remove(&(at, lock.clone(), *request_id));
            }
            Event::Serving {
                ticket, spectator, ..
            } => {
                self.serving.insert((at, *ticket), *spectator);
            }
            Event::Asked {
                lock,
                ticket,
                try_only: false,
                ..
            } => {
                // Tracked even without a set yet (then never checked): it
                // still stands ahead of its node's later tickets.
                let epoch = self.epoch_of.get(&at).copied();
                let node = self.serving.get(&(at, *ticket)).copied().unwrap_or(at);
                self.tickets.insert(
                    (at, lock.clone(), *ticket),
                    TrackedTicket {
                        node,
                        cluster,
                        epoch: epoch.unwrap_or(0),
                        asked_at: now,
                        flux: self.flux.get(&cluster).copied().unwrap_or(0),
                        unstable: epoch.is_none(),
                        overtaken_by: BTreeMap::new(),
                        member_rounds_before: 0,
                    },
                );
            }
            // A spectator's ticket waits in a member's line, not its own.
            Event::Forwarded { lock, ticket, .. }
            | Event::Cancelled { lock, ticket }
            | Event::Refused { lock, ticket, .. } => {
                if matches!(event, Event::Cancelled { .. }) {
                    self.stats.cancelled += 1;
                }
                self.tickets.remove(&(at, lock.clone(), *ticket));
                self.serving.remove(&(at, *ticket));
            }
            Event::RequestSent { .. } => self.stats.mutex_messages += 1,
            Event::ReplyExpired { .. } => self.stats.expired_replies += 1,
            Event::Lost { fence: Some(_), .. } => self.stats.losses += 1,
            Event::Enter {
                lock,
                ticket,
                request_id,
                fence,
                handed_on,
                ..
            } => {
                let entry = Entry {
                    lock,
                    ticket: *ticket,
                    request_id: *request_id,
                    fence: *fence,
                    handed_on: *handed_on,
                };
                self.on_enter(now, at, cluster, &entry);
                self.on_ticket_entered(at, cluster, &entry);
            }
            Event::Exit { lock, .. } => {
                self.holders.remove(&(lock.clone(), at));
            }
            _ => {}
        }
    }

    /// The process stopped: its critical sections end with it.
    pub fn on_stop(&mut self, process: ProcessId) {
        self.holders.retain(|(_, p), _| *p != process);
        self.requests.retain(|(p, _, _), _| *p != process);
        self.tickets.retain(|(p, _, _), _| *p != process);
    }

    /// Count the entry against every other node's waiting tickets, and check
    /// the entering ticket's own wait.
    fn on_ticket_entered(&mut self, at: ProcessId, cluster: Option<ProcessId>, entry: &Entry) {
        let Entry {
            lock,
            ticket,
            fence,
            ..
        } = *entry;
        let node = self.serving.remove(&(at, ticket)).unwrap_or(at);
        // A ticket waits for its own node's older tickets first: the bound
        // counts from when it is the oldest of its node in that line.
        let mut seen = BTreeSet::new();
        for ((member, name, _), waiting) in self.tickets.iter_mut() {
            if name != lock {
                continue;
            }
            // Keys are in ticket order within a member: the first of each
            // node is its front.
            if !seen.insert((*member, waiting.node)) {
                continue;
            }
            if waiting.cluster != cluster || waiting.node == node {
                continue;
            }
            if waiting.epoch == fence.epoch {
                *waiting.overtaken_by.entry((node, at)).or_default() += 1;
                if *member == at && !entry.handed_on {
                    waiting.member_rounds_before += 1;
                }
            } else {
                waiting.unstable = true;
            }
        }
        let Some(entered) = self.tickets.remove(&(at, lock.clone(), ticket)) else {
            return;
        };
        let flux = self.flux.get(&cluster).copied().unwrap_or(0);
        if entered.unstable || entered.epoch != fence.epoch || entered.flux != flux {
            return;
        }
        self.stats.tickets_bounded += 1;
        let worst = entered
            .overtaken_by
            .iter()
            .max_by_key(|(_, count)| **count)
            .map(|(p, c)| (*p, *c));
        if let Some((by, count)) = worst {
            self.stats.max_ticket_overtaken_by_one =
                self.stats.max_ticket_overtaken_by_one.max(count);
            let bound = TICKET_OVERTAKES_PER_ORIGIN.saturating_add(entered.member_rounds_before);
            if count > bound {
                let (by, via) = by;
                self.violations.push(format!(
                    "{}'s ticket {ticket} for {lock} in {at}'s line (since {:?}) saw {by} enter {count} times through {via}; the bound is {TICKET_OVERTAKES_PER_ORIGIN} per other origin, plus {} for the fresh holds its member gave other origins first",
                    entered.node, entered.asked_at, entered.member_rounds_before
                ));
            }
        }
    }

    /// Entered before a decision that evicted it while it ran, under an older
    /// epoch, with permission given properly under that epoch.
    fn stale(&self, process: ProcessId, lock: &LockName, holder: &Holder) -> bool {
        self.evicted.get(&process).is_some_and(|evictions| {
            evictions.iter().any(|e| {
                e.cluster == holder.cluster && holder.fence.epoch < e.epoch && holder.since < e.at
            })
        }) && !self
            .bad_grants
            .contains(&(process, lock.clone(), holder.request_id))
    }

    pub fn note_minority_entry(&mut self) {
        self.stats.minority_entries += 1;
    }

    fn on_enter(
        &mut self,
        now: Duration,
        at: ProcessId,
        cluster: Option<ProcessId>,
        entry: &Entry,
    ) {
        let Entry {
            lock,
            request_id,
            fence,
            handed_on,
            ..
        } = *entry;
        self.stats.entries += 1;
        if handed_on {
            self.stats.handed_on += 1;
        }
        let after_eviction = self.evicted.get(&at).and_then(|evictions| {
            evictions
                .iter()
                .find(|e| e.cluster == cluster && fence.epoch < e.epoch && e.at <= now)
                .copied()
        });
        if let Some(eviction) = after_eviction {
            self.violations.push(format!(
                "{at} entered {lock} under epoch {} (fence {fence}) at {now:?}, after epoch {} evicted it at {:?}",
                fence.epoch, eviction.epoch, eviction.at
            ));
        }
        let me = Holder {
            request_id,
            cluster,
            fence,
            since: now,
        };
        let me_stale = self.stale(at, lock, &me);
        let others: Vec<(ProcessId, Holder)> = self
            .holders
            .iter()
            .filter(|((name, p), _)| name == lock && *p != at)
            .map(|((_, p), h)| (*p, h.clone()))
            .collect();
        for (other, holder) in others {
            if holder.cluster != cluster {
                self.stats.split_overlaps += 1;
                continue;
            }
            let other_stale = self.stale(other, lock, &holder);
            let mut line = format!(
                "{at} entered {lock} (fence {fence}) while {other} held it since {:?} (fence {})",
                holder.since, holder.fence
            );
            if !me_stale && !other_stale {
                let _ = write!(line, "; neither entered before a decision that evicted it");
                self.violations.push(line);
                continue;
            }
            self.stats.fenced_overlaps += 1;
            let fenced = match (me_stale, other_stale) {
                (true, false) => fence < holder.fence,
                (false, true) => fence > holder.fence,
                _ => true,
            };
            if !fenced {
                let _ = write!(line, "; the fence does not single out the stale holder");
                self.violations.push(line);
            }
        }
        let key = (cluster, lock.clone());
        if let Some((previous, previous_fence)) = self.last_entry.get(&key).copied()
            && fence <= previous_fence
        {
            if me_stale {
                self.stats.stale_fences += 1;
            } else {
                self.violations.push(format!(
                    "{at} entered {lock} with fence {fence}, not above {previous}'s {previous_fence}"
                ));
            }
        }
        self.last_entry.insert(key, (at, fence));
        self.holders.insert((lock.clone(), at), me);
        for ((requester, name, _), request) in self.requests.iter_mut() {
            // Entries in another cluster (a split) or of another lock compete for
            // another critical section.
            // A hold passed on is not a new hold: the bound counts holds.
            if *requester == at || name != lock || request.cluster != cluster || handed_on {
                continue;
            }
            if request.epoch == fence.epoch {
                request.overtaken += 1;
            } else {
                request.unstable = true;
            }
        }
        if let Some(request) = self.requests.remove(&(at, lock.clone(), request_id))
            && !request.unstable
        {
            self.stats.max_overtaken = self.stats.max_overtaken.max(request.overtaken);
            let bound = 2 * (request.members - 1);
            if request.overtaken > bound {
                self.violations.push(format!(
                    "{at}'s request #{request_id} for {lock} (issued at {:?}) was overtaken {} times; the bound is {bound}",
                    request.issued_at, request.overtaken
                ));
            }
        }
    }
}
