//! Deterministic simulation of whole clusters: `cargo test --release --test sim`.
//!
//! `RA_SIM_SEEDS=N` sets how many random schedules each test runs, `RA_SIM_SEED=S`
//! the first seed, `RA_SIM_TRACE=1` prints the event trace of every failing (or,
//! with one seed, every) schedule.

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use ra::sim::Report;
use ra::sim::schedule::{self, Mix};

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

fn tracing() -> bool {
    std::env::var("RA_SIM_TRACE").is_ok_and(|v| v != "0")
}

struct Summary {
    reports: Vec<Report>,
    elapsed: Duration,
}

/// Run `count` schedules from `first` on every core; reports in seed order.
fn run_many(mix: Mix, first: u64, count: u64) -> Summary {
    let started = Instant::now();
    let next = Mutex::new(first);
    let reports = Mutex::new(Vec::new());
    let workers = thread::available_parallelism().map_or(2, |n| n.get());
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let seed = {
                        let mut next = next.lock().expect("seed counter");
                        if *next >= first + count {
                            return;
                        }
                        *next += 1;
                        *next - 1
                    };
                    let mut schedule = schedule::random(seed, mix);
                    schedule.config.trace = tracing();
                    let report = schedule.run();
                    reports.lock().expect("reports").push(report);
                }
            });
        }
    });
    let mut reports = reports.into_inner().expect("reports");
    reports.sort_by_key(|r| r.seed);
    Summary {
        reports,
        elapsed: started.elapsed(),
    }
}

fn check(test: &str, mix: Mix, default_count: u64) -> Summary {
    let first = env_u64("RA_SIM_SEED").unwrap_or(1);
    let count = env_u64("RA_SIM_SEEDS").unwrap_or(default_count);
    let summary = run_many(mix, first, count);
    let failed: Vec<&Report> = summary.reports.iter().filter(|r| !r.passed()).collect();
    let total = |f: fn(&Report) -> u64| summary.reports.iter().map(f).sum::<u64>();
    println!(
        "{test}: {} schedules (seeds {first}..{}) in {:.1?}: {} entries, {} with partitions, {} false suspicions, \
         {} fenced overlaps, {} stale fences, {} split-cluster overlaps, {} minority entries, \
         {} faults skipped to keep a quorum, {} spectator requests left waiting for a seat, \
         {} requests stranded (every seed gone), max overtaken {}, {:.2} mutex messages per entry",
        summary.reports.len(),
        first + count - 1,
        summary.elapsed,
        total(|r| r.stats.entries),
        summary.reports.iter().filter(|r| r.had_partition).count(),
        total(|r| r.stats.false_suspicions),
        total(|r| r.stats.fenced_overlaps),
        total(|r| r.stats.stale_fences),
        total(|r| r.stats.split_overlaps),
        total(|r| r.stats.minority_entries),
        total(|r| r.skipped_faults),
        total(|r| r.spectators_waiting as u64),
        total(|r| r.stranded as u64),
        summary
            .reports
            .iter()
            .map(|r| r.stats.max_overtaken)
            .max()
            .unwrap_or(0),
        total(|r| r.stats.mutex_messages) as f64 / total(|r| r.stats.entries).max(1) as f64,
    );
    for report in &failed {
        println!("\nFAILED seed {}:", report.seed);
        for violation in &report.violations {
            println!("  {violation}");
        }
        println!(
            "  replay: RA_SIM_SEED={} RA_SIM_SEEDS=1 RA_SIM_TRACE=1 cargo test --release --test sim {test} -- --nocapture",
            report.seed
        );
        for line in &report.trace {
            println!("  {line}");
        }
    }
    if count == 1 && tracing() {
        for line in &summary.reports[0].trace {
            println!("{line}");
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} schedules failed",
        failed.len(),
        summary.reports.len()
    );
    summary
}

#[test]
fn random_schedules() {
    check("random_schedules", Mix::Everything, 2000);
}
