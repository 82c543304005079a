//! A hostile peer inside the simulated cluster (issue "Trust", point 1): it
//! taps every datagram and message, and sends what an attacker in its place
//! could send.
//!
//! - An **outsider** has no cluster key. Keyed mode refuses everything it could
//!   make up: datagrams fail the AEAD, streams fail the handshake (both checked
//!   with real processes in `tests/keyed.rs`). What gets through is a sealed
//!   datagram it captured, replayed verbatim: to its receiver or anyone else,
//!   from any source address, at once or long after, once or several times.
//! - An **insider** holds the key: an honest process whose node takes part as
//!   usual, while the same process also sends lies under its own name (a
//!   stream's sender is tied to the handshake, so it cannot speak for others):
//!   captured messages of any kind, re-addressed, with extreme and random
//!   numbers (clocks, timestamps, epochs, ballots, fences, request ids), old
//!   and future epochs and phantom members; and captured datagrams replayed or
//!   altered at will, since it can seal anything.

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::Bytes;
use rand::RngExt;
use rand::rngs::SmallRng;

use crate::protocol::active_set::ActiveSet;
use crate::protocol::clock::MAX_CLOCK_LEAD;
use crate::protocol::ids::ProcessId;
use crate::protocol::message::{Body, Envelope, LockRequest};
use crate::protocol::paxos::Ballot;
use crate::protocol::ricart_agrawala::Grant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hostility {
    Outsider,
    Insider,
}

/// How many captures of each kind it keeps: the first ones (to replay long
/// after) and the latest ones.
const KEPT: usize = 128;

#[derive(Clone, Debug)]
struct CapturedDatagram {
    from: SocketAddr,
    to: SocketAddr,
    data: Bytes,
}

/// What the hostile peer sends in one attack.
#[derive(Clone, Debug)]
pub enum Attack {
    Datagram {
        from: SocketAddr,
        to: SocketAddr,
        data: Bytes,
    },
    Message(Envelope),
}

/// Oldest and latest captures of one kind.
#[derive(Clone, Debug)]
struct Captures<T> {
    first: Vec<T>,
    latest: VecDeque<T>,
}

impl<T: Clone> Captures<T> {
    fn new() -> Self {
        Self {
            first: Vec::new(),
            latest: VecDeque::new(),
        }
    }

    fn keep(&mut self, item: T) {
        if self.first.len() < KEPT {
            self.first.push(item);
            return;
        }
        if self.latest.len() == KEPT {
            self.latest.pop_front();
        }
        self.latest.push_back(item);
    }

    fn pick(&self, rng: &mut SmallRng) -> Option<T> {
        let from_first = self.latest.is_empty() || rng.random_bool(0.3);
        let len = if from_first {
            self.first.len()
        } else {
            self.latest.len()
        };
        if len == 0 {
            return None;
        }
        let i = rng.random_range(0..len);
        if from_first {
            self.first.get(i).cloned()
        } else {
            self.latest.get(i).cloned()
        }
    }
}

pub struct Hostile {
    pub kind: Hostility,
    /// The insider's own address (the outsider has none of the cluster's).
    pub addr: SocketAddr,
    datagrams: Captures<CapturedDatagram>,
    messages: Captures<Envelope>,
    pub sent: u64,
}

impl Hostile {
    pub fn new(kind: Hostility, addr: SocketAddr) -> Self {
        Self {
            kind,
            addr,
            datagrams: Captures::new(),
            messages: Captures::new(),
            sent: 0,
        }
    }

    pub fn tap_datagram(&mut self, from: SocketAddr, to: SocketAddr, data: &Bytes) {
        self.datagrams.keep(CapturedDatagram {
            from,
            to,
            data: data.clone(),
        });
    }

    pub fn tap_message(&mut self, envelope: &Envelope) {
        if self.kind == Hostility::Insider {
            self.messages.keep(envelope.clone());
        }
    }

    /// One attack on the running processes `targets`; `me` is the insider's
    /// running process, if any.
    pub fn attack(
        &mut self,
        rng: &mut SmallRng,
        targets: &[ProcessId],
        me: Option<ProcessId>,
    ) -> Vec<Attack> {
        let mut attacks = Vec::new();
        if targets.is_empty() {
            return attacks;
        }
        let target = |rng: &mut SmallRng| targets[rng.random_range(0..targets.len())];
        if let Some(captured) = self.datagrams.pick(rng) {
            let to = if rng.random_bool(0.5) {
                captured.to
            } else {
                target(rng).addr
            };
            let from = if rng.random_bool(0.8) {
                captured.from
            } else {
                self.addr
            };
            let data = match self.kind {
                Hostility::Insider if rng.random_bool(0.5) => flip_bits(rng, &captured.data),
                _ => captured.data,
            };
            // Twice or more is how a replay could pass for direct contact.
            for _ in 0..rng.random_range(1..=3) {
                attacks.push(Attack::Datagram {
                    from,
                    to,
                    data: data.clone(),
                });
            }
        }
        if let (Hostility::Insider, Some(me)) = (self.kind, me)
            && let Some(captured) = self.messages.pick(rng)
        {
            let to = target(rng);
            if to != me {
                attacks.push(Attack::Message(Envelope {
                    from: me,
                    to,
                    clock: extreme(rng, captured.clock),
                    body: lie(rng, captured.body, me),
                }));
            }
        }
        self.sent += attacks.len() as u64;
        attacks
    }
}

fn flip_bits(rng: &mut SmallRng, data: &Bytes) -> Bytes {
    let mut altered = data.to_vec();
    if altered.is_empty() {
        return data.clone();
    }
    for _ in 0..rng.random_range(1..=8) {
        let bit = rng.random_range(0..altered.len() * 8);
        altered[bit / 8] ^= 1 << (bit % 8);
    }
    Bytes::from(altered)
}

/// A number as a liar would send it: unchanged, nudged, far ahead (just within
/// the clock's plausible lead, or beyond it), at either end of its range, or
/// random.
fn extreme(rng: &mut SmallRng, honest: u64) -> u64 {
    match rng.random_range(0..10) {
        0 => honest,
        1 => 0,
        2 => honest.saturating_sub(rng.random_range(1..=3)),
        3 => honest.saturating_add(rng.random_range(1..=3)),
        4 => honest.saturating_add(1 << 16),
        5 => honest.saturating_add(MAX_CLOCK_LEAD),
        6 => honest.saturating_add(MAX_CLOCK_LEAD + 1),
        7 => u64::MAX,
        8 => 1 << 40,
        _ => rng.random(),
    }
}

fn extreme_u32(rng: &mut SmallRng, honest: u32) -> u32 {
    let wide = extreme(rng, u64::from(honest));
    u32::try_from(wide).unwrap_or(if rng.random_bool(0.5) {
        u32::MAX
    } else {
        1 << 30
    })
}

/// A process that never ran: an address of the cluster's range, or another.
fn phantom(rng: &mut SmallRng) -> ProcessId {
    let port = 7000 + rng.random_range(0..12u16);
    ProcessId::new(
        SocketAddr::from(([127, 0, 0, 1], port)),
        rng.random_range(1..=u64::MAX),
    )
}

fn lie_members(rng: &mut SmallRng, members: Vec<ProcessId>, me: ProcessId) -> Vec<ProcessId> {
    let mut members = members;
    match rng.random_range(0..5) {
        0 => members.push(phantom(rng)),
        1 => members = vec![me],
        2 => members = vec![phantom(rng)],
        3 => members.clear(),
        _ => {}
    }
    members
}

fn lie_set(rng: &mut SmallRng, set: ActiveSet, me: ProcessId) -> ActiveSet {
    ActiveSet {
        cluster: if rng.random_bool(0.2) {
            phantom(rng)
        } else {
            set.cluster
        },
        epoch: extreme(rng, set.epoch),
        max_active: if rng.random_bool(0.2) {
            rng.random_range(0..=70)
        } else {
            set.max_active
        },
        members: lie_members(rng, set.members, me),
    }
}

fn lie_ballot(rng: &mut SmallRng, ballot: Ballot, me: ProcessId) -> Ballot {
    Ballot {
        round: extreme_u32(rng, ballot.round),
        // Its own name or a phantom's: a ballot of an honest proposer is
        // another process's to give.
        proposer: if rng.random_bool(0.7) {
            me
        } else {
            phantom(rng)
        },
    }
}

/// `body` with its numbers, sets and ballots as a liar would send them.
fn lie(rng: &mut SmallRng, body: Body, me: ProcessId) -> Body {
    match body {
        Body::Request(r) => Body::Request(LockRequest {
            request_id: extreme(rng, r.request_id),
            attempt: extreme_u32(rng, r.attempt),
            timestamp: extreme(rng, r.timestamp),
            set: lie_set(rng, r.set, me),
            ..r
        }),
        Body::Busy {
            lock,
            request_id,
            attempt,
        } => Body::Busy {
            lock,
            request_id: extreme(rng, request_id),
            attempt: extreme_u32(rng, attempt),
        },
        Body::Reply { lock, grant } => Body::Reply {
            lock,
            grant: Grant {
                request_id: extreme(rng, grant.request_id),
                attempt: extreme_u32(rng, grant.attempt),
                epoch: extreme(rng, grant.epoch),
                fence_seq: extreme(rng, grant.fence_seq),
                held: grant.held,
            },
        },
        Body::NewerSet {
            lock,
            request_id,
            set,
        } => Body::NewerSet {
            lock,
            request_id: extreme(rng, request_id),
            set: lie_set(rng, set, me),
        },
        Body::Prepare { current, ballot } => Body::Prepare {
            current: lie_set(rng, current, me),
            ballot: lie_ballot(rng, ballot, me),
        },
        Body::Promise {
            epoch,
            ballot,
            accepted,
        } => Body::Promise {
            epoch: extreme(rng, epoch),
            ballot: lie_ballot(rng, ballot, me),
            accepted: accepted.map(|(b, m)| (lie_ballot(rng, b, me), lie_members(rng, m, me))),
        },
        Body::Accept {
            current,
            ballot,
            members,
            carried,
        } => Body::Accept {
            current: lie_set(rng, current, me),
            ballot: lie_ballot(rng, ballot, me),
            members: lie_members(rng, members, me),
            carried: rng.random_bool(0.5) || carried,
        },
        Body::Accepted { epoch, ballot } => Body::Accepted {
            epoch: extreme(rng, epoch),
            ballot: lie_ballot(rng, ballot, me),
        },
        Body::Nack { epoch, promised } => Body::Nack {
            epoch: extreme(rng, epoch),
            promised: lie_ballot(rng, promised, me),
        },
        Body::Decided { set } => Body::Decided {
            set: lie_set(rng, set, me),
        },
        Body::Recovering { last, epoch } => Body::Recovering {
            last: lie_set(rng, last, me),
            epoch: extreme(rng, epoch),
        },
        Body::WhoHolds { query } => Body::WhoHolds {
            query: extreme(rng, query),
        },
        Body::ProxyAcquire {
            lock,
            ticket,
            try_only,
        } => Body::ProxyAcquire {
            lock,
            ticket: extreme(rng, ticket),
            try_only,
        },
        Body::ProxyRelease { lock, ticket } => Body::ProxyRelease {
            lock,
            ticket: extreme(rng, ticket),
        },
        Body::ProxyNews { lock, ticket, news } => Body::ProxyNews {
            lock,
            ticket: extreme(rng, ticket),
            news,
        },
        other @ (Body::Leaving | Body::WhichSet | Body::Holding { .. }) => other,
    }
}
