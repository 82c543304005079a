//! Messages between processes, as the protocol sees them (the wire format is
//! `proto/ra/v1/ra.proto`; `crate::wire` converts and validates).

use super::active_set::ActiveSet;
use super::ids::ProcessId;
use super::reconfig::Ballot;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub from: ProcessId,
    pub to: ProcessId,
    /// The sender's Lamport clock when it sent the message.
    pub clock: u64,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Request {
        request_id: u64,
        timestamp: u64,
        view: ActiveSet,
    },
    Reply {
        request_id: u64,
        epoch: u64,
        fence_seq: u64,
        deferred: bool,
    },
    NewerView {
        request_id: u64,
        view: ActiveSet,
    },
    Prepare {
        current: ActiveSet,
        ballot: Ballot,
    },
    Promise {
        epoch: u64,
        ballot: Ballot,
        accepted: Option<(Ballot, Vec<ProcessId>)>,
    },
    Accept {
        current: ActiveSet,
        ballot: Ballot,
        members: Vec<ProcessId>,
    },
    Accepted {
        epoch: u64,
        ballot: Ballot,
    },
    Nack {
        epoch: u64,
        promised: Ballot,
    },
    Decided {
        view: ActiveSet,
    },
    Leaving,
}

impl Body {
    /// Short name, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Request { .. } => "request",
            Body::Reply { .. } => "reply",
            Body::NewerView { .. } => "newer_view",
            Body::Prepare { .. } => "prepare",
            Body::Promise { .. } => "promise",
            Body::Accept { .. } => "accept",
            Body::Accepted { .. } => "accepted",
            Body::Nack { .. } => "nack",
            Body::Decided { .. } => "decided",
            Body::Leaving => "leaving",
        }
    }

    /// Messages of the mutual exclusion itself (the ones Ricart and Agrawala count).
    pub fn is_mutex_traffic(&self) -> bool {
        matches!(self, Body::Request { .. } | Body::Reply { .. })
    }
}
