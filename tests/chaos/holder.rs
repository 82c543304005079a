//! A holder that stops while its command runs: the whole host frozen past
//! failure detection (SIGSTOP of every process in its namespace, a frozen VM),
//! or its node killed (SIGKILL). The others must go on, and the stale command's
//! late write must be refused by the fenced store.

use std::fmt::Write as _;
use std::time::Duration;

use super::lab::{self, lab_or_skip, now_us};
use super::logs::{Hold, clock, cs_records, holds};
use super::scenario::{Report, entries_between, logs_of, secs, start_cluster};
use super::store::{OpKind, Store, WriteOutcome};
use super::workload::{ClientOpts, EXIT_LOST, Increment, Workload, outcome_counts};

const HOSTS: usize = 3;
/// The victim: the last host (the first two keep a quorum of the three).
const VICTIM: usize = 2;
/// Load before the fault.
const WARMUP: Duration = Duration::from_millis(1500);
/// Load after the fault is over.
const AFTER: Duration = Duration::from_secs(2);

/// How the holder stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGSTOP every process of the host (node, ra lock, the command) for this
    /// long, then SIGCONT.
    Freeze(Duration),
    /// SIGKILL the node (ra lock and the command live on).
    KillNode,
}

/// Run the scenario; see the module documentation.
pub fn run(test: &str, stop: Stop) {
    let Some(lab) = lab_or_skip(test, HOSTS) else {
        return;
    };
    let store = Store::start(&lab.path("store.sock")).expect("the fenced store starts");
    start_cluster(&lab, test, &[0, 1, 2], HOSTS);
    let victim_addr = lab.addr(VICTIM).to_string();
    // The victim's command works long enough to be caught inside, and finishes
    // its write whatever signals it gets (within --grace): the worst case of a
    // stale holder.
    let victim_opts = ClientOpts {
        pause_ms: match stop {
            Stop::Freeze(_) => 1_500,
            // Longer than failover: its write comes after the next holder's.
            Stop::KillNode => 5_000,
        },
        ignore_term: true,
        grace: Some(Duration::from_secs(10)),
        timeout: None,
    };

    let workload = Workload::new(&lab, &store.path);
    let mut fault_us = 0;
    let mut fault_end_us = 0;
    let mut victim: Option<Increment> = None;
    let mut frozen: Vec<i32> = Vec::new();
    std::thread::scope(|s| {
        let _abort = workload.abort_on_drop();
        workload.run(s, &[0, 1]);
        std::thread::sleep(WARMUP);
        let holder = s.spawn(|| workload.guarded_increment_with(VICTIM, &victim_opts));
        // The victim's command has read the counter: it is inside, working.
        let read = store.wait_for(Duration::from_secs(20), |op| {
            op.client.starts_with(&format!("h{VICTIM}.")) && matches!(op.kind, OpKind::Read { .. })
        });
        if read.is_none() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
        fault_us = now_us();
        match stop {
            Stop::Freeze(length) => {
                frozen = lab.host_pids(VICTIM);
                lab::signal_all(&frozen, libc::SIGSTOP);
                std::thread::sleep(length);
                // All at once, as a VM wakes: the command's write and ra lock's
                // verdict race, and the store must refuse the write either way.
                lab::signal_all(&frozen, libc::SIGCONT);
                fault_end_us = now_us();
            }
            Stop::KillNode => lab.node(VICTIM).kill(),
        }
        victim = holder.join().ok();
        // A killed node's fault lasts until the orphaned command is done.
        if stop == Stop::KillNode {
            fault_end_us = victim.as_ref().map_or(now_us(), |v| v.ended_us);
        }
        std::thread::sleep(AFTER);
        workload.stop_asking();
        workload.wait_idle(std::time::Instant::now() + Duration::from_secs(10));
        workload.abort();
    });

    let logs = logs_of(&lab);
    let history = store.history();
    let mut incs = workload.increments();
    let title = match stop {
        Stop::Freeze(d) => format!(
            "every process of {victim_addr}'s host (node, ra lock, its command) SIGSTOPped for {:.1} s while holding",
            d.as_secs_f64()
        ),
        Stop::KillNode => {
            format!("the node {victim_addr} SIGKILLed while its command holds the lock")
        }
    };
    let mut r = Report::new(&lab, test, &title);
    let Some(victim) = victim else {
        r.fail("the victim's command never read the counter (it never got the lock)");
        r.finish(&history);
        return;
    };
    incs.push(victim.clone());
    let holds_all = holds(&cs_records(&lab.cs_file()));
    let victim_fence = victim.served.map_or(0, |(f, _)| f);

    // The table: the victim's increment, then the others'.
    let victim_write = history
        .iter()
        .find(|op| op.client == victim.client && matches!(op.kind, OpKind::Write { .. }));
    let _ = writeln!(
        r,
        "victim {}: fence {victim_fence}, read at {}, fault {}..{}; ra lock exit {:?} after {}; its write: {}",
        victim.client,
        history
            .iter()
            .find(|op| op.client == victim.client)
            .map_or("never".into(), |op| clock(op.at_us)),
        clock(fault_us),
        clock(fault_end_us),
        victim.status,
        secs(victim.asked_us, victim.ended_us),
        victim_write.map_or("none".to_string(), |op| format!(
            "{:?} at {} ({} after the fault began)",
            op.kind,
            clock(op.at_us),
            secs(fault_us, op.at_us)
        )),
    );
    if let Some(line) = victim.stderr.lines().find(|l| l.contains("LOCK LOST")) {
        let _ = writeln!(r, "  ra lock said: {line}");
    }
    if matches!(stop, Stop::Freeze(_)) {
        let _ = writeln!(r, "  frozen processes: {} (pids {frozen:?})", frozen.len());
    }

    // Detection and failover, seen from the others.
    let detected = [0usize, 1]
        .iter()
        .filter_map(|&m| logs[m].failed_at(&victim_addr, fault_us))
        .min();
    let next: Option<&Hold> = holds_all
        .iter()
        .filter(|h| h.node != victim_addr && h.enter_us >= fault_us)
        .min_by_key(|h| h.enter_us);
    let _ = writeln!(
        r,
        "{:<17} {:>9} {:>9} {:>9}   outcomes",
        "node", "before", "during", "after"
    );
    for i in 0..HOSTS {
        let addr = lab.addr(i);
        let n = |from: u64, to: u64| entries_between(&holds_all, addr, from, to);
        let mine: Vec<&Increment> = incs.iter().filter(|x| x.host == i).collect();
        let _ = writeln!(
            r,
            "{addr:<17} {:>9} {:>9} {:>9}   {}",
            n(0, fault_us),
            n(fault_us, fault_end_us),
            n(fault_end_us, u64::MAX),
            outcome_counts(&mine)
        );
    }
    let _ = writeln!(
        r,
        "detection: {}; failover (the next entry by another node): {}",
        detected.map_or("never".into(), |d| format!(
            "{} after the fault",
            secs(fault_us, d)
        )),
        next.map_or("never".into(), |h| format!(
            "{} after the fault ({} fence {})",
            secs(fault_us, h.enter_us),
            h.node,
            h.fence
        ))
    );
    if let Stop::Freeze(_) = stop {
        for (at, d) in logs[VICTIM].pauses() {
            let _ = writeln!(
                r,
                "  {victim_addr} measured its own pause at {}: {:.2} s",
                clock(at),
                d.as_secs_f64()
            );
        }
    }
    for (at, why) in logs[VICTIM].losses() {
        let _ = writeln!(
            r,
            "  {victim_addr} logged lock lost at {}: {why}",
            clock(at)
        );
    }

    // Oracles.
    match next {
        None => r.fail("no other node entered after the fault"),
        Some(h) => {
            if let Stop::Freeze(_) = stop {
                r.expect(h.enter_us < fault_end_us, || {
                    format!(
                        "the others did not go on while {victim_addr} was frozen (next entry {} after the freeze)",
                        secs(fault_us, h.enter_us)
                    )
                });
            }
            r.expect(h.fence > victim_fence, || {
                format!(
                    "the next holder's fence {} is not above the victim's {victim_fence}",
                    h.fence
                )
            });
        }
    }
    if let (Stop::KillNode, Some(h)) = (stop, next) {
        r.expect(h.enter_us - fault_us <= FAILOVER.as_micros() as u64, || {
            format!(
                "failover took {}, more than {FAILOVER:?}",
                secs(fault_us, h.enter_us)
            )
        });
    }
    r.expect(victim.status == Some(EXIT_LOST), || {
        format!(
            "the victim's ra lock exited {:?}, not 75 (lock lost): {}",
            victim.status,
            victim.stderr.trim()
        )
    });
    match victim_write.map(|op| &op.kind) {
        Some(OpKind::Write {
            outcome: WriteOutcome::Refused { .. },
            ..
        }) => {}
        other => r.fail(format!(
            "the stale command's late write was not refused by the store: {other:?}"
        )),
    }
    r.conclude(&history, &incs, &logs);
}

/// The next holder gets in within this of a holder's node being killed: failure
/// detection (under 2 s with the shipped timings) and a Paxos round.
pub const FAILOVER: Duration = Duration::from_secs(3);
