//! What every fault scenario shares: starting a cluster in a lab, waiting for it,
//! and a report that collects the table, the failed oracles, `ra check --logs`,
//! the store's accounting, and keeps the lab's files when anything failed.

// A toolkit: each scenario uses its own parts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::lab::{Lab, NodeOpts};
use super::logs::{self, ActiveSet, NodeLog, clock};
use super::store::{self, Op, OpKind, Store, WriteOutcome};
use super::workload::{Increment, Outcome, Workload};

/// Run `once` as many times as `RA_CHAOS_REPEAT` says (1 by default), each in
/// a fresh lab, to chase a race; stop when a round returns false (skipped).
pub fn repeat_rounds(test: &str, mut once: impl FnMut() -> bool) {
    let rounds: usize = std::env::var("RA_CHAOS_REPEAT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    for round in 1..=rounds {
        if rounds > 1 {
            println!("{test}: round {round} of {rounds}");
        }
        if !once() {
            return;
        }
    }
}

/// What a scenario reads back once its load has stopped: every node's log,
/// the store's history, the clients' increments and the holds in the shared
/// file, in that order.
pub fn gather(
    lab: &Lab,
    store: &Store,
    workload: &Workload,
) -> (Vec<NodeLog>, Vec<Op>, Vec<Increment>, Vec<logs::Hold>) {
    (
        logs_of(lab),
        store.history(),
        workload.increments(),
        logs::holds(&logs::cs_records(&lab.cs_file())),
    )
}

/// Nodes form a cluster (founding takes 4 s) within this.
pub const FORMED_WITHIN: Duration = Duration::from_secs(30);

pub fn logs_of(lab: &Lab) -> Vec<NodeLog> {
    (0..lab.hosts())
        .map(|i| NodeLog::read(&lab.host(i).log))
        .collect()
}

/// The active set, if the last one of every node in `hosts` is the same.
pub fn common_set(lab: &Lab, hosts: &[usize]) -> Option<ActiveSet> {
    let sets: Vec<Option<ActiveSet>> = hosts
        .iter()
        .map(|&i| NodeLog::read(&lab.host(i).log).active_set())
        .collect();
    let first = sets.first()?.clone()?;
    sets.iter()
        .all(|s| s.as_ref() == Some(&first))
        .then_some(first)
}

pub fn wait_until(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many entries of `node` began at or after `from_us` and before `to_us`.
pub fn entries_between(holds: &[logs::Hold], node: &str, from_us: u64, to_us: u64) -> usize {
    holds
        .iter()
        .filter(|h| h.node == node && h.enter_us >= from_us && h.enter_us < to_us)
        .count()
}

/// "1.23 s" from one Unix time in microseconds to another.
pub fn secs(from_us: u64, to_us: u64) -> String {
    format!("{:.2} s", to_us.saturating_sub(from_us) as f64 / 1e6)
}

/// Start nodes as on the README's card: host 0 founds, every other host joins
/// through the one before it (`joins[i]` overrides), and wait until the hosts in
/// `hosts` share one active set of `active` members. Panics (keeping the files)
/// if they do not within [`FORMED_WITHIN`].
pub fn start_cluster(lab: &Lab, test: &str, hosts: &[usize], active: usize) {
    for (n, &i) in hosts.iter().enumerate() {
        let join = if n == 0 { vec![] } else { vec![hosts[n - 1]] };
        let opts = NodeOpts {
            join,
            ..NodeOpts::default()
        };
        lab.start_node(i, &opts)
            .unwrap_or_else(|e| panic!("{test}: start node {i}: {e}"));
    }
    let formed = wait_until(FORMED_WITHIN, || {
        common_set(lab, hosts).is_some_and(|s| s.members.len() == active)
    });
    if !formed {
        lab.keep_files();
        let sets: Vec<String> = logs_of(lab)
            .iter()
            .map(|l| format!("{:?}", l.active_set()))
            .collect();
        panic!(
            "{test}: the nodes did not form one active set of {active} within {FORMED_WITHIN:?}: {sets:?}; logs in {}",
            lab.dir.display()
        );
    }
}

/// A scenario's report: printed, written to `report.txt`; any failed oracle
/// keeps the lab's files and fails the test.
pub struct Report<'a> {
    pub lab: &'a Lab,
    test: String,
    pub text: String,
    failures: Vec<String>,
}

impl std::fmt::Write for Report<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.text.push_str(s);
        Ok(())
    }
}

impl<'a> Report<'a> {
    pub fn new(lab: &'a Lab, test: &str, title: &str) -> Self {
        Report {
            lab,
            test: test.to_string(),
            text: format!("\n== {test}: {title}\n"),
            failures: Vec::new(),
        }
    }

    pub fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }

    /// An oracle: `ok`, or a failure that says `what`.
    pub fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(what());
        }
    }

    /// `ra check FILE --logs LOG...` on the lab's cs-file: one line in the
    /// table, a failure unless it passed.
    pub fn ra_check(&mut self, logs: &[NodeLog]) {
        // Hosts that never ran a node (an attacker's) have no log.
        let logs: Vec<NodeLog> = logs
            .iter()
            .filter(|l| l.path.exists())
            .map(|l| NodeLog {
                path: l.path.clone(),
                events: Vec::new(),
            })
            .collect();
        let (ok, out) = logs::ra_check(&self.lab.cs_file(), &logs);
        let summary: Vec<&str> = out
            .lines()
            .filter(|l| {
                l.starts_with("OK")
                    || l.starts_with("FAILED")
                    || l.contains("entries")
                    || l.contains("evicted")
                    || l.contains("most holders")
            })
            .collect();
        let _ = writeln!(
            self,
            "ra check --logs: {} [{}]",
            if ok { "passed" } else { "FAILED" },
            summary.join("; ")
        );
        let _ = std::fs::write(self.lab.path("ra-check.txt"), &out);
        if !ok {
            self.fail(format!("ra check --logs failed:\n{out}"));
        }
    }

    /// No node logged a panic, and every log reads as ra's typed records.
    pub fn no_panics(&mut self, logs: &[NodeLog]) {
        for (i, log) in logs.iter().enumerate() {
            for line in log.panics() {
                self.fail(format!("{} panicked: {line}", self.lab.addr(i)));
            }
        }
    }

    /// The store's accounting (the Jepsen counter with fences):
    /// - its counter equals its accepted writes (no increment lost);
    /// - no two accepted writes share a fence;
    /// - every write is by a known client, with the fence its ra lock announced;
    /// - every refused write is accounted for: its ra lock said the lock was lost
    ///   (exit 75).
    pub fn store_accounting(&mut self, history: &[Op], incs: &[Increment]) -> store::Verdict {
        let verdict = store::verdict(history);
        let by_client: BTreeMap<&str, &Increment> =
            incs.iter().map(|i| (i.client.as_str(), i)).collect();
        let mut fences: BTreeMap<u64, &str> = BTreeMap::new();
        let mut refused_lines = Vec::new();
        for op in history {
            let OpKind::Write { fence, outcome, .. } = op.kind else {
                continue;
            };
            let inc = by_client.get(op.client.as_str());
            if let Some(inc) = inc
                && inc.served.map(|(f, _)| f) != Some(fence)
            {
                self.fail(format!(
                    "client {} wrote with fence {fence}, but its ra lock announced {:?}",
                    op.client,
                    inc.served.map(|(f, _)| f)
                ));
            }
            if inc.is_none() {
                self.fail(format!(
                    "a write by {} (fence {fence}) that no ra lock of the workload ran",
                    op.client
                ));
            }
            match outcome {
                WriteOutcome::Accepted => {
                    if let Some(other) = fences.insert(fence, &op.client) {
                        self.fail(format!(
                            "two accepted writes share fence {fence}: {other} and {}",
                            op.client
                        ));
                    }
                }
                WriteOutcome::Refused { highest } => {
                    let status = inc.and_then(|i| i.status);
                    let why = inc
                        .and_then(|i| i.stderr.lines().find(|l| l.contains("LOCK LOST")))
                        .unwrap_or("(ra lock said nothing of a loss)");
                    refused_lines.push(format!(
                        "    refused: {} fence {fence} < highest {highest} at {}; ra lock exit {status:?}: {why}",
                        op.client,
                        clock(op.at_us)
                    ));
                    if status != Some(super::workload::EXIT_LOST) {
                        self.fail(format!(
                            "the store refused {} (fence {fence}, highest {highest}) but its ra lock did not report the lock lost (exit {status:?}): a holder whose fence was already superseded, unannounced",
                            op.client
                        ));
                    }
                }
            }
        }
        for inc in incs {
            let wrote = history.iter().find_map(|op| match op.kind {
                OpKind::Write { outcome, .. } if op.client == inc.client => Some(outcome),
                _ => None,
            });
            let consistent = match inc.outcome {
                Outcome::Accepted => matches!(wrote, Some(WriteOutcome::Accepted)),
                Outcome::Refused => matches!(wrote, Some(WriteOutcome::Refused { .. })),
                _ => true,
            };
            if !consistent {
                self.fail(format!(
                    "{} ended {} but the store recorded {wrote:?}",
                    inc.client,
                    inc.outcome.label()
                ));
            }
        }
        let _ = writeln!(
            self,
            "store: {} accepted, {} refused, counter {}, lost increments {}",
            verdict.accepted,
            verdict.refused,
            verdict.final_value,
            verdict.lost.len()
        );
        for line in &refused_lines {
            let _ = writeln!(self, "{line}");
        }
        if verdict.final_value != verdict.accepted as u64 {
            self.fail(format!(
                "the store's counter is {} but it accepted {} writes",
                verdict.final_value, verdict.accepted
            ));
        }
        for (a, b) in &verdict.lost {
            self.fail(format!("lost increment: {a:?} then {b:?}"));
        }
        verdict
    }

    /// Print the report, write it and the store's history to the lab's
    /// directory, and fail the test (keeping the directory) if any oracle failed.
    /// Every client that failed, the store's accounting, then
    /// [`Report::finish_checked`].
    pub fn conclude(mut self, history: &[Op], incs: &[Increment], logs: &[NodeLog]) {
        for inc in incs {
            if let Outcome::Failed(why) = &inc.outcome {
                self.fail(format!("{} failed: {why}", inc.client));
            }
        }
        self.store_accounting(history, incs);
        self.finish_checked(logs, history);
    }

    /// No panic in any log, `ra check --logs` clean, then [`Report::finish`].
    pub fn finish_checked(mut self, logs: &[NodeLog], history: &[Op]) {
        self.no_panics(logs);
        self.ra_check(logs);
        self.finish(history);
    }

    pub fn finish(mut self, history: &[Op]) {
        println!("{}", self.text);
        let _ = std::fs::write(
            self.lab.path("store-history.txt"),
            history
                .iter()
                .map(|op| format!("{} {} {:?}\n", clock(op.at_us), op.client, op.kind))
                .collect::<String>(),
        );
        if self.failures.is_empty() {
            let _ = std::fs::write(self.lab.path("report.txt"), &self.text);
            return;
        }
        self.lab.keep_files();
        let mut text = format!("{}: {} oracle(s) failed:\n", self.test, self.failures.len());
        for f in &self.failures {
            let _ = writeln!(text, "  - {f}");
        }
        let _ = writeln!(text, "logs: {}", self.lab.dir.display());
        self.text.push('\n');
        self.text.push_str(&text);
        let _ = std::fs::write(self.lab.path("report.txt"), &self.text);
        panic!("{text}");
    }
}
