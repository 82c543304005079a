//! The active set: the members that take part in mutual exclusion, as decided
//! for one epoch, and the quorum rule that lets it change.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::ProcessId;
use super::lock::MAX_FENCE_EPOCH;
use crate::wire::MAX_MEMBERS;

/// The members of the active set for one epoch of one cluster.
///
/// Every epoch has exactly one member list (a Paxos round among the previous
/// epoch's members decides it), so two processes that agree on the epoch agree on
/// the members: that is what makes the epoch check a plain number comparison.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveSet {
    /// The founder of the cluster: active sets of different clusters never mix.
    pub cluster: ProcessId,
    pub epoch: u64,
    pub max_active: u32,
    /// Seat order: the longest-seated member first.
    pub members: Vec<ProcessId>,
}

impl ActiveSet {
    pub fn founding(founder: ProcessId, max_active: u32) -> Self {
        Self {
            cluster: founder,
            epoch: 1,
            max_active,
            members: vec![founder],
        }
    }

    /// Whether this could be a decided set, by the rules the wire applies
    /// (`crate::wire`): members, at most `max_active` of them (itself at
    /// most [`MAX_MEMBERS`]), no address twice, and an epoch a fence can carry.
    /// Sets that arrive as gossip are checked with it.
    pub fn check(&self) -> Result<(), String> {
        if self.members.is_empty() {
            return Err("it has no members".into());
        }
        if !(1..=MAX_FENCE_EPOCH).contains(&self.epoch)
            || !(1..=MAX_MEMBERS as u32).contains(&self.max_active)
            || self.members.len() > self.max_active as usize
        {
            return Err(format!(
                "it is inconsistent: epoch {}, max_active {}, {} members",
                self.epoch,
                self.max_active,
                self.members.len()
            ));
        }
        for (i, m) in self.members.iter().enumerate() {
            if self.members[..i].iter().any(|other| other.addr == m.addr) {
                return Err(format!("it lists {} twice", m.addr));
            }
        }
        Ok(())
    }

    pub fn contains(&self, process: &ProcessId) -> bool {
        self.members.contains(process)
    }

    /// The longest-seated member: it breaks ties when exactly half is reachable.
    pub fn primary(&self) -> Option<&ProcessId> {
        self.members.first()
    }

    /// The same cluster's next epoch with `members`; `None` once the epochs a
    /// fencing token can carry are used up (2^24 - 1 of them).
    pub fn successor(&self, members: Vec<ProcessId>) -> Option<Self> {
        (self.epoch < MAX_FENCE_EPOCH).then(|| Self {
            cluster: self.cluster,
            epoch: self.epoch + 1,
            max_active: self.max_active,
            members,
        })
    }

    /// A quorum of this set: more than half of its members, or exactly half
    /// including the primary. Any two quorums share a member, which is what keeps
    /// the two sides of a partition from both changing the set.
    pub fn is_quorum(&self, voters: &BTreeSet<ProcessId>) -> bool {
        let present = self.members.iter().filter(|m| voters.contains(m)).count();
        let n = self.members.len();
        if n == 0 {
            return false;
        }
        present * 2 > n || (present * 2 == n && self.primary().is_some_and(|p| voters.contains(p)))
    }

    /// The member list this set should move to, given which processes are usable
    /// (alive and not leaving) and the candidates for a free seat, in seat order.
    ///
    /// Members keep their seats while they are usable: a newcomer never pushes out
    /// a live member, it waits for a seat to free.
    pub fn desired_members(
        &self,
        usable: impl Fn(&ProcessId) -> bool,
        candidates: &[ProcessId],
    ) -> Vec<ProcessId> {
        let mut members: Vec<ProcessId> =
            self.members.iter().copied().filter(|m| usable(m)).collect();
        for candidate in candidates {
            if members.len() >= self.max_active as usize {
                break;
            }
            // One seat per address: two incarnations at one address are one
            // process and its ghost (a restart, or a damaged identity), and a
            // set listing both would not even pass the wire's checks.
            if !members.iter().any(|m| m.addr == candidate.addr) {
                members.push(*candidate);
            }
        }
        members
    }

    /// When two clusters meet, the older one (its founder started first) stays.
    pub fn outranks_cluster_of(&self, other: &ActiveSet) -> bool {
        self.cluster.seat_key() < other.cluster.seat_key()
    }

    pub fn same_cluster(&self, other: &ActiveSet) -> bool {
        self.cluster == other.cluster
    }
}

impl fmt::Debug for ActiveSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {} {:?}", self.epoch, self.members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(port: u16) -> ProcessId {
        ProcessId::new(
            format!("127.0.0.1:{port}").parse().expect("test address"),
            u64::from(port),
        )
    }

    fn set(ports: &[u16]) -> ActiveSet {
        ActiveSet {
            cluster: pid(ports[0]),
            epoch: 1,
            max_active: 3,
            members: ports.iter().map(|p| pid(*p)).collect(),
        }
    }

    fn voters(ports: &[u16]) -> BTreeSet<ProcessId> {
        ports.iter().map(|p| pid(*p)).collect()
    }

    #[test]
    fn a_second_incarnation_at_a_seated_address_gets_no_seat() {
        let s = set(&[1, 2]);
        let ghost = ProcessId::new(pid(1).addr, 99);
        let desired = s.desired_members(|_| true, &[ghost, pid(3)]);
        assert_eq!(desired, vec![pid(1), pid(2), pid(3)]);
    }

    #[test]
    fn majority_is_a_quorum() {
        let s = set(&[1, 2, 3]);
        assert!(s.is_quorum(&voters(&[1, 2])));
        assert!(s.is_quorum(&voters(&[2, 3])));
        assert!(!s.is_quorum(&voters(&[3])));
    }

    #[test]
    fn exactly_half_needs_the_primary() {
        let s = set(&[1, 2]);
        assert!(s.is_quorum(&voters(&[1])));
        assert!(!s.is_quorum(&voters(&[2])));
        let four = set(&[1, 2, 3, 4]);
        assert!(four.is_quorum(&voters(&[1, 4])));
        assert!(!four.is_quorum(&voters(&[2, 3])));
    }

    #[test]
    fn votes_from_outside_the_set_do_not_count() {
        let s = set(&[1, 2, 3]);
        assert!(!s.is_quorum(&voters(&[1, 7, 8])));
    }

    #[test]
    fn any_two_quorums_intersect() {
        for n in 1..=6u16 {
            let ports: Vec<u16> = (1..=n).collect();
            let s = set(&ports);
            let subsets: Vec<BTreeSet<ProcessId>> = (0u32..(1 << n))
                .map(|mask| {
                    ports
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(_, p)| pid(*p))
                        .collect()
                })
                .filter(|v| s.is_quorum(v))
                .collect();
            for a in &subsets {
                for b in &subsets {
                    assert!(
                        a.intersection(b).next().is_some(),
                        "n={n}: {a:?} and {b:?} are disjoint quorums"
                    );
                }
            }
        }
    }

    #[test]
    fn live_members_keep_their_seats_and_newcomers_fill_free_ones() {
        let s = set(&[1, 2, 3]);
        let alive = |p: &ProcessId| *p != pid(2);
        let next = s.desired_members(alive, &[pid(4), pid(5)]);
        assert_eq!(next, vec![pid(1), pid(3), pid(4)]);
        // Nobody failed: an older candidate does not displace anyone.
        let same = s.desired_members(|_| true, &[pid(0)]);
        assert_eq!(same, s.members);
    }
}
