//! The in-process cluster the benchmark drives: nodes of this process on the
//! real stack (gRPC over TCP, SWIM over UDP, all on 127.0.0.1, each on a port it
//! picks), driven through [`Clients`], and the stream of everything they report,
//! each event stamped with the instant it happened. Tests use it too.
//!
//! One job, a little over 500 lines: the harness and the timed runs on it
//! (uncontended latency, contention, many lock names, membership), each run a
//! method that reads the harness's one event stream.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::footprint::{micros, millis};
use super::report::Row;
use crate::config::{ApiSocket, LogFormat, LogLevel, NodeConfig};
use crate::event::{Event, SetSource};
use crate::node::{NodeSettings, PROXY_TICKETS, Status};
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::LockName;
use crate::runtime::client::{Clients, TicketNews};
use crate::runtime::{self, NodeHandle, Observed, RunOptions};
use crate::wire::pb;

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
        let handle = runtime::start(options)
            .await
            .context("cannot start a node")?;
        let addr = handle.addr();
        Ok(Member { handle, addr })
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
                let views: Vec<String> = statuses
                    .iter()
                    .map(|s| match &s.active_set {
                        Some(v) => format!(
                            "{}: epoch {} {}, {} live",
                            s.me,
                            v.epoch,
                            v.members_display(),
                            s.live_members.len()
                        ),
                        None => format!("{}: no active set, {} live", s.me, s.live_members.len()),
                    })
                    .collect();
                bail!(
                    "the cluster of {} did not settle within {within:?}: {}",
                    self.members.len(),
                    views.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn settled(&self, statuses: &[Status]) -> Option<Vec<usize>> {
        let processes = self.processes();
        let view = statuses.first()?.active_set.clone()?;
        let expected = processes.len().min(view.max_active as usize);
        if view.members.len() != expected {
            return None;
        }
        for status in statuses {
            let theirs = status.active_set.as_ref()?;
            if theirs.cluster != view.cluster || theirs.epoch != view.epoch {
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
        view.members
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
    /// stream to the node's exit; µs per entry. Needs [`Cluster::api_dir`].
    pub async fn client_path_latency(
        &mut self,
        who: usize,
        warmup: u64,
        timed: u64,
    ) -> Result<Vec<f64>> {
        let dir = self.api_dir.clone().context("the cluster serves no API")?;
        let socket = dir.join(format!("{who}.sock"));
        let (mut client, _) = crate::commands::connect(&socket.display().to_string()).await?;
        self.drain();
        let me = self.members[who].handle.me;
        let mut samples = Vec::with_capacity(timed as usize);
        for i in 0..warmup + timed {
            let started = Instant::now();
            let (requests, rx) = mpsc::channel(2);
            let acquire = pb::HoldRequest {
                kind: Some(pb::hold_request::Kind::Acquire(pb::Acquire {
                    lock: "default".into(),
                    r#try: false,
                    client: "ra bench".into(),
                })),
            };
            requests
                .send(acquire)
                .await
                .context("the Hold stream closed at once")?;
            let mut events = client
                .hold(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .context("the node refused the Hold stream")?
                .into_inner();
            loop {
                let event = tokio::time::timeout(ENTRY_TIMEOUT, events.message())
                    .await
                    .context("gave up waiting for an uncontended grant")?
                    .context("the Hold stream failed")?;
                match event.and_then(|e| e.kind) {
                    Some(pb::hold_event::Kind::Granted(_)) => break,
                    Some(pb::hold_event::Kind::Queued(_) | pb::hold_event::Kind::Progress(_)) => {}
                    other => bail!("an uncontended Hold ended with {other:?}"),
                }
            }
            let release = pb::HoldRequest {
                kind: Some(pb::hold_request::Kind::Release(pb::Release {})),
            };
            requests
                .send(release)
                .await
                .context("the Hold stream closed before the release")?;
            self.one_logged(me, "the exit", ENTRY_TIMEOUT, |e| {
                matches!(e, Event::Exit { .. })
            })
            .await?;
            if i >= warmup {
                samples.push(micros(started.elapsed()));
            }
            // Untimed: close our side and read the stream to its end, as a
            // client that keeps its connection should. Dropping a stream the
            // node is still ending makes frames arrive on a reset stream, and
            // h2 ends a connection that sees too many of those
            // ("too_many_internal_resets") a thousand or so entries later.
            drop(requests);
            let ended = async {
                while let Some(_event) = events.message().await? {}
                anyhow::Ok(())
            };
            tokio::time::timeout(ENTRY_TIMEOUT, ended)
                .await
                .context("gave up waiting for a Hold stream to end")?
                .context("a Hold stream ended badly")?;
        }
        Ok(samples)
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

    /// A newcomer joins and leaves; another joins and crashes. Each is timed until
    /// every other member has reported it.
    pub async fn membership_round(&mut self, row: &mut Row) -> Result<()> {
        let newcomer = self.timed_join(row).await?;
        self.settle(Duration::from_secs(20)).await?;

        self.drain();
        let index = self.index_of(newcomer)?;
        let addr = self.members[index].addr;
        let others: Vec<ProcessId> = self
            .processes()
            .into_iter()
            .filter(|p| *p != newcomer)
            .collect();
        let asked = Instant::now();
        self.members[index].handle.clients.leave()?;
        // A member may log the leave as a failure (the departure is noticed all the
        // same, but by the wrong name): counted, and reported with the figure.
        let (done, logged) = self
            .all_logged(
                &others,
                "every member to log the leave",
                Duration::from_secs(15),
                |e| {
                    matches!(e, Event::MemberLeft { member } | Event::MemberFailed { member, .. }
                        if member.addr == addr)
                },
            )
            .await?;
        row.leave.push(millis(done - asked));
        row.leaves_logged_as_failures += logged
            .iter()
            .filter(|e| matches!(e, Event::MemberFailed { .. }))
            .count();
        let member = self.members.remove(index);
        stop(member, Duration::from_secs(5)).await;
        self.settle(Duration::from_secs(20)).await?;

        let victim = self.timed_join(row).await?;
        self.settle(Duration::from_secs(20)).await?;
        self.drain();
        let index = self.index_of(victim)?;
        let member = self.members.remove(index);
        let addr = member.addr;
        let survivors = self.processes();
        let killed = Instant::now();
        member.handle.kill();
        let (done, _) = self
            .all_logged(
                &survivors,
                "every survivor to declare the crashed member failed",
                Duration::from_secs(20),
                |e| matches!(e, Event::MemberFailed { member, .. } if member.addr == addr),
            )
            .await?;
        row.crash.push(millis(done - killed));
        let _ = member.handle.task.await;
        self.settle(Duration::from_secs(20)).await?;
        Ok(())
    }

    /// Start a node joining through the founder; timed until every member has
    /// reported it joined.
    pub async fn timed_join(&mut self, row: &mut Row) -> Result<ProcessId> {
        self.drain();
        let seed = self
            .members
            .first()
            .context("no member to join through")?
            .addr;
        let watchers = self.processes();
        let started = Instant::now();
        let member = self.spawn(&[seed]).await?;
        let addr = member.addr;
        let me = member.handle.me;
        self.members.push(member);
        let (done, _) = self
            .all_logged(
                &watchers,
                "every member to log the newcomer",
                Duration::from_secs(15),
                |e| matches!(e, Event::MemberJoined { member } if member.addr == addr),
            )
            .await?;
        row.join.push(millis(done - started));
        Ok(me)
    }

    pub fn index_of(&self, process: ProcessId) -> Result<usize> {
        self.processes()
            .iter()
            .position(|p| *p == process)
            .context("the node is gone")
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
