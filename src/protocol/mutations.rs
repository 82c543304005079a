//! Test-only ways to break the algorithm on purpose, to show that the tests and
//! the simulator catch each classic mistake.
//!
//! Only the `sim` cargo feature, which the tests turn on, gives [`Mutations`]
//! its switches and makes this module public. Without it the module is
//! crate-private, the type is empty, every switch reads as a constant `false`,
//! and the release binary carries none of the broken branches.

#[cfg(feature = "sim")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mutations {
    /// Compare the current clock instead of the pending request's timestamp.
    pub compare_current_clock: bool,
    /// Grant requests made under another epoch instead of answering with the
    /// newer active set (the epoch check switched off).
    pub skip_epoch_check: bool,
    /// Derive the active set from each node's own member list, without the
    /// Paxos agreement: the naive rule of the guide's divergence schedule.
    pub local_active_sets: bool,
    /// Count replies however late they arrive (the grant lease switched off).
    pub ignore_grant_lease: bool,
    /// Merge clocks as the first version did, `max(seen) + 1` wrapping and
    /// with no bound on how far ahead a received clock may be.
    pub wrapping_clock: bool,
    /// Pass a hold on however long ago the grants that let us in were given.
    pub hand_on_past_lease: bool,
    /// Pass a hold on to whoever is first in line, however often their
    /// origin entered in it already.
    pub hand_on_without_turns: bool,
}

/// Without the `sim` feature: nothing to switch on.
#[cfg(not(feature = "sim"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mutations {
    _none: (),
}

#[cfg(feature = "sim")]
impl Mutations {
    pub(crate) fn compare_current_clock(self) -> bool {
        self.compare_current_clock
    }
    pub(crate) fn skip_epoch_check(self) -> bool {
        self.skip_epoch_check
    }
    pub(crate) fn local_active_sets(self) -> bool {
        self.local_active_sets
    }
    pub(crate) fn ignore_grant_lease(self) -> bool {
        self.ignore_grant_lease
    }
    pub(crate) fn wrapping_clock(self) -> bool {
        self.wrapping_clock
    }
    pub(crate) fn hand_on_past_lease(self) -> bool {
        self.hand_on_past_lease
    }
    pub(crate) fn hand_on_without_turns(self) -> bool {
        self.hand_on_without_turns
    }
}

#[cfg(not(feature = "sim"))]
impl Mutations {
    pub(crate) fn compare_current_clock(self) -> bool {
        false
    }
    pub(crate) fn skip_epoch_check(self) -> bool {
        false
    }
    pub(crate) fn local_active_sets(self) -> bool {
        false
    }
    pub(crate) fn ignore_grant_lease(self) -> bool {
        false
    }
    pub(crate) fn wrapping_clock(self) -> bool {
        false
    }
    pub(crate) fn hand_on_past_lease(self) -> bool {
        false
    }
    pub(crate) fn hand_on_without_turns(self) -> bool {
        false
    }
}
