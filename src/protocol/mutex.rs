//! Ricart and Agrawala's mutual exclusion among the members of one active set.
//!
//! A requester asks every other member and enters once each has replied. A member
//! replies at once unless it is in the critical section or its own pending request
//! has priority (lower Lamport timestamp, then lower address); then it defers the
//! reply until it exits. Every request and reply is bound to the epoch of the
//! active set it was made under, so a reply given under one set is never counted
//! under another.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::active_set::ActiveSet;
use super::ids::ProcessId;

/// Fences are `epoch * FENCE_EPOCH_SCALE + seq`: readable, and ordered like the
/// pair (epoch, seq).
pub const FENCE_EPOCH_SCALE: u64 = 1_000_000;

/// The fencing token of one entry: entries of a later epoch come after every entry
/// of an earlier one, and within an epoch each entry learns its predecessor's
/// sequence from the reply that let it in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Debug)]
pub struct Fence {
    pub epoch: u64,
    pub seq: u64,
}

impl Fence {
    pub fn token(&self) -> u64 {
        self.epoch
            .saturating_mul(FENCE_EPOCH_SCALE)
            .saturating_add(self.seq)
    }
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.token())
    }
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Idle,
    Waiting(Pending),
    Holding {
        id: u64,
        timestamp: u64,
        fence: Fence,
    },
}

/// A reply held back until this process leaves the critical section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeferredRequest {
    pub request_id: u64,
    pub timestamp: u64,
    pub epoch: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Grant,
    Defer(DeferReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeferReason {
    InCriticalSection,
    /// Our own pending request, with this timestamp, comes first.
    OwnRequestFirst {
        own_timestamp: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// Counted; this many members still owe a reply.
    Counted {
        remaining: usize,
    },
    Stale(StaleReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleReason {
    NotWaiting,
    OtherRequest,
    OtherEpoch,
    NotOwed,
}

/// Test-only ways to break the algorithm on purpose, to show that the tests and
/// the simulator catch each classic mistake. Never set outside tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mutations {
    /// Compare the current clock instead of the pending request's timestamp.
    pub compare_current_clock: bool,
    /// Grant requests made under another epoch instead of answering with the
    /// newer view (the view check switched off).
    pub skip_view_check: bool,
    /// Derive the active set from each node's own member list, without the
    /// Paxos agreement: the naive rule of the guide's view-divergence schedule.
    pub local_views: bool,
}

#[derive(Clone, Debug)]
pub struct RicartAgrawala {
    me: ProcessId,
    next_id: u64,
    state: State,
    deferred: BTreeMap<ProcessId, DeferredRequest>,
    fence_seen: Fence,
}

impl RicartAgrawala {
    pub fn new(me: ProcessId) -> Self {
        Self {
            me,
            next_id: 1,
            state: State::Idle,
            deferred: BTreeMap::new(),
            fence_seen: Fence::default(),
        }
    }

    pub fn state(&self) -> &State {
        &self.state
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

    /// The highest fence sequence known for `epoch`, sent along with every reply.
    pub fn fence_seq_for(&self, epoch: u64) -> u64 {
        if self.fence_seen.epoch == epoch {
            self.fence_seen.seq
        } else {
            0
        }
    }

    /// Send a new request under `view`, stamped `timestamp` (the caller ticks its
    /// clock first, so the stamp is later than everything this process granted).
    pub fn issue(&mut self, timestamp: u64, view: &ActiveSet) -> Pending {
        debug_assert!(matches!(self.state, State::Idle), "one request at a time");
        let id = self.next_id;
        self.next_id += 1;
        let pending = Pending {
            id,
            timestamp,
            epoch: view.epoch,
            awaiting: self.others(view),
        };
        self.state = State::Waiting(pending.clone());
        pending
    }

    /// The active set changed while we waited: ask again under the new one, with
    /// the same id and timestamp (our priority does not change), and forget the
    /// replies given under the old one.
    pub fn reissue(&mut self, view: &ActiveSet) -> Option<Pending> {
        let others = self.others(view);
        let State::Waiting(pending) = &mut self.state else {
            return None;
        };
        pending.epoch = view.epoch;
        pending.awaiting = others;
        Some(pending.clone())
    }

    /// Give up the pending request (this process lost its seat, or is leaving).
    pub fn withdraw(&mut self) -> Option<Pending> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Waiting(p) => Some(p),
            other => {
                self.state = other;
                None
            }
        }
    }

    fn others(&self, view: &ActiveSet) -> BTreeSet<ProcessId> {
        view.members
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
        request_id: u64,
        timestamp: u64,
        epoch: u64,
        current_clock: u64,
        mutations: Mutations,
    ) -> Decision {
        let decision = match &self.state {
            State::Holding { .. } => Decision::Defer(DeferReason::InCriticalSection),
            State::Waiting(own) => {
                let own_timestamp = if mutations.compare_current_clock {
                    current_clock
                } else {
                    own.timestamp
                };
                if (own_timestamp, self.me) < (timestamp, from) {
                    Decision::Defer(DeferReason::OwnRequestFirst { own_timestamp })
                } else {
                    Decision::Grant
                }
            }
            State::Idle => Decision::Grant,
        };
        match decision {
            Decision::Defer(_) => {
                self.deferred.insert(
                    from,
                    DeferredRequest {
                        request_id,
                        timestamp,
                        epoch,
                    },
                );
            }
            Decision::Grant => {
                // A grant supersedes anything older we held for this requester.
                self.deferred.remove(&from);
            }
        }
        decision
    }

    pub fn on_reply(
        &mut self,
        from: ProcessId,
        request_id: u64,
        epoch: u64,
        fence_seq: u64,
    ) -> ReplyOutcome {
        let State::Waiting(pending) = &mut self.state else {
            return ReplyOutcome::Stale(StaleReason::NotWaiting);
        };
        if pending.id != request_id {
            return ReplyOutcome::Stale(StaleReason::OtherRequest);
        }
        if pending.epoch != epoch {
            return ReplyOutcome::Stale(StaleReason::OtherEpoch);
        }
        if !pending.awaiting.remove(&from) {
            return ReplyOutcome::Stale(StaleReason::NotOwed);
        }
        self.fence_seen = self.fence_seen.max(Fence {
            epoch,
            seq: fence_seq,
        });
        ReplyOutcome::Counted {
            remaining: pending.awaiting.len(),
        }
    }

    /// Every member replied: enter. Returns the fence of this entry.
    pub fn enter(&mut self) -> Option<Fence> {
        let State::Waiting(pending) = &self.state else {
            return None;
        };
        if !pending.awaiting.is_empty() {
            return None;
        }
        let fence = Fence {
            epoch: pending.epoch,
            seq: self.fence_seq_for(pending.epoch) + 1,
        };
        self.fence_seen = fence;
        self.state = State::Holding {
            id: pending.id,
            timestamp: pending.timestamp,
            fence,
        };
        Some(fence)
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

    /// Deferred requests made under an epoch older than `epoch`: their requesters
    /// must hear about the new set now rather than wait for our exit.
    pub fn take_deferred_before(&mut self, epoch: u64) -> Vec<(ProcessId, DeferredRequest)> {
        let stale: Vec<ProcessId> = self
            .deferred
            .iter()
            .filter(|(_, d)| d.epoch < epoch)
            .map(|(p, _)| *p)
            .collect();
        stale
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

    fn view(epoch: u64, ports: &[u16]) -> ActiveSet {
        ActiveSet {
            cluster: pid(ports[0]),
            epoch,
            max_active: 3,
            members: ports.iter().map(|p| pid(*p)).collect(),
        }
    }

    const NONE: Mutations = Mutations {
        compare_current_clock: false,
        skip_view_check: false,
        local_views: false,
    };

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
        let cases = [
            Case {
                name: "idle grants",
                own_timestamp: None,
                holding: false,
                their_timestamp: 9,
                their_port: 7001,
                defer: false,
            },
            Case {
                name: "holding defers even an older request",
                own_timestamp: None,
                holding: true,
                their_timestamp: 1,
                their_port: 7001,
                defer: true,
            },
            Case {
                name: "own earlier request wins",
                own_timestamp: Some(3),
                holding: false,
                their_timestamp: 5,
                their_port: 7001,
                defer: true,
            },
            Case {
                name: "their earlier request wins",
                own_timestamp: Some(5),
                holding: false,
                their_timestamp: 3,
                their_port: 7003,
                defer: false,
            },
            Case {
                name: "tie broken by lower address: ours",
                own_timestamp: Some(4),
                holding: false,
                their_timestamp: 4,
                their_port: 7003,
                defer: true,
            },
            Case {
                name: "tie broken by lower address: theirs",
                own_timestamp: Some(4),
                holding: false,
                their_timestamp: 4,
                their_port: 7001,
                defer: false,
            },
            Case {
                name: "tie with numeric (not string) order: 7010 > 7002",
                own_timestamp: Some(4),
                holding: false,
                their_timestamp: 4,
                their_port: 7010,
                defer: true,
            },
        ];
        for case in cases {
            let me = pid(7002);
            let v = view(1, &[7001, 7002, 7003, 7010]);
            let mut ra = RicartAgrawala::new(me);
            if let Some(ts) = case.own_timestamp {
                ra.issue(ts, &v);
            }
            if case.holding {
                ra.issue(1, &v);
                for other in [7001, 7003, 7010] {
                    ra.on_reply(pid(other), 1, 1, 0);
                }
                assert!(ra.enter().is_some());
            }
            let decision =
                ra.on_request(pid(case.their_port), 1, case.their_timestamp, 1, 100, NONE);
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
        let v = view(1, &[7001, 7002]);
        let mut ra = RicartAgrawala::new(pid(7002));
        ra.issue(3, &v);
        let right = ra.on_request(pid(7001), 1, 10, 1, 50, NONE);
        assert!(matches!(right, Decision::Defer(_)));
        let mut broken = RicartAgrawala::new(pid(7002));
        broken.issue(3, &v);
        let wrong = broken.on_request(
            pid(7001),
            1,
            10,
            1,
            50,
            Mutations {
                compare_current_clock: true,
                ..NONE
            },
        );
        assert_eq!(wrong, Decision::Grant);
    }

    #[test]
    fn replies_are_tracked_as_a_set_and_stale_ones_ignored() {
        let v = view(2, &[7001, 7002, 7003]);
        let mut ra = RicartAgrawala::new(pid(7001));
        let p = ra.issue(5, &v);
        assert_eq!(
            ra.on_reply(pid(7002), p.id, 2, 0),
            ReplyOutcome::Counted { remaining: 1 }
        );
        // A duplicate does not count twice.
        assert_eq!(
            ra.on_reply(pid(7002), p.id, 2, 0),
            ReplyOutcome::Stale(StaleReason::NotOwed)
        );
        // A reply for an earlier request, or another epoch, does not count.
        assert_eq!(
            ra.on_reply(pid(7003), p.id - 1, 2, 0),
            ReplyOutcome::Stale(StaleReason::OtherRequest)
        );
        assert_eq!(
            ra.on_reply(pid(7003), p.id, 1, 0),
            ReplyOutcome::Stale(StaleReason::OtherEpoch)
        );
        assert!(ra.enter().is_none(), "7003 still owes a reply");
        assert_eq!(
            ra.on_reply(pid(7003), p.id, 2, 0),
            ReplyOutcome::Counted { remaining: 0 }
        );
        assert!(ra.enter().is_some());
    }

    #[test]
    fn a_joiner_while_waiting_is_asked_too() {
        let mut ra = RicartAgrawala::new(pid(7001));
        let p = ra.issue(5, &view(1, &[7001, 7002]));
        ra.on_reply(pid(7002), p.id, 1, 0);
        let again = ra
            .reissue(&view(2, &[7001, 7002, 7003]))
            .expect("still waiting");
        assert_eq!(again.timestamp, 5, "priority is kept");
        assert_eq!(again.awaiting, [pid(7002), pid(7003)].into_iter().collect());
        assert!(ra.enter().is_none());
    }

    #[test]
    fn a_failed_member_is_dropped_from_the_wait() {
        let mut ra = RicartAgrawala::new(pid(7001));
        let p = ra.issue(5, &view(1, &[7001, 7002, 7003]));
        ra.on_reply(pid(7002), p.id, 1, 0);
        // 7003 failed; the new set without it is decided: ask 7002 again under it.
        ra.reissue(&view(2, &[7001, 7002]));
        assert!(ra.enter().is_none());
        assert_eq!(
            ra.on_reply(pid(7002), p.id, 2, 0),
            ReplyOutcome::Counted { remaining: 0 }
        );
        assert!(ra.enter().is_some());
    }

    #[test]
    fn exit_releases_deferred_replies_to_the_right_peers() {
        let v = view(1, &[7001, 7002, 7003]);
        let mut ra = RicartAgrawala::new(pid(7001));
        let p = ra.issue(1, &v);
        ra.on_reply(pid(7002), p.id, 1, 0);
        ra.on_reply(pid(7003), p.id, 1, 0);
        let fence = ra.enter().expect("all replied");
        ra.on_request(pid(7002), 8, 4, 1, 10, NONE);
        ra.on_request(pid(7003), 3, 6, 1, 10, NONE);
        let (exit_fence, due) = ra.exit().expect("was holding");
        assert_eq!(fence, exit_fence);
        assert_eq!(
            due,
            vec![
                (
                    pid(7002),
                    DeferredRequest {
                        request_id: 8,
                        timestamp: 4,
                        epoch: 1
                    }
                ),
                (
                    pid(7003),
                    DeferredRequest {
                        request_id: 3,
                        timestamp: 6,
                        epoch: 1
                    }
                ),
            ]
        );
        assert!(ra.deferred().is_empty());
    }

    #[test]
    fn fences_grow_within_and_across_epochs() {
        let mut a = RicartAgrawala::new(pid(7001));
        let p = a.issue(1, &view(3, &[7001, 7002]));
        a.on_reply(pid(7002), p.id, 3, 0);
        let first = a.enter().expect("granted");
        a.exit();
        // 7002 enters next; the reply from 7001 carries the sequence 7001 used.
        let mut b = RicartAgrawala::new(pid(7002));
        let q = b.issue(5, &view(3, &[7001, 7002]));
        b.on_reply(pid(7001), q.id, 3, a.fence_seq_for(3));
        let second = b.enter().expect("granted");
        assert!(second.token() > first.token());
        // A new epoch starts above every fence of the old one.
        let mut c = RicartAgrawala::new(pid(7003));
        let r = c.issue(9, &view(4, &[7003]));
        assert!(r.awaiting.is_empty());
        let third = c.enter().expect("alone");
        assert!(third.token() > second.token());
    }
}
