//! The checks a simulated run must pass, fed with every event every node emits.
//!
//! - Safety: never two processes in the critical section. An overlap is excused
//!   only when one of the two is a *stale holder*: a process that was alive when
//!   a quorum decided an active set without it (it was paused or cut off, and
//!   declared failed), and that entered under an epoch older than that set. That
//!   is the limit of any lock built on a failure detector. Then the other
//!   holder's fence must be the larger, so a resource that checks fences refuses
//!   the stale one. Such overlaps are counted, not hidden.
//! - Fencing: each entry's fence is larger than the previous entry's, unless the
//!   later entry is by a stale holder.
//! - The view check: a reply is only ever sent under the replier's own epoch.
//! - Bounded waiting: while the active set stays the same, a request is overtaken
//!   at most twice by each other member (once by a request stamped before it, once
//!   by one stamped after it but granted before it reached the granter).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::time::Duration;

use crate::event::{Event, ViewSource};
use crate::protocol::ids::ProcessId;
use crate::protocol::mutex::Fence;

#[derive(Clone, Debug)]
struct Holder {
    request_id: u64,
    cluster: Option<ProcessId>,
    fence: Fence,
    since: Duration,
}

#[derive(Clone, Debug)]
struct TrackedRequest {
    issued_at: Duration,
    /// The cluster and epoch it was issued under.
    cluster: Option<ProcessId>,
    epoch: u64,
    members: usize,
    /// The active set changed while it waited (the bound is for a stable set).
    unstable: bool,
    overtaken: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub entries: u64,
    pub requests_issued: u64,
    pub fenced_overlaps: u64,
    /// Overlaps between two different clusters: a node started without seeds
    /// founded a second cluster while cut off from the first.
    pub split_overlaps: u64,
    pub stale_fences: u64,
    pub minority_entries: u64,
    pub max_overtaken: usize,
    pub mutex_messages: u64,
    pub false_suspicions: u64,
    pub view_changes: u64,
}

#[derive(Default)]
pub struct Oracle {
    holders: BTreeMap<ProcessId, Holder>,
    /// The last entry in each cluster (fences are per cluster).
    last_entry: BTreeMap<Option<ProcessId>, (ProcessId, Fence)>,
    requests: BTreeMap<(ProcessId, u64), TrackedRequest>,
    /// For each process removed from the active set while it ran: the latest
    /// epoch decided without it so far.
    evicted: BTreeMap<ProcessId, u64>,
    /// The epoch each process has installed, from its own events.
    epoch_of: BTreeMap<ProcessId, u64>,
    /// Requests granted by a reply outside the replier's epoch: their holders
    /// are never excused as stale.
    bad_grants: BTreeSet<(ProcessId, u64)>,
    pub stats: Stats,
    pub violations: Vec<String>,
}

impl Oracle {
    /// `running(p)`: whether process `p` is alive right now (the simulator knows).
    /// `cluster`: the cluster of the emitting process's active set, if any.
    pub fn on_event(
        &mut self,
        now: Duration,
        at: ProcessId,
        cluster: Option<ProcessId>,
        event: &Event,
        running: impl Fn(&ProcessId) -> bool,
    ) {
        match event {
            Event::MemberFailed { member } if running(member) => self.stats.false_suspicions += 1,
            Event::ViewInstalled {
                epoch,
                removed,
                source,
                ..
            } => {
                self.stats.view_changes += 1;
                self.epoch_of.insert(at, *epoch);
                if *source == ViewSource::Decided {
                    for member in removed.iter().filter(|m| running(m)) {
                        let latest = self.evicted.entry(*member).or_insert(*epoch);
                        *latest = (*latest).max(*epoch);
                    }
                }
            }
            Event::ReplySent {
                to,
                epoch,
                request_id,
                ..
            } => {
                self.stats.mutex_messages += 1;
                // The view check as an invariant: permission is only ever given
                // under the epoch the replier itself is in.
                let own = self.epoch_of.get(&at).copied();
                if own != Some(*epoch) {
                    self.bad_grants.insert((*to, *request_id));
                    self.violations.push(format!(
                        "{at} replied to {to} under epoch {epoch} while itself in epoch {own:?}"
                    ));
                }
            }
            Event::RequestIssued {
                request_id,
                awaiting,
                epoch,
                ..
            } => {
                self.stats.requests_issued += 1;
                self.requests.insert(
                    (at, *request_id),
                    TrackedRequest {
                        issued_at: now,
                        cluster,
                        epoch: *epoch,
                        members: awaiting.len() + 1,
                        unstable: false,
                        overtaken: 0,
                    },
                );
            }
            Event::Reissued { request_id, .. } => {
                if let Some(r) = self.requests.get_mut(&(at, *request_id)) {
                    r.unstable = true;
                }
            }
            Event::Withdrawn { request_id, .. } => {
                self.requests.remove(&(at, *request_id));
            }
            Event::RequestSent { .. } => self.stats.mutex_messages += 1,
            Event::Enter {
                request_id, fence, ..
            } => self.on_enter(now, at, cluster, *request_id, *fence),
            Event::Exit { .. } => {
                self.holders.remove(&at);
            }
            _ => {}
        }
    }

    /// The process stopped: its critical section ends with it.
    pub fn on_stop(&mut self, process: ProcessId) {
        self.holders.remove(&process);
        self.requests.retain(|(p, _), _| *p != process);
    }

    /// Entered under an epoch older than a set that had evicted it while it ran,
    /// with permission given properly under that older epoch.
    fn stale(&self, process: ProcessId, request_id: u64, fence: Fence) -> bool {
        self.evicted
            .get(&process)
            .is_some_and(|epoch| fence.epoch < *epoch)
            && !self.bad_grants.contains(&(process, request_id))
    }

    pub fn note_minority_entry(&mut self) {
        self.stats.minority_entries += 1;
    }

    fn on_enter(
        &mut self,
        now: Duration,
        at: ProcessId,
        cluster: Option<ProcessId>,
        request_id: u64,
        fence: Fence,
    ) {
        self.stats.entries += 1;
        let me_suspect = self.stale(at, request_id, fence);
        for (other, holder) in self.holders.clone() {
            if other == at {
                continue;
            }
            if holder.cluster != cluster {
                self.stats.split_overlaps += 1;
                continue;
            }
            let other_suspect = self.stale(other, holder.request_id, holder.fence);
            let mut line = format!(
                "{at} entered (fence {fence}) while {other} held the critical section since {:?} (fence {})",
                holder.since, holder.fence
            );
            if !me_suspect && !other_suspect {
                let _ = write!(
                    line,
                    "; neither is a stale holder evicted from the active set"
                );
                self.violations.push(line);
                continue;
            }
            self.stats.fenced_overlaps += 1;
            let fenced = match (me_suspect, other_suspect) {
                (true, false) => fence < holder.fence,
                (false, true) => fence > holder.fence,
                _ => true,
            };
            if !fenced {
                let _ = write!(line, "; the fence does not single out the stale holder");
                self.violations.push(line);
            }
        }
        if let Some((previous, previous_fence)) = self.last_entry.get(&cluster).copied()
            && fence <= previous_fence
        {
            if me_suspect {
                self.stats.stale_fences += 1;
            } else {
                self.violations.push(format!(
                    "{at} entered with fence {fence}, not above {previous}'s {previous_fence}"
                ));
            }
        }
        self.last_entry.insert(cluster, (at, fence));
        self.holders.insert(
            at,
            Holder {
                request_id,
                cluster,
                fence,
                since: now,
            },
        );
        for ((requester, _), request) in self.requests.iter_mut() {
            // Entries in another cluster (a split) compete for another lock.
            if *requester == at || request.cluster != cluster {
                continue;
            }
            if request.epoch == fence.epoch {
                request.overtaken += 1;
            } else {
                request.unstable = true;
            }
        }
        if let Some(request) = self.requests.remove(&(at, request_id))
            && !request.unstable
        {
            self.stats.max_overtaken = self.stats.max_overtaken.max(request.overtaken);
            let bound = 2 * (request.members - 1);
            if request.overtaken > bound {
                self.violations.push(format!(
                    "{at}'s request #{request_id} (issued at {:?}) was overtaken {} times; the bound is {bound}",
                    request.issued_at, request.overtaken
                ));
            }
        }
    }
}
