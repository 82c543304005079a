//! Ricart and Agrawala's mutual exclusion for one lock, among the members of one
//! active set.
//!
//! A requester asks every other member and enters once each has replied. A member
//! replies at once unless it holds the lock or its own pending request has
//! priority (lower Lamport timestamp, then lower address); then it defers the
//! reply until it exits. Every request and reply is bound to the epoch of the
//! active set it was made under, so a reply given under one set is never counted
//! under another.
//!
//! Replies also expire (the *grant lease*): a member that grants promises not to
//! help evict the requester for a while, and the requester counts the reply only
//! within that while, measured from when it asked. So a grant delayed in the
//! network past the requester's eviction never lets it in (see README, "What it
//! guarantees").
//!
//! Long because of its unit tests (from the `tests` module on): the algorithm itself
//! is under 510 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::active_set::ActiveSet;
use super::ids::ProcessId;
use super::lock::Fence;
use super::mutations::Mutations;

/// Grants are refreshed ahead of expiry up to this attempt (about three
/// leases of waiting); see [`RicartAgrawala::expiring`].
pub const MAX_REFRESHED_ATTEMPT: u32 = 3;

/// One sending of a request to one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    pub attempt: u32,
    pub at: Duration,
}

/// A request that has been sent and waits for replies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub id: u64,
    pub timestamp: u64,
    /// The epoch of the active set this attempt was sent under.
    pub epoch: u64,
    /// The members that still owe a reply for this attempt: a set, never a count,
    /// so a duplicate or a stale reply cannot make up for a missing one.
    pub awaiting: BTreeSet<ProcessId>,
    /// The last time the request went to each member: which attempt, and when.
    /// Only a reply to that attempt counts, so a grant given for an earlier
    /// attempt (and delayed, or queued while we were stopped) can never pass for
    /// a fresh one.
    pub asked: BTreeMap<ProcessId, Ask>,
    /// Replies counted, each with the time until which it may be used.
    pub granted: BTreeMap<ProcessId, Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Idle,
    /// Boxed: a lock spends most of its life idle, and every idle lock would
    /// otherwise carry a waiting request's room.
    Waiting(Box<Pending>),
    Holding {
        id: u64,
        timestamp: u64,
        fence: Fence,
        /// The earliest lease among the grants that let us in: until then no
        /// granter helps evict us, so the hold may pass to another local
        /// ticket ([`RicartAgrawala::hand_on`]).
        valid_until: Duration,
    },
}

/// A reply held back until this process leaves the critical section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeferredRequest {
    pub request_id: u64,
    /// Which sending of the request this is; the reply names it.
    pub attempt: u32,
    pub timestamp: u64,
    pub epoch: u64,
    /// When the request arrived: the reply says how long it was held back.
    pub received_at: Duration,
}

/// A reply as the requester counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub request_id: u64,
    /// Which sending of the request it answers.
    pub attempt: u32,
    pub epoch: u64,
    pub fence_seq: u64,
    /// How long the replier says it held the request back before granting.
    pub held: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    Grant,
    Defer(DeferReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum DeferReason {
    InCriticalSection,
    /// Our own pending request, with this timestamp, comes first.
    OwnRequestFirst {
        own_timestamp: u64,
    },
    /// This member already voted to remove the requester from the active set:
    /// it answers once that vote is settled.
    EvictionPending,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// Counted; this many members still owe a reply.
    Counted {
        remaining: usize,
    },
    /// A reply for the current attempt that arrived after its lease ran out: it
    /// may predate a decision that evicted us, so ask that member again.
    Expired,
    Stale(StaleReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleReason {
    NotWaiting,
    OtherRequest,
    OtherEpoch,
    /// It answers an earlier sending of the request, which was sent again since.
    OtherAttempt,
    NotOwed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnterOutcome {
    Entered(Fence),
    /// Some members still owe a reply.
    NotYet,
    /// Every member replied, but these replies expired before the last one
    /// arrived: ask them again.
    Expired(Vec<ProcessId>),
    /// The epoch handed out every sequence it can: wait for the next one.
    FenceSpaceExhausted,
}

#[derive(Clone, Debug)]
pub struct RicartAgrawala {
    me: ProcessId,
    state: State,
    deferred: BTreeMap<ProcessId, DeferredRequest>,
    fence_seen: Fence,
}

impl RicartAgrawala {
    pub fn new(me: ProcessId) -> Self {
        Self {
            me,
            state: State::Idle,
            deferred: BTreeMap::new(),
            fence_seen: Fence::default(),
        }
    }

    /// A lock known before, idle since: only its highest fence carries over.
    pub fn with_fence_seen(me: ProcessId, fence_seen: Fence) -> Self {
        Self {
            fence_seen,
            ..Self::new(me)
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    pub fn is_holding(&self) -> bool {
        matches!(self.state, State::Holding { .. })
    }

    pub fn pending(&self) -> Option<&Pending> {
        match &self.state {
            State::Waiting(p) => Some(p),
            _ => None,
        }
    }

    pub fn deferred(&self) -> &BTreeMap<ProcessId, DeferredRequest> {
        &self.deferred
    }

    /// The highest fence this process knows, of any epoch.
    pub fn fence_seen(&self) -> Fence {
        self.fence_seen
    }

    /// Nothing pending, held or owed: only the last fence is worth keeping.
    pub fn is_quiet(&self) -> bool {
        self.is_idle() && self.deferred.is_empty()
    }

    /// The highest fence sequence known for `epoch`, sent along with every reply.
    pub fn fence_seq_for(&self, epoch: u64) -> u64 {
        if self.fence_seen.epoch == epoch {
            self.fence_seen.seq
        } else {
            0
        }
    }

    /// Send a new request `id` under `set`, stamped `timestamp` (the caller ticks
    /// its clock first, so the stamp is later than everything this process
    /// granted).
    pub fn issue(&mut self, id: u64, timestamp: u64, set: &ActiveSet, now: Duration) -> Pending {
        debug_assert!(self.is_idle(), "one request at a time per lock");
        let awaiting = self.others(set);
        let pending = Pending {
            id,
            timestamp,
            epoch: set.epoch,
            asked: awaiting
                .iter()
                .map(|m| {
                    (
                        *m,
                        Ask {
                            attempt: 0,
                            at: now,
                        },
                    )
                })
                .collect(),
            awaiting,
            granted: BTreeMap::new(),
        };
        self.state = State::Waiting(Box::new(pending.clone()));
        pending
    }

    /// The active set changed while we waited: ask again under the new one, with
    /// the same id and timestamp (our priority does not change), and forget the
    /// replies given under the old one.
    pub fn reissue(&mut self, set: &ActiveSet, now: Duration) -> Option<Pending> {
        let others = self.others(set);
        let State::Waiting(pending) = &mut self.state else {
            return None;
        };
        pending.epoch = set.epoch;
        let attempt = pending
            .asked
            .values()
            .map(|a| a.attempt)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        pending.asked = others
            .iter()
            .map(|m| (*m, Ask { attempt, at: now }))
            .collect();
        pending.awaiting = others;
        pending.granted.clear();
        Some(Pending::clone(pending))
    }

    /// Ask `members` again under the same epoch (their reply may be lost or too
    /// old): they owe a reply again, and the lease counts from now.
    pub fn reask(&mut self, members: &[ProcessId], now: Duration) {
        let State::Waiting(pending) = &mut self.state else {
            return;
        };
        for member in members {
            if let Some(ask) = pending.asked.get_mut(member) {
                pending.granted.remove(member);
                pending.awaiting.insert(*member);
                *ask = Ask {
                    attempt: ask.attempt.saturating_add(1),
                    at: now,
                };
            }
        }
    }

    /// Give up the pending request (its ticket was cancelled, this process lost
    /// its seat, or is leaving).
    pub fn withdraw(&mut self) -> Option<Pending> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Waiting(p) => Some(*p),
            other => {
                self.state = other;
                None
            }
        }
    }

    fn others(&self, set: &ActiveSet) -> BTreeSet<ProcessId> {
        set.members
            .iter()
            .copied()
            .filter(|m| *m != self.me)
            .collect()
    }

    /// The heart of the algorithm: grant now, or defer until we exit. The caller
    /// has already checked that the request was made under our current epoch.
    pub fn on_request(
        &mut self,
        from: ProcessId,
        request: DeferredRequest,
        current_clock: u64,
    ) -> Decision {
        self.on_request_under(from, request, current_clock, Mutations::default())
    }

    /// [`Self::on_request`], with the tests' switches that break it.
    pub(crate) fn on_request_under(
        &mut self,
        from: ProcessId,
        request: DeferredRequest,
        current_clock: u64,
        mutations: Mutations,
    ) -> Decision {
        let decision = match &self.state {
            State::Holding { .. } => Decision::Defer(DeferReason::InCriticalSection),
            State::Waiting(own) => {
                let own_timestamp = if mutations.compare_current_clock() {
                    current_clock
                } else {
                    own.timestamp
                };
                if (own_timestamp, self.me) < (request.timestamp, from) {
                    Decision::Defer(DeferReason::OwnRequestFirst { own_timestamp })
                } else {
                    Decision::Grant
                }
            }
            State::Idle => Decision::Grant,
        };
        match decision {
            Decision::Defer(_) => self.defer(from, request),
            Decision::Grant => {
                // A grant supersedes anything older we held for this requester.
                self.deferred.remove(&from);
            }
        }
        decision
    }

    /// Hold a request back for a reason outside the algorithm (see
    /// [`DeferReason::EvictionPending`]).
    pub fn defer(&mut self, from: ProcessId, request: DeferredRequest) {
        self.deferred.insert(from, request);
    }

    /// A reply to our request. `lease` is how long after being asked a reply
    /// stays usable, plus however long the replier held it back.
    pub fn on_reply(
        &mut self,
        from: ProcessId,
        grant: Grant,
        now: Duration,
        lease: Option<Duration>,
    ) -> ReplyOutcome {
        let Grant {
            request_id,
            attempt,
            epoch,
            fence_seq,
            held,
        } = grant;
        let State::Waiting(pending) = &mut self.state else {
            return ReplyOutcome::Stale(StaleReason::NotWaiting);
        };
        if pending.id != request_id {
            return ReplyOutcome::Stale(StaleReason::OtherRequest);
        }
        if pending.epoch != epoch {
            return ReplyOutcome::Stale(StaleReason::OtherEpoch);
        }
        if !pending.awaiting.contains(&from) {
            return ReplyOutcome::Stale(StaleReason::NotOwed);
        }
        let Some(ask) = pending.asked.get(&from).copied() else {
            return ReplyOutcome::Stale(StaleReason::NotOwed);
        };
        if ask.attempt != attempt {
            return ReplyOutcome::Stale(StaleReason::OtherAttempt);
        }
        let asked_at = ask.at;
        // The replier cannot have held it longer than it has been out: a larger
        // claim (a bug, or a lie) must not stretch the lease.
        let held = held.min(now.saturating_sub(asked_at));
        let valid_until = match lease {
            Some(lease) => asked_at.saturating_add(held).saturating_add(lease),
            None => Duration::MAX,
        };
        if valid_until <= now {
            return ReplyOutcome::Expired;
        }
        pending.awaiting.remove(&from);
        pending.granted.insert(from, valid_until);
        self.fence_seen = self.fence_seen.max(Fence {
            epoch,
            seq: fence_seq,
        });
        ReplyOutcome::Counted {
            remaining: pending.awaiting.len(),
        }
    }

    /// While other members still owe a reply, the grants that will expire
    /// within `margin`: asking those members again now keeps the wait from
    /// ending in one more round trip (the hand-over stays one message).
    ///
    /// Only for the first few attempts: refreshing for ever would keep the
    /// granters' leases on this node alive for ever, and a request stuck behind
    /// an eviction in progress must let those leases run out so the eviction
    /// can be decided. A longer wait ends in a re-ask instead.
    pub fn expiring(&self, now: Duration, margin: Duration) -> Vec<ProcessId> {
        let Some(pending) = self.pending() else {
            return Vec::new();
        };
        if pending.awaiting.is_empty() {
            return Vec::new();
        }
        pending
            .granted
            .iter()
            .filter(|(_, until)| **until <= now.saturating_add(margin))
            .filter(|(m, _)| {
                pending
                    .asked
                    .get(m)
                    .is_some_and(|a| a.attempt < MAX_REFRESHED_ATTEMPT)
            })
            .map(|(m, _)| *m)
            .collect()
    }

    /// Enter if every member has replied and every reply is still valid.
    pub fn enter(&mut self, now: Duration) -> EnterOutcome {
        let State::Waiting(pending) = &self.state else {
            return EnterOutcome::NotYet;
        };
        if !pending.awaiting.is_empty() {
            return EnterOutcome::NotYet;
        }
        let expired: Vec<ProcessId> = pending
            .granted
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(m, _)| *m)
            .collect();
        if !expired.is_empty() {
            return EnterOutcome::Expired(expired);
        }
        let (id, timestamp, epoch) = (pending.id, pending.timestamp, pending.epoch);
        // With no one to ask there is no grant to outlive.
        let valid_until = pending
            .granted
            .values()
            .copied()
            .min()
            .unwrap_or(Duration::MAX);
        let base = Fence {
            epoch,
            seq: self.fence_seq_for(epoch),
        };
        let Some(fence) = base.next() else {
            return EnterOutcome::FenceSpaceExhausted;
        };
        self.fence_seen = fence;
        self.state = State::Holding {
            id,
            timestamp,
            fence,
            valid_until,
        };
        EnterOutcome::Entered(fence)
    }

    /// Pass the hold to the next local ticket without asking again, under the
    /// next fence. Only while every grant that let us in is within its lease:
    /// no granter can have helped evict us yet, so this is exactly as safe as
    /// entering now with those grants. `None` once the leases ran out (or the
    /// epoch's fences did): then exit, and ask again.
    pub fn hand_on(&mut self, now: Duration) -> Option<Fence> {
        let State::Holding {
            fence, valid_until, ..
        } = &mut self.state
        else {
            return None;
        };
        if now >= *valid_until {
            return None;
        }
        let next = fence.next()?;
        *fence = next;
        self.fence_seen = self.fence_seen.max(next);
        Some(next)
    }

    /// Leave the critical section; returns the fence and the replies now due.
    pub fn exit(&mut self) -> Option<(Fence, Vec<(ProcessId, DeferredRequest)>)> {
        let State::Holding { fence, .. } = self.state else {
            return None;
        };
        self.state = State::Idle;
        Some((fence, self.take_deferred()))
    }

    /// Hand back every deferred request (on exit, or when our own request goes away).
    pub fn take_deferred(&mut self) -> Vec<(ProcessId, DeferredRequest)> {
        std::mem::take(&mut self.deferred).into_iter().collect()
    }

    /// Deferred requests the caller says must be answered now (their requester
    /// left the active set, or the epoch moved on).
    pub fn take_deferred_where(
        &mut self,
        pick: impl Fn(&ProcessId, &DeferredRequest) -> bool,
    ) -> Vec<(ProcessId, DeferredRequest)> {
        let picked: Vec<ProcessId> = self
            .deferred
            .iter()
            .filter(|(p, d)| pick(p, d))
            .map(|(p, _)| *p)
            .collect();
        picked
            .into_iter()
            .filter_map(|p| self.deferred.remove(&p).map(|d| (p, d)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(port: u16) -> ProcessId {
        ProcessId::new(
            format!("127.0.0.1:{port}").parse().expect("test address"),
            1,
        )
    }

    fn set(epoch: u64, ports: &[u16]) -> ActiveSet {
        ActiveSet {
            cluster: pid(ports[0]),
            epoch,
            max_active: 4,
            members: ports.iter().map(|p| pid(*p)).collect(),
        }
    }

    const T0: Duration = Duration::ZERO;
    const LEASE: Option<Duration> = Some(Duration::from_millis(900));

    fn request(request_id: u64, timestamp: u64, epoch: u64) -> DeferredRequest {
        DeferredRequest {
            request_id,
            attempt: 0,
            timestamp,
            epoch,
            received_at: T0,
        }
    }

    fn grant(request_id: u64, epoch: u64, fence_seq: u64, held: Duration) -> Grant {
        Grant {
            request_id,
            attempt: 0,
            epoch,
            fence_seq,
            held,
        }
    }

    fn reply(ra: &mut RicartAgrawala, from: u16, id: u64, epoch: u64) -> ReplyOutcome {
        ra.on_reply(pid(from), grant(id, epoch, 0, Duration::ZERO), T0, LEASE)
    }

    fn entered(ra: &mut RicartAgrawala) -> Option<Fence> {
        match ra.enter(T0) {
            EnterOutcome::Entered(fence) => Some(fence),
            _ => None,
        }
    }

    /// The defer rule as a table: (state of the replier, incoming timestamp and
    /// requester) -> decision. The replier is port 7002.
    #[test]
    fn defer_rule_table() {
        struct Case {
            name: &'static str,
            own_timestamp: Option<u64>,
            holding: bool,
            their_timestamp: u64,
            their_port: u16,
            defer: bool,
        }
        let case = |name, own_timestamp, holding, their_timestamp, their_port, defer| Case {
            name,
            own_timestamp,
            holding,
            their_timestamp,
            their_port,
            defer,
        };
        let cases = [
            case("idle grants", None, false, 9, 7001, false),
            case(
                "holding defers even an older request",
                None,
                true,
                1,
                7001,
                true,
            ),
            case("own earlier request wins", Some(3), false, 5, 7001, true),
            case("their earlier request wins", Some(5), false, 3, 7003, false),
            case(
                "tie broken by lower address: ours",
                Some(4),
                false,
                4,
                7003,
                true,
            ),
            case(
                "tie broken by lower address: theirs",
                Some(4),
                false,
                4,
                7001,
                false,
            ),
            case(
                "tie with numeric (not string) order: 7010 > 7002",
                Some(4),
                false,
                4,
                7010,
                true,
            ),
        ];
        for case in cases {
            let v = set(1, &[7001, 7002, 7003, 7010]);
            let mut ra = RicartAgrawala::new(pid(7002));
            if let Some(ts) = case.own_timestamp {
                ra.issue(1, ts, &v, T0);
            }
            if case.holding {
                ra.issue(1, 1, &v, T0);
                for other in [7001, 7003, 7010] {
                    reply(&mut ra, other, 1, 1);
                }
                assert!(entered(&mut ra).is_some());
            }
            let decision = ra.on_request(
                pid(case.their_port),
                request(1, case.their_timestamp, 1),
                100,
            );
            assert_eq!(
                matches!(decision, Decision::Defer(_)),
                case.defer,
                "{}",
                case.name
            );
            assert_eq!(
                ra.deferred().contains_key(&pid(case.their_port)),
                case.defer,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn comparing_the_current_clock_is_caught() {
        // Own request stamped 3, clock since moved to 50: the older request (3)
        // must still win over an incoming 10.
        let v = set(1, &[7001, 7002]);
        let mut ra = RicartAgrawala::new(pid(7002));
        ra.issue(1, 3, &v, T0);
        let right = ra.on_request(pid(7001), request(1, 10, 1), 50);
        assert!(matches!(right, Decision::Defer(_)));
        let mut broken = RicartAgrawala::new(pid(7002));
        broken.issue(1, 3, &v, T0);
        let mutations = Mutations {
            compare_current_clock: true,
            ..Mutations::default()
        };
        let wrong = broken.on_request_under(pid(7001), request(1, 10, 1), 50, mutations);
        assert_eq!(wrong, Decision::Grant);
    }

    #[test]
    fn replies_are_tracked_as_a_set_and_stale_ones_ignored() {
        let v = set(2, &[7001, 7002, 7003]);
        let mut ra = RicartAgrawala::new(pid(7001));
        let p = ra.issue(5, 5, &v, T0);
        assert_eq!(
            reply(&mut ra, 7002, p.id, 2),
            ReplyOutcome::Counted { remaining: 1 }
        );
        // A duplicate does not count twice.
        assert_eq!(
            reply(&mut ra, 7002, p.id, 2),
            ReplyOutcome::Stale(StaleReason::NotOwed)
        );
        // A reply for an earlier request, or another epoch, does not count.
        assert_eq!(
            reply(&mut ra, 7003, p.id - 1, 2),
            ReplyOutcome::Stale(StaleReason::OtherRequest)
        );
        assert_eq!(
            reply(&mut ra, 7003, p.id, 1),
            ReplyOutcome::Stale(StaleReason::OtherEpoch)
        );
        assert!(entered(&mut ra).is_none(), "7003 still owes a reply");
        assert_eq!(
            reply(&mut ra, 7003, p.id, 2),
            ReplyOutcome::Counted { remaining: 0 }
        );
        assert!(entered(&mut ra).is_some());
    }

    #[test]
    fn a_joiner_while_waiting_is_asked_too() {
        let mut ra = RicartAgrawala::new(pid(7001));
        let p = ra.issue(1, 5, &set(1, &[7001, 7002]), T0);
        reply(&mut ra, 7002, p.id, 1);
        let again = ra
            .reissue(&set(2, &[7001, 7002, 7003]), T0)
            .expect("still waiting");
        assert_eq!(again.timestamp, 5, "priority is kept");
        assert_eq!(again.awaiting, [pid(7002), pid(7003)].into_iter().collect());
        assert!(entered(&mut ra).is_none());
    }

    #[test]
    fn a_failed_member_is_dropped_from_the_wait() {
        let mut ra = RicartAgrawala::new(pid(7001));
        let p = ra.issue(1, 5, &set(1, &[7001, 7002, 7003]), T0);
        reply(&mut ra, 7002, p.id, 1);
        // 7003 failed; the new set without it is decided: ask 7002 again under it.
        let again = ra.reissue(&set(2, &[7001, 7002]), T0).expect("waiting");
        assert!(entered(&mut ra).is_none());
        let attempt = again.asked[&pid(7002)].attempt;
        assert_eq!(attempt, 1, "a new epoch is a new attempt");
        let answer = Grant {
            attempt,
            ..grant(p.id, 2, 0, Duration::ZERO)
        };
        assert_eq!(
            ra.on_reply(pid(7002), answer, T0, LEASE),
            ReplyOutcome::Counted { remaining: 0 }
        );
        assert!(entered(&mut ra).is_some());
    }

    #[test]
    fn exit_releases_deferred_replies_to_the_right_peers() {
        let v = set(1, &[7001, 7002, 7003]);
        let mut ra = RicartAgrawala::new(pid(7001));
        let p = ra.issue(1, 1, &v, T0);
        reply(&mut ra, 7002, p.id, 1);
        reply(&mut ra, 7003, p.id, 1);
        let fence = entered(&mut ra).expect("all replied");
        ra.on_request(pid(7002), request(8, 4, 1), 10);
        ra.on_request(pid(7003), request(3, 6, 1), 10);
        let (exit_fence, due) = ra.exit().expect("was holding");
        assert_eq!(fence, exit_fence);
        assert_eq!(
            due,
            vec![(pid(7002), request(8, 4, 1)), (pid(7003), request(3, 6, 1))]
        );
        assert!(ra.deferred().is_empty());
    }

    #[test]
    fn fences_grow_within_and_across_epochs() {
        let mut a = RicartAgrawala::new(pid(7001));
        let p = a.issue(1, 1, &set(3, &[7001, 7002]), T0);
        reply(&mut a, 7002, p.id, 3);
        let first = entered(&mut a).expect("granted");
        a.exit();
        // 7002 enters next; the reply from 7001 carries the sequence 7001 used.
        let mut b = RicartAgrawala::new(pid(7002));
        let q = b.issue(1, 5, &set(3, &[7001, 7002]), T0);
        b.on_reply(
            pid(7001),
            grant(q.id, 3, a.fence_seq_for(3), Duration::ZERO),
            T0,
            LEASE,
        );
        let second = entered(&mut b).expect("granted");
        assert!(second > first);
        // A new epoch starts above every fence of the old one.
        let mut c = RicartAgrawala::new(pid(7003));
        let r = c.issue(1, 9, &set(4, &[7003]), T0);
        assert!(r.awaiting.is_empty());
        let third = entered(&mut c).expect("alone");
        assert!(third.token() > second.token());
    }

    /// A hold passes on under rising fences while the grants that let it in
    /// are within their lease, and not a moment after; the reply sent on exit
    /// carries the last fence given.
    #[test]
    fn a_hold_passes_on_only_within_its_grants_leases() {
        let mut a = RicartAgrawala::new(pid(7001));
        let p = a.issue(1, 1, &set(3, &[7001, 7002, 7003]), T0);
        reply(&mut a, 7002, p.id, 3);
        let late = Duration::from_millis(300);
        a.on_reply(pid(7003), grant(p.id, 3, 0, Duration::ZERO), late, LEASE);
        let first = entered(&mut a).expect("granted");
        // The earliest lease decides: 7002's, asked at T0, ends at 900 ms.
        let second = a.hand_on(Duration::from_millis(899)).expect("within");
        assert!(second > first);
        assert_eq!(a.fence_seen(), second);
        assert_eq!(a.hand_on(Duration::from_millis(900)), None);
        let (fence, _) = a.exit().expect("holding");
        assert_eq!(fence, second);
        assert_eq!(a.fence_seq_for(3), second.seq);
        // Not holding: nothing to pass on.
        assert_eq!(a.hand_on(T0), None);
    }

    /// The late grant of a one-way cut: the reply was sent at once but sat in
    /// TCP's retransmission queue for seconds. It must not let the requester in.
    #[test]
    fn a_reply_arriving_after_its_lease_is_not_counted() {
        let v = set(3, &[7001, 7002, 7003]);
        let mut ra = RicartAgrawala::new(pid(7002));
        let p = ra.issue(1, 5, &v, T0);
        let late = Duration::from_secs(5);
        let outcome = ra.on_reply(pid(7001), grant(p.id, 3, 0, Duration::ZERO), late, LEASE);
        assert_eq!(outcome, ReplyOutcome::Expired);
        assert!(ra.pending().expect("waiting").awaiting.contains(&pid(7001)));
        // Asked again now: the old grant, however it arrives, never counts again;
        // the answer to the new attempt does.
        ra.reask(&[pid(7001)], late);
        let fresh = late + Duration::from_millis(2);
        assert_eq!(
            ra.on_reply(pid(7001), grant(p.id, 3, 0, Duration::ZERO), fresh, LEASE),
            ReplyOutcome::Stale(StaleReason::OtherAttempt)
        );
        let answer = Grant {
            attempt: 1,
            ..grant(p.id, 3, 0, Duration::ZERO)
        };
        assert_eq!(
            ra.on_reply(pid(7001), answer, fresh, LEASE),
            ReplyOutcome::Counted { remaining: 1 }
        );
    }

    /// A deferred reply counts from when it was given, not from when we asked:
    /// the replier says how long it held the request back.
    #[test]
    fn a_long_deferral_does_not_expire_the_reply() {
        let v = set(3, &[7001, 7002]);
        let mut ra = RicartAgrawala::new(pid(7002));
        let p = ra.issue(1, 5, &v, T0);
        let held = Duration::from_secs(10);
        let arrives = held + Duration::from_millis(3);
        assert_eq!(
            ra.on_reply(pid(7001), grant(p.id, 3, 0, held), arrives, LEASE),
            ReplyOutcome::Counted { remaining: 0 }
        );
        assert!(matches!(ra.enter(arrives), EnterOutcome::Entered(_)));
    }

    /// A replier that claims to have held a request longer than it has been out
    /// cannot stretch the lease.
    #[test]
    fn an_impossible_hold_claim_is_clamped() {
        let v = set(3, &[7001, 7002]);
        let mut ra = RicartAgrawala::new(pid(7002));
        let p = ra.issue(1, 5, &v, T0);
        let arrives = Duration::from_secs(5);
        let outcome = ra.on_reply(pid(7001), grant(p.id, 3, 0, Duration::MAX), arrives, LEASE);
        assert_eq!(outcome, ReplyOutcome::Counted { remaining: 0 });
        // Clamped to 5 s: valid until 5.9 s, not forever.
        assert_eq!(
            ra.enter(Duration::from_secs(6)),
            EnterOutcome::Expired(vec![pid(7001)])
        );
    }

    #[test]
    fn replies_that_expire_while_others_are_awaited_are_asked_again() {
        let v = set(3, &[7001, 7002, 7003]);
        let mut ra = RicartAgrawala::new(pid(7002));
        let p = ra.issue(1, 5, &v, T0);
        ra.on_reply(pid(7001), grant(p.id, 3, 0, Duration::ZERO), T0, LEASE);
        let later = Duration::from_secs(2);
        ra.on_reply(pid(7003), grant(p.id, 3, 0, later), later, LEASE);
        assert_eq!(ra.enter(later), EnterOutcome::Expired(vec![pid(7001)]));
        ra.reask(&[pid(7001)], later);
        assert_eq!(ra.enter(later), EnterOutcome::NotYet);
        assert_eq!(
            ra.pending().map(|p| p.asked[&pid(7001)].attempt),
            Some(1),
            "asked again as attempt 1"
        );
    }

    #[test]
    fn grants_about_to_expire_are_named_while_others_are_awaited() {
        let v = set(3, &[7001, 7002, 7003]);
        let mut ra = RicartAgrawala::new(pid(7002));
        let p = ra.issue(1, 5, &v, T0);
        ra.on_reply(pid(7001), grant(p.id, 3, 0, Duration::ZERO), T0, LEASE);
        let margin = Duration::from_millis(200);
        assert!(ra.expiring(Duration::from_millis(500), margin).is_empty());
        assert_eq!(
            ra.expiring(Duration::from_millis(750), margin),
            vec![pid(7001)]
        );
        // Nothing left to wait for: the entry decides, not a refresh.
        ra.on_reply(pid(7003), grant(p.id, 3, 0, Duration::ZERO), T0, LEASE);
        assert!(ra.expiring(Duration::from_millis(750), margin).is_empty());
    }

    #[test]
    fn an_exhausted_epoch_refuses_to_enter() {
        let v = set(3, &[7001, 7002]);
        let mut ra = RicartAgrawala::new(pid(7002));
        let p = ra.issue(1, 5, &v, T0);
        let top = super::super::lock::MAX_FENCE_SEQ;
        ra.on_reply(pid(7001), grant(p.id, 3, top, Duration::ZERO), T0, LEASE);
        assert_eq!(ra.enter(T0), EnterOutcome::FenceSpaceExhausted);
    }
}
