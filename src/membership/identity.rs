//! The identity foca gossips about: a process plus a bump that lets a process
//! that was wrongly declared down come back at once.
//!
//! Of two identities at one address the one with the later *standing* wins:
//! its start time plus one second per renewal. A real process renews at most
//! once a second, and only one process can listen at an address at a time,
//! so a restart stands later than anything its dead predecessor reached. An
//! identity standing later than this host's clock allows is implausible
//! (see `codec`), and a live process that hears of a plausible identity
//! standing above its own at its own address renews above it: in plain mode
//! a forger can delay a member, never lock it out.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::protocol::ids::ProcessId;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct MemberId {
    pub process: ProcessId,
    /// Raised by `renew` each time this process rejoins after being declared down.
    pub bump: u32,
}

impl MemberId {
    pub fn new(process: ProcessId) -> Self {
        Self { process, bump: 0 }
    }

    /// Stands for whatever process listens at a seed address: foca accepts an
    /// announce addressed to any identity with our address.
    pub fn placeholder(addr: SocketAddr) -> Self {
        Self {
            process: ProcessId::new(addr, 0),
            bump: 0,
        }
    }

    pub fn is_placeholder(&self) -> bool {
        self.process.incarnation == 0 && self.bump == 0
    }

    /// When this identity stands, in microseconds since the Unix epoch: its
    /// start plus a second per renewal.
    pub fn standing(&self) -> u64 {
        self.process
            .incarnation
            .saturating_add(u64::from(self.bump).saturating_mul(RENEWAL_STEP_US))
    }

    /// The order of identities at one address (ties broken so it is total).
    pub fn standing_key(&self) -> (u64, u64, u32) {
        (self.standing(), self.process.incarnation, self.bump)
    }

    /// Whether a real process could have this identity when the wall clock
    /// reads `wall_now_us` (allowing for hosts whose clock runs ahead).
    pub fn plausible_at(&self, wall_now_us: u64) -> bool {
        let limit = wall_now_us.saturating_add(MAX_CLOCK_AHEAD_US);
        self.process.incarnation <= limit
            && self.standing() <= limit.saturating_add(RENEWAL_SLACK_US)
    }

    /// The renewal of this identity: one step up, or above `rival` (another
    /// identity claimed at our address) if that stands higher, but never
    /// beyond what is plausible at `wall_now_us`.
    pub fn renewed(&self, rival: Option<&MemberId>, wall_now_us: u64) -> Option<MemberId> {
        let incarnation = self.process.incarnation;
        let steps_above = |standing: u64| {
            standing
                .saturating_sub(incarnation)
                .checked_div(RENEWAL_STEP_US)
                .and_then(|s| s.checked_add(1))
        };
        let mut bump = u64::from(self.bump).checked_add(1)?;
        if let Some(rival) = rival.filter(|r| r.standing_key() >= self.standing_key()) {
            bump = bump.max(steps_above(rival.standing())?);
        }
        let most = wall_now_us
            .saturating_add(MAX_CLOCK_AHEAD_US)
            .saturating_add(RENEWAL_SLACK_US);
        let bump = bump.min(steps_above(most)?.saturating_sub(1));
        let bump = u32::try_from(bump).ok()?;
        (bump > self.bump).then_some(MemberId {
            process: self.process,
            bump,
        })
    }
}

/// One renewal moves an identity's standing a second later.
pub const RENEWAL_STEP_US: u64 = 1_000_000;
/// How far ahead of ours another host's clock may run (its process's start
/// time may be that far in our future).
pub const MAX_CLOCK_AHEAD_US: u64 = 3_600 * 1_000_000;
/// Room for a renewal that beats a rival claimed at the limit.
const RENEWAL_SLACK_US: u64 = 2 * RENEWAL_STEP_US;

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    /// foca renews on its own as soon as it hears it was declared down; the
    /// node paces renewals itself instead (a flood of forged "you are down"
    /// datagrams must not drive the counter to its end), so foca goes defunct
    /// and the node renews through `change_identity`.
    fn renew(&self) -> Option<Self> {
        None
    }

    fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    /// The later standing wins: a restart replaces its predecessor, a
    /// renewal the identity it renewed.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.standing_key() > adversary.standing_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn a_restart_wins_over_the_previous_incarnation() {
        let addr: SocketAddr = "127.0.0.1:7000".parse().expect("test address");
        // Started at 10 s and renewed 7 times: alive at 17 s at the earliest.
        let old = MemberId {
            process: ProcessId::new(addr, 10_000_000),
            bump: 7,
        };
        let restarted = MemberId::new(ProcessId::new(addr, 18_000_000));
        assert!(restarted.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&restarted));
    }

    #[test]
    fn a_renewal_wins_and_foca_never_renews_on_its_own() {
        let id = MemberId::new(ProcessId::new(
            "127.0.0.1:7000".parse().expect("test address"),
            3,
        ));
        assert_eq!(id.renew(), None, "the node paces renewals itself");
        let renewed = MemberId { bump: 1, ..id };
        assert!(renewed.win_addr_conflict(&id));
    }

    const NOW: u64 = 1_800_000_000_000_000;

    fn at(incarnation: u64, bump: u32) -> MemberId {
        MemberId {
            process: ProcessId::new("127.0.0.1:7000".parse().expect("address"), incarnation),
            bump,
        }
    }

    #[test]
    fn a_restart_stands_above_a_predecessor_that_renewed_while_alive() {
        // Started at 100 s, renewed 5 times (at least a second apart), died;
        // the restart came after.
        let old = at(100_000_000, 5);
        let restarted = at(106_000_000, 0);
        assert!(restarted.win_addr_conflict(&old));
    }

    #[test]
    fn a_live_process_renews_above_a_forged_later_identity() {
        let me = at(NOW - 10_000_000, 0);
        let forged = at(NOW + 1_000_000_000, 7);
        assert!(forged.win_addr_conflict(&me));
        let renewed = me.renewed(Some(&forged), NOW).expect("a renewal");
        assert!(renewed.win_addr_conflict(&forged));
        assert!(renewed.plausible_at(NOW));
    }

    #[test]
    fn renewals_stay_plausible_and_cannot_be_exhausted() {
        let me = at(NOW - 10_000_000, 0);
        // A rival at the very limit of plausibility is matched as far as
        // plausible now, and beaten a second later.
        let limit = at(NOW + MAX_CLOCK_AHEAD_US, 2);
        assert!(limit.plausible_at(NOW));
        let first = me.renewed(Some(&limit), NOW).expect("a renewal");
        assert!(first.plausible_at(NOW));
        let later = first
            .renewed(Some(&limit), NOW + 2 * RENEWAL_STEP_US)
            .expect("a renewal");
        assert!(later.win_addr_conflict(&limit) && later.plausible_at(NOW + 2 * RENEWAL_STEP_US));
        // Nothing from the wire makes the bump overflow: at its end there is
        // no renewal, not a wrapped one.
        assert_eq!(at(1, u32::MAX).renewed(None, u64::MAX), None);
        assert_eq!(
            at(NOW, 0).renewed(Some(&at(u64::MAX, u32::MAX)), NOW),
            Some(at(NOW, 3602))
        );
    }
}
