//! Node events as log lines: a sentence for people, and (with `--log-format
//! json`) named fields for tools such as `ra trace`.

use std::time::Duration;

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format;

use crate::cli::LogFormat;
use crate::event::{Event, ViewSource};
use crate::protocol::active_set::display_list;
use crate::protocol::ids::ProcessId;
use crate::protocol::mutex::{Decision, DeferReason, StaleReason};

/// Logs go to stderr; stdout carries the critical section's own output and the
/// answers to `status`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,foca=warn,h2=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder
            .with_target(false)
            // The sentence says it all; the fields are for the JSON format.
            .fmt_fields(format::debug_fn(|writer, field, value| {
                if field.name() == "message" {
                    write!(writer, "{value:?}")
                } else {
                    Ok(())
                }
            }))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// One event, ready to log.
#[derive(Default)]
pub struct Line {
    pub level: Option<Level>,
    pub kind: &'static str,
    pub message: String,
    pub peer: Option<String>,
    pub request_id: Option<u64>,
    pub ts: Option<u64>,
    pub own_ts: Option<u64>,
    pub epoch: Option<u64>,
    pub fence: Option<u64>,
    pub lamport: Option<u64>,
    pub deferred: Option<bool>,
    pub remaining: Option<u64>,
    pub members: Option<String>,
    pub waited_ms: Option<f64>,
    pub dropped: Option<u64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn list(processes: &[ProcessId]) -> String {
    display_list(processes)
}

fn stale_reason(reason: StaleReason) -> &'static str {
    match reason {
        StaleReason::NotWaiting => "no request is waiting",
        StaleReason::OtherRequest => "it answers an earlier request",
        StaleReason::OtherEpoch => "it was given under another active set",
        StaleReason::NotOwed => "that member had already replied",
    }
}

/// The sentence and fields for an event of the node `me`.
pub fn describe(me: ProcessId, event: &Event) -> Line {
    let info = Some(Level::INFO);
    match event {
        Event::Started { seeds, found_in, .. } => Line {
            level: info,
            kind: "started",
            message: match found_in {
                Some(after) => format!(
                    "node {me} started without --join: it founds a new cluster in {:.1}s unless an existing cluster reaches this address first",
                    after.as_secs_f64()
                ),
                None => format!(
                    "node {me} started; joining through {}",
                    seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
                ),
            },
            ..Line::default()
        },
        Event::StillAlone { seeds, waited } => Line {
            level: Some(Level::WARN),
            kind: "still_alone",
            message: format!(
                "no member has answered for {:.0}s; still announcing to {} (is a seed running and reachable?)",
                waited.as_secs_f64(),
                seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
            ),
            ..Line::default()
        },
        Event::Connected => Line {
            level: info,
            kind: "connected",
            message: "connected: membership gossip is flowing".into(),
            ..Line::default()
        },
        Event::Alone => Line {
            level: Some(Level::WARN),
            kind: "alone",
            message: "no live member left in view: announcing to known addresses until one answers".into(),
            ..Line::default()
        },
        Event::MemberJoined { member } => Line {
            level: info,
            kind: "member_joined",
            message: format!("member {member} JOINED"),
            peer: Some(member.to_string()),
            ..Line::default()
        },
        Event::MemberLeft { member } => Line {
            level: info,
            kind: "member_left",
            message: format!("member {member} LEFT (graceful)"),
            peer: Some(member.to_string()),
            ..Line::default()
        },
        Event::MemberFailed { member } => Line {
            level: Some(Level::WARN),
            kind: "member_failed",
            message: format!("member {member} FAILED (stopped answering probes)"),
            peer: Some(member.to_string()),
            ..Line::default()
        },
        Event::MemberRestarted { member, .. } => Line {
            level: info,
            kind: "member_restarted",
            message: format!(
                "member {member} RESTARTED: its previous process is gone (killed or crashed) and a new one took the address"
            ),
            peer: Some(member.to_string()),
            ..Line::default()
        },
        Event::MemberBack { member } => Line {
            level: info,
            kind: "member_back",
            message: format!("member {member} is BACK: it was declared failed but is alive (a pause or a partition)"),
            peer: Some(member.to_string()),
            ..Line::default()
        },
        Event::MemberRenamed { member, bump } => Line {
            level: Some(Level::DEBUG),
            kind: "member_renamed",
            message: format!("member {member} renewed its identity (#{bump}) after a suspicion"),
            peer: Some(member.to_string()),
            ..Line::default()
        },
        Event::Rejoined { bump } => Line {
            level: Some(Level::WARN),
            kind: "rejoined",
            message: format!(
                "the cluster declared this node failed (a pause or a partition); rejoining under renewed identity #{bump}"
            ),
            ..Line::default()
        },
        Event::PeerLeaving { member } => Line {
            level: info,
            kind: "member_leaving",
            message: format!("member {member} announced it is leaving"),
            peer: Some(member.to_string()),
            ..Line::default()
        },
        Event::Founded { .. } => Line {
            level: info,
            kind: "founded",
            message: "no existing cluster answered: founded a new cluster".into(),
            ..Line::default()
        },
        Event::ViewInstalled {
            epoch,
            members,
            added,
            removed,
            source,
            seated,
        } => {
            // A process restarted on the same address shows as one change, not as
            // the same address added and removed.
            let restarted: Vec<ProcessId> = added
                .iter()
                .filter(|a| removed.iter().any(|r| r.addr == a.addr))
                .copied()
                .collect();
            let only = |list: &[ProcessId]| -> Vec<ProcessId> {
                list.iter()
                    .filter(|p| !restarted.iter().any(|r| r.addr == p.addr))
                    .copied()
                    .collect()
            };
            let (added, removed) = (only(added), only(removed));
            let mut changes = Vec::new();
            // The first set a node learns is all new to it: no diff to show.
            if !added.is_empty() && added.len() < members.len() {
                changes.push(format!("+{}", self::list(&added)));
            }
            if !removed.is_empty() {
                changes.push(format!("-{}", self::list(&removed)));
            }
            if !restarted.is_empty() {
                changes.push(format!("restarted {}", self::list(&restarted)));
            }
            let how = match source {
                ViewSource::Founded => "founded",
                ViewSource::Decided => "decided here",
                ViewSource::Message | ViewSource::Gossip => "learned",
            };
            Line {
                level: info,
                kind: "active_set",
                message: format!(
                    "ACTIVE SET epoch {epoch}: {}{} ({how}); this node is {}",
                    list(members),
                    changes.iter().map(|c| format!(" {c}")).collect::<String>(),
                    if *seated { "active" } else { "a spectator" }
                ),
                epoch: Some(*epoch),
                members: Some(list(members)),
                ..Line::default()
            }
        }
        Event::ClusterMerged { abandoned, joined } => Line {
            level: Some(Level::WARN),
            kind: "cluster_merged",
            message: format!(
                "met an older cluster (founded by {joined}): this node leaves the cluster founded by {abandoned} and joins it"
            ),
            ..Line::default()
        },
        Event::ProposalStarted { epoch, round, members } => Line {
            level: Some(Level::DEBUG),
            kind: "proposal",
            message: format!("proposing active set {} for epoch {epoch} (round {round})", list(members)),
            epoch: Some(*epoch),
            ..Line::default()
        },
        Event::ProposalAbandoned { epoch, round, reason } => Line {
            level: Some(Level::DEBUG),
            kind: "proposal_abandoned",
            message: format!("proposal for epoch {epoch} (round {round}) abandoned: {reason}"),
            epoch: Some(*epoch),
            ..Line::default()
        },
        Event::RequestQueued { queued } => Line {
            level: info,
            kind: "asked",
            message: format!("critical section asked for ({queued} outstanding)"),
            ..Line::default()
        },
        Event::WaitingForSeat { position, spectators } => Line {
            level: info,
            kind: "waiting_for_seat",
            message: if *position == 0 {
                "waiting: not in a cluster yet".to_string()
            } else {
                format!(
                    "waiting for a seat in the active set: spectator {position} of {spectators} in line; a seat frees when an active member leaves or fails"
                )
            },
            ..Line::default()
        },
        Event::RequestIssued {
            request_id,
            timestamp,
            epoch,
            awaiting,
        } => Line {
            level: info,
            kind: "request",
            message: if awaiting.is_empty() {
                format!("REQUEST #{request_id} ts={timestamp} (epoch {epoch}): alone in the active set, no one to ask")
            } else {
                format!(
                    "REQUEST #{request_id} ts={timestamp} (epoch {epoch}): asking {}",
                    list(awaiting)
                )
            },
            request_id: Some(*request_id),
            ts: Some(*timestamp),
            epoch: Some(*epoch),
            members: Some(list(awaiting)),
            ..Line::default()
        },
        Event::RequestSent {
            to,
            request_id,
            timestamp,
            epoch,
        } => Line {
            level: info,
            kind: "request_sent",
            message: format!("  REQUEST #{request_id} ts={timestamp} -> {to}"),
            peer: Some(to.to_string()),
            request_id: Some(*request_id),
            ts: Some(*timestamp),
            epoch: Some(*epoch),
            ..Line::default()
        },
        Event::RequestReceived {
            from,
            request_id,
            timestamp,
            epoch,
            own_timestamp,
            verdict,
        } => {
            let why = match (verdict, own_timestamp) {
                (Decision::Defer(DeferReason::InCriticalSection), _) => {
                    "DEFER: this node is in the critical section".to_string()
                }
                (Decision::Defer(DeferReason::OwnRequestFirst { own_timestamp }), _) => format!(
                    "DEFER: our request (ts={own_timestamp}, {me}) comes before it (ts={timestamp}, {from})"
                ),
                (Decision::Grant, Some(own)) => {
                    format!("grant: it (ts={timestamp}, {from}) comes before our request (ts={own}, {me})")
                }
                (Decision::Grant, None) => "grant: this node is not asking".to_string(),
            };
            Line {
                level: info,
                kind: "request_received",
                message: format!("REQUEST #{request_id} ts={timestamp} <- {from}: {why}"),
                peer: Some(from.to_string()),
                request_id: Some(*request_id),
                ts: Some(*timestamp),
                own_ts: *own_timestamp,
                epoch: Some(*epoch),
                deferred: Some(matches!(verdict, Decision::Defer(_))),
                ..Line::default()
            }
        }
        Event::ReplySent {
            to,
            request_id,
            epoch,
            deferred,
        } => Line {
            level: info,
            kind: "reply_sent",
            message: if *deferred {
                format!("  REPLY #{request_id} -> {to} (deferred until now)")
            } else {
                format!("  REPLY #{request_id} -> {to}")
            },
            peer: Some(to.to_string()),
            request_id: Some(*request_id),
            epoch: Some(*epoch),
            deferred: Some(*deferred),
            ..Line::default()
        },
        Event::ReplyReceived {
            from,
            request_id,
            epoch,
            remaining,
        } => Line {
            level: info,
            kind: "reply_received",
            message: if *remaining == 0 {
                format!("REPLY #{request_id} <- {from}: every member has replied")
            } else {
                format!("REPLY #{request_id} <- {from}: {remaining} still to reply")
            },
            peer: Some(from.to_string()),
            request_id: Some(*request_id),
            epoch: Some(*epoch),
            remaining: Some(*remaining as u64),
            ..Line::default()
        },
        Event::ReplyIgnored {
            from,
            request_id,
            epoch,
            reason,
        } => Line {
            level: Some(Level::DEBUG),
            kind: "reply_ignored",
            message: format!(
                "ignored a reply from {from} for #{request_id} (epoch {epoch}): {}",
                stale_reason(*reason)
            ),
            peer: Some(from.to_string()),
            request_id: Some(*request_id),
            epoch: Some(*epoch),
            ..Line::default()
        },
        Event::NewerViewSent { to, request_id, epoch } => Line {
            level: info,
            kind: "newer_view_sent",
            message: format!("  told {to} to ask again: its request #{request_id} named an older active set than epoch {epoch}"),
            peer: Some(to.to_string()),
            request_id: Some(*request_id),
            epoch: Some(*epoch),
            ..Line::default()
        },
        Event::Reissued {
            request_id,
            epoch,
            awaiting,
        } => Line {
            level: info,
            kind: "reissued",
            message: format!(
                "REQUEST #{request_id} asked again under the new active set (epoch {epoch}): asking {}",
                list(awaiting)
            ),
            request_id: Some(*request_id),
            epoch: Some(*epoch),
            members: Some(list(awaiting)),
            ..Line::default()
        },
        Event::Withdrawn { request_id, reason } => Line {
            level: info,
            kind: "withdrawn",
            message: format!("request #{request_id} withdrawn: {reason}"),
            request_id: Some(*request_id),
            ..Line::default()
        },
        Event::Enter {
            request_id,
            timestamp,
            fence,
            lamport,
            waited,
        } => Line {
            level: info,
            kind: "enter",
            message: format!(
                "ENTER critical section: request #{request_id} ts={timestamp}, fence {fence}, Lamport {lamport}, waited {:.1} ms",
                ms(*waited)
            ),
            request_id: Some(*request_id),
            ts: Some(*timestamp),
            epoch: Some(fence.epoch),
            fence: Some(fence.token()),
            lamport: Some(*lamport),
            waited_ms: Some(ms(*waited)),
            ..Line::default()
        },
        Event::ExitedLate { fence, late_by } => Line {
            level: Some(Level::WARN),
            kind: "exited_late",
            message: format!(
                "this process was stopped for {:.1}s inside the critical section (fence {fence}): the cluster may have declared it failed and let another node in; a resource that checks fences refuses this one",
                late_by.as_secs_f64()
            ),
            fence: Some(fence.token()),
            ..Line::default()
        },
        Event::Exit {
            request_id,
            fence,
            lamport,
            released,
        } => Line {
            level: info,
            kind: "exit",
            message: if released.is_empty() {
                format!("EXIT critical section: fence {fence}")
            } else {
                format!("EXIT critical section: fence {fence}; sending the deferred replies to {}", list(released))
            },
            request_id: Some(*request_id),
            epoch: Some(fence.epoch),
            fence: Some(fence.token()),
            lamport: Some(*lamport),
            members: Some(list(released)),
            ..Line::default()
        },
        Event::Leaving { dropped_requests } => Line {
            dropped: Some(*dropped_requests as u64),
            level: info,
            kind: "leaving",
            message: if *dropped_requests == 0 {
                "leaving the cluster: handing over the seat".to_string()
            } else {
                format!("leaving the cluster: handing over the seat; {dropped_requests} queued requests dropped")
            },
            ..Line::default()
        },
        Event::LeaveTimedOut => Line {
            level: Some(Level::WARN),
            kind: "leave_timed_out",
            message: "no quorum confirmed the handover in time; leaving anyway (peers will see a failure)".into(),
            ..Line::default()
        },
        Event::Left => Line {
            level: info,
            kind: "left",
            message: "left the cluster".into(),
            ..Line::default()
        },
        Event::Dropped { what, from, reason } => Line {
            level: Some(Level::WARN),
            kind: "dropped",
            message: format!("dropped a {what} from {from}: {reason}"),
            peer: Some(from.clone()),
            ..Line::default()
        },
    }
}

macro_rules! emit_at {
    ($level:expr, $me:expr, $line:expr) => {
        tracing::event!(
            target: "ra",
            $level,
            node = %$me,
            event = $line.kind,
            peer = $line.peer.as_deref(),
            request_id = $line.request_id,
            ts = $line.ts,
            own_ts = $line.own_ts,
            epoch = $line.epoch,
            fence = $line.fence,
            lamport = $line.lamport,
            deferred = $line.deferred,
            remaining = $line.remaining,
            members = $line.members.as_deref(),
            waited_ms = $line.waited_ms,
            dropped = $line.dropped,
            "{}",
            $line.message
        )
    };
}

pub fn emit(me: ProcessId, event: &Event) {
    let line = describe(me, event);
    match line.level {
        Some(Level::WARN) => emit_at!(Level::WARN, me, line),
        Some(Level::DEBUG) => emit_at!(Level::DEBUG, me, line),
        Some(Level::ERROR) => emit_at!(Level::ERROR, me, line),
        _ => emit_at!(Level::INFO, me, line),
    }
}
