//! Messages between processes, as the protocol sees them (the wire format is
//! `proto/ra/v1/ra.proto`; `crate::wire` converts and validates).

use std::time::Duration;

use super::active_set::ActiveSet;
use super::ids::ProcessId;
use super::lock::{Fence, LockName};
use super::paxos::Ballot;
use super::ricart_agrawala::Grant;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub from: ProcessId,
    pub to: ProcessId,
    /// The sender's Lamport clock when it sent the message.
    pub clock: u64,
    pub body: Body,
}

/// A member asks another for a lock: one struct, so the places that take a
/// request apart (answering, holding it over a merge, the wire) agree on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRequest {
    pub lock: LockName,
    pub request_id: u64,
    /// Which sending of this request (asked again: a higher attempt).
    pub attempt: u32,
    pub timestamp: u64,
    pub set: ActiveSet,
    /// A try: answer Busy rather than hold it back.
    pub try_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Request(LockRequest),
    /// The answer to a try the replier would have held back: the lock is not
    /// free now.
    Busy {
        lock: LockName,
        request_id: u64,
        attempt: u32,
    },
    /// A grant, as the requester counts it.
    Reply {
        lock: LockName,
        grant: Grant,
    },
    /// The replier knows a newer active set than the request named: ask again
    /// under it (or wait for a seat, if it has none for the requester).
    NewerSet {
        lock: LockName,
        request_id: u64,
        set: ActiveSet,
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
        /// The value is an earlier vote Paxos must carry through, not the
        /// proposer's own choice.
        carried: bool,
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
        set: ActiveSet,
    },
    Leaving,
    /// The sender restarted from its data directory and is in no cluster yet:
    /// the last set it installed and the highest epoch it knew. A member of a
    /// running cluster answers with `Decided`; a node that is recovering too
    /// counts it towards starting the cluster again (`node::recovery`).
    Recovering {
        last: ActiveSet,
        epoch: u64,
    },
    /// Which set do you hold? Sent by a node that knows no set yet when
    /// gossip named one, and by a spectator checking its set every 5 s: a
    /// member answers with `Decided`.
    WhichSet,
    /// Which locks do your clients hold? (for `ra status`)
    WhoHolds {
        query: u64,
    },
    Holding {
        query: u64,
        locks: Vec<HeldLock>,
    },
    /// A spectator asks a seated member to take a lock for one of the
    /// spectator's clients (its `ticket`), and to hold it until released.
    ProxyAcquire {
        lock: LockName,
        ticket: u64,
        try_only: bool,
    },
    /// The spectator's client is done with its ticket (or gave up waiting).
    ProxyRelease {
        lock: LockName,
        ticket: u64,
    },
    /// What became of a spectator's ticket at the member serving it.
    ProxyNews {
        lock: LockName,
        ticket: u64,
        news: ProxyNews,
    },
}

/// A member's news of a ticket it serves for a spectator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyNews {
    /// The member entered the critical section for the ticket.
    Granted { fence: Fence },
    /// Still held for the ticket (a heartbeat: the spectator gives up
    /// counting on the lock when these stop).
    Held,
    /// The member lost the lock it held for the ticket.
    Lost,
    /// A try, and the lock was not free.
    NotFree,
    /// The member cannot serve it (it has no seat, or is leaving): ask
    /// another member.
    AskElsewhere,
    /// The member serves as many tickets of this spectator as it will.
    TooMany,
}

/// A lock a node's client holds, as `ra status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLock {
    pub lock: LockName,
    pub fence: Fence,
    pub held: Duration,
}

impl Body {
    /// Short name, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Request(_) => "request",
            Body::Reply { .. } => "reply",
            Body::Busy { .. } => "busy",
            Body::NewerSet { .. } => "newer_set",
            Body::Prepare { .. } => "prepare",
            Body::Promise { .. } => "promise",
            Body::Accept { .. } => "accept",
            Body::Accepted { .. } => "accepted",
            Body::Nack { .. } => "nack",
            Body::Decided { .. } => "decided",
            Body::Leaving => "leaving",
            Body::Recovering { .. } => "recovering",
            Body::WhichSet => "which_set",
            Body::WhoHolds { .. } => "who_holds",
            Body::Holding { .. } => "holding",
            Body::ProxyAcquire { .. } => "proxy_acquire",
            Body::ProxyRelease { .. } => "proxy_release",
            Body::ProxyNews { .. } => "proxy_news",
        }
    }

    /// Messages of the mutual exclusion itself (the ones Ricart and Agrawala count).
    pub fn is_mutex_traffic(&self) -> bool {
        matches!(
            self,
            Body::Request(_) | Body::Reply { .. } | Body::Busy { .. }
        )
    }
}
