//! Ricart–Agrawala as the node runs it, one instance per lock name: the
//! tickets of local clients in line, asking, answering, entering and leaving
//! the critical section, always under the current epoch.
//!
//! Long because it is one state machine: Ricart–Agrawala as the node runs it for
//! every lock, from a ticket's arrival to its release or loss; split, its steps
//! would reach across files for the same fields.

use super::lock_table::IdleLock;
use super::*;
use crate::event::{Expiry, RefusedReason, WithdrawReason};
use crate::protocol::ricart_agrawala::{
    Decision, DeferReason, DeferredRequest, EnterOutcome, Grant, ReplyOutcome,
};

/// One lock as this node knows it.
pub(super) struct LockSlot {
    pub(super) ra: RicartAgrawala,
    /// Local tickets waiting for this lock, first come first served. While the
    /// lock's request is out, it is for the first of them.
    pub(super) line: VecDeque<Waiter>,
    pub(super) holder: Option<Holder>,
    /// The requester this node last granted, and when (for status).
    last_granted: Option<(ProcessId, Duration)>,
    /// When each origin with tickets in line last entered (a count of
    /// entries), so that this node's own clients and each spectator it carries
    /// take turns instead of one burst going first ([`Origin`]).
    turns: BTreeMap<Origin, u64>,
    entries: u64,
    /// Origins that entered in the current hold: the hold passes on to each
    /// other origin in line once ([`Node::hand_on`]), never to one twice.
    entered_this_hold: BTreeSet<Origin>,
}

/// Whose ticket: this node's own clients (`None`), or a spectator it carries.
pub(super) type Origin = Option<ProcessId>;

#[derive(Clone, Copy, Debug)]
pub(super) struct Waiter {
    pub(super) ticket: Ticket,
    pub(super) asked_at: Duration,
    /// Give up at once unless the lock is free now.
    pub(super) try_only: bool,
}

/// Where a waiting ticket stands, for its client's progress line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketProgress {
    pub role: Role,
    /// Tickets of this node ahead of it in line for the lock.
    pub ahead_here: usize,
    /// The lock's request is out for this ticket, waiting for these members.
    pub waiting_for: Vec<ProcessId>,
    /// As a spectator: its place in the line for a seat (1 is next), and the
    /// length of that line.
    pub seat_position: usize,
    pub seat_line: usize,
    pub holding: bool,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Holder {
    pub(super) ticket: Ticket,
    fence: Fence,
    since: Duration,
    /// The client was told its lock is lost; the node still waits for the
    /// release before it lets anyone else in.
    lost: bool,
}

/// A lock as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockStatus {
    pub name: LockName,
    pub holder: Option<LocalHolder>,
    /// Local tickets in line, first first.
    pub waiting: Vec<Ticket>,
    pub request: Option<PendingStatus>,
    /// Peers whose requests this node holds back until it exits.
    pub deferring: Vec<ProcessId>,
    /// The peer this node last granted, and when: it may hold the lock now.
    pub last_granted: Option<(ProcessId, Duration)>,
    pub last_fence: Option<Fence>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalHolder {
    pub ticket: Ticket,
    pub fence: Fence,
    pub since: Duration,
    pub lost: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingStatus {
    pub request_id: u64,
    pub timestamp: u64,
    pub epoch: u64,
    pub awaiting: Vec<ProcessId>,
}

impl LockSlot {
    /// Put first in line the oldest ticket of the origin that entered least
    /// recently, among the origins `eligible` accepts; `origins` are the
    /// line's origins, in line order. False if no origin in line is eligible.
    fn next_turn_first(&mut self, origins: &[Origin], eligible: impl Fn(&Origin) -> bool) -> bool {
        let due = origins
            .iter()
            .enumerate()
            .filter(|(_, origin)| eligible(origin))
            .min_by_key(|(index, origin)| (self.turns.get(origin).copied().unwrap_or(0), *index))
            .map(|(index, _)| index);
        if let Some(index) = due.filter(|i| *i > 0)
            && let Some(waiter) = self.line.remove(index)
        {
            self.line.push_front(waiter);
        }
        // Origins with nothing in line are forgotten, so the map stays as
        // small as the line; one that comes back waits its turn like a newcomer.
        let waiting: BTreeSet<&Origin> = origins.iter().collect();
        self.turns.retain(|origin, _| waiting.contains(origin));
        due.is_some()
    }

    /// `origin` entered: it goes to the back of the turns. Origins with
    /// nothing in line are forgotten, so the map stays as small as the line.
    fn took_turn(&mut self, origin: Origin) {
        self.entries = self.entries.saturating_add(1);
        self.turns.insert(origin, self.entries);
    }

    pub(super) fn new(me: ProcessId) -> Self {
        Self {
            ra: RicartAgrawala::new(me),
            line: VecDeque::new(),
            holder: None,
            last_granted: None,
            turns: BTreeMap::new(),
            entries: 0,
            entered_this_hold: BTreeSet::new(),
        }
    }

    /// Nothing going on here: only the last fence and grant are worth
    /// remembering.
    pub(super) fn at_rest(&self) -> Option<IdleLock> {
        (self.ra.is_quiet() && self.line.is_empty() && self.holder.is_none()).then(|| IdleLock {
            fence: self.ra.fence_seen(),
            last_granted: self.last_granted,
        })
    }

    /// An idle lock with something going on again. Its turns start empty, as
    /// they would have been emptied with nothing in line.
    pub(super) fn woken(me: ProcessId, idle: IdleLock) -> Self {
        Self {
            ra: RicartAgrawala::with_fence_seen(me, idle.fence),
            last_granted: idle.last_granted,
            ..Self::new(me)
        }
    }

    pub(super) fn status(&self, name: &LockName) -> LockStatus {
        let fence = self.ra.fence_seen();
        LockStatus {
            name: name.clone(),
            holder: self.holder.map(|h| LocalHolder {
                ticket: h.ticket,
                fence: h.fence,
                since: h.since,
                lost: h.lost,
            }),
            waiting: self.line.iter().map(|w| w.ticket).collect(),
            request: self.ra.pending().map(|p| PendingStatus {
                request_id: p.id,
                timestamp: p.timestamp,
                epoch: p.epoch,
                awaiting: p.awaiting.iter().copied().collect(),
            }),
            deferring: self.ra.deferred().keys().copied().collect(),
            last_granted: self.last_granted,
            // A reply carries the highest sequence its sender knows, 0 when it
            // knows none: that raises the epoch seen, not an issued fence.
            last_fence: (fence.seq > 0).then_some(fence),
        }
    }
}

impl Node {
    fn slot(&mut self, lock: &LockName) -> &mut LockSlot {
        self.locks.slot(lock)
    }

    // ---- tickets ---------------------------------------------------------

    pub(super) fn on_acquire(&mut self, lock: LockName, ticket: Ticket, try_only: bool) {
        if self.life != Life::Running {
            self.refuse(lock, ticket, RefusedReason::NodeLeaving);
            return;
        }
        let now = self.now;
        let slot = self.slot(&lock);
        let taken_here = slot.holder.is_some() || !slot.line.is_empty();
        slot.line.push_back(Waiter {
            ticket,
            asked_at: now,
            try_only,
        });
        let waiting = slot.line.len();
        self.emit(Event::Asked {
            lock: lock.clone(),
            ticket,
            waiting,
            try_only,
        });
        if try_only && taken_here {
            // Held or asked for by another client of this node: not free now.
            if let Some(slot) = self.locks.get_mut(&lock) {
                slot.line.pop_back();
            }
            self.refuse(lock, ticket, RefusedReason::NotFree);
            return;
        }
        self.reported_position = None;
        self.to_issue.insert(lock);
    }

    pub(super) fn refuse(&mut self, lock: LockName, ticket: Ticket, why: RefusedReason) {
        self.emit(Event::Refused {
            lock: lock.clone(),
            ticket,
            why,
        });
        self.out.push(Output::Refused { lock, ticket, why });
    }

    /// Where `ticket` stands, if it waits for or holds `lock`.
    pub fn ticket_progress(&self, lock: &LockName, ticket: Ticket) -> Option<TicketProgress> {
        if let Some(progress) = self.forwarded_progress(lock, ticket) {
            return Some(progress);
        }
        let slot = self.locks.get(lock)?;
        let holding = slot.holder.is_some_and(|h| h.ticket == ticket);
        let ahead_here = if holding {
            0
        } else {
            slot.line.iter().position(|w| w.ticket == ticket)?
        };
        let waiting_for = match slot.ra.pending() {
            Some(p) if ahead_here == 0 && !holding => p.awaiting.iter().copied().collect(),
            _ => Vec::new(),
        };
        let line = self.spectators();
        let seat_position = match self.role() {
            Role::Spectator => line.iter().position(|p| *p == self.me).map_or(0, |i| i + 1),
            _ => 0,
        };
        Some(TicketProgress {
            role: self.role(),
            ahead_here,
            waiting_for,
            seat_position,
            seat_line: line.len(),
            holding,
        })
    }

    pub(super) fn on_release(&mut self, lock: LockName, ticket: Ticket) {
        if self.release_forwarded(&lock, ticket) {
            return;
        }
        let Some(slot) = self.locks.get_mut(&lock) else {
            return;
        };
        if slot.holder.is_some_and(|h| h.ticket == ticket) {
            self.exit_cs(&lock);
        } else if let Some(index) = slot.line.iter().position(|w| w.ticket == ticket) {
            slot.line.remove(index);
            let in_flight = index == 0 && !slot.ra.is_idle();
            self.emit(Event::Cancelled {
                lock: lock.clone(),
                ticket,
            });
            if in_flight {
                self.withdraw(&lock, WithdrawReason::TicketCancelled);
            }
            self.to_issue.insert(lock);
        }
        self.after_release();
    }

    /// Whatever waited for the last lock to be given back can go on now.
    fn after_release(&mut self) {
        if !self.held_locks().is_empty() {
            return;
        }
        if let Some(set) = self.pending_merge.take() {
            self.merge_into(set);
        }
        if matches!(self.life, Life::LeaveAfterRelease { .. }) {
            self.begin_leave();
        }
    }

    /// Tell a holder's client its lock is lost. The lock stays held until the
    /// client gives the ticket back (it stops its work first), so nobody else
    /// enters while it may still be running.
    pub(super) fn lose_holder(&mut self, lock: &LockName, why: LossReason) {
        let Some(holder) = self.locks.get_mut(lock).and_then(|s| s.holder.as_mut()) else {
            return;
        };
        if holder.lost {
            return;
        }
        holder.lost = true;
        let (ticket, fence) = (holder.ticket, holder.fence);
        self.emit(Event::Lost {
            lock: lock.clone(),
            ticket,
            fence: Some(fence),
            why,
        });
        self.out.push(Output::Lost {
            lock: lock.clone(),
            ticket,
            why,
        });
    }

    /// The active set was decided without us: every holder is out at once (the
    /// others no longer wait for our exit), and its client is told.
    pub(super) fn evict_holders(&mut self) {
        for lock in self.held_locks() {
            self.lose_holder(&lock, LossReason::Evicted);
            self.exit_cs(&lock);
        }
    }

    /// Every client of this node loses its tickets (the node is leaving).
    pub(super) fn drop_all_tickets(&mut self) -> usize {
        let mut dropped = 0;
        let names = self.locks.busy_names();
        for lock in names {
            let line = match self.locks.get_mut(&lock) {
                Some(slot) => std::mem::take(&mut slot.line),
                None => continue,
            };
            for waiter in line {
                dropped += 1;
                self.refuse(lock.clone(), waiter.ticket, RefusedReason::NodeLeaving);
            }
            self.withdraw(&lock, WithdrawReason::NodeLeaving);
        }
        dropped
    }

    // ---- asking ----------------------------------------------------------

    /// Send the next request of each lock whose line can move.
    pub(super) fn issue_ready(&mut self) {
        if self.to_issue.is_empty() {
            return;
        }
        if self.life != Life::Running || self.pending_merge.is_some() {
            return;
        }
        let Some(set) = self.active_set.clone().filter(|s| s.contains(&self.me)) else {
            // No seat: a member asks for us. Without one to ask (no cluster
            // yet), the tickets wait here.
            if self.forward_waiting() {
                self.report_waiting_for_seat();
            }
            return;
        };
        for lock in std::mem::take(&mut self.to_issue) {
            self.issue(&lock, &set);
        }
    }

    fn issue(&mut self, lock: &LockName, set: &ActiveSet) {
        let now = self.now;
        let id = self.next_request_id;
        let origins: Vec<Origin> = match self.locks.get(lock) {
            Some(slot) => slot
                .line
                .iter()
                .map(|w| self.proxy.origin_of(w.ticket))
                .collect(),
            None => return,
        };
        let Some(slot) = self.locks.get_mut(lock) else {
            return;
        };
        if !slot.ra.is_idle() || slot.line.is_empty() {
            return;
        }
        slot.next_turn_first(&origins, |_| true);
        // Ticking first makes the stamp later than every request we granted so far.
        let timestamp = self.clock.tick();
        let pending = slot.ra.issue(id, timestamp, set, now);
        self.next_request_id = id.saturating_add(1);
        self.emit(Event::RequestIssued {
            lock: lock.clone(),
            request_id: pending.id,
            timestamp,
            epoch: pending.epoch,
            awaiting: pending.awaiting.iter().copied().collect(),
        });
        self.send_requests(lock, &pending.awaiting, set);
        self.try_enter(lock);
    }

    pub(super) fn report_waiting_for_seat(&mut self) {
        let line = self.spectators();
        let position = match self.active_set {
            // Position 0: no cluster yet, so no line to stand in.
            None => 0,
            Some(_) => line.iter().position(|p| *p == self.me).map_or(0, |i| i + 1),
        };
        if self.reported_position != Some(position) {
            self.reported_position = Some(position);
            self.emit(Event::WaitingForSeat {
                position,
                spectators: line.len(),
            });
        }
    }

    /// Send the lock's pending request to `to`, each with the attempt it is on.
    pub(super) fn send_requests(
        &mut self,
        lock: &LockName,
        to: &BTreeSet<ProcessId>,
        set: &ActiveSet,
    ) {
        let Some(slot) = self.locks.get(lock) else {
            return;
        };
        let Some(pending) = slot.ra.pending().cloned() else {
            return;
        };
        let try_only = slot.line.front().is_some_and(|w| w.try_only);
        for member in to {
            let attempt = pending.asked.get(member).map_or(0, |a| a.attempt);
            self.emit(Event::RequestSent {
                lock: lock.clone(),
                to: *member,
                request_id: pending.id,
                attempt,
                timestamp: pending.timestamp,
                epoch: set.epoch,
            });
            self.send(
                *member,
                Body::Request(LockRequest {
                    lock: lock.clone(),
                    request_id: pending.id,
                    attempt,
                    timestamp: pending.timestamp,
                    set: set.clone(),
                    try_only,
                }),
            );
        }
    }

    /// Ask some members again under the current epoch (a reply may be lost, or
    /// too old to trust).
    pub(super) fn reask(&mut self, lock: &LockName, members: &[ProcessId]) {
        let now = self.now;
        let Some(set) = self.active_set.clone() else {
            return;
        };
        let Some(slot) = self.locks.get_mut(lock) else {
            return;
        };
        slot.ra.reask(members, now);
        let Some(pending) = slot.ra.pending().filter(|p| p.epoch == set.epoch) else {
            return;
        };
        let to: BTreeSet<ProcessId> = members
            .iter()
            .copied()
            .filter(|m| pending.awaiting.contains(m))
            .collect();
        self.send_requests(lock, &to, &set);
    }

    /// A request still waiting for some members asks again those whose grants
    /// are about to run out (see `RicartAgrawala::expiring`): 2 more messages
    /// per grant and per lease while a request waits that long.
    pub(super) fn refresh_expiring_grants(&mut self) {
        let Some(lease) = self.settings.reply_lease() else {
            return;
        };
        // Ask a little before the end, at least two housekeeping ticks ahead.
        let margin = (lease / 4).max(self.settings.tick * 2);
        let now = self.now;
        let due: Vec<(LockName, Vec<ProcessId>)> = self
            .locks
            .busy()
            .map(|(name, slot)| (name.clone(), slot.ra.expiring(now, margin)))
            .filter(|(_, members)| !members.is_empty())
            .collect();
        for (lock, members) in due {
            self.reask(&lock, &members);
        }
    }

    /// Take the lock's request back, and answer whoever we held back for it.
    pub(super) fn withdraw(&mut self, lock: &LockName, why: WithdrawReason) {
        let Some(slot) = self.locks.get_mut(lock) else {
            return;
        };
        let Some(pending) = slot.ra.withdraw() else {
            return;
        };
        let due = slot.ra.take_deferred();
        self.emit(Event::Withdrawn {
            lock: lock.clone(),
            request_id: pending.id,
            why,
        });
        // No longer asking: the algorithm says grant (under the current epoch).
        for (requester, deferred) in due {
            self.answer_deferred(requester, lock, deferred);
        }
    }

    // ---- answering -------------------------------------------------------

    pub(super) fn on_request(&mut self, from: ProcessId, incoming: LockRequest) {
        let mutations = self.settings.mutations;
        let set = &incoming.set;
        let epoch = if mutations.skip_epoch_check() {
            // Broken on purpose (tests only): decide under whatever set the
            // requester names.
            set.epoch
        } else {
            self.adopt(set.clone(), SetSource::Message, Some(from));
            if self
                .pending_merge
                .as_ref()
                .is_some_and(|s| s.same_cluster(set))
            {
                // We hold a critical section of the cluster we are leaving for
                // this one: answer once we have joined it, as a holder would.
                self.emit(Event::RequestReceived {
                    lock: incoming.lock.clone(),
                    from,
                    request_id: incoming.request_id,
                    timestamp: incoming.timestamp,
                    epoch: set.epoch,
                    own_timestamp: None,
                    decision: Decision::Defer(DeferReason::InCriticalSection),
                });
                self.requests_after_merge.push((from, incoming));
                return;
            }
            let Some(mine) = self.active_set.clone() else {
                return;
            };
            if !mine.same_cluster(set) || mine.epoch > set.epoch {
                self.send_newer_set(from, &incoming.lock, incoming.request_id);
                return;
            }
            if !mine.contains(&from) || !mine.contains(&self.me) {
                self.drop_message(from, DropReason::NotBothMembers { epoch: mine.epoch });
                return;
            }
            mine.epoch
        };
        let LockRequest {
            lock,
            request_id,
            attempt,
            timestamp,
            set: _,
            try_only,
        } = incoming;
        let request = DeferredRequest {
            request_id,
            attempt,
            timestamp,
            epoch,
            received_at: self.now,
        };
        let clock = self.clock.now();
        let voted_out = self.voted_to_remove(&from);
        let slot = self.slot(&lock);
        let own_timestamp = slot.ra.pending().map(|p| p.timestamp);
        let decision = if voted_out {
            // We accepted a set without the requester: granting now could let it
            // in after that set is decided. It hears from us once that is settled.
            slot.ra.defer(from, request);
            Decision::Defer(DeferReason::EvictionPending)
        } else {
            slot.ra.on_request_under(from, request, clock, mutations)
        };
        self.emit(Event::RequestReceived {
            lock: lock.clone(),
            from,
            request_id,
            timestamp,
            epoch,
            own_timestamp,
            decision,
        });
        match decision {
            Decision::Grant => self.send_reply(from, &lock, request, false),
            Decision::Defer(_) if try_only => {
                // A try is never held back: it hears at once that it must give up.
                self.slot(&lock).ra.take_deferred_where(|p, _| *p == from);
                self.emit(Event::BusySent {
                    lock: lock.clone(),
                    to: from,
                    request_id,
                });
                let busy = Body::Busy {
                    lock: lock.clone(),
                    request_id,
                    attempt,
                };
                // Kept like a grant, to be resent if the stream breaks: the try
                // would otherwise wait for an answer that never comes.
                self.last_answer.insert(
                    (from, lock),
                    Answer::Busy {
                        request_id,
                        attempt,
                    },
                );
                self.send(from, busy);
            }
            Decision::Defer(_) => {}
        }
    }

    /// A member would have held our try back: the lock is not free now.
    pub(super) fn on_busy(
        &mut self,
        from: ProcessId,
        lock: LockName,
        request_id: u64,
        attempt: u32,
    ) {
        let Some(slot) = self.locks.get(&lock) else {
            return;
        };
        let ours = slot.ra.pending().is_some_and(|p| {
            p.id == request_id && p.asked.get(&from).is_some_and(|a| a.attempt == attempt)
        }) && slot.line.front().is_some_and(|w| w.try_only);
        if !ours {
            return;
        }
        self.withdraw(&lock, WithdrawReason::Busy);
        let waiter = self.locks.get_mut(&lock).and_then(|s| s.line.pop_front());
        if let Some(waiter) = waiter {
            self.refuse(lock.clone(), waiter.ticket, RefusedReason::NotFree);
        }
        self.to_issue.insert(lock);
    }

    pub(super) fn send_reply(
        &mut self,
        to: ProcessId,
        lock: &LockName,
        request: DeferredRequest,
        deferred: bool,
    ) {
        self.emit(Event::ReplySent {
            lock: lock.clone(),
            to,
            request_id: request.request_id,
            epoch: request.epoch,
            deferred,
        });
        let now = self.now;
        let lease_until = now + self.settings.grant_lease;
        let lease = self.leases.entry(to).or_default();
        *lease = (*lease).max(lease_until);
        let slot = self.slot(lock);
        slot.last_granted = Some((to, now));
        let reply = Body::Reply {
            lock: lock.clone(),
            grant: Grant {
                request_id: request.request_id,
                attempt: request.attempt,
                epoch: request.epoch,
                fence_seq: slot.ra.fence_seq_for(request.epoch),
                held: now.saturating_sub(request.received_at),
            },
        };
        self.last_answer.insert(
            (to, lock.clone()),
            Answer::Reply {
                request_id: request.request_id,
                attempt: request.attempt,
                epoch: request.epoch,
                received_at: request.received_at,
            },
        );
        self.send(to, reply);
    }

    pub(super) fn send_newer_set(&mut self, to: ProcessId, lock: &LockName, request_id: u64) {
        let Some(set) = self.active_set.clone() else {
            return;
        };
        self.emit(Event::NewerSetSent {
            lock: lock.clone(),
            to,
            request_id,
            epoch: set.epoch,
        });
        let answer = Body::NewerSet {
            lock: lock.clone(),
            request_id,
            set,
        };
        self.last_answer
            .insert((to, lock.clone()), Answer::NewerSet { request_id });
        self.send(to, answer);
    }

    /// After a broken stream, send the last answer again, but only as it stands
    /// now: a grant given under an older epoch becomes the newer set, so a grant
    /// never outlives the epoch it was given in.
    pub(super) fn resend_answer(&mut self, to: ProcessId, lock: LockName) {
        let Some(answer) = self.last_answer.get(&(to, lock.clone())).copied() else {
            return;
        };
        match answer {
            Answer::Reply {
                request_id,
                attempt,
                epoch,
                received_at,
            } => {
                let current = self
                    .active_set
                    .as_ref()
                    .is_some_and(|s| s.epoch == epoch && s.contains(&to) && s.contains(&self.me));
                let request = DeferredRequest {
                    request_id,
                    attempt,
                    timestamp: 0,
                    epoch,
                    received_at,
                };
                if current && self.voted_to_remove(&to) {
                    // We voted to evict it since: hold the grant back until that
                    // vote is settled (then it hears of the new set).
                    self.slot(&lock).ra.defer(to, request);
                } else if current {
                    self.send_reply(to, &lock, request, false);
                } else {
                    self.send_newer_set(to, &lock, request_id);
                }
            }
            Answer::NewerSet { request_id } => self.send_newer_set(to, &lock, request_id),
            Answer::Busy {
                request_id,
                attempt,
            } => self.send(
                to,
                Body::Busy {
                    lock,
                    request_id,
                    attempt,
                },
            ),
        }
    }

    pub(super) fn answer_deferred(
        &mut self,
        requester: ProcessId,
        lock: &LockName,
        deferred: DeferredRequest,
    ) {
        let still_valid = self.active_set.as_ref().is_some_and(|s| {
            s.epoch == deferred.epoch && s.contains(&requester) && s.contains(&self.me)
        });
        if (still_valid && !self.voted_to_remove(&requester))
            || self.settings.mutations.skip_epoch_check()
        {
            self.send_reply(requester, lock, deferred, true);
        } else if still_valid {
            // Still pending eviction: keep holding it back.
            self.slot(lock).ra.defer(requester, deferred);
        } else {
            self.send_newer_set(requester, lock, deferred.request_id);
        }
    }

    pub(super) fn on_reply(&mut self, from: ProcessId, lock: LockName, grant: Grant) {
        let Grant {
            request_id, epoch, ..
        } = grant;
        let now = self.now;
        let lease = self.settings.reply_lease();
        let Some(slot) = self.locks.get_mut(&lock) else {
            self.emit(Event::ReplyIgnored {
                lock,
                from,
                request_id,
                epoch,
                why: crate::protocol::ricart_agrawala::StaleReason::NotWaiting,
            });
            return;
        };
        match slot.ra.on_reply(from, grant, now, lease) {
            ReplyOutcome::Counted { remaining } => {
                self.emit(Event::ReplyReceived {
                    lock: lock.clone(),
                    from,
                    request_id,
                    epoch,
                    remaining,
                });
                self.try_enter(&lock);
            }
            ReplyOutcome::Expired => {
                self.emit(Event::ReplyExpired {
                    lock: lock.clone(),
                    from,
                    request_id,
                    when: Expiry::OnArrival,
                });
                self.reask(&lock, &[from]);
            }
            ReplyOutcome::Stale(why) => self.emit(Event::ReplyIgnored {
                lock,
                from,
                request_id,
                epoch,
                why,
            }),
        }
    }

    // ---- entering and leaving --------------------------------------------

    pub(super) fn try_enter(&mut self, lock: &LockName) {
        // We voted for a next set without ourselves: that set may be decided
        // already, so we may not enter under this epoch, just as the others
        // may not grant us. The request waits for the vote to be settled.
        if self.voted_to_remove(&self.me) {
            return;
        }
        let now = self.now;
        let Some(slot) = self.locks.get_mut(lock) else {
            return;
        };
        match slot.ra.enter(now) {
            EnterOutcome::NotYet => {}
            EnterOutcome::Expired(members) => {
                for from in &members {
                    if let Some(id) = slot.ra.pending().map(|p| p.id) {
                        self.out.push(Output::Event(Event::ReplyExpired {
                            lock: lock.clone(),
                            from: *from,
                            request_id: id,
                            when: Expiry::WhileWaiting,
                        }));
                    }
                }
                self.reask(lock, &members);
            }
            EnterOutcome::FenceSpaceExhausted => {
                let epoch = slot.ra.pending().map_or(0, |p| p.epoch);
                self.emit(Event::FenceSpaceExhausted {
                    lock: lock.clone(),
                    epoch,
                });
            }
            EnterOutcome::Entered(fence) => {
                slot.entered_this_hold.clear();
                self.let_in_front(lock, fence, false);
            }
        }
    }

    /// The first ticket in line enters under `fence`, by a hold of its own
    /// or `handed_on` within the current one.
    fn let_in_front(&mut self, lock: &LockName, fence: Fence, handed_on: bool) {
        let now = self.now;
        let Some(slot) = self.locks.get_mut(lock) else {
            return;
        };
        let State::Holding { id, timestamp, .. } = *slot.ra.state() else {
            return;
        };
        let Some(waiter) = slot.line.pop_front() else {
            // Unreachable: a request is only out, or a hold handed on, for a
            // waiting ticket.
            return;
        };
        let origin = self.proxy.origin_of(waiter.ticket);
        let Some(slot) = self.locks.get_mut(lock) else {
            return;
        };
        slot.took_turn(origin);
        slot.entered_this_hold.insert(origin);
        slot.holder = Some(Holder {
            ticket: waiter.ticket,
            fence,
            since: now,
            lost: false,
        });
        let lamport = self.clock.tick();
        self.emit(Event::Enter {
            lock: lock.clone(),
            ticket: waiter.ticket,
            request_id: id,
            timestamp,
            fence,
            lamport,
            waited: now.saturating_sub(waiter.asked_at),
            handed_on,
        });
        self.out.push(Output::Granted {
            lock: lock.clone(),
            ticket: waiter.ticket,
            fence,
        });
        let quorum_gone = self
            .active_set
            .as_ref()
            .is_some_and(|set| !quorum_alive(set, |p| *p == self.me || self.is_usable(p)));
        if quorum_gone {
            self.lose_holder(lock, LossReason::QuorumLost);
        }
    }

    /// A hold passes from one local ticket to the next without a round of
    /// requests, once to each origin in line that has not entered in it yet
    /// (this node's clients count as one origin, each spectator it carries as
    /// another). So a member carrying spectators gets one entry per origin for
    /// each of its holds, and every node, seated or not, gets its turn as
    /// often as every other; a spectator's entry then costs its three
    /// messages alone. Every other member's request still waits for at most
    /// two of this node's holds, so each other origin overtakes a waiting
    /// ticket at most twice (README, "What it guarantees").
    ///
    /// Not after the hold was lost, outside the running state, under an epoch
    /// that is no longer ours, or once the grants' leases ran out
    /// ([`RicartAgrawala::hand_on`]).
    fn hand_on(&mut self, lock: &LockName, from: &Holder) -> bool {
        let our_epoch = self
            .active_set
            .as_ref()
            .is_some_and(|s| s.contains(&self.me) && s.epoch == from.fence.epoch);
        if from.lost
            || !our_epoch
            || self.life != Life::Running
            || self.pending_merge.is_some()
            || self.voted_to_remove(&self.me)
        {
            return false;
        }
        let now = self.now;
        let Some(slot) = self.locks.get(lock) else {
            return false;
        };
        let origins: Vec<Origin> = slot
            .line
            .iter()
            .map(|w| self.proxy.origin_of(w.ticket))
            .collect();
        let Some(slot) = self.locks.get_mut(lock) else {
            return false;
        };
        let mut entered = std::mem::take(&mut slot.entered_this_hold);
        if self.settings.mutations.hand_on_without_turns() {
            entered.clear();
        }
        let found = slot.next_turn_first(&origins, |o| !entered.contains(o));
        slot.entered_this_hold = entered;
        if !found {
            return false;
        }
        // The broken rule reads the leases as if no time had passed.
        let lease_clock = if self.settings.mutations.hand_on_past_lease() {
            Duration::ZERO
        } else {
            now
        };
        let Some(fence) = slot.ra.hand_on(lease_clock) else {
            return false;
        };
        self.emit_exit(lock, from, from.fence, Vec::new());
        self.let_in_front(lock, fence, true);
        true
    }

    /// `holder` left the critical section, releasing the deferred replies to
    /// `released` (none when the hold passes on).
    fn emit_exit(
        &mut self,
        lock: &LockName,
        holder: &Holder,
        fence: Fence,
        released: Vec<ProcessId>,
    ) {
        let lamport = self.clock.tick();
        self.emit(Event::Exit {
            lock: lock.clone(),
            ticket: holder.ticket,
            fence,
            lamport,
            held: self.now.saturating_sub(holder.since),
            released,
        });
    }

    pub(super) fn exit_cs(&mut self, lock: &LockName) {
        let Some(slot) = self.locks.get_mut(lock) else {
            return;
        };
        let Some(holder) = slot.holder.take() else {
            return;
        };
        if self.hand_on(lock, &holder) {
            return;
        }
        let Some(slot) = self.locks.get_mut(lock) else {
            return;
        };
        let Some((fence, due)) = slot.ra.exit() else {
            return;
        };
        self.emit_exit(lock, &holder, fence, due.iter().map(|(p, _)| *p).collect());
        for (requester, deferred) in due {
            self.answer_deferred(requester, lock, deferred);
        }
        self.to_issue.insert(lock.clone());
        self.after_release();
    }

    /// Forget locks with nothing going on whose fence belongs to an older epoch:
    /// their sequence no longer matters to anyone (a new epoch starts above it).
    pub(super) fn forget_quiet_locks(&mut self, epoch: u64) {
        self.locks.forget_older_than(epoch);
        let set = self.active_set.clone();
        // Answers to peers outside the set, or from older epochs, will never be
        // resent as grants: forget them so the map stays small.
        self.last_answer.retain(|(peer, _), answer| {
            let Some(set) = &set else { return false };
            set.contains(peer)
                && match answer {
                    Answer::Reply { epoch, .. } => *epoch == set.epoch,
                    _ => true,
                }
        });
    }

    /// The locks this node's clients hold, at most `max` of them.
    /// Locks our clients hold, here or through a member (what we hold for a
    /// spectator, the spectator reports).
    pub(super) fn holding(&self, max: usize) -> Vec<HeldLock> {
        self.locks
            .busy()
            .filter_map(|(name, slot)| {
                slot.holder
                    .filter(|h| h.ticket < PROXY_TICKETS)
                    .map(|h| HeldLock {
                        lock: name.clone(),
                        fence: h.fence,
                        held: self.now.saturating_sub(h.since),
                    })
            })
            .chain(self.held_via())
            .take(max)
            .collect()
    }

    /// Ask every member of the active set (ourselves included) what it holds.
    pub(super) fn ask_who_holds(&mut self, query: u64) {
        let members = self
            .active_set
            .as_ref()
            .map(|s| s.members.clone())
            .unwrap_or_else(|| vec![self.me]);
        for member in members {
            self.send(member, Body::WhoHolds { query });
        }
    }

    /// Our acceptor accepted a next active set without `process`.
    pub(super) fn voted_to_remove(&self, process: &ProcessId) -> bool {
        self.acceptor
            .accepted_members()
            .is_some_and(|members| !members.contains(process))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::active_set::ActiveSet;

    fn pid(port: u16) -> ProcessId {
        ProcessId::new(
            format!("127.0.0.1:{port}").parse().expect("test address"),
            1,
        )
    }

    /// A wait given up after one member replied: `status` shows the fence only
    /// once an issued one (sequence above 0) is known, never epoch:0.
    #[test]
    fn status_shows_only_issued_fences() {
        let set = ActiveSet {
            cluster: pid(7001),
            epoch: 4,
            max_active: 3,
            members: vec![pid(7001), pid(7002), pid(7003)],
        };
        let name = LockName::default_lock();
        let mut slot = LockSlot::new(pid(7001));
        let reply = |slot: &mut LockSlot, from: u16, fence_seq: u64| {
            let id = slot.ra.pending().map(|p| p.id).expect("waiting");
            let grant = Grant {
                request_id: id,
                attempt: 0,
                epoch: 4,
                fence_seq,
                held: Duration::ZERO,
            };
            slot.ra.on_reply(pid(from), grant, Duration::ZERO, None)
        };
        slot.ra.issue(1, 1, &set, Duration::ZERO);
        assert!(matches!(
            reply(&mut slot, 7002, 0),
            ReplyOutcome::Counted { remaining: 1 }
        ));
        assert!(slot.ra.withdraw().is_some());
        assert_eq!(slot.status(&name).last_fence, None);

        slot.ra.issue(2, 2, &set, Duration::ZERO);
        reply(&mut slot, 7003, 6);
        slot.ra.withdraw();
        assert_eq!(
            slot.status(&name).last_fence,
            Some(Fence { epoch: 4, seq: 6 })
        );
    }
}
