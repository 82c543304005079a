//! Lamport's logical clock.

/// A Lamport clock: ticks on every local event that others may see, and jumps
/// past every timestamp it receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LamportClock(u64);

impl LamportClock {
    pub fn now(&self) -> u64 {
        self.0
    }

    /// A local event (sending a message, issuing a request): the clock moves on.
    pub fn tick(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }

    /// A message stamped `seen` arrived: the clock moves past it.
    pub fn merge(&mut self, seen: u64) -> u64 {
        self.0 = self.0.max(seen) + 1;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_jumps_past_a_later_timestamp() {
        let mut clock = LamportClock::default();
        clock.tick();
        assert_eq!(clock.merge(10), 11);
    }

    #[test]
    fn merge_still_advances_on_an_earlier_timestamp() {
        let mut clock = LamportClock::default();
        for _ in 0..5 {
            clock.tick();
        }
        assert_eq!(clock.merge(2), 6);
        assert_eq!(clock.now(), 6);
    }

    #[test]
    fn tick_is_strictly_increasing() {
        let mut clock = LamportClock::default();
        let a = clock.tick();
        let b = clock.tick();
        assert!(b > a);
    }
}
