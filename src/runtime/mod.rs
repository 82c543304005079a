//! The tokio shell around the sans-IO [`Node`]: sockets, timers, clients,
//! signals. One task owns the node; the others only move bytes, lines and
//! client requests to it over channels. Beside it: `transport/` (peer streams,
//! their server, handshake and TLS), `api` (the local client API), `client`
//! (tickets of in-process clients), `console` (stdin), `data_dir`
//! (`--data-dir`), `limit` (connection caps), `log` (events as lines).
//!
//! A little over 500 lines: the one task that owns the node and turns its outputs
//! into effects; the I/O it drives lives in the sibling files.

pub mod api;
pub mod client;
pub mod console;
pub mod data_dir;
pub mod limit;
pub mod log;
pub mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::agenda::Agenda;
use crate::config::NodeConfig;
use crate::cs::{CriticalSection, unix_us};
use crate::event::{DropReason, DroppedWhat, Event, Ticket};
use crate::membership::seal::{Keyring, OpenError, Sealer};
use crate::node::{Input, Node, Output, PROXY_TICKETS, TimerId};
use crate::protocol::ids::ProcessId;
use crate::protocol::message::HeldLock;
use client::{Clients, Control, TicketNews};
use transport::{Peers, WireStats};

/// What the socket tasks hand to the node's task. Bounded: a flood waits here
/// rather than growing memory.
pub type Inbound = Input;

/// An event seen by an in-process observer, with when it happened.
pub type Observed = (Instant, ProcessId, Event);

pub struct RunOptions {
    pub config: NodeConfig,
    /// Read requests and commands from stdin.
    pub console: bool,
    /// Leave gracefully on SIGINT and SIGTERM.
    pub signals: bool,
    /// Every event, for in-process tools.
    pub observer: Option<mpsc::UnboundedSender<Observed>>,
    /// Log events through `tracing` (off for quiet in-process clusters).
    pub log_events: bool,
    /// Print a line on stdout on every entry and exit (off for `ra bench`, whose
    /// thousands of entries would bury its output).
    pub print_cs: bool,
}

/// A node running in this process.
pub struct NodeHandle {
    pub me: ProcessId,
    /// The client API's socket, if served.
    pub api: Option<std::path::PathBuf>,
    pub clients: Clients,
    pub stats: Arc<WireStats>,
    pub task: tokio::task::JoinHandle<Result<()>>,
    /// The socket tasks, stopped with the node by `kill`.
    helpers: Vec<tokio::task::JoinHandle<()>>,
}

impl NodeHandle {
    /// Stop at once, as SIGKILL would: no leave, no goodbye; the sockets close.
    pub fn kill(&self) {
        self.task.abort();
        for helper in &self.helpers {
            helper.abort();
        }
    }

    /// The address peers reach this node at (with the real port when it bound
    /// port 0).
    pub fn addr(&self) -> SocketAddr {
        self.me.addr
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // std seeds RandomState from the operating system's entropy.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(unix_us());
    hasher.finish()
}

/// UDP (SWIM) and TCP (gRPC) on one port, so one address names a node. Port 0
/// picks a port free for both.
async fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot bind {addr} (UDP, for membership)"))?;
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind {addr} (TCP, for gRPC)"))?;
        return Ok((udp, tcp));
    }
    for _ in 0..64 {
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot bind {addr} (UDP, for membership)"))?;
        let port = udp.local_addr()?.port();
        if let Ok(tcp) = TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            return Ok((udp, tcp));
        }
    }
    anyhow::bail!("found no port on {} free for both UDP and TCP", addr.ip())
}

/// Bind the sockets (errors are returned here, before anything runs) and start
/// the node's tasks.
pub async fn start(options: RunOptions) -> Result<NodeHandle> {
    let mut config = options.config;
    let (udp, tcp) = bind(config.bind).await?;
    let bound = udp.local_addr()?;
    if config.advertise.port() == 0 {
        config.advertise.set_port(bound.port());
    }
    config.bind.set_port(bound.port());
    let cs = CriticalSection::open(
        config.advertise,
        config.cs_file.as_deref(),
        options.print_cs,
    )?;
    let me = ProcessId::new(config.advertise, unix_us());
    let (data_dir, durability) = match &config.data_dir {
        Some(path) => {
            let (dir, found) = data_dir::DataDir::open(path, config.advertise)?;
            (Some(dir), found)
        }
        None => (None, crate::node::Durability::Off),
    };
    let api_path = match &config.api {
        crate::config::ApiSocket::Off => None,
        crate::config::ApiSocket::PerPort => Some(crate::config::default_api_path(bound.port())),
        crate::config::ApiSocket::At(path) => Some(path.clone()),
    };
    let api_listener = match &api_path {
        Some(path) => Some(api::bind(path)?),
        None => None,
    };
    let log_event = |event: &Event| {
        if options.log_events {
            log::emit(me, event);
        }
    };
    log_event(&Event::Listening {
        node: me,
        bind: config.bind,
        api: api_path.clone(),
        authenticated: config.cluster_key.is_some(),
        tls: config.tls.is_some(),
        data_dir: config.data_dir.clone(),
    });
    let detection = config.settings.swim.probe_period + config.settings.swim.suspect_to_down_after;
    if config.console_hold >= detection && (options.console || config.requests > 0) {
        log_event(&Event::HoldOutlastsDetection {
            hold: config.console_hold,
            detection,
        });
    }

    // TLS without a cluster key still tags the datagrams with the CA (see
    // `PeerTls::datagram_key`): nodes without TLS or of another CA stay out.
    let sealer = Arc::new(RwLock::new(match (&config.cluster_key, &config.tls) {
        (Some((_, keys)), _) => Sealer::Keyed(keys.clone()),
        (None, Some(tls)) => match Keyring::new(vec![tls.datagram_key()]) {
            Some(ring) => Sealer::Keyed(ring),
            None => Sealer::Plain,
        },
        (None, None) => Sealer::Plain,
    }));
    let (inbox_tx, inbox_rx) = mpsc::channel::<Inbound>(8192);
    let (control_tx, control_rx) = mpsc::unbounded_channel::<Control>();
    let clients = Clients::new(control_tx);
    let udp = Arc::new(udp);
    let mut helpers = vec![tokio::spawn(receive_datagrams(
        udp.clone(),
        inbox_tx.clone(),
        config.settings.swim.max_packet_size,
        sealer.clone(),
        me,
    ))];
    if options.signals
        && let Some((path, _)) = &config.cluster_key
    {
        tokio::spawn(console::reload_keys_on_hangup(
            path.clone(),
            sealer.clone(),
            me,
        ));
    }
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let server_inbox = inbox_tx.clone();
    let server_sealer = sealer.clone();
    let limits = config.limits.clone();
    let server_tls = config.tls.clone();
    helpers.push(tokio::spawn(async move {
        let shutdown = async {
            let _ = server_stopped.await;
        };
        if let Err(e) = transport::serve(
            tcp,
            server_inbox,
            me,
            server_sealer,
            limits,
            server_tls,
            shutdown,
        )
        .await
        {
            tracing::error!(target: "ra::transport", "the gRPC server stopped: {e}");
        }
    }));
    let (stop_api, api_stopped) = oneshot::channel::<()>();
    if let (Some(listener), Some(path)) = (api_listener, api_path.clone()) {
        let api_clients = clients.clone();
        helpers.push(tokio::spawn(async move {
            let shutdown = async {
                let _ = api_stopped.await;
            };
            if let Err(e) = api::serve(listener, path, api_clients, me, shutdown).await {
                tracing::error!(target: "ra::api", "{e:#}");
            }
        }));
    }
    if options.console {
        tokio::spawn(console::read_console(clients.clone(), config.console_hold));
    }
    if options.signals {
        tokio::spawn(console::leave_on_signal(clients.clone()));
    }
    if config.requests > 0 {
        tokio::spawn(console::run_requests(
            clients.clone(),
            config.requests,
            config.console_hold,
            config.stay,
        ));
    }

    let stats = Arc::new(WireStats::default());
    let base = Instant::now();
    let node = Node::with_durability(
        me,
        config.join.clone(),
        config.settings.clone(),
        random_seed(),
        Duration::ZERO,
        durability,
    );
    let shell = Shell {
        node,
        base,
        udp,
        peers: Peers::new(
            me,
            inbox_tx.clone(),
            stats.clone(),
            sealer.clone(),
            config.tls.clone(),
        ),
        sealer,
        timers: Agenda::default(),
        cs,
        sessions: HashMap::new(),
        queries: HashMap::new(),
        next_query: 0,
        observer: options.observer,
        log_events: options.log_events,
        me,
        data_dir,
        failed: None,
    };
    let task = tokio::spawn(async move {
        let result = shell.run(inbox_rx, control_rx).await;
        let _ = stop_server.send(());
        let _ = stop_api.send(());
        result
    });
    Ok(NodeHandle {
        me,
        api: api_path,
        clients,
        stats,
        task,
        helpers,
    })
}

/// The runtime one node runs on: a single thread. The node is one state
/// machine fed by a handful of socket tasks, so a second worker thread bought
/// nothing but wake-ups: under contention a third of the CPU went to threads
/// waking each other (futex and eventfd in `perf`), and the uncontended
/// acquire took twice as long.
pub fn node_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Run a node on its own tokio runtime until it leaves (the `ra` command). The
/// runtime is driven here rather than in `main`: a future is compiled in the
/// crate that polls it, so polling it from `main` compiled the whole node a
/// second time into the binary.
pub fn run_blocking(config: NodeConfig) -> Result<()> {
    let runtime = node_runtime()?;
    let result = runtime.block_on(run(config));
    // The stdin reader blocks in a thread that would hold up a normal shutdown.
    runtime.shutdown_background();
    result
}

/// Run a node until it leaves.
async fn run(config: NodeConfig) -> Result<()> {
    let handle = start(RunOptions {
        config,
        console: true,
        signals: true,
        observer: None,
        log_events: true,
        print_cs: true,
    })
    .await?;
    let result = handle.task.await.context("the node's task failed");
    // The API's task may not get to it before the process exits.
    if let Some(path) = &handle.api {
        let _ = std::fs::remove_file(path);
    }
    result?
}

struct Shell {
    node: Node,
    base: Instant,
    udp: Arc<UdpSocket>,
    peers: Peers,
    /// Frames every datagram: checksummed, or sealed with the cluster key.
    sealer: Arc<RwLock<Sealer>>,
    /// Every timer the node asked for, fired from this one task: a task per
    /// timer would let them fire out of order (see foca issue 26).
    timers: Agenda<Instant, TimerId>,
    cs: CriticalSection,
    /// Where each ticket's news goes, until its client gives it back.
    sessions: HashMap<Ticket, mpsc::UnboundedSender<TicketNews>>,
    /// Where the answers to each "who holds what" go.
    queries: HashMap<u64, mpsc::UnboundedSender<(ProcessId, Vec<HeldLock>)>>,
    next_query: u64,
    observer: Option<mpsc::UnboundedSender<Observed>>,
    log_events: bool,
    me: ProcessId,
    /// Where `Output::Persist` goes.
    data_dir: Option<data_dir::DataDir>,
    /// A write to the data directory failed: the node stops, since what
    /// follows the write may not be sent.
    failed: Option<anyhow::Error>,
}

impl Shell {
    fn now(&self) -> Duration {
        self.base.elapsed()
    }

    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Inbound>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) -> Result<()> {
        let mut left = self.apply_outputs();
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        while !left {
            let deadline = self.timers.next_time();
            tokio::select! {
                _ = housekeeping.tick() => {
                    self.peers.close_idle();
                    if self.log_events {
                        log::flush_drops(self.me);
                    }
                }
                next = inbox.recv() => match next {
                    Some(input) => {
                        let now = self.now();
                        self.node.handle(now, input);
                    }
                    None => return Ok(()),
                },
                Some(request) = control.recv() => self.on_control(request),
                _ = sleep_until(deadline) => {
                    let now = Instant::now();
                    while let Some((_, timer)) = self.timers.pop_due(now) {
                        let at = self.now();
                        self.node.handle(at, Input::Timer(timer));
                        left |= self.apply_outputs();
                    }
                }
            }
            left |= self.apply_outputs();
        }
        if let Some(error) = self.failed.take() {
            // Nothing more goes out: what follows depended on the write.
            return Err(error);
        }
        // Tell the clients still waiting that the node is gone.
        self.sessions.clear();
        // Give the last datagrams and messages (the leave) a moment to go out.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }

    fn on_control(&mut self, request: Control) {
        let now = self.now();
        match request {
            Control::Acquire {
                lock,
                ticket,
                try_only,
                news,
            } => {
                self.sessions.insert(ticket, news);
                let input = Input::Acquire {
                    lock,
                    ticket,
                    try_only,
                };
                self.node.handle(now, input);
            }
            Control::Progress {
                lock,
                ticket,
                reply,
            } => {
                let _ = reply.send(self.node.ticket_progress(&lock, ticket));
            }
            Control::Release { lock, ticket } => {
                self.sessions.remove(&ticket);
                self.node.handle(now, Input::Release { lock, ticket });
            }
            Control::Status(reply) => {
                let _ = reply.send(self.node.status());
            }
            Control::PrintStatus => console::print_status(&self.node.status(), now),
            Control::Leave => self.node.handle(now, Input::Leave),
            Control::WhoHolds { answers } => {
                self.next_query += 1;
                let query = self.next_query;
                // Forget queries whose askers have gone.
                self.queries.retain(|_, asker| !asker.is_closed());
                self.queries.insert(query, answers);
                self.node.handle(now, Input::AskWhoHolds { query });
            }
        }
    }

    /// Carry out what the node asked for; true once it has left.
    fn apply_outputs(&mut self) -> bool {
        let mut left = false;
        let outputs: Vec<Output> = self.node.drain_outputs().collect();
        for output in outputs {
            if self.failed.is_some() {
                return true;
            }
            match output {
                Output::Persist(state) => {
                    // Before every output after it: those may depend on it.
                    if let Some(dir) = &self.data_dir
                        && let Err(e) = dir.write(&state)
                    {
                        self.failed = Some(e.context(
                            "the node stops: it cannot keep its state in the data directory",
                        ));
                        return true;
                    }
                }
                Output::Datagram { to, data } => {
                    let mut nonce = [0u8; 24];
                    if getrandom::fill(&mut nonce).is_err() {
                        continue;
                    }
                    let sealed = match self.sealer.read() {
                        Ok(sealer) => sealer.seal(&data, nonce),
                        Err(_) => continue,
                    };
                    // UDP may drop; SWIM expects as much.
                    let _ = self.udp.try_send_to(&sealed, to);
                }
                Output::Message(envelope) => self.peers.send(&envelope),
                Output::Timer { at, timer } => self.timers.push(self.base + at, timer),
                Output::Event(event) => self.on_event(event),
                Output::Granted { ticket, fence, .. } => {
                    if let Some(session) = self.sessions.get(&ticket) {
                        // A client gone meanwhile releases through its drop.
                        let _ = session.send(TicketNews::Granted(fence));
                    }
                }
                Output::Lost { ticket, why, .. } => {
                    if let Some(session) = self.sessions.get(&ticket) {
                        let _ = session.send(TicketNews::Lost(why));
                    }
                }
                Output::Watch(processes) => self.peers.watch(&processes),
                Output::Holding { query, from, locks } => {
                    if let Some(asker) = self.queries.get(&query)
                        && asker.send((from, locks)).is_err()
                    {
                        self.queries.remove(&query);
                    }
                }
                Output::Refused { ticket, why, .. } => {
                    if let Some(session) = self.sessions.remove(&ticket) {
                        let _ = session.send(TicketNews::Refused(why));
                    }
                }
                Output::Left => left = true,
            }
        }
        left
    }

    fn on_event(&mut self, event: Event) {
        // The file line is written before any message that follows the event goes
        // out, so the file's order is the real order.
        // An entry made for a spectator is the spectator's to record: it
        // holds the lock, from its EnterVia to its ExitVia.
        match &event {
            Event::Enter {
                lock,
                ticket,
                request_id,
                fence,
                lamport,
                ..
            } if *ticket < PROXY_TICKETS => self.cs.enter(lock, *fence, *lamport, *request_id),
            Event::Exit {
                lock,
                ticket,
                fence,
                lamport,
                ..
            } if *ticket < PROXY_TICKETS => self.cs.exit(lock, *fence, *lamport),
            Event::EnterVia { lock, fence, .. } => self.cs.enter(lock, *fence, 0, 0),
            Event::ExitVia { lock, fence, .. } => self.cs.exit(lock, *fence, 0),
            _ => {}
        }
        if self.log_events {
            log::emit(self.me, &event);
        }
        if let Some(observer) = &self.observer {
            let _ = observer.send((Instant::now(), self.me, event));
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        // Already due: tokio's timer wheel would round it up to the next
        // millisecond, and a zero hold would cost a millisecond per entry.
        Some(at) if at <= Instant::now() => {}
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// At most one refusal notice per sender and per [`NOTICE_EVERY`], and a
/// bounded memory of senders: a flood of forged sources cannot make this node
/// send a flood of notices.
#[derive(Default)]
struct NoticeLimit {
    sent: HashMap<SocketAddr, Instant>,
}

const NOTICE_EVERY: Duration = Duration::from_secs(10);

impl NoticeLimit {
    fn allow(&mut self, to: SocketAddr) -> bool {
        let now = Instant::now();
        if self.sent.len() > 1024 {
            self.sent
                .retain(|_, at| now.duration_since(*at) < NOTICE_EVERY);
            if self.sent.len() > 1024 {
                return false;
            }
        }
        match self.sent.get(&to) {
            Some(at) if now.duration_since(*at) < NOTICE_EVERY => false,
            _ => {
                self.sent.insert(to, now);
                true
            }
        }
    }
}

async fn receive_datagrams(
    udp: Arc<UdpSocket>,
    inbox: mpsc::Sender<Inbound>,
    max_packet: usize,
    sealer: Arc<RwLock<Sealer>>,
    me: ProcessId,
) {
    let mut buf = vec![0u8; max_packet.max(2048) + 64];
    let mut notices = NoticeLimit::default();
    loop {
        match udp.recv_from(&mut buf).await {
            Ok((len, from)) => {
                let opened = match sealer.read() {
                    Ok(sealer) => sealer.open(&buf[..len]),
                    Err(_) => return,
                };
                let data = match opened {
                    Ok(payload) => Bytes::from(payload),
                    Err(OpenError::RefusedByPeer(why)) => {
                        let why = why.to_string();
                        log::emit(me, &Event::RefusedByPeer { peer: from, why });
                        continue;
                    }
                    Err(e) => {
                        // Tell a sender we cannot open why, once in a while.
                        let notice = sealer.read().ok().and_then(|s| s.refusal_notice(&e));
                        if let Some(notice) = notice
                            && notices.allow(from)
                        {
                            let _ = udp.try_send_to(&notice, from);
                        }
                        let detail = e.to_string();
                        let why = match e {
                            OpenError::TooShort
                            | OpenError::UnknownFormat(_)
                            | OpenError::Corrupted => DropReason::Malformed { detail },
                            _ => DropReason::NotAuthenticated { detail },
                        };
                        log::emit(
                            me,
                            &Event::Dropped {
                                what: DroppedWhat::Datagram,
                                from: from.into(),
                                why,
                            },
                        );
                        continue;
                    }
                };
                if inbox.send(Input::Datagram { from, data }).await.is_err() {
                    return;
                }
            }
            // ICMP errors from earlier sends surface here on some systems.
            Err(e) => tracing::debug!(target: "ra::udp", "UDP receive: {e}"),
        }
    }
}
