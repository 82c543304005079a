//! Changing the active set: one single-decree Paxos instance per epoch.
//!
//! The members of epoch `e` are the acceptors that decide the member list of
//! epoch `e + 1`. Any member may propose; a quorum of epoch `e` (see
//! [`ActiveSet::is_quorum`]) must accept. Because any two quorums intersect, no
//! two different lists are ever decided for the same epoch, and a side of a
//! partition without a quorum cannot change the set at all.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use super::active_set::ActiveSet;
use super::ids::ProcessId;

/// Ballot rounds from the wire above this are refused: proposers outbid each
/// other by one, so honest rounds stay tiny, and a forged huge one must not use
/// up the counter.
pub const MAX_ROUND: u32 = 1 << 30;

/// How far above the highest round a node has seen for the epoch being
/// decided a ballot from the wire may be. Rounds start again at 1 for every
/// epoch and honest proposers outbid by one, so they stay far below this; one
/// forged ballot at the top of the range would otherwise leave every proposer
/// whose address sorts lower unable to outbid it, and the epoch undecidable.
pub const MAX_ROUND_LEAD: u32 = 1 << 16;

/// A Paxos ballot: higher rounds win, the proposer's address breaks ties.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ballot {
    pub round: u32,
    pub proposer: ProcessId,
}

impl Ord for Ballot {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.round, self.proposer).cmp(&(other.round, other.proposer))
    }
}

impl PartialOrd for Ballot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.round, self.proposer)
    }
}

/// The acceptor's answer to a Prepare or an Accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vote {
    Promise {
        accepted: Option<(Ballot, Vec<ProcessId>)>,
    },
    Accepted,
    Nack {
        promised: Ballot,
    },
}

/// The acceptor's memory for the epoch being decided.
///
/// It lives only as long as the process: a restarted process is a new
/// `ProcessId` and never votes in its predecessor's name, so nothing needs to be
/// on disk.
#[derive(Clone, Debug)]
pub struct Acceptor {
    epoch: u64,
    promised: Option<Ballot>,
    accepted: Option<(Ballot, Vec<ProcessId>)>,
}

impl Acceptor {
    pub fn new(epoch: u64) -> Self {
        Self {
            epoch,
            promised: None,
            accepted: None,
        }
    }

    /// The epoch this acceptor votes on.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A new epoch was installed: vote on the one after it, from a clean slate.
    pub fn reset(&mut self, epoch: u64) {
        *self = Self::new(epoch);
    }

    /// The member list this acceptor accepted for its epoch, if any.
    pub fn accepted_members(&self) -> Option<&[ProcessId]> {
        self.accepted
            .as_ref()
            .map(|(_, members)| members.as_slice())
    }

    pub fn highest_round_seen(&self) -> u32 {
        self.promised.map_or(0, |b| b.round)
    }

    pub fn on_prepare(&mut self, ballot: Ballot) -> Vote {
        match self.promised {
            Some(promised) if promised > ballot => Vote::Nack { promised },
            _ => {
                self.promised = Some(ballot);
                Vote::Promise {
                    accepted: self.accepted.clone(),
                }
            }
        }
    }

    pub fn on_accept(&mut self, ballot: Ballot, members: Vec<ProcessId>) -> Vote {
        match self.promised {
            Some(promised) if promised > ballot => Vote::Nack { promised },
            _ => {
                self.promised = Some(ballot);
                self.accepted = Some((ballot, members));
                Vote::Accepted
            }
        }
    }
}

/// What the proposer does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposalStep {
    Wait,
    /// Phase 1 reached a quorum: ask the acceptors to accept this list;
    /// `carried` when it is a value an acceptor already accepted (Paxos must
    /// carry it through), not the proposer's own choice.
    SendAccept {
        members: Vec<ProcessId>,
        carried: bool,
    },
    /// Phase 2 reached a quorum: this set is decided.
    Decided(ActiveSet),
}

#[derive(Clone, Debug)]
enum Phase {
    Preparing {
        promised_by: BTreeSet<ProcessId>,
        highest_accepted: Option<(Ballot, Vec<ProcessId>)>,
    },
    Accepting {
        value: Vec<ProcessId>,
        carried: bool,
        accepted_by: BTreeSet<ProcessId>,
    },
}

/// One proposer's attempt to decide the set for `base.epoch + 1`.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub base: ActiveSet,
    pub ballot: Ballot,
    pub wanted: Vec<ProcessId>,
    pub started: Duration,
    phase: Phase,
}

impl Proposal {
    pub fn new(base: ActiveSet, ballot: Ballot, wanted: Vec<ProcessId>, now: Duration) -> Self {
        Self {
            base,
            ballot,
            wanted,
            started: now,
            phase: Phase::Preparing {
                promised_by: BTreeSet::new(),
                highest_accepted: None,
            },
        }
    }

    /// The epoch this proposal decides.
    pub fn epoch(&self) -> u64 {
        self.base.epoch + 1
    }

    /// The list sent in phase 2, once phase 1 is through, and whether it was
    /// carried over from an acceptor's earlier vote.
    pub fn accepting(&self) -> Option<(&[ProcessId], bool)> {
        match &self.phase {
            Phase::Accepting { value, carried, .. } => Some((value, *carried)),
            Phase::Preparing { .. } => None,
        }
    }

    pub fn on_promise(
        &mut self,
        from: ProcessId,
        ballot: Ballot,
        accepted: Option<(Ballot, Vec<ProcessId>)>,
    ) -> ProposalStep {
        if ballot != self.ballot || !self.base.contains(&from) {
            return ProposalStep::Wait;
        }
        let Phase::Preparing {
            promised_by,
            highest_accepted,
        } = &mut self.phase
        else {
            return ProposalStep::Wait;
        };
        promised_by.insert(from);
        if let Some((b, members)) = accepted
            && highest_accepted.as_ref().is_none_or(|(hb, _)| b > *hb)
        {
            *highest_accepted = Some((b, members));
        }
        if !self.base.is_quorum(promised_by) {
            return ProposalStep::Wait;
        }
        // Paxos: a value some acceptor may already have accepted must be kept.
        let carried = highest_accepted.is_some();
        let value = highest_accepted
            .as_ref()
            .map_or_else(|| self.wanted.clone(), |(_, members)| members.clone());
        self.phase = Phase::Accepting {
            value: value.clone(),
            carried,
            accepted_by: BTreeSet::new(),
        };
        ProposalStep::SendAccept {
            members: value,
            carried,
        }
    }

    pub fn on_accepted(&mut self, from: ProcessId, ballot: Ballot) -> ProposalStep {
        if ballot != self.ballot || !self.base.contains(&from) {
            return ProposalStep::Wait;
        }
        let Phase::Accepting {
            value, accepted_by, ..
        } = &mut self.phase
        else {
            return ProposalStep::Wait;
        };
        accepted_by.insert(from);
        match self.base.successor(value.clone()) {
            Some(next) if self.base.is_quorum(accepted_by) => ProposalStep::Decided(next),
            _ => ProposalStep::Wait,
        }
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

    fn base() -> ActiveSet {
        ActiveSet {
            cluster: pid(1),
            epoch: 4,
            max_active: 3,
            members: vec![pid(1), pid(2), pid(3)],
        }
    }

    fn ballot(round: u32, port: u16) -> Ballot {
        Ballot {
            round,
            proposer: pid(port),
        }
    }

    #[test]
    fn acceptor_refuses_lower_ballots_after_a_promise() {
        let mut acceptor = Acceptor::new(5);
        assert!(matches!(
            acceptor.on_prepare(ballot(2, 1)),
            Vote::Promise { .. }
        ));
        assert_eq!(
            acceptor.on_prepare(ballot(1, 3)),
            Vote::Nack {
                promised: ballot(2, 1)
            }
        );
        assert_eq!(
            acceptor.on_accept(ballot(1, 3), vec![pid(3)]),
            Vote::Nack {
                promised: ballot(2, 1)
            }
        );
    }

    #[test]
    fn acceptor_reports_what_it_accepted() {
        let mut acceptor = Acceptor::new(5);
        assert_eq!(
            acceptor.on_accept(ballot(1, 1), vec![pid(1), pid(2)]),
            Vote::Accepted
        );
        assert_eq!(
            acceptor.on_prepare(ballot(2, 2)),
            Vote::Promise {
                accepted: Some((ballot(1, 1), vec![pid(1), pid(2)]))
            }
        );
    }

    #[test]
    fn proposer_keeps_a_value_already_accepted_by_a_promiser() {
        let mut p = Proposal::new(base(), ballot(3, 2), vec![pid(2), pid(3)], Duration::ZERO);
        assert_eq!(p.on_promise(pid(2), ballot(3, 2), None), ProposalStep::Wait);
        let step = p.on_promise(
            pid(3),
            ballot(3, 2),
            Some((ballot(1, 1), vec![pid(1), pid(3)])),
        );
        assert_eq!(
            step,
            ProposalStep::SendAccept {
                members: vec![pid(1), pid(3)],
                carried: true
            }
        );
    }

    #[test]
    fn proposer_decides_on_a_quorum_of_accepts_only() {
        let mut p = Proposal::new(base(), ballot(1, 1), vec![pid(1), pid(2)], Duration::ZERO);
        p.on_promise(pid(1), ballot(1, 1), None);
        assert_eq!(
            p.on_promise(pid(2), ballot(1, 1), None),
            ProposalStep::SendAccept {
                members: vec![pid(1), pid(2)],
                carried: false
            }
        );
        assert_eq!(p.on_accepted(pid(1), ballot(1, 1)), ProposalStep::Wait);
        // A vote for another ballot, or from outside the set, is not counted.
        assert_eq!(p.on_accepted(pid(2), ballot(2, 2)), ProposalStep::Wait);
        assert_eq!(p.on_accepted(pid(9), ballot(1, 1)), ProposalStep::Wait);
        match p.on_accepted(pid(3), ballot(1, 1)) {
            ProposalStep::Decided(set) => {
                assert_eq!(set.epoch, 5);
                assert_eq!(set.members, vec![pid(1), pid(2)]);
            }
            other => panic!("expected a decision, got {other:?}"),
        }
    }
}
