//! The in-process cluster the benchmark drives: nodes of this process on the
//! real stack (gRPC over TCP, SWIM over UDP, all on 127.0.0.1, each on a port it
//! picks), driven through [`Clients`], and the stream of everything they report,
//! each event stamped with the instant it happened. The tests drive real `ra`
//! processes instead ([`crate::tools::process`]), as a user runs them; this
//! harness is for timing, where a process boundary per node would be the noise.
//!
//! One job in about 650 lines: the harness (starting nodes on the shared thread
//! or a thread each, settling, reading the one event stream) and the timed runs
//! of latency and throughput on it (uncontended, through the API, contention,
//! many lock names), each a method that reads that stream. Membership and
//! failures are timed in [`super::membership`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::footprint::micros;
use crate::config::{ApiSocket, LogFormat, LogLevel, NodeConfig};
use crate::event::{Event, SetSource};
use crate::node::{NodeSettings, PROXY_TICKETS, Status};
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::LockName;
use crate::runtime::client::{Clients, TicketNews};
use crate::runtime::{self, NodeHandle, Observed, RunOptions};

/// The founder founds quickly instead of waiting out the shipped 4 s.
pub const FOUND_AFTER: Duration = Duration::from_millis(200);
/// Requests kept outstanding per active node under contention: the node queues
/// the second, so it asks again the moment it exits, without waiting for us.
pub const DEPTH: usize = 2;
/// Longest wait for the next entry before the run is declared stuck.
const ENTRY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Contention {
    pub throughput: f64,
    pub handoffs: Vec<f64>,
    pub entries: u64,
    pub messages: u64,
    /// Per contending node, spectators included: its entries over the whole
    /// run and how long each waited, in µs.
    pub per_node: Vec<NodeEntries>,
    /// Active sets decided during the run.
    pub seat_changes: u64,
}

#[derive(Clone, Debug, Default)]
pub struct NodeEntries {
    pub node: String,
    pub entries: u64,
    pub waits: Vec<f64>,
}

pub struct Member {
    pub handle: NodeHandle,
    pub addr: SocketAddr,
    /// Its own thread, on a cluster with [`Cluster::own_threads`].
    thread: Option<NodeThread>,
}

/// A node's own thread and runtime, as each `ra` process has one.
struct NodeThread {
    /// Dropped with the member: the thread's runtime then stops, and every
    /// task and socket of the node with it, as the kernel closes a killed
    /// process's sockets.
    _stop: oneshot::Sender<()>,
    runtime: tokio::runtime::Handle,
}

impl Member {
    /// Block the node's thread for `stall`, as SIGSTOP then SIGCONT would: it
    /// reads no datagram and no stream meanwhile, while the kernel keeps its
    /// sockets open and accepts connections for it. Needs its own thread.
    pub fn pause(&self, stall: Duration) -> Result<()> {
        let thread = self
            .thread
            .as_ref()
            .context("only a node on a thread of its own can be paused")?;
        thread
            .runtime
            .spawn(async move { std::thread::sleep(stall) });
        Ok(())
    }
}

/// Nodes of this process and the stream of everything they report.
pub struct Cluster {
    pub members: Vec<Member>,
    events: mpsc::UnboundedReceiver<Observed>,
    observer: mpsc::UnboundedSender<Observed>,
    settings: NodeSettings,
    pub max_active: usize,
    /// The shared critical-section file its nodes write, if any.
    pub cs_file: Option<std::path::PathBuf>,
    /// Where its nodes put their API sockets (`n.sock` for the n-th); none
    /// serve the API without it.
    pub api_dir: Option<std::path::PathBuf>,
    /// Where its nodes keep their data directories (`n` for the n-th started),
    /// as `--data-dir` does; none keep state without it.
    pub data_dir: Option<std::path::PathBuf>,
    /// Nodes started so far: names each node's data directory once.
    started: AtomicUsize,
    /// Start each node on a thread and runtime of its own, so that killing
    /// one stops everything it runs (a crash, not a node that merely stops
    /// talking) and one can be paused. Off for the latency and throughput
    /// runs: on two cores, threads waking each other for every message would
    /// be most of what they measured ([`crate::runtime::node_runtime`]).
    pub own_threads: bool,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Cluster {
    pub fn new() -> Self {
        let (observer, events) = mpsc::unbounded_channel();
        let settings = NodeSettings {
            found_after: FOUND_AFTER,
            ..NodeSettings::default()
        };
        Self {
            members: Vec::new(),
            events,
            observer,
            max_active: settings.max_active as usize,
            settings,
            cs_file: None,
            api_dir: None,
            data_dir: None,
            started: AtomicUsize::new(0),
            own_threads: false,
        }
    }

    /// Start a node on a free loopback port.
    pub async fn spawn(&self, join: &[SocketAddr]) -> Result<Member> {
        // Port 0: the node binds a port free for UDP and TCP, and says which.
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let nth = self.started.fetch_add(1, Ordering::Relaxed);
        let config = NodeConfig {
            bind: addr,
            advertise: addr,
            join: join.to_vec(),
            settings: self.settings.clone(),
            console_hold: Duration::ZERO,
            cs_file: self.cs_file.clone(),
            data_dir: self.data_dir.as_ref().map(|d| d.join(nth.to_string())),
            log_format: LogFormat::Text,
            log_level: LogLevel::Info,
            requests: 0,
            stay: true,
            cluster_key: None,
            tls: None,
            limits: Default::default(),
            api: match &self.api_dir {
                Some(dir) => ApiSocket::At(dir.join(format!("{}.sock", self.members.len()))),
                None => ApiSocket::Off,
            },
        };
        let options = RunOptions {
            config,
            console: false,
            signals: false,
            observer: Some(self.observer.clone()),
            log_events: false,
            print_cs: false,
        };
        if !self.own_threads {
            let handle = runtime::start(options)
                .await
                .context("cannot start a node")?;
            let addr = handle.addr();
            return Ok(Member {
                handle,
                addr,
                thread: None,
            });
        }
        let node_runtime = runtime::node_runtime()?;
        let thread_runtime = node_runtime.handle().clone();
        let (started_tx, started_rx) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("ra-node-{nth}"))
            .spawn(move || {
                node_runtime.block_on(async move {
                    let started = runtime::start(options).await;
                    let failed = started.is_err();
                    if started_tx.send(started).is_ok() && !failed {
                        // Until the member is dropped.
                        let _ = stopped.await;
                    }
                });
                node_runtime.shutdown_background();
            })
            .context("cannot start a thread for a node")?;
        let handle = started_rx
            .await
            .context("the node's thread ended before the node started")?
            .context("cannot start a node")?;
        let addr = handle.addr();
        Ok(Member {
            handle,
            addr,
            thread: Some(NodeThread {
                _stop: stop,
                runtime: thread_runtime,
            }),
        })
    }

    pub fn processes(&self) -> Vec<ProcessId> {
        self.members.iter().map(|m| m.handle.me).collect()
    }

    pub fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    pub fn mutex_messages(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.handle.stats.mutex_messages())
            .sum()
    }

    /// Found a cluster, add the others through the founder, wait until it settles;
    /// the indices of the active members.
    pub async fn form(&mut self, nodes: usize) -> Result<Vec<usize>> {
        let founder = self.spawn(&[]).await?;
        let seed = founder.addr;
        let me = founder.handle.me;
        self.members.push(founder);
        self.one_logged(
            me,
            "the first node to found the cluster",
            Duration::from_secs(10),
            |e| matches!(e, Event::Founded { .. }),
        )
        .await?;
        for _ in 1..nodes {
            let member = self.spawn(&[seed]).await?;
            self.members.push(member);
        }
        self.settle(Duration::from_secs(30)).await
    }

    /// Wait until every node knows every other as alive and all agree on a full
    /// active set; the indices of its members.
    pub async fn settle(&mut self, within: Duration) -> Result<Vec<usize>> {
        let deadline = Instant::now() + within;
        loop {
            self.drain();
            let mut statuses = Vec::with_capacity(self.members.len());
            for member in &self.members {
                statuses.push(member.handle.clients.status().await?);
            }
            if let Some(active) = self.settled(&statuses) {
                return Ok(active);
            }
            if Instant::now() >= deadline {
                let sets: Vec<String> = statuses
                    .iter()
                    .map(|s| match &s.active_set {
                        Some(v) => format!(
                            "{}: epoch {} {:?}, {} live",
                            s.me,
                            v.epoch,
                            v.members,
                            s.live_members.len()
                        ),
                        None => format!("{}: no active set, {} live", s.me, s.live_members.len()),
                    })
                    .collect();
                bail!(
                    "the cluster of {} did not settle within {within:?}: {}",
                    self.members.len(),
                    sets.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn settled(&self, statuses: &[Status]) -> Option<Vec<usize>> {
        let processes = self.processes();
        let set = statuses.first()?.active_set.clone()?;
        let expected = processes.len().min(set.max_active as usize);
        if set.members.len() != expected {
            return None;
        }
        for status in statuses {
            let theirs = status.active_set.as_ref()?;
            if theirs.cluster != set.cluster || theirs.epoch != set.epoch {
                return None;
            }
            let live: BTreeSet<&ProcessId> = status.live_members.iter().collect();
            if processes
                .iter()
                .any(|p| *p != status.me && !live.contains(p))
            {
                return None;
            }
        }
        set.members
            .iter()
            .map(|m| processes.iter().position(|p| p == m))
            .collect()
    }

    pub async fn next(&mut self, deadline: Instant, what: &str) -> Result<Observed> {
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Ok(Some(observed)) => Ok(observed),
            Ok(None) => bail!("the nodes stopped reporting while waiting for {what}"),
            Err(_) => bail!("gave up waiting for {what}"),
        }
    }

    /// Wait until each of `watchers` has reported an event `accept` takes; the
    /// instant of the last of them, and the events taken.
    pub async fn all_logged(
        &mut self,
        watchers: &[ProcessId],
        what: &str,
        within: Duration,
        accept: impl Fn(&Event) -> bool,
    ) -> Result<(Instant, Vec<Event>)> {
        let deadline = Instant::now() + within;
        let mut waiting: BTreeSet<ProcessId> = watchers.iter().copied().collect();
        let mut last: Option<Instant> = None;
        let mut taken = Vec::with_capacity(watchers.len());
        while !waiting.is_empty() {
            let (at, who, event) = match self.next(deadline, what).await {
                Ok(observed) => observed,
                Err(e) => {
                    let missing: Vec<String> = waiting.iter().map(|p| p.addr.to_string()).collect();
                    return Err(e.context(format!(
                        "{} of {} never did: {}",
                        missing.len(),
                        watchers.len(),
                        missing.join(", ")
                    )));
                }
            };
            if waiting.contains(&who) && accept(&event) {
                waiting.remove(&who);
                last = Some(last.map_or(at, |l| l.max(at)));
                taken.push(event);
            }
        }
        Ok((last.unwrap_or_else(Instant::now), taken))
    }

    pub async fn one_logged(
        &mut self,
        who: ProcessId,
        what: &str,
        within: Duration,
        accept: impl Fn(&Event) -> bool,
    ) -> Result<Instant> {
        Ok(self.all_logged(&[who], what, within, accept).await?.0)
    }

    /// One member asks again and again, the others stay idle: from the request to
    /// its entry, in µs.
    pub async fn acquire_latency(
        &mut self,
        who: usize,
        warmup: u64,
        timed: u64,
    ) -> Result<Vec<f64>> {
        self.drain();
        let me = self.members[who].handle.me;
        let mut samples = Vec::with_capacity(timed as usize);
        let clients = self.members[who].handle.clients.clone();
        for i in 0..warmup + timed {
            let asked = Instant::now();
            let mut ticket = clients.acquire(LockName::default_lock())?;
            match tokio::time::timeout(ENTRY_TIMEOUT, ticket.next()).await {
                Ok(Some(TicketNews::Granted(_))) => {}
                Ok(other) => bail!("an uncontended acquire ended with {other:?}"),
                Err(_) => bail!("gave up waiting for an uncontended entry"),
            }
            let granted = Instant::now();
            ticket.release();
            self.one_logged(me, "the exit", ENTRY_TIMEOUT, |e| {
                matches!(e, Event::Exit { .. })
            })
            .await?;
            if i >= warmup {
                samples.push(micros(granted - asked));
            }
        }
        Ok(samples)
    }

    /// What a program sees: acquire and release through the node's API socket,
    /// as `ra lock` does (one Hold stream per entry), timed from opening the
    /// stream to the grant and to its end after the release. Needs
    /// [`Cluster::api_dir`].
    pub async fn client_path_latency(
        &mut self,
        who: usize,
        warmup: u64,
        timed: u64,
    ) -> Result<super::api_client::ApiTimes> {
        let dir = self.api_dir.clone().context("the cluster serves no API")?;
        let socket = dir.join(format!("{who}.sock"));
        let (mut client, _) = crate::commands::connect(&socket.display().to_string()).await?;
        self.drain();
        super::api_client::round_trips(&mut client, "default", warmup, timed).await
    }

    /// Every active member asks again as soon as it exits. Throughput is timed from
    /// the last warm-up entry to `timed` entries later; messages are counted over
    /// the whole run, from quiet to quiet, so each entry's share is exact.
    /// Every node in `contenders`, spectators included, keeps [`DEPTH`]
    /// requests outstanding; the first `warmup` entries are not timed.
    pub async fn contention(
        &mut self,
        contenders: &[usize],
        warmup: u64,
        timed: u64,
    ) -> Result<Contention> {
        self.drain();
        let before = self.mutex_messages();
        let target = warmup + timed;
        let stop = Arc::new(AtomicBool::new(false));
        let mut loops = Vec::new();
        for &i in contenders {
            for _ in 0..DEPTH {
                let clients = self.members[i].handle.clients.clone();
                loops.push(tokio::spawn(take_again_and_again(clients, stop.clone())));
            }
        }
        let mut entries = 0u64;
        let mut window_start = None;
        let mut window_end = None;
        let mut last_exit: Option<(Instant, ProcessId)> = None;
        let mut handoffs = Vec::with_capacity(timed as usize);
        let mut per_node: BTreeMap<ProcessId, NodeEntries> = BTreeMap::new();
        let mut decided = BTreeSet::new();
        while entries < target {
            let deadline = Instant::now() + ENTRY_TIMEOUT;
            let (at, who, event) = self
                .next(deadline, "the next entry under contention")
                .await?;
            match &event {
                Event::Enter { ticket, waited, .. } if *ticket < PROXY_TICKETS => {
                    let node = per_node.entry(who).or_default();
                    node.entries += 1;
                    node.waits.push(micros(*waited));
                }
                // The spectator's view of its carrier's entry: counted once,
                // below, as the carrier's Enter; here it is the spectator's.
                Event::EnterVia { waited, .. } => {
                    let node = per_node.entry(who).or_default();
                    node.entries += 1;
                    node.waits.push(micros(*waited));
                }
                Event::ActiveSetInstalled {
                    epoch,
                    source: SetSource::Decided,
                    ..
                } => {
                    decided.insert(*epoch);
                }
                _ => {}
            }
            match event {
                Event::Enter { .. } => {
                    entries += 1;
                    if let Some((exited_at, exited)) = last_exit.take()
                        && exited != who
                        && entries > warmup
                        && entries <= target
                    {
                        handoffs.push(micros(at - exited_at));
                    }
                    if entries == warmup {
                        window_start = Some(at);
                    }
                    if entries == target {
                        window_end = Some(at);
                    }
                }
                Event::Exit { .. } => last_exit = Some((at, who)),
                _ => {}
            }
        }
        // From quiet to quiet: every client finishes its ticket before counting.
        stop.store(true, Ordering::Relaxed);
        for task in loops {
            task.await.context("a contending client failed")?;
        }
        let messages = self.mutex_messages() - before;
        let (Some(start), Some(end)) = (window_start, window_end) else {
            bail!("the contention run ended after {entries} entries, short of {target}");
        };
        let seconds = (end - start).as_secs_f64().max(1e-9);
        // A contender never served still gets its row: that is starvation.
        for &i in contenders {
            per_node.entry(self.members[i].handle.me).or_default();
        }
        let per_node = per_node
            .into_iter()
            .map(|(who, mut node)| {
                node.node = who.addr.to_string();
                node
            })
            .collect();
        Ok(Contention {
            throughput: timed as f64 / seconds,
            handoffs,
            entries,
            messages,
            per_node,
            seat_changes: decided.len() as u64,
        })
    }

    /// Throughput with `names` lock names: every active member runs `clients`
    /// clients, each taking a name picked at random among them, giving it back,
    /// and picking again. Timed from the last warm-up entry to `timed` entries
    /// later, over all names; entries per second.
    pub async fn names_throughput(
        &mut self,
        active: &[usize],
        names: usize,
        clients: usize,
        warmup: u64,
        timed: u64,
    ) -> Result<f64> {
        self.drain();
        let names: Arc<Vec<LockName>> = Arc::new(
            (0..names.max(1))
                .map(|i| LockName::new(&format!("bench-{i}")))
                .collect::<Result<_, _>>()?,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let mut loops = Vec::new();
        for (k, &i) in active.iter().enumerate() {
            for c in 0..clients {
                let handle = self.members[i].handle.clients.clone();
                let seed = (k * clients + c) as u64;
                loops.push(tokio::spawn(take_random_names(
                    handle,
                    names.clone(),
                    seed,
                    stop.clone(),
                )));
            }
        }
        let target = warmup + timed;
        let mut entries = 0u64;
        let mut window = (None, None);
        while entries < target {
            let deadline = Instant::now() + ENTRY_TIMEOUT;
            let (at, _, event) = self.next(deadline, "the next entry of some name").await?;
            if let Event::Enter { .. } = event {
                entries += 1;
                if entries == warmup.max(1) {
                    window.0 = Some(at);
                }
                if entries == target {
                    window.1 = Some(at);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        for task in loops {
            task.await.context("a contending client failed")?;
        }
        let (Some(start), Some(end)) = window else {
            bail!("the run ended after {entries} entries, short of {target}");
        };
        let counted = target - warmup.max(1);
        Ok(counted as f64 / (end - start).as_secs_f64().max(1e-9))
    }

    /// Every node leaves, newest first (spectators before members), then stops;
    /// one that does not finish in time is killed.
    pub async fn shutdown(&mut self) {
        while let Some(member) = self.members.pop() {
            let _ = member.handle.clients.leave();
            stop(member, Duration::from_secs(2)).await;
        }
        self.drain();
    }
}

/// One contending client: take the lock, give it back at once, again, until told
/// to stop.
pub async fn take_again_and_again(clients: Clients, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut ticket) = clients.acquire(LockName::default_lock()) else {
            return;
        };
        match ticket.next().await {
            Some(TicketNews::Granted(_)) => ticket.release(),
            // Lost, or refused: ask again.
            Some(_) => {}
            None => return,
        }
    }
}

/// One client on many names: take a name picked at random, give it back at
/// once, again, until told to stop.
async fn take_random_names(
    clients: Clients,
    names: Arc<Vec<LockName>>,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let name = names[rng.random_range(0..names.len())].clone();
        let Ok(mut ticket) = clients.acquire(name) else {
            return;
        };
        match ticket.next().await {
            Some(TicketNews::Granted(_)) => ticket.release(),
            Some(_) => {}
            None => return,
        }
    }
}

/// Wait for a node that was asked to leave, then make sure nothing of it runs.
pub async fn stop(mut member: Member, within: Duration) {
    let finished = tokio::time::timeout(within, &mut member.handle.task)
        .await
        .is_ok();
    // Also stops the socket tasks, which outlive a node that left.
    member.handle.kill();
    if !finished {
        let _ = member.handle.task.await;
    }
}
