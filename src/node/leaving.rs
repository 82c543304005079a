//! Leaving the cluster on purpose: release everyone, hand the seat over, go.

use super::*;

impl Node {
    pub(super) fn on_leave(&mut self) {
        if self.life != Life::Running {
            return;
        }
        let held = self.held_locks();
        if held.is_empty() {
            self.begin_leave();
            return;
        }
        // Clients hold locks: tell them, and leave once they give them back (they
        // stop their work first), or at the deadline.
        self.life = Life::LeaveAfterRelease {
            deadline: self.now + self.settings.leave_timeout,
        };
        for lock in held {
            self.lose_holder(&lock, LossReason::NodeLeaving);
        }
    }

    /// Stop asking, release everyone we held back, tell the others, and hand the
    /// seat over before going: peers then log a leave, and the set keeps its quorum.
    pub(super) fn begin_leave(&mut self) {
        if matches!(self.life, Life::Leaving { .. } | Life::Left) {
            return;
        }
        // Holders that did not give their lock back in time are out now.
        for lock in self.held_locks() {
            self.exit_cs(&lock);
        }
        let dropped_tickets = self.drop_all_tickets() + self.drop_forwarded();
        self.life = Life::Leaving {
            deadline: self.now + self.settings.leave_timeout,
        };
        self.emit(Event::Leaving { dropped_tickets });
        // Errors below mean foca has no one to tell: the leave is then silent.
        if let Ok(item) = Gossip::Leaving(self.me).encode() {
            let _ = self.swim.add_broadcast(&item);
        }
        let _ = self.swim.gossip(&mut self.swim_io);
        let seated = self
            .active_set
            .as_ref()
            .is_some_and(|s| s.contains(&self.me));
        let me = self.me;
        if let Some(set) = self.active_set.clone() {
            for member in set.members.into_iter().filter(|m| *m != me) {
                self.send(member, Body::Leaving);
            }
        }
        if !seated {
            self.finish_leave();
        }
    }

    pub(super) fn finish_leave(&mut self) {
        if self.life == Life::Left {
            return;
        }
        // An error means foca was not connected: there is no one to tell.
        let _ = self.swim.leave_cluster(&mut self.swim_io);
        self.life = Life::Left;
        self.proposal = None;
        self.drain_swim();
        self.emit(Event::Left);
        self.out.push(Output::Left);
    }
}
