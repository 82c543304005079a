//! Lamport's logical clock, hardened against values from the wire.

/// How far ahead of this node's clock a received clock or timestamp may be.
///
/// Honest clocks move by a few ticks per message, so a cluster needs about 9
/// years at a million ticks a second to run 2^48 ahead of a node that slept
/// through it. A value further ahead is a bug or an attack: merging it could
/// exhaust the 64-bit clock in one message, so it is refused instead.
pub const MAX_CLOCK_LEAD: u64 = 1 << 48;

/// A Lamport clock: ticks on every local event that others may see, and jumps
/// past every timestamp it receives. It never wraps: arithmetic saturates, and
/// `merge` refuses values implausibly far ahead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LamportClock(u64);

/// A received clock value that is too far ahead to merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImplausibleClock {
    pub seen: u64,
    pub own: u64,
}

impl LamportClock {
    pub fn now(&self) -> u64 {
        self.0
    }

    /// A local event (sending a message, issuing a request): the clock moves on.
    pub fn tick(&mut self) -> u64 {
        self.0 = self.0.saturating_add(1);
        self.0
    }

    /// Whether `seen` may be merged.
    pub fn check(&self, seen: u64) -> Result<(), ImplausibleClock> {
        if seen > self.0.saturating_add(MAX_CLOCK_LEAD) {
            Err(ImplausibleClock { seen, own: self.0 })
        } else {
            Ok(())
        }
    }

    /// A message stamped `seen` arrived: the clock moves past it, unless `seen`
    /// is implausibly far ahead (then nothing changes).
    pub fn merge(&mut self, seen: u64) -> Result<u64, ImplausibleClock> {
        self.check(seen)?;
        self.0 = self.0.max(seen).saturating_add(1);
        Ok(self.0)
    }

    /// The first version's merge, kept only to show the simulator catches it
    /// (`Mutations::wrapping_clock`).
    pub(crate) fn merge_wrapping(&mut self, seen: u64) {
        self.0 = self.0.max(seen).wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_jumps_past_a_later_timestamp() {
        let mut clock = LamportClock::default();
        clock.tick();
        assert_eq!(clock.merge(10), Ok(11));
    }

    #[test]
    fn merge_still_advances_on_an_earlier_timestamp() {
        let mut clock = LamportClock::default();
        for _ in 0..5 {
            clock.tick();
        }
        assert_eq!(clock.merge(2), Ok(6));
        assert_eq!(clock.now(), 6);
    }

    #[test]
    fn tick_is_strictly_increasing() {
        let mut clock = LamportClock::default();
        let a = clock.tick();
        let b = clock.tick();
        assert!(b > a);
    }

    /// The forgery that made two holders: one message stamped 2^64-1 wrapped a
    /// release build's clock to 0.
    #[test]
    fn one_message_cannot_wrap_or_exhaust_the_clock() {
        let mut clock = LamportClock::default();
        clock.merge(100).expect("plausible");
        assert_eq!(
            clock.merge(u64::MAX),
            Err(ImplausibleClock {
                seen: u64::MAX,
                own: 101
            })
        );
        assert_eq!(clock.now(), 101, "a refused value changes nothing");
        // The edge: exactly MAX_CLOCK_LEAD ahead is accepted, one more is not.
        let edge = 101 + MAX_CLOCK_LEAD;
        assert!(clock.check(edge + 1).is_err());
        assert_eq!(clock.merge(edge), Ok(edge + 1));
    }

    #[test]
    fn arithmetic_saturates_at_the_top() {
        let mut clock = LamportClock(u64::MAX - 1);
        assert_eq!(clock.tick(), u64::MAX);
        assert_eq!(clock.tick(), u64::MAX);
        assert_eq!(clock.merge(u64::MAX), Ok(u64::MAX));
    }
}
