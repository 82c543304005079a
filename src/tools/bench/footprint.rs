//! What one node costs, read from /proc: the resident memory and idle CPU of a
//! separate `ra` process (as a user runs it), also once it knows many lock
//! names; and the statistics the report uses.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use super::cluster::{Cluster, FOUND_AFTER, stop};
use crate::protocol::lock::LockName;
use crate::runtime::client::TicketNews;
use crate::tools::process::{RaProcess, Spawn, write_quick_config};

/// Time given to the separate processes to form their cluster before watching.
const FORMATION: Duration = Duration::from_millis(2500);
/// Clients acquiring the many names at once.
const NAME_CLIENTS: usize = 8;

/// Separate `ra` processes in a scratch directory: `count` of them, the first
/// founding, the others joining through it. Killed (and the directory removed)
/// when dropped, whatever happened.
struct Separate {
    nodes: Vec<RaProcess>,
    _dir: tempfile::TempDir,
}

fn start_separate(count: usize) -> Result<Separate> {
    let dir = tempfile::Builder::new()
        .prefix("ra-bench-")
        .tempdir()
        .context("cannot create a scratch directory")?;
    let config = dir.path().join("bench.toml");
    write_quick_config(&config, FOUND_AFTER)?;
    let exe = std::env::current_exe().context("cannot find the ra executable")?;
    let mut nodes: Vec<RaProcess> = Vec::with_capacity(count);
    for i in 0..count {
        let mut spawn = Spawn::new(&exe, dir.path(), &format!("n{}", i + 1))
            .arg("--config")
            .arg(&config);
        if let Some(founder) = nodes.first() {
            spawn = spawn.join(founder.addr());
        }
        nodes.push(RaProcess::start(spawn)?);
        if i == 0 {
            // Let the founder found before the others knock.
            std::thread::sleep(FOUND_AFTER + Duration::from_millis(150));
        }
    }
    Ok(Separate { nodes, _dir: dir })
}

/// Resident memory (kB), CPU use (% of one core) and the resolution of that CPU
/// figure, for the founder of an idle cluster of `nodes` separate `ra` processes.
pub fn footprint(nodes: usize, idle_seconds: f64) -> Result<(f64, f64, f64)> {
    let mut cluster = start_separate(nodes)?;
    std::thread::sleep(FORMATION);
    for node in &mut cluster.nodes {
        if node.exited() {
            bail!("a separate ra process ({}) exited early", node.name);
        }
    }
    let pid = cluster.nodes[0].pid();
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

/// Resident memory (kB) of a separate `ra` process, the founder of a cluster of
/// three, before and after it learns `names` lock names: the third member, a
/// node of this process, takes each name once and gives it back, so the
/// founder answers a request for each and keeps each name's (idle) state.
pub fn names_footprint(runtime: &tokio::runtime::Runtime, names: usize) -> Result<(f64, f64)> {
    let separate = start_separate(2)?;
    let founder = separate.nodes[0].addr();
    let pid = separate.nodes[0].pid();
    runtime.block_on(async {
        let mut cluster = Cluster::new();
        let result = async {
            let member = cluster.spawn(&[founder]).await?;
            cluster.members.push(member);
            wait_seated(&cluster, 3, Duration::from_secs(30)).await?;
            // Let the cluster's own formation traffic settle first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = rss_kb(pid)?;
            let clients = cluster.members[0].handle.clients.clone();
            let names = Arc::new(
                (0..names)
                    .map(|i| LockName::new(&format!("idle-{i}")))
                    .collect::<Result<Vec<_>, _>>()?,
            );
            let mut workers = Vec::new();
            for k in 0..NAME_CLIENTS {
                let clients = clients.clone();
                let names = names.clone();
                workers.push(tokio::spawn(async move {
                    for name in names.iter().skip(k).step_by(NAME_CLIENTS) {
                        let mut ticket = clients.acquire(name.clone())?;
                        match tokio::time::timeout(Duration::from_secs(10), ticket.next()).await {
                            Ok(Some(TicketNews::Granted(_))) => ticket.release(),
                            Ok(other) => bail!("taking {name} ended with {other:?}"),
                            Err(_) => bail!("gave up waiting for {name}"),
                        }
                    }
                    anyhow::Ok(())
                }));
            }
            for worker in workers {
                worker.await.context("a client failed")??;
            }
            // The releases reach the founder; then it is idle.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = rss_kb(pid)?;
            anyhow::Ok((before, after))
        }
        .await;
        while let Some(member) = cluster.members.pop() {
            member.handle.kill();
            stop(member, Duration::from_secs(1)).await;
        }
        result
    })
}

/// Until the in-process node sees an active set of `size` with itself in it.
async fn wait_seated(cluster: &Cluster, size: usize, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let member = cluster.members.first().context("no node")?;
    loop {
        let status = member.handle.clients.status().await?;
        if status
            .active_set
            .as_ref()
            .is_some_and(|s| s.members.len() == size && s.members.contains(&status.me))
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the node of this process got no seat in a set of {size} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
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

pub fn rss_kb(pid: u32) -> Result<f64> {
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

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn round(value: f64, decimals: usize) -> f64 {
    let scale = 10f64.powi(decimals as i32);
    (value * scale).round() / scale
}

fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// Nearest-rank percentile; 0 for no samples.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let sorted = sorted(samples);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(samples: &[f64]) -> f64 {
    let sorted = sorted(samples);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

pub fn max(samples: &[f64]) -> f64 {
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
    fn stat_fields_are_counted_after_the_name() {
        assert!(cpu_ticks(std::process::id()).is_ok());
        assert!(rss_kb(std::process::id()).expect("own status") > 0.0);
    }
}
