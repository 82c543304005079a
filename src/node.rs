//! The sans-IO node: SWIM membership (foca), the active set and Ricart–Agrawala,
//! glued together.
//!
//! A `Node` never touches a socket, a clock or a global random generator. The
//! caller hands it `Input`s with the current time and carries out the `Output`s
//! it queues: datagrams and messages to send, timers to arm, events to log. The
//! tokio shell (`crate::runtime`) and the simulator (`crate::sim`) drive the very
//! same code.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use bytes::Bytes;
use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::event::{Event, ViewSource};
use crate::membership::gossip::{Gossip, GossipHandler};
use crate::membership::identity::MemberId;
use crate::membership::settings::SwimSettings;
use crate::protocol::active_set::ActiveSet;
use crate::protocol::clock::LamportClock;
use crate::protocol::ids::ProcessId;
use crate::protocol::message::{Body, Envelope};
use crate::protocol::mutex::{
    Decision, DeferReason, DeferredRequest, Mutations, ReplyOutcome, RicartAgrawala, State,
};
use crate::protocol::reconfig::{Acceptor, Ballot, Proposal, ProposalStep, Vote};

type Swim = Foca<MemberId, PostcardCodec, SmallRng, GossipHandler>;

/// Everything a node's behaviour depends on besides its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSettings {
    /// Most members of the active set (only the founder's value counts).
    pub max_active: u32,
    /// How long the critical section is held.
    pub hold: Duration,
    /// A node that finds no cluster waits this long before founding its own, so a
    /// restarted node is found by its old cluster first.
    pub found_after: Duration,
    /// While no member answers, announce to the seeds this often.
    pub retry_join_every: Duration,
    /// A member that is not first in line to change the active set waits this long
    /// before proposing the change itself.
    pub takeover_after: Duration,
    /// A proposal without a quorum after this long is abandoned and retried.
    pub proposal_timeout: Duration,
    /// A leaving member waits this long at most for the set without it to be decided.
    pub leave_timeout: Duration,
    /// Housekeeping period: join retries, founding, proposal timeouts.
    pub tick: Duration,
    pub swim: SwimSettings,
    pub mutations: Mutations,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            max_active: 3,
            hold: Duration::from_millis(1000),
            found_after: Duration::from_millis(4000),
            retry_join_every: Duration::from_millis(1000),
            takeover_after: Duration::from_millis(1000),
            proposal_timeout: Duration::from_millis(500),
            leave_timeout: Duration::from_millis(3000),
            tick: Duration::from_millis(100),
            swim: SwimSettings::default(),
            mutations: Mutations::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerId {
    Swim(foca::Timer<MemberId>),
    Tick,
    Exit { request_id: u64 },
}

#[derive(Clone, Debug)]
pub enum Input {
    Datagram {
        from: SocketAddr,
        data: Bytes,
    },
    Message(Envelope),
    /// The stream to this peer broke and is up again: what was in flight on the
    /// old one may be lost.
    Reconnected {
        peer: SocketAddr,
    },
    Timer(TimerId),
    /// The user asked for the critical section.
    RequestCs,
    /// The user asked to leave the cluster.
    Leave,
}

#[derive(Clone, Debug)]
pub enum Output {
    Datagram {
        to: SocketAddr,
        data: Bytes,
    },
    Message(Envelope),
    Timer {
        at: Duration,
        timer: TimerId,
    },
    Event(Event),
    /// The node has left the cluster; nothing more will come out of it.
    Left,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Running,
    /// Leave requested inside the critical section: leave on exit.
    LeaveAfterExit,
    Leaving {
        deadline: Duration,
    },
    Left,
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    id: MemberId,
    alive: bool,
    /// A restart was just logged; the MemberUp that follows needs no second line.
    restart_logged: bool,
}

/// A snapshot for the `status` command.
#[derive(Clone, Debug)]
pub struct Status {
    pub me: ProcessId,
    pub live_members: Vec<ProcessId>,
    pub view: Option<ActiveSet>,
    pub spectators: Vec<ProcessId>,
    pub clock: u64,
    pub state: String,
    pub queued: usize,
}

pub struct Node {
    me: ProcessId,
    settings: NodeSettings,
    seeds: Vec<SocketAddr>,
    now: Duration,
    clock: LamportClock,
    swim: Swim,
    swim_io: AccumulatingRuntime<MemberId>,
    gossip_in: Receiver<Gossip>,
    peers: BTreeMap<SocketAddr, Peer>,
    leaving_peers: BTreeSet<ProcessId>,
    view: Option<ActiveSet>,
    acceptor: Acceptor,
    proposal: Option<Proposal>,
    highest_round: u32,
    change_wanted_since: Option<Duration>,
    next_proposal_at: Duration,
    ra: RicartAgrawala,
    /// When each request still to be issued was asked for.
    queued: VecDeque<Duration>,
    /// When the request in progress was asked for.
    current_asked_at: Duration,
    /// When the critical section in progress should end.
    hold_until: Duration,
    pending_merge: Option<ActiveSet>,
    /// Requests from the cluster we merge into, held until we have joined it.
    requests_after_merge: Vec<(ProcessId, u64, u64, ActiveSet)>,
    life: Life,
    next_join_attempt: Duration,
    /// Seeds that have not answered yet: we keep announcing to each until it does,
    /// since whoever reached us first may be an island of its own.
    unheard_seeds: BTreeSet<SocketAddr>,
    /// When a seedless node founds its own cluster (see `maybe_found`).
    found_at: Option<Duration>,
    alone_since: Option<Duration>,
    last_alone_warning: Duration,
    reported_position: Option<usize>,
    loopback: VecDeque<Envelope>,
    /// The last answer (reply or newer view) sent to each requester, resent if
    /// the stream broke: a lost grant would leave the requester waiting forever.
    last_answer: BTreeMap<ProcessId, Body>,
    rng: SmallRng,
    out: Vec<Output>,
}

impl Node {
    /// A node for process `me`, joining through `seeds` (none: found a cluster).
    /// `seed` feeds every random choice, so a run can be replayed.
    pub fn new(
        me: ProcessId,
        seeds: Vec<SocketAddr>,
        settings: NodeSettings,
        seed: u64,
        now: Duration,
    ) -> Self {
        let (handler, gossip_in) = GossipHandler::new();
        let swim = Foca::with_custom_broadcast(
            MemberId::new(me),
            settings.swim.to_foca(),
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
            handler,
        );
        let seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| *s != me.addr).collect();
        let unheard_seeds: BTreeSet<SocketAddr> = seeds.iter().copied().collect();
        let unheard_seeds_empty = unheard_seeds.is_empty();
        let mut node = Self {
            me,
            seeds,
            now,
            clock: LamportClock::default(),
            swim,
            swim_io: AccumulatingRuntime::new(),
            gossip_in,
            peers: BTreeMap::new(),
            leaving_peers: BTreeSet::new(),
            view: None,
            acceptor: Acceptor::new(1),
            proposal: None,
            highest_round: 0,
            change_wanted_since: None,
            next_proposal_at: now,
            ra: RicartAgrawala::new(me),
            queued: VecDeque::new(),
            current_asked_at: now,
            hold_until: now,
            pending_merge: None,
            requests_after_merge: Vec::new(),
            life: Life::Running,
            next_join_attempt: now,
            found_at: unheard_seeds_empty.then_some(now + settings.found_after),
            unheard_seeds,
            alone_since: Some(now),
            last_alone_warning: now,
            reported_position: None,
            loopback: VecDeque::new(),
            last_answer: BTreeMap::new(),
            rng: SmallRng::seed_from_u64(seed ^ 0x5eed_0f7a),
            out: Vec::new(),
            settings,
        };
        let found_in = node.seeds.is_empty().then_some(node.settings.found_after);
        node.emit(Event::Started {
            me,
            seeds: node.seeds.clone(),
            found_in,
        });
        node.on_tick();
        node
    }

    pub fn me(&self) -> ProcessId {
        self.me
    }

    pub fn view(&self) -> Option<&ActiveSet> {
        self.view.as_ref()
    }

    pub fn mutex_state(&self) -> &State {
        self.ra.state()
    }

    pub fn has_left(&self) -> bool {
        self.life == Life::Left
    }

    /// Requests asked for and not yet served (queued, waiting or holding).
    pub fn outstanding_requests(&self) -> usize {
        self.queued.len() + usize::from(!matches!(self.ra.state(), State::Idle))
    }

    /// The value this process accepted for the next epoch, if any (for the simulator).
    pub fn acceptor(&self) -> &Acceptor {
        &self.acceptor
    }

    pub fn status(&self) -> Status {
        let state = match self.ra.state() {
            State::Idle => "idle".to_string(),
            State::Waiting(p) => format!(
                "waiting: request #{} ts={} under epoch {}, replies owed by {}",
                p.id,
                p.timestamp,
                p.epoch,
                crate::protocol::active_set::display_list(
                    &p.awaiting.iter().copied().collect::<Vec<_>>()
                )
            ),
            State::Holding { fence, .. } => format!("in the critical section, fence {fence}"),
        };
        Status {
            me: self.me,
            live_members: self.live_processes(),
            view: self.view.clone(),
            spectators: self.spectators(),
            clock: self.clock.now(),
            state,
            queued: self.queued.len(),
        }
    }

    /// Everything the node wants done since the last call, in order.
    pub fn drain_outputs(&mut self) -> std::vec::Drain<'_, Output> {
        self.out.drain(..)
    }

    pub fn handle(&mut self, now: Duration, input: Input) {
        self.now = now;
        if self.life == Life::Left {
            return;
        }
        match input {
            Input::Datagram { from, data } => {
                self.answer_old_incarnation(&data);
                if let Err(e) = self.swim.handle_data(&data, &mut self.swim_io) {
                    self.emit(Event::Dropped {
                        what: "datagram",
                        from: from.to_string(),
                        reason: e.to_string(),
                    });
                }
            }
            Input::Message(envelope) => self.on_message(envelope),
            Input::Reconnected { peer } => self.on_reconnected(peer),
            Input::Timer(timer) => self.on_timer(timer),
            Input::RequestCs => self.on_request_cs(),
            Input::Leave => self.on_leave(),
        }
        self.settle();
    }

    /// Run until nothing more follows from the last input.
    fn settle(&mut self) {
        loop {
            self.drain_swim();
            if let Some(envelope) = self.loopback.pop_front() {
                self.on_message(envelope);
                continue;
            }
            if self.life == Life::Left {
                break;
            }
            self.maybe_reconfigure();
            self.maybe_issue();
            if self.loopback.is_empty() && self.swim_io.backlog() == 0 {
                break;
            }
        }
    }

    /// A datagram for an earlier process at our address means its cluster is out
    /// there and has not noticed the restart: announce to the sender now rather
    /// than wait to be found (or, with no seeds, found a second cluster).
    fn answer_old_incarnation(&mut self, data: &[u8]) {
        let Ok(header) = foca::Codec::<MemberId>::decode_header(&mut PostcardCodec, data) else {
            return;
        };
        if header.dst.process.addr == self.me.addr && header.dst.process != self.me {
            let _ = self.swim.announce(header.src, &mut self.swim_io);
        }
    }

    fn emit(&mut self, event: Event) {
        self.out.push(Output::Event(event));
    }

    fn send(&mut self, to: ProcessId, body: Body) {
        let envelope = Envelope {
            from: self.me,
            to,
            clock: self.clock.tick(),
            body,
        };
        if to == self.me {
            self.loopback.push_back(envelope);
        } else {
            self.out.push(Output::Message(envelope));
        }
    }

    // ---- membership ------------------------------------------------------

    fn drain_swim(&mut self) {
        while let Some((to, data)) = self.swim_io.to_send() {
            self.out.push(Output::Datagram {
                to: to.process.addr,
                data,
            });
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
                Gossip::View(view) => self.adopt(view, ViewSource::Gossip),
            }
        }
        while let Some(notification) = self.swim_io.to_notify() {
            self.on_swim_notification(notification);
        }
    }

    fn on_swim_notification(&mut self, notification: OwnedNotification<MemberId>) {
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
            OwnedNotification::Defunct => {}
        }
    }

    fn on_member_up(&mut self, id: MemberId) {
        let member = id.process;
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
                        restart_logged: false,
                    },
                );
                self.emit(Event::MemberJoined { member });
            }
        }
        self.welcome(member);
        self.spread_news();
    }

    /// Tell a newcomer which cluster and active set it is in: the members of the
    /// set do, so it learns at once, not when gossip happens to reach it.
    fn welcome(&mut self, member: ProcessId) {
        if let Some(view) = self.view.clone()
            && view.contains(&self.me)
        {
            self.send(member, Body::Decided { view });
        }
    }

    fn on_member_down(&mut self, id: MemberId) {
        let member = id.process;
        let Some(peer) = self.peers.get_mut(&member.addr) else {
            return;
        };
        if peer.id != id || !peer.alive {
            return;
        }
        peer.alive = false;
        if self.leaving_peers.contains(&member) {
            self.emit(Event::MemberLeft { member });
        } else {
            self.emit(Event::MemberFailed { member });
        }
        self.spread_news();
    }

    /// Gossip a membership change now rather than at the next periodic round:
    /// the rest of the cluster learns of a join or a failure a round sooner.
    fn spread_news(&mut self) {
        let _ = self.swim.gossip(&mut self.swim_io);
    }

    fn on_rename(&mut self, previous: MemberId, id: MemberId) {
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
                restart_logged: restarted,
            },
        );
        if restarted {
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

    fn note_leaving(&mut self, process: ProcessId) {
        if process != self.me && self.leaving_peers.insert(process) {
            self.emit(Event::PeerLeaving { member: process });
        }
    }

    /// Alive, not leaving, and the current process at its address: a candidate
    /// for a free seat needs this positive evidence.
    fn is_usable(&self, process: &ProcessId) -> bool {
        if *process == self.me {
            return matches!(self.life, Life::Running | Life::LeaveAfterExit);
        }
        !self.leaving_peers.contains(process)
            && self
                .peers
                .get(&process.addr)
                .is_some_and(|peer| peer.id.process == *process && peer.alive)
    }

    /// Whether a member keeps its seat: only evidence removes it (declared down,
    /// leaving, or replaced by a restart). A member we have not heard of yet, as
    /// happens right after joining, keeps its seat.
    fn keeps_seat(&self, process: &ProcessId) -> bool {
        if *process == self.me {
            return matches!(self.life, Life::Running | Life::LeaveAfterExit);
        }
        if self.leaving_peers.contains(process) {
            return false;
        }
        match self.peers.get(&process.addr) {
            None => true,
            Some(peer) if peer.id.process == *process => peer.alive,
            Some(peer) => peer.id.process.incarnation < process.incarnation,
        }
    }

    fn live_processes(&self) -> Vec<ProcessId> {
        self.peers
            .values()
            .filter(|p| p.alive)
            .map(|p| p.id.process)
            .collect()
    }

    /// Usable processes without a seat, first in line first.
    fn spectators(&self) -> Vec<ProcessId> {
        let mut line: Vec<ProcessId> = self
            .live_processes()
            .into_iter()
            .chain(std::iter::once(self.me))
            .filter(|p| self.is_usable(p) && !self.view.as_ref().is_some_and(|v| v.contains(p)))
            .collect();
        line.sort_by_key(|p| p.seat_key());
        line
    }

    // ---- timers ----------------------------------------------------------

    fn on_timer(&mut self, timer: TimerId) {
        match timer {
            TimerId::Swim(timer) => {
                // Errors here are foca's own sanity checks; its state stays usable.
                let _ = self.swim.handle_timer(timer, &mut self.swim_io);
            }
            TimerId::Tick => self.on_tick(),
            TimerId::Exit { request_id } => self.exit_cs(request_id),
        }
    }

    fn on_tick(&mut self) {
        self.out.push(Output::Timer {
            at: self.now + self.settings.tick,
            timer: TimerId::Tick,
        });
        self.retry_join();
        self.maybe_found();
        if let Some(proposal) = &self.proposal
            && self.now >= proposal.started + self.settings.proposal_timeout
        {
            self.abandon_proposal("no quorum answered in time");
        }
        if let Life::Leaving { deadline } = self.life
            && self.now >= deadline
        {
            self.emit(Event::LeaveTimedOut);
            self.finish_leave();
        }
    }

    /// Keep announcing to each seed until it answers: whoever reached us first may
    /// be in an island of its own. And foca does nothing while it is not
    /// connected (no live member, or just renewed), so then announce to every
    /// address we knew too: a late seed or a healed partition brings us back.
    fn retry_join(&mut self) {
        let alone = self.alone_since.is_some();
        if (self.unheard_seeds.is_empty() && !alone)
            || self.life != Life::Running
            || self.now < self.next_join_attempt
        {
            return;
        }
        self.next_join_attempt = self.now + self.settings.retry_join_every;
        let mut targets = self.unheard_seeds.clone();
        if alone {
            targets.extend(self.seeds.iter().copied());
            targets.extend(self.peers.keys().copied());
        }
        for target in targets {
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
    fn maybe_found(&mut self) {
        let Some(found_at) = self.found_at else {
            return;
        };
        if self.view.is_some() || self.life != Life::Running || self.now < found_at {
            return;
        }
        self.found_at = None;
        self.emit(Event::Founded { cluster: self.me });
        self.install(
            ActiveSet::founding(self.me, self.settings.max_active),
            ViewSource::Founded,
        );
    }

    // ---- messages --------------------------------------------------------

    fn on_message(&mut self, envelope: Envelope) {
        let Envelope {
            from,
            to,
            clock,
            body,
        } = envelope;
        if to != self.me {
            self.emit(Event::Dropped {
                what: body.kind(),
                from: format!("{from:?}"),
                reason: format!("addressed to {to:?}, an earlier process at this address"),
            });
            return;
        }
        if let Some(peer) = self.peers.get(&from.addr)
            && peer.id.process.incarnation > from.incarnation
        {
            self.emit(Event::Dropped {
                what: body.kind(),
                from: format!("{from:?}"),
                reason: "sent by a process that has since restarted".into(),
            });
            return;
        }
        self.clock.merge(clock);
        match body {
            Body::Request {
                request_id,
                timestamp,
                view,
            } => self.on_request(from, request_id, timestamp, view),
            Body::Reply {
                request_id,
                epoch,
                fence_seq,
                deferred: _,
            } => self.on_reply(from, request_id, epoch, fence_seq),
            Body::NewerView { view, .. } | Body::Decided { view } => {
                self.adopt(view, ViewSource::Message)
            }
            Body::Prepare { current, ballot } => self.on_prepare(from, current, ballot),
            Body::Accept {
                current,
                ballot,
                members,
            } => self.on_accept(from, current, ballot, members),
            Body::Promise {
                epoch,
                ballot,
                accepted,
            } => self.on_promise(from, epoch, ballot, accepted),
            Body::Accepted { epoch, ballot } => self.on_accepted(from, epoch, ballot),
            Body::Nack { epoch, promised } => self.on_nack(epoch, promised),
            Body::Leaving => self.note_leaving(from),
        }
    }

    fn on_reconnected(&mut self, peer: SocketAddr) {
        // Whatever was in flight on the old stream may be gone; everything resent
        // here is harmless to receive twice.
        let answers: Vec<(ProcessId, Body)> = self
            .last_answer
            .iter()
            .filter(|(p, _)| p.addr == peer)
            .map(|(p, body)| (*p, body.clone()))
            .collect();
        for (to, body) in answers {
            self.send(to, body);
        }
        if let Some(pending) = self.ra.pending().cloned()
            && let Some(view) = self.view.clone()
        {
            for member in pending.awaiting.iter().filter(|m| m.addr == peer) {
                self.send(
                    *member,
                    Body::Request {
                        request_id: pending.id,
                        timestamp: pending.timestamp,
                        view: view.clone(),
                    },
                );
            }
        }
        if let Some(proposal) = self.proposal.clone() {
            for member in proposal.base.members.iter().filter(|m| m.addr == peer) {
                let body = match proposal.accepting() {
                    Some(members) => Body::Accept {
                        current: proposal.base.clone(),
                        ballot: proposal.ballot,
                        members: members.to_vec(),
                    },
                    None => Body::Prepare {
                        current: proposal.base.clone(),
                        ballot: proposal.ballot,
                    },
                };
                self.send(*member, body);
            }
        }
    }

    // ---- the active set --------------------------------------------------

    /// Take on an active set someone else decided, if it is newer than ours (or
    /// belongs to an older cluster that ours merges into).
    fn adopt(&mut self, view: ActiveSet, source: ViewSource) {
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
    fn merge_into(&mut self, view: ActiveSet) {
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

    fn install(&mut self, view: ActiveSet, source: ViewSource) {
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
                what: "setting",
                from: "max_active".into(),
                reason: format!(
                    "this node asks for {} but the cluster was founded with {}",
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
    fn maybe_reconfigure(&mut self) {
        let Some(view) = self.view.clone() else {
            return;
        };
        if self.settings.mutations.local_views {
            // Broken on purpose (tests only): every node installs the set its own
            // member list suggests, with no agreement, as naive designs do.
            let wanted = view.desired_members(|p| self.keeps_seat(p), &self.spectators());
            if wanted != view.members && !wanted.is_empty() {
                self.install(view.successor(wanted), ViewSource::Decided);
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
        let since = *self.change_wanted_since.get_or_insert(self.now);
        if self.preferred_proposer(&view) != Some(self.me)
            && self.now < since + self.settings.takeover_after
        {
            return;
        }
        self.start_proposal(view, wanted);
    }

    /// Who should propose the next change, so members rarely duel: a leaving member
    /// hands over its own seat; otherwise the first usable member in seat order.
    fn preferred_proposer(&self, view: &ActiveSet) -> Option<ProcessId> {
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

    fn start_proposal(&mut self, view: ActiveSet, wanted: Vec<ProcessId>) {
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

    fn abandon_proposal(&mut self, reason: &'static str) {
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
    fn acceptor_for(&mut self, from: ProcessId, current: &ActiveSet) -> bool {
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

    fn on_prepare(&mut self, from: ProcessId, current: ActiveSet, ballot: Ballot) {
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

    fn on_accept(
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

    fn on_promise(
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

    fn on_accepted(&mut self, from: ProcessId, epoch: u64, ballot: Ballot) {
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

    fn on_nack(&mut self, epoch: u64, promised: Ballot) {
        let outvoted = self
            .proposal
            .as_ref()
            .is_some_and(|p| p.epoch() == epoch && promised > p.ballot);
        if outvoted {
            self.highest_round = self.highest_round.max(promised.round);
            self.abandon_proposal("an acceptor promised a higher ballot");
        }
    }

    // ---- Ricart–Agrawala -------------------------------------------------

    fn on_request_cs(&mut self) {
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
    fn maybe_issue(&mut self) {
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

    fn report_waiting_for_seat(&mut self) {
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

    fn send_requests(
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

    fn on_request(&mut self, from: ProcessId, request_id: u64, timestamp: u64, view: ActiveSet) {
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

    fn send_reply(&mut self, to: ProcessId, request: DeferredRequest, deferred: bool) {
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

    fn send_newer_view(&mut self, to: ProcessId, request_id: u64) {
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

    fn on_reply(&mut self, from: ProcessId, request_id: u64, epoch: u64, fence_seq: u64) {
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

    fn try_enter(&mut self) {
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

    fn exit_cs(&mut self, request_id: u64) {
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

    fn answer_deferred(&mut self, requester: ProcessId, deferred: DeferredRequest) {
        let still_valid = self.view.as_ref().is_some_and(|v| {
            v.epoch == deferred.epoch && v.contains(&requester) && v.contains(&self.me)
        });
        if still_valid || self.settings.mutations.skip_view_check {
            self.send_reply(requester, deferred, true);
        } else {
            self.send_newer_view(requester, deferred.request_id);
        }
    }

    // ---- leaving ---------------------------------------------------------

    fn on_leave(&mut self) {
        match self.life {
            Life::Running if self.ra.is_holding() => self.life = Life::LeaveAfterExit,
            Life::Running => self.begin_leave(),
            _ => {}
        }
    }

    /// Stop asking, release everyone we held back, tell the others, and hand the
    /// seat over before going: peers then log a leave, and the set keeps its quorum.
    fn begin_leave(&mut self) {
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

    fn finish_leave(&mut self) {
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
