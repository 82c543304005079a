//! The simulated network: UDP datagrams that may be delayed, reordered, lost or
//! duplicated, and gRPC streams that deliver in order per connection but may be
//! delayed arbitrarily or break; plus partitions, symmetric or one-way, and
//! stalls: a path that drops datagrams while TCP holds its segments in the
//! retransmission queue and delivers them, in order, once the path works again
//! (possibly before UDP does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rand::RngExt;
use rand::rngs::SmallRng;

use crate::protocol::ids::ProcessId;
use crate::protocol::message::Envelope;

#[derive(Clone, Debug)]
pub struct NetConfig {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Chance that a datagram is lost.
    pub loss: f64,
    /// Chance that a datagram arrives twice.
    pub duplicate: f64,
    /// Chance that a stream breaks as a message is sent on it, losing what is in flight.
    pub stream_break: f64,
    /// Chance that a gRPC message is held up far longer than usual.
    pub slow_message: f64,
    pub slow_delay: Duration,
    /// How long a sender takes to notice a broken stream.
    pub break_detect: Duration,
    /// Chance that a datagram arrives with a few bits flipped.
    pub corrupt: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_micros(200),
            max_delay: Duration::from_millis(8),
            loss: 0.01,
            duplicate: 0.01,
            stream_break: 0.002,
            slow_message: 0.01,
            slow_delay: Duration::from_millis(400),
            break_detect: Duration::from_millis(200),
            corrupt: 0.0,
        }
    }
}

impl NetConfig {
    pub fn calm() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            stream_break: 0.0,
            slow_message: 0.0,
            ..Self::default()
        }
    }
}

/// One direction of a gRPC connection: from a process to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamKey {
    pub from: ProcessId,
    pub to: SocketAddr,
}

#[derive(Clone, Debug, Default)]
struct Stream {
    /// Bumped when the stream breaks: messages sent on an older generation are lost.
    generation: u64,
    last_delivery: Duration,
    /// Broken and not yet reconnected: what is sent meanwhile waits in the sender's queue.
    down: bool,
    queued: Vec<Envelope>,
}

/// What happens to one message handed to the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Deliver at this time, if the stream is still on this generation then.
    Deliver {
        at: Duration,
        generation: u64,
        /// Send order on the stream, so held messages come out in order.
        seq: u64,
    },
    /// The stream is down: the message waits in the sender's queue.
    Queued,
    /// The stream just broke (the message and everything in flight are lost):
    /// try to reconnect at this time.
    Broken { reconnect_at: Duration },
}

#[derive(Default)]
pub struct Network {
    /// Directed cuts: (from, to) cannot talk; streams on them break.
    cuts: BTreeSet<(SocketAddr, SocketAddr)>,
    /// Directed stalls: datagrams are lost, stream messages wait (in order) for
    /// the path to work again.
    stalls: BTreeSet<(SocketAddr, SocketAddr)>,
    /// Paths whose TCP works again while their datagrams are still lost.
    udp_cuts: BTreeSet<(SocketAddr, SocketAddr)>,
    /// Stream messages waiting on a stalled path, by when they were sent.
    held: BTreeMap<StreamKey, Vec<(u64, Envelope)>>,
    streams: BTreeMap<StreamKey, Stream>,
    next_seq: u64,
}

impl Network {
    pub fn is_cut(&self, from: SocketAddr, to: SocketAddr) -> bool {
        self.cuts.contains(&(from, to))
    }

    /// Nothing gets through this path now, either way it is broken.
    pub fn is_blocked(&self, from: SocketAddr, to: SocketAddr) -> bool {
        self.cuts.contains(&(from, to)) || self.stalls.contains(&(from, to))
    }

    pub fn cut(&mut self, from: SocketAddr, to: SocketAddr) {
        self.cuts.insert((from, to));
    }

    pub fn stall(&mut self, from: SocketAddr, to: SocketAddr) {
        self.stalls.insert((from, to));
    }

    /// Everything works again; returns the stream messages held by stalls, in
    /// the order each stream sent them.
    pub fn heal(&mut self) -> Vec<Envelope> {
        let released = self.heal_streams();
        self.cuts.clear();
        self.udp_cuts.clear();
        released
    }

    /// TCP gets through stalled paths again (datagrams still do not): the held
    /// messages, in order.
    pub fn heal_streams(&mut self) -> Vec<Envelope> {
        self.udp_cuts.extend(std::mem::take(&mut self.stalls));
        let mut released = Vec::new();
        for (_, mut messages) in std::mem::take(&mut self.held) {
            messages.sort_by_key(|(seq, _)| *seq);
            released.extend(messages.into_iter().map(|(_, e)| e));
        }
        released
    }

    pub fn has_cuts(&self) -> bool {
        !self.cuts.is_empty() || !self.stalls.is_empty() || !self.udp_cuts.is_empty()
    }

    pub fn delay(&self, config: &NetConfig, rng: &mut SmallRng) -> Duration {
        let span = config
            .max_delay
            .saturating_sub(config.min_delay)
            .as_micros() as u64;
        config.min_delay + Duration::from_micros(rng.random_range(0..=span))
    }

    /// The arrival times of a datagram sent now (empty: lost).
    pub fn datagram(
        &self,
        config: &NetConfig,
        rng: &mut SmallRng,
        now: Duration,
        from: SocketAddr,
        to: SocketAddr,
    ) -> Vec<Duration> {
        let udp_blocked = self.is_blocked(from, to) || self.udp_cuts.contains(&(from, to));
        if udp_blocked || rng.random_bool(config.loss) {
            return Vec::new();
        }
        let mut arrivals = vec![now + self.delay(config, rng)];
        if rng.random_bool(config.duplicate) {
            arrivals.push(now + self.delay(config, rng));
        }
        arrivals
    }

    /// `data` as it arrives: with `config.corrupt`'s chance, one to eight of
    /// its bits flipped. No random number is drawn when corruption is off, so
    /// schedules without it replay as before.
    pub fn damage(config: &NetConfig, rng: &mut SmallRng, data: &Bytes) -> Bytes {
        if config.corrupt <= 0.0 || data.is_empty() || !rng.random_bool(config.corrupt) {
            return data.clone();
        }
        let mut damaged = data.to_vec();
        for _ in 0..rng.random_range(1..=8) {
            let bit = rng.random_range(0..damaged.len() * 8);
            damaged[bit / 8] ^= 1 << (bit % 8);
        }
        Bytes::from(damaged)
    }

    /// Send on a stream: in order after everything already in flight on it.
    pub fn stream_send(
        &mut self,
        config: &NetConfig,
        rng: &mut SmallRng,
        now: Duration,
        key: StreamKey,
        envelope: &Envelope,
    ) -> Fate {
        if let Some(stream) = self.streams.get_mut(&key)
            && stream.down
        {
            stream.queued.push(envelope.clone());
            return Fate::Queued;
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        if self.stalls.contains(&(key.from.addr, key.to)) {
            self.held
                .entry(key)
                .or_default()
                .push((seq, envelope.clone()));
            return Fate::Queued;
        }
        if self.is_cut(key.from.addr, key.to) || rng.random_bool(config.stream_break) {
            return self.break_stream(config, now, key);
        }
        let mut delay = self.delay(config, rng);
        if rng.random_bool(config.slow_message) {
            delay += config.slow_delay;
        }
        let stream = self.streams.entry(key).or_default();
        let at = (now + delay).max(stream.last_delivery);
        stream.last_delivery = at;
        Fate::Deliver {
            at,
            generation: stream.generation,
            seq,
        }
    }

    /// A message arrives: it is lost if its stream broke meanwhile, and it breaks
    /// the stream now if the path was cut while it travelled.
    pub fn stream_arrival(
        &mut self,
        config: &NetConfig,
        now: Duration,
        key: StreamKey,
        generation: u64,
        seq: u64,
        envelope: &Envelope,
    ) -> Option<Fate> {
        let current = self.streams.get(&key).map_or(0, |s| s.generation);
        if current != generation {
            return None;
        }
        if self.is_cut(key.from.addr, key.to) {
            return Some(self.break_stream(config, now, key));
        }
        if self.stalls.contains(&(key.from.addr, key.to)) {
            self.held
                .entry(key)
                .or_default()
                .push((seq, envelope.clone()));
            return Some(Fate::Queued);
        }
        Some(Fate::Deliver {
            at: now,
            generation,
            seq,
        })
    }

    /// Break the stream: everything in flight on it is lost. Returns `Queued` if
    /// it was already down (a reconnect is already due).
    pub fn break_stream(&mut self, config: &NetConfig, now: Duration, key: StreamKey) -> Fate {
        let stream = self.streams.entry(key).or_default();
        stream.generation += 1;
        stream.last_delivery = now;
        if stream.down {
            return Fate::Queued;
        }
        stream.down = true;
        Fate::Broken {
            reconnect_at: now + config.break_detect,
        }
    }

    /// Try to reconnect a broken stream: `Some(queued messages)` when it is up
    /// again, `None` while the path is still cut.
    pub fn reconnect(&mut self, key: StreamKey) -> Option<Vec<Envelope>> {
        if self.is_blocked(key.from.addr, key.to) {
            return None;
        }
        let stream = self.streams.entry(key).or_default();
        stream.down = false;
        Some(std::mem::take(&mut stream.queued))
    }
}
