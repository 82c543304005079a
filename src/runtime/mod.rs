//! The tokio shell around the sans-IO [`Node`]: sockets, timers, stdin, signals,
//! and the critical section. One task owns the node; the others only move bytes
//! and lines to it over a channel.

pub mod log;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::agenda::Agenda;
use crate::config::NodeConfig;
use crate::cs::{CriticalSection, unix_us};
use crate::event::Event;
use crate::node::{Input, Node, Output, Status, TimerId};
use crate::protocol::ids::ProcessId;
use transport::{Peers, WireStats};

/// What other tasks hand to the node's task.
// Almost everything is an `Input`: boxing it would cost an allocation per
// message to save channel space nobody needs.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Inbound {
    Input(Input),
    /// Print the node's status on stdout.
    Status,
    /// Answer with the node's status (for in-process callers such as `ra bench`).
    Query(oneshot::Sender<Status>),
}

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
    pub inbox: mpsc::Sender<Inbound>,
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

    pub async fn input(&self, input: Input) -> Result<()> {
        self.inbox
            .send(Inbound::Input(input))
            .await
            .context("the node has stopped")
    }

    pub async fn status(&self) -> Result<Status> {
        let (tx, rx) = oneshot::channel();
        self.inbox
            .send(Inbound::Query(tx))
            .await
            .context("the node has stopped")?;
        rx.await.context("the node has stopped")
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // std seeds RandomState from the operating system's entropy.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(unix_us());
    hasher.finish()
}

async fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let udp = UdpSocket::bind(addr)
        .await
        .with_context(|| format!("cannot bind {addr} (UDP, for membership)"))?;
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {addr} (TCP, for gRPC)"))?;
    Ok((udp, tcp))
}

/// Bind the sockets (errors are returned here, before anything runs) and start
/// the node's tasks.
pub async fn start(options: RunOptions) -> Result<NodeHandle> {
    let config = options.config;
    let (udp, tcp) = bind(config.bind).await?;
    let cs = CriticalSection::open(
        config.advertise,
        config.cs_file.as_deref(),
        options.print_cs,
    )?;
    let me = ProcessId::new(config.advertise, unix_us());
    if options.log_events {
        if config.binds_all_interfaces() {
            tracing::info!(target: "ra", event = "listening", node = %me,
                "listening on {} (all interfaces), advertising {} to peers; use --advertise HOST:PORT if other hosts must reach this node",
                config.bind, config.advertise);
        } else {
            tracing::info!(target: "ra", event = "listening", node = %me,
                "listening on {}, advertising {}", config.bind, config.advertise);
        }
        let detection =
            config.settings.swim.probe_period + config.settings.swim.suspect_to_down_after;
        if config.settings.hold >= detection {
            tracing::warn!(target: "ra", node = %me,
                "the critical section is held {} ms, longer than failure detection (about {} ms): if this node is cut off while holding it, the others may enter before it exits; check fences in the resource you protect",
                config.settings.hold.as_millis(), detection.as_millis());
        }
    }

    let (inbox_tx, inbox_rx) = mpsc::channel::<Inbound>(8192);
    let udp = Arc::new(udp);
    let mut helpers = vec![tokio::spawn(receive_datagrams(
        udp.clone(),
        inbox_tx.clone(),
        config.settings.swim.max_packet_size,
    ))];
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let server_inbox = inbox_tx.clone();
    helpers.push(tokio::spawn(async move {
        let shutdown = async {
            let _ = server_stopped.await;
        };
        if let Err(e) = transport::serve(tcp, server_inbox, shutdown).await {
            tracing::error!(target: "ra", "the gRPC server stopped: {e}");
        }
    }));
    if options.console {
        tokio::spawn(read_console(inbox_tx.clone()));
    }
    if options.signals {
        tokio::spawn(leave_on_signal(inbox_tx.clone()));
    }
    for _ in 0..config.requests {
        inbox_tx
            .send(Inbound::Input(Input::RequestCs))
            .await
            .context("the node stopped at start-up")?;
    }

    let stats = Arc::new(WireStats::default());
    let base = Instant::now();
    let node = Node::new(
        me,
        config.join.clone(),
        config.settings.clone(),
        random_seed(),
        Duration::ZERO,
    );
    let shell = Shell {
        node,
        base,
        udp,
        peers: Peers::new(inbox_tx.clone(), stats.clone()),
        timers: Agenda::default(),
        cs,
        observer: options.observer,
        log_events: options.log_events,
        me,
    };
    let task = tokio::spawn(async move {
        let result = shell.run(inbox_rx).await;
        let _ = stop_server.send(());
        result
    });
    Ok(NodeHandle {
        me,
        inbox: inbox_tx,
        stats,
        task,
        helpers,
    })
}

/// Run a node until it leaves (the `ra` command).
pub async fn run(config: NodeConfig) -> Result<()> {
    let handle = start(RunOptions {
        config,
        console: true,
        signals: true,
        observer: None,
        log_events: true,
        print_cs: true,
    })
    .await?;
    handle.task.await.context("the node's task failed")?
}

struct Shell {
    node: Node,
    base: Instant,
    udp: Arc<UdpSocket>,
    peers: Peers,
    /// Every timer the node asked for, fired from this one task: a task per
    /// timer would let them fire out of order (see foca issue 26).
    timers: Agenda<Instant, TimerId>,
    cs: CriticalSection,
    observer: Option<mpsc::UnboundedSender<Observed>>,
    log_events: bool,
    me: ProcessId,
}

impl Shell {
    fn now(&self) -> Duration {
        self.base.elapsed()
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<Inbound>) -> Result<()> {
        let mut left = self.apply_outputs();
        while !left {
            let deadline = self.timers.next_time();
            tokio::select! {
                next = inbox.recv() => match next {
                    Some(Inbound::Input(input)) => {
                        let now = self.now();
                        self.node.handle(now, input);
                    }
                    Some(Inbound::Status) => print_status(&self.node.status()),
                    Some(Inbound::Query(reply)) => {
                        let _ = reply.send(self.node.status());
                    }
                    None => return Ok(()),
                },
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
        // Give the last datagrams and messages (the leave) a moment to go out.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }

    /// Carry out what the node asked for; true once it has left.
    fn apply_outputs(&mut self) -> bool {
        let mut left = false;
        let outputs: Vec<Output> = self.node.drain_outputs().collect();
        for output in outputs {
            match output {
                Output::Datagram { to, data } => {
                    // UDP may drop; SWIM expects as much.
                    let _ = self.udp.try_send_to(&data, to);
                }
                Output::Message(envelope) => self.peers.send(&envelope),
                Output::Timer { at, timer } => self.timers.push(self.base + at, timer),
                Output::Event(event) => self.on_event(event),
                Output::Left => left = true,
            }
        }
        left
    }

    fn on_event(&mut self, event: Event) {
        // The file line is written before any message that follows the event goes
        // out, so the file's order is the real order.
        match &event {
            Event::Enter {
                request_id,
                fence,
                lamport,
                ..
            } => self
                .cs
                .enter(fence.token(), fence.epoch, *lamport, *request_id),
            Event::Exit {
                request_id,
                fence,
                lamport,
                ..
            } => self
                .cs
                .exit(fence.token(), fence.epoch, *lamport, *request_id),
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

async fn receive_datagrams(udp: Arc<UdpSocket>, inbox: mpsc::Sender<Inbound>, max_packet: usize) {
    let mut buf = vec![0u8; max_packet.max(2048)];
    loop {
        match udp.recv_from(&mut buf).await {
            Ok((len, from)) => {
                let data = Bytes::copy_from_slice(&buf[..len]);
                if inbox
                    .send(Inbound::Input(Input::Datagram { from, data }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // ICMP errors from earlier sends surface here on some systems.
            Err(e) => tracing::debug!(target: "ra", "UDP receive: {e}"),
        }
    }
}

/// Enter asks for the critical section; `status` and `leave` do what they say.
/// End of input does not stop the node: it keeps serving its peers.
async fn read_console(inbox: mpsc::Sender<Inbound>) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let message = match line.trim() {
            "" => Inbound::Input(Input::RequestCs),
            "status" => Inbound::Status,
            "leave" | "quit" | "exit" => Inbound::Input(Input::Leave),
            other => {
                println!(
                    "unknown command {other:?}: press Enter to ask for the critical section, or type `status` or `leave`"
                );
                continue;
            }
        };
        if inbox.send(message).await.is_err() {
            return;
        }
    }
}

/// The first SIGINT or SIGTERM leaves gracefully; a second one exits at once.
async fn leave_on_signal(inbox: mpsc::Sender<Inbound>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!(target: "ra", "cannot listen for signals: Ctrl-C will not leave gracefully");
        return;
    };
    let mut asked = false;
    loop {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        if asked {
            tracing::warn!(target: "ra", "second signal: exiting without waiting for the handover");
            std::process::exit(130);
        }
        asked = true;
        tracing::info!(target: "ra", "signal received: leaving the cluster (send it again to exit at once)");
        if inbox.send(Inbound::Input(Input::Leave)).await.is_err() {
            return;
        }
    }
}

fn print_status(status: &Status) {
    let list = |processes: &[ProcessId]| {
        if processes.is_empty() {
            "none".to_string()
        } else {
            processes
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    println!(
        "node {} (process started at unix µs {})",
        status.me, status.me.incarnation
    );
    println!("  live members: {}", list(&status.live_members));
    match &status.view {
        Some(view) => {
            let role = if view.contains(&status.me) {
                "active"
            } else {
                "a spectator"
            };
            println!(
                "  active set, epoch {} of the cluster founded by {}: {} (at most {}); this node is {role}",
                view.epoch,
                view.cluster,
                list(&view.members),
                view.max_active
            );
        }
        None => println!("  no cluster yet"),
    }
    println!("  spectators in line: {}", list(&status.spectators));
    println!("  Lamport clock: {}", status.clock);
    println!(
        "  state: {}; {} more request(s) queued",
        status.state, status.queued
    );
}
