//! What a node reports: every membership change, every message that leads a
//! node into a critical section, and what its shell does. The node emits these
//! as values; the shell logs them (`crate::runtime::log`), the simulator checks
//! them, and `ra trace`, `ra demo` and the tests read them back from JSON logs
//! through the same types, so a renamed field fails to compile rather than
//! silently breaking a reader.
//!
//! Everything here is data: the sentences are built by the log writer.
//!
//! Long because it is a catalogue: one variant per thing a node can report, with
//! its fields documented.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::clock::ImplausibleClock;
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::{Fence, LockName};
use crate::protocol::ricart_agrawala::{Decision, StaleReason};

/// A client's ticket for one lock, unique within one node process.
pub type Ticket = u64;

/// How a node learned of an active set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetSource {
    Founded,
    /// Started again at a new epoch after a whole-cluster restart, from the
    /// members' data directories.
    Refounded,
    Decided,
    Message,
    Gossip,
}

/// Why a proposal for the next active set was given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbandonReason {
    NoQuorumInTime,
    OutvotedByHigherBallot,
    /// A member the value would remove answered again before it was sent.
    MemberBack,
}

/// Proof that a process is gone, from its own host's kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "evidence")]
pub enum GoneEvidence {
    /// A connect to its address was refused: nothing listens there any more.
    ConnectionRefused,
    /// A new process answers at its address.
    Restarted { now: ProcessId },
}

/// Which call into SWIM failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwimStep {
    /// Handling one of its timers.
    Timer,
    /// Taking this node's renewed identity.
    RenewIdentity,
}

/// Why a member was declared failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// SWIM: it stopped answering probes (a crash, a pause, or a cut).
    #[default]
    Unresponsive,
    /// Its host says the process is gone (see [`GoneEvidence`]).
    ProcessGone,
    /// SWIM's gossip says another member declared it down, before this node
    /// suspected it, or while it had heard from it too lately for its own
    /// probes to have run out: the verdict is the other member's (often its
    /// proof that the process is gone, which gossip does not carry).
    Reported,
}

/// When a grant's lease ran out before its requester could use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    /// The reply itself arrived after its lease: it may predate an eviction.
    OnArrival,
    /// It arrived in time, but its lease ran out while another member's reply
    /// was awaited (a long hold ahead of the request).
    WhileWaiting,
}

/// Why a pending request was taken back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawReason {
    TicketCancelled,
    /// A try found the lock taken.
    Busy,
    LostSeat,
    ClusterMerged,
    NodeLeaving,
}

/// Why a ticket ended without its client releasing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossReason {
    /// The active set was decided without this node while it held the lock.
    Evicted,
    /// SWIM declared a quorum of the active set down: this node may be the one
    /// cut off, and the others may go on without it.
    QuorumLost,
    /// The process was stopped (a pause, a frozen VM) for longer than failure
    /// detection while it held the lock.
    Paused,
    /// The node is leaving the cluster.
    NodeLeaving,
    /// A spectator's ticket: the member holding the lock for it lost it.
    ProxyLost,
    /// A spectator's ticket: the member holding the lock for it fell silent
    /// (its heartbeats stopped), so it may have let the lock go.
    ProxySilent,
}

/// Why a ticket never got its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusedReason {
    /// A try, and the lock was held or asked for ahead of it.
    NotFree,
    /// The node is leaving the cluster.
    NodeLeaving,
    /// A spectator's ticket: the member serving it serves as many of this
    /// spectator's tickets as it will.
    TooMany,
}

/// Why a message or datagram was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum DropReason {
    /// Meant for an earlier process at this address.
    AddressedToEarlierProcess { to: ProcessId },
    /// Sent by a process that has since restarted.
    SentByRestartedProcess,
    /// Its Lamport clock or timestamp is implausibly far ahead of ours.
    ClockTooFarAhead { seen: u64, own: u64 },
    /// An epoch implausibly far ahead of ours, or beyond what fences can carry.
    EpochOutOfRange { seen: u64, own: u64 },
    /// A Paxos round implausibly far above the highest this node has seen for
    /// the epoch being decided.
    RoundOutOfRange { seen: u32, own: u32 },
    /// A request from a process that is not a member of our active set, or made
    /// while we have no seat ourselves.
    NotBothMembers { epoch: u64 },
    /// Bytes that do not decode (the detail is the decoder's).
    Malformed { detail: String },
    /// The node is leaving and takes no new tickets.
    NodeLeaving,
    /// A datagram from an address this cluster would never dial.
    ImplausibleAddress { addr: SocketAddr },
    /// A message whose sender does not match the authenticated peer of its stream.
    ForgedSender { peer: ProcessId },
    /// Encryption or authentication failed (wrong or missing cluster key).
    NotAuthenticated { detail: String },
    /// The node's inbox is full: it is overloaded.
    Overloaded,
    /// An ask forwarded by a spectator this node holds gone (declared down,
    /// leaving, or replaced): served, it would hold the lock for good, since no
    /// later verdict would take it back. A spectator alive after all asks again.
    SenderHeldGone,
}

/// What the drop counts are about, for the rate-limited summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DroppedWhat {
    Datagram,
    Message,
    Stream,
    Ticket,
}

/// Where a refused input came from, as far as this node can tell.
///
/// Written in the log as one string, as when this field was text: a process as
/// `ADDR~INCARNATION`, an address as `ADDR`, and `gossip` or `unknown`, so logs
/// written before the type read back the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropSource {
    /// A message's sender, as its envelope names it.
    Process(ProcessId),
    /// The socket address a datagram or stream came from.
    Address(SocketAddr),
    /// SWIM gossip, relayed by some member: the original sender is unknown.
    Gossip,
    /// A stream whose remote address the transport did not give.
    Unknown,
}

impl From<ProcessId> for DropSource {
    fn from(p: ProcessId) -> Self {
        DropSource::Process(p)
    }
}

impl From<SocketAddr> for DropSource {
    fn from(a: SocketAddr) -> Self {
        DropSource::Address(a)
    }
}

impl From<Option<SocketAddr>> for DropSource {
    fn from(a: Option<SocketAddr>) -> Self {
        a.map_or(DropSource::Unknown, DropSource::Address)
    }
}

impl std::fmt::Display for DropSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The full identity: a drop often concerns an earlier process at
            // the same address, which the address alone would hide.
            DropSource::Process(p) => write!(f, "{p:?}"),
            DropSource::Address(a) => write!(f, "{a}"),
            DropSource::Gossip => f.write_str("gossip"),
            DropSource::Unknown => f.write_str("unknown"),
        }
    }
}

impl std::str::FromStr for DropSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gossip" => Ok(DropSource::Gossip),
            "unknown" => Ok(DropSource::Unknown),
            _ => match s.rsplit_once('~') {
                Some((addr, incarnation)) => {
                    let addr = addr
                        .parse()
                        .map_err(|e| format!("a drop's source {s:?}: {e}"))?;
                    let incarnation = incarnation
                        .parse()
                        .map_err(|e| format!("a drop's source {s:?}: {e}"))?;
                    Ok(DropSource::Process(ProcessId::new(addr, incarnation)))
                }
                None => s.parse().map(DropSource::Address).map_err(|_| {
                    format!(
                        "a drop's source {s:?} is none of ADDR~INCARNATION, ADDR, gossip, unknown"
                    )
                }),
            },
        }
    }
}

impl Serialize for DropSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DropSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    // ---- the shell ------------------------------------------------------
    /// The first line: where the node listens and what it trusts.
    Listening {
        /// Written as `me`: the record's own `node` field already holds this
        /// process, and a second `node` key made the line unreadable.
        #[serde(rename = "me")]
        node: ProcessId,
        bind: SocketAddr,
        api: Option<PathBuf>,
        authenticated: bool,
        tls: bool,
        data_dir: Option<PathBuf>,
    },
    /// A hold longer than failure detection: a cut-off holder may overlap.
    HoldOutlastsDetection {
        #[serde(with = "millis")]
        hold: Duration,
        #[serde(with = "millis")]
        detection: Duration,
    },
    /// Many inputs of one kind were refused: counted rather than logged each.
    DropsSummarised {
        what: DroppedWhat,
        count: u64,
        #[serde(with = "millis")]
        over: Duration,
        reasons: Vec<(String, u64)>,
    },
    /// Something the shell wants an operator to know, in its own words (a
    /// library's diagnostic). The node core never emits it: its events are
    /// data, phrased by the log writer.
    Note {
        /// Written as `text`: the record's own `message` field is the sentence,
        /// and a second `message` key made the line unreadable.
        #[serde(rename = "text")]
        message: String,
    },
    /// A peer says it cannot open this node's datagrams (no key, another key).
    RefusedByPeer {
        peer: SocketAddr,
        why: String,
    },
    /// SIGHUP re-read the cluster key file.
    KeysReloaded {
        sealing: String,
        accepting: Vec<String>,
    },
    /// The cluster key file did not read: the keys in use stay.
    KeysNotReloaded {
        error: String,
    },

    // ---- membership -----------------------------------------------------
    Started {
        me: ProcessId,
        seeds: Vec<SocketAddr>,
        #[serde(with = "millis_opt")]
        found_in: Option<Duration>,
    },
    StillAlone {
        seeds: Vec<SocketAddr>,
        #[serde(with = "millis")]
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
        #[serde(default)]
        cause: FailureCause,
    },
    /// This node's own evidence that a process is gone (its stream broke and
    /// a reconnect was refused, or a new process answers).
    ProcessGone {
        member: ProcessId,
        #[serde(flatten)]
        evidence: GoneEvidence,
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
        bump: u32,
    },
    /// This node was declared down by the cluster and renewed its identity.
    Rejoined {
        bump: u32,
    },
    /// This node cannot renew its identity again (no higher one is plausible
    /// by the wall clock): once declared down, only a restart brings it back.
    IdentityRenewalsExhausted,
    /// A call into SWIM (foca) returned an error; foca's state stays usable.
    SwimError {
        during: SwimStep,
        /// foca's error, in its own words.
        error: String,
    },
    PeerLeaving {
        member: ProcessId,
    },
    Founded {
        cluster: ProcessId,
    },
    /// Started from a data directory: the cluster and set it names, until this
    /// node is in a cluster again (it never founds one alone).
    Restored {
        cluster: ProcessId,
        epoch: u64,
        members: Vec<ProcessId>,
    },
    /// Still in no cluster after a restart from the data directory: waiting
    /// for a running member, or for every member of the last set to restart.
    RecoveryWaiting {
        epoch: u64,
        missing: Vec<SocketAddr>,
        #[serde(with = "millis")]
        waited: Duration,
    },
    /// Every member of the last active set restarted from its data directory:
    /// the cluster starts again here, at an epoch above every one they knew.
    Refounded {
        cluster: ProcessId,
        epoch: u64,
        highest_known: u64,
        from: Vec<ProcessId>,
    },
    /// A set of another cluster than the data directory's was not taken on.
    ForeignClusterIgnored {
        kept: ProcessId,
        other: ProcessId,
    },

    // ---- the active set -------------------------------------------------
    ActiveSetInstalled {
        epoch: u64,
        members: Vec<ProcessId>,
        added: Vec<ProcessId>,
        removed: Vec<ProcessId>,
        source: SetSource,
        seated: bool,
        max_active: u32,
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
        why: AbandonReason,
    },
    /// This node's `max_active` differs from the cluster's, which wins.
    MaxActiveMismatch {
        configured: u32,
        cluster: u32,
    },
    /// The epoch reached the largest a fence can carry: no further change.
    EpochsExhausted {
        epoch: u64,
    },

    // ---- locks ----------------------------------------------------------
    /// A client asked for a lock.
    Asked {
        lock: LockName,
        ticket: Ticket,
        /// Tickets of this node waiting for this lock, this one included.
        waiting: usize,
        #[serde(default)]
        try_only: bool,
    },
    WaitingForSeat {
        position: usize,
        spectators: usize,
    },
    RequestIssued {
        lock: LockName,
        request_id: u64,
        timestamp: u64,
        epoch: u64,
        awaiting: Vec<ProcessId>,
    },
    RequestSent {
        lock: LockName,
        to: ProcessId,
        request_id: u64,
        /// 0 the first time; more when asked again.
        attempt: u32,
        timestamp: u64,
        epoch: u64,
    },
    RequestReceived {
        lock: LockName,
        from: ProcessId,
        request_id: u64,
        timestamp: u64,
        epoch: u64,
        /// The timestamp of this node's own pending request, if it has one.
        own_timestamp: Option<u64>,
        decision: Decision,
    },
    ReplySent {
        lock: LockName,
        to: ProcessId,
        request_id: u64,
        epoch: u64,
        deferred: bool,
    },
    ReplyReceived {
        lock: LockName,
        from: ProcessId,
        request_id: u64,
        epoch: u64,
        remaining: usize,
    },
    ReplyIgnored {
        lock: LockName,
        from: ProcessId,
        request_id: u64,
        epoch: u64,
        why: StaleReason,
    },
    /// A grant that outlived its lease unused: the member is asked again.
    ReplyExpired {
        lock: LockName,
        from: ProcessId,
        request_id: u64,
        when: Expiry,
    },
    NewerSetSent {
        lock: LockName,
        to: ProcessId,
        request_id: u64,
        epoch: u64,
    },
    Reissued {
        lock: LockName,
        request_id: u64,
        epoch: u64,
        awaiting: Vec<ProcessId>,
    },
    Withdrawn {
        lock: LockName,
        request_id: u64,
        why: WithdrawReason,
    },
    Enter {
        lock: LockName,
        ticket: Ticket,
        request_id: u64,
        timestamp: u64,
        fence: Fence,
        lamport: u64,
        #[serde(with = "millis")]
        waited: Duration,
        /// Passed on within the hold of `request_id`, without asking again.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        handed_on: bool,
    },
    Exit {
        lock: LockName,
        ticket: Ticket,
        fence: Fence,
        lamport: u64,
        #[serde(with = "millis")]
        held: Duration,
        released: Vec<ProcessId>,
    },
    /// A spectator's ticket goes to a seated member, which asks for the lock
    /// in its place.
    Forwarded {
        lock: LockName,
        ticket: Ticket,
        to: ProcessId,
    },
    /// A member takes on a spectator's ticket, as its own `ticket`.
    Serving {
        lock: LockName,
        ticket: Ticket,
        spectator: ProcessId,
        their_ticket: Ticket,
    },
    /// A spectator's ticket got the lock through the member `via`.
    EnterVia {
        lock: LockName,
        ticket: Ticket,
        fence: Fence,
        via: ProcessId,
        #[serde(with = "millis")]
        waited: Duration,
    },
    /// A spectator's client gave back the lock it held through `via`.
    ExitVia {
        lock: LockName,
        ticket: Ticket,
        fence: Fence,
        via: ProcessId,
        #[serde(with = "millis")]
        held: Duration,
    },
    /// A waiting ticket was given back before it got the lock.
    Cancelled {
        lock: LockName,
        ticket: Ticket,
    },
    /// A ticket that will never get the lock.
    Refused {
        lock: LockName,
        ticket: Ticket,
        why: RefusedReason,
    },
    /// A try was answered: the lock is not free now.
    BusySent {
        lock: LockName,
        to: ProcessId,
        request_id: u64,
    },
    /// A ticket ended without its client releasing it; a holder's client must
    /// stop using the lock.
    Lost {
        lock: LockName,
        ticket: Ticket,
        fence: Option<Fence>,
        why: LossReason,
    },
    FenceSpaceExhausted {
        lock: LockName,
        epoch: u64,
    },

    // ---- the process ----------------------------------------------------
    /// The process was stopped (SIGSTOP, a frozen VM, a long stall): measured
    /// from the gap in its own timers.
    Paused {
        #[serde(with = "millis")]
        stopped_for: Duration,
        holding: Vec<LockName>,
    },
    Leaving {
        dropped_tickets: usize,
    },
    LeaveTimedOut,
    Left,
    Dropped {
        what: DroppedWhat,
        from: DropSource,
        #[serde(flatten)]
        why: DropReason,
    },
}

impl DropReason {
    /// A short name for counting drops by reason.
    pub fn kind(&self) -> &'static str {
        match self {
            DropReason::AddressedToEarlierProcess { .. } => "addressed to an earlier process",
            DropReason::SentByRestartedProcess => "from a restarted process",
            DropReason::ClockTooFarAhead { .. } => "clock too far ahead",
            DropReason::EpochOutOfRange { .. } => "epoch out of range",
            DropReason::RoundOutOfRange { .. } => "round out of range",
            DropReason::NotBothMembers { .. } => "not both members",
            DropReason::Malformed { .. } => "malformed",
            DropReason::NodeLeaving => "node leaving",
            DropReason::ImplausibleAddress { .. } => "implausible address",
            DropReason::ForgedSender { .. } => "forged sender",
            DropReason::NotAuthenticated { .. } => "not authenticated",
            DropReason::Overloaded => "overloaded",
            DropReason::SenderHeldGone => "sender held gone",
        }
    }
}

impl From<ImplausibleClock> for DropReason {
    fn from(e: ImplausibleClock) -> Self {
        DropReason::ClockTooFarAhead {
            seen: e.seen,
            own: e.own,
        }
    }
}

/// Durations as milliseconds with microsecond precision, for people and jq.
pub mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_micros() as f64) / 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        if !ms.is_finite() || ms < 0.0 {
            return Err(serde::de::Error::custom(
                "a duration must be a finite, non-negative number of milliseconds",
            ));
        }
        Ok(Duration::from_secs_f64(ms / 1000.0))
    }
}

pub mod millis_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::millis::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let ms = Option::<f64>::deserialize(d)?;
        match ms {
            Some(ms) if ms.is_finite() && ms >= 0.0 => {
                Ok(Some(Duration::from_secs_f64(ms / 1000.0)))
            }
            Some(_) => Err(serde::de::Error::custom(
                "a duration must be a finite, non-negative number of milliseconds",
            )),
            None => Ok(None),
        }
    }
}

/// One line of the JSON log (`--log-format json`): when, how loud, which node,
/// the event with its fields, and the sentence the text format shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub time: jiff::Timestamp,
    pub level: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ProcessId>,
    #[serde(flatten)]
    pub event: Event,
    pub message: String,
}

/// A JSON log that cannot be read back.
#[derive(Debug)]
pub struct LogError {
    pub path: PathBuf,
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.reason)
        } else {
            write!(
                f,
                "{}, line {}: {}",
                self.path.display(),
                self.line,
                self.reason
            )
        }
    }
}

impl std::error::Error for LogError {}

impl LogRecord {
    /// One line of the JSON log. Not generic, so the large derived decoder is
    /// compiled once, here, and not again in every crate that reads logs.
    pub fn from_json(line: &str) -> Result<LogRecord, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// This record as one line of the JSON log (no newline).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// Read a JSON log written by `--log-format json`. Lines that are not JSON
/// objects (a crash's backtrace, say) are skipped; a JSON line that does not fit
/// the schema is an error, so a renamed field is noticed rather than ignored.
pub fn read_log(path: &std::path::Path) -> Result<Vec<LogRecord>, LogError> {
    let text = std::fs::read_to_string(path).map_err(|e| LogError {
        path: path.to_path_buf(),
        line: 0,
        reason: e.to_string(),
    })?;
    parse_log(&text).map_err(|(line, reason)| LogError {
        path: path.to_path_buf(),
        line,
        reason,
    })
}

/// The records of a JSON log's text; on failure, the 1-based line and why.
pub fn parse_log(text: &str) -> Result<Vec<LogRecord>, (usize, String)> {
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('{') {
            continue;
        }
        let record = LogRecord::from_json(line).map_err(|e| (i + 1, e.to_string()))?;
        records.push(record);
    }
    Ok(records)
}
