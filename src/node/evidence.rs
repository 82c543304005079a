//! What this node has seen for itself, as opposed to what gossip says: which
//! processes it has heard from directly, which addresses a cluster like ours
//! could use, and how fast it lets others make it renew its identity.
//!
//! Gossip can be wrong (a stale verdict from a healed partition) or, in plain
//! mode, forged or corrupted. So a process is seated only once this node has
//! heard from it itself, a seated member that never answers loses its seat, a
//! fresh "down" verdict about a member heard from a moment ago waits for the
//! refutation that usually follows, one about a member heard from since gets
//! a second look from SWIM, and nothing is ever sent to an address no member
//! of this cluster could have.

use super::*;

/// Direct contacts remembered at most: a flood of datagrams from forged source
/// addresses cannot grow this without bound.
const MAX_CONTACTS: usize = 4096;

/// What this node heard itself at one address.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Contact {
    /// The process we heard from there, and when we last did.
    heard: Option<(ProcessId, Duration)>,
    /// Another process one datagram from there named, not confirmed yet.
    claim: Option<ProcessId>,
}

impl Node {
    /// Whether a member of this cluster could be at `addr`: the same address
    /// family and scope as our own (a loopback cluster never dials a public
    /// address), or a seed we were given.
    pub(super) fn plausible(&self, addr: SocketAddr) -> bool {
        self.plausible.address(addr)
    }

    /// A datagram arrived from `from`: if its SWIM header names a process at
    /// that very address, that process may have spoken to us directly. One
    /// datagram is only a claim (a flipped bit in its start time names a
    /// process that never ran, and the checksum cannot tell): it counts once a
    /// second datagram names the same process with no other one heard there
    /// in between. A process that runs keeps talking; a damaged identity is
    /// not repeated, and the real process's next datagram clears it. A
    /// datagram never counts for a process earlier than one heard there.
    pub(super) fn note_datagram_contact(
        &mut self,
        from: SocketAddr,
        header: &foca::Header<MemberId>,
    ) {
        let process = header.src.process;
        if process.addr != from {
            return;
        }
        let contact = self.contacts.get(&from).copied().unwrap_or_default();
        // Only a later process takes an address over (a restart). A datagram
        // naming an earlier one than we heard from there is a straggler or, in
        // keyed mode too, a replay: counted, it would make the live process
        // look unheard and cost it its seat.
        if contact
            .heard
            .is_some_and(|(p, _)| p.incarnation > process.incarnation)
        {
            return;
        }
        let repeated =
            contact.heard.is_some_and(|(p, _)| p == process) || contact.claim == Some(process);
        if repeated {
            self.note_contact(process);
        } else {
            self.contact_at(from).claim = Some(process);
        }
    }

    /// We heard from `process` directly: a message on a stream its handshake
    /// named, or a repeated datagram (see `note_datagram_contact`).
    pub(super) fn note_contact(&mut self, process: ProcessId) {
        let now = self.now;
        *self.contact_at(process.addr) = Contact {
            heard: Some((process, now)),
            claim: None,
        };
        // A leave notice is a claim too (forged, or an item damaged on the
        // way): a process that leaves is gone by its two leave deadlines (its
        // clients' release, then the handover). One still talking to us well
        // after that is not leaving, and must not be kept from a seat or from
        // being served for good.
        let leave_over = self.settings.leave_timeout.saturating_mul(3);
        if self
            .leaving_peers
            .get(&process)
            .is_some_and(|since| now > since.saturating_add(leave_over))
        {
            self.leaving_peers.remove(&process);
        }
        // Heard from a member SWIM holds down: a stale verdict, or a member
        // that cannot hear us. SWIM is asked to look again at once.
        if !self.gone.contains(&process)
            && let Some(peer) = self.peers.get_mut(&process.addr)
            && peer.id.process == process
            && !peer.alive
            && peer.recheck.is_none()
            && peer.down_at.is_some_and(|down_at| now > down_at)
        {
            peer.recheck = Some((now, None));
            self.recheck_verdicts();
        }
    }

    /// How long a verdict waits for SWIM's second look once we heard from
    /// the member ourselves since: the wait a refutation usually needs.
    fn recheck_window(&self) -> Duration {
        let swim = &self.settings.swim;
        swim.suspect_to_down_after.max(swim.probe_period)
    }

    /// A member SWIM holds down that we heard from ourselves since: after a
    /// healed partition each side holds the other down, and SWIM probes no
    /// member it holds down, so its refutation (a renewed identity) may not
    /// reach us for seconds while the member talks to us over its streams.
    /// Announcing to it draws its answer, which carries its renewed identity
    /// if it refuted the verdict: then it is alive again. A member that
    /// cannot hear us (a one-way cut) never answers, and the verdict stands
    /// once the window is over. Asked again every probe round trip.
    pub(super) fn recheck_verdicts(&mut self) {
        let (now, window, every) = (
            self.now,
            self.recheck_window(),
            self.settings.swim.probe_rtt,
        );
        let mut ask = Vec::new();
        for peer in self.peers.values_mut().filter(|p| !p.alive) {
            let Some((since, asked)) = peer.recheck.as_mut() else {
                continue;
            };
            if now < *since + window && asked.is_none_or(|at| now >= at + every) {
                *asked = Some(now);
                ask.push(peer.id.process.addr);
            }
        }
        for addr in ask {
            // An error means foca refused the target (our own address).
            let _ = self
                .swim
                .announce(MemberId::placeholder(addr), &mut self.swim_io);
        }
    }

    /// The contact record of `addr`, made if new: within [`MAX_CONTACTS`],
    /// forgetting the address heard from longest ago.
    fn contact_at(&mut self, addr: SocketAddr) -> &mut Contact {
        if self.contacts.len() >= MAX_CONTACTS && !self.contacts.contains_key(&addr) {
            let oldest = self
                .contacts
                .iter()
                .min_by_key(|(_, c)| c.heard.map(|(_, at)| at))
                .map(|(addr, _)| *addr);
            if let Some(oldest) = oldest {
                self.contacts.remove(&oldest);
            }
        }
        self.contacts.entry(addr).or_default()
    }

    /// When we last heard from `process` (this very process) ourselves.
    pub(super) fn heard_from(&self, process: &ProcessId) -> Option<Duration> {
        self.contacts
            .get(&process.addr)
            .and_then(|c| c.heard)
            .filter(|(p, _)| p == process)
            .map(|(_, at)| at)
    }

    /// How long a live member can go unheard by us in a quiet cluster: each
    /// node probes every other once per round of the member list.
    pub(super) fn silence_limit(&self) -> Duration {
        let swim = &self.settings.swim;
        let rounds = u32::try_from(self.peers.len().saturating_add(2)).unwrap_or(u32::MAX);
        (swim.probe_period.saturating_mul(rounds.saturating_mul(2)))
            .saturating_add(swim.suspect_to_down_after)
    }

    /// A "down" verdict about `process` that we act on only later:
    /// - any verdict from silence waits one probe period, the time a falsely
    ///   suspected member (a few lost datagrams) needs for its refutation to
    ///   arrive;
    /// - one that arrived less than a suspicion period after we heard from the
    ///   member ourselves waits a suspicion period: SWIM's own probing could
    ///   not have concluded that, so it is gossip, probably stale (a healed
    ///   partition), and a refutation usually follows.
    ///
    /// A real crash is barely delayed: its host refuses the reconnect, which
    /// is proof, and proof is never doubted.
    pub(super) fn verdict_doubtful(&self, process: &ProcessId, down_at: Duration) -> bool {
        if self.gone.contains(process) {
            return false;
        }
        // Heard from since the verdict: SWIM is looking again.
        let rechecking = self
            .peers
            .get(&process.addr)
            .filter(|peer| peer.id.process == *process)
            .and_then(|peer| peer.recheck)
            .is_some_and(|(since, _)| self.now < since + self.recheck_window());
        if rechecking {
            return true;
        }
        let swim = &self.settings.swim;
        let heard_just_before = self
            .heard_from(process)
            .is_some_and(|at| down_at.saturating_sub(at) < swim.suspect_to_down_after);
        let wait = if heard_just_before {
            swim.suspect_to_down_after.max(swim.probe_period)
        } else {
            swim.probe_period
        };
        self.now < down_at.saturating_add(wait)
    }

    /// This host's wall clock, as the process's start time plus the time
    /// since: the node reads no clock of its own.
    pub(super) fn wall_now_us(&self) -> u64 {
        let since_start = self.now.saturating_sub(self.started_at).as_micros();
        self.me
            .incarnation
            .saturating_add(u64::try_from(since_start).unwrap_or(u64::MAX))
    }

    /// Someone claims an identity at our own address that stands above ours
    /// (a forgery, or a corrupted datagram): renew above it, paced like any
    /// renewal. Until then the others may take the claim for a restart.
    pub(super) fn answer_rival_claim(&mut self) {
        let Some(rival) = self.claims.take_rival() else {
            return;
        };
        let current = *self.swim.identity();
        if rival.standing_key() <= current.standing_key() {
            return;
        }
        if self
            .rival
            .is_none_or(|r| rival.standing_key() > r.standing_key())
        {
            self.rival = Some(rival);
        }
        self.schedule_renewal();
    }

    /// A datagram from a process that stands below the identity we hold down
    /// at its address: foca counts it down too, and answers "you are down"
    /// without saying which identity it must beat. Renewing one step a
    /// second, it stayed out for as long as the gap: a minute behind a bump a
    /// flipped bit raised (corrupted seed 201,010,612), or behind the renewals
    /// of its own predecessor after a restart. So we announce to the identity
    /// held down, at that address: the process's codec sees a claim at its
    /// address that stands above it, and it renews above that in one step
    /// (`answer_rival_claim`). At most once per [`RENEW_EVERY`] per address,
    /// the pace of the renewals it prompts.
    pub(super) fn show_sender_the_identity_held_down(
        &mut self,
        from: SocketAddr,
        header: &foca::Header<MemberId>,
    ) {
        let sender = header.src;
        if sender.process.addr != from {
            return;
        }
        let now = self.now;
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        let due = peer
            .shown_held_down_at
            .is_none_or(|at| now >= at.saturating_add(RENEW_EVERY));
        if peer.alive || !due || peer.id.standing_key() <= sender.standing_key() {
            return;
        }
        // foca's record decides: the peer map follows its notifications.
        let held_down = self
            .swim
            .iter_membership_state()
            .find(|m| m.id().process.addr == from)
            .filter(|m| {
                m.state() == foca::State::Down && m.id().standing_key() > sender.standing_key()
            })
            .map(|m| *m.id());
        let Some(held_down) = held_down else {
            return;
        };
        peer.shown_held_down_at = Some(now);
        // foca refuses only ourselves as a target, and this is not us.
        let _ = self.swim.announce(held_down, &mut self.swim_io);
    }

    /// foca was told we are down (by the cluster, or by a forged or corrupted
    /// datagram): renew the identity, but at most once per [`RENEW_EVERY`], so
    /// a flood of such datagrams cannot drive the counter to its end.
    pub(super) fn schedule_renewal(&mut self) {
        let at = self.last_renewal.map_or(self.now, |last| {
            self.now.max(last.saturating_add(RENEW_EVERY))
        });
        self.renew_at.get_or_insert(at);
    }

    pub(super) fn maybe_renew(&mut self) {
        let Some(at) = self.renew_at else {
            return;
        };
        if self.now < at || self.life != Life::Running {
            return;
        }
        self.renew_at = None;
        self.last_renewal = Some(self.now);
        let current = *self.swim.identity();
        let rival = self.rival.take();
        let Some(renewed) = current.renewed(rival.as_ref(), self.wall_now_us()) else {
            self.emit(Event::IdentityRenewalsExhausted);
            return;
        };
        if rival.is_some_and(|r| r.standing_key() >= renewed.standing_key()) {
            // Beaten only as far as the clock allows: again in a second.
            self.rival = rival;
            self.schedule_renewal();
        }
        let bump = renewed.bump;
        match self.swim.change_identity(renewed, &mut self.swim_io) {
            Ok(()) => {
                // foca starts over disconnected under the new identity, and only
                // reconnects once a message reaches it: announce (see
                // `retry_join`) until foca says it is active again.
                self.alone_since = Some(self.now);
                self.next_join_attempt = self.now;
                self.emit(Event::Rejoined { bump });
            }
            Err(e) => self.emit(Event::SwimError {
                during: SwimStep::RenewIdentity,
                error: e.to_string(),
            }),
        }
    }
}

impl Node {
    /// Proof about `process` frees the locks we hold for spectators that SWIM
    /// never showed us (joins lost, or a damaged identity taken for a
    /// restart): `process` itself if `itself`, and when nothing listens at
    /// its address any more, every earlier process there too.
    fn free_spectators_gone(&mut self, process: ProcessId, evidence: GoneEvidence, itself: bool) {
        let refused = evidence == GoneEvidence::ConnectionRefused;
        for spectator in self.served_spectators() {
            let gone = (itself && spectator == process)
                || (refused
                    && spectator.addr == process.addr
                    && spectator.incarnation < process.incarnation);
            if gone && !self.gone.contains(&spectator) {
                self.emit(Event::ProcessGone {
                    member: spectator,
                    evidence,
                });
                self.gone.insert(spectator);
                self.drop_served_for(spectator, true);
            }
        }
    }

    /// The shell's proof that `process` is gone: declare it down through SWIM
    /// at once (the others learn it by gossip), rather than after the
    /// suspicion SWIM needs when all it has is silence.
    pub(super) fn on_peer_gone(&mut self, process: ProcessId, evidence: GoneEvidence) {
        if process == self.me {
            return;
        }
        if evidence == GoneEvidence::ConnectionRefused && !self.settings.refused_connection_is_proof
        {
            return;
        }
        if self.gone.contains(&process) {
            // Known gone, but the refusal is news for an earlier process at
            // the address that we began to serve since: a spectator's ask that
            // a partition held back until after its restart and its
            // successor's leave (outsider seed 211,008,452) held the lock for
            // a process that no longer existed.
            if evidence == GoneEvidence::ConnectionRefused {
                self.free_spectators_gone(process, evidence, false);
            }
            return;
        }
        let Some(peer) = self
            .peers
            .get(&process.addr)
            .copied()
            .filter(|peer| peer.id.process == process)
        else {
            // A spectator we hold locks for that SWIM never showed us (its
            // joins were lost, or it is known under a damaged address): the
            // proof frees them all the same, or they stay held for a process
            // that no longer exists.
            self.free_spectators_gone(process, evidence, true);
            // SWIM heard of a later process at the address before our stream
            // did: the proof still lifts the leases that hold the dead one's
            // seat, or the vote on its removal waits them out.
            let seated = self
                .active_set
                .as_ref()
                .is_some_and(|s| s.contains(&process));
            if seated && !self.gone.contains(&process) {
                self.record_gone(process, evidence);
            }
            return;
        };
        if evidence == GoneEvidence::ConnectionRefused {
            // Nothing listens at the address: an earlier process there that
            // we still serve is gone as well.
            self.free_spectators_gone(process, evidence, false);
        }
        self.record_gone(process, evidence);
        if !peer.alive {
            // Gossip declared it down first: our proof still lifts the doubt
            // and the leases that would hold its seat.
            return;
        }
        // Tell the others too: they may not have a connection to it. foca
        // fails an update only about our own identity (this is a peer's) or
        // when encoding it to broadcast, which cannot fail into a Vec.
        let _ = self.swim.apply_many(
            std::iter::once(foca::Member::down(peer.id)),
            true,
            &mut self.swim_io,
        );
        self.spread_news();
    }

    /// Remember `process` as proved gone: its leases protect nothing now.
    fn record_gone(&mut self, process: ProcessId, evidence: GoneEvidence) {
        // A member that announced its leave is expected to be gone: the proof
        // still counts, but the log already said it LEFT.
        if !self.leaving_peers.contains_key(&process) {
            self.emit(Event::ProcessGone {
                member: process,
                evidence,
            });
        }
        // Only the seated and the known need remembering.
        let seated = |p: &ProcessId| self.active_set.as_ref().is_some_and(|s| s.contains(p));
        let known: BTreeSet<ProcessId> = self.peers.values().map(|p| p.id.process).collect();
        self.gone.retain(|p| seated(p) || known.contains(p));
        self.gone.insert(process);
        self.drop_served_for(process, true);
        // A lease of the dead process may have put the next proposal off.
        self.next_proposal_at = self.next_proposal_at.min(self.now);
    }

    /// Keep the shell watching the members of our active set, if we hold a
    /// seat, and the next few live processes after us in address order, so that
    /// every process has about as many watchers whatever the cluster's size.
    pub(super) fn update_watch(&mut self) {
        const RING: usize = 8;
        let mut live: Vec<ProcessId> = self
            .live_processes()
            .into_iter()
            .filter(|p| *p != self.me && self.plausible(p.addr))
            .collect();
        live.sort();
        let after = live.partition_point(|p| *p < self.me);
        let ring = live[after..]
            .iter()
            .chain(&live[..after])
            .take(RING)
            .copied();
        let mut wanted: Vec<ProcessId> = self
            .active_set
            .iter()
            .filter(|s| s.contains(&self.me))
            .flat_map(|s| s.members.iter().copied())
            .filter(|p| *p != self.me && self.plausible(p.addr))
            .chain(ring)
            .collect();
        let mut seen = BTreeSet::new();
        wanted.retain(|p| seen.insert(*p));
        if wanted != self.watching {
            self.watching = wanted.clone();
            self.out.push(Output::Watch(wanted));
        }
    }
}

/// The shortest time between two renewals of this node's SWIM identity.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
