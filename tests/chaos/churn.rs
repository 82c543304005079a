//! Issue 11, fault 5: churn. For 60 s, three contenders loop on `ra lock
//! counter` while nodes join, leave gracefully, get killed and restart. Hosts 0
//! and 1 run throughout (their RSS is watched); the third seat goes round hosts
//! 2, 3 and 4, one change at a time, so a quorum of the active set is always up.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::lab::{Lab, NodeOpts, lab_or_skip, now_us};
use super::logs::{NodeLog, clock};
use super::scenario::{Report, gather, secs, start_cluster, wait_until};
use super::store::{OpKind, Store, WriteOutcome};
use super::workload::{ClientOpts, Increment, Workload, outcome_counts};

const HOSTS: usize = 5;
/// Nodes that run from start to end.
const STEADY: [usize; 2] = [0, 1];
/// Where the contenders ask: the two steady nodes and one that churns.
const CONTENDERS: [usize; 3] = [0, 1, 2];
const CHURN: Duration = Duration::from_secs(60);
/// Between one change and the next (a kill is detected in under 2 s, a
/// decision follows).
const STEP: Duration = Duration::from_secs(6);
/// ra lock's --timeout for the contenders: a request that waits longer (on a
/// spectator, say) ends 124, explicitly.
const TIMEOUT: Duration = Duration::from_secs(15);
/// RSS of a steady node may grow by at most this fraction.
const RSS_GROWTH: f64 = 0.20;

#[derive(Default)]
struct HostStats {
    starts: usize,
    kills: usize,
    leaves: usize,
}

/// The host whose node holds the third seat, as host 0 last logged its set.
fn third_seat(lab: &Lab) -> Option<usize> {
    let set = NodeLog::read(&lab.host(0).log).active_set()?;
    if set.members.len() < 3 {
        return None;
    }
    set.members
        .iter()
        .filter_map(|m| lab.host_of(m))
        .find(|h| !STEADY.contains(h))
}

pub fn run(test: &str) {
    let Some(lab) = lab_or_skip(test, HOSTS) else {
        return;
    };
    let store = Store::start(&lab.path("store.sock")).expect("the fenced store starts");
    start_cluster(&lab, test, &[0, 1, 2, 3], 3);
    let join = NodeOpts {
        join: STEADY.to_vec(),
        ..NodeOpts::default()
    };

    let workload = Workload::with_opts(
        &lab,
        &store.path,
        ClientOpts {
            timeout: Some(TIMEOUT),
            grace: Some(Duration::from_secs(2)),
            ..ClientOpts::default()
        },
    );
    let mut stats: Vec<HostStats> = (0..HOSTS).map(|_| HostStats::default()).collect();
    for st in stats.iter_mut().take(4) {
        st.starts += 1;
    }
    let mut actions: Vec<String> = Vec::new();
    let mut rss_start: Vec<(usize, u64)> = Vec::new();
    let mut rss_end: Vec<(usize, u64)> = Vec::new();
    let mut start_us = 0;
    let mut end_us = 0;
    let mut unserved = Vec::new();
    std::thread::scope(|s| {
        let _abort = workload.abort_on_drop();
        workload.run(s, &CONTENDERS);
        std::thread::sleep(Duration::from_secs(2));
        rss_start = STEADY
            .iter()
            .map(|&h| (h, lab.node(h).rss_kib().unwrap_or(0)))
            .collect();
        start_us = now_us();
        let began = Instant::now();
        let mut act = |what: String| {
            actions.push(format!("+{} {what}", secs(start_us, now_us())));
        };
        // A node that joins for the first time.
        lab.start_node(4, &join).expect("start host 4");
        stats[4].starts += 1;
        act(format!("{} joins", lab.addr(4)));
        let mut kill_next = true;
        while began.elapsed() + STEP < CHURN {
            std::thread::sleep(STEP / 2);
            // The third seat's holder goes: killed or leaving, in turn.
            let mut victim = None;
            wait_until(Duration::from_secs(8), || {
                victim = third_seat(&lab).filter(|h| lab.node(*h).is_running());
                victim.is_some()
            });
            let Some(v) = victim else {
                act("no third seat is filled: nothing to churn".into());
                continue;
            };
            if kill_next {
                lab.node(v).kill();
                stats[v].kills += 1;
                act(format!("{} killed (SIGKILL)", lab.addr(v)));
            } else {
                let left = lab.node(v).leave(Duration::from_secs(6));
                stats[v].leaves += 1;
                act(format!("{} leaves (SIGTERM): {left:?}", lab.addr(v)));
            }
            kill_next = !kill_next;
            std::thread::sleep(STEP / 2);
            match lab.start_node(v, &join) {
                Ok(()) => {
                    stats[v].starts += 1;
                    act(format!("{} restarts", lab.addr(v)));
                }
                Err(e) => act(format!("{} does not restart: {e}", lab.addr(v))),
            }
        }
        std::thread::sleep(CHURN.saturating_sub(began.elapsed()));
        end_us = now_us();
        rss_end = STEADY
            .iter()
            .map(|&h| (h, lab.node(h).rss_kib().unwrap_or(0)))
            .collect();
        workload.stop_asking();
        unserved = workload.wait_idle(Instant::now() + TIMEOUT + Duration::from_secs(5));
        workload.abort();
    });

    let (logs, history, incs, holds_all) = gather(&lab, &store, &workload);
    let mut r = Report::new(
        &lab,
        test,
        &format!(
            "{:.0} s of churn: 3 contenders (ra lock --timeout {}s) on {}, {} and {}; the third seat killed or left, then restarted, every {:.0} s",
            CHURN.as_secs_f64(),
            TIMEOUT.as_secs(),
            lab.addr(0),
            lab.addr(1),
            lab.addr(2),
            STEP.as_secs_f64()
        ),
    );
    let _ = writeln!(r, "changes: {}", actions.join("; "));
    let _ = writeln!(
        r,
        "{:<17} {:>6} {:>6} {:>6} {:>8}   contender's outcomes",
        "node", "starts", "kills", "leaves", "entries"
    );
    for (h, st) in stats.iter().enumerate() {
        let addr = lab.addr(h);
        let mine: Vec<&Increment> = incs.iter().filter(|x| x.host == h).collect();
        let _ = writeln!(
            r,
            "{addr:<17} {:>6} {:>6} {:>6} {:>8}   {}",
            st.starts,
            st.kills,
            st.leaves,
            holds_all.iter().filter(|x| x.node == addr).count(),
            if CONTENDERS.contains(&h) {
                outcome_counts(&mine)
            } else {
                "-".into()
            }
        );
    }
    let epochs: Vec<u64> = logs[0].installs().iter().map(|i| i.epoch).collect();
    let _ = writeln!(
        r,
        "active sets seen by {}: epochs {}..{} ({} installs)",
        lab.addr(0),
        epochs.first().copied().unwrap_or(0),
        epochs.last().copied().unwrap_or(0),
        epochs.len()
    );

    // Every request was served or explicitly refused.
    for inc in &incs {
        if !inc.outcome.is_explicit() {
            r.fail(format!(
                "{} through {} (asked at {}) ended without a documented status: {:?}: {}",
                inc.client,
                lab.addr(inc.host),
                clock(inc.asked_us),
                inc.outcome,
                inc.stderr.trim()
            ));
        }
    }
    for (host, asked) in &unserved {
        r.fail(format!(
            "a request through {} (asked at {}) had no answer {}s after the churn",
            lab.addr(*host),
            clock(*asked),
            (TIMEOUT + Duration::from_secs(5)).as_secs()
        ));
    }
    // The longest wait of a steady node's request, and the longest gap between
    // entries (the cluster kept serving through the churn).
    let longest_wait = incs
        .iter()
        .filter(|x| STEADY.contains(&x.host))
        .filter_map(|x| x.served.map(|(_, at)| at.saturating_sub(x.asked_us)))
        .max()
        .unwrap_or(0);
    let mut enters: Vec<u64> = holds_all
        .iter()
        .map(|h| h.enter_us)
        .filter(|t| (start_us..end_us).contains(t))
        .collect();
    enters.sort_unstable();
    let longest_gap = enters.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let _ = writeln!(
        r,
        "longest wait of a steady node's request: {}; longest gap between entries during the churn: {}",
        secs(0, longest_wait),
        secs(0, longest_gap)
    );

    // No two accepted writes share a fence (also checked in the accounting).
    let accepted_fences: Vec<u64> = history
        .iter()
        .filter_map(|op| match op.kind {
            OpKind::Write {
                fence,
                outcome: WriteOutcome::Accepted,
                ..
            } => Some(fence),
            _ => None,
        })
        .collect();
    let mut distinct = accepted_fences.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let _ = writeln!(
        r,
        "accepted writes {}, distinct fences {}",
        accepted_fences.len(),
        distinct.len()
    );
    r.store_accounting(&history, &incs);

    // RSS of the steady nodes.
    for ((h, before), (_, after)) in rss_start.iter().zip(&rss_end) {
        let growth = if *before == 0 {
            f64::INFINITY
        } else {
            *after as f64 / *before as f64 - 1.0
        };
        let _ = writeln!(
            r,
            "RSS of {}: {before} KiB at the start, {after} KiB at the end ({:+.1}%)",
            lab.addr(*h),
            growth * 100.0
        );
        r.expect(growth <= RSS_GROWTH, || {
            format!(
                "RSS of {} grew from {before} KiB to {after} KiB, more than {:.0}%",
                lab.addr(*h),
                RSS_GROWTH * 100.0
            )
        });
    }
    for &h in &STEADY {
        r.expect(lab.node(h).is_running(), || {
            format!("the steady node {} is not running", lab.addr(h))
        });
    }
    r.finish_checked(&logs, &history);
}
