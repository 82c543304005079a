//! The client API (`proto/ra/v1/lock.proto`, service `ra.v1.Lock`), served on a
//! local Unix socket: programs hold named locks through streaming sessions,
//! and ask the node how it stands. `grpc.health.v1` and server reflection are
//! served beside it.
//!
//! The socket is created with mode 0600 (under a umask of 077, so there is no
//! moment it is wider): file permissions are the access control, as with
//! docker.sock. Nothing on the network reaches it.
//!
//! Just over 500 lines, one job: the service, its Hold session, and the
//! translation of the node's answers into the API's messages.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::UnixListener;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status as GrpcStatus, Streaming};

use super::client::{Clients, TicketHandle, TicketNews};
use crate::event::{LossReason, RefusedReason};
use crate::node::{Role, Status, TicketProgress};
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::LockName;
use crate::wire::pb;

/// How often a holder's session hears from its node: a client that hears
/// nothing for much longer must assume its node stopped or was cut off.
pub const HEARTBEAT: Duration = Duration::from_millis(200);
/// How often a waiting session checks where its ticket stands.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Locks listed in a status reply at most; the rest are counted.
const MAX_LISTED_LOCKS: usize = 1000;
/// How long `Status` waits for the members to say what they hold.
const WHO_HOLDS_WAIT: Duration = Duration::from_millis(300);
/// Concurrent API sessions at most: a runaway client cannot exhaust the node.
const MAX_CONNECTIONS: usize = 1024;

/// Bind the API socket: mode 0600 from the start. A socket file left by a
/// crashed node is replaced; one that a live node answers on is an error.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for the API socket", dir.display()))?;
        set_mode(dir, 0o700)?;
    }
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => bail!(
                "the API socket {} is in use by another node (give this one --api PATH, or --no-api)",
                path.display()
            ),
            Err(_) => std::fs::remove_file(path).with_context(|| {
                format!("cannot remove the stale API socket {}", path.display())
            })?,
        }
    }
    // SAFETY: umask only changes this process's file-creation mask; it is put
    // back at once, and no other thread creates files meanwhile at start-up.
    let previous = unsafe { libc::umask(0o077) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    let listener =
        listener.with_context(|| format!("cannot listen on the API socket {}", path.display()))?;
    set_mode(path, 0o600)?;
    Ok(listener)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// Serve the API on `listener` until `shutdown` resolves; the socket file is
/// removed then.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    clients: Clients,
    me: ProcessId,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // tonic-health starts "" at SERVING: say NOT_SERVING until report_health
    // has asked the node, or a probe that connects first is told it is ready.
    for service in ["", "ra.v1.Lock"] {
        health
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }
    // Both versions of reflection: grpcurl asks v1, older clients v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::wire::DESCRIPTORS)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("ra.v1.Lock")
            .with_service_name("grpc.health.v1.Health")
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("cannot build the reflection service")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("cannot build the reflection service")?;
    tokio::spawn(report_health(health, clients.clone()));
    let api = LockApi {
        clients,
        me,
        path: path.clone(),
        started: Instant::now(),
    };
    let result = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(64)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::lock_server::LockServer::new(api))
        .serve_with_incoming_shutdown(
            super::limit::limit(UnixListenerStream::new(listener), MAX_CONNECTIONS, None),
            shutdown,
        )
        .await;
    let _ = std::fs::remove_file(&path);
    result.context("the client API stopped")
}

/// SERVING while the node is in a cluster (active or spectator), NOT_SERVING
/// while it joins or leaves: what a readiness probe wants to know.
async fn report_health(health: tonic_health::server::HealthReporter, clients: Clients) {
    use tonic_health::ServingStatus;
    let mut last = None;
    loop {
        let serving = match clients.status().await {
            Ok(status) => matches!(status.role, Role::Active | Role::Spectator),
            Err(_) => false,
        };
        if last != Some(serving) {
            let state = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status("", state).await;
            health.set_service_status("ra.v1.Lock", state).await;
            last = Some(serving);
        }
        if clients.is_stopped() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct LockApi {
    clients: Clients,
    me: ProcessId,
    path: PathBuf,
    started: Instant,
}

type HoldStream = Pin<Box<dyn Stream<Item = Result<pb::HoldEvent, GrpcStatus>> + Send>>;

#[tonic::async_trait]
impl pb::lock_server::Lock for LockApi {
    type HoldStream = HoldStream;

    async fn hold(
        &self,
        request: Request<Streaming<pb::HoldRequest>>,
    ) -> Result<Response<Self::HoldStream>, GrpcStatus> {
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| GrpcStatus::invalid_argument("the stream ended before an Acquire"))?;
        let Some(pb::hold_request::Kind::Acquire(acquire)) = first.kind else {
            return Err(GrpcStatus::invalid_argument(
                "the first message of a Hold stream must be an Acquire",
            ));
        };
        let lock = LockName::new(&acquire.lock)
            .map_err(|e| GrpcStatus::invalid_argument(e.to_string()))?;
        let ticket = self
            .clients
            .acquire_with(lock, acquire.r#try)
            .map_err(|_| GrpcStatus::unavailable("the node has stopped"))?;
        // The session is the response stream itself: tonic polls it, so a
        // grant goes from the node's channel straight to the HTTP/2 stream,
        // with no task or channel of its own between them. When the client
        // goes away, tonic drops it, and its ticket is released as it drops.
        let session = Session::new(
            ticket,
            incoming,
            self.clients.clone(),
            self.me.addr.to_string(),
        );
        Ok(Response::new(Box::pin(session)))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, GrpcStatus> {
        let stopped = |_| GrpcStatus::unavailable("the node has stopped");
        let status = self.clients.status().await.map_err(stopped)?;
        let holders = self
            .clients
            .who_holds(WHO_HOLDS_WAIT)
            .await
            .map_err(stopped)?;
        let mut reply = status_reply(&status, &self.path, self.started.elapsed());
        let answered: Vec<ProcessId> = holders.iter().map(|(p, _)| *p).collect();
        reply.no_answer = status
            .active_set
            .iter()
            .flat_map(|s| s.members.iter())
            .filter(|m| !answered.contains(m))
            .map(|m| m.addr.to_string())
            .collect();
        reply.holders = holders
            .into_iter()
            .flat_map(|(node, locks)| {
                locks.into_iter().map(move |held| pb::ClusterHolder {
                    lock: held.lock.to_string(),
                    node: node.addr.to_string(),
                    fence: held.fence.token().unwrap_or(0),
                    held_ms: millis(held.held),
                })
            })
            .collect();
        Ok(Response::new(reply))
    }
}

/// The node's answer to "where does this ticket stand", on its way.
type Asking = Pin<Box<dyn Future<Output = Result<Option<TicketProgress>>> + Send>>;

/// One client's hold on one lock, for as long as its stream lives: the stream
/// of events the client reads.
struct Session {
    ticket: TicketHandle,
    incoming: Streaming<pb::HoldRequest>,
    clients: Clients,
    /// The first event, sent before anything else.
    queued: Option<pb::hold_event::Kind>,
    holding: bool,
    last_progress: Option<TicketProgress>,
    progress: Interval,
    heartbeat: Interval,
    /// A progress question on its way to the node.
    asking: Option<Asking>,
    done: bool,
}

fn event(kind: pb::hold_event::Kind) -> Result<pb::HoldEvent, GrpcStatus> {
    Ok(pb::HoldEvent { kind: Some(kind) })
}

impl Session {
    fn new(
        ticket: TicketHandle,
        incoming: Streaming<pb::HoldRequest>,
        clients: Clients,
        node: String,
    ) -> Self {
        let queued = pb::hold_event::Kind::Queued(pb::Queued {
            ticket: ticket.ticket,
            node,
            heartbeat_ms: HEARTBEAT.as_millis() as u32,
        });
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        // A long wait before the grant owes the client no burst of heartbeats.
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            ticket,
            incoming,
            clients,
            queued: Some(queued),
            holding: false,
            last_progress: None,
            progress: tokio::time::interval(PROGRESS_EVERY),
            heartbeat,
            asking: None,
            done: false,
        }
    }

    /// The end of the stream, with `last` as its final item. The ticket is
    /// given back now rather than when tonic gets round to dropping the stream.
    fn finish(
        &mut self,
        last: Option<Result<pb::HoldEvent, GrpcStatus>>,
    ) -> Poll<Option<Result<pb::HoldEvent, GrpcStatus>>> {
        self.ticket.give_back();
        self.done = true;
        Poll::Ready(last)
    }
}

impl Stream for Session {
    type Item = Result<pb::HoldEvent, GrpcStatus>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        use pb::hold_event::Kind;
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(queued) = this.queued.take() {
            return Poll::Ready(Some(event(queued)));
        }
        if let Poll::Ready(news) = this.ticket.poll_next(cx) {
            let kind = match news {
                Some(TicketNews::Granted(fence)) => {
                    this.holding = true;
                    this.heartbeat.reset();
                    Kind::Granted(pb::Granted {
                        fence: fence.token().unwrap_or(0),
                        epoch: fence.epoch,
                        seq: fence.seq,
                    })
                }
                Some(TicketNews::Lost(why)) => Kind::Lost(pb::Lost {
                    reason: loss_name(why).into(),
                    detail: crate::runtime::log::loss_reason(why).into(),
                }),
                Some(TicketNews::Refused(why)) => {
                    return this.finish(Some(event(Kind::Refused(refused(why)))));
                }
                None => {
                    return this.finish(Some(Err(GrpcStatus::unavailable("the node stopped"))));
                }
            };
            return Poll::Ready(Some(event(kind)));
        }
        match Pin::new(&mut this.incoming).poll_next(cx) {
            Poll::Ready(Some(Ok(pb::HoldRequest {
                kind: Some(pb::hold_request::Kind::Release(_)),
            }))) => {
                return this.finish(None);
            }
            Poll::Ready(Some(Ok(_))) => {
                return this.finish(Some(Err(GrpcStatus::invalid_argument(
                    "after the Acquire, a Hold stream takes only a Release",
                ))));
            }
            // The client closed its side or went away.
            Poll::Ready(None | Some(Err(_))) => return this.finish(None),
            Poll::Pending => {}
        }
        if this.holding {
            if this.heartbeat.poll_tick(cx).is_ready() {
                return Poll::Ready(Some(event(Kind::Heartbeat(pb::Heartbeat {}))));
            }
            return Poll::Pending;
        }
        loop {
            if let Some(asking) = this.asking.as_mut() {
                let Poll::Ready(answer) = asking.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                this.asking = None;
                let Ok(now) = answer else {
                    return this.finish(None);
                };
                if let Some(now) = now
                    && this.last_progress.as_ref() != Some(&now)
                {
                    let kind = Kind::Progress(progress_event(&now));
                    this.last_progress = Some(now);
                    return Poll::Ready(Some(event(kind)));
                }
            }
            if this.progress.poll_tick(cx).is_pending() {
                return Poll::Pending;
            }
            let clients = this.clients.clone();
            let lock = this.ticket.lock.clone();
            let ticket = this.ticket.ticket;
            this.asking = Some(Box::pin(
                async move { clients.progress(&lock, ticket).await },
            ));
        }
    }
}

pub fn loss_name(why: LossReason) -> &'static str {
    match why {
        LossReason::Evicted => "evicted",
        LossReason::QuorumLost => "quorum_lost",
        LossReason::Paused => "paused",
        LossReason::NodeLeaving => "node_leaving",
        LossReason::ProxyLost => "proxy_lost",
        LossReason::ProxySilent => "proxy_silent",
    }
}

fn refused(why: RefusedReason) -> pb::Refused {
    let (code, detail) = match why {
        RefusedReason::NotFree => (pb::refused::Why::NotFree, "the lock is taken"),
        RefusedReason::NodeLeaving => (pb::refused::Why::NodeLeaving, "the node is leaving"),
        RefusedReason::TooMany => (
            pb::refused::Why::TooMany,
            "the member serving this spectator takes no more of its tickets",
        ),
    };
    pb::Refused {
        why: code as i32,
        detail: detail.into(),
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Joining => "joining",
        Role::Active => "active",
        Role::Spectator => "spectator",
        Role::Leaving => "leaving",
    }
}

fn progress_event(progress: &TicketProgress) -> pb::Progress {
    pb::Progress {
        role: role_name(progress.role).into(),
        ahead_here: progress.ahead_here as u32,
        waiting_for: progress
            .waiting_for
            .iter()
            .map(|p| p.addr.to_string())
            .collect(),
        seat_position: progress.seat_position as u32,
        seat_line: progress.seat_line as u32,
    }
}

fn member(p: &ProcessId) -> pb::Member {
    pb::Member {
        addr: p.addr.to_string(),
        incarnation: p.incarnation,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn status_reply(status: &Status, api: &Path, uptime: Duration) -> pb::StatusReply {
    let now = status.now;
    let locks = status
        .locks
        .iter()
        .take(MAX_LISTED_LOCKS)
        .map(|lock| pb::LockState {
            name: lock.name.to_string(),
            holder: lock.holder.map(|h| pb::LocalHolder {
                ticket: h.ticket,
                fence: h.fence.token().unwrap_or(0),
                held_ms: millis(now.saturating_sub(h.since)),
                client: String::new(),
                lost: h.lost,
            }),
            waiting_here: lock.waiting.len() as u32,
            request_waiting_for: lock
                .request
                .iter()
                .flat_map(|r| r.awaiting.iter().map(|p| p.addr.to_string()))
                .collect(),
            deferring: lock.deferring.iter().map(|p| p.addr.to_string()).collect(),
            last_granted_to: lock
                .last_granted
                .map(|(p, _)| p.addr.to_string())
                .unwrap_or_default(),
            last_granted_ms_ago: lock
                .last_granted
                .map_or(0, |(_, at)| millis(now.saturating_sub(at))),
            last_fence: lock.last_fence.and_then(|f| f.token()).unwrap_or(0),
        })
        .collect();
    let set = status.active_set.as_ref();
    pb::StatusReply {
        node: Some(member(&status.me)),
        role: role_name(status.role).into(),
        api: api.display().to_string(),
        live_members: status.live_members.iter().map(member).collect(),
        epoch: set.map_or(0, |s| s.epoch),
        active_set: set
            .map(|s| s.members.iter().map(member).collect())
            .unwrap_or_default(),
        max_active: set.map_or(0, |s| s.max_active),
        cluster: set.map(|s| member(&s.cluster)),
        spectators: status.spectators.iter().map(member).collect(),
        lamport_clock: status.clock,
        uptime_ms: millis(uptime),
        locks,
        locks_not_listed: status.locks.len().saturating_sub(MAX_LISTED_LOCKS) as u32,
        holders: Vec::new(),
        no_answer: Vec::new(),
    }
}
