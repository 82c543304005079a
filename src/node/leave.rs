//! Leaving the cluster on purpose: release everyone, hand the seat over, go.

use super::*;

impl Node {
    pub(super) fn on_leave(&mut self) {
        match self.life {
            Life::Running if self.ra.is_holding() => self.life = Life::LeaveAfterExit,
            Life::Running => self.begin_leave(),
            _ => {}
        }
    }

    /// Stop asking, release everyone we held back, tell the others, and hand the
    /// seat over before going: peers then log a leave, and the set keeps its quorum.
    pub(super) fn begin_leave(&mut self) {
        let dropped_requests = self.queued.len();
        self.queued.clear();
        if let Some(pending) = self.ra.withdraw() {
            self.emit(Event::Withdrawn {
                request_id: pending.id,
                reason: "this node is leaving",
            });
        }
        for (requester, deferred) in self.ra.take_deferred() {
            self.send_reply(requester, deferred, true);
        }
        self.life = Life::Leaving {
            deadline: self.now + self.settings.leave_timeout,
        };
        self.emit(Event::Leaving { dropped_requests });
        let _ = self.swim.add_broadcast(&Gossip::Leaving(self.me).encode());
        let _ = self.swim.gossip(&mut self.swim_io);
        let seated = self.view.as_ref().is_some_and(|v| v.contains(&self.me));
        let me = self.me;
        if let Some(view) = self.view.clone() {
            for member in view.members.into_iter().filter(|m| *m != me) {
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
        let _ = self.swim.leave_cluster(&mut self.swim_io);
        self.life = Life::Left;
        self.proposal = None;
        self.drain_swim();
        self.emit(Event::Left);
        self.out.push(Output::Left);
    }
}
