//! The node's side of SWIM: who is alive, who is leaving, joining through the
//! seeds, and founding a cluster.

use super::*;

impl Node {
    pub(super) fn drain_swim(&mut self) {
        while let Some((to, data)) = self.swim_io.to_send() {
            if self.plausible(to.process.addr) {
                self.out.push(Output::Datagram {
                    to: to.process.addr,
                    data,
                });
            }
        }
        while let Some((after, timer)) = self.swim_io.to_schedule() {
            self.out.push(Output::Timer {
                at: self.now + after,
                timer: TimerId::Swim(timer),
            });
        }
        // Gossip first: a leave notice often arrives with the leaver's own "down"
        // update, and must be known before that update is logged.
        while let Ok(item) = self.gossip_in.try_recv() {
            match item {
                Gossip::Leaving(process) => self.note_leaving(process),
                // Bounded like a Decided message (see `check_numbers`): a set
                // of our cluster far ahead of ours would use up the epochs.
                Gossip::ActiveSet(set) => {
                    match self.check_numbers(&Body::Decided { set: set.clone() }) {
                        // Gossip alone never moves us to a new member list or
                        // cluster (see `adopt`): a flipped bit in an identity
                        // names a set nobody decided, or a cluster that does
                        // not exist. Its members are asked instead.
                        Ok(()) if self.vouched(&set) => self.adopt(set, SetSource::Gossip, None),
                        // No member of it that we heard from: it waits for
                        // better evidence (a member's Decided, or its own
                        // gossip), and is not spread meanwhile.
                        Ok(()) => {}
                        Err(why) => self.emit(Event::Dropped {
                            what: DroppedWhat::Datagram,
                            from: DropSource::Gossip,
                            why,
                        }),
                    }
                }
            }
        }
        let mut membership_changed = false;
        while let Some(notification) = self.swim_io.to_notify() {
            self.on_swim_notification(notification);
            membership_changed = true;
        }
        if membership_changed {
            self.fit_gossip_to_size();
        }
    }

    /// Who SWIM suspects before it reads a datagram or runs a timer, so that
    /// a "down" that follows can tell a suspicion that ran out from another
    /// member's verdict (foca reports no suspicion). Only those two inputs
    /// move SWIM's suspicions, so lock traffic never pays for the scan.
    pub(super) fn note_suspects(&mut self) {
        self.swim_suspects.clear();
        let suspects = self
            .swim
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .map(|m| *m.id());
        self.swim_suspects.extend(suspects);
    }

    /// Updates are passed on more often as the cluster grows, so that each
    /// still reaches every node (see `SwimSettings::transmissions_for`).
    fn fit_gossip_to_size(&mut self) {
        let nodes = self.swim.num_members().saturating_add(1);
        let wanted = self.settings.swim.transmissions_for(nodes);
        if wanted != self.swim_transmissions {
            // Only the number of transmissions differs from foca's settings,
            // which foca allows to change at any time.
            if self
                .swim
                .set_config(self.settings.swim.to_foca(nodes))
                .is_ok()
            {
                self.swim_transmissions = wanted;
            }
        }
    }

    pub(super) fn on_swim_notification(&mut self, notification: OwnedNotification<MemberId>) {
        match notification {
            OwnedNotification::MemberUp(id) => self.on_member_up(id),
            OwnedNotification::MemberDown(id) => self.on_member_down(id),
            OwnedNotification::Rename(previous, id) => self.on_rename(previous, id),
            OwnedNotification::Active => {
                self.alone_since = None;
                self.emit(Event::Connected);
            }
            OwnedNotification::Idle => {
                self.alone_since = Some(self.now);
                if self.life == Life::Running {
                    self.emit(Event::Alone);
                }
            }
            OwnedNotification::Rejoin(id) => {
                // foca starts over disconnected under the new identity, and only
                // reconnects once a message reaches it: peers that renewed their own
                // identity meanwhile drop what we address to their old one. Announce
                // (see `retry_join`) until foca says it is active again.
                self.alone_since = Some(self.now);
                self.emit(Event::Rejoined { bump: id.bump });
            }
            // Declared down: renew the identity, paced (see `evidence`).
            OwnedNotification::Defunct => self.schedule_renewal(),
        }
    }

    pub(super) fn on_member_up(&mut self, id: MemberId) {
        let member = id.process;
        if !self.plausible(member.addr) {
            // Learned from gossip (forged or corrupted): forget it for good,
            // without spreading the news (it would only carry the address on).
            // foca fails an update only about ourselves (never reported up)
            // or when encoding it to broadcast (not asked for here).
            let _ = self.swim.apply_many(
                std::iter::once(foca::Member::down(id)),
                false,
                &mut self.swim_io,
            );
            self.emit(Event::Dropped {
                what: DroppedWhat::Datagram,
                from: DropSource::Gossip,
                why: DropReason::ImplausibleAddress { addr: member.addr },
            });
            return;
        }
        self.unheard_seeds.remove(&member.addr);
        match self.peers.get_mut(&member.addr) {
            Some(peer) if peer.id == id => {
                let was_down = !peer.alive;
                let restart_logged = std::mem::take(&mut peer.restart_logged);
                peer.alive = true;
                if was_down && !restart_logged {
                    self.emit(Event::MemberBack { member });
                }
            }
            _ => {
                self.peers.insert(
                    member.addr,
                    Peer {
                        id,
                        alive: true,
                        down_at: None,
                        recheck: None,
                        restart_logged: false,
                        shown_held_down_at: None,
                    },
                );
                self.emit(Event::MemberJoined { member });
            }
        }
        self.welcome(member);
        self.report_recovering(member);
        self.spread_news();
    }

    /// Tell a newcomer which cluster and active set it is in: the members of the
    /// set do, so it learns at once, not when gossip happens to reach it.
    pub(super) fn welcome(&mut self, member: ProcessId) {
        if let Some(set) = self.active_set.clone()
            && set.contains(&self.me)
        {
            self.send(member, Body::Decided { set });
        }
    }

    pub(super) fn on_member_down(&mut self, id: MemberId) {
        let member = id.process;
        let Some(peer) = self.peers.get_mut(&member.addr) else {
            return;
        };
        if peer.id != id || !peer.alive {
            return;
        }
        peer.alive = false;
        peer.down_at = Some(self.now);
        peer.recheck = None;
        self.drop_served_for(member, false);
        if self.leaving_peers.contains_key(&member) {
            self.emit(Event::MemberLeft { member });
        } else {
            let heard_lately = self.heard_from(&member).is_some_and(|at| {
                self.now.saturating_sub(at) < self.settings.swim.suspect_to_down_after
            });
            // Down without a suspicion first: another member's verdict, which
            // gossip carried here before any suspicion did.
            let suspected = self.swim_suspects.contains(&id);
            let cause = if self.gone.contains(&member) {
                FailureCause::ProcessGone
            } else if heard_lately || !suspected {
                FailureCause::Reported
            } else {
                FailureCause::Unresponsive
            };
            self.emit(Event::MemberFailed { member, cause });
        }
        self.spread_news();
        self.check_quorum_for_holders();
    }

    /// A holder whose active set has lost its quorum (as SWIM sees it) may be the
    /// one cut off: the others may go on without it, so its clients are told.
    fn check_quorum_for_holders(&mut self) {
        let Some(set) = self.active_set.clone() else {
            return;
        };
        if !set.contains(&self.me) || quorum_alive(&set, |p| *p == self.me || self.is_usable(p)) {
            return;
        }
        for lock in self.held_locks() {
            self.lose_holder(&lock, LossReason::QuorumLost);
        }
    }

    /// Gossip a membership change now rather than at the next periodic round:
    /// the rest of the cluster learns of a join or a failure a round sooner.
    pub(super) fn spread_news(&mut self) {
        // An error means there is no one to gossip to: nothing to spread.
        let _ = self.swim.gossip(&mut self.swim_io);
    }

    pub(super) fn on_rename(&mut self, previous: MemberId, id: MemberId) {
        let alive = self
            .peers
            .get(&previous.process.addr)
            .is_some_and(|p| p.alive);
        let restarted = previous.process != id.process;
        self.peers.insert(
            id.process.addr,
            Peer {
                id,
                alive,
                down_at: None,
                recheck: None,
                restart_logged: restarted,
                shown_held_down_at: None,
            },
        );
        if restarted {
            self.drop_served_for(previous.process, false);
            self.leaving_peers.remove(&previous.process);
            self.emit(Event::MemberRestarted {
                previous: previous.process,
                member: id.process,
            });
            self.welcome(id.process);
        } else if alive {
            self.emit(Event::MemberRenamed {
                member: id.process,
                bump: id.bump,
            });
        }
    }

    /// A gossiped active set is believed only if it seats a process (other
    /// than us) that we heard from ourselves lately: a forged datagram can
    /// name any epoch and any members, but cannot make those members answer.
    /// Without this a forged set far ahead was adopted by a node that had no
    /// set yet, and it then ignored its real cluster's lower epochs for good.
    /// Sets from members' messages (`Decided` over gRPC) need no such check.
    pub(super) fn vouched(&self, set: &ActiveSet) -> bool {
        self.vouchers(set).next().is_some()
    }

    /// The members of `set` (other than us) that we heard from ourselves lately.
    pub(super) fn vouchers<'a>(
        &'a self,
        set: &'a ActiveSet,
    ) -> impl Iterator<Item = ProcessId> + 'a {
        let limit = self.silence_limit();
        set.members.iter().copied().filter(move |m| {
            *m != self.me
                && !self.gone.contains(m)
                && self
                    .heard_from(m)
                    .is_some_and(|at| self.now.saturating_sub(at) <= limit)
        })
    }

    pub(super) fn note_leaving(&mut self, process: ProcessId) {
        // Only a process we know (the one at its address, or a member of our
        // set) can be leaving: forged notices about strangers would otherwise
        // grow this set without bound.
        let known = self
            .peers
            .get(&process.addr)
            .is_some_and(|peer| peer.id.process == process)
            || self
                .active_set
                .as_ref()
                .is_some_and(|set| set.contains(&process));
        if process != self.me && known && !self.leaving_peers.contains_key(&process) {
            self.leaving_peers.insert(process, self.now);
            // Its client tickets ended when it began to leave.
            self.drop_served_for(process, true);
            self.emit(Event::PeerLeaving { member: process });
        }
    }

    /// Alive, not leaving, and the current process at its address: a candidate
    /// for a free seat needs this positive evidence.
    pub(super) fn is_usable(&self, process: &ProcessId) -> bool {
        if *process == self.me {
            return matches!(self.life, Life::Running | Life::LeaveAfterRelease { .. });
        }
        // Seated only once we have heard from it ourselves: gossip alone may
        // be forged or corrupted (a phantom member). Never one proved gone:
        // `keeps_seat` would take the seat back at once, and a lone member
        // would add and remove it forever within one input.
        !self.leaving_peers.contains_key(process)
            && !self.gone.contains(process)
            && self.heard_from(process).is_some()
            && self
                .peers
                .get(&process.addr)
                .is_some_and(|peer| peer.id.process == *process && peer.alive)
    }

    /// Whether a member keeps its seat: only evidence removes it (declared down,
    /// leaving, or replaced by a restart). A member we have not heard of yet, as
    /// happens right after joining, keeps its seat.
    pub(super) fn keeps_seat(&self, process: &ProcessId) -> bool {
        if *process == self.me {
            return matches!(self.life, Life::Running | Life::LeaveAfterRelease { .. });
        }
        if self.leaving_peers.contains_key(process) || self.gone.contains(process) {
            return false;
        }
        // A member that neither SWIM nor we have heard from for a long while
        // (a phantom seated by forged gossip, say) loses its seat too.
        let limit = self.silence_limit();
        let heard = self
            .heard_from(process)
            .is_some_and(|at| self.now.saturating_sub(at) < limit);
        let new_set = self.now.saturating_sub(self.set_installed_at) < limit;
        match self.peers.get(&process.addr) {
            None => heard || new_set,
            Some(peer) if peer.id.process == *process => {
                if peer.alive {
                    heard || new_set
                } else {
                    peer.down_at
                        .is_some_and(|down_at| self.verdict_doubtful(process, down_at))
                }
            }
            // An earlier process at the address: a late rumour of a restart,
            // or a damaged identity (a flipped bit in a start time makes a
            // "later" process that never runs). The first is soon heard from;
            // the second never is, and must not keep a seat that every real
            // process at the address, being "earlier", could never take back.
            Some(peer) if peer.id.process.incarnation < process.incarnation => heard || new_set,
            // A later one: a restart once we hear from it ourselves; until
            // then gossip may be forged, and the member keeps its seat as long
            // as we hear from it.
            Some(peer) => self.heard_from(&peer.id.process).is_none() && heard,
        }
    }

    pub(super) fn live_processes(&self) -> Vec<ProcessId> {
        self.peers
            .values()
            .filter(|p| p.alive)
            .map(|p| p.id.process)
            .collect()
    }

    /// Usable processes without a seat, first in line first.
    pub(super) fn spectators(&self) -> Vec<ProcessId> {
        let mut line: Vec<ProcessId> = self
            .live_processes()
            .into_iter()
            .chain(std::iter::once(self.me))
            .filter(|p| {
                self.is_usable(p) && !self.active_set.as_ref().is_some_and(|s| s.contains(p))
            })
            .collect();
        line.sort_by_key(|p| p.seat_key());
        line
    }

    /// Keep announcing to each seed until it answers: whoever reached us first may
    /// be in an island of its own. And foca does nothing while it is not
    /// connected (no live member, or just renewed), so then announce to every
    /// address we knew too, and every seat of the last active set we heard
    /// of: a late seed or a healed partition brings us back.
    pub(super) fn retry_join(&mut self) {
        let alone = self.alone_since.is_some();
        // Recovering from a data directory: the old members are where the
        // cluster is, whoever else we reach.
        let old_members: Vec<SocketAddr> = self
            .recovery_targets()
            .into_iter()
            .filter(|a| !self.peers.get(a).is_some_and(|p| p.alive))
            .collect();
        if (self.unheard_seeds.is_empty() && !alone && old_members.is_empty())
            || self.life != Life::Running
            || self.now < self.next_join_attempt
        {
            return;
        }
        self.next_join_attempt = self.now + self.settings.retry_join_every;
        let mut targets = self.unheard_seeds.clone();
        targets.extend(old_members);
        if alone {
            targets.extend(self.seeds.iter().copied());
            targets.extend(self.peers.keys().copied());
            // The seats we last heard of: a joiner whose only seed left right
            // after answering still knows where the cluster sits.
            if let Some(set) = &self.active_set {
                targets.extend(
                    set.members
                        .iter()
                        .map(|m| m.addr)
                        .filter(|a| *a != self.me.addr),
                );
            }
        }
        for target in targets {
            // An error means foca refused the target (our own address): skip it.
            let _ = self
                .swim
                .announce(MemberId::placeholder(target), &mut self.swim_io);
        }
        let alone_for = self
            .alone_since
            .map_or(Duration::ZERO, |since| self.now.saturating_sub(since));
        if !self.seeds.is_empty()
            && alone_for >= Duration::from_secs(3)
            && self.now >= self.last_alone_warning + Duration::from_secs(5)
        {
            self.last_alone_warning = self.now;
            self.emit(Event::StillAlone {
                seeds: self.seeds.clone(),
                waited: alone_for,
            });
        }
    }

    /// A node started without seeds founds a cluster, unless an existing one
    /// reaches it first: waiting `found_after` gives the cluster of a previous
    /// process at this address time to announce itself. Nodes with seeds never
    /// found: one of their seeds may be in a cluster they cannot reach yet, and
    /// founding then would split the system in two.
    pub(super) fn maybe_found(&mut self) {
        let Some(found_at) = self.found_at else {
            return;
        };
        if self.active_set.is_some() || self.life != Life::Running || self.now < found_at {
            return;
        }
        self.found_at = None;
        self.emit(Event::Founded { cluster: self.me });
        self.install(
            ActiveSet::founding(self.me, self.settings.max_active),
            SetSource::Founded,
        );
    }
}
