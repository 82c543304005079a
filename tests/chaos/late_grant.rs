//! Issue 14, point 1, on real processes: a grant from an old epoch must never let
//! an evicted node in.
//!
//! 1. An active member's inbound traffic is dropped (a one-way cut: it still
//!    sends).
//! 2. It asks for the lock right after: its request reaches the others, which
//!    grant; the grants are lost on the way back and sit in TCP's retransmission
//!    queue.
//! 3. The others evict it (a new epoch) and go on.
//! 4. The heal: **staged** (TCP comes back some seconds before UDP: the drop-all
//!    ingress filter is replaced by one that drops only UDP, then removed), or
//!    **natural** (everything at once).
//!
//! Oracle: the cut-off node never enters under a superseded epoch after the
//! decision that evicted it (its log's entries against the others' decisions);
//! `ra check --logs` passes, every request is served after the heal.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ra::protocol::lock::Fence;

use super::lab::{lab_or_skip, now_us};
use super::logs::clock;
use super::scenario::{
    Report, common_set, entries_between, gather, repeat_rounds, secs, start_cluster,
};
use super::store::Store;
use super::workload::{Increment, Outcome, Workload, outcome_counts};

const HOSTS: usize = 3;
/// The cut-off member (issue 14's n2).
const VICTIM: usize = 1;
const MAJORITY: [usize; 2] = [0, 2];
const WARMUP: Duration = Duration::from_secs(1);
/// The victim asks this long after its inbound traffic is cut.
const ASK_AFTER_CUT: Duration = Duration::from_millis(150);
/// How long the cut lasts before any heal: failure detection, the eviction, and
/// the majority going on.
const CUT: Duration = Duration::from_secs(6);
/// Staged heal: TCP flows this long before UDP does.
const TCP_FIRST: Duration = Duration::from_secs(4);
/// Clients keep asking this long after the heal.
const ASKING_AFTER_HEAL: Duration = Duration::from_secs(3);
/// Every request served within this of the heal.
const SERVED_WITHIN: Duration = Duration::from_secs(12);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heal {
    /// TCP first, then UDP.
    Staged,
    /// Everything at once.
    Natural,
}

fn epoch_of(fence: u64) -> u64 {
    Fence::from_token(fence).epoch
}

pub fn run(test: &str, heal: Heal) {
    repeat_rounds(test, || run_once(test, heal));
}

fn run_once(test: &str, heal: Heal) -> bool {
    let Some(lab) = lab_or_skip(test, HOSTS) else {
        return false;
    };
    let store = Store::start(&lab.path("store.sock")).expect("the fenced store starts");
    start_cluster(&lab, test, &[0, 1, 2], HOSTS);
    let victim_addr = lab.addr(VICTIM).to_string();

    let workload = Workload::new(&lab, &store.path);
    let (mut cut_us, mut tcp_us, mut heal_us) = (0, 0, 0);
    let mut unserved = Vec::new();
    std::thread::scope(|s| {
        let _abort = workload.abort_on_drop();
        workload.run(s, &MAJORITY);
        std::thread::sleep(WARMUP);
        lab.drop_inbound(VICTIM).expect("drop the victim's inbound");
        cut_us = now_us();
        std::thread::sleep(ASK_AFTER_CUT);
        // Its first request goes out across the one-way cut; it keeps asking.
        workload.run(s, &[VICTIM]);
        std::thread::sleep(CUT - ASK_AFTER_CUT);
        if heal == Heal::Staged {
            lab.drop_inbound_udp_only(VICTIM)
                .expect("let TCP through, not UDP");
            tcp_us = now_us();
            std::thread::sleep(TCP_FIRST);
        }
        lab.restore_inbound(VICTIM).expect("restore inbound");
        heal_us = now_us();
        let healed = Instant::now();
        std::thread::sleep(ASKING_AFTER_HEAL);
        workload.stop_asking();
        unserved = workload.wait_idle(healed + SERVED_WITHIN);
        workload.abort();
    });
    if tcp_us == 0 {
        tcp_us = heal_us;
    }

    let (logs, history, incs, holds_all) = gather(&lab, &store, &workload);
    let title = format!(
        "{victim_addr}'s inbound dropped, it asks {:.2} s later; {}",
        ASK_AFTER_CUT.as_secs_f64(),
        match heal {
            Heal::Staged => format!(
                "after {:.0} s only UDP is dropped (TCP through) for {:.0} s, then all heals",
                CUT.as_secs_f64(),
                TCP_FIRST.as_secs_f64()
            ),
            Heal::Natural => format!("everything heals after {:.0} s", CUT.as_secs_f64()),
        }
    );
    let mut r = Report::new(&lab, test, &title);

    // The decision that evicted the victim: the first set decided by a majority
    // node after the cut that removed it.
    let eviction = MAJORITY
        .iter()
        .flat_map(|&m| logs[m].installs())
        .filter(|i| {
            i.at_us >= cut_us && i.removed.iter().any(|p| p.addr.to_string() == victim_addr)
        })
        .min_by_key(|i| i.at_us);

    let _ = writeln!(
        r,
        "{:<17} {:<9} {:>7} {:>7} {:>8} {:>7}   outcomes",
        "node", "side", "before", "cut", "tcp-only", "healed"
    );
    for i in 0..HOSTS {
        let addr = lab.addr(i);
        let n = |from: u64, to: u64| entries_between(&holds_all, addr, from, to);
        let mine: Vec<&Increment> = incs.iter().filter(|x| x.host == i).collect();
        let _ = writeln!(
            r,
            "{addr:<17} {:<9} {:>7} {:>7} {:>8} {:>7}   {}",
            if i == VICTIM { "cut off" } else { "majority" },
            n(0, cut_us),
            n(cut_us, tcp_us),
            if heal == Heal::Staged {
                n(tcp_us, heal_us).to_string()
            } else {
                "-".into()
            },
            n(heal_us, u64::MAX),
            outcome_counts(&mine)
        );
    }
    let Some(eviction) = eviction else {
        r.fail(format!(
            "the majority never decided a set without {victim_addr} during the cut"
        ));
        r.finish(&history);
        return true;
    };
    let _ = writeln!(
        r,
        "eviction: epoch {} decided at {} ({} after the cut): [{}]",
        eviction.epoch,
        clock(eviction.at_us),
        secs(cut_us, eviction.at_us),
        eviction
            .members
            .iter()
            .map(|p| p.addr.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    // What reached the victim across the staged heal: delayed grants, resent
    // answers, and what it made of them.
    let replies = logs[VICTIM].replies(cut_us, heal_us + 2_000_000);
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, kind, epoch) in &replies {
        let old = epoch.is_some_and(|e| e < eviction.epoch);
        *kinds
            .entry(format!("{kind}{}", if old { " (old epoch)" } else { "" }))
            .or_default() += 1;
    }
    let _ = writeln!(
        r,
        "replies reaching {victim_addr} from the cut to 2 s after the heal: {}",
        if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );

    // The oracle of issue 14: no entry by the victim under an epoch older than
    // the one that evicted it, after that decision.
    let victim_entries = logs[VICTIM].entries();
    let mut after_heal: Vec<u64> = Vec::new();
    for (at, _, fence) in victim_entries.iter().filter(|(at, _, _)| *at >= cut_us) {
        let epoch = epoch_of(*fence);
        let stale = *at >= eviction.at_us && epoch < eviction.epoch;
        if *at >= heal_us && !stale {
            after_heal.push(epoch);
            continue;
        }
        let _ = writeln!(
            r,
            "  {victim_addr} entered at {} (cut +{}) with fence {fence} (epoch {epoch}){}",
            clock(*at),
            secs(cut_us, *at),
            if stale {
                ": UNDER A SUPERSEDED EPOCH"
            } else {
                ""
            }
        );
        if stale {
            r.fail(format!(
                "{victim_addr} entered at {} under epoch {epoch} (fence {fence}), after epoch {} evicted it at {}",
                clock(*at),
                eviction.epoch,
                clock(eviction.at_us)
            ));
        }
    }
    let _ = writeln!(
        r,
        "{victim_addr}'s entries after the eviction: {} before the heal, {} after it (epochs {}..{}); under a superseded epoch: 0 unless listed above",
        victim_entries
            .iter()
            .filter(|(at, _, _)| *at >= eviction.at_us && *at < heal_us)
            .count(),
        after_heal.len(),
        after_heal.iter().min().copied().unwrap_or(0),
        after_heal.iter().max().copied().unwrap_or(0),
    );

    // After the heal: one active set of three, every request served.
    let final_set = common_set(&lab, &[0, 1, 2]);
    let _ = writeln!(
        r,
        "after the heal: {}; requests unserved {}s after it: {}",
        final_set
            .as_ref()
            .map_or("the nodes disagree on the active set".into(), |s| s
                .to_string()),
        SERVED_WITHIN.as_secs(),
        unserved.len()
    );
    r.expect(final_set.is_some_and(|s| s.members.len() == HOSTS), || {
        "no single active set of all three nodes after the heal".into()
    });
    for (host, asked) in &unserved {
        r.fail(format!(
            "a request of {} (asked at {}) was not served within {SERVED_WITHIN:?} of the heal",
            lab.addr(*host),
            clock(*asked)
        ));
    }
    for inc in &incs {
        if matches!(
            inc.outcome,
            Outcome::Failed(_) | Outcome::Unreachable | Outcome::TimedOut
        ) {
            r.fail(format!(
                "{} ended {}: {}",
                inc.client,
                inc.outcome.label(),
                inc.stderr.trim()
            ));
        }
    }
    r.store_accounting(&history, &incs);
    r.ra_check(&logs);
    r.no_panics(&logs);
    for (i, log) in logs.iter().enumerate() {
        let _ = writeln!(
            r,
            "  {} events during the cut: [{}]; after: [{}]",
            lab.addr(i),
            log.notable(cut_us, heal_us).join(", "),
            log.notable(heal_us, u64::MAX).join(", ")
        );
    }
    r.finish(&history);
    true
}
