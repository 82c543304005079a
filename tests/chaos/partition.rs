//! Partition scenarios: three real nodes under load, one active member cut off
//! (symmetrically, or only its inbound traffic), then healed; the oracles of the
//! README's "Partitions, exactly" paragraph checked from the outside.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::lab::{Lab, NodeOpts, lab_or_skip, now_us};
use super::logs::{self, ActiveSet, clock};
use super::scenario::{FORMED_WITHIN, common_set, logs_of, repeat_rounds, secs, wait_until};
use super::store::{self, OpKind, Store};
use super::workload::{Outcome, Workload};

/// How one host is cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Its hub port moves to the other bridge: nothing in, nothing out.
    Symmetric,
    /// Every packet arriving at it is dropped; what it sends still arrives.
    InboundDropped,
}

/// Critical section length for every node.
pub const HOLD_MS: u64 = 100;
/// Load before the cut.
const WARMUP: Duration = Duration::from_secs(2);
/// How long the cut lasts: several times failure detection (under 2 s).
const CUT: Duration = Duration::from_secs(9);
/// Clients keep asking this long after the heal.
const ASKING_AFTER_HEAL: Duration = Duration::from_secs(2);
/// After the heal, one active set and every request served within this.
const HEALED_WITHIN: Duration = Duration::from_secs(10);

const HOSTS: usize = 3;

/// What the run saw, in Unix microseconds.
#[derive(Default)]
struct Timeline {
    cut_us: u64,
    heal_us: u64,
    converged_us: Option<u64>,
    all_served_us: Option<u64>,
    unserved: Vec<(usize, u64)>,
}

/// The active set, if every node's last one is the same.
fn one_active_set(lab: &Lab) -> Option<ActiveSet> {
    common_set(lab, &(0..lab.hosts()).collect::<Vec<_>>())
}

/// Run the scenario: three nodes as on the README's card, load on all of them, cut
/// `victim` off with `fault` for [`CUT`], heal, and check. `RA_CHAOS_REPEAT=N` runs
/// it N times (a fresh lab each time, stopping at the first failure), to chase a
/// race.
pub fn run(test: &str, fault: Fault, victim: usize) {
    repeat_rounds(test, || run_once(test, fault, victim));
}

/// One run; false if the lab could not run here (skipped).
fn run_once(test: &str, fault: Fault, victim: usize) -> bool {
    let Some(lab) = lab_or_skip(test, HOSTS) else {
        return false;
    };
    let store = Store::start(&lab.path("store.sock")).expect("the fenced store starts");
    // The card: the first without --join, the others through any member.
    let opts = |join: Vec<usize>| NodeOpts {
        join,
        hold_ms: HOLD_MS,
        ..NodeOpts::default()
    };
    lab.start_node(0, &opts(vec![])).expect("start node 0");
    lab.start_node(1, &opts(vec![0])).expect("start node 1");
    lab.start_node(2, &opts(vec![1])).expect("start node 2");
    let formed = wait_until(FORMED_WITHIN, || {
        one_active_set(&lab).is_some_and(|s| s.members.len() == HOSTS)
    });
    if !formed {
        lab.keep_files();
        let sets: Vec<String> = logs_of(&lab)
            .iter()
            .map(|l| format!("{:?}", l.active_set()))
            .collect();
        panic!(
            "{test}: the three nodes did not form one active set within {FORMED_WITHIN:?}: {sets:?}"
        );
    }
    let victim_addr = lab.addr(victim).to_string();
    let majority: Vec<usize> = (0..HOSTS).filter(|&i| i != victim).collect();

    let workload = Workload::new(&lab, &store.path);
    let mut t = Timeline::default();
    std::thread::scope(|s| {
        let _abort = workload.abort_on_drop();
        workload.run(s, &[0, 1, 2]);
        std::thread::sleep(WARMUP);

        match fault {
            Fault::Symmetric => lab.cut(&[victim]).expect("cut the victim off"),
            Fault::InboundDropped => lab.drop_inbound(victim).expect("drop the victim's inbound"),
        }
        t.cut_us = now_us();
        std::thread::sleep(CUT);
        match fault {
            Fault::Symmetric => lab.heal(&[victim]).expect("heal the cut"),
            Fault::InboundDropped => lab.restore_inbound(victim).expect("restore inbound"),
        }
        t.heal_us = now_us();
        let healed = Instant::now();

        let mut converged = false;
        while healed.elapsed() < HEALED_WITHIN {
            if !converged && one_active_set(&lab).is_some_and(|s| s.members.len() == HOSTS) {
                converged = true;
                t.converged_us = Some(now_us());
            }
            if healed.elapsed() >= ASKING_AFTER_HEAL {
                workload.stop_asking();
                if converged {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        workload.stop_asking();
        t.unserved = workload.wait_idle(healed + HEALED_WITHIN);
        if t.unserved.is_empty() {
            t.all_served_us = Some(now_us());
        }
        workload.abort();
    });
    let end_us = now_us();
    // A set that all share at the end (it may have settled after the deadline).
    let final_set = one_active_set(&lab);

    // Everything below reads files; the nodes keep running until the lab is dropped.
    let logs = logs_of(&lab);
    let records = logs::cs_records(&lab.cs_file());
    let holds = logs::holds(&records);
    let overlaps = logs::overlaps(&holds);
    let (check_ok, check_out) = logs::ra_check(&lab.cs_file(), &logs);
    let history = store.history();
    let verdict = store::verdict(&history);
    let increments = workload.increments();

    let mut failures: Vec<String> = Vec::new();
    let mut report = String::new();
    let fault_name = match fault {
        Fault::Symmetric => "symmetric cut (hub port moved to br1)",
        Fault::InboundDropped => "inbound dropped (tc ingress on its eth0)",
    };
    let _ = writeln!(
        report,
        "\n== {test}: {victim_addr} cut off from the other two by {fault_name} for {}; hold {HOLD_MS} ms",
        secs(t.cut_us, t.heal_us)
    );

    // Entries per node and phase.
    let in_phase = |node: &str, from: u64, to: u64| {
        holds
            .iter()
            .filter(|h| h.node == node && h.enter_us >= from && h.enter_us < to)
            .count()
    };
    let _ = writeln!(
        report,
        "{:<17} {:<9} {:>7} {:>7} {:>7}   {:>5} {:>6} {:>12}",
        "node", "side", "before", "cut", "healed", "asked", "served", "longest wait"
    );
    for i in 0..HOSTS {
        let addr = lab.addr(i);
        let mine: Vec<_> = increments.iter().filter(|x| x.host == i).collect();
        let served = mine.iter().filter(|x| x.served.is_some()).count();
        let longest = mine
            .iter()
            .filter_map(|x| x.served.map(|(_, at)| at.saturating_sub(x.asked_us)))
            .chain(
                t.unserved
                    .iter()
                    .filter(|(h, _)| *h == i)
                    .map(|(_, a)| end_us - a),
            )
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            report,
            "{:<17} {:<9} {:>7} {:>7} {:>7}   {:>5} {:>6} {:>10.2} s",
            addr,
            if i == victim { "minority" } else { "majority" },
            in_phase(addr, 0, t.cut_us),
            in_phase(addr, t.cut_us, t.heal_us),
            in_phase(addr, t.heal_us, u64::MAX),
            mine.len() + t.unserved.iter().filter(|(h, _)| *h == i).count(),
            served,
            longest as f64 / 1e6
        );
    }

    // Failure detection, each side of the cut.
    let _ = writeln!(report, "detection (first FAILED logged after the cut):");
    let mut majority_detected: Option<u64> = None;
    for &m in &majority {
        let seen = logs[m].failed_at(&victim_addr, t.cut_us);
        if let Some(at) = seen {
            majority_detected = Some(majority_detected.map_or(at, |d: u64| d.min(at)));
        }
        let _ = writeln!(
            report,
            "  {} saw {victim_addr} fail: {}",
            lab.addr(m),
            seen.map_or("never".to_string(), |at| format!(
                "after {}",
                secs(t.cut_us, at)
            ))
        );
    }
    let victim_saw: Vec<String> = majority
        .iter()
        .map(|&m| {
            let addr = lab.addr(m);
            match logs[victim].failed_at(addr, t.cut_us) {
                Some(at) => format!("{addr} after {}", secs(t.cut_us, at)),
                None => format!("{addr} never"),
            }
        })
        .collect();
    let _ = writeln!(
        report,
        "  {victim_addr} saw fail: {}",
        victim_saw.join(", ")
    );

    // Oracle: after the cut, the minority enters only to finish an entry whose
    // permission it already had (every reply counted before the cut), and then with
    // a lower fence than the majority's entries after the cut. That covers entries
    // during the cut, and stale ones after the heal: an entry whose fence is below
    // one another node already entered with used a permission from an older epoch.
    let lowest_majority_fence = holds
        .iter()
        .filter(|h| h.node != victim_addr && h.enter_us >= t.cut_us && h.enter_us < t.heal_us)
        .map(|h| h.fence)
        .min();
    for h in holds
        .iter()
        .filter(|h| h.node == victim_addr && h.enter_us >= t.cut_us)
    {
        let during = h.enter_us < t.heal_us;
        let lower = lowest_majority_fence.is_none_or(|m| h.fence < m);
        let overtaken = holds
            .iter()
            .filter(|g| g.node != victim_addr && g.enter_us < h.enter_us && g.fence > h.fence)
            .map(|g| g.fence)
            .max();
        if !during && overtaken.is_none() {
            continue; // an ordinary entry after the heal
        }
        let had_permission = logs[victim].permission_complete_before(h.fence, t.cut_us);
        let when = if during {
            "during the cut"
        } else {
            "after the heal"
        };
        let _ = writeln!(
            report,
            "  minority entry {when}: fence {} at {} (cut +{}), every reply before the cut: {had_permission}, below the majority's fences: {lower}{}",
            h.fence,
            clock(h.enter_us),
            secs(t.cut_us, h.enter_us),
            overtaken.map_or(String::new(), |f| format!(
                ", stale (fence {f} was entered before)"
            ))
        );
        if !had_permission {
            failures.push(format!(
                "the minority {victim_addr} entered {when} (fence {}, at {}, {} after the cut{}) without having had every reply before the cut",
                h.fence,
                clock(h.enter_us),
                secs(t.cut_us, h.enter_us),
                overtaken.map_or(String::new(), |f| format!(
                    "; fence {f} had already been entered by another node: a permission from an older epoch"
                )),
            ));
        }
        if during && !lower {
            failures.push(format!(
                "the minority {victim_addr} entered during the cut with fence {}, not below the majority's {}",
                h.fence,
                lowest_majority_fence.unwrap_or(0)
            ));
        }
    }

    // Oracle: the majority keeps being served once it has declared the victim failed.
    match majority_detected {
        None => failures.push(format!(
            "the majority never declared {victim_addr} failed during the cut"
        )),
        Some(detected) => {
            for &m in &majority {
                let n = in_phase(lab.addr(m), detected, t.heal_us);
                if n == 0 {
                    failures.push(format!(
                        "the majority member {} was not served between the failure verdict ({}) and the heal",
                        lab.addr(m),
                        clock(detected)
                    ));
                }
            }
        }
    }

    // Oracles after the heal: one active set, every request served.
    let pending_at_heal: Vec<String> = increments
        .iter()
        .filter(|x| x.asked_us < t.heal_us)
        .filter_map(|x| x.served.map(|(_, at)| (x, at)))
        .filter(|(_, at)| *at >= t.heal_us)
        .map(|(x, at)| format!("{} +{}", lab.addr(x.host), secs(t.heal_us, at)))
        .collect();
    let _ = writeln!(
        report,
        "requests waiting at the heal, served after it: [{}]",
        pending_at_heal.join(", ")
    );
    let _ = writeln!(
        report,
        "after the heal: {}; {}",
        match (t.converged_us, &final_set) {
            (Some(at), Some(set)) => format!(
                "one active set of all three after {} (at the end: {set})",
                secs(t.heal_us, at)
            ),
            (None, Some(set)) =>
                format!("no common set of three within {HEALED_WITHIN:?} (at the end: {set})"),
            (_, None) => "the nodes disagree on the active set".to_string(),
        },
        match t.all_served_us {
            Some(at) => format!(
                "clients stopped asking {ASKING_AFTER_HEAL:?} after the heal; the last request served {} after it",
                secs(t.heal_us, at)
            ),
            None => format!("{} requests not served", t.unserved.len()),
        }
    );
    if t.converged_us.is_none() {
        let sets: Vec<String> = logs
            .iter()
            .enumerate()
            .map(|(i, l)| {
                format!(
                    "{}: {}",
                    lab.addr(i),
                    l.active_set().map_or("none".to_string(), |s| s.to_string())
                )
            })
            .collect();
        failures.push(format!(
            "no single active set of all three nodes within {HEALED_WITHIN:?} of the heal: {}",
            sets.join("; ")
        ));
    }
    for (host, asked) in &t.unserved {
        failures.push(format!(
            "a request of {} (asked at {}) was not served within {HEALED_WITHIN:?} of the heal",
            lab.addr(*host),
            clock(*asked)
        ));
    }
    for inc in &increments {
        match &inc.outcome {
            Outcome::Failed(why) => failures.push(format!(
                "an increment through {} failed: {why}",
                lab.addr(inc.host)
            )),
            Outcome::Unreachable | Outcome::TimedOut => failures.push(format!(
                "ra lock through {} ended {} (asked at {}): {}",
                lab.addr(inc.host),
                inc.outcome.label(),
                clock(inc.asked_us),
                inc.stderr.trim()
            )),
            _ => {}
        }
    }

    // Oracles on the critical section itself.
    let show = |us: Option<u64>| us.map_or("(no exit)".to_string(), clock);
    for (a, b) in &overlaps {
        let mut text = format!(
            "overlap: {} held fence {} {}..{} while {} held fence {} {}..{}",
            a.node,
            a.fence,
            clock(a.enter_us),
            show(a.exit_us),
            b.node,
            b.fence,
            clock(b.enter_us),
            show(b.exit_us)
        );
        // What each holder logged just before the later entry.
        let at = a.enter_us.max(b.enter_us);
        for node in [&a.node, &b.node] {
            if let Some(i) = lab.host_of(node) {
                let lines = logs[i].excerpt(at.saturating_sub(300_000), at + 2_000);
                let _ = write!(text, "\n      {node} logged:");
                for line in lines.iter().rev().take(12).rev() {
                    let _ = write!(text, "\n        {line}");
                }
            }
        }
        failures.push(text);
    }
    if !check_ok {
        failures.push(format!("ra check failed:\n{check_out}"));
    }

    // The store: lost increments count only when both writes happened inside their
    // holds (a write after its node's exit is the harness's lateness, not ra's).
    let inside_hold = |fence: u64, at: u64| {
        holds
            .iter()
            .any(|h| h.fence == fence && h.enter_us <= at && h.exit_us.is_none_or(|x| at <= x))
    };
    let write_inside = |op: &store::Op| match op.kind {
        OpKind::Write { fence, .. } => inside_hold(fence, op.at_us),
        OpKind::Read { .. } => true,
    };
    let late = history
        .iter()
        .filter(|op| matches!(op.kind, OpKind::Write { .. }) && !write_inside(op))
        .count();
    let real_lost: Vec<_> = verdict
        .lost
        .iter()
        .filter(|(a, b)| write_inside(a) && write_inside(b))
        .collect();
    for (a, b) in &real_lost {
        failures.push(format!("lost increment: {a:?} then {b:?}"));
    }
    let _ = writeln!(
        report,
        "overlaps {}; ra check {}; store: {} accepted, {} refused, value {}, lost increments {} ({} with a late write), writes after their hold {}",
        overlaps.len(),
        if check_ok { "OK" } else { "FAILED" },
        verdict.accepted,
        verdict.refused,
        verdict.final_value,
        real_lost.len(),
        verdict.lost.len() - real_lost.len(),
        late
    );
    for (i, log) in logs.iter().enumerate() {
        let during = log.notable(t.cut_us, t.heal_us);
        let after = log.notable(t.heal_us, u64::MAX);
        let _ = writeln!(
            report,
            "  {} events during the cut: [{}]; after the heal: [{}]",
            lab.addr(i),
            during.join(", "),
            after.join(", ")
        );
    }

    println!("{report}");
    let _ = std::fs::write(lab.path("report.txt"), &report);
    let _ = std::fs::write(
        lab.path("store-history.txt"),
        history
            .iter()
            .map(|op| format!("{} {} {:?}\n", clock(op.at_us), op.client, op.kind))
            .collect::<String>(),
    );
    if !failures.is_empty() {
        lab.keep_files();
        let mut text = format!("{test}: {} oracle(s) failed:\n", failures.len());
        for f in &failures {
            let _ = writeln!(text, "  - {f}");
        }
        let _ = writeln!(text, "logs: {}", lab.dir.display());
        let _ = std::fs::write(lab.path("report.txt"), format!("{report}\n{text}"));
        panic!("{text}");
    }
    true
}
