//! `ra bench`: measure a real cluster on loopback.
//!
//! The nodes run in this process on the real stack ([`cluster`]: gRPC over TCP,
//! SWIM over UDP, all on 127.0.0.1), driven through the in-process API of
//! [`crate::runtime`]: on the benchmark's one thread for latency and throughput,
//! measured beside a bare gRPC echo on the same thread ([`floor`]), and on a
//! thread each for crashes, pauses and the rest of membership ([`membership`]).
//! Every time comes from the nodes' own events, stamped with the instant each
//! happened; every message count comes from what the nodes handed to the wire.
//! The footprint is taken from separate `ra` processes, as a user runs them
//! ([`footprint`]); [`api_client`] takes locks through an API socket, as `ra
//! lock` does, also of a node running on its own (`--node`). [`report`] puts
//! each figure beside its target.

pub mod api_client;
pub mod cluster;
pub mod floor;
pub mod footprint;
pub mod membership;
pub mod report;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use cluster::Cluster;
use footprint::{footprint, names_footprint};
use report::{NAME_CLIENTS, NAME_COUNTS, Row, THREADED_NAME_COUNTS, sweep_table, table};

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Also run every size from 2 to 10 nodes (spectators beyond the cap of 3).
    #[arg(long)]
    pub sweep: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Critical-section entries to time for latency and throughput.
    #[arg(long, default_value_t = 2000)]
    pub entries: u32,
    /// Seconds to watch an idle node for CPU use.
    #[arg(long, default_value_t = 3.0)]
    pub idle_seconds: f64,
    /// Skip the membership timings (join, leave, crash, failover, host loss
    /// and stalls).
    #[arg(long)]
    pub skip_membership: bool,
    /// Seconds of one-second stalls (one every 3 s, each member in turn) that
    /// must not be declared failures: 600 for the 10-minute run.
    #[arg(long, value_name = "S", default_value_t = 6)]
    pub stall_seconds: u64,
    /// Skip the runs on a cluster whose nodes keep a data directory (made
    /// under TMPDIR, so the disk there is the one measured).
    #[arg(long)]
    pub skip_data_dir: bool,
    /// Lock names a separate node is made to know for the memory figure (0
    /// skips it).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub idle_names: usize,
    /// Only time acquire and release of the lock `bench` through this running
    /// node's API (`:PORT` or the socket's path), from this process, as
    /// `ra lock` would: what a program sees of a node that runs on its own.
    #[arg(long, value_name = "ADDR")]
    pub node: Option<String>,
}

/// The largest cluster `--sweep` measures.
pub const SWEEP_NODES: usize = 10;

/// Joins, leaves and crashes timed per cluster size; the median is reported.
pub const MEMBERSHIP_RUNS: usize = 3;

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
    if let Some(node) = &args.node {
        return time_running_node(node, args);
    }
    if !args.idle_seconds.is_finite() || args.idle_seconds <= 0.0 || args.idle_seconds > 3600.0 {
        bail!(
            "--idle-seconds must be a positive number of seconds, at most 3600 (got {})",
            args.idle_seconds
        );
    }
    if args.stall_seconds > 3600 {
        bail!(
            "--stall-seconds must be at most 3600 (got {})",
            args.stall_seconds
        );
    }
    let sizes: Vec<usize> = if args.sweep {
        (2..=SWEEP_NODES).collect()
    } else {
        vec![args.nodes]
    };
    let runtime = bench_runtime()?;
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

/// The benchmark's own runtime: one thread, as a node's
/// ([`crate::runtime::node_runtime`]) and as `ra lock`'s.
fn bench_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

/// Entries timed in each run, and the warm-up entries before them.
fn entries_timed(args: &BenchArgs) -> (u64, u64) {
    let timed = u64::from(args.entries);
    (timed, (timed / 10).clamp(10, 500))
}

/// `--node`: acquire and release through a running node's API, p50 and p99.
fn time_running_node(node: &str, args: &BenchArgs) -> Result<ExitCode> {
    let runtime = bench_runtime()?;
    let (timed, warmup) = entries_timed(args);
    let times = runtime.block_on(async {
        let (mut client, socket) = crate::commands::connect(node).await?;
        let times = api_client::round_trips(&mut client, "bench", warmup, timed)
            .await
            .with_context(|| format!("taking the lock `bench` through {}", socket.display()))?;
        anyhow::Ok(times)
    })?;
    let percentiles = |samples: &[f64]| {
        (
            footprint::percentile(samples, 50.0),
            footprint::percentile(samples, 99.0),
        )
    };
    let (p50, p99) = percentiles(&times.released);
    let (grant_p50, grant_p99) = percentiles(&times.granted);
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let figures = serde_json::json!({
            "client_path_p50_us": p50,
            "client_path_p99_us": p99,
            "client_grant_p50_us": grant_p50,
            "client_grant_p99_us": grant_p99,
            "entries": timed,
        });
        writeln!(stdout, "{figures}")?;
    } else {
        writeln!(
            stdout,
            "acquire + release of `bench` via {node}'s API, {timed} entries after {warmup} warm-up: p50 {p50:.1} µs, p99 {p99:.1} µs; to the grant: p50 {grant_p50:.1} µs, p99 {grant_p99:.1} µs"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn measure_size(runtime: &tokio::runtime::Runtime, args: &BenchArgs, nodes: usize) -> Result<Row> {
    let mut row = Row {
        nodes,
        ..Row::default()
    };
    {
        // The API sockets, for the client-path figure, in a directory of ours.
        let api_dir = tempfile::Builder::new()
            .prefix("ra-bench-")
            .tempdir()
            .context("cannot make a directory for the API sockets")?;
        runtime.block_on(async {
            let mut cluster = Cluster::new();
            cluster.api_dir = Some(api_dir.path().to_path_buf());
            let result = measure_in_process(&mut cluster, args, &mut row).await;
            cluster.shutdown().await;
            result
        })?;
    }
    if !args.skip_membership {
        runtime.block_on(async {
            let mut cluster = Cluster::new();
            cluster.own_threads = true;
            let result = measure_membership(&mut cluster, args, &mut row).await;
            cluster.shutdown().await;
            result
        })?;
    }
    if !args.skip_data_dir {
        // The same runs with `--data-dir` on every node, on fresh directories.
        let data_dir = tempfile::Builder::new()
            .prefix("ra-bench-data-")
            .tempdir()
            .context("cannot make a directory for the data directories")?;
        row.data_dir_base = Some(data_dir.path().display().to_string());
        runtime.block_on(async {
            let mut cluster = Cluster::new();
            cluster.data_dir = Some(data_dir.path().to_path_buf());
            let result = measure_data_dir(&mut cluster, args, &mut row).await;
            cluster.shutdown().await;
            result
        })?;
    }
    let (rss_kb, cpu, resolution) = footprint(nodes, args.idle_seconds)?;
    row.cpu_resolution_percent = resolution;
    row.rss_kb = rss_kb;
    row.idle_cpu_percent = cpu;
    row.idle_names = args.idle_names;
    if args.idle_names > 0 {
        row.names_rss_kb = Some(
            names_footprint(runtime, args.idle_names)
                .context("measuring the memory of many idle names")?,
        );
    }
    Ok(row)
}

/// Uncontended latency and contended throughput, as in [`measure_in_process`],
/// on a cluster whose nodes keep a data directory.
async fn measure_data_dir(cluster: &mut Cluster, args: &BenchArgs, row: &mut Row) -> Result<()> {
    let active = cluster
        .form(row.nodes)
        .await
        .context("forming a cluster with data directories")?;
    let timed = u64::from(args.entries);
    row.data_dir_acquire = cluster
        .acquire_latency(active[0], row.warmup, timed)
        .await
        .context("timing acquires with a data directory")?;
    let everyone: Vec<usize> = (0..row.nodes).collect();
    let contention = cluster
        .contention(&everyone, row.warmup, timed)
        .await
        .context("contending with data directories")?;
    row.data_dir_throughput = Some(contention.throughput);
    Ok(())
}

async fn measure_in_process(cluster: &mut Cluster, args: &BenchArgs, row: &mut Row) -> Result<()> {
    let active = cluster.form(row.nodes).await?;
    row.active = active.len();
    row.max_active = cluster.max_active;
    row.spectators = row.nodes - active.len();
    let (timed, warmup) = entries_timed(args);
    row.warmup = warmup;
    row.floor = floor::round_trips(warmup, timed)
        .await
        .context("timing the floor (a bare gRPC echo)")?;
    row.acquire = cluster.acquire_latency(active[0], warmup, timed).await?;
    let api = cluster
        .client_path_latency(active[0], warmup, timed)
        .await
        .context("timing acquire and release through the API socket")?;
    row.client_path = api.released;
    row.client_grant = api.granted;
    // Every node contends, spectators too: they are served through members.
    let everyone: Vec<usize> = (0..row.nodes).collect();
    let contention = cluster.contention(&everyone, warmup, timed).await?;
    row.per_node = contention.per_node;
    row.seat_changes = contention.seat_changes;
    row.throughput = contention.throughput;
    row.handoff = contention.handoffs;
    row.contention_entries = contention.entries;
    row.contention_messages = contention.messages;
    row.names_throughput = names_runs(cluster, &active, &NAME_COUNTS, warmup, timed).await?;
    Ok(())
}

/// Entries per second with each count of names, on `cluster`.
async fn names_runs(
    cluster: &mut Cluster,
    active: &[usize],
    counts: &[usize],
    warmup: u64,
    timed: u64,
) -> Result<Vec<(usize, f64)>> {
    let mut runs = Vec::with_capacity(counts.len());
    for &names in counts {
        let per_second = cluster
            .names_throughput(active, names, NAME_CLIENTS, warmup, timed)
            .await
            .with_context(|| format!("contending for {names} names"))?;
        runs.push((names, per_second));
    }
    Ok(runs)
}

/// Joins, leaves, crashes, failovers, lost hosts and stalls, on a cluster
/// whose nodes each run on a thread of their own ([`Cluster::own_threads`]).
async fn measure_membership(cluster: &mut Cluster, args: &BenchArgs, row: &mut Row) -> Result<()> {
    let active = cluster.form(row.nodes).await?;
    // Names in parallel, as separate processes run them: on the shared thread
    // above, many names can only fill the gaps one name leaves.
    let (timed, warmup) = entries_timed(args);
    row.names_throughput_threads =
        names_runs(cluster, &active, &THREADED_NAME_COUNTS, warmup, timed)
            .await
            .context("on nodes with a thread each")?;
    for _ in 0..MEMBERSHIP_RUNS {
        cluster.membership_round(row).await?;
        cluster
            .failover(row)
            .await
            .context("killing a holder while a member waits")?;
        cluster
            .host_loss(row)
            .await
            .context("stopping a member until it is declared failed")?;
    }
    let round = membership::STALL_ROUND.as_secs().max(1);
    let rounds = usize::try_from(args.stall_seconds.div_ceil(round)).unwrap_or(usize::MAX);
    cluster
        .stalls(row, rounds)
        .await
        .context("stalling members for a second each")?;
    Ok(())
}
