//! Events as log lines: a short sentence for people (`--log-format text`), or
//! one typed record per line (`--log-format json`, [`LogRecord`]) for tools.
//!
//! Every line goes through `tracing`, so the level filter (`--log-level`, `-v`,
//! `-q`, or `RUST_LOG`) applies to ra's own events and to the diagnostics of the
//! libraries alike; a library's line becomes a [`Event::Note`] record in JSON.
//! This file is long because it phrases every event: one match, one job.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use tracing::level_filters::LevelFilter;
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogFormat, LogLevel};
use crate::event::{
    AbandonReason, DropReason, DroppedWhat, Event, Expiry, FailureCause, GoneEvidence, LogRecord,
    LossReason, RefusedReason, SetSource, SwimStep, Ticket, WithdrawReason,
};
use crate::node::PROXY_TICKETS;
use crate::protocol::ids::ProcessId;
use crate::protocol::ricart_agrawala::{Decision, DeferReason, StaleReason};

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Logs go to stderr; stdout carries the critical section's own output and the
/// answers to `status`.
pub fn init(format: LogFormat, level: LogLevel) {
    let _ = FORMAT.set(format);
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => spec.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("warning: RUST_LOG={spec:?} ignored ({e}); using --log-level");
            default_filter(level)
        }),
        _ => default_filter(level),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .event_format(Lines {
                    json: format == LogFormat::Json,
                }),
        )
        .try_init();
}

/// The chosen level for ra, and only warnings from the libraries' own chatter.
fn default_filter(level: LogLevel) -> Targets {
    let quiet = ["foca", "h2", "tower", "hyper", "tonic"];
    quiet.iter().fold(
        Targets::new().with_default(level.as_filter()),
        |targets, library| targets.with_target(*library, LevelFilter::WARN),
    )
}

fn json() -> bool {
    FORMAT.get() == Some(&LogFormat::Json)
}

/// The level each event is logged at.
pub fn level_of(event: &Event) -> Level {
    match event {
        Event::EpochsExhausted { .. } | Event::FenceSpaceExhausted { .. } => Level::ERROR,
        Event::StillAlone { .. }
        | Event::RecoveryWaiting { .. }
        | Event::ForeignClusterIgnored { .. }
        | Event::Alone
        | Event::MemberFailed { .. }
        | Event::ProcessGone { .. }
        | Event::Rejoined { .. }
        | Event::ClusterMerged { .. }
        | Event::Dropped { .. }
        | Event::DropsSummarised { .. }
        | Event::LeaveTimedOut
        | Event::Lost { .. }
        | Event::Paused { .. }
        | Event::MaxActiveMismatch { .. }
        | Event::HoldOutlastsDetection { .. }
        | Event::KeysNotReloaded { .. }
        | Event::RefusedByPeer { .. }
        // An operator has to act (restart the node) or should hear of it.
        | Event::IdentityRenewalsExhausted
        | Event::SwimError { .. }
        | Event::ReplyExpired {
            when: Expiry::OnArrival,
            ..
        } => Level::WARN,
        Event::ProposalStarted { .. }
        | Event::ProposalAbandoned { .. }
        | Event::MemberRenamed { .. }
        | Event::ReplyIgnored { .. }
        | Event::Note { .. } => Level::DEBUG,
        _ => Level::INFO,
    }
}

/// A ticket as the text log shows it: a client's of this node by its number,
/// a spectator's that this member carries as `S<n>` (its n-th such ticket,
/// numbered from [`PROXY_TICKETS`] = 2^62 in the JSON log) rather than a
/// 19-digit number. `ra status` and the console show them so too.
pub struct TicketNo(pub Ticket);

impl std::fmt::Display for TicketNo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.checked_sub(PROXY_TICKETS) {
            Some(carried) => write!(f, "S{carried}"),
            None => write!(f, "{}", self.0),
        }
    }
}

macro_rules! at_level {
    ($level:expr, $line:expr) => {
        match $level {
            Level::ERROR => tracing::error!(target: "ra", line = %$line),
            Level::WARN => tracing::warn!(target: "ra", line = %$line),
            Level::INFO => tracing::info!(target: "ra", line = %$line),
            Level::DEBUG => tracing::debug!(target: "ra", line = %$line),
            _ => tracing::trace!(target: "ra", line = %$line),
        }
    };
}

fn enabled(level: Level) -> bool {
    match level {
        Level::ERROR => tracing::enabled!(target: "ra", Level::ERROR),
        Level::WARN => tracing::enabled!(target: "ra", Level::WARN),
        Level::INFO => tracing::enabled!(target: "ra", Level::INFO),
        Level::DEBUG => tracing::enabled!(target: "ra", Level::DEBUG),
        _ => tracing::enabled!(target: "ra", Level::TRACE),
    }
}

/// Drops of one kind shown in full per window; the rest are counted.
const DROPS_SHOWN: u32 = 5;
const DROP_WINDOW: Duration = Duration::from_secs(10);

/// Rate limit for dropped input: a flood of bad datagrams must not become a
/// flood of log lines (that would be a denial of service of its own).
#[derive(Default)]
struct DropLimiter {
    window_start: Option<std::time::Instant>,
    by_what: std::collections::BTreeMap<DroppedWhat, DropCount>,
}

#[derive(Default)]
struct DropCount {
    shown: u32,
    suppressed: u64,
    reasons: std::collections::BTreeMap<&'static str, u64>,
}

impl DropLimiter {
    /// Whether to log this drop in full; counts it otherwise.
    fn admit(&mut self, what: DroppedWhat, reason: &'static str) -> bool {
        let count = self.by_what.entry(what).or_default();
        self.window_start
            .get_or_insert_with(std::time::Instant::now);
        if count.shown < DROPS_SHOWN {
            count.shown += 1;
            return true;
        }
        count.suppressed += 1;
        *count.reasons.entry(reason).or_default() += 1;
        false
    }

    /// At the end of a window: one summary per kind of input with drops not shown.
    fn summaries(&mut self, force: bool) -> Vec<Event> {
        let Some(start) = self.window_start else {
            return Vec::new();
        };
        let over = start.elapsed();
        if over < DROP_WINDOW && !force {
            return Vec::new();
        }
        self.window_start = None;
        std::mem::take(&mut self.by_what)
            .into_iter()
            .filter(|(_, count)| count.suppressed > 0)
            .map(|(what, count)| Event::DropsSummarised {
                what,
                count: count.suppressed,
                over,
                reasons: count
                    .reasons
                    .into_iter()
                    .map(|(reason, n)| (reason.to_string(), n))
                    .collect(),
            })
            .collect()
    }
}

static DROPS: std::sync::Mutex<Option<DropLimiter>> = std::sync::Mutex::new(None);

/// Log the summaries of drops not shown, once their window is over (the shell
/// calls this every second).
pub fn flush_drops(me: ProcessId) {
    let summaries = match DROPS.lock() {
        Ok(mut limiter) => limiter
            .get_or_insert_with(Default::default)
            .summaries(false),
        Err(_) => return,
    };
    for summary in summaries {
        write(me, &summary);
    }
}

/// Log one event of node `me`.
pub fn emit(me: ProcessId, event: &Event) {
    if let Event::Dropped { what, why, .. } = event {
        let shown = match DROPS.lock() {
            Ok(mut limiter) => limiter
                .get_or_insert_with(Default::default)
                .admit(*what, why.kind()),
            Err(_) => true,
        };
        if !shown {
            return;
        }
    }
    write(me, event);
}

fn write(me: ProcessId, event: &Event) {
    let level = level_of(event);
    if !enabled(level) {
        return;
    }
    let message = sentence(me, event);
    let line = if json() {
        let record = LogRecord {
            time: jiff::Timestamp::now(),
            level: level.to_string(),
            node: Some(me),
            event: event.clone(),
            message,
        };
        match serde_json::to_string(&record) {
            Ok(line) => line,
            // Still a record readers accept, saying what could not be written.
            Err(e) => {
                let note = LogRecord {
                    event: Event::Note {
                        message: format!("unencodable event: {e}"),
                    },
                    ..record
                };
                serde_json::to_string(&note).unwrap_or_else(|_| text_line(level, &note.message))
            }
        }
    } else {
        text_line(level, &message)
    };
    at_level!(level, line);
}

fn text_line(level: Level, message: &str) -> String {
    let now = jiff::Timestamp::now();
    let of_day = now.as_second().rem_euclid(86_400);
    let (h, m, s) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    let level = match level {
        Level::INFO => "",
        Level::WARN => "WARN ",
        Level::ERROR => "ERROR ",
        Level::DEBUG => "debug ",
        _ => "trace ",
    };
    format!(
        "{h:02}:{m:02}:{s:02}.{:03} {level}{message}",
        now.subsec_millisecond()
    )
}

/// Prints ra's own lines as they are, and phrases any other `tracing` event
/// (a library's, or the shell's plain diagnostics) the same way.
struct Lines {
    json: bool,
}

#[derive(Default)]
struct Fields {
    line: Option<String>,
    message: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "line" => self.line = Some(format!("{value:?}")),
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name => {
                let _ = write!(self.message, " {name}={value:?}");
            }
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "line" => self.line = Some(value.to_string()),
            "message" => self.message.push_str(value),
            name => {
                let _ = write!(self.message, " {name}={value}");
            }
        }
    }
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(line) = fields.line {
            return writeln!(writer, "{line}");
        }
        let level = *event.metadata().level();
        let message = format!("{}: {}", event.metadata().target(), fields.message);
        if self.json {
            let record = LogRecord {
                time: jiff::Timestamp::now(),
                level: level.to_string(),
                node: None,
                event: Event::Note {
                    message: message.clone(),
                },
                message,
            };
            let line = serde_json::to_string(&record).map_err(|_| std::fmt::Error)?;
            writeln!(writer, "{line}")
        } else {
            writeln!(writer, "{}", text_line(level, &message))
        }
    }
}

// ---- sentences -------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A peer as this node's lines name it: `:PORT` when it shares our host, the
/// whole address otherwise, so three terminals side by side stay readable.
struct Short<'a> {
    me: ProcessId,
    other: &'a ProcessId,
}

impl std::fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.other.addr.ip() == self.me.addr.ip() {
            write!(f, ":{}", self.other.addr.port())
        } else {
            write!(f, "{}", self.other.addr)
        }
    }
}

fn list(me: ProcessId, processes: &[ProcessId]) -> String {
    let names: Vec<String> = processes
        .iter()
        .map(|p| Short { me, other: p }.to_string())
        .collect();
    format!("[{}]", names.join(", "))
}

fn stale_reason(why: StaleReason) -> &'static str {
    match why {
        StaleReason::NotWaiting => "no request of that lock is waiting",
        StaleReason::OtherRequest => "it answers an earlier request",
        StaleReason::OtherEpoch => "it was given under another active set",
        StaleReason::OtherAttempt => "it answers an earlier sending of the request",
        StaleReason::NotOwed => "that member had already replied",
    }
}

pub fn loss_reason(why: LossReason) -> &'static str {
    match why {
        LossReason::Evicted => "the active set was decided without this node",
        LossReason::QuorumLost => {
            "a quorum of the active set was declared down: this node may be the one cut off"
        }
        LossReason::Paused => {
            "this process was stopped for longer than failure detection: the cluster may have moved on"
        }
        LossReason::NodeLeaving => "the node is leaving the cluster",
        LossReason::ProxyLost => "the member holding it for this spectator lost it",
        LossReason::ProxySilent => {
            "the member holding it for this spectator fell silent: it may have let go"
        }
    }
}

pub fn withdraw_reason(why: WithdrawReason) -> &'static str {
    match why {
        WithdrawReason::TicketCancelled => "its ticket was cancelled",
        WithdrawReason::Busy => "it was a try, and the lock is taken",
        WithdrawReason::LostSeat => "this node lost its seat",
        WithdrawReason::ClusterMerged => "its cluster merged into an older one",
        WithdrawReason::NodeLeaving => "this node is leaving",
    }
}

pub fn drop_reason(why: &DropReason) -> String {
    match why {
        DropReason::AddressedToEarlierProcess { to } => {
            format!("addressed to {to:?}, an earlier process at this address")
        }
        DropReason::SentByRestartedProcess => "sent by a process that has since restarted".into(),
        DropReason::ClockTooFarAhead { seen, own } => format!(
            "its Lamport clock {seen} is implausibly far ahead of ours ({own}); merging it could exhaust the clock"
        ),
        DropReason::EpochOutOfRange { seen, own } => {
            format!("it names epoch {seen}, implausibly far ahead of ours ({own})")
        }
        DropReason::RoundOutOfRange { seen, own } => format!(
            "its Paxos round {seen} is implausibly far above the highest seen ({own}); it could use up the rounds"
        ),
        DropReason::NotBothMembers { epoch } => {
            format!("sender and receiver are not both members of epoch {epoch}")
        }
        DropReason::Malformed { detail } => format!("malformed: {detail}"),
        DropReason::NodeLeaving => "this node is leaving".into(),
        DropReason::SenderHeldGone => {
            "its sender is held gone here (declared down, leaving or replaced); it asks again if alive".into()
        }
        DropReason::ImplausibleAddress { addr } => format!(
            "it names {addr}, an address this cluster would never use (another family or scope)"
        ),
        DropReason::ForgedSender { peer } => {
            format!("its sender is not {peer:?}, the authenticated peer of its stream")
        }
        DropReason::NotAuthenticated { detail } => format!("not authenticated: {detail}"),
        DropReason::Overloaded => "the node's inbox is full".into(),
    }
}

fn what(what: DroppedWhat) -> &'static str {
    match what {
        DroppedWhat::Datagram => "datagram",
        DroppedWhat::Message => "message",
        DroppedWhat::Stream => "stream",
        DroppedWhat::Ticket => "ticket",
    }
}

/// The sentence for an event of the node `me`.
pub fn sentence(me: ProcessId, event: &Event) -> String {
    let p = |other: &ProcessId| Short { me, other }.to_string();
    let l = |processes: &[ProcessId]| list(me, processes);
    match event {
        Event::Listening {
            node,
            bind,
            api,
            authenticated,
            tls,
            data_dir,
        } => {
            let mut s = format!("node {} listening on {bind}", node.addr);
            if bind.ip().is_unspecified() {
                s.push_str(" (all interfaces; peers use the advertised address, set --advertise if other hosts must reach it)");
            }
            match api {
                Some(path) => {
                    let _ = write!(s, "; client API on {}", path.display());
                }
                None => s.push_str("; no client API"),
            }
            s.push_str(match (*authenticated, *tls) {
                (true, false) => "; peers authenticated with the cluster key",
                (true, true) => {
                    "; peers authenticated with the cluster key; peer gRPC encrypted and authenticated by mutual TLS"
                }
                (false, true) => {
                    "; peer gRPC encrypted and authenticated by mutual TLS; membership datagrams unauthenticated (see --cluster-key)"
                }
                (false, false) => {
                    "; unauthenticated: anyone who reaches this port can take part (see --cluster-key, --tls-cert)"
                }
            });
            match data_dir {
                Some(dir) => {
                    let _ = write!(s, "; state kept in {}", dir.display());
                }
                None => {
                    s.push_str("; no --data-dir: fences start over if the whole cluster restarts")
                }
            }
            s
        }
        Event::HoldOutlastsDetection { hold, detection } => format!(
            "the critical section is held {:.0} ms, longer than failure detection (about {:.0} ms): if this node is cut off while holding it, the others may enter before it exits; check fences in the resource you protect",
            ms(*hold),
            ms(*detection)
        ),
        Event::DropsSummarised {
            what: kind,
            count,
            over,
            reasons,
        } => {
            let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            format!(
                "dropped {count} more {}s in the last {:.0} s, not logged one by one ({})",
                what(*kind),
                over.as_secs_f64(),
                reasons.join(", ")
            )
        }
        Event::Note { message } => message.clone(),
        Event::IdentityRenewalsExhausted => "identity renewals exhausted: restart this node".into(),
        Event::SwimError {
            during: SwimStep::Timer,
            error,
        } => format!("SWIM timer: {error}"),
        Event::SwimError {
            during: SwimStep::RenewIdentity,
            error,
        } => format!("cannot renew the SWIM identity: {error}"),
        Event::RefusedByPeer { peer, why } => {
            format!("{peer} cannot open this node's datagrams: {why}")
        }
        Event::KeysReloaded { sealing, accepting } => format!(
            "cluster key file re-read: sealing with key {sealing}, accepting {}",
            accepting.join(", ")
        ),
        Event::KeysNotReloaded { error } => {
            format!("cluster key file not re-read, the keys in use stay: {error}")
        }
        Event::Started {
            seeds, found_in, ..
        } => match found_in {
            Some(after) => format!(
                "started without --join: founding a new cluster in {:.1}s unless an existing cluster reaches this address first",
                after.as_secs_f64()
            ),
            None => format!(
                "started; joining through {}",
                seeds
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        Event::StillAlone { seeds, waited } => format!(
            "no member has answered for {:.0}s; still announcing to {} (is a seed running and reachable?)",
            waited.as_secs_f64(),
            seeds
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Event::Connected => "connected: membership gossip is flowing".into(),
        Event::Alone => {
            "no live member left in view: announcing to known addresses until one answers".into()
        }
        Event::MemberJoined { member } => format!("member {} JOINED", p(member)),
        Event::MemberLeft { member } => format!("member {} LEFT (graceful)", p(member)),
        Event::MemberFailed { member, cause } => match cause {
            FailureCause::Unresponsive => {
                format!("member {} FAILED (stopped answering probes)", p(member))
            }
            FailureCause::ProcessGone => {
                format!("member {} FAILED: the process is gone", p(member))
            }
            FailureCause::Reported => {
                format!(
                    "member {} FAILED (declared down by another member)",
                    p(member)
                )
            }
        },
        Event::ProcessGone { member, evidence } => match evidence {
            GoneEvidence::ConnectionRefused => format!(
                "member {}: connection refused, the process is gone",
                p(member)
            ),
            GoneEvidence::Restarted { now } => format!(
                "member {}: a new process answers at its address (incarnation {}), the old one is gone",
                p(member),
                now.incarnation
            ),
        },
        Event::MemberRestarted { member, .. } => format!(
            "member {} RESTARTED: its previous process is gone and a new one took the address",
            p(member)
        ),
        Event::MemberBack { member } => format!(
            "member {} is BACK: declared failed, but alive (a pause or a partition)",
            p(member)
        ),
        Event::MemberRenamed { member, bump } => format!(
            "member {} renewed its identity (#{bump}) after a suspicion",
            p(member)
        ),
        Event::Rejoined { bump } => format!(
            "the cluster declared this node failed (a pause or a partition); rejoining as identity #{bump}"
        ),
        Event::PeerLeaving { member } => format!("member {} announced it is leaving", p(member)),
        Event::Founded { .. } => "no existing cluster answered: founded a new cluster".into(),
        Event::Restored {
            cluster,
            epoch,
            members,
        } => format!(
            "restored from the data directory: the cluster founded by {}, epoch {epoch}, last active set {}; rejoining it (this node never founds a cluster alone)",
            p(cluster),
            l(members)
        ),
        Event::RecoveryWaiting {
            epoch,
            missing,
            waited,
        } => {
            let missing: Vec<String> = missing.iter().map(|a| a.to_string()).collect();
            format!(
                "in no cluster {:.0} s after restarting from the data directory: waiting for a running member, or for every member of the last active set (epoch {epoch}) to restart with its data directory; not heard from: {}",
                waited.as_secs_f64(),
                missing.join(", ")
            )
        }
        Event::Refounded {
            epoch,
            highest_known,
            from,
            ..
        } => format!(
            "every member of the last active set restarted with its data directory ({}): the cluster starts again at epoch {epoch}, above the highest epoch any of them knew ({highest_known}), so every fence from now on is above every earlier one",
            l(from)
        ),
        Event::ForeignClusterIgnored { kept, other } => format!(
            "ignored the active set of the cluster founded by {}: the data directory belongs to the cluster founded by {} (its fences would start below the earlier ones; move the data directory away to join another cluster)",
            p(other),
            p(kept)
        ),
        Event::ActiveSetInstalled {
            epoch,
            members,
            added,
            removed,
            source,
            seated,
            ..
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
                    .filter(|x| !restarted.iter().any(|r| r.addr == x.addr))
                    .copied()
                    .collect()
            };
            let (added, removed) = (only(added), only(removed));
            let mut changes = String::new();
            // The first set a node learns is all new to it: no diff to show.
            if !added.is_empty() && added.len() < members.len() {
                let _ = write!(changes, " +{}", l(&added));
            }
            if !removed.is_empty() {
                let _ = write!(changes, " -{}", l(&removed));
            }
            if !restarted.is_empty() {
                let _ = write!(changes, " restarted {}", l(&restarted));
            }
            let how = match source {
                SetSource::Founded => "founded",
                SetSource::Refounded => "started again from the data directories",
                SetSource::Decided => "decided here",
                SetSource::Message | SetSource::Gossip => "learned",
            };
            format!(
                "ACTIVE SET epoch {epoch}: {}{changes} ({how}); this node is {}",
                l(members),
                if *seated { "active" } else { "a spectator" }
            )
        }
        Event::ClusterMerged { joined, .. } => format!(
            "met an older cluster (founded by {}): leaving this one to join it",
            p(joined)
        ),
        Event::ProposalStarted {
            epoch,
            round,
            members,
        } => format!(
            "proposing active set {} for epoch {epoch} (round {round})",
            l(members)
        ),
        Event::ProposalAbandoned { epoch, round, why } => format!(
            "proposal for epoch {epoch} (round {round}) abandoned: {}",
            match why {
                AbandonReason::NoQuorumInTime => "no quorum answered in time",
                AbandonReason::OutvotedByHigherBallot => "an acceptor promised a higher ballot",
                AbandonReason::MemberBack => "a member it would remove is back",
            }
        ),
        Event::MaxActiveMismatch {
            configured,
            cluster,
        } => format!(
            "--max-active {configured} ignored: the cluster was founded with {cluster}, which every member uses"
        ),
        Event::EpochsExhausted { epoch } => format!(
            "epoch {epoch} is the last a fencing token can carry: the active set cannot change any more; restart the cluster with a data directory"
        ),
        Event::Asked {
            lock,
            ticket,
            waiting,
            try_only,
        } => {
            let ticket = TicketNo(*ticket);
            let how = if *try_only { "tried" } else { "asked for" };
            if *waiting > 1 {
                format!("lock {lock} {how} (ticket {ticket}; {waiting} waiting here)")
            } else {
                format!("lock {lock} {how} (ticket {ticket})")
            }
        }
        Event::WaitingForSeat {
            position,
            spectators,
        } => {
            if *position == 0 {
                "waiting: not in a cluster yet".to_string()
            } else {
                format!(
                    "waiting for a seat in the active set: spectator {position} of {spectators} in line"
                )
            }
        }
        Event::RequestIssued {
            lock,
            request_id,
            timestamp,
            epoch,
            awaiting,
        } => {
            if awaiting.is_empty() {
                format!(
                    "{lock}: REQUEST #{request_id} ts={timestamp} (epoch {epoch}): alone in the active set"
                )
            } else {
                format!(
                    "{lock}: REQUEST #{request_id} ts={timestamp} (epoch {epoch}): asking {}",
                    l(awaiting)
                )
            }
        }
        Event::RequestSent {
            lock,
            to,
            request_id,
            attempt,
            timestamp,
            ..
        } => {
            if *attempt == 0 {
                format!(
                    "{lock}:   REQUEST #{request_id} ts={timestamp} -> {}",
                    p(to)
                )
            } else {
                format!(
                    "{lock}:   REQUEST #{request_id} ts={timestamp} -> {} (attempt {attempt})",
                    p(to)
                )
            }
        }
        Event::RequestReceived {
            lock,
            from,
            request_id,
            timestamp,
            own_timestamp,
            decision,
            ..
        } => {
            let me_short = format!(":{}", me.addr.port());
            let why = match (decision, own_timestamp) {
                (Decision::Defer(DeferReason::InCriticalSection), _) => {
                    "DEFER: this node holds it".to_string()
                }
                (Decision::Defer(DeferReason::OwnRequestFirst { own_timestamp }), _) => format!(
                    "DEFER: ours (ts={own_timestamp}, {me_short}) comes before it (ts={timestamp}, {})",
                    p(from)
                ),
                (Decision::Defer(DeferReason::EvictionPending), _) => {
                    "DEFER: this node voted to remove it from the active set".to_string()
                }
                (Decision::Grant, Some(own)) => format!(
                    "grant: it (ts={timestamp}, {}) comes before ours (ts={own}, {me_short})",
                    p(from)
                ),
                (Decision::Grant, None) => "grant: not asking".to_string(),
            };
            format!(
                "{lock}: REQUEST #{request_id} ts={timestamp} <- {}: {why}",
                p(from)
            )
        }
        Event::ReplySent {
            lock,
            to,
            request_id,
            deferred,
            ..
        } => {
            if *deferred {
                format!(
                    "{lock}:   REPLY #{request_id} -> {} (deferred until now)",
                    p(to)
                )
            } else {
                format!("{lock}:   REPLY #{request_id} -> {}", p(to))
            }
        }
        Event::ReplyReceived {
            lock,
            from,
            request_id,
            remaining,
            ..
        } => {
            if *remaining == 0 {
                format!("{lock}: REPLY #{request_id} <- {}: all replied", p(from))
            } else {
                format!(
                    "{lock}: REPLY #{request_id} <- {}: {remaining} still to reply",
                    p(from)
                )
            }
        }
        Event::ReplyIgnored {
            lock,
            from,
            request_id,
            epoch,
            why,
        } => format!(
            "{lock}: ignored a reply from {} for #{request_id} (epoch {epoch}): {}",
            p(from),
            stale_reason(*why)
        ),
        Event::ReplyExpired {
            lock,
            from,
            request_id,
            when: Expiry::OnArrival,
        } => format!(
            "{lock}: the reply from {} for #{request_id} came after its grant lease (it may predate an eviction): asking again",
            p(from)
        ),
        Event::ReplyExpired {
            lock,
            from,
            request_id,
            when: Expiry::WhileWaiting,
        } => format!(
            "{lock}: the reply from {} for #{request_id} outlived its grant lease while another member's reply was awaited: asking again",
            p(from)
        ),
        Event::NewerSetSent {
            lock,
            to,
            request_id,
            epoch,
        } => format!(
            "{lock}:   told {} to ask again: its request #{request_id} named an older active set than epoch {epoch}",
            p(to)
        ),
        Event::Reissued {
            lock,
            request_id,
            epoch,
            awaiting,
        } => format!(
            "{lock}: REQUEST #{request_id} asked again under epoch {epoch}: asking {}",
            l(awaiting)
        ),
        Event::Withdrawn {
            lock,
            request_id,
            why,
        } => format!(
            "{lock}: request #{request_id} withdrawn: {}",
            withdraw_reason(*why)
        ),
        Event::Enter {
            lock,
            ticket,
            fence,
            lamport,
            waited,
            handed_on,
            ..
        } => format!(
            "{lock}: ENTER (ticket {}), fence {fence}, Lamport {lamport}, waited {:.1} ms{}",
            TicketNo(*ticket),
            ms(*waited),
            if *handed_on {
                "; handed on within this node's hold"
            } else {
                ""
            }
        ),
        Event::Exit {
            lock,
            fence,
            held,
            released,
            ..
        } => {
            if released.is_empty() {
                format!("{lock}: EXIT fence {fence} after {:.1} ms", ms(*held))
            } else {
                format!(
                    "{lock}: EXIT fence {fence} after {:.1} ms; deferred replies to {}",
                    ms(*held),
                    l(released)
                )
            }
        }
        Event::Cancelled { lock, ticket } => {
            format!(
                "{lock}: ticket {} cancelled while waiting",
                TicketNo(*ticket)
            )
        }
        Event::Forwarded { lock, ticket, to } => format!(
            "{lock}: ticket {ticket} FORWARDED to {} (no seat here: a member asks for it)",
            p(to)
        ),
        Event::Serving {
            lock,
            ticket,
            spectator,
            their_ticket,
        } => format!(
            "{lock}: asking for spectator {} (its ticket {their_ticket}) as ticket {}",
            p(spectator),
            TicketNo(*ticket)
        ),
        Event::EnterVia {
            lock,
            ticket,
            fence,
            via,
            waited,
        } => format!(
            "{lock}: ENTER through {} (ticket {ticket}), fence {fence}, waited {:.1} ms",
            p(via),
            ms(*waited)
        ),
        Event::ExitVia {
            lock,
            fence,
            via,
            held,
            ..
        } => format!(
            "{lock}: EXIT through {}, fence {fence} after {:.1} ms",
            p(via),
            ms(*held)
        ),
        Event::Refused { lock, ticket, why } => {
            let ticket = TicketNo(*ticket);
            match why {
                RefusedReason::NotFree => {
                    format!("{lock}: ticket {ticket} refused: a try, and the lock is taken")
                }
                RefusedReason::NodeLeaving => {
                    format!("{lock}: ticket {ticket} refused: the node is leaving")
                }
                RefusedReason::TooMany => {
                    format!("{lock}: ticket {ticket} refused: its member serves no more of ours")
                }
            }
        }
        Event::BusySent {
            lock,
            to,
            request_id,
        } => format!(
            "{lock}:   BUSY #{request_id} -> {}: a try, which this node would hold back",
            p(to)
        ),
        Event::Lost {
            lock,
            ticket,
            fence,
            why,
        } => {
            let ticket = TicketNo(*ticket);
            match fence {
                Some(fence) => format!(
                    "{lock}: LOCK LOST by ticket {ticket} (fence {fence}): {}; its client must stop",
                    loss_reason(*why)
                ),
                None => format!(
                    "{lock}: ticket {ticket} dropped before it got the lock: {}",
                    loss_reason(*why)
                ),
            }
        }
        Event::FenceSpaceExhausted { lock, epoch } => format!(
            "{lock}: epoch {epoch} handed out every fence it can; waiting for the next epoch"
        ),
        Event::Paused {
            stopped_for,
            holding,
        } => {
            if holding.is_empty() {
                format!(
                    "this process was stopped for {:.1} s (SIGSTOP, a frozen VM or a stall)",
                    stopped_for.as_secs_f64()
                )
            } else {
                let names: Vec<String> = holding.iter().map(|h| h.to_string()).collect();
                format!(
                    "this process was stopped for {:.1} s while holding {}: the cluster may have declared it failed and let another node in; a resource that checks fences refuses the stale holder",
                    stopped_for.as_secs_f64(),
                    names.join(", ")
                )
            }
        }
        Event::Leaving { dropped_tickets } => {
            if *dropped_tickets == 0 {
                "leaving the cluster: handing over the seat".to_string()
            } else {
                format!(
                    "leaving the cluster: handing over the seat; {dropped_tickets} waiting tickets dropped"
                )
            }
        }
        Event::LeaveTimedOut => {
            "no quorum confirmed the handover in time; leaving anyway (peers will see a failure)"
                .into()
        }
        Event::Left => "left the cluster".into(),
        Event::Dropped {
            what: kind,
            from,
            why,
        } => format!(
            "dropped a {} from {from}: {}",
            what(*kind),
            drop_reason(why)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DropSource;
    use crate::protocol::lock::{Fence, LockName};

    /// A drop's source is one string in the JSON log and the same text in the
    /// sentence, exactly as when the field was a string: older logs still read.
    #[test]
    fn drop_sources_read_as_when_they_were_text() {
        let v4: std::net::SocketAddr = "127.0.0.1:7003".parse().expect("address");
        let cases = [
            (DropSource::Process(pid(7002)), "127.0.0.1:7002~1"),
            (DropSource::Address(v4), "127.0.0.1:7003"),
            (
                DropSource::Address("[::1]:7003".parse().expect("address")),
                "[::1]:7003",
            ),
            (DropSource::Gossip, "gossip"),
            (DropSource::Unknown, "unknown"),
        ];
        for (from, text) in cases {
            let event = Event::Dropped {
                what: DroppedWhat::Datagram,
                from,
                why: DropReason::Overloaded,
            };
            assert_eq!(
                sentence(pid(7001), &event),
                format!("dropped a datagram from {text}: the node's inbox is full")
            );
            let json = serde_json::to_string(&event).expect("serialize");
            assert!(json.contains(&format!("\"from\":\"{text}\"")), "{json}");
            let back: Event = serde_json::from_str(&json).expect(&json);
            assert_eq!(back, event);
        }
        for bad in ["", "gossip~1", "127.0.0.1:7002~x", "somewhere"] {
            let json = format!(
                r#"{{"event":"dropped","what":"datagram","from":"{bad}","reason":"overloaded"}}"#
            );
            assert!(serde_json::from_str::<Event>(&json).is_err(), "{json}");
        }
    }

    /// SWIM's troubles are data from the core, and read in the text log as
    /// the notes they replaced did, now as warnings: an operator acts on them.
    #[test]
    fn swim_troubles_read_as_the_notes_they_replaced() {
        let cases = [
            (
                Event::IdentityRenewalsExhausted,
                "identity renewals exhausted: restart this node",
            ),
            (
                Event::SwimError {
                    during: SwimStep::Timer,
                    error: "oops".into(),
                },
                "SWIM timer: oops",
            ),
            (
                Event::SwimError {
                    during: SwimStep::RenewIdentity,
                    error: "oops".into(),
                },
                "cannot renew the SWIM identity: oops",
            ),
        ];
        for (event, text) in cases {
            assert_eq!(sentence(pid(7001), &event), text);
            assert_eq!(level_of(&event), Level::WARN);
            let json = serde_json::to_string(&event).expect("serialize");
            let back: Event = serde_json::from_str(&json).expect(&json);
            assert_eq!(back, event);
        }
        let json = serde_json::to_string(&Event::SwimError {
            during: SwimStep::RenewIdentity,
            error: "oops".into(),
        })
        .expect("serialize");
        assert_eq!(
            json,
            r#"{"event":"swim_error","during":"renew_identity","error":"oops"}"#
        );
    }

    #[test]
    fn a_flood_of_drops_is_a_few_lines_and_a_summary() {
        let mut limiter = DropLimiter::default();
        let shown = (0..10_000)
            .filter(|_| limiter.admit(DroppedWhat::Datagram, "malformed"))
            .count();
        assert_eq!(shown, DROPS_SHOWN as usize);
        assert!(
            limiter.admit(DroppedWhat::Message, "forged sender"),
            "counted per kind of input"
        );
        let summaries = limiter.summaries(true);
        assert_eq!(summaries.len(), 1);
        let Event::DropsSummarised { count, reasons, .. } = &summaries[0] else {
            panic!("not a summary: {summaries:?}");
        };
        assert_eq!(*count, 10_000 - u64::from(DROPS_SHOWN));
        assert_eq!(reasons, &vec![("malformed".to_string(), *count)]);
        // A new window shows the first few in full again.
        assert!(limiter.admit(DroppedWhat::Datagram, "malformed"));
    }

    fn pid(port: u16) -> ProcessId {
        ProcessId::new(format!("127.0.0.1:{port}").parse().expect("addr"), 1)
    }

    #[test]
    fn lines_name_local_peers_by_port() {
        let event = Event::RequestSent {
            lock: LockName::default_lock(),
            to: pid(7002),
            request_id: 3,
            attempt: 0,
            timestamp: 12,
            epoch: 2,
        };
        assert_eq!(
            sentence(pid(7001), &event),
            "default:   REQUEST #3 ts=12 -> :7002"
        );
        let remote = ProcessId::new("10.0.0.5:7000".parse().expect("addr"), 1);
        let event = Event::MemberJoined { member: remote };
        assert_eq!(sentence(pid(7001), &event), "member 10.0.0.5:7000 JOINED");
    }

    #[test]
    fn carried_tickets_read_as_s_numbers() {
        let event = Event::Serving {
            lock: LockName::default_lock(),
            ticket: PROXY_TICKETS + 2,
            spectator: pid(7003),
            their_ticket: 1,
        };
        assert_eq!(
            sentence(pid(7001), &event),
            "default: asking for spectator :7003 (its ticket 1) as ticket S2"
        );
        let event = Event::Cancelled {
            lock: LockName::default_lock(),
            ticket: 7,
        };
        assert_eq!(
            sentence(pid(7001), &event),
            "default: ticket 7 cancelled while waiting"
        );
    }

    /// A grant that came late and one that ran out while another reply was
    /// awaited read differently, and only the first is a warning.
    #[test]
    fn expired_replies_say_when_they_expired() {
        let expired = |when| Event::ReplyExpired {
            lock: LockName::default_lock(),
            from: pid(7002),
            request_id: 8,
            when,
        };
        let late = expired(Expiry::OnArrival);
        assert_eq!(level_of(&late), Level::WARN);
        assert!(
            sentence(pid(7001), &late).contains("came after its grant lease"),
            "{}",
            sentence(pid(7001), &late)
        );
        let waited = expired(Expiry::WhileWaiting);
        assert_eq!(level_of(&waited), Level::INFO);
        let line = sentence(pid(7001), &waited);
        assert!(
            line.contains("while another member's reply was awaited")
                && !line.contains("came after"),
            "{line}"
        );
    }

    #[test]
    fn records_round_trip_through_json() {
        let events = [
            Event::Enter {
                lock: LockName::new("jobs").expect("valid"),
                ticket: 4,
                request_id: 9,
                timestamp: 31,
                fence: Fence { epoch: 2, seq: 5 },
                lamport: 40,
                waited: Duration::from_micros(1500),
                handed_on: true,
            },
            Event::Dropped {
                what: DroppedWhat::Message,
                from: DropSource::Process(pid(7002)),
                why: DropReason::ClockTooFarAhead { seen: 9, own: 1 },
            },
            Event::Dropped {
                what: DroppedWhat::Datagram,
                from: DropSource::Address("[::1]:7003".parse().expect("address")),
                why: DropReason::Malformed {
                    detail: "short".into(),
                },
            },
            Event::Dropped {
                what: DroppedWhat::Datagram,
                from: DropSource::Gossip,
                why: DropReason::NodeLeaving,
            },
            Event::Dropped {
                what: DroppedWhat::Stream,
                from: DropSource::Unknown,
                why: DropReason::Overloaded,
            },
            Event::RequestReceived {
                lock: LockName::default_lock(),
                from: pid(7002),
                request_id: 1,
                timestamp: 3,
                epoch: 2,
                own_timestamp: Some(2),
                decision: Decision::Defer(DeferReason::OwnRequestFirst { own_timestamp: 2 }),
            },
        ];
        for event in events {
            let record = LogRecord {
                time: jiff::Timestamp::UNIX_EPOCH,
                level: "INFO".into(),
                node: Some(pid(7001)),
                message: sentence(pid(7001), &event),
                event,
            };
            let line = serde_json::to_string(&record).expect("serialize");
            let back: LogRecord = serde_json::from_str(&line).expect(&line);
            assert_eq!(back, record, "{line}");
        }
    }

    #[test]
    fn text_lines_fit_side_by_side_terminals() {
        let event = Event::ReplySent {
            lock: LockName::default_lock(),
            to: pid(7002),
            request_id: 17,
            epoch: 2,
            deferred: true,
        };
        let line = text_line(Level::INFO, &sentence(pid(7001), &event));
        assert!(line.len() <= 80, "{line} ({} columns)", line.len());
    }
}
