//! The report: every figure of one cluster size beside its target, as a table,
//! a sweep across sizes, or JSON.
//!
//! About 730 lines with its tests, one job: every figure, its target and its
//! three renderings (table, sweep, JSON) read the same list of metrics.

use serde_json::{Map, Value};

use super::cluster::{DEPTH, NodeEntries};
use super::footprint::{max, median, percentile, round};
use super::{BenchArgs, MEMBERSHIP_RUNS};

/// Lock names contended at once in the names runs.
pub const NAME_COUNTS: [usize; 3] = [1, 10, 100];
/// Lock names contended at once on nodes with a thread each.
pub const THREADED_NAME_COUNTS: [usize; 2] = [1, 100];
/// The most clients per active member in the names runs.
pub const NAME_CLIENTS: usize = 8;
/// How many times the single-name throughput many names must reach.
pub const NAMES_SPEEDUP: f64 = 3.0;
/// The most resident memory of a node knowing many idle names.
pub const NAMES_RSS_KB: f64 = 16_384.0;

/// Everything measured for one cluster size.
#[derive(Debug, Default)]
pub struct Row {
    pub nodes: usize,
    pub active: usize,
    pub max_active: usize,
    pub spectators: usize,
    pub warmup: u64,
    /// Acquire latencies of one node alone, in µs.
    pub acquire: Vec<f64>,
    /// Round trips of a bare tonic echo on the same runtime, in µs: the
    /// floor under the acquire ([`super::floor`]).
    pub floor: Vec<f64>,
    /// Acquire plus release through the API socket, as `ra lock` does, in µs.
    pub client_path: Vec<f64>,
    /// The same, from opening the stream to the grant only.
    pub client_grant: Vec<f64>,
    pub throughput: f64,
    /// From one node's exit to the next entry of another, in µs.
    pub handoff: Vec<f64>,
    /// Entries of the whole contention run (warm-up included), and the mutex
    /// messages handed to the wire meanwhile.
    pub contention_entries: u64,
    pub contention_messages: u64,
    /// Each contending node's entries and waits in the contention run.
    pub per_node: Vec<NodeEntries>,
    /// Active sets decided during the contention run.
    pub seat_changes: u64,
    /// Milliseconds; empty with --skip-membership.
    pub join: Vec<f64>,
    pub leave: Vec<f64>,
    /// Members that logged a graceful leave as a failure.
    pub leaves_logged_as_failures: usize,
    pub crash: Vec<f64>,
    /// From killing a holder to the entry of the member that waited, in ms.
    pub failover: Vec<f64>,
    /// From stopping a member (its host lost) to every survivor's verdict, in ms.
    pub host_loss: Vec<f64>,
    /// Stalls of a second each, and the verdicts on them (each one false).
    pub stalls: usize,
    pub false_downs: usize,
    pub rss_kb: f64,
    pub idle_cpu_percent: f64,
    /// One clock tick over the watch, in % of a core: the CPU figure's resolution.
    pub cpu_resolution_percent: f64,
    /// Entries per second with each count of names in [`NAME_COUNTS`], on
    /// nodes that share one thread.
    pub names_throughput: Vec<(usize, f64)>,
    /// The same with each count in [`THREADED_NAME_COUNTS`], on nodes with a
    /// thread each (empty with --skip-membership).
    pub names_throughput_threads: Vec<(usize, f64)>,
    /// Idle lock names a separate node was made to know (0: not measured), and
    /// its resident memory (kB) before and after.
    pub idle_names: usize,
    pub names_rss_kb: Option<(f64, f64)>,
    /// The latency and contention runs again on a cluster whose nodes keep a
    /// data directory (empty and None: skipped), and where it was.
    pub data_dir_acquire: Vec<f64>,
    pub data_dir_throughput: Option<f64>,
    pub data_dir_base: Option<String>,
}

/// The most a join may take to be seen by every member (median).
pub const JOIN_MS: f64 = 300.0;
/// The most a graceful leave may take to be seen by every member (median).
pub const LEAVE_MS: f64 = 100.0;
/// The most resident memory of one idle node.
pub const RSS_KB: f64 = 8192.0;
/// The most CPU an idle node may use, in % of a core.
pub const IDLE_CPU_PERCENT: f64 = 0.5;

/// The most the survivors may take to declare a killed process failed (median).
pub const CRASH_DETECT_MS: f64 = 100.0;
/// The most from killing a holder to the next entry may take (median).
pub const FAILOVER_MS: f64 = 300.0;
/// The most the survivors may take to declare a stopped member failed (median).
pub const HOST_LOSS_MS: f64 = 2000.0;

/// The most an uncontended acquire may take (p50).
pub const ACQUIRE_P50_US: f64 = 100.0;
/// The most from one holder's exit to the next entry may take (p50).
pub const HANDOFF_P50_US: f64 = 40.0;
/// The fewest entries per second of one lock that three contending nodes may make.
pub const THROUGHPUT_PER_S: f64 = 20_000.0;

/// The most an acquire and release through the API socket may take (p50).
pub const CLIENT_PATH_US: f64 = 250.0;

/// The most entries one node may have over another's in the contention run.
pub const FAIRNESS: f64 = 2.0;

impl Row {
    /// Most entries of one contending node over fewest; infinite if one
    /// starved.
    fn entries_spread(&self) -> Option<f64> {
        let most = self.per_node.iter().map(|n| n.entries).max()?;
        let fewest = self.per_node.iter().map(|n| n.entries).min()?;
        Some(if fewest == 0 {
            f64::INFINITY
        } else {
            most as f64 / fewest as f64
        })
    }

    fn seat_changes_per_entry(&self) -> f64 {
        self.seat_changes as f64 / self.contention_entries.max(1) as f64
    }

    fn messages_per_entry(&self) -> f64 {
        self.contention_messages as f64 / self.contention_entries.max(1) as f64
    }

    fn metrics(&self) -> Vec<Metric> {
        let timing =
            |samples: &[f64]| (!samples.is_empty()).then(|| (median(samples), max(samples)));
        let expected_messages = 2.0 * (self.active.saturating_sub(1)) as f64;
        let mut metrics = vec![
            Metric::new("acquire_p50_us", "acquire latency p50", "µs", 1)
                .value(percentile(&self.acquire, 50.0))
                .goal(Goal::AtMost(ACQUIRE_P50_US))
                .column("acq p50 µs"),
            Metric::new("acquire_p99_us", "acquire latency p99", "µs", 1)
                .value(percentile(&self.acquire, 99.0))
                .column("acq p99 µs"),
            Metric::new("floor_p50_us", "bare gRPC round trip p50 (floor)", "µs", 1)
                .maybe(self.floor_p50()),
            Metric::new("acquire_vs_floor", "acquire p50 / floor p50", "", 2)
                .maybe(
                    self.floor_p50()
                        .map(|floor| percentile(&self.acquire, 50.0) / floor.max(1e-9)),
                )
                .column("acq/floor"),
            Metric::new(
                "client_path_p50_us",
                "acquire + release via the API, p50",
                "µs",
                1,
            )
            .maybe((!self.client_path.is_empty()).then(|| percentile(&self.client_path, 50.0)))
            .goal(Goal::AtMost(CLIENT_PATH_US))
            .column("api p50 µs"),
            Metric::new(
                "client_path_p99_us",
                "acquire + release via the API, p99",
                "µs",
                1,
            )
            .maybe((!self.client_path.is_empty()).then(|| percentile(&self.client_path, 99.0))),
            Metric::new(
                "client_grant_p50_us",
                "acquire via the API, grant only, p50",
                "µs",
                1,
            )
            .maybe((!self.client_grant.is_empty()).then(|| percentile(&self.client_grant, 50.0))),
            Metric::new("throughput_cs_per_s", "throughput", "/s", 0)
                .value(self.throughput)
                .goal(Goal::AtLeast(THROUGHPUT_PER_S))
                .column("cs/s"),
            Metric::new(
                "data_dir_acquire_p50_us",
                "acquire latency p50, with --data-dir",
                "µs",
                1,
            )
            .maybe(self.data_dir_p50())
            .column("dir p50 µs"),
            Metric::new(
                "data_dir_acquire_p99_us",
                "acquire latency p99, with --data-dir",
                "µs",
                1,
            )
            .maybe(
                (!self.data_dir_acquire.is_empty())
                    .then(|| percentile(&self.data_dir_acquire, 99.0)),
            ),
            Metric::new(
                "data_dir_acquire_ratio",
                "acquire p50 with --data-dir / without",
                "",
                2,
            )
            .maybe(
                self.data_dir_p50()
                    .map(|p50| p50 / percentile(&self.acquire, 50.0).max(1e-9)),
            ),
            Metric::new(
                "data_dir_throughput_cs_per_s",
                "throughput, with --data-dir",
                "/s",
                0,
            )
            .maybe(self.data_dir_throughput)
            .column("dir cs/s"),
            Metric::new(
                "data_dir_throughput_ratio",
                "throughput with --data-dir / without",
                "",
                2,
            )
            .maybe(
                self.data_dir_throughput
                    .map(|t| t / self.throughput.max(1e-9)),
            ),
            Metric::new("handoff_p50_us", "handoff p50", "µs", 1)
                .value(percentile(&self.handoff, 50.0))
                .goal(Goal::AtMost(HANDOFF_P50_US))
                .column("handoff µs"),
            Metric::new("messages_per_entry", "messages per entry", "", 3)
                .value(self.messages_per_entry())
                // Fewer when a member passes its hold on to the spectators
                // it carries: those entries cost no Ricart–Agrawala message.
                .goal(Goal::AtMost(expected_messages))
                .column("msg/entry"),
            Metric::new("entries_spread", "entries per node, most / fewest", "", 2)
                .maybe(self.entries_spread())
                .goal(Goal::AtMost(FAIRNESS))
                .column("max/min"),
            Metric::new("seat_changes_per_entry", "seat changes per entry", "", 4)
                .value(self.seat_changes_per_entry())
                .goal(Goal::Exactly(0.0))
                .column("seats/entry"),
            Metric::new("join_ms", "join", "ms", 1)
                .timing(timing(&self.join))
                .goal(Goal::AtMost(JOIN_MS))
                .column("join ms"),
            Metric::new("leave_ms", "leave", "ms", 1)
                .timing(timing(&self.leave))
                .goal(Goal::AtMost(LEAVE_MS))
                .column("leave ms"),
            Metric::new("crash_detect_ms", "crash detection", "ms", 1)
                .timing(timing(&self.crash))
                .goal(Goal::AtMost(CRASH_DETECT_MS))
                .column("crash ms"),
            Metric::new(
                "failover_ms",
                "failover, killed holder to next entry",
                "ms",
                1,
            )
            .timing(timing(&self.failover))
            .goal(Goal::AtMost(FAILOVER_MS))
            .column("failover ms"),
            Metric::new("host_loss_detect_ms", "host loss detection", "ms", 1)
                .timing(timing(&self.host_loss))
                .goal(Goal::AtMost(HOST_LOSS_MS))
                .column("host loss ms"),
            Metric::new("false_downs", "1 s stalls declared failures", "", 0)
                .maybe((self.stalls > 0).then_some(self.false_downs as f64))
                .goal(Goal::Exactly(0.0))
                .column("false downs"),
            Metric::new("rss_kb", "resident memory, one node", "kB", 0)
                .value(self.rss_kb)
                .goal(Goal::AtMost(RSS_KB))
                .column("rss kB"),
            Metric::new("idle_cpu_percent", "idle CPU, one node", "%", 3)
                .value(self.idle_cpu_percent)
                .goal(Goal::AtMost(IDLE_CPU_PERCENT))
                .column("cpu %"),
        ];
        for names in NAME_COUNTS {
            let metric = names_metric(&self.names_throughput, names, "", "at random");
            metrics.push(if names == 100 {
                metric.column("100 names/s")
            } else {
                metric
            });
        }
        // The names target is judged where the nodes run in parallel, as
        // processes do: on one shared thread there is no parallelism to show.
        let single = per_second(&self.names_throughput_threads, 1);
        for names in THREADED_NAME_COUNTS {
            let runs = &self.names_throughput_threads;
            let metric = names_metric(runs, names, "threads_", "a thread per node");
            metrics.push(match single.filter(|_| names > 1) {
                Some(single) => metric
                    .goal(Goal::AtLeast(NAMES_SPEEDUP * single.round()))
                    .column("100 names/s, threads"),
                None => metric,
            });
        }
        metrics.push(
            Metric::new(
                "threads_names_speedup",
                "100 names / 1 name, a thread per node",
                "",
                2,
            )
            .maybe(
                per_second(&self.names_throughput_threads, 100)
                    .zip(single)
                    .map(|(many, one)| many / one.max(1e-9)),
            )
            .column("names x"),
        );
        metrics.push(
            Metric::new(
                "rss_idle_names_kb",
                format!("resident memory, {} idle names", self.idle_names),
                "kB",
                0,
            )
            .maybe(self.names_rss_kb.map(|(_, after)| after))
            .goal(Goal::AtMost(NAMES_RSS_KB))
            .column("rss names kB"),
        );
        metrics
    }

    fn floor_p50(&self) -> Option<f64> {
        (!self.floor.is_empty()).then(|| percentile(&self.floor, 50.0))
    }

    fn data_dir_p50(&self) -> Option<f64> {
        (!self.data_dir_acquire.is_empty()).then(|| percentile(&self.data_dir_acquire, 50.0))
    }

    pub fn to_json(&self) -> Value {
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
            ("stalls", self.stalls),
            ("idle_names", self.idle_names),
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
        object.insert(
            "rss_idle_names_base_kb".into(),
            number(self.names_rss_kb.map(|(before, _)| before), 0),
        );
        let per_node: Vec<Value> = self
            .per_node
            .iter()
            .map(|n| {
                let mut node = Map::new();
                node.insert("node".into(), Value::from(n.node.clone()));
                node.insert("entries".into(), Value::from(n.entries));
                node.insert(
                    "wait_p99_us".into(),
                    number((!n.waits.is_empty()).then(|| percentile(&n.waits, 99.0)), 0),
                );
                Value::Object(node)
            })
            .collect();
        object.insert("per_node".into(), Value::Array(per_node));
        for metric in &metrics {
            object.insert(metric.key.clone(), number(metric.value, metric.decimals));
            if metric.max.is_some() || metric.key.ends_with("_ms") {
                let key = format!("{}_max_ms", metric.key.trim_end_matches("_ms"));
                object.insert(key, number(metric.max, metric.decimals));
            }
        }
        Value::Object(object)
    }
}

/// Entries per second with `names` names in `runs`, if measured.
fn per_second(runs: &[(usize, f64)], names: usize) -> Option<f64> {
    runs.iter().find(|(n, _)| *n == names).map(|(_, v)| *v)
}

/// The throughput figure of `names` names in `runs`, its key starting with
/// `prefix`, its label ending with `how`.
fn names_metric(runs: &[(usize, f64)], names: usize, prefix: &str, how: &str) -> Metric {
    let noun = if names == 1 { "name" } else { "names" };
    Metric::new(
        format!("{prefix}throughput_{names}_{noun}_cs_per_s"),
        format!("throughput, {names} {noun}, {how}"),
        "/s",
        0,
    )
    .maybe(per_second(runs, names))
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Goal {
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
    key: String,
    label: String,
    unit: &'static str,
    decimals: usize,
    /// The figure (the median, for a timing); None when skipped.
    value: Option<f64>,
    /// For a timing: the slowest run.
    max: Option<f64>,
    goal: Goal,
    /// Its header in the sweep table; None: not in that table.
    column: Option<&'static str>,
}

impl Metric {
    fn new(
        key: impl Into<String>,
        label: impl Into<String>,
        unit: &'static str,
        decimals: usize,
    ) -> Self {
        Self {
            key: key.into(),
            label: label.into(),
            unit,
            decimals,
            value: None,
            max: None,
            goal: Goal::None,
            column: None,
        }
    }

    fn value(mut self, value: f64) -> Self {
        self.value = Some(value);
        self
    }

    /// A figure that may not have been measured.
    fn maybe(mut self, value: Option<f64>) -> Self {
        self.value = value;
        self
    }

    fn column(mut self, header: &'static str) -> Self {
        self.column = Some(header);
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

pub fn table(row: &Row, args: &BenchArgs) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "ra bench: {} nodes on 127.0.0.1 in one process on one thread, real gRPC over TCP and SWIM over UDP\n",
        row.nodes
    ));
    out.push_str(&format!(
        "  active set: {} of at most {}, {} spectator(s){}; critical section held 0 ms\n",
        row.active,
        row.max_active,
        row.spectators,
        if row.spectators > 0 {
            " (they contend too, served through members)"
        } else {
            ""
        }
    ));
    out.push_str(&format!(
        "  latency: {} requests by one member alone, after {} warm-up; contention: {} entries timed after {} warm-up, {DEPTH} requests outstanding per node\n",
        row.acquire.len(),
        row.warmup,
        args.entries,
        row.warmup
    ));
    match &row.data_dir_base {
        Some(base) => out.push_str(&format!(
            "  --data-dir: the latency and contention runs again on a second cluster, each node with a data directory under {base} (fsync per write)\n"
        )),
        None => out.push_str("  --data-dir: skipped (--skip-data-dir)\n"),
    }
    if args.skip_membership {
        out.push_str("  membership: skipped (--skip-membership)\n");
    } else {
        out.push_str(&format!(
            "  membership: median and max of {MEMBERSHIP_RUNS} runs each (join: {} samples), shipped SWIM settings, until every other member logged it,\n  \
             on nodes with a thread each (a kill closes every socket, a pause keeps them open); {} stall(s) of {} s\n",
            row.join.len(),
            row.stalls,
            super::membership::STALL.as_secs()
        ));
    }
    out.push_str(&format!(
        "  footprint: the founder of {} separate idle `ra` processes, watched for {} s (CPU counted in clock ticks: {:.2}% a tick)\n",
        row.nodes, args.idle_seconds, row.cpu_resolution_percent
    ));
    out.push_str(&format!(
        "  names: {} entries timed over {} names taken at random by {NAME_CLIENTS} clients per active member (and over 1 and 100 on the membership cluster's nodes, a thread each); ",
        args.entries,
        NAME_COUNTS.map(|n| n.to_string()).join(", "),
    ));
    match row.names_rss_kb {
        Some((before, _)) => out.push_str(&format!(
            "memory: the founder of 3 separate processes, {before:.0} kB before a node of this process took {} names once each\n\n",
            row.idle_names
        )),
        None => out.push_str("memory with many names: skipped (--idle-names 0)\n\n"),
    }
    let metrics = row.metrics();
    let shown: Vec<String> = metrics.iter().map(Metric::shown).collect();
    let value_width = shown
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let label_width = metrics
        .iter()
        .map(|m| m.label.chars().count())
        .max()
        .unwrap_or(6);
    out.push_str(&format!(
        "  {:<label_width$} {:>value_width$}   target\n",
        "metric", "value"
    ));
    for (metric, value) in metrics.iter().zip(&shown) {
        let mark = if metric.missed() { "   MISS" } else { "" };
        out.push_str(&format!(
            "  {:<label_width$} {:>value_width$}   {}{mark}\n",
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
    out.push_str(&per_node_lines(row));
    out.push_str(&leave_note(row));
    out
}

/// One line per contending node: its entries and its p99 wait.
fn per_node_lines(row: &Row) -> String {
    let mut out = format!("  contention per node ({} nodes):", row.nodes);
    for node in &row.per_node {
        let p99 = if node.waits.is_empty() {
            "-".to_string()
        } else {
            format!("{:.0} µs", percentile(&node.waits, 99.0))
        };
        out.push_str(&format!(
            " {} {} entries (wait p99 {p99});",
            node.node, node.entries
        ));
    }
    out.pop();
    out.push('\n');
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

pub fn sweep_table(rows: &[Row], args: &BenchArgs) -> String {
    let mut headers = vec!["nodes", "active", "spect"];
    if let Some(row) = rows.first() {
        headers.extend(row.metrics().iter().filter_map(|m| m.column));
    }
    let mut lines: Vec<Vec<String>> = vec![headers.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let mut cells = vec![
            row.nodes.to_string(),
            row.active.to_string(),
            row.spectators.to_string(),
        ];
        for metric in row.metrics().iter().filter(|m| m.column.is_some()) {
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
    let stall = super::membership::STALL.as_secs();
    out.push_str(&format!(
        "\n  targets: acquire p50 <= {ACQUIRE_P50_US} µs, via the API p50 <= {CLIENT_PATH_US} µs, throughput >= {THROUGHPUT_PER_S}/s, handoff p50 <= {HANDOFF_P50_US} µs,\n  \
         messages per entry <= 2(active-1), join <= {JOIN_MS} ms, leave <= {LEAVE_MS} ms, crash detection <= {CRASH_DETECT_MS} ms, failover <= {FAILOVER_MS} ms,\n  \
         host loss detection <= {HOST_LOSS_MS} ms, no {stall} s stall declared a failure, rss <= {RSS_KB} kB, idle cpu <= {IDLE_CPU_PERCENT}%,\n  \
         100 names/s >= {NAMES_SPEEDUP}x the single name's (a thread per node), rss with many idle names <= {NAMES_RSS_KB} kB; * = missed.\n  \
         entries per node max/min <= {FAIRNESS}, no seat changes under contention.\n  \
         Every node contends, spectators too; join, leave, crash, failover and host loss are medians (the JSON has the max too).\n",
    ));
    let three = rows.iter().find(|r| r.nodes == 3).map(|r| r.throughput);
    if let Some(three) = three.filter(|t| *t > 0.0) {
        for row in rows.iter().filter(|r| r.nodes > 3) {
            out.push_str(&format!(
                "  throughput at {} nodes: {:.2} of the 3-node figure (target >= 0.5)\n",
                row.nodes,
                row.throughput / three
            ));
        }
    }
    for row in rows {
        out.push_str(&per_node_lines(row));
        out.push_str(&leave_note(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_judge_and_read() {
        assert!(Goal::AtMost(150.0).met(150.0));
        assert!(!Goal::AtLeast(5000.0).met(4999.0));
        assert!(Goal::Exactly(4.0).met(4.0));
        assert!(!Goal::Exactly(4.0).met(4.01));
        assert_eq!(Goal::AtMost(300.0).text("ms"), "<= 300 ms");
    }

    #[test]
    fn many_names_are_judged_against_one() {
        let row = Row {
            names_throughput: vec![(1, 1000.0), (10, 2500.0), (100, 2900.0)],
            names_throughput_threads: vec![(1, 1000.0), (100, 2900.0)],
            idle_names: 10_000,
            names_rss_kb: Some((8000.0, 9000.0)),
            ..Row::default()
        };
        let metrics = row.metrics();
        let find = |key: &str| {
            metrics
                .iter()
                .find(|m| m.key == key)
                .unwrap_or_else(|| panic!("no figure {key}"))
        };
        let hundred = find("threads_throughput_100_names_cs_per_s");
        assert!(hundred.missed(), "2900 is below 3 x 1000");
        assert!(
            !find("throughput_100_names_cs_per_s").missed(),
            "the shared thread's figure is shown, not judged"
        );
        assert_eq!(find("threads_names_speedup").value, Some(2.9));
        let met = Row {
            names_throughput_threads: vec![(1, 1000.0), (100, 3100.0)],
            ..Row::default()
        };
        assert!(
            !met.metrics()
                .iter()
                .any(|m| m.key.starts_with("threads_") && m.missed())
        );
        let rss = metrics
            .iter()
            .find(|m| m.key == "rss_idle_names_kb")
            .expect("the memory figure");
        assert!(!rss.missed());
        let json = row.to_json();
        assert_eq!(json["rss_idle_names_base_kb"], 8000);
        assert_eq!(json["throughput_10_names_cs_per_s"], 2500);
    }
}
