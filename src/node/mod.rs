//! The sans-IO node: SWIM membership (foca), the active set and Ricart–Agrawala,
//! glued together.
//!
//! A `Node` never touches a socket, a clock or a global random generator. The
//! caller hands it `Input`s with the current time and carries out the `Output`s
//! it queues: datagrams and messages to send, timers to arm, events to log. The
//! tokio shell (`crate::runtime`) and the simulator (`crate::sim`) drive the very
//! same code.

mod active_set;
mod leave;
mod membership;
mod mutex;

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

    /// Requests asked for and not yet served (queued, waiting or holding).
    pub fn outstanding_requests(&self) -> usize {
        self.queued.len() + usize::from(!matches!(self.ra.state(), State::Idle))
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
}
