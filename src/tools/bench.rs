//! `ra bench`: measure a real cluster on loopback.
//!
//! The nodes run in this process on the real stack (gRPC over TCP, SWIM over UDP,
//! all on 127.0.0.1), driven through the in-process API of [`crate::runtime`].
//! Every time comes from the nodes' own events, stamped with the instant each
//! happened; every message count comes from what the nodes handed to the wire.
//! The footprint is taken from separate `ra` processes, as a user runs them.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::{BenchArgs, LogFormat};
use crate::config::NodeConfig;
use crate::event::Event;
use crate::node::{Input, NodeSettings, Status};
use crate::protocol::ids::ProcessId;
use crate::runtime::{self, NodeHandle, Observed, RunOptions};

/// Joins, leaves and crashes timed per cluster size; the median is reported.
const MEMBERSHIP_RUNS: usize = 3;
/// The founder founds quickly instead of waiting out the shipped 4 s.
const FOUND_AFTER: Duration = Duration::from_millis(200);
/// Requests kept outstanding per active node under contention: the node queues
/// the second, so it asks again the moment it exits, without waiting for us.
const DEPTH: usize = 2;
/// Longest wait for the next entry before the run is declared stuck.
const ENTRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time given to the separate processes to form their cluster before watching.
const FORMATION: Duration = Duration::from_millis(2500);

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    if args.nodes < 2 {
        bail!(
            "--nodes must be at least 2 (got {}): mutual exclusion needs company",
            args.nodes
        );
    }
    if args.entries == 0 {
        bail!("--entries must be at least 1");
    }
    if !args.idle_seconds.is_finite() || args.idle_seconds <= 0.0 || args.idle_seconds > 3600.0 {
        bail!(
            "--idle-seconds must be a positive number of seconds, at most 3600 (got {})",
            args.idle_seconds
        );
    }
    let max_active = NodeSettings::default().max_active as usize;
    let sizes: Vec<usize> = if args.sweep {
        (2..=max_active + 2).collect()
    } else {
        vec![args.nodes]
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let mut rows = Vec::new();
    let mut failure = None;
    for &nodes in &sizes {
        if !args.json {
            eprintln!("ra bench: measuring {nodes} nodes...");
        }
        match measure_size(&runtime, args, nodes) {
            Ok(row) => rows.push(row),
            Err(e) => {
                failure = Some(e.context(format!("measuring {nodes} nodes")));
                break;
            }
        }
    }
    // Nothing of ours is left running by now; this only bounds the wait.
    runtime.shutdown_timeout(Duration::from_secs(2));
    if let Some(e) = failure {
        return Err(e);
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let value = if args.sweep {
            let mut object = Map::new();
            object.insert(
                "sweep".into(),
                Value::Array(rows.iter().map(Row::to_json).collect()),
            );
            Value::Object(object)
        } else {
            rows[0].to_json()
        };
        writeln!(stdout, "{value}")?;
    } else if args.sweep {
        write!(stdout, "{}", sweep_table(&rows, args))?;
    } else {
        write!(stdout, "{}", table(&rows[0], args))?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Everything measured for one cluster size.
#[derive(Debug, Default)]
struct Row {
    nodes: usize,
    active: usize,
    max_active: usize,
    spectators: usize,
    warmup: u64,
    /// Acquire latencies of one node alone, in µs.
    acquire: Vec<f64>,
    throughput: f64,
    /// From one node's exit to the next entry of another, in µs.
    handoff: Vec<f64>,
    /// Entries of the whole contention run (warm-up included), and the mutex
    /// messages handed to the wire meanwhile.
    contention_entries: u64,
    contention_messages: u64,
    /// Milliseconds; empty with --skip-membership.
    join: Vec<f64>,
    leave: Vec<f64>,
    /// Members that logged a graceful leave as a failure.
    leaves_logged_as_failures: usize,
    crash: Vec<f64>,
    rss_kb: f64,
    idle_cpu_percent: f64,
    /// One clock tick over the watch, in % of a core: the CPU figure's resolution.
    cpu_resolution_percent: f64,
}

impl Row {
    fn messages_per_entry(&self) -> f64 {
        self.contention_messages as f64 / self.contention_entries.max(1) as f64
    }

    fn metrics(&self) -> Vec<Metric> {
        let timing =
            |samples: &[f64]| (!samples.is_empty()).then(|| (median(samples), max(samples)));
        let expected_messages = 2.0 * (self.active.saturating_sub(1)) as f64;
        vec![
            Metric::new("acquire_p50_us", "acquire latency p50", "µs", 1)
                .value(percentile(&self.acquire, 50.0))
                .goal(Goal::AtMost(150.0)),
            Metric::new("acquire_p99_us", "acquire latency p99", "µs", 1)
                .value(percentile(&self.acquire, 99.0)),
            Metric::new("throughput_cs_per_s", "throughput", "/s", 0)
                .value(self.throughput)
                .goal(Goal::AtLeast(5000.0)),
            Metric::new("handoff_p50_us", "handoff p50", "µs", 1)
                .value(percentile(&self.handoff, 50.0)),
            Metric::new("messages_per_entry", "messages per entry", "", 3)
                .value(self.messages_per_entry())
                .goal(Goal::Exactly(expected_messages)),
            Metric::new("join_ms", "join", "ms", 1)
                .timing(timing(&self.join))
                .goal(Goal::AtMost(300.0)),
            Metric::new("leave_ms", "leave", "ms", 1)
                .timing(timing(&self.leave))
                .goal(Goal::AtMost(100.0)),
            Metric::new("crash_detect_ms", "crash detection", "ms", 1)
                .timing(timing(&self.crash))
                .goal(Goal::AtMost(2000.0)),
            Metric::new("rss_kb", "resident memory, one node", "kB", 0)
                .value(self.rss_kb)
                .goal(Goal::AtMost(8192.0)),
            Metric::new("idle_cpu_percent", "idle CPU, one node", "%", 3)
                .value(self.idle_cpu_percent)
                .goal(Goal::AtMost(0.5)),
        ]
    }

    fn to_json(&self) -> Value {
        let mut object = Map::new();
        let metrics = self.metrics();
        let missed = metrics.iter().filter(|m| m.missed()).count();
        for (key, count) in [
            ("nodes", self.nodes),
            ("max_active", self.max_active),
            ("active", self.active),
            ("spectators", self.spectators),
            ("entries", self.acquire.len()),
            ("contention_entries", self.contention_entries as usize),
            ("leaves_logged_as_failures", self.leaves_logged_as_failures),
            ("targets_missed", missed),
        ] {
            object.insert(key.into(), Value::from(count));
        }
        // Whole numbers stay whole (8012, not 8012.0); skipped figures are null.
        let number = |value: Option<f64>, decimals: usize| match value {
            Some(v) if decimals == 0 && v.is_finite() => Value::from(v.round() as i64),
            Some(v) => {
                serde_json::Number::from_f64(round(v, decimals)).map_or(Value::Null, Value::Number)
            }
            None => Value::Null,
        };
        object.insert(
            "idle_cpu_resolution_percent".into(),
            number(Some(self.cpu_resolution_percent), 3),
        );
        for metric in &metrics {
            object.insert(metric.key.into(), number(metric.value, metric.decimals));
            if metric.max.is_some() || metric.key.ends_with("_ms") {
                let key = format!("{}_max_ms", metric.key.trim_end_matches("_ms"));
                object.insert(key, number(metric.max, metric.decimals));
            }
        }
        Value::Object(object)
    }
}

#[derive(Clone, Copy, Debug)]
enum Goal {
    None,
    AtMost(f64),
    AtLeast(f64),
    Exactly(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::None => true,
            Goal::AtMost(limit) => value <= limit,
            Goal::AtLeast(limit) => value >= limit,
            Goal::Exactly(target) => (value - target).abs() < 0.0005,
        }
    }

    fn text(self, unit: &str) -> String {
        let unit = if unit.is_empty() || unit == "/s" || unit == "%" {
            unit.to_string()
        } else {
            format!(" {unit}")
        };
        match self {
            Goal::None => "-".to_string(),
            Goal::AtMost(limit) => format!("<= {limit}{unit}"),
            Goal::AtLeast(limit) => format!(">= {limit}{unit}"),
            Goal::Exactly(target) => format!("= {target}{unit}"),
        }
    }
}

struct Metric {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    decimals: usize,
    /// The figure (the median, for a timing); None when skipped.
    value: Option<f64>,
    /// For a timing: the slowest run.
    max: Option<f64>,
    goal: Goal,
}

impl Metric {
    fn new(key: &'static str, label: &'static str, unit: &'static str, decimals: usize) -> Self {
        Self {
            key,
            label,
            unit,
            decimals,
            value: None,
            max: None,
            goal: Goal::None,
        }
    }

    fn value(mut self, value: f64) -> Self {
        self.value = Some(value);
        self
    }

    fn timing(mut self, timing: Option<(f64, f64)>) -> Self {
        self.value = timing.map(|t| t.0);
        self.max = timing.map(|t| t.1);
        self
    }

    fn goal(mut self, goal: Goal) -> Self {
        self.goal = goal;
        self
    }

    fn missed(&self) -> bool {
        self.value.is_some_and(|v| !self.goal.met(v))
    }

    fn number(&self, value: f64) -> String {
        format!("{value:.*}", self.decimals)
    }

    fn shown(&self) -> String {
        match (self.value, self.max) {
            (None, _) => "skipped".to_string(),
            (Some(value), Some(max)) => format!(
                "{} {} (max {})",
                self.number(value),
                self.unit,
                self.number(max)
            ),
            (Some(value), None) if self.unit.is_empty() => self.number(value),
            (Some(value), None) if self.unit == "/s" || self.unit == "%" => {
                format!("{}{}", self.number(value), self.unit)
            }
            (Some(value), None) => format!("{} {}", self.number(value), self.unit),
        }
    }
}

fn table(row: &Row, args: &BenchArgs) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "ra bench: {} nodes on 127.0.0.1 in one process (2 tokio workers), real gRPC over TCP and SWIM over UDP\n",
        row.nodes
    ));
    out.push_str(&format!(
        "  active set: {} of at most {}, {} spectator(s){}; critical section held 0 ms\n",
        row.active,
        row.max_active,
        row.spectators,
        if row.spectators > 0 {
            " (they join but never request: throughput is among the active members)"
        } else {
            ""
        }
    ));
    out.push_str(&format!(
        "  latency: {} requests by one member alone, after {} warm-up; contention: {} entries timed after {} warm-up, {DEPTH} requests outstanding per active member\n",
        row.acquire.len(),
        row.warmup,
        args.entries,
        row.warmup
    ));
    if args.skip_membership {
        out.push_str("  membership: skipped (--skip-membership)\n");
    } else {
        out.push_str(&format!(
            "  membership: median and max of {MEMBERSHIP_RUNS} runs each (join: {} samples), shipped SWIM settings, until every other member logged it\n",
            row.join.len()
        ));
    }
    out.push_str(&format!(
        "  footprint: the founder of {} separate idle `ra` processes, watched for {} s (CPU counted in clock ticks: {:.2}% a tick)\n\n",
        row.nodes, args.idle_seconds, row.cpu_resolution_percent
    ));
    let metrics = row.metrics();
    let shown: Vec<String> = metrics.iter().map(Metric::shown).collect();
    let value_width = shown
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "  {:<27} {:>value_width$}   target\n",
        "metric", "value"
    ));
    for (metric, value) in metrics.iter().zip(&shown) {
        let mark = if metric.missed() { "   MISS" } else { "" };
        out.push_str(&format!(
            "  {:<27} {:>value_width$}   {}{mark}\n",
            metric.label,
            value,
            metric.goal.text(metric.unit)
        ));
    }
    let missed = metrics.iter().filter(|m| m.missed()).count();
    let judged = metrics
        .iter()
        .filter(|m| m.value.is_some() && !matches!(m.goal, Goal::None))
        .count();
    if missed == 0 {
        out.push_str(&format!("\n  every target met ({judged} of {judged})\n"));
    } else {
        out.push_str(&format!(
            "\n  {missed} of {judged} targets missed (marked MISS)\n"
        ));
    }
    out.push_str(&leave_note(row));
    out
}

/// Graceful leaves some member logged as a failure: timed all the same, but worth
/// a line, since the log then tells a user the wrong story.
fn leave_note(row: &Row) -> String {
    match row.leaves_logged_as_failures {
        0 => String::new(),
        n => format!(
            "  note ({} nodes): {n} time(s) a member logged a graceful leave as a failure (member_failed, not member_left)\n",
            row.nodes
        ),
    }
}

fn sweep_table(rows: &[Row], args: &BenchArgs) -> String {
    let headers = [
        "nodes",
        "active",
        "spect",
        "acq p50 µs",
        "acq p99 µs",
        "cs/s",
        "handoff µs",
        "msg/entry",
        "join ms",
        "leave ms",
        "crash ms",
        "rss kB",
        "cpu %",
    ];
    let mut lines: Vec<Vec<String>> = vec![headers.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let mut cells = vec![
            row.nodes.to_string(),
            row.active.to_string(),
            row.spectators.to_string(),
        ];
        for metric in row.metrics() {
            let cell = match metric.value {
                None => "-".to_string(),
                Some(value) => {
                    let mark = if metric.missed() { "*" } else { "" };
                    format!("{}{mark}", metric.number(value))
                }
            };
            cells.push(cell);
        }
        lines.push(cells);
    }
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!(
        "ra bench --sweep: 2 to {} nodes on 127.0.0.1 in one process; {} entries timed per size, critical section held 0 ms\n\n",
        rows.last().map_or(0, |r| r.nodes),
        args.entries
    );
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:>width$}"))
            .collect();
        out.push_str(&format!("  {}\n", cells.join("  ")));
    }
    out.push_str(
        "\n  targets: acquire p50 <= 150 µs, throughput >= 5000/s, messages per entry = 2(active-1), join <= 300 ms,\n  \
         leave <= 100 ms, crash detection <= 2000 ms, rss <= 8192 kB, idle cpu <= 0.5%; * = missed.\n  \
         Spectators never request; join, leave and crash are medians (the JSON has the max too).\n",
    );
    for row in rows {
        out.push_str(&leave_note(row));
    }
    out
}

fn measure_size(runtime: &tokio::runtime::Runtime, args: &BenchArgs, nodes: usize) -> Result<Row> {
    let mut row = Row {
        nodes,
        ..Row::default()
    };
    {
        runtime.block_on(async {
            let mut cluster = Cluster::new();
            let result = measure_in_process(&mut cluster, args, &mut row).await;
            cluster.shutdown().await;
            result
        })?;
    }
    let (rss_kb, cpu, resolution) = footprint(nodes, args.idle_seconds)?;
    row.cpu_resolution_percent = resolution;
    row.rss_kb = rss_kb;
    row.idle_cpu_percent = cpu;
    Ok(row)
}

async fn measure_in_process(cluster: &mut Cluster, args: &BenchArgs, row: &mut Row) -> Result<()> {
    let active = cluster.form(row.nodes).await?;
    row.active = active.len();
    row.max_active = cluster.max_active;
    row.spectators = row.nodes - active.len();
    let timed = u64::from(args.entries);
    let warmup = (timed / 10).clamp(10, 500);
    row.warmup = warmup;
    row.acquire = cluster.acquire_latency(active[0], warmup, timed).await?;
    let contention = cluster.contention(&active, warmup, timed).await?;
    row.throughput = contention.throughput;
    row.handoff = contention.handoffs;
    row.contention_entries = contention.entries;
    row.contention_messages = contention.messages;
    if !args.skip_membership {
        for _ in 0..MEMBERSHIP_RUNS {
            cluster.membership_round(row).await?;
        }
    }
    Ok(())
}

struct Contention {
    throughput: f64,
    handoffs: Vec<f64>,
    entries: u64,
    messages: u64,
}

struct Member {
    handle: NodeHandle,
    addr: SocketAddr,
}

/// Nodes of this process and the stream of everything they report.
struct Cluster {
    members: Vec<Member>,
    events: mpsc::UnboundedReceiver<Observed>,
    observer: mpsc::UnboundedSender<Observed>,
    settings: NodeSettings,
    max_active: usize,
}

impl Cluster {
    fn new() -> Self {
        let (observer, events) = mpsc::unbounded_channel();
        let settings = NodeSettings {
            hold: Duration::ZERO,
            found_after: FOUND_AFTER,
            ..NodeSettings::default()
        };
        Self {
            members: Vec::new(),
            events,
            observer,
            max_active: settings.max_active as usize,
            settings,
        }
    }

    /// Start a node on a free loopback port.
    async fn spawn(&self, join: &[SocketAddr]) -> Result<Member> {
        let mut last_error = None;
        // A port found free may be taken before we bind it: try a few.
        for _ in 0..5 {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, super::free_loopback_port()?));
            let config = NodeConfig {
                bind: addr,
                advertise: addr,
                join: join.to_vec(),
                settings: self.settings.clone(),
                cs_file: None,
                log_format: LogFormat::Text,
                requests: 0,
            };
            let options = RunOptions {
                config,
                console: false,
                signals: false,
                observer: Some(self.observer.clone()),
                log_events: false,
                print_cs: false,
            };
            match runtime::start(options).await {
                Ok(handle) => return Ok(Member { handle, addr }),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.map_or_else(
            || anyhow::anyhow!("cannot start a node"),
            |e| e.context("cannot start a node"),
        ))
    }

    fn processes(&self) -> Vec<ProcessId> {
        self.members.iter().map(|m| m.handle.me).collect()
    }

    fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    fn mutex_messages(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.handle.stats.mutex_messages())
            .sum()
    }

    /// Found a cluster, add the others through the founder, wait until it settles;
    /// the indices of the active members.
    async fn form(&mut self, nodes: usize) -> Result<Vec<usize>> {
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
    async fn settle(&mut self, within: Duration) -> Result<Vec<usize>> {
        let deadline = Instant::now() + within;
        loop {
            self.drain();
            let mut statuses = Vec::with_capacity(self.members.len());
            for member in &self.members {
                statuses.push(member.handle.status().await?);
            }
            if let Some(active) = self.settled(&statuses) {
                return Ok(active);
            }
            if Instant::now() >= deadline {
                let views: Vec<String> = statuses
                    .iter()
                    .map(|s| match &s.view {
                        Some(v) => format!(
                            "{}: epoch {} {}, {} live",
                            s.me,
                            v.epoch,
                            v.members_display(),
                            s.live_members.len()
                        ),
                        None => format!("{}: no view, {} live", s.me, s.live_members.len()),
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
        let view = statuses.first()?.view.clone()?;
        let expected = processes.len().min(view.max_active as usize);
        if view.members.len() != expected {
            return None;
        }
        for status in statuses {
            let theirs = status.view.as_ref()?;
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

    async fn next(&mut self, deadline: Instant, what: &str) -> Result<Observed> {
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Ok(Some(observed)) => Ok(observed),
            Ok(None) => bail!("the nodes stopped reporting while waiting for {what}"),
            Err(_) => bail!("gave up waiting for {what}"),
        }
    }

    /// Wait until each of `watchers` has reported an event `accept` takes; the
    /// instant of the last of them, and the events taken.
    async fn all_logged(
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

    async fn one_logged(
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
    async fn acquire_latency(&mut self, who: usize, warmup: u64, timed: u64) -> Result<Vec<f64>> {
        self.drain();
        let me = self.members[who].handle.me;
        let mut samples = Vec::with_capacity(timed as usize);
        for i in 0..warmup + timed {
            let asked = Instant::now();
            self.members[who].handle.input(Input::RequestCs).await?;
            let entered = self
                .one_logged(me, "an uncontended entry", ENTRY_TIMEOUT, |e| {
                    matches!(e, Event::Enter { .. })
                })
                .await?;
            self.one_logged(me, "the exit", ENTRY_TIMEOUT, |e| {
                matches!(e, Event::Exit { .. })
            })
            .await?;
            if i >= warmup {
                samples.push(micros(entered - asked));
            }
        }
        Ok(samples)
    }

    /// Every active member asks again as soon as it exits. Throughput is timed from
    /// the last warm-up entry to `timed` entries later; messages are counted over
    /// the whole run, from quiet to quiet, so each entry's share is exact.
    async fn contention(
        &mut self,
        active: &[usize],
        warmup: u64,
        timed: u64,
    ) -> Result<Contention> {
        self.drain();
        let before = self.mutex_messages();
        let target = warmup + timed;
        let processes = self.processes();
        let mut outstanding = vec![0usize; self.members.len()];
        for &i in active {
            for _ in 0..DEPTH {
                self.members[i].handle.input(Input::RequestCs).await?;
                outstanding[i] += 1;
            }
        }
        let mut entries = 0u64;
        let mut window_start = None;
        let mut window_end = None;
        let mut last_exit: Option<(Instant, ProcessId)> = None;
        let mut handoffs = Vec::with_capacity(timed as usize);
        while outstanding.iter().any(|n| *n > 0) {
            let deadline = Instant::now() + ENTRY_TIMEOUT;
            let (at, who, event) = self
                .next(deadline, "the next entry under contention")
                .await?;
            let Some(index) = processes.iter().position(|p| *p == who) else {
                continue;
            };
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
                Event::Exit { .. } => {
                    last_exit = Some((at, who));
                    outstanding[index] = outstanding[index].saturating_sub(1);
                    if entries < target {
                        self.members[index].handle.input(Input::RequestCs).await?;
                        outstanding[index] += 1;
                    }
                }
                _ => {}
            }
        }
        let messages = self.mutex_messages() - before;
        let (Some(start), Some(end)) = (window_start, window_end) else {
            bail!("the contention run ended after {entries} entries, short of {target}");
        };
        let seconds = (end - start).as_secs_f64().max(1e-9);
        Ok(Contention {
            throughput: timed as f64 / seconds,
            handoffs,
            entries,
            messages,
        })
    }

    /// A newcomer joins and leaves; another joins and crashes. Each is timed until
    /// every other member has reported it.
    async fn membership_round(&mut self, row: &mut Row) -> Result<()> {
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
        self.members[index].handle.input(Input::Leave).await?;
        // A member may log the leave as a failure (the departure is noticed all the
        // same, but by the wrong name): counted, and reported with the figure.
        let (done, logged) = self
            .all_logged(
                &others,
                "every member to log the leave",
                Duration::from_secs(15),
                |e| {
                    matches!(e, Event::MemberLeft { member } | Event::MemberFailed { member }
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
                |e| matches!(e, Event::MemberFailed { member } if member.addr == addr),
            )
            .await?;
        row.crash.push(millis(done - killed));
        let _ = member.handle.task.await;
        self.settle(Duration::from_secs(20)).await?;
        Ok(())
    }

    /// Start a node joining through the founder; timed until every member has
    /// reported it joined.
    async fn timed_join(&mut self, row: &mut Row) -> Result<ProcessId> {
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

    fn index_of(&self, process: ProcessId) -> Result<usize> {
        self.processes()
            .iter()
            .position(|p| *p == process)
            .context("the node is gone")
    }

    /// Every node leaves, newest first (spectators before members), then stops;
    /// one that does not finish in time is killed.
    async fn shutdown(&mut self) {
        while let Some(member) = self.members.pop() {
            let _ = member.handle.input(Input::Leave).await;
            stop(member, Duration::from_secs(2)).await;
        }
        self.drain();
    }
}

/// Wait for a node that was asked to leave, then make sure nothing of it runs.
async fn stop(mut member: Member, within: Duration) {
    let finished = tokio::time::timeout(within, &mut member.handle.task)
        .await
        .is_ok();
    // Also stops the socket tasks, which outlive a node that left.
    member.handle.kill();
    if !finished {
        let _ = member.handle.task.await;
    }
}

/// Separate `ra` processes, killed when dropped, whatever happened.
struct Processes {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Resident memory (kB), CPU use (% of one core) and the resolution of that CPU
/// figure, for the founder of an idle cluster of `nodes` separate `ra` processes.
fn footprint(nodes: usize, idle_seconds: f64) -> Result<(f64, f64, f64)> {
    let dir = std::env::temp_dir().join(format!("ra-bench-{}-{nodes}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut processes = Processes {
        children: Vec::new(),
        dir: dir.clone(),
    };
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!("[cluster]\nfound_after_ms = {}\n", FOUND_AFTER.as_millis()),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    let exe = std::env::current_exe().context("cannot find the ra executable")?;
    let mut seed = None;
    for i in 0..nodes {
        let addr = format!("127.0.0.1:{}", super::free_loopback_port()?);
        let mut command = Command::new(&exe);
        command
            .arg("--bind")
            .arg(&addr)
            .arg("--config")
            .arg(&config);
        if let Some(seed) = &seed {
            command.arg("--join").arg(seed);
        }
        // SAFETY: prctl is async-signal-safe, and the closure touches nothing else.
        // The child dies with us even when we are killed before the guard runs.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        processes.children.push(child);
        if i == 0 {
            seed = Some(addr);
            // Let the founder bind and found before the others knock.
            std::thread::sleep(FOUND_AFTER + Duration::from_millis(150));
        }
    }
    std::thread::sleep(FORMATION);
    // Every process has read its config by now: leave nothing behind even if we
    // are killed while watching.
    let _ = std::fs::remove_dir_all(&dir);
    for child in &mut processes.children {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("a separate ra process exited early ({status})");
        }
    }
    let pid = processes.children[0].id();
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        bail!("cannot read the clock tick rate");
    }
    let cpu_before = cpu_ticks(pid)?;
    let watched = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs_f64(idle_seconds));
    let cpu_after = cpu_ticks(pid)?;
    let elapsed = watched.elapsed().as_secs_f64();
    let rss = rss_kb(pid)?;
    let busy = cpu_after.saturating_sub(cpu_before) as f64 / ticks as f64;
    Ok((
        rss,
        100.0 * busy / elapsed,
        100.0 / (ticks as f64 * elapsed),
    ))
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name may hold spaces and parentheses: count from the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    let utime: u64 = fields.get(11).context("malformed stat")?.parse()?;
    let stime: u64 = fields.get(12).context("malformed stat")?.parse()?;
    Ok(utime + stime)
}

fn rss_kb(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS in the process status")?;
    let kb: f64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .context("malformed VmRSS")?;
    Ok(kb)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn round(value: f64, decimals: usize) -> f64 {
    let scale = 10f64.powi(decimals as i32);
    (value * scale).round() / scale
}

fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// Nearest-rank percentile; 0 for no samples.
fn percentile(samples: &[f64], p: f64) -> f64 {
    let sorted = sorted(samples);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(samples: &[f64]) -> f64 {
    let sorted = sorted(samples);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn max(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), 50.0);
        assert_eq!(percentile(&samples, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn goals_judge_and_read() {
        assert!(Goal::AtMost(150.0).met(150.0));
        assert!(!Goal::AtLeast(5000.0).met(4999.0));
        assert!(Goal::Exactly(4.0).met(4.0));
        assert!(!Goal::Exactly(4.0).met(4.01));
        assert_eq!(Goal::AtMost(300.0).text("ms"), "<= 300 ms");
    }

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        assert!(cpu_ticks(std::process::id()).is_ok());
        assert!(rss_kb(std::process::id()).expect("own status") > 0.0);
    }
}
