//! SWIM timings. The defaults detect a crashed peer in under two seconds on a LAN
//! and ride out a one-second stall; `config/ra.toml` documents each of them.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

/// Most indirect probes per probe cycle (SWIM uses a handful).
pub const MAX_INDIRECT_PROBES: usize = 64;
/// Largest SWIM payload: a sealed one still fits a UDP datagram.
pub const MAX_PACKET_SIZE: usize = 65_000;
/// Longest a down member is remembered: a day, like every other duration.
pub const MAX_REMOVE_DOWN_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Debug, PartialEq)]
pub struct SwimSettings {
    pub probe_period: Duration,
    pub probe_rtt: Duration,
    pub num_indirect_probes: usize,
    pub suspect_to_down_after: Duration,
    pub max_transmissions: u8,
    pub gossip_every: Duration,
    pub gossip_fanout: usize,
    pub announce_every: Duration,
    pub announce_to_down_every: Duration,
    pub remove_down_after: Duration,
    pub max_packet_size: usize,
}

impl Default for SwimSettings {
    fn default() -> Self {
        // A stopped node is declared no sooner than a probe period and a
        // suspicion after it stopped (1.5 s), which a one-second stall
        // outlasts; probing often shortens the wait for the first probe.
        Self {
            probe_period: Duration::from_millis(250),
            probe_rtt: Duration::from_millis(150),
            num_indirect_probes: 3,
            suspect_to_down_after: Duration::from_millis(1250),
            max_transmissions: 6,
            gossip_every: Duration::from_millis(200),
            gossip_fanout: 3,
            announce_every: Duration::from_secs(5),
            announce_to_down_every: Duration::from_secs(1),
            remove_down_after: Duration::from_secs(24 * 3600),
            max_packet_size: 1400,
        }
    }
}

impl SwimSettings {
    /// Checks the constraints foca relies on; the message says which setting is off.
    pub fn validate(&self) -> Result<(), String> {
        if self.probe_period.is_zero() || self.probe_rtt.is_zero() {
            return Err("swim.probe_period_ms and swim.probe_rtt_ms must be positive".into());
        }
        if self.probe_rtt >= self.probe_period {
            return Err("swim.probe_rtt_ms must be smaller than swim.probe_period_ms".into());
        }
        if self.suspect_to_down_after.is_zero() {
            return Err("swim.suspect_to_down_after_ms must be positive".into());
        }
        if self.max_transmissions == 0 || self.num_indirect_probes == 0 || self.gossip_fanout == 0 {
            return Err("swim.max_transmissions, swim.indirect_probes and swim.gossip_fanout must be at least 1".into());
        }
        // foca reserves room for this many probes when it starts.
        if self.num_indirect_probes > MAX_INDIRECT_PROBES {
            return Err(format!(
                "swim.indirect_probes must be at most {MAX_INDIRECT_PROBES}, not {}",
                self.num_indirect_probes
            ));
        }
        for (name, period) in [
            ("swim.gossip_every_ms", self.gossip_every),
            ("swim.announce_every_ms", self.announce_every),
            (
                "swim.announce_to_down_every_ms",
                self.announce_to_down_every,
            ),
        ] {
            if period.is_zero() {
                return Err(format!("{name} must be positive"));
            }
        }
        // foca allocates a buffer of this size when it starts, and so does
        // the shell to receive: a datagram holds at most 65,507 bytes, and the
        // seal adds 45 of its own.
        if !(512..=MAX_PACKET_SIZE).contains(&self.max_packet_size) {
            return Err(format!(
                "swim.max_packet_size must be from 512 to {MAX_PACKET_SIZE} bytes, not {}",
                self.max_packet_size
            ));
        }
        // A timer this far out is an Instant overflow in the shell.
        if self.remove_down_after > MAX_REMOVE_DOWN_AFTER {
            return Err(format!(
                "swim.remove_down_after_s must be at most {} (a day), not {}",
                MAX_REMOVE_DOWN_AFTER.as_secs(),
                self.remove_down_after.as_secs()
            ));
        }
        Ok(())
    }

    /// How many times each update is passed on in a cluster of `nodes`: the
    /// configured number, or more where that number would leave some node
    /// without the news more than once in a thousand updates.
    ///
    /// Every node that learns an update passes it on that many times, to
    /// members picked at random, so `nodes × T` copies fall on each node's
    /// `nodes − 1` peers, and one node misses them all with a chance of about
    /// `e^(−T·nodes/(nodes−1))`. Over all nodes that stays under 1/1000 when
    /// `T ≥ (nodes−1)/nodes × ln(1000 × nodes)`: 6 for 3 nodes (the shipped
    /// value), 9 for 10, 11 for 50. At 6, one node in 50 missed a leave notice
    /// now and then, and kept the member until its own probes got round to it.
    pub fn transmissions_for(&self, nodes: usize) -> u8 {
        let n = nodes.max(2) as f64;
        let needed = ((n - 1.0) / n * (1000.0 * n).ln()).ceil();
        // The float is finite and positive: at most ln(1000 × usize::MAX) < 50.
        let needed = needed.clamp(1.0, f64::from(u8::MAX)) as u8;
        needed.max(self.max_transmissions)
    }

    /// foca's settings for a cluster of `nodes` (see [`Self::transmissions_for`]).
    pub fn to_foca(&self, nodes: usize) -> foca::Config {
        let nonzero = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        foca::Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: nonzero(self.num_indirect_probes),
            max_transmissions: NonZeroU8::new(self.transmissions_for(nodes))
                .unwrap_or(NonZeroU8::MIN),
            suspect_to_down_after: self.suspect_to_down_after,
            remove_down_after: Some(self.remove_down_after),
            max_packet_size: nonzero(self.max_packet_size),
            // All three are needed for a partition to heal by itself.
            notify_down_members: true,
            periodic_announce: Some(foca::PeriodicParams {
                frequency: self.announce_every,
                num_members: NonZeroUsize::MIN,
            }),
            periodic_announce_to_down_members: Some(foca::PeriodicParams {
                frequency: self.announce_to_down_every,
                // All of them, in a small cluster: a restarted founder (which has no
                // seeds) must hear from its old cluster before it founds a new one.
                num_members: nonzero(16),
            }),
            periodic_gossip: Some(foca::PeriodicParams {
                frequency: self.gossip_every,
                num_members: nonzero(self.gossip_fanout),
            }),
        }
    }
}
