//! Seating: the node's active set, adopting decided sets, merging clusters,
//! and the Paxos rounds that change the set.
//!
//! About 600 lines because it is one job, every way this node's active
//! set changes; the Paxos steps share the proposal's state with the rest.

use super::*;
use crate::event::{AbandonReason, WithdrawReason};
use crate::protocol::paxos::{Ballot, MAX_ROUND, ProposalStep, Vote};

/// How often a spectator checks its set with a member.
pub const SET_CHECK_EVERY: Duration = Duration::from_secs(5);

/// An Accept held back by a grant lease (see `Node::on_accept`).
pub(super) struct HeldAccept {
    from: ProcessId,
    current: ActiveSet,
    ballot: Ballot,
    members: Vec<ProcessId>,
    carried: bool,
}

impl Node {
    /// Take on an active set someone else decided, if it is newer than ours (or
    /// belongs to an older cluster that ours merges into). `from` sent it over
    /// a stream; `None` for gossip.
    pub(super) fn adopt(&mut self, set: ActiveSet, source: SetSource, from: Option<ProcessId>) {
        if self.refuses_while_recovering(&set) {
            return;
        }
        match &self.active_set {
            // Gossip only hints at a set, even to a node that knows none yet:
            // a flipped bit in an epoch or an identity names a set nobody
            // decided, which the node would keep (over the real one of the
            // same epoch, or below a phantom epoch; and persist, and wait to
            // recover after a restart) while the cluster went on without it.
            // Its members are asked, and their answer is installed.
            None if from.is_none() => self.ask_which_set(&set),
            None => self.install(set, source),
            Some(mine) if mine.same_cluster(&set) => {
                if set.epoch <= mine.epoch {
                    return;
                }
                if from.is_some() {
                    self.install(set, source);
                } else {
                    // Gossip only hints at a newer set: a flipped bit in a
                    // member's identity makes a second member list for one
                    // epoch, and members holding different lists never vote
                    // together again. Its members answer with the set they
                    // hold (`answer_older_set`), over a stream.
                    self.ask_members_of(&set);
                }
            }
            Some(mine) => {
                // Another cluster's set moves us only when one of its own
                // members sends it: anyone else may pass on a set damaged on
                // the way (a flipped bit in the founder's identity names a
                // cluster that does not exist). Then ask its members instead.
                let Some(from) = from.filter(|f| set.contains(f)) else {
                    if set.outranks_cluster_of(mine) {
                        self.ask_members_of(&set);
                    }
                    return;
                };
                // A spectator whose set seats the sender, which says it sits
                // in another cluster: its own word wins over what we took it
                // for (a set learned from damaged gossip while we had none).
                let mistaken = !mine.contains(&self.me) && mine.contains(&from);
                if set.outranks_cluster_of(mine) || mistaken {
                    if self.held_locks().is_empty() {
                        self.merge_into(set);
                    } else {
                        self.pending_merge = Some(set);
                    }
                }
            }
        }
    }

    /// Knowing no set, ask the members of `set` we heard from lately for
    /// theirs: at most once a probe period, as gossip repeats itself.
    fn ask_which_set(&mut self, set: &ActiveSet) {
        if self
            .asked_which_set_at
            .is_some_and(|at| self.now < at + self.settings.swim.probe_period)
        {
            return;
        }
        let vouchers: Vec<ProcessId> = self.vouchers(set).collect();
        if vouchers.is_empty() {
            return;
        }
        self.asked_which_set_at = Some(self.now);
        for member in vouchers {
            self.send(member, Body::WhichSet);
        }
    }

    /// A spectator checks its set with one member of it now and then (each in
    /// turn, every `SET_CHECK_EVERY`). Gossip of a new set is epidemic and may
    /// miss a node: among 50 nodes a spectator kept an old set for more than
    /// 30 s. Members hear each decision over their streams. It sends the set it
    /// holds, and the member answers only when its own is later
    /// (`answer_older_set`): a member asked "which set?" answered every
    /// spectator every 15 s, which kept a stream open from each member to
    /// every spectator for good.
    pub(super) fn check_set_with_a_member(&mut self) {
        let Some(set) = self.active_set.as_ref() else {
            return;
        };
        if set.contains(&self.me) || self.now < self.set_checked_at + SET_CHECK_EVERY {
            return;
        }
        self.set_checked_at = self.now;
        let live = self.live_processes();
        let askable: Vec<ProcessId> = set
            .members
            .iter()
            .copied()
            .filter(|m| live.contains(m) && !self.gone.contains(m))
            .collect();
        if askable.is_empty() {
            return;
        }
        let member = askable[self.set_checks % askable.len()];
        self.set_checks = self.set_checks.wrapping_add(1);
        let set = set.clone();
        self.send(member, Body::Decided { set });
    }

    /// Asked for our set: a member answers with it, as it welcomes a newcomer.
    pub(super) fn tell_set(&mut self, to: ProcessId) {
        if let Some(set) = self.active_set.clone()
            && set.contains(&self.me)
        {
            self.send(to, Body::Decided { set });
        }
    }

    /// Send our set to the members of `set` that we heard from lately: one
    /// that holds a later set of our cluster, or sits in an older cluster,
    /// answers with its own (`answer_older_set`), which we then take on.
    pub(super) fn ask_members_of(&mut self, set: &ActiveSet) {
        let Some(mine) = self.active_set.clone() else {
            return;
        };
        let mut vouchers: Vec<ProcessId> = self.vouchers(set).collect();
        if vouchers.is_empty() {
            // In a large cluster a spectator may not have heard from any
            // member itself for a while (SWIM probes one peer at a time): ask
            // those SWIM counts alive, or it keeps an old set until one of them
            // happens to probe it (30 s and more with 50 nodes).
            let live = self.live_processes();
            vouchers = set
                .members
                .iter()
                .copied()
                .filter(|m| *m != self.me && !self.gone.contains(m) && live.contains(m))
                .collect();
        }
        for member in vouchers {
            self.send(member, Body::Decided { set: mine.clone() });
        }
    }

    /// Two clusters met: drop ours (no lock is held here) and join the older one
    /// as a newcomer.
    pub(super) fn merge_into(&mut self, set: ActiveSet) {
        let Some(mine) = self.active_set.take() else {
            self.install(set, SetSource::Message);
            return;
        };
        self.emit(Event::ClusterMerged {
            abandoned: mine.cluster,
            joined: set.cluster,
        });
        let names = self.locks.busy_names();
        for lock in &names {
            let Some(slot) = self.locks.get_mut(lock) else {
                continue;
            };
            let (pending, due) = (slot.ra.withdraw(), slot.ra.take_deferred());
            if let Some(pending) = pending {
                self.emit(Event::Withdrawn {
                    lock: lock.clone(),
                    request_id: pending.id,
                    why: WithdrawReason::ClusterMerged,
                });
            }
            // No longer asking under the old cluster: the algorithm says grant.
            for (requester, deferred) in due {
                self.send_reply(requester, lock, deferred, true);
            }
            self.to_issue.insert(lock.clone());
        }
        self.install(set, SetSource::Message);
        for (from, request) in std::mem::take(&mut self.requests_after_merge) {
            self.on_request(from, request);
        }
    }

    pub(super) fn install(&mut self, set: ActiveSet, source: SetSource) {
        let previous = self.active_set.replace(set.clone());
        let before: Vec<ProcessId> = previous.map(|s| s.members).unwrap_or_default();
        let added: Vec<ProcessId> = set
            .members
            .iter()
            .filter(|m| !before.contains(m))
            .copied()
            .collect();
        let removed: Vec<ProcessId> = before
            .iter()
            .filter(|m| !set.contains(m))
            .copied()
            .collect();
        let seated = set.contains(&self.me);
        self.set_installed_at = self.now;
        self.acceptor.reset(set.epoch + 1);
        // Ballots are per instance: the next epoch's rounds start again, so
        // honest rounds stay small and a round far above them is a forgery.
        self.highest_round = 0;
        if self
            .proposal
            .as_ref()
            .is_some_and(|p| p.epoch() <= set.epoch)
        {
            self.proposal = None;
        }
        self.change_wanted_since = None;
        self.reported_position = None;
        self.emit(Event::ActiveSetInstalled {
            epoch: set.epoch,
            members: set.members.clone(),
            added,
            removed,
            source,
            seated,
            max_active: set.max_active,
        });
        if set.max_active != self.settings.max_active && source != SetSource::Founded {
            // The cluster's value wins; say so rather than silently.
            self.emit(Event::MaxActiveMismatch {
                configured: self.settings.max_active,
                cluster: set.max_active,
            });
            self.settings.max_active = set.max_active;
        }
        // Spread it to spectators, who are not sent Decided directly. An error
        // (from encoding or from foca) means the set does not fit a datagram;
        // it still reaches members by gRPC.
        if let Ok(item) = Gossip::ActiveSet(set.clone()).encode() {
            let _ = self.swim.add_broadcast(&item);
        }
        if !seated {
            self.evict_holders();
        }
        let names = self.locks.busy_names();
        for lock in names {
            // Requests held back under an older epoch: their requesters must hear
            // of the new set now rather than wait for our exit.
            let stale = match self.locks.get_mut(&lock) {
                Some(slot) => slot.ra.take_deferred_where(|_, d| d.epoch < set.epoch),
                None => continue,
            };
            for (requester, deferred) in stale {
                self.send_newer_set(requester, &lock, deferred.request_id);
            }
            self.follow_new_set(&lock, &set, seated);
        }
        self.forget_quiet_locks(set.epoch);
        if matches!(self.life, Life::Leaving { .. }) && !seated {
            self.finish_leave();
        }
    }

    /// A waiting request asks the new set's members again (seated), or is taken
    /// back until a seat frees (not seated).
    fn follow_new_set(&mut self, lock: &LockName, set: &ActiveSet, seated: bool) {
        let now = self.now;
        let Some(slot) = self.locks.get_mut(lock) else {
            return;
        };
        if slot.ra.pending().is_none() {
            if !slot.line.is_empty() {
                self.to_issue.insert(lock.clone());
            }
            return;
        }
        if !seated {
            self.withdraw(lock, WithdrawReason::LostSeat);
            self.to_issue.insert(lock.clone());
            return;
        }
        if let Some(pending) = slot.ra.reissue(set, now) {
            self.emit(Event::Reissued {
                lock: lock.clone(),
                request_id: pending.id,
                epoch: pending.epoch,
                awaiting: pending.awaiting.iter().copied().collect(),
            });
            self.send_requests(lock, &pending.awaiting, set);
            self.try_enter(lock);
        }
    }

    /// Propose a change of the active set when it no longer matches who is usable.
    pub(super) fn maybe_reconfigure(&mut self) {
        // Runs after every input: borrow, and clone only to act.
        let Some(set) = self.active_set.as_ref() else {
            return;
        };
        if self.settings.mutations.local_active_sets() {
            // Broken on purpose (tests only): every node installs the set its own
            // member list suggests, with no agreement, as naive designs do.
            let wanted = set.desired_members(|p| self.keeps_seat(p), &self.spectators());
            if wanted != set.members
                && !wanted.is_empty()
                && let Some(next) = set.successor(wanted)
            {
                self.install(next, SetSource::Decided);
            }
            return;
        }
        if !set.contains(&self.me) || self.proposal.is_some() || self.now < self.next_proposal_at {
            return;
        }
        let mut wanted = set.desired_members(|p| self.keeps_seat(p), &self.spectators());
        if wanted.is_empty() && matches!(self.life, Life::Leaving { .. }) {
            // The last member leaves: there is no one to hand the seat to.
            self.finish_leave();
            return;
        }
        // Our acceptor accepted another member list for the next epoch: that
        // value may have been chosen, so the instance must be driven to a
        // decision (Paxos re-proposes it if it was), even if nothing else wants
        // a change. Until then the requests of the members it removes wait.
        let open_vote = self
            .acceptor
            .accepted_members()
            .is_some_and(|members| members != set.members.as_slice());
        if wanted.is_empty() {
            wanted = set.members.clone();
        }
        if wanted == set.members && !open_vote {
            self.change_wanted_since = None;
            return;
        }
        // A member we granted recently keeps its seat until that grant's lease
        // runs out: it may be entering on our permission right now.
        if let Some(until) = self.lease_blocking_removal(set, &wanted) {
            self.next_proposal_at = until;
            return;
        }
        let preferred = self.preferred_proposer(set) == Some(self.me);
        let since = *self.change_wanted_since.get_or_insert(self.now);
        if !preferred && self.now < since + self.settings.takeover_after {
            return;
        }
        if let Some(set) = self.active_set.clone() {
            self.start_proposal(set, wanted);
        }
    }

    /// The latest lease this node holds for a member that `wanted` would remove,
    /// unless that member is leaving (it stopped asking before it said so).
    pub(super) fn lease_blocking_removal(
        &self,
        set: &ActiveSet,
        wanted: &[ProcessId],
    ) -> Option<Duration> {
        // A member leaving stopped asking before it said so; one proved gone
        // cannot enter on anything.
        set.members
            .iter()
            .filter(|m| {
                !wanted.contains(m) && !self.leaving_peers.contains_key(m) && !self.gone.contains(m)
            })
            .filter_map(|m| self.leases.get(m).copied())
            .filter(|until| *until > self.now)
            .max()
    }

    /// Who should propose the next change, so members rarely duel: a leaving member
    /// hands over its own seat; otherwise the first usable member in seat order.
    pub(super) fn preferred_proposer(&self, set: &ActiveSet) -> Option<ProcessId> {
        let leaving_me = matches!(self.life, Life::Leaving { .. }).then_some(self.me);
        leaving_me
            .into_iter()
            .chain(
                set.members
                    .iter()
                    .copied()
                    .filter(|m| self.leaving_peers.contains_key(m)),
            )
            .min()
            .or_else(|| set.members.iter().copied().find(|m| self.keeps_seat(m)))
    }

    pub(super) fn start_proposal(&mut self, set: ActiveSet, wanted: Vec<ProcessId>) {
        if set.successor(Vec::new()).is_none() {
            self.emit(Event::EpochsExhausted { epoch: set.epoch });
            self.next_proposal_at = Duration::MAX;
            return;
        }
        let round = self
            .highest_round
            .max(self.acceptor.highest_round_seen())
            .saturating_add(1)
            .min(MAX_ROUND);
        self.highest_round = round;
        let ballot = Ballot {
            round,
            proposer: self.me,
        };
        self.emit(Event::ProposalStarted {
            epoch: set.epoch + 1,
            round,
            members: wanted.clone(),
        });
        self.proposal = Some(Proposal::new(set.clone(), ballot, wanted, self.now));
        for member in set.members.clone() {
            self.send(
                member,
                Body::Prepare {
                    current: set.clone(),
                    ballot,
                },
            );
        }
    }

    pub(super) fn abandon_proposal(&mut self, why: AbandonReason) {
        if let Some(proposal) = self.proposal.take() {
            self.emit(Event::ProposalAbandoned {
                epoch: proposal.epoch(),
                round: proposal.ballot.round,
                why,
            });
            // A random pause keeps two proposers from colliding forever.
            let backoff = self.random_below(self.settings.proposal_timeout);
            self.next_proposal_at = self.now + backoff;
        }
    }

    /// Shared by Prepare and Accept: catch up first, and vote only as a member of
    /// exactly the set the proposer builds on.
    pub(super) fn acceptor_for(&mut self, from: ProcessId, current: &ActiveSet) -> bool {
        self.adopt(current.clone(), SetSource::Message, Some(from));
        let Some(set) = self.active_set.clone() else {
            return false;
        };
        if !set.same_cluster(current) {
            return false;
        }
        if set.epoch > current.epoch {
            self.send(from, Body::Decided { set });
            return false;
        }
        set.epoch == current.epoch && set.contains(&self.me) && set.contains(&from)
    }

    /// A proposer sends its own ballots: one naming another proposer is
    /// forged (or damaged), and could outrank every honest ballot.
    fn ballot_of_sender(&mut self, from: ProcessId, ballot: Ballot) -> bool {
        if ballot.proposer == from {
            return true;
        }
        let detail = format!("a ballot of {:?}, not of its sender", ballot.proposer);
        self.drop_message(from, DropReason::Malformed { detail });
        false
    }

    pub(super) fn on_prepare(&mut self, from: ProcessId, current: ActiveSet, ballot: Ballot) {
        if ballot.round > MAX_ROUND
            || !self.ballot_of_sender(from, ballot)
            || !self.acceptor_for(from, &current)
        {
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
        carried: bool,
    ) {
        if ballot.round > MAX_ROUND
            || !self.ballot_of_sender(from, ballot)
            || !self.acceptor_for(from, &current)
        {
            return;
        }
        // A live member does not vote itself out on someone else's view (a
        // node cut off, say, that thinks everyone else failed); it only
        // carries through an earlier vote Paxos may already have chosen, so
        // the instance can always close.
        let leaving = matches!(self.life, Life::Leaving { .. });
        if !members.contains(&self.me) && !carried && !leaving {
            return;
        }
        // Our grant lease on a member this value removes is not over: sit on
        // the Accept until it is, or until that member is proved gone. An
        // acceptor may answer late (it is a slow message); its promises still
        // decide whether it can.
        if self.lease_blocking_removal(&current, &members).is_some() {
            self.held_accept = Some(HeldAccept {
                from,
                current,
                ballot,
                members,
                carried,
            });
            return;
        }
        let epoch = current.epoch + 1;
        match self.acceptor.on_accept(ballot, members) {
            Vote::Accepted => self.send(from, Body::Accepted { epoch, ballot }),
            Vote::Nack { promised } => self.send(from, Body::Nack { epoch, promised }),
            Vote::Promise { .. } => {}
        }
    }

    /// Answer the Accept we sat on, once no lease blocks it any more.
    pub(super) fn answer_held_accept(&mut self) {
        let Some(held) = self.held_accept.as_ref() else {
            return;
        };
        let current_epoch = self.active_set.as_ref().map(|s| s.epoch);
        if current_epoch != Some(held.current.epoch) {
            // A set was decided meanwhile: this vote is moot.
            self.held_accept = None;
            return;
        }
        if self
            .lease_blocking_removal(&held.current, &held.members)
            .is_some()
        {
            return;
        }
        if let Some(held) = self.held_accept.take() {
            self.on_accept(
                held.from,
                held.current,
                held.ballot,
                held.members,
                held.carried,
            );
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
        if let ProposalStep::SendAccept { members, carried } =
            proposal.on_promise(from, ballot, accepted)
        {
            let base = proposal.base.clone();
            // Our own value removes a member that has come back meanwhile (a
            // refuted suspicion): no value is chosen yet, so stop here and
            // propose again from what we know now. A value carried over from
            // an earlier vote must go through as it is.
            let came_back = !carried
                && base
                    .members
                    .iter()
                    .any(|m| !members.contains(m) && self.keeps_seat(m));
            if came_back {
                self.abandon_proposal(AbandonReason::MemberBack);
                return;
            }
            for member in base.members.clone() {
                self.send(
                    member,
                    Body::Accept {
                        current: base.clone(),
                        ballot,
                        members: members.clone(),
                        carried,
                    },
                );
            }
        }
    }

    pub(super) fn on_accepted(&mut self, from: ProcessId, epoch: u64, ballot: Ballot) {
        let Some(proposal) = self.proposal.as_mut().filter(|p| p.epoch() == epoch) else {
            return;
        };
        if let ProposalStep::Decided(set) = proposal.on_accepted(from, ballot) {
            let base = proposal.base.clone();
            self.proposal = None;
            let notify: BTreeSet<ProcessId> = base
                .members
                .iter()
                .chain(set.members.iter())
                .copied()
                .filter(|m| *m != self.me)
                .collect();
            self.install(set.clone(), SetSource::Decided);
            for member in notify {
                self.send(member, Body::Decided { set: set.clone() });
            }
        }
    }

    pub(super) fn on_nack(&mut self, epoch: u64, promised: Ballot) {
        let outvoted = self
            .proposal
            .as_ref()
            .is_some_and(|p| p.epoch() == epoch && promised > p.ballot);
        if outvoted {
            self.highest_round = self.highest_round.max(promised.round.min(MAX_ROUND));
            self.abandon_proposal(AbandonReason::OutvotedByHigherBallot);
        }
    }
}
