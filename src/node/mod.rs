//! The sans-IO node: SWIM membership (foca), the active set and one
//! Ricart–Agrawala instance per lock name, glued together.
//!
//! A `Node` never touches a socket, a clock or a global random generator. The
//! caller hands it `Input`s with the current time and carries out the `Output`s
//! it queues: datagrams and messages to send, timers to arm, grants and losses
//! to pass on to clients, events to log. The tokio shell (`crate::runtime`) and
//! the simulator (`crate::sim`) drive the very same code.
//!
//! Clients hold locks through tickets: `Acquire` asks, `Granted` answers with the
//! fence, `Release` gives the ticket back (exiting if it held the lock, leaving
//! the line if it still waited), and `Lost` tells a client its ticket ended
//! without it.
//!
//! The jobs are split by file: [`swim`] (who is alive), [`evidence`] (what this
//! node saw itself, and proof that a process is gone), [`seating`] (the active
//! set and its Paxos rounds), [`locking`] (Ricart–Agrawala per lock and the
//! tickets), [`lock_table`] (which locks keep their whole state), [`proxy`]
//! (spectators served through members), [`leaving`], [`recovery`]
//! (`--data-dir`).
//!
//! Long because it is the node's one switchboard: the input match, the outputs, and
//! the status it reports; each concern it dispatches to lives in its own file.

mod evidence;
mod leaving;
mod lock_table;
mod locking;
mod proxy;
mod recovery;
mod seating;
mod swim;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use bytes::Bytes;
use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec};

use crate::membership::codec::{CheckedCodec, Claims, Plausible};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::event::{
    DropReason, DropSource, DroppedWhat, Event, FailureCause, GoneEvidence, LossReason,
    RefusedReason, SetSource, SwimStep, Ticket,
};
use crate::membership::gossip::{Gossip, GossipHandler};
use crate::membership::identity::MemberId;
use crate::membership::settings::SwimSettings;
use crate::protocol::active_set::ActiveSet;
use crate::protocol::clock::LamportClock;
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::{Fence, LockName};
use crate::protocol::message::{Body, Envelope, HeldLock, LockRequest};
use crate::protocol::mutations::Mutations;
use crate::protocol::paxos::{Acceptor, MAX_ROUND_LEAD, Proposal};
use crate::protocol::ricart_agrawala::{RicartAgrawala, State};

pub use locking::{LocalHolder, LockStatus, PendingStatus, TicketProgress};
pub use proxy::PROXY_TICKETS;
pub use recovery::Durability;

type Swim = Foca<MemberId, CheckedCodec, SmallRng, GossipHandler>;

/// Everything a node's behaviour depends on besides its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSettings {
    /// Most members of the active set (only the founder's value counts).
    pub max_active: u32,
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
    /// A leaving member waits this long at most for the set without it to be
    /// decided (and for its clients to give their locks back).
    pub leave_timeout: Duration,
    /// Housekeeping period: join retries, founding, proposal timeouts, pauses.
    pub tick: Duration,
    /// A member that grants a request does not help remove the requester from the
    /// active set for this long; the requester counts the grant only within
    /// nine tenths of it (from when it asked, plus how long the grant was held
    /// back), which leaves room for clocks that run up to 10% apart.
    pub grant_lease: Duration,
    /// Take a refused connection to a member's address as proof the member
    /// is gone (its host's kernel answered that nothing listens there). Off
    /// where a firewall rejects connections between live nodes: then only a
    /// new incarnation at the address, or SWIM, says a member failed.
    pub refused_connection_is_proof: bool,
    pub swim: SwimSettings,
    /// Test-only switches; outside the crate's API without the `sim` feature.
    #[cfg(feature = "sim")]
    pub mutations: Mutations,
    #[cfg(not(feature = "sim"))]
    pub(crate) mutations: Mutations,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            max_active: 3,
            found_after: Duration::from_millis(4000),
            retry_join_every: Duration::from_millis(1000),
            takeover_after: Duration::from_millis(1000),
            proposal_timeout: Duration::from_millis(500),
            leave_timeout: Duration::from_millis(3000),
            tick: Duration::from_millis(100),
            grant_lease: Duration::from_millis(1000),
            refused_connection_is_proof: true,
            swim: SwimSettings::default(),
            mutations: Mutations::default(),
        }
    }
}

impl NodeSettings {
    /// How long after being asked a grant may be used by the requester.
    pub fn reply_lease(&self) -> Option<Duration> {
        (!self.mutations.ignore_grant_lease()).then(|| self.grant_lease * 9 / 10)
    }

    /// A gap in the housekeeping timer longer than this means the process was
    /// stopped, not merely busy.
    pub fn pause_threshold(&self) -> Duration {
        (self.tick * 3).max(Duration::from_millis(250))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerId {
    Swim(foca::Timer<MemberId>),
    Tick,
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
    /// A client asks for `lock`; `ticket` is the shell's, unique in this process.
    /// With `try_only`, it gives up at once unless the lock is free right now.
    Acquire {
        lock: LockName,
        ticket: Ticket,
        try_only: bool,
    },
    /// A client gives its ticket back: it exits the critical section if it held
    /// the lock, or leaves the line if it still waited.
    Release {
        lock: LockName,
        ticket: Ticket,
    },
    /// Ask the active set which locks their clients hold (answers come back
    /// as `Output::Holding`, one per member).
    AskWhoHolds {
        query: u64,
    },
    /// The shell has proof that `process` is gone (see `GoneEvidence`).
    PeerGone {
        process: ProcessId,
        evidence: GoneEvidence,
    },
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
    /// The ticket holds the lock, with this fence.
    Granted {
        lock: LockName,
        ticket: Ticket,
        fence: Fence,
    },
    /// The ticket ended without its client: a holder must stop using the lock
    /// (and still release the ticket once it has); a waiter is out of line.
    Lost {
        lock: LockName,
        ticket: Ticket,
        why: LossReason,
    },
    /// The ticket never got the lock and never will (a try that found it
    /// taken, or the node is leaving): its client is out of line.
    Refused {
        lock: LockName,
        ticket: Ticket,
        why: RefusedReason,
    },
    /// The processes whose death the shell should notice at once: keep a
    /// connection to each (the active set and the live members).
    Watch(Vec<ProcessId>),
    /// One member's answer to `AskWhoHolds`.
    Holding {
        query: u64,
        from: ProcessId,
        locks: Vec<HeldLock>,
    },
    /// Write this state to the data directory, with fsync, before carrying
    /// out any output that follows it (only with a data directory).
    Persist(crate::durable::DurableState),
    /// The node has left the cluster; nothing more will come out of it.
    Left,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Running,
    /// Leave requested while clients held locks: they were told, and the node
    /// leaves once they release (or at the deadline).
    LeaveAfterRelease {
        deadline: Duration,
    },
    Leaving {
        deadline: Duration,
    },
    Left,
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    id: MemberId,
    alive: bool,
    /// When SWIM last declared it down.
    down_at: Option<Duration>,
    /// Since that verdict we heard from it ourselves, and asked SWIM to
    /// look again (see `evidence::recheck_verdicts`): since when, and when
    /// we last asked.
    recheck: Option<(Duration, Option<Duration>)>,
    /// A restart was just logged; the MemberUp that follows needs no second line.
    restart_logged: bool,
    /// When we last showed a process below it the identity we hold down here
    /// (see `evidence::show_sender_the_identity_held_down`).
    shown_held_down_at: Option<Duration>,
}

/// The node's role, for status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Not in a cluster yet.
    Joining,
    Active,
    Spectator,
    Leaving,
}

/// A snapshot for `status`: data only, phrased by whoever shows it.
#[derive(Clone, Debug)]
pub struct Status {
    pub me: ProcessId,
    /// The node's time when it answered (the times below are on its clock).
    pub now: Duration,
    pub role: Role,
    pub live_members: Vec<ProcessId>,
    pub active_set: Option<ActiveSet>,
    pub spectators: Vec<ProcessId>,
    pub clock: u64,
    pub locks: Vec<LockStatus>,
}

/// The last answer sent to a requester for one lock, resent if the stream broke:
/// a lost grant would leave the requester waiting forever. Only what a resend
/// needs is kept (the lock is the map's key; a newer set is sent as it stands
/// then): a node keeps one per requester and lock it ever answered, so this is
/// most of what an idle lock name costs.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Reply {
        request_id: u64,
        attempt: u32,
        epoch: u64,
        /// When the request it answers arrived (a resent grant says how long it
        /// was held back since then).
        received_at: Duration,
    },
    NewerSet {
        request_id: u64,
    },
    Busy {
        request_id: u64,
        attempt: u32,
    },
}

pub struct Node {
    me: ProcessId,
    settings: NodeSettings,
    seeds: Vec<SocketAddr>,
    now: Duration,
    clock: LamportClock,
    swim: Swim,
    swim_io: AccumulatingRuntime<MemberId>,
    /// How many times foca passes each update on, fitted to the cluster's size.
    swim_transmissions: u8,
    /// The members SWIM suspected before its latest datagram or timer.
    swim_suspects: Vec<MemberId>,
    gossip_in: Receiver<Gossip>,
    peers: BTreeMap<SocketAddr, Peer>,
    /// Processes that said they are leaving, and when we heard it.
    leaving_peers: BTreeMap<ProcessId, Duration>,
    active_set: Option<ActiveSet>,
    acceptor: Acceptor,
    proposal: Option<Proposal>,
    highest_round: u32,
    change_wanted_since: Option<Duration>,
    next_proposal_at: Duration,
    locks: lock_table::LockTable,
    /// Locks whose line may be able to move (a request to issue).
    to_issue: BTreeSet<LockName>,
    next_request_id: u64,
    /// A set of an older cluster to merge into once no lock is held here.
    pending_merge: Option<ActiveSet>,
    /// Requests from the cluster we merge into, held until we have joined it.
    requests_after_merge: Vec<(ProcessId, LockRequest)>,
    /// When this node, knowing no set, last asked members for theirs.
    asked_which_set_at: Option<Duration>,
    /// As a spectator: when it last checked its set with a member, and how
    /// many times (which member it asks next).
    set_checked_at: Duration,
    set_checks: usize,
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
    last_tick_at: Duration,
    loopback: VecDeque<Envelope>,
    last_answer: BTreeMap<(ProcessId, LockName), Answer>,
    /// Until when this node has promised not to help evict each requester it
    /// granted (the grant lease).
    leases: BTreeMap<ProcessId, Duration>,
    /// Who we last heard from ourselves at each address, and when.
    contacts: BTreeMap<SocketAddr, evidence::Contact>,
    /// When we installed the current active set.
    set_installed_at: Duration,
    /// Processes the shell proved gone (a refused connection, a new process
    /// at the address): no lease or doubt protects them.
    gone: BTreeSet<ProcessId>,
    /// Spectators' tickets: served as a member, forwarded as a spectator.
    proxy: proxy::Proxy,
    /// Which addresses a member of this cluster could have.
    plausible: Plausible,
    /// Shared with the SWIM codec: the wall clock it checks identities
    /// against, and identities claimed at our address.
    claims: Arc<Claims>,
    /// An identity claimed at our address that stands above ours: the next
    /// renewal goes above it.
    rival: Option<MemberId>,
    /// `now` when this node was made (its process's start time).
    started_at: Duration,
    /// An Accept our grant lease made us sit on (see `seating::on_accept`):
    /// answered once the lease runs out or its holder is proved gone.
    held_accept: Option<seating::HeldAccept>,
    /// The processes the shell was last asked to watch.
    watching: Vec<ProcessId>,
    /// A renewal of our SWIM identity waits for this time (see `evidence`).
    renew_at: Option<Duration>,
    last_renewal: Option<Duration>,
    /// The data directory's side of the node, if it has one.
    durable: Option<recovery::Durable>,
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
        Self::with_durability(me, seeds, settings, seed, now, Durability::Off)
    }

    /// A node that keeps its state in a data directory (`Output::Persist`),
    /// and starts from what `durability` found there.
    pub fn with_durability(
        me: ProcessId,
        seeds: Vec<SocketAddr>,
        settings: NodeSettings,
        seed: u64,
        now: Duration,
        durability: Durability,
    ) -> Self {
        let (handler, gossip_in) = GossipHandler::new();
        let seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| *s != me.addr).collect();
        let plausible = Plausible::new(me.addr, &seeds);
        let claims = Arc::new(Claims::default());
        claims.set_wall_now(me.incarnation);
        let swim = Foca::with_custom_broadcast(
            MemberId::new(me),
            settings.swim.to_foca(1),
            SmallRng::seed_from_u64(seed),
            CheckedCodec::new(plausible.clone(), claims.clone()),
            handler,
        );
        let unheard_seeds: BTreeSet<SocketAddr> = seeds.iter().copied().collect();
        let found_at = unheard_seeds
            .is_empty()
            .then_some(now + settings.found_after);
        let mut node = Self {
            me,
            seeds,
            now,
            clock: LamportClock::default(),
            swim,
            swim_io: AccumulatingRuntime::new(),
            swim_transmissions: settings.swim.transmissions_for(1),
            swim_suspects: Vec::new(),
            gossip_in,
            peers: BTreeMap::new(),
            leaving_peers: BTreeMap::new(),
            active_set: None,
            acceptor: Acceptor::new(1),
            proposal: None,
            highest_round: 0,
            change_wanted_since: None,
            next_proposal_at: now,
            locks: lock_table::LockTable::new(me),
            to_issue: BTreeSet::new(),
            next_request_id: 1,
            pending_merge: None,
            requests_after_merge: Vec::new(),
            asked_which_set_at: None,
            set_checked_at: now,
            set_checks: 0,
            life: Life::Running,
            next_join_attempt: now,
            found_at,
            unheard_seeds,
            alone_since: Some(now),
            last_alone_warning: now,
            reported_position: None,
            last_tick_at: now,
            loopback: VecDeque::new(),
            last_answer: BTreeMap::new(),
            leases: BTreeMap::new(),
            contacts: BTreeMap::new(),
            gone: BTreeSet::new(),
            held_accept: None,
            proxy: proxy::Proxy::default(),
            plausible,
            claims,
            rival: None,
            started_at: now,
            watching: Vec::new(),
            set_installed_at: now,
            renew_at: None,
            // A renewal stands a second later: the first waits a second too.
            last_renewal: Some(now),
            rng: SmallRng::seed_from_u64(seed ^ 0x5eed_0f7a),
            out: Vec::new(),
            durable: recovery::Durable::new(durability, now),
            settings,
        };
        // A node with a past never founds a cluster alone (see `recovery`).
        if let Some(restored) = node.durable.as_ref().and_then(|d| d.restored()) {
            node.found_at = None;
            let event = Event::Restored {
                cluster: restored.set.cluster,
                epoch: restored.epoch,
                members: restored.set.members.clone(),
            };
            node.emit(event);
        }
        let found_in = node.found_at.map(|_| node.settings.found_after);
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

    /// The node's Lamport clock now.
    pub fn clock(&self) -> u64 {
        self.clock.now()
    }

    pub fn active_set(&self) -> Option<&ActiveSet> {
        self.active_set.as_ref()
    }

    /// The set a node restarted from its data directory last knew, while it
    /// is in no cluster yet.
    pub fn recovering_from(&self) -> Option<&ActiveSet> {
        self.recovering().map(|state| &state.set)
    }

    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    /// Tickets asked for and not yet given back (waiting or holding).
    pub fn outstanding_tickets(&self) -> usize {
        self.locks
            .busy()
            .map(|(_, slot)| slot.line.len() + usize::from(slot.holder.is_some()))
            .sum()
    }

    /// The Ricart–Agrawala state of one lock, if this node knows the lock.
    pub fn lock_state(&self, lock: &LockName) -> Option<&State> {
        self.locks.state(lock)
    }

    /// Tickets waiting for a lock (not holding it yet).
    pub fn waiting_tickets(&self) -> usize {
        let here: usize = self
            .locks
            .busy()
            .map(|(_, slot)| {
                slot.line
                    .iter()
                    .filter(|w| w.ticket < PROXY_TICKETS)
                    .count()
            })
            .sum();
        here + self.forwarded_waiting()
    }

    /// Whether `ticket` holds `lock` now.
    pub fn holds_ticket(&self, lock: &LockName, ticket: Ticket) -> bool {
        self.locks
            .get(lock)
            .and_then(|slot| slot.holder.as_ref())
            .is_some_and(|h| h.ticket == ticket)
            || self.holds_via(lock, ticket)
    }

    /// The locks this node's clients hold right now.
    pub fn held_locks(&self) -> Vec<LockName> {
        self.locks
            .busy()
            .filter(|(_, slot)| slot.holder.is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn role(&self) -> Role {
        match (&self.active_set, self.life) {
            (_, Life::Leaving { .. } | Life::Left | Life::LeaveAfterRelease { .. }) => {
                Role::Leaving
            }
            (None, _) => Role::Joining,
            (Some(set), _) if set.contains(&self.me) => Role::Active,
            (Some(_), _) => Role::Spectator,
        }
    }

    pub fn status(&self) -> Status {
        Status {
            me: self.me,
            now: self.now,
            role: self.role(),
            live_members: self.live_processes(),
            active_set: self.active_set.clone(),
            spectators: self.spectators(),
            clock: self.clock.now(),
            locks: self.locks.statuses(),
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
        self.claims.set_wall_now(self.wall_now_us());
        let first_output = self.out.len();
        match input {
            Input::Datagram { from, data } => {
                // Read without the codec's checks: foca applies them below.
                if let Ok(header) =
                    foca::Codec::<MemberId>::decode_header(&mut PostcardCodec, &data[..])
                {
                    self.note_datagram_contact(from, &header);
                    self.answer_old_incarnation(&header);
                    self.show_sender_the_identity_held_down(from, &header);
                }
                self.note_suspects();
                if let Err(e) = self.swim.handle_data(&data, &mut self.swim_io) {
                    self.emit(Event::Dropped {
                        what: DroppedWhat::Datagram,
                        from: from.into(),
                        why: DropReason::Malformed {
                            detail: e.to_string(),
                        },
                    });
                }
                self.answer_rival_claim();
            }
            Input::Message(envelope) => self.on_message(envelope),
            Input::Reconnected { peer } => self.on_reconnected(peer),
            Input::Timer(timer) => self.on_timer(timer),
            Input::Acquire {
                lock,
                ticket,
                try_only,
            } => self.on_acquire(lock, ticket, try_only),
            Input::Release { lock, ticket } => self.on_release(lock, ticket),
            Input::AskWhoHolds { query } => self.ask_who_holds(query),
            Input::PeerGone { process, evidence } => self.on_peer_gone(process, evidence),
            Input::Leave => self.on_leave(),
        }
        self.settle();
        self.persist_changes(first_output);
        self.route_served_outputs();
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
            self.answer_held_accept();
            self.issue_ready();
            self.update_watch();
            if self.loopback.is_empty() && self.swim_io.backlog() == 0 {
                break;
            }
        }
    }

    /// A datagram for an earlier process at our address means its cluster is out
    /// there and has not noticed the restart: announce to the sender now rather
    /// than wait to be found (or, with no seeds, found a second cluster).
    fn answer_old_incarnation(&mut self, header: &foca::Header<MemberId>) {
        if header.dst.process.addr == self.me.addr && header.dst.process != self.me {
            // An error means foca refused the target (say, ourselves): nothing to do.
            let _ = self.swim.announce(header.src, &mut self.swim_io);
        }
    }

    fn emit(&mut self, event: Event) {
        self.out.push(Output::Event(event));
    }

    fn send(&mut self, to: ProcessId, body: Body) {
        if to != self.me && !self.plausible(to.addr) {
            // A forged or corrupted active set may name an address no member
            // could have: never dial it.
            return;
        }
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
                self.note_suspects();
                if let Err(e) = self.swim.handle_timer(timer, &mut self.swim_io) {
                    // foca's own sanity checks; its state stays usable.
                    self.emit(Event::SwimError {
                        during: SwimStep::Timer,
                        error: e.to_string(),
                    });
                }
            }
            TimerId::Tick => self.on_tick(),
        }
    }

    fn on_tick(&mut self) {
        self.out.push(Output::Timer {
            at: self.now + self.settings.tick,
            timer: TimerId::Tick,
        });
        self.notice_pause();
        self.refresh_expiring_grants();
        self.check_forwarded();
        self.recheck_verdicts();
        self.drop_served_for_gone();
        self.send_heartbeats();
        self.maybe_renew();
        self.retry_join();
        self.maybe_found();
        self.recovery_tick();
        self.check_set_with_a_member();
        if let Some(proposal) = &self.proposal
            && self.now >= proposal.started + self.settings.proposal_timeout
        {
            self.abandon_proposal(crate::event::AbandonReason::NoQuorumInTime);
        }
        match self.life {
            Life::Leaving { deadline } if self.now >= deadline => {
                self.emit(Event::LeaveTimedOut);
                self.finish_leave();
            }
            Life::LeaveAfterRelease { deadline } if self.now >= deadline => {
                self.begin_leave();
            }
            _ => {}
        }
        let now = self.now;
        self.leases.retain(|_, until| *until > now);
        self.locks.settle();
    }

    /// The housekeeping timer fires every `tick`: a much longer gap means this
    /// process was stopped, and the cluster may have moved on meanwhile.
    fn notice_pause(&mut self) {
        let gap = self.now.saturating_sub(self.last_tick_at);
        self.last_tick_at = self.now;
        if gap <= self.settings.tick + self.settings.pause_threshold() {
            return;
        }
        let stopped_for = gap.saturating_sub(self.settings.tick);
        let holding = self.held_locks();
        self.emit(Event::Paused {
            stopped_for,
            holding: holding.clone(),
        });
        if stopped_for >= self.settings.swim.suspect_to_down_after {
            for lock in holding {
                self.lose_holder(&lock, LossReason::Paused);
            }
            // Held through a member: it has let go, or will before we hear it.
            self.lose_all_forwarded(LossReason::Paused);
        }
    }

    // ---- messages --------------------------------------------------------

    fn drop_message(&mut self, from: ProcessId, why: DropReason) {
        self.emit(Event::Dropped {
            what: DroppedWhat::Message,
            from: from.into(),
            why,
        });
    }

    fn on_message(&mut self, envelope: Envelope) {
        let Envelope {
            from,
            to,
            clock,
            body,
        } = envelope;
        if to != self.me {
            self.drop_message(from, DropReason::AddressedToEarlierProcess { to });
            return;
        }
        // The shell proved the sender gone (a new process answers at its
        // address): this message was in flight when it died. A restart only
        // rumoured by gossip proves nothing (in plain mode it may be forged),
        // and dropping a live member's message would leave its request or
        // reply lost for good.
        if self.gone.contains(&from) {
            self.drop_message(from, DropReason::SentByRestartedProcess);
            return;
        }
        if let Err(e) = self.check_numbers(&body) {
            self.drop_message(from, e);
            return;
        }
        if self.settings.mutations.wrapping_clock() {
            self.clock.merge_wrapping(clock);
        } else if let Err(e) = self.clock.merge(clock) {
            self.drop_message(from, e.into());
            return;
        }
        self.note_contact(from);
        match body {
            Body::Request(request) => self.on_request(from, request),
            Body::Reply { lock, grant } => self.on_reply(from, lock, grant),
            Body::NewerSet { set, .. } | Body::Decided { set } => {
                self.answer_older_set(from, &set);
                self.adopt(set, SetSource::Message, Some(from))
            }
            Body::Busy {
                lock,
                request_id,
                attempt,
            } => self.on_busy(from, lock, request_id, attempt),
            Body::Prepare { current, ballot } => self.on_prepare(from, current, ballot),
            Body::Accept {
                current,
                ballot,
                members,
                carried,
            } => self.on_accept(from, current, ballot, members, carried),
            Body::Promise {
                epoch,
                ballot,
                accepted,
            } => self.on_promise(from, epoch, ballot, accepted),
            Body::Accepted { epoch, ballot } => self.on_accepted(from, epoch, ballot),
            Body::Nack { epoch, promised } => self.on_nack(epoch, promised),
            Body::Leaving => self.note_leaving(from),
            Body::WhichSet => self.tell_set(from),
            Body::Recovering { last, epoch } => self.on_recovering(from, last, epoch),
            Body::WhoHolds { query } => {
                let locks = self.holding(crate::wire::MAX_HELD_LISTED);
                self.send(from, Body::Holding { query, locks });
            }
            Body::Holding { query, locks } => self.out.push(Output::Holding { query, from, locks }),
            Body::ProxyAcquire {
                lock,
                ticket,
                try_only,
            } => self.on_proxy_acquire(from, lock, ticket, try_only),
            Body::ProxyRelease { lock, ticket } => self.on_proxy_release(from, lock, ticket),
            Body::ProxyNews { lock, ticket, news } => self.on_proxy_news(from, lock, ticket, news),
        }
    }

    /// Numbers from the wire are checked before they move any state: timestamps
    /// like clocks, epochs of our own cluster and Paxos rounds at most a
    /// bounded way ahead.
    fn check_numbers(&self, body: &Body) -> Result<(), DropReason> {
        if let Body::Request(request) = body {
            self.clock.check(request.timestamp)?;
        }
        let epoch = match body {
            Body::Request(LockRequest { set, .. })
            | Body::NewerSet { set, .. }
            | Body::Decided { set } => self.same_cluster(set).then_some(set.epoch),
            Body::Prepare { current, .. } | Body::Accept { current, .. } => {
                self.same_cluster(current).then_some(current.epoch)
            }
            Body::Reply { grant, .. } => Some(grant.epoch),
            Body::Promise { epoch, .. }
            | Body::Accepted { epoch, .. }
            | Body::Nack { epoch, .. } => Some(*epoch),
            // A recovering node's epochs are checked against its own (`recovery`).
            Body::Leaving
            | Body::WhichSet
            | Body::Recovering { .. }
            | Body::Busy { .. }
            | Body::WhoHolds { .. }
            | Body::Holding { .. }
            | Body::ProxyAcquire { .. }
            | Body::ProxyRelease { .. }
            | Body::ProxyNews { .. } => None,
        };
        let own = self.active_set.as_ref().map_or(0, |s| s.epoch);
        if let Some(seen) = epoch
            && own > 0
            && seen > own.saturating_add(MAX_EPOCH_LEAD)
        {
            return Err(DropReason::EpochOutOfRange { seen, own });
        }
        let round = match body {
            Body::Prepare { ballot, .. }
            | Body::Accept { ballot, .. }
            | Body::Accepted { ballot, .. } => Some(ballot.round),
            Body::Promise {
                ballot, accepted, ..
            } => Some(
                ballot
                    .round
                    .max(accepted.as_ref().map_or(0, |(b, _)| b.round)),
            ),
            Body::Nack { promised, .. } => Some(promised.round),
            _ => None,
        };
        let own = self.highest_round.max(self.acceptor.highest_round_seen());
        match round {
            Some(seen) if seen > own.saturating_add(MAX_ROUND_LEAD) => {
                Err(DropReason::RoundOutOfRange { seen, own })
            }
            _ => Ok(()),
        }
    }

    /// A set older than ours reached us over a stream (an earlier epoch of
    /// our cluster, or a younger cluster): tell its sender ours. It takes on
    /// another member list or cluster only from a member's message, never
    /// from gossip alone (see `Node::adopt`), and this is that message.
    fn answer_older_set(&mut self, from: ProcessId, set: &ActiveSet) {
        if let Some(mine) = self.active_set.clone()
            && (mine.outranks_cluster_of(set) || (mine.same_cluster(set) && mine.epoch > set.epoch))
        {
            self.send(from, Body::Decided { set: mine });
        }
    }

    fn same_cluster(&self, set: &ActiveSet) -> bool {
        self.active_set
            .as_ref()
            .is_some_and(|s| s.same_cluster(set))
    }

    fn on_reconnected(&mut self, peer: SocketAddr) {
        // Whatever was in flight on the old stream may be gone; everything resent
        // here is harmless to receive twice.
        self.reforward_to(peer);
        let answers: Vec<(ProcessId, LockName)> = self
            .last_answer
            .keys()
            .filter(|(p, _)| p.addr == peer)
            .cloned()
            .collect();
        for (to, lock) in answers {
            self.resend_answer(to, lock);
        }
        let asks: Vec<(LockName, ProcessId)> = self
            .locks
            .busy()
            .filter_map(|(name, slot)| Some((name, slot.ra.pending()?)))
            .flat_map(|(name, pending)| {
                pending
                    .awaiting
                    .iter()
                    .filter(|m| m.addr == peer)
                    .map(|m| (name.clone(), *m))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (lock, member) in asks {
            self.reask(&lock, &[member]);
        }
        if let Some(proposal) = self.proposal.clone() {
            for member in proposal.base.members.iter().filter(|m| m.addr == peer) {
                let body = match proposal.accepting() {
                    Some((members, carried)) => Body::Accept {
                        current: proposal.base.clone(),
                        ballot: proposal.ballot,
                        members: members.to_vec(),
                        carried,
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

    fn random_below(&mut self, limit: Duration) -> Duration {
        let micros = limit.as_micros().clamp(1, u128::from(u64::MAX)) as u64;
        Duration::from_micros(self.rng.random_range(0..micros))
    }
}

/// How many epochs ahead of ours a message of our own cluster may name. Honest
/// nodes fall behind by a few epochs per failure or seat change they miss;
/// further ahead is a bug or a forgery, which must not use up the epochs a fence
/// can carry.
pub const MAX_EPOCH_LEAD: u64 = 1 << 16;

/// Whether the active set's live members still reach a quorum, as this node sees it.
fn quorum_alive(set: &ActiveSet, alive: impl Fn(&ProcessId) -> bool) -> bool {
    let voters: BTreeSet<ProcessId> = set.members.iter().copied().filter(|m| alive(m)).collect();
    set.is_quorum(&voters)
}
