//! The wire format (`proto/ra/v1/ra.proto`) and its conversion to the protocol's
//! own types. Everything that arrives is validated here: a malformed or hostile
//! message becomes an error the shell logs and drops, never a panic.

use std::net::SocketAddr;

use prost::Message;

use crate::protocol::active_set::ActiveSet;
use crate::protocol::ids::ProcessId;
use crate::protocol::message::{Body, Envelope};
use crate::protocol::reconfig::Ballot;

pub mod pb {
    tonic::include_proto!("ra.v1");
}

/// More members than any sane active set: a message claiming more is hostile.
pub const MAX_MEMBERS: usize = 64;

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

fn process_to(p: &ProcessId) -> pb::Process {
    pb::Process {
        addr: p.addr.to_string(),
        incarnation: p.incarnation,
    }
}

fn process_from(p: Option<pb::Process>, field: &str) -> Result<ProcessId, WireError> {
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

fn view_to(v: &ActiveSet) -> pb::ActiveSet {
    pb::ActiveSet {
        cluster: Some(process_to(&v.cluster)),
        epoch: v.epoch,
        max_active: v.max_active,
        members: members_to(&v.members),
    }
}

fn view_from(v: Option<pb::ActiveSet>, field: &str) -> Result<ActiveSet, WireError> {
    let v = v.ok_or_else(|| missing(field))?;
    let members = members_from(v.members, field)?;
    if members.is_empty() {
        return Err(WireError(format!("`{field}` has no members")));
    }
    if v.epoch == 0 || v.max_active == 0 || members.len() > v.max_active as usize {
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
    Ok(Ballot {
        round: b.round,
        proposer: process_from(b.proposer, field)?,
    })
}

pub fn to_proto(envelope: &Envelope) -> pb::Envelope {
    use pb::envelope::Body as B;
    let body = match &envelope.body {
        Body::Request {
            request_id,
            timestamp,
            view,
        } => B::Request(pb::Request {
            request_id: *request_id,
            timestamp: *timestamp,
            view: Some(view_to(view)),
        }),
        Body::Reply {
            request_id,
            epoch,
            fence_seq,
            deferred,
        } => B::Reply(pb::Reply {
            request_id: *request_id,
            epoch: *epoch,
            fence_seq: *fence_seq,
            deferred: *deferred,
        }),
        Body::NewerView { request_id, view } => B::NewerView(pb::NewerView {
            request_id: *request_id,
            view: Some(view_to(view)),
        }),
        Body::Prepare { current, ballot } => B::Prepare(pb::Prepare {
            current: Some(view_to(current)),
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
        } => B::Accept(pb::Accept {
            current: Some(view_to(current)),
            ballot: Some(ballot_to(ballot)),
            members: members_to(members),
        }),
        Body::Accepted { epoch, ballot } => B::Accepted(pb::Accepted {
            epoch: *epoch,
            ballot: Some(ballot_to(ballot)),
        }),
        Body::Nack { epoch, promised } => B::Nack(pb::Nack {
            epoch: *epoch,
            promised: Some(ballot_to(promised)),
        }),
        Body::Decided { view } => B::Decided(pb::Decided {
            view: Some(view_to(view)),
        }),
        Body::Leaving => B::Leaving(pb::Leaving {}),
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
        B::Request(r) => Body::Request {
            request_id: r.request_id,
            timestamp: r.timestamp,
            view: view_from(r.view, "request.view")?,
        },
        B::Reply(r) => Body::Reply {
            request_id: r.request_id,
            epoch: r.epoch,
            fence_seq: r.fence_seq,
            deferred: r.deferred,
        },
        B::NewerView(n) => Body::NewerView {
            request_id: n.request_id,
            view: view_from(n.view, "newer_view.view")?,
        },
        B::Prepare(p) => Body::Prepare {
            current: view_from(p.current, "prepare.current")?,
            ballot: ballot_from(p.ballot, "prepare.ballot")?,
        },
        B::Promise(p) => Body::Promise {
            epoch: p.epoch,
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
            current: view_from(a.current, "accept.current")?,
            ballot: ballot_from(a.ballot, "accept.ballot")?,
            members: members_from(a.members, "accept.members")?,
        },
        B::Accepted(a) => Body::Accepted {
            epoch: a.epoch,
            ballot: ballot_from(a.ballot, "accepted.ballot")?,
        },
        B::Nack(n) => Body::Nack {
            epoch: n.epoch,
            promised: ballot_from(n.promised, "nack.promised")?,
        },
        B::Decided(d) => Body::Decided {
            view: view_from(d.view, "decided.view")?,
        },
        B::Leaving(_) => Body::Leaving,
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

    fn view() -> ActiveSet {
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
            Body::Request {
                request_id: 7,
                timestamp: 9,
                view: view(),
            },
            Body::Reply {
                request_id: 7,
                epoch: 3,
                fence_seq: 11,
                deferred: true,
            },
            Body::NewerView {
                request_id: 7,
                view: view(),
            },
            Body::Prepare {
                current: view(),
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
                current: view(),
                ballot,
                members: vec![pid(1)],
            },
            Body::Accepted { epoch: 4, ballot },
            Body::Nack {
                epoch: 4,
                promised: ballot,
            },
            Body::Decided { view: view() },
            Body::Leaving,
        ];
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
            body: Body::Decided { view: view() },
        });
        if let Some(pb::envelope::Body::Decided(d)) = huge.body.as_mut()
            && let Some(v) = d.view.as_mut()
        {
            v.members = (0..1000).map(|i| process_to(&pid(i))).collect();
        }
        assert!(from_proto(huge).is_err_and(|e| e.0.contains("members")));

        let empty = pb::Envelope::default();
        assert!(from_proto(empty).is_err_and(|e| e.0.contains("missing")));

        assert!(pb::Envelope::decode(&[0xff, 0xff, 0xff][..]).is_err());
    }
}
