//! What a node reports: every membership change and every message that leads a
//! node into the critical section. The node emits these as values; the shell
//! logs them (`crate::runtime::log`), the simulator checks them.

use std::net::SocketAddr;
use std::time::Duration;

use crate::protocol::ids::ProcessId;
use crate::protocol::mutex::{Decision, Fence, StaleReason};

/// How a node learned of an active set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewSource {
    Founded,
    Decided,
    Message,
    Gossip,
}

impl ViewSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ViewSource::Founded => "founded",
            ViewSource::Decided => "decided",
            ViewSource::Message => "message",
            ViewSource::Gossip => "gossip",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Started {
        me: ProcessId,
        seeds: Vec<SocketAddr>,
        found_in: Option<Duration>,
    },
    StillAlone {
        seeds: Vec<SocketAddr>,
        waited: Duration,
    },
    Connected,
    Alone,
    MemberJoined {
        member: ProcessId,
    },
    MemberLeft {
        member: ProcessId,
    },
    MemberFailed {
        member: ProcessId,
    },
    MemberRestarted {
        previous: ProcessId,
        member: ProcessId,
    },
    /// Declared failed, then heard from again: the suspicion was false.
    MemberBack {
        member: ProcessId,
    },
    /// The same process under a renewed SWIM identity (a refuted suspicion).
    MemberRenamed {
        member: ProcessId,
        bump: u16,
    },
    /// This node was declared down by the cluster and renewed its identity.
    Rejoined {
        bump: u16,
    },
    PeerLeaving {
        member: ProcessId,
    },
    Founded {
        cluster: ProcessId,
    },
    ViewInstalled {
        epoch: u64,
        members: Vec<ProcessId>,
        added: Vec<ProcessId>,
        removed: Vec<ProcessId>,
        source: ViewSource,
        seated: bool,
    },
    ClusterMerged {
        abandoned: ProcessId,
        joined: ProcessId,
    },
    ProposalStarted {
        epoch: u64,
        round: u32,
        members: Vec<ProcessId>,
    },
    ProposalAbandoned {
        epoch: u64,
        round: u32,
        reason: &'static str,
    },
    RequestQueued {
        queued: usize,
    },
    WaitingForSeat {
        position: usize,
        spectators: usize,
    },
    RequestIssued {
        request_id: u64,
        timestamp: u64,
        epoch: u64,
        awaiting: Vec<ProcessId>,
    },
    RequestSent {
        to: ProcessId,
        request_id: u64,
        timestamp: u64,
        epoch: u64,
    },
    RequestReceived {
        from: ProcessId,
        request_id: u64,
        timestamp: u64,
        epoch: u64,
        /// The timestamp of this node's own pending request, if it has one.
        own_timestamp: Option<u64>,
        verdict: Decision,
    },
    ReplySent {
        to: ProcessId,
        request_id: u64,
        epoch: u64,
        deferred: bool,
    },
    ReplyReceived {
        from: ProcessId,
        request_id: u64,
        epoch: u64,
        remaining: usize,
    },
    ReplyIgnored {
        from: ProcessId,
        request_id: u64,
        epoch: u64,
        reason: StaleReason,
    },
    NewerViewSent {
        to: ProcessId,
        request_id: u64,
        epoch: u64,
    },
    Reissued {
        request_id: u64,
        epoch: u64,
        awaiting: Vec<ProcessId>,
    },
    Withdrawn {
        request_id: u64,
        reason: &'static str,
    },
    Enter {
        request_id: u64,
        timestamp: u64,
        fence: Fence,
        lamport: u64,
        waited: Duration,
    },
    /// The critical section ended this much later than planned: the process was
    /// stopped inside it, and others may have entered meanwhile.
    ExitedLate {
        fence: Fence,
        late_by: Duration,
    },
    Exit {
        request_id: u64,
        fence: Fence,
        lamport: u64,
        released: Vec<ProcessId>,
    },
    Leaving {
        dropped_requests: usize,
    },
    LeaveTimedOut,
    Left,
    Dropped {
        what: &'static str,
        from: String,
        reason: String,
    },
}
