//! The node's active set: adopting decided sets, merging clusters, and the
//! Paxos rounds that change the set.

use super::*;

impl Node {
    /// Take on an active set someone else decided, if it is newer than ours (or
    /// belongs to an older cluster that ours merges into).
    pub(super) fn adopt(&mut self, view: ActiveSet, source: ViewSource) {
        match &self.view {
            None => self.install(view, source),
            Some(mine) if mine.same_cluster(&view) => {
                if view.epoch > mine.epoch {
                    self.install(view, source);
                }
            }
            Some(mine) => {
                if view.outranks_cluster_of(mine) {
                    if self.ra.is_holding() {
                        self.pending_merge = Some(view);
                    } else {
                        self.merge_into(view);
                    }
                }
            }
        }
    }

    /// Two clusters met: drop ours (we are not in the critical section) and join
    /// the older one as a newcomer.
    pub(super) fn merge_into(&mut self, view: ActiveSet) {
        let Some(mine) = self.view.take() else {
            self.install(view, ViewSource::Message);
            return;
        };
        self.emit(Event::ClusterMerged {
            abandoned: mine.cluster,
            joined: view.cluster,
        });
        if let Some(pending) = self.ra.withdraw() {
            self.queued.push_front(self.current_asked_at);
            self.emit(Event::Withdrawn {
                request_id: pending.id,
                reason: "its cluster merged into an older one",
            });
        }
        // No longer requesting under the old cluster: the algorithm says grant.
        for (requester, deferred) in self.ra.take_deferred() {
            self.send_reply(requester, deferred, true);
        }
        self.install(view, ViewSource::Message);
        for (from, request_id, timestamp, view) in std::mem::take(&mut self.requests_after_merge) {
            self.on_request(from, request_id, timestamp, view);
        }
    }

    pub(super) fn install(&mut self, view: ActiveSet, source: ViewSource) {
        let previous = self.view.replace(view.clone());
        let before: Vec<ProcessId> = previous.map(|v| v.members).unwrap_or_default();
        let added: Vec<ProcessId> = view
            .members
            .iter()
            .filter(|m| !before.contains(m))
            .copied()
            .collect();
        let removed: Vec<ProcessId> = before
            .iter()
            .filter(|m| !view.contains(m))
            .copied()
            .collect();
        let seated = view.contains(&self.me);
        self.acceptor.reset(view.epoch + 1);
        if self
            .proposal
            .as_ref()
            .is_some_and(|p| p.epoch() <= view.epoch)
        {
            self.proposal = None;
        }
        self.change_wanted_since = None;
        self.reported_position = None;
        self.emit(Event::ViewInstalled {
            epoch: view.epoch,
            members: view.members.clone(),
            added,
            removed,
            source,
            seated,
        });
        if view.max_active != self.settings.max_active && source != ViewSource::Founded {
            // The cluster's value wins; say so once per view rather than silently.
            self.emit(Event::Dropped {
                what: "max-active setting",
                from: "this node's configuration".into(),
                reason: format!(
                    "it asks for {} but the cluster was founded with {}, which every member uses",
                    self.settings.max_active, view.max_active
                ),
            });
            self.settings.max_active = view.max_active;
        }
        // Spread it to spectators, who are not sent Decided directly.
        let _ = self
            .swim
            .add_broadcast(&Gossip::View(view.clone()).encode());
        for (requester, deferred) in self.ra.take_deferred_before(view.epoch) {
            self.send_newer_view(requester, deferred.request_id);
        }
        if self.ra.pending().is_some() {
            if seated {
                if let Some(pending) = self.ra.reissue(&view) {
                    self.emit(Event::Reissued {
                        request_id: pending.id,
                        epoch: pending.epoch,
                        awaiting: pending.awaiting.iter().copied().collect(),
                    });
                    self.send_requests(&pending.awaiting, pending.id, pending.timestamp, &view);
                    self.try_enter();
                }
            } else if let Some(pending) = self.ra.withdraw() {
                self.queued.push_front(self.current_asked_at);
                self.emit(Event::Withdrawn {
                    request_id: pending.id,
                    reason: "this node lost its seat",
                });
            }
        }
        if matches!(self.life, Life::Leaving { .. }) && !seated {
            self.finish_leave();
        }
    }

    /// Propose a change of the active set when it no longer matches who is usable.
    pub(super) fn maybe_reconfigure(&mut self) {
        // Runs after every input: borrow, and clone only to act.
        let Some(view) = self.view.as_ref() else {
            return;
        };
        if self.settings.mutations.local_views {
            // Broken on purpose (tests only): every node installs the set its own
            // member list suggests, with no agreement, as naive designs do.
            let wanted = view.desired_members(|p| self.keeps_seat(p), &self.spectators());
            if wanted != view.members && !wanted.is_empty() {
                let next = view.successor(wanted);
                self.install(next, ViewSource::Decided);
            }
            return;
        }
        if !view.contains(&self.me) || self.proposal.is_some() || self.now < self.next_proposal_at {
            return;
        }
        let wanted = view.desired_members(|p| self.keeps_seat(p), &self.spectators());
        if wanted.is_empty() && matches!(self.life, Life::Leaving { .. }) {
            // The last member leaves: there is no one to hand the seat to.
            self.finish_leave();
            return;
        }
        if wanted == view.members || wanted.is_empty() {
            self.change_wanted_since = None;
            return;
        }
        let preferred = self.preferred_proposer(view) == Some(self.me);
        let since = *self.change_wanted_since.get_or_insert(self.now);
        if !preferred && self.now < since + self.settings.takeover_after {
            return;
        }
        if let Some(view) = self.view.clone() {
            self.start_proposal(view, wanted);
        }
    }

    /// Who should propose the next change, so members rarely duel: a leaving member
    /// hands over its own seat; otherwise the first usable member in seat order.
    pub(super) fn preferred_proposer(&self, view: &ActiveSet) -> Option<ProcessId> {
        let leaving_me = matches!(self.life, Life::Leaving { .. }).then_some(self.me);
        leaving_me
            .into_iter()
            .chain(
                view.members
                    .iter()
                    .copied()
                    .filter(|m| self.leaving_peers.contains(m)),
            )
            .min()
            .or_else(|| view.members.iter().copied().find(|m| self.keeps_seat(m)))
    }

    pub(super) fn start_proposal(&mut self, view: ActiveSet, wanted: Vec<ProcessId>) {
        let round = self.highest_round.max(self.acceptor.highest_round_seen()) + 1;
        self.highest_round = round;
        let ballot = Ballot {
            round,
            proposer: self.me,
        };
        self.emit(Event::ProposalStarted {
            epoch: view.epoch + 1,
            round,
            members: wanted.clone(),
        });
        self.proposal = Some(Proposal::new(view.clone(), ballot, wanted, self.now));
        for member in view.members.clone() {
            self.send(
                member,
                Body::Prepare {
                    current: view.clone(),
                    ballot,
                },
            );
        }
    }

    pub(super) fn abandon_proposal(&mut self, reason: &'static str) {
        if let Some(proposal) = self.proposal.take() {
            self.emit(Event::ProposalAbandoned {
                epoch: proposal.epoch(),
                round: proposal.ballot.round,
                reason,
            });
            // A random pause keeps two proposers from colliding forever.
            let timeout_us = self.settings.proposal_timeout.as_micros().max(1) as u64;
            let backoff = Duration::from_micros(self.rng.random_range(0..timeout_us));
            self.next_proposal_at = self.now + backoff;
        }
    }

    /// Shared by Prepare and Accept: catch up first, and vote only as a member of
    /// exactly the set the proposer builds on.
    pub(super) fn acceptor_for(&mut self, from: ProcessId, current: &ActiveSet) -> bool {
        self.adopt(current.clone(), ViewSource::Message);
        let Some(view) = self.view.clone() else {
            return false;
        };
        if !view.same_cluster(current) {
            return false;
        }
        if view.epoch > current.epoch {
            self.send(from, Body::Decided { view });
            return false;
        }
        view.epoch == current.epoch && view.contains(&self.me) && view.contains(&from)
    }

    pub(super) fn on_prepare(&mut self, from: ProcessId, current: ActiveSet, ballot: Ballot) {
        if !self.acceptor_for(from, &current) {
            return;
        }
        let epoch = current.epoch + 1;
        match self.acceptor.on_prepare(ballot) {
            Vote::Promise { accepted } => self.send(
                from,
                Body::Promise {
                    epoch,
                    ballot,
                    accepted,
                },
            ),
            Vote::Nack { promised } => self.send(from, Body::Nack { epoch, promised }),
            Vote::Accepted => {}
        }
    }

    pub(super) fn on_accept(
        &mut self,
        from: ProcessId,
        current: ActiveSet,
        ballot: Ballot,
        members: Vec<ProcessId>,
    ) {
        if !self.acceptor_for(from, &current) {
            return;
        }
        let epoch = current.epoch + 1;
        match self.acceptor.on_accept(ballot, members) {
            Vote::Accepted => self.send(from, Body::Accepted { epoch, ballot }),
            Vote::Nack { promised } => self.send(from, Body::Nack { epoch, promised }),
            Vote::Promise { .. } => {}
        }
    }

    pub(super) fn on_promise(
        &mut self,
        from: ProcessId,
        epoch: u64,
        ballot: Ballot,
        accepted: Option<(Ballot, Vec<ProcessId>)>,
    ) {
        let Some(proposal) = self.proposal.as_mut().filter(|p| p.epoch() == epoch) else {
            return;
        };
        if let ProposalStep::SendAccept(members) = proposal.on_promise(from, ballot, accepted) {
            let base = proposal.base.clone();
            for member in base.members.clone() {
                self.send(
                    member,
                    Body::Accept {
                        current: base.clone(),
                        ballot,
                        members: members.clone(),
                    },
                );
            }
        }
    }

    pub(super) fn on_accepted(&mut self, from: ProcessId, epoch: u64, ballot: Ballot) {
        let Some(proposal) = self.proposal.as_mut().filter(|p| p.epoch() == epoch) else {
            return;
        };
        if let ProposalStep::Decided(view) = proposal.on_accepted(from, ballot) {
            let base = proposal.base.clone();
            self.proposal = None;
            let notify: BTreeSet<ProcessId> = base
                .members
                .iter()
                .chain(view.members.iter())
                .copied()
                .filter(|m| *m != self.me)
                .collect();
            self.install(view.clone(), ViewSource::Decided);
            for member in notify {
                self.send(member, Body::Decided { view: view.clone() });
            }
        }
    }

    pub(super) fn on_nack(&mut self, epoch: u64, promised: Ballot) {
        let outvoted = self
            .proposal
            .as_ref()
            .is_some_and(|p| p.epoch() == epoch && promised > p.ballot);
        if outvoted {
            self.highest_round = self.highest_round.max(promised.round);
            self.abandon_proposal("an acceptor promised a higher ballot");
        }
    }
}
