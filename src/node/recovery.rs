//! Durable state (`--data-dir`): what the node asks the shell to persist, and
//! how a node restarted from its data directory gets back into a cluster.
//!
//! Persist before send: at the end of every input, if the active set or the
//! highest epoch known changed what is kept, an `Output::Persist` is put
//! *before* every other output of that input, so the shell writes (and fsyncs)
//! it before any message, grant or datagram that may depend on it leaves. An
//! entry under an epoch already kept writes nothing: no lock's fence is kept
//! (`crate::durable` says why that is safe).
//!
//! The rule for a restarted node (README, "Durability"): it never founds a
//! cluster alone. It announces itself to the members of the last set it
//! installed and tells every peer it reaches that it is recovering. A member
//! of a running cluster answers with its set, and the node rejoins. If instead
//! every member of the highest set any recovering node installed has restarted
//! from its data directory, that set's first member starts the cluster again,
//! under the same cluster identity, at an epoch above every epoch they report.
//!
//! Why that is above every fence handed out before: a fence of epoch `e` was
//! granted by every member of set `e`, each of which persisted `e` before
//! replying, and the first node ever to install set `e + 1` was a member of set
//! `e` (the proposer that decided it), which persisted it before telling
//! anyone. So if every member of the highest reported set `m` reports, and
//! none reports more than `m`, no set above `m` was ever installed, and every
//! fence is of an epoch at most `m`. It assumes data directories survive (a
//! member whose directory was lost must not come back at the same address with
//! an empty one while others wait for it).
//!
//! Just over 500 lines because its tests of the persist-before-send order sit
//! beside the rule they check.

use super::*;
use crate::durable::DurableState;
use crate::protocol::lock::MAX_FENCE_EPOCH;

/// What a node keeps on disk, if anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// No data directory: nothing is persisted, and fences start over if the
    /// whole cluster restarts.
    #[default]
    Off,
    /// A data directory with nothing in it yet.
    Fresh,
    /// A data directory holding this state, read at start.
    Restored(DurableState),
}

/// A recovering peer's report: its process, the last set it installed, the
/// highest epoch it knew.
#[derive(Clone, Debug)]
struct Report {
    process: ProcessId,
    last: ActiveSet,
    epoch: u64,
}

pub(super) struct Durable {
    /// The state as last handed to the shell.
    state: Option<DurableState>,
    /// The state read at start, while this node is in no cluster yet.
    restored: Option<DurableState>,
    /// Recovering peers, by address (a later process replaces an earlier one).
    reports: BTreeMap<SocketAddr, Report>,
    next_report_at: Duration,
    last_waiting_note: Duration,
}

impl Durable {
    pub(super) fn new(durability: Durability, now: Duration) -> Option<Self> {
        let restored = match durability {
            Durability::Off => return None,
            Durability::Fresh => None,
            Durability::Restored(state) => Some(state),
        };
        Some(Self {
            state: restored.clone(),
            restored,
            reports: BTreeMap::new(),
            next_report_at: now,
            last_waiting_note: now,
        })
    }

    pub(super) fn restored(&self) -> Option<&DurableState> {
        self.restored.as_ref()
    }
}

impl Node {
    /// The restored state, while this node is still recovering from it.
    pub(super) fn recovering(&self) -> Option<&DurableState> {
        if self.active_set.is_some() {
            return None;
        }
        self.durable.as_ref()?.restored()
    }

    /// Addresses of the last set a recovering node knew, to announce to.
    pub(super) fn recovery_targets(&self) -> Vec<SocketAddr> {
        self.recovering()
            .map(|r| {
                r.set
                    .members
                    .iter()
                    .map(|m| m.addr)
                    .filter(|a| *a != self.me.addr)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A recovering node takes on a set of its own cluster only if it is no
    /// older than what it knew (one set per epoch: an equal one is the set it
    /// installed, decided again without it), and never a set of another cluster.
    pub(super) fn refuses_while_recovering(&mut self, set: &ActiveSet) -> bool {
        let Some(restored) = self.recovering() else {
            return false;
        };
        if !restored.set.same_cluster(set) {
            let (kept, other) = (restored.set.cluster, set.cluster);
            if self.now >= self.last_alone_warning + Duration::from_secs(5) {
                self.last_alone_warning = self.now;
                self.emit(Event::ForeignClusterIgnored { kept, other });
            }
            return true;
        }
        set.epoch < restored.epoch
    }

    /// Tell `to` this node is recovering (on the tick, and when a peer comes up).
    pub(super) fn report_recovering(&mut self, to: ProcessId) {
        let Some(restored) = self.recovering() else {
            return;
        };
        let body = Body::Recovering {
            last: restored.set.clone(),
            epoch: restored.epoch,
        };
        self.send(to, body);
    }

    /// On the tick: report to every live peer, and see whether the cluster
    /// may start again.
    pub(super) fn recovery_tick(&mut self) {
        if self.recovering().is_none() || self.life != Life::Running {
            return;
        }
        let due = self
            .durable
            .as_ref()
            .is_some_and(|d| self.now >= d.next_report_at);
        if due {
            if let Some(d) = self.durable.as_mut() {
                d.next_report_at = self.now + self.settings.retry_join_every;
            }
            for peer in self.live_processes() {
                self.report_recovering(peer);
            }
        }
        self.maybe_refound();
    }

    pub(super) fn on_recovering(&mut self, from: ProcessId, last: ActiveSet, epoch: u64) {
        if let Some(set) = self.active_set.clone() {
            // In a cluster: tell it where the cluster is now. A recovering node
            // of another cluster decides for itself what to do with that.
            self.send(from, Body::Decided { set });
            return;
        }
        let Some(own) = self.recovering().map(|r| r.epoch) else {
            return;
        };
        // Bounded like epochs on the wire: a report far ahead of ours would
        // use up the epochs a fence can carry.
        if epoch > own.saturating_add(MAX_EPOCH_LEAD) {
            self.drop_message(from, DropReason::EpochOutOfRange { seen: epoch, own });
            return;
        }
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let newer = d
            .reports
            .get(&from.addr)
            .is_none_or(|r| r.process.incarnation <= from.incarnation);
        if newer {
            d.reports.insert(
                from.addr,
                Report {
                    process: from,
                    last,
                    epoch,
                },
            );
        }
        self.maybe_refound();
    }

    /// The highest set among the recovering nodes this one knows of (itself
    /// included), and the addresses of its members not heard from yet.
    fn highest_reported(&self) -> Option<(ActiveSet, u64, Vec<SocketAddr>)> {
        let restored = self.recovering()?;
        let d = self.durable.as_ref()?;
        let mut highest = restored.set.clone();
        let mut epoch = restored.epoch;
        for report in d.reports.values() {
            if report.last.same_cluster(&restored.set) && report.last.epoch > highest.epoch {
                highest = report.last.clone();
            }
            epoch = epoch.max(report.epoch);
        }
        // A member counts once a later process at its address reports (or is us).
        let missing = highest
            .members
            .iter()
            .filter(|m| {
                let here = m.addr == self.me.addr && self.me.incarnation > m.incarnation;
                let reported = d.reports.get(&m.addr).is_some_and(|r| {
                    r.process.incarnation > m.incarnation && r.last.same_cluster(&highest)
                });
                !here && !reported
            })
            .map(|m| m.addr)
            .collect();
        Some((highest, epoch, missing))
    }

    fn maybe_refound(&mut self) {
        let Some((highest, epoch, missing)) = self.highest_reported() else {
            return;
        };
        if !missing.is_empty() {
            let waited = self.now.saturating_sub(self.started_at);
            let note_due = self
                .durable
                .as_ref()
                .is_some_and(|d| self.now >= d.last_waiting_note + Duration::from_secs(5));
            if note_due && waited >= Duration::from_secs(5) {
                if let Some(d) = self.durable.as_mut() {
                    d.last_waiting_note = self.now;
                }
                self.emit(Event::RecoveryWaiting {
                    epoch: highest.epoch,
                    missing,
                    waited,
                });
            }
            return;
        }
        // One node starts the cluster again: the set's first member. The
        // others learn the set from it.
        if highest.primary().map(|p| p.addr) != Some(self.me.addr) {
            return;
        }
        let Some(next) = epoch.checked_add(1).filter(|e| *e <= MAX_FENCE_EPOCH) else {
            self.emit(Event::EpochsExhausted { epoch });
            return;
        };
        let reporters: Vec<ProcessId> = self
            .durable
            .as_ref()
            .map(|d| d.reports.values().map(|r| r.process).collect())
            .unwrap_or_default();
        let set = ActiveSet {
            cluster: highest.cluster,
            epoch: next,
            max_active: highest.max_active,
            members: vec![self.me],
        };
        self.found_at = None;
        self.emit(Event::Refounded {
            cluster: highest.cluster,
            epoch: next,
            highest_known: epoch,
            from: highest.members.clone(),
        });
        self.install(set.clone(), SetSource::Refounded);
        if let Some(d) = self.durable.as_mut() {
            d.reports.clear();
        }
        for process in reporters {
            self.send(process, Body::Decided { set: set.clone() });
        }
    }

    /// Persist before send: put what changed in the kept state before every
    /// output this input produced (from `first` on).
    pub(super) fn persist_changes(&mut self, first: usize) {
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let mut changed = false;
        if let Some(set) = &self.active_set {
            match &mut d.state {
                // Another cluster's epochs are its own: start the state over.
                Some(state) if state.set.same_cluster(set) => changed |= state.note_set(set),
                _ => {
                    d.state = Some(DurableState::new(self.me.addr, set.clone()));
                    changed = true;
                }
            }
            if d.restored.is_some() {
                d.restored = None;
                d.reports.clear();
            }
        }
        if let Some(state) = &mut d.state {
            for output in &self.out[first.min(self.out.len())..] {
                if let Output::Granted { fence, .. } = output {
                    changed |= state.note_fence(*fence);
                }
            }
        }
        if changed && let Some(state) = &d.state {
            let at = first.min(self.out.len());
            self.out.insert(at, Output::Persist(state.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(port: u16, incarnation: u64) -> ProcessId {
        ProcessId::new(
            format!("127.0.0.1:{port}").parse().expect("addr"),
            incarnation,
        )
    }

    fn node(me: ProcessId, durability: Durability) -> Node {
        Node::with_durability(
            me,
            Vec::new(),
            NodeSettings::default(),
            7,
            Duration::ZERO,
            durability,
        )
    }

    /// Tick until `until`; the outputs of each input, one list per input.
    fn tick_until(node: &mut Node, until: Duration) -> Vec<Vec<Output>> {
        let mut batches = Vec::new();
        let mut now = Duration::ZERO;
        while now < until {
            now += node.settings.tick;
            node.handle(now, Input::Timer(TimerId::Tick));
            batches.push(node.drain_outputs().collect());
        }
        batches
    }

    /// The write comes first in the outputs of the input that caused it:
    /// nothing the shell sends or grants can overtake it. An entry under the
    /// epoch already written writes nothing.
    #[test]
    fn persist_comes_before_everything_it_allows() {
        let me = pid(7000, 100);
        let mut n = node(me, Durability::Fresh);
        let batches = tick_until(&mut n, Duration::from_secs(5));
        let founding = batches
            .iter()
            .find(|b| b.iter().any(|o| matches!(o, Output::Persist(_))))
            .expect("founding is persisted");
        assert!(
            matches!(founding[0], Output::Persist(ref s) if s.epoch == 1 && s.set.cluster == me)
        );
        let lock = LockName::new("jobs").expect("name");
        for (ticket, secs) in [(1, 6), (2, 7)] {
            let now = Duration::from_secs(secs);
            n.handle(
                now,
                Input::Acquire {
                    lock: lock.clone(),
                    ticket,
                    try_only: false,
                },
            );
            let out: Vec<Output> = n.drain_outputs().collect();
            let fence = out
                .iter()
                .find_map(|o| match o {
                    Output::Granted { fence, .. } => Some(*fence),
                    _ => None,
                })
                .expect("granted");
            assert_eq!((fence.epoch, fence.seq), (1, ticket));
            assert!(
                !out.iter().any(|o| matches!(o, Output::Persist(_))),
                "an entry of the epoch kept wrote: {out:?}"
            );
            n.handle(
                now,
                Input::Release {
                    lock: lock.clone(),
                    ticket,
                },
            );
            assert!(!n.drain_outputs().any(|o| matches!(o, Output::Persist(_))));
        }
        // Without a data directory, nothing is ever persisted.
        let mut plain = node(pid(7001, 100), Durability::Off);
        let batches = tick_until(&mut plain, Duration::from_secs(5));
        assert!(plain.active_set().is_some());
        assert!(
            batches
                .iter()
                .flatten()
                .all(|o| !matches!(o, Output::Persist(_)))
        );
    }

    fn restored(epoch: u64, members: Vec<ProcessId>) -> DurableState {
        let set = ActiveSet {
            cluster: members[0],
            epoch,
            max_active: 3,
            members,
        };
        DurableState::new(set.members[0].addr, set)
    }

    fn recovering_from(from: ProcessId, last: ActiveSet, epoch: u64) -> Input {
        Input::Message(Envelope {
            from,
            to: pid(7000, 200),
            clock: 1,
            body: Body::Recovering { last, epoch },
        })
    }

    /// A restarted founder never founds alone; once every member of its last
    /// set has restarted with its data, it starts the cluster again above
    /// every epoch any of them knew.
    #[test]
    fn a_restarted_founder_waits_for_its_old_members_then_refounds_above_them() {
        let (a, b) = (pid(7000, 100), pid(7001, 101));
        let state = restored(5, vec![a, b]);
        let me = pid(7000, 200);
        let mut n = node(me, Durability::Restored(state.clone()));
        let batches = tick_until(&mut n, Duration::from_secs(30));
        assert!(n.active_set().is_none(), "founded alone");
        let told_b = batches
            .iter()
            .flatten()
            .any(|o| matches!(o, Output::Datagram { to, .. } if *to == b.addr));
        assert!(told_b, "it announces itself to its old member");
        // An old member's earlier process cannot count; a report of a lower
        // set counts, and its epoch counts too.
        let b_new = pid(7001, 300);
        let mut lower = state.set.clone();
        lower.epoch = 4;
        n.handle(Duration::from_secs(31), recovering_from(b_new, lower, 7));
        let out: Vec<Output> = n.drain_outputs().collect();
        let set = n.active_set().expect("refounded").clone();
        assert_eq!(set.cluster, a, "the cluster keeps its identity");
        assert_eq!(set.epoch, 8, "above every epoch reported");
        assert_eq!(set.members, vec![me]);
        assert!(matches!(out[0], Output::Persist(ref s) if s.epoch == 8));
        assert!(out.iter().any(|o| matches!(o, Output::Message(e) if e.to == b_new && matches!(e.body, Body::Decided { .. }))));
    }

    #[test]
    fn a_restarted_member_that_is_not_first_waits_to_be_told() {
        let (a, b) = (pid(7000, 100), pid(7001, 101));
        let mut state = restored(5, vec![b, a]);
        state.node = a.addr;
        let mut n = node(pid(7000, 200), Durability::Restored(state.clone()));
        n.handle(
            Duration::from_secs(1),
            recovering_from(pid(7001, 300), state.set.clone(), 5),
        );
        assert!(
            n.active_set().is_none(),
            "only the set's first member starts it again"
        );
        // A set of its cluster older than what it knew is not taken on.
        let mut older = state.set.clone();
        older.epoch = 4;
        n.handle(
            Duration::from_secs(2),
            Input::Message(Envelope {
                from: pid(7001, 300),
                to: pid(7000, 200),
                clock: 2,
                body: Body::Decided { set: older },
            }),
        );
        assert!(n.active_set().is_none());
        let mut next = state.set.clone();
        next.epoch = 6;
        next.members = vec![pid(7001, 300)];
        n.handle(
            Duration::from_secs(3),
            Input::Message(Envelope {
                from: pid(7001, 300),
                to: pid(7000, 200),
                clock: 3,
                body: Body::Decided { set: next.clone() },
            }),
        );
        assert_eq!(n.active_set(), Some(&next));
    }
}
