//! `ra bench`: measure a real cluster on loopback.
//!
//! The nodes run in this process on the real stack ([`cluster`]: gRPC over TCP,
//! SWIM over UDP, all on 127.0.0.1), driven through the in-process API of
//! [`crate::runtime`]. Every time comes from the nodes' own events, stamped with
//! the instant each happened; every message count comes from what the nodes
//! handed to the wire. The footprint is taken from separate `ra` processes, as a
//! user runs them ([`footprint`]). [`report`] puts each figure beside its target.

pub mod cluster;
pub mod footprint;
pub mod report;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::node::NodeSettings;
use cluster::Cluster;
use footprint::{footprint, names_footprint};
use report::{NAME_CLIENTS, NAME_COUNTS, Row, sweep_table, table};

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Also run every size from 2 to the active-set cap plus two spectators.
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
    /// Skip the membership timings (join, leave, crash detection).
    #[arg(long)]
    pub skip_membership: bool,
    /// Skip the runs on a cluster whose nodes keep a data directory (made
    /// under TMPDIR, so the disk there is the one measured).
    #[arg(long)]
    pub skip_data_dir: bool,
    /// Lock names a separate node is made to know for the memory figure (0
    /// skips it).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub idle_names: usize,
}

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
    let timed = u64::from(args.entries);
    let warmup = (timed / 10).clamp(10, 500);
    row.warmup = warmup;
    row.acquire = cluster.acquire_latency(active[0], warmup, timed).await?;
    row.client_path = cluster
        .client_path_latency(active[0], warmup, timed)
        .await
        .context("timing acquire and release through the API socket")?;
    // Every node contends, spectators too: they are served through members.
    let everyone: Vec<usize> = (0..row.nodes).collect();
    let contention = cluster.contention(&everyone, warmup, timed).await?;
    row.per_node = contention.per_node;
    row.seat_changes = contention.seat_changes;
    row.throughput = contention.throughput;
    row.handoff = contention.handoffs;
    row.contention_entries = contention.entries;
    row.contention_messages = contention.messages;
    for names in NAME_COUNTS {
        let per_second = cluster
            .names_throughput(&active, names, NAME_CLIENTS, warmup, timed)
            .await
            .with_context(|| format!("contending for {names} names"))?;
        row.names_throughput.push((names, per_second));
    }
    if !args.skip_membership {
        for _ in 0..MEMBERSHIP_RUNS {
            cluster.membership_round(row).await?;
        }
    }
    Ok(())
}
