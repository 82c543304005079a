//! Ricart–Agrawala as the node runs it: asking, answering, entering, leaving
//! the critical section, always under the current epoch.

use super::*;

impl Node {
    pub(super) fn on_request_cs(&mut self) {
        if self.life != Life::Running {
            self.emit(Event::Dropped {
                what: "request",
                from: "stdin".into(),
                reason: "this node is leaving".into(),
            });
            return;
        }
        self.queued.push_back(self.now);
        self.emit(Event::RequestQueued {
            queued: self.outstanding_requests(),
        });
        self.reported_position = None;
    }

    /// Send the next queued request once the previous one is done and we have a seat.
    pub(super) fn maybe_issue(&mut self) {
        if self.life != Life::Running
            || self.queued.is_empty()
            || !matches!(self.ra.state(), State::Idle)
            || self.pending_merge.is_some()
        {
            return;
        }
        let Some(view) = self.view.clone().filter(|v| v.contains(&self.me)) else {
            self.report_waiting_for_seat();
            return;
        };
        let Some(asked_at) = self.queued.pop_front() else {
            return;
        };
        self.current_asked_at = asked_at;
        // Ticking first makes the stamp later than every request we granted so far.
        let timestamp = self.clock.tick();
        let pending = self.ra.issue(timestamp, &view);
        self.emit(Event::RequestIssued {
            request_id: pending.id,
            timestamp,
            epoch: pending.epoch,
            awaiting: pending.awaiting.iter().copied().collect(),
        });
        self.send_requests(&pending.awaiting, pending.id, timestamp, &view);
        self.try_enter();
    }

    pub(super) fn report_waiting_for_seat(&mut self) {
        let line = self.spectators();
        let position = match self.view {
            // Position 0: no cluster yet, so no line to stand in.
            None => 0,
            Some(_) => line.iter().position(|p| *p == self.me).map_or(0, |i| i + 1),
        };
        if self.reported_position != Some(position) {
            self.reported_position = Some(position);
            self.emit(Event::WaitingForSeat {
                position,
                spectators: line.len(),
            });
        }
    }

    pub(super) fn send_requests(
        &mut self,
        to: &BTreeSet<ProcessId>,
        request_id: u64,
        timestamp: u64,
        view: &ActiveSet,
    ) {
        for member in to {
            self.emit(Event::RequestSent {
                to: *member,
                request_id,
                timestamp,
                epoch: view.epoch,
            });
            self.send(
                *member,
                Body::Request {
                    request_id,
                    timestamp,
                    view: view.clone(),
                },
            );
        }
    }

    pub(super) fn on_request(
        &mut self,
        from: ProcessId,
        request_id: u64,
        timestamp: u64,
        view: ActiveSet,
    ) {
        let mutations = self.settings.mutations;
        let epoch = if mutations.skip_view_check {
            // Broken on purpose (tests only): decide under whatever set the
            // requester names.
            view.epoch
        } else {
            self.adopt(view.clone(), ViewSource::Message);
            if self
                .pending_merge
                .as_ref()
                .is_some_and(|v| v.same_cluster(&view))
            {
                // We hold the critical section of the cluster we are leaving for
                // this one: answer once we have joined it, as a holder would.
                self.emit(Event::RequestReceived {
                    from,
                    request_id,
                    timestamp,
                    epoch: view.epoch,
                    own_timestamp: None,
                    verdict: Decision::Defer(DeferReason::InCriticalSection),
                });
                self.requests_after_merge
                    .push((from, request_id, timestamp, view));
                return;
            }
            let Some(mine) = self.view.clone() else {
                return;
            };
            if !mine.same_cluster(&view) || mine.epoch > view.epoch {
                self.send_newer_view(from, request_id);
                return;
            }
            if !mine.contains(&from) || !mine.contains(&self.me) {
                self.emit(Event::Dropped {
                    what: "request",
                    from: from.to_string(),
                    reason: format!("not both members of epoch {}", mine.epoch),
                });
                return;
            }
            mine.epoch
        };
        let own_timestamp = self.ra.pending().map(|p| p.timestamp);
        let decision = self.ra.on_request(
            from,
            request_id,
            timestamp,
            epoch,
            self.clock.now(),
            mutations,
        );
        self.emit(Event::RequestReceived {
            from,
            request_id,
            timestamp,
            epoch,
            own_timestamp,
            verdict: decision,
        });
        if decision == Decision::Grant {
            let deferred = DeferredRequest {
                request_id,
                timestamp,
                epoch,
            };
            self.send_reply(from, deferred, false);
        }
    }

    pub(super) fn send_reply(&mut self, to: ProcessId, request: DeferredRequest, deferred: bool) {
        self.emit(Event::ReplySent {
            to,
            request_id: request.request_id,
            epoch: request.epoch,
            deferred,
        });
        let reply = Body::Reply {
            request_id: request.request_id,
            epoch: request.epoch,
            fence_seq: self.ra.fence_seq_for(request.epoch),
            deferred,
        };
        self.last_answer.insert(to, reply.clone());
        self.send(to, reply);
    }

    pub(super) fn send_newer_view(&mut self, to: ProcessId, request_id: u64) {
        let Some(view) = self.view.clone() else {
            return;
        };
        self.emit(Event::NewerViewSent {
            to,
            request_id,
            epoch: view.epoch,
        });
        let answer = Body::NewerView { request_id, view };
        self.last_answer.insert(to, answer.clone());
        self.send(to, answer);
    }

    pub(super) fn on_reply(
        &mut self,
        from: ProcessId,
        request_id: u64,
        epoch: u64,
        fence_seq: u64,
    ) {
        match self.ra.on_reply(from, request_id, epoch, fence_seq) {
            ReplyOutcome::Counted { remaining } => {
                self.emit(Event::ReplyReceived {
                    from,
                    request_id,
                    epoch,
                    remaining,
                });
                self.try_enter();
            }
            ReplyOutcome::Stale(reason) => self.emit(Event::ReplyIgnored {
                from,
                request_id,
                epoch,
                reason,
            }),
        }
    }

    pub(super) fn try_enter(&mut self) {
        let Some(fence) = self.ra.enter() else {
            return;
        };
        let State::Holding { id, timestamp, .. } = *self.ra.state() else {
            return;
        };
        let lamport = self.clock.tick();
        self.emit(Event::Enter {
            request_id: id,
            timestamp,
            fence,
            lamport,
            waited: self.now.saturating_sub(self.current_asked_at),
        });
        self.hold_until = self.now + self.settings.hold;
        self.out.push(Output::Timer {
            at: self.hold_until,
            timer: TimerId::Exit { request_id: id },
        });
    }

    pub(super) fn exit_cs(&mut self, request_id: u64) {
        if !matches!(self.ra.state(), State::Holding { id, .. } if *id == request_id) {
            return;
        }
        let Some((fence, due)) = self.ra.exit() else {
            return;
        };
        // Leaving much later than planned means this process was stopped (a pause,
        // a frozen VM) inside the critical section: long enough, and the cluster
        // will have moved on without it.
        let late_by = self.now.saturating_sub(self.hold_until);
        if late_by > self.settings.swim.suspect_to_down_after {
            self.emit(Event::ExitedLate { fence, late_by });
        }
        let lamport = self.clock.tick();
        self.emit(Event::Exit {
            request_id,
            fence,
            lamport,
            released: due.iter().map(|(p, _)| *p).collect(),
        });
        for (requester, deferred) in due {
            self.answer_deferred(requester, deferred);
        }
        if let Some(view) = self.pending_merge.take() {
            self.merge_into(view);
        }
        if self.life == Life::LeaveAfterExit {
            self.begin_leave();
        }
    }

    pub(super) fn answer_deferred(&mut self, requester: ProcessId, deferred: DeferredRequest) {
        let still_valid = self.view.as_ref().is_some_and(|v| {
            v.epoch == deferred.epoch && v.contains(&requester) && v.contains(&self.me)
        });
        if still_valid || self.settings.mutations.skip_view_check {
            self.send_reply(requester, deferred, true);
        } else {
            self.send_newer_view(requester, deferred.request_id);
        }
    }
}
