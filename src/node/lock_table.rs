//! The node's locks. A lock with something going on (a ticket in line, a
//! holder, a request out or replies owed) keeps its whole Ricart–Agrawala
//! state; an idle one keeps only what must outlive the activity: its last
//! fence (the next entry under the same epoch takes one more) and the peer it
//! last granted (status shows it). A node that has seen 10,000 names keeps
//! 10,000 of those small records, not 10,000 state machines.

use std::collections::BTreeMap;
use std::time::Duration;

use super::locking::{LockSlot, LockStatus};
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::{Fence, LockName};
use crate::protocol::ricart_agrawala::State;

/// What an idle lock remembers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IdleLock {
    pub(super) fence: Fence,
    pub(super) last_granted: Option<(ProcessId, Duration)>,
}

/// An idle lock's Ricart–Agrawala state, for readers that ask for it.
static IDLE: State = State::Idle;

pub(super) struct LockTable {
    me: ProcessId,
    busy: BTreeMap<LockName, LockSlot>,
    idle: BTreeMap<LockName, IdleLock>,
}

impl LockTable {
    pub(super) fn new(me: ProcessId) -> Self {
        Self {
            me,
            busy: BTreeMap::new(),
            idle: BTreeMap::new(),
        }
    }

    /// A busy lock's state; an idle lock has nothing going on to read.
    pub(super) fn get(&self, name: &LockName) -> Option<&LockSlot> {
        self.busy.get(name)
    }

    /// A known lock's state to change: an idle one comes back with its fence.
    pub(super) fn get_mut(&mut self, name: &LockName) -> Option<&mut LockSlot> {
        self.wake(name);
        self.busy.get_mut(name)
    }

    /// A lock's state to change, made if the lock is new.
    pub(super) fn slot(&mut self, name: &LockName) -> &mut LockSlot {
        self.wake(name);
        let me = self.me;
        self.busy
            .entry(name.clone())
            .or_insert_with(|| LockSlot::new(me))
    }

    fn wake(&mut self, name: &LockName) {
        if let Some(idle) = self.idle.remove(name) {
            self.busy
                .insert(name.clone(), LockSlot::woken(self.me, idle));
        }
    }

    /// The Ricart–Agrawala state of a known lock.
    pub(super) fn state(&self, name: &LockName) -> Option<&State> {
        match self.busy.get(name) {
            Some(slot) => Some(slot.ra.state()),
            None => self.idle.contains_key(name).then_some(&IDLE),
        }
    }

    /// The names of the busy locks: the only ones with anything to withdraw,
    /// answer, ask again or drop.
    pub(super) fn busy_names(&self) -> Vec<LockName> {
        self.busy.keys().cloned().collect()
    }

    pub(super) fn busy(&self) -> impl Iterator<Item = (&LockName, &LockSlot)> {
        self.busy.iter()
    }

    /// Every known lock as `status` shows it, in name order.
    pub(super) fn statuses(&self) -> Vec<LockStatus> {
        let mut all: Vec<LockStatus> = self
            .busy
            .iter()
            .map(|(name, slot)| slot.status(name))
            .chain(
                self.idle
                    .iter()
                    .map(|(name, idle)| LockSlot::woken(self.me, *idle).status(name)),
            )
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Put the locks that went quiet to rest (on the housekeeping tick, so a
    /// lock in steady use is not moved back and forth on every entry).
    pub(super) fn settle(&mut self) {
        let quiet: Vec<(LockName, IdleLock)> = self
            .busy
            .iter()
            .filter_map(|(name, slot)| slot.at_rest().map(|idle| (name.clone(), idle)))
            .collect();
        for (name, idle) in quiet {
            self.busy.remove(&name);
            self.idle.insert(name, idle);
        }
    }

    /// Forget the locks with nothing going on whose fence belongs to an epoch
    /// before `epoch`: a new epoch starts above it.
    pub(super) fn forget_older_than(&mut self, epoch: u64) {
        self.busy
            .retain(|_, slot| slot.at_rest().is_none_or(|idle| idle.fence.epoch >= epoch));
        self.idle.retain(|_, idle| idle.fence.epoch >= epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(port: u16) -> ProcessId {
        ProcessId::new(
            format!("127.0.0.1:{port}").parse().expect("test address"),
            1,
        )
    }

    fn name(s: &str) -> LockName {
        LockName::new(s).expect("valid")
    }

    /// A lock at rest keeps its fence and last grant; waking it gives them
    /// back, and a lock with a ticket in line never goes to rest.
    #[test]
    fn idle_locks_keep_their_fence_and_last_grant() {
        let mut table = LockTable::new(pid(7000));
        let fence = Fence { epoch: 3, seq: 41 };
        let granted = Some((pid(7001), Duration::from_secs(2)));
        let idle = IdleLock {
            fence,
            last_granted: granted,
        };
        table
            .busy
            .insert(name("a"), LockSlot::woken(pid(7000), idle));
        table.slot(&name("b"));
        table.settle();
        assert_eq!(table.idle.get(&name("a")), Some(&idle));
        assert!(table.busy.is_empty(), "b has nothing going on either");
        assert_eq!(table.state(&name("a")), Some(&State::Idle));
        assert!(table.get(&name("a")).is_none());
        let statuses = table.statuses();
        assert_eq!(statuses.len(), 2);
        assert_eq!(statuses[0].last_fence, Some(fence));
        assert_eq!(statuses[0].last_granted, granted);
        let woken = table.get_mut(&name("a")).expect("known");
        assert_eq!(woken.ra.fence_seen(), fence);
        assert_eq!(woken.at_rest(), Some(idle));
        assert!(!table.idle.contains_key(&name("a")));
        // An older epoch's fences are forgotten, idle or not.
        table.forget_older_than(4);
        assert_eq!(table.statuses().len(), 0);
        assert_eq!(table.state(&name("a")), None);
    }
}
