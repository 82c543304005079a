//! The wire format (`proto/ra/v1/ra.proto`) and its conversion to the protocol's
//! own types. Everything that arrives is validated here: a malformed or hostile
//! message becomes an error the shell logs and drops, never a panic.
//!
//! Long because of its tests (from the `tests` module on), which feed each
//! conversion hostile values; the conversions are about 460 lines.

use std::net::SocketAddr;
use std::time::Duration;

use prost::Message;

use crate::protocol::active_set::ActiveSet;
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::{Fence, LockName, MAX_FENCE_EPOCH, MAX_FENCE_SEQ};
use crate::protocol::message::{Body, Envelope, HeldLock, LockRequest, ProxyNews};
use crate::protocol::paxos::{Ballot, MAX_ROUND};
use crate::protocol::ricart_agrawala::Grant;

pub mod pb {
    tonic::include_proto!("ra.v1");
}

/// The codec of every `ra.v1` service: prost's, with buffers sized for our
/// messages. tonic's default gives each stream an 8 kB buffer each way, kept
/// for the stream's life; a node keeps a stream to and from each member it
/// watches, and a message is a few hundred bytes (a buffer grows when one is
/// bigger, such as a batch).
pub mod codec {
    use tonic::codec::{BufferSettings, Codec};
    use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

    /// Where a stream's buffers start.
    const BUFFER_BYTES: usize = 1024;
    /// tonic's default: how much a stream encodes before it lets others run.
    const YIELD_BYTES: usize = 32 * 1024;

    #[derive(Debug, Clone, Default)]
    pub struct SmallBuffers<T, U>(std::marker::PhantomData<(T, U)>);

    impl<T, U> Codec for SmallBuffers<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER_BYTES, YIELD_BYTES))
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER_BYTES, YIELD_BYTES))
        }
    }
}

/// The benchmark's floor service (`proto/ra/bench/v1/floor.proto`).
pub mod floor_pb {
    tonic::include_proto!("ra.bench.v1");
}

/// The encoded descriptors of `proto/`, for the API's server reflection.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ra_descriptors.bin"));

/// More members than any sane active set: a message claiming more is hostile.
pub const MAX_MEMBERS: usize = 64;
/// Locks one node lists as held, at most (clients of one node hold few).
pub const MAX_HELD_LISTED: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

fn missing(field: &str) -> WireError {
    WireError(format!("missing field `{field}`"))
}

pub fn process_to(p: &ProcessId) -> pb::Process {
    pb::Process {
        addr: p.addr.to_string(),
        incarnation: p.incarnation,
    }
}

pub fn process_from(p: Option<pb::Process>, field: &str) -> Result<ProcessId, WireError> {
    let p = p.ok_or_else(|| missing(field))?;
    let addr: SocketAddr = p.addr.parse().map_err(|_| {
        WireError(format!(
            "`{field}.addr` is not an address: {:?}",
            truncate(&p.addr)
        ))
    })?;
    Ok(ProcessId::new(addr, p.incarnation))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn members_to(members: &[ProcessId]) -> Vec<pb::Process> {
    members.iter().map(process_to).collect()
}

fn members_from(members: Vec<pb::Process>, field: &str) -> Result<Vec<ProcessId>, WireError> {
    if members.len() > MAX_MEMBERS {
        return Err(WireError(format!(
            "`{field}` lists {} members",
            members.len()
        )));
    }
    let list = members
        .into_iter()
        .map(|m| process_from(Some(m), field))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, m) in list.iter().enumerate() {
        if list[..i].iter().any(|other| other.addr == m.addr) {
            return Err(WireError(format!("`{field}` lists {} twice", m.addr)));
        }
    }
    Ok(list)
}

fn lock_from(name: String, field: &str) -> Result<LockName, WireError> {
    LockName::new(&name).map_err(|e| WireError(format!("`{field}`: {e}")))
}

fn epoch_from(epoch: u64, field: &str) -> Result<u64, WireError> {
    if epoch > MAX_FENCE_EPOCH {
        return Err(WireError(format!(
            "`{field}` is {epoch}, beyond the largest epoch a fence can carry"
        )));
    }
    Ok(epoch)
}

/// A replier never holds a request back for a day; a claim beyond is a bug or
/// a lie (the requester clamps it further, to how long it has been asking).
const MAX_HELD: Duration = Duration::from_secs(24 * 3600);

fn set_to(v: &ActiveSet) -> pb::ActiveSet {
    pb::ActiveSet {
        cluster: Some(process_to(&v.cluster)),
        epoch: v.epoch,
        max_active: v.max_active,
        members: members_to(&v.members),
    }
}

fn set_from(v: Option<pb::ActiveSet>, field: &str) -> Result<ActiveSet, WireError> {
    let v = v.ok_or_else(|| missing(field))?;
    let members = members_from(v.members, field)?;
    if members.is_empty() {
        return Err(WireError(format!("`{field}` has no members")));
    }
    epoch_from(v.epoch, field)?;
    if v.epoch == 0
        || v.max_active == 0
        || v.max_active as usize > MAX_MEMBERS
        || members.len() > v.max_active as usize
    {
        return Err(WireError(format!(
            "`{field}` is inconsistent: epoch {}, max_active {}, {} members",
            v.epoch,
            v.max_active,
            members.len()
        )));
    }
    Ok(ActiveSet {
        cluster: process_from(v.cluster, field)?,
        epoch: v.epoch,
        max_active: v.max_active,
        members,
    })
}

fn ballot_to(b: &Ballot) -> pb::Ballot {
    pb::Ballot {
        round: b.round,
        proposer: Some(process_to(&b.proposer)),
    }
}

fn ballot_from(b: Option<pb::Ballot>, field: &str) -> Result<Ballot, WireError> {
    let b = b.ok_or_else(|| missing(field))?;
    if b.round > MAX_ROUND {
        return Err(WireError(format!("`{field}.round` is {}", b.round)));
    }
    Ok(Ballot {
        round: b.round,
        proposer: process_from(b.proposer, field)?,
    })
}

pub fn to_proto(envelope: &Envelope) -> pb::Envelope {
    use pb::envelope::Body as B;
    let body = match &envelope.body {
        Body::Request(r) => B::Request(pb::Request {
            lock: r.lock.to_string(),
            request_id: r.request_id,
            attempt: r.attempt,
            timestamp: r.timestamp,
            active_set: Some(set_to(&r.set)),
            try_only: r.try_only,
        }),
        Body::Busy {
            lock,
            request_id,
            attempt,
        } => B::Busy(pb::Busy {
            lock: lock.to_string(),
            request_id: *request_id,
            attempt: *attempt,
        }),
        Body::Reply { lock, grant } => B::Reply(pb::Reply {
            lock: lock.to_string(),
            request_id: grant.request_id,
            attempt: grant.attempt,
            epoch: grant.epoch,
            fence_seq: grant.fence_seq,
            held_us: u64::try_from(grant.held.as_micros()).unwrap_or(u64::MAX),
        }),
        Body::NewerSet {
            lock,
            request_id,
            set,
        } => B::NewerSet(pb::NewerSet {
            lock: lock.to_string(),
            request_id: *request_id,
            active_set: Some(set_to(set)),
        }),
        Body::Prepare { current, ballot } => B::Prepare(pb::Prepare {
            current: Some(set_to(current)),
            ballot: Some(ballot_to(ballot)),
        }),
        Body::Promise {
            epoch,
            ballot,
            accepted,
        } => B::Promise(pb::Promise {
            epoch: *epoch,
            ballot: Some(ballot_to(ballot)),
            accepted_ballot: accepted.as_ref().map(|(b, _)| ballot_to(b)),
            accepted_members: accepted
                .as_ref()
                .map(|(_, m)| members_to(m))
                .unwrap_or_default(),
        }),
        Body::Accept {
            current,
            ballot,
            members,
            carried,
        } => B::Accept(pb::Accept {
            current: Some(set_to(current)),
            ballot: Some(ballot_to(ballot)),
            members: members_to(members),
            carried: *carried,
        }),
        Body::Accepted { epoch, ballot } => B::Accepted(pb::Accepted {
            epoch: *epoch,
            ballot: Some(ballot_to(ballot)),
        }),
        Body::Nack { epoch, promised } => B::Nack(pb::Nack {
            epoch: *epoch,
            promised: Some(ballot_to(promised)),
        }),
        Body::Decided { set } => B::Decided(pb::Decided {
            active_set: Some(set_to(set)),
        }),
        Body::Leaving => B::Leaving(pb::Leaving {}),
        Body::WhichSet => B::WhichSet(pb::WhichSet {}),
        Body::Recovering { last, epoch } => B::Recovering(pb::Recovering {
            last: Some(set_to(last)),
            epoch: *epoch,
        }),
        Body::WhoHolds { query } => B::WhoHolds(pb::WhoHolds { query: *query }),
        Body::Holding { query, locks } => B::Holding(pb::Holding {
            query: *query,
            locks: locks
                .iter()
                .map(|l| pb::HeldLock {
                    lock: l.lock.to_string(),
                    epoch: l.fence.epoch,
                    seq: l.fence.seq,
                    held_us: u64::try_from(l.held.as_micros()).unwrap_or(u64::MAX),
                })
                .collect(),
        }),
        Body::ProxyAcquire {
            lock,
            ticket,
            try_only,
        } => B::ProxyAcquire(pb::ProxyAcquire {
            lock: lock.to_string(),
            ticket: *ticket,
            try_only: *try_only,
        }),
        Body::ProxyRelease { lock, ticket } => B::ProxyRelease(pb::ProxyRelease {
            lock: lock.to_string(),
            ticket: *ticket,
        }),
        Body::ProxyNews { lock, ticket, news } => {
            use pb::proxy_news::Kind;
            let (kind, fence) = match news {
                ProxyNews::Granted { fence } => (Kind::Granted, Some(*fence)),
                ProxyNews::Held => (Kind::Held, None),
                ProxyNews::Lost => (Kind::Lost, None),
                ProxyNews::NotFree => (Kind::NotFree, None),
                ProxyNews::AskElsewhere => (Kind::AskElsewhere, None),
                ProxyNews::TooMany => (Kind::TooMany, None),
            };
            B::ProxyNews(pb::ProxyNews {
                lock: lock.to_string(),
                ticket: *ticket,
                kind: kind as i32,
                epoch: fence.map_or(0, |f| f.epoch),
                seq: fence.map_or(0, |f| f.seq),
            })
        }
    };
    pb::Envelope {
        from: Some(process_to(&envelope.from)),
        to: Some(process_to(&envelope.to)),
        clock: envelope.clock,
        body: Some(body),
    }
}

pub fn from_proto(envelope: pb::Envelope) -> Result<Envelope, WireError> {
    use pb::envelope::Body as B;
    let body = match envelope.body.ok_or_else(|| missing("body"))? {
        B::Request(r) => Body::Request(LockRequest {
            lock: lock_from(r.lock, "request.lock")?,
            request_id: r.request_id,
            attempt: r.attempt,
            timestamp: r.timestamp,
            set: set_from(r.active_set, "request.active_set")?,
            try_only: r.try_only,
        }),
        B::Busy(b) => Body::Busy {
            lock: lock_from(b.lock, "busy.lock")?,
            request_id: b.request_id,
            attempt: b.attempt,
        },
        B::Reply(r) => {
            if r.fence_seq > MAX_FENCE_SEQ {
                return Err(WireError(format!(
                    "`reply.fence_seq` is {}, beyond what a fence can carry",
                    r.fence_seq
                )));
            }
            let held = Duration::from_micros(r.held_us);
            if held > MAX_HELD {
                return Err(WireError(format!("`reply.held_us` is {}", r.held_us)));
            }
            Body::Reply {
                lock: lock_from(r.lock, "reply.lock")?,
                grant: Grant {
                    request_id: r.request_id,
                    attempt: r.attempt,
                    epoch: epoch_from(r.epoch, "reply.epoch")?,
                    fence_seq: r.fence_seq,
                    held,
                },
            }
        }
        B::NewerSet(n) => Body::NewerSet {
            lock: lock_from(n.lock, "newer_set.lock")?,
            request_id: n.request_id,
            set: set_from(n.active_set, "newer_set.active_set")?,
        },
        B::Prepare(p) => Body::Prepare {
            current: set_from(p.current, "prepare.current")?,
            ballot: ballot_from(p.ballot, "prepare.ballot")?,
        },
        B::Promise(p) => Body::Promise {
            epoch: epoch_from(p.epoch, "promise.epoch")?,
            ballot: ballot_from(p.ballot, "promise.ballot")?,
            accepted: match p.accepted_ballot {
                Some(b) => Some((
                    ballot_from(Some(b), "promise.accepted_ballot")?,
                    members_from(p.accepted_members, "promise.accepted_members")?,
                )),
                None => None,
            },
        },
        B::Accept(a) => Body::Accept {
            current: set_from(a.current, "accept.current")?,
            ballot: ballot_from(a.ballot, "accept.ballot")?,
            members: members_from(a.members, "accept.members")?,
            carried: a.carried,
        },
        B::Accepted(a) => Body::Accepted {
            epoch: epoch_from(a.epoch, "accepted.epoch")?,
            ballot: ballot_from(a.ballot, "accepted.ballot")?,
        },
        B::Nack(n) => Body::Nack {
            epoch: epoch_from(n.epoch, "nack.epoch")?,
            promised: ballot_from(n.promised, "nack.promised")?,
        },
        B::Decided(d) => Body::Decided {
            set: set_from(d.active_set, "decided.active_set")?,
        },
        B::Leaving(_) => Body::Leaving,
        B::WhichSet(_) => Body::WhichSet,
        B::Recovering(r) => {
            let last = set_from(r.last, "recovering.last")?;
            let epoch = epoch_from(r.epoch, "recovering.epoch")?;
            if epoch < last.epoch {
                return Err(WireError(format!(
                    "`recovering.epoch` is {epoch}, below its set's {}",
                    last.epoch
                )));
            }
            Body::Recovering { last, epoch }
        }
        B::WhoHolds(w) => Body::WhoHolds { query: w.query },
        B::Holding(h) => {
            if h.locks.len() > MAX_HELD_LISTED {
                return Err(WireError(format!(
                    "`holding.locks` lists {}",
                    h.locks.len()
                )));
            }
            let locks = h
                .locks
                .into_iter()
                .map(|l| {
                    let fence = Fence {
                        epoch: epoch_from(l.epoch, "holding.locks.epoch")?,
                        seq: l.seq,
                    };
                    if fence.token().is_none() {
                        return Err(WireError("`holding.locks` has a fence out of range".into()));
                    }
                    Ok(HeldLock {
                        lock: lock_from(l.lock, "holding.locks.lock")?,
                        fence,
                        held: Duration::from_micros(l.held_us).min(MAX_HELD),
                    })
                })
                .collect::<Result<Vec<_>, WireError>>()?;
            Body::Holding {
                query: h.query,
                locks,
            }
        }
        B::ProxyAcquire(a) => Body::ProxyAcquire {
            lock: lock_from(a.lock, "proxy_acquire.lock")?,
            ticket: a.ticket,
            try_only: a.try_only,
        },
        B::ProxyRelease(r) => Body::ProxyRelease {
            lock: lock_from(r.lock, "proxy_release.lock")?,
            ticket: r.ticket,
        },
        B::ProxyNews(n) => {
            use pb::proxy_news::Kind;
            let news = match Kind::try_from(n.kind) {
                Ok(Kind::Granted) => {
                    let fence = Fence {
                        epoch: epoch_from(n.epoch, "proxy_news.epoch")?,
                        seq: n.seq,
                    };
                    if fence.token().is_none() {
                        return Err(WireError("`proxy_news` has a fence out of range".into()));
                    }
                    ProxyNews::Granted { fence }
                }
                Ok(Kind::Held) => ProxyNews::Held,
                Ok(Kind::Lost) => ProxyNews::Lost,
                Ok(Kind::NotFree) => ProxyNews::NotFree,
                Ok(Kind::AskElsewhere) => ProxyNews::AskElsewhere,
                Ok(Kind::TooMany) => ProxyNews::TooMany,
                Ok(Kind::Unspecified) | Err(_) => {
                    return Err(WireError(format!("`proxy_news.kind` is {}", n.kind)));
                }
            };
            Body::ProxyNews {
                lock: lock_from(n.lock, "proxy_news.lock")?,
                ticket: n.ticket,
                news,
            }
        }
    };
    Ok(Envelope {
        from: process_from(envelope.from, "from")?,
        to: process_from(envelope.to, "to")?,
        clock: envelope.clock,
        body,
    })
}

/// Encode to bytes and back, as a message crossing the network would.
pub fn roundtrip(envelope: &Envelope) -> Result<Envelope, WireError> {
    let bytes = to_proto(envelope).encode_to_vec();
    let decoded = pb::Envelope::decode(bytes.as_slice()).map_err(|e| WireError(e.to_string()))?;
    from_proto(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(port: u16) -> ProcessId {
        ProcessId::new(
            format!("127.0.0.1:{port}").parse().expect("test address"),
            42,
        )
    }

    fn lock() -> LockName {
        LockName::new("jobs").expect("valid")
    }

    fn sample_set() -> ActiveSet {
        ActiveSet {
            cluster: pid(1),
            epoch: 3,
            max_active: 3,
            members: vec![pid(1), pid(2)],
        }
    }

    #[test]
    fn every_body_survives_the_wire() {
        let ballot = Ballot {
            round: 4,
            proposer: pid(2),
        };
        let bodies = vec![
            Body::Request(LockRequest {
                lock: lock(),
                request_id: 7,
                attempt: 2,
                timestamp: 9,
                set: sample_set(),
                try_only: true,
            }),
            Body::Busy {
                lock: lock(),
                request_id: 7,
                attempt: 2,
            },
            Body::Reply {
                lock: lock(),
                grant: Grant {
                    request_id: 7,
                    attempt: 2,
                    epoch: 3,
                    fence_seq: 11,
                    held: Duration::from_micros(1234),
                },
            },
            Body::NewerSet {
                lock: lock(),
                request_id: 7,
                set: sample_set(),
            },
            Body::Prepare {
                current: sample_set(),
                ballot,
            },
            Body::Promise {
                epoch: 4,
                ballot,
                accepted: Some((ballot, vec![pid(2)])),
            },
            Body::Promise {
                epoch: 4,
                ballot,
                accepted: None,
            },
            Body::Accept {
                current: sample_set(),
                ballot,
                members: vec![pid(1)],
                carried: true,
            },
            Body::Accepted { epoch: 4, ballot },
            Body::Nack {
                epoch: 4,
                promised: ballot,
            },
            Body::Decided { set: sample_set() },
            Body::Leaving,
            Body::WhichSet,
            Body::Recovering {
                last: sample_set(),
                epoch: 9,
            },
            Body::WhoHolds { query: 9 },
            Body::Holding {
                query: 9,
                locks: vec![HeldLock {
                    lock: lock(),
                    fence: Fence { epoch: 3, seq: 4 },
                    held: Duration::from_millis(1500),
                }],
            },
            Body::ProxyAcquire {
                lock: lock(),
                ticket: 7,
                try_only: true,
            },
            Body::ProxyRelease {
                lock: lock(),
                ticket: 7,
            },
        ];
        let news = [
            ProxyNews::Granted {
                fence: Fence { epoch: 3, seq: 4 },
            },
            ProxyNews::Held,
            ProxyNews::Lost,
            ProxyNews::NotFree,
            ProxyNews::AskElsewhere,
            ProxyNews::TooMany,
        ];
        let bodies = bodies
            .into_iter()
            .chain(news.into_iter().map(|news| Body::ProxyNews {
                lock: lock(),
                ticket: 7,
                news,
            }));
        for body in bodies {
            let envelope = Envelope {
                from: pid(1),
                to: pid(2),
                clock: 5,
                body,
            };
            assert_eq!(roundtrip(&envelope), Ok(envelope));
        }
    }

    #[test]
    fn hostile_messages_are_refused_with_a_reason() {
        let mut bad_addr = to_proto(&Envelope {
            from: pid(1),
            to: pid(2),
            clock: 1,
            body: Body::Leaving,
        });
        if let Some(from) = bad_addr.from.as_mut() {
            from.addr = "not-an-address".into();
        }
        assert!(from_proto(bad_addr).is_err_and(|e| e.0.contains("from.addr")));

        let mut huge = to_proto(&Envelope {
            from: pid(1),
            to: pid(2),
            clock: 1,
            body: Body::Decided { set: sample_set() },
        });
        if let Some(pb::envelope::Body::Decided(d)) = huge.body.as_mut()
            && let Some(v) = d.active_set.as_mut()
        {
            v.members = (0..1000).map(|i| process_to(&pid(i))).collect();
        }
        assert!(from_proto(huge).is_err_and(|e| e.0.contains("members")));

        let empty = pb::Envelope::default();
        assert!(from_proto(empty).is_err_and(|e| e.0.contains("missing")));

        assert!(pb::Envelope::decode(&[0xff, 0xff, 0xff][..]).is_err());
    }

    /// Every number from the wire is bounded before it can move state.
    #[test]
    fn numbers_beyond_their_bounds_are_refused() {
        let reply = |fence_seq: u64, epoch: u64, held_us: u64, lock: &str| pb::Envelope {
            from: Some(process_to(&pid(1))),
            to: Some(process_to(&pid(2))),
            clock: 1,
            body: Some(pb::envelope::Body::Reply(pb::Reply {
                lock: lock.into(),
                request_id: 1,
                attempt: 0,
                epoch,
                fence_seq,
                held_us,
            })),
        };
        assert!(from_proto(reply(MAX_FENCE_SEQ, MAX_FENCE_EPOCH, 0, "a")).is_ok());
        assert!(
            from_proto(reply(MAX_FENCE_SEQ + 1, 3, 0, "a"))
                .is_err_and(|e| e.0.contains("fence_seq"))
        );
        assert!(
            from_proto(reply(1, MAX_FENCE_EPOCH + 1, 0, "a")).is_err_and(|e| e.0.contains("epoch"))
        );
        assert!(from_proto(reply(1, 3, u64::MAX, "a")).is_err_and(|e| e.0.contains("held_us")));
        assert!(from_proto(reply(1, 3, 0, "")).is_err_and(|e| e.0.contains("lock")));
        assert!(from_proto(reply(1, 3, 0, &"x".repeat(201))).is_err_and(|e| e.0.contains("lock")));

        let mut prepare = to_proto(&Envelope {
            from: pid(1),
            to: pid(2),
            clock: 1,
            body: Body::Prepare {
                current: sample_set(),
                ballot: Ballot {
                    round: 1,
                    proposer: pid(1),
                },
            },
        });
        if let Some(pb::envelope::Body::Prepare(p)) = prepare.body.as_mut()
            && let Some(b) = p.ballot.as_mut()
        {
            b.round = MAX_ROUND + 1;
        }
        assert!(from_proto(prepare).is_err_and(|e| e.0.contains("round")));

        let mut wide = to_proto(&Envelope {
            from: pid(1),
            to: pid(2),
            clock: 1,
            body: Body::Decided { set: sample_set() },
        });
        if let Some(pb::envelope::Body::Decided(d)) = wide.body.as_mut()
            && let Some(v) = d.active_set.as_mut()
        {
            v.max_active = u32::MAX;
        }
        assert!(from_proto(wide).is_err_and(|e| e.0.contains("inconsistent")));
    }
}
