//! The simulated world: processes made of the real `Node`, a simulated network,
//! one clock, one seeded random generator, and an event queue. Nothing in here
//! depends on wall time or thread scheduling, so a seed replays exactly.
//!
//! Long because it is one job, the simulated world's event loop: processes, clients,
//! faults and the liveness check all act on the same agenda.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::hostile::{Attack, Hostile, Hostility};
use super::network::{Fate, NetConfig, Network, StreamKey};
use super::oracle::{Oracle, Stats};
use crate::agenda::Agenda;
use crate::event::{Event, GoneEvidence, Ticket};
use crate::node::{Durability, Input, Node, NodeSettings, Output};
use crate::protocol::active_set::ActiveSet;
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::LockName;
use crate::protocol::message::Envelope;

/// What a simulated client does with its ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub lock: LockName,
    /// How long it holds the lock once granted.
    pub hold: Duration,
    /// It goes away this long after asking, granted or not (a cancelled ticket,
    /// or a client killed mid-hold).
    pub vanishes_after: Option<Duration>,
    /// It gives up at once unless the lock is free.
    pub try_only: bool,
}

/// Something that happens to the cluster at a scheduled time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start (or restart) the process of `slot`, joining through `seeds`.
    Start {
        slot: usize,
        seeds: Vec<usize>,
    },
    /// The user of `slot` presses Enter `count` times: the lock named
    /// `default`, held for the configured hold.
    Request {
        slot: usize,
        count: u32,
    },
    /// A client of `slot` asks for a lock.
    Acquire {
        slot: usize,
        client: Client,
    },
    Leave {
        slot: usize,
    },
    /// Kill the process (SIGKILL): it stops at once, in the critical section or not.
    Crash {
        slot: usize,
    },
    /// Freeze the process (SIGSTOP) for a while; what reaches it waits.
    Pause {
        slot: usize,
        duration: Duration,
    },
    /// Nothing from `from` reaches `to` (one-way unless also cut the other way).
    Cut {
        from: Vec<usize>,
        to: Vec<usize>,
    },
    /// Datagrams from `from` to `to` are lost; stream messages wait in TCP's
    /// retransmission queue until the path works again.
    Stall {
        from: Vec<usize>,
        to: Vec<usize>,
    },
    /// TCP gets through stalled paths again, a while before UDP does.
    HealStreams,
    Heal,
    /// Break every stream the process has open.
    BreakStreams {
        slot: usize,
    },
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub slots: usize,
    pub settings: NodeSettings,
    /// How long a `Request` holds the lock.
    pub hold: Duration,
    pub net: NetConfig,
    /// When the last fault may happen; everything is healed by then.
    pub faults_end: Duration,
    /// Every request asked for must be served this long after `faults_end`.
    pub liveness_bound: Duration,
    /// Crashes and leaves of active members are skipped when they would take the
    /// active set below a quorum (which would stall it, by design).
    pub keep_quorum: bool,
    /// Record every node event (and print it on failure).
    pub trace: bool,
    /// Also record every datagram, with its fate.
    pub trace_datagrams: bool,
    /// Every process has a data directory that survives its crashes and
    /// restarts (`--data-dir`): what it last persisted, it starts from.
    pub durable: bool,
    /// A hostile peer taps the network and attacks until `faults_end`
    /// (`sim::hostile`); an insider is the last slot's process.
    pub hostile: Option<Hostility>,
}

impl SimConfig {
    pub fn new(seed: u64, slots: usize) -> Self {
        Self {
            seed,
            slots,
            settings: NodeSettings::default(),
            hold: Duration::from_millis(30),
            net: NetConfig::default(),
            faults_end: Duration::from_secs(20),
            liveness_bound: Duration::from_secs(20),
            keep_quorum: true,
            trace: false,
            trace_datagrams: false,
            durable: false,
            hostile: None,
        }
    }
}

#[derive(Clone, Debug)]
enum Happening {
    /// A timer or a datagram for the process running in `slot` (timers only for
    /// the `process` that set them).
    Input {
        slot: usize,
        process: Option<ProcessId>,
        input: Input,
    },
    StreamArrival {
        key: StreamKey,
        generation: u64,
        seq: u64,
        envelope: Envelope,
    },
    Action(Action),
    Resume {
        slot: usize,
    },
    Reconnect {
        key: StreamKey,
    },
    /// `watcher`'s shell reconnects to where `target` was, after its stream
    /// broke: a refused connection or a new process there is proof of death.
    DeathCheck {
        watcher: ProcessId,
        target: ProcessId,
    },
    /// The hostile peer sends what it sends.
    Attack,
    /// A client gives its ticket back (or goes away).
    Release {
        slot: usize,
        process: ProcessId,
        lock: LockName,
        ticket: Ticket,
    },
}

#[derive(Default)]
struct Slot {
    node: Option<Node>,
    seeds: Vec<usize>,
    paused_until: Option<Duration>,
    paused_inbox: Vec<Input>,
    started_once: bool,
    next_ticket: Ticket,
    /// The clients of the running process, by ticket.
    clients: BTreeMap<Ticket, Client>,
    /// When it last woke up from a pause.
    resumed_at: Option<Duration>,
    /// The slot's data directory: the state its processes last persisted.
    disk: Option<crate::durable::DurableState>,
}

/// What one run found.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub stats: Stats,
    pub violations: Vec<String>,
    /// Tickets still waiting at the end, per live process.
    pub unserved: Vec<(ProcessId, usize)>,
    /// The run ended with its active set below a quorum (only possible when
    /// `keep_quorum` is off): a stall by design, not a liveness bug.
    pub quorum_lost: bool,
    pub skipped_faults: u64,
    /// Tickets of spectators still waiting for a seat that never freed.
    pub spectators_waiting: usize,
    /// Tickets of nodes whose every seed is gone, so they never joined.
    pub stranded: usize,
    pub had_partition: bool,
    pub last_entry: Duration,
    pub trace_hash: u64,
    pub trace: Vec<String>,
    /// Every node event with its time, when tracing.
    pub events: Vec<(Duration, ProcessId, Event)>,
    /// Datagrams and messages the hostile peer sent, and how many of its
    /// messages the wire format refused before a node saw them.
    pub hostile_sent: u64,
    pub hostile_refused_at_wire: u64,
    /// The highest Lamport clock any process reached (tracked with a hostile
    /// peer only).
    pub highest_clock: u64,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && (self.unserved.is_empty() || self.quorum_lost)
    }
}

pub struct World {
    config: SimConfig,
    now: Duration,
    queue: Agenda<Duration, Happening>,
    slots: Vec<Slot>,
    net: Network,
    rng: SmallRng,
    oracle: Oracle,
    skipped_faults: u64,
    had_partition: bool,
    last_entry: Duration,
    hasher: std::collections::hash_map::DefaultHasher,
    trace: Vec<String>,
    events: Vec<(Duration, ProcessId, Event)>,
    /// When each process last took a seat in the active set.
    seated_since: BTreeMap<ProcessId, Duration>,
    /// When each process first installed an active set.
    knows_a_set_since: BTreeMap<ProcessId, Duration>,
    /// When the network last healed.
    last_heal: Option<Duration>,
    /// Processes asked to leave.
    leavers: BTreeSet<ProcessId>,
    /// The member list each process last proposed.
    proposed: BTreeMap<ProcessId, Vec<ProcessId>>,
    /// The decisions (cluster, epoch) whose removals were judged: each is
    /// judged once, when first decided, not again by each proposer that
    /// completes the same decision later (after a pause, say).
    judged_decisions: BTreeSet<(ProcessId, u64)>,
    /// The processes each process keeps a connection to (its shell would).
    watching: BTreeMap<ProcessId, Vec<ProcessId>>,
    /// The latest process each process watched or sent a message to at each
    /// address: its shell keeps that stream open too, and a reconnect tells
    /// it the process there is gone (the transport's `expected`).
    contacted: BTreeMap<ProcessId, BTreeMap<SocketAddr, ProcessId>>,
    /// Streams whose shell is reconnecting to an address where the process
    /// it expects no longer runs, with a `DeathCheck` pending.
    reconnecting: BTreeSet<(ProcessId, SocketAddr)>,
    hostile: Option<Hostile>,
    /// The hostile peer's own draws, so schedules without one replay as before.
    hostile_rng: SmallRng,
    hostile_refused_at_wire: u64,
    /// Each process's Lamport clock after its last input: it must never go back.
    clocks: BTreeMap<ProcessId, u64>,
}

pub fn slot_addr(slot: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + slot as u16))
}

fn slot_of(addr: SocketAddr) -> Option<usize> {
    (addr.port() as usize).checked_sub(7000)
}

impl World {
    pub fn new(config: SimConfig) -> Self {
        let slots = (0..config.slots).map(|_| Slot::default()).collect();
        let hostile = config.hostile.map(|kind| {
            // The insider is the last slot's process; the outsider has an
            // address of its own.
            let slot = match kind {
                Hostility::Insider => config.slots.saturating_sub(1),
                Hostility::Outsider => config.slots,
            };
            Hostile::new(kind, slot_addr(slot))
        });
        let mut queue = Agenda::default();
        if hostile.is_some() {
            queue.push(Duration::from_millis(500), Happening::Attack);
        }
        Self {
            rng: SmallRng::seed_from_u64(config.seed),
            now: Duration::ZERO,
            queue,
            slots,
            net: Network::default(),
            oracle: Oracle::default(),
            skipped_faults: 0,
            had_partition: false,
            last_entry: Duration::ZERO,
            hasher: std::collections::hash_map::DefaultHasher::new(),
            trace: Vec::new(),
            events: Vec::new(),
            seated_since: BTreeMap::new(),
            knows_a_set_since: BTreeMap::new(),
            last_heal: None,
            leavers: BTreeSet::new(),
            proposed: BTreeMap::new(),
            judged_decisions: BTreeSet::new(),
            watching: BTreeMap::new(),
            contacted: BTreeMap::new(),
            reconnecting: BTreeSet::new(),
            hostile,
            hostile_rng: SmallRng::seed_from_u64(config.seed ^ 0x0005_EED0_FBAD_1DEA),
            hostile_refused_at_wire: 0,
            clocks: BTreeMap::new(),
            config,
        }
    }

    pub fn schedule(&mut self, at: Duration, action: Action) {
        self.push(at, Happening::Action(action));
    }

    fn push(&mut self, at: Duration, what: Happening) {
        self.queue.push(at, what);
    }

    fn process_of(&self, slot: usize) -> Option<ProcessId> {
        self.slots.get(slot)?.node.as_ref().map(Node::me)
    }

    fn running(&self, process: &ProcessId) -> bool {
        slot_of(process.addr).and_then(|s| self.process_of(s)) == Some(*process)
    }

    /// Run until `until`, then check liveness and report.
    pub fn run(mut self, until: Duration) -> Report {
        self.run_until(until);
        // A node seated only just now (a seat freed at the very end) gets the
        // same bound as everyone else to be served.
        let bound = self.config.liveness_bound;
        let settle = self
            .slots
            .iter()
            .filter_map(|s| s.node.as_ref())
            .filter(|n| n.waiting_tickets() > 0)
            .filter_map(|n| self.seated_since.get(&n.me()))
            .map(|since| *since + bound)
            .max();
        if let Some(settle) = settle.filter(|t| *t > until) {
            self.run_until(settle);
        }
        self.finish()
    }

    fn run_until(&mut self, until: Duration) {
        while let Some((at, what)) = self.queue.pop_due(until) {
            self.now = at;
            self.happen(what);
        }
        self.now = until;
    }

    fn happen(&mut self, what: Happening) {
        match what {
            Happening::Input {
                slot,
                process,
                input,
            } => {
                if process.is_some() && self.process_of(slot) != process {
                    return;
                }
                self.deliver(slot, input);
            }
            Happening::StreamArrival {
                key,
                generation,
                seq,
                envelope,
            } => match self.net.stream_arrival(
                &self.config.net,
                self.now,
                key,
                generation,
                seq,
                &envelope,
            ) {
                Some(Fate::Deliver { .. }) => {
                    if let Some(slot) = slot_of(key.to) {
                        self.deliver(slot, Input::Message(envelope));
                    }
                }
                Some(Fate::Broken { reconnect_at }) => {
                    self.push(reconnect_at, Happening::Reconnect { key })
                }
                Some(Fate::Queued) | None => {}
            },
            Happening::Action(action) => self.act(action),
            Happening::Resume { slot } => self.resume(slot),
            Happening::Reconnect { key } => self.reconnect(key),
            Happening::DeathCheck { watcher, target } => self.death_check(watcher, target),
            Happening::Attack => self.attack(),
            Happening::Release {
                slot,
                process,
                lock,
                ticket,
            } => {
                if self.process_of(slot) != Some(process) {
                    return;
                }
                if self.slots[slot].clients.remove(&ticket).is_some() {
                    self.deliver(slot, Input::Release { lock, ticket });
                }
            }
        }
    }

    /// `target` just died: every process watching it (its shell keeps a
    /// stream open) sees the stream break within a round trip and reconnects.
    fn streams_break(&mut self, target: ProcessId) {
        // A stream is to an address: the reconnect's evidence names the process
        // the watcher last sent to there, which may not be the one that died
        // (a damaged "later" identity it took for a restart).
        let watchers: BTreeSet<(ProcessId, ProcessId)> = self
            .watching
            .iter()
            .filter(|(w, list)| **w != target && list.contains(&target))
            .map(|(w, _)| (*w, target))
            .chain(self.contacted.iter().filter_map(|(w, sent)| {
                let expected = sent.get(&target.addr)?;
                (*w != target && expected.incarnation >= target.incarnation)
                    .then_some((*w, *expected))
            }))
            .collect();
        for (watcher, target) in watchers {
            self.schedule_death_check(watcher, target);
        }
    }

    /// `watcher`'s shell reconnects to where `target` was: a round trip, plus
    /// the moment it notices (its reconnect backoff starts at 50 ms), so
    /// watchers learn at different times, some from gossip first.
    fn schedule_death_check(&mut self, watcher: ProcessId, target: ProcessId) {
        let noticed = Duration::from_micros(self.rng.random_range(0..50_000));
        let delay = self.net.delay(&self.config.net, &mut self.rng) + noticed;
        self.push(self.now + delay, Happening::DeathCheck { watcher, target });
    }

    /// The reconnect after a broken stream: refused if nothing runs at the
    /// address, a new incarnation if it restarted; nothing learned if the path
    /// is cut (the connect times out) or the process is only paused (its
    /// kernel still accepts).
    fn death_check(&mut self, watcher: ProcessId, target: ProcessId) {
        self.reconnecting.remove(&(watcher, target.addr));
        let Some(slot) = slot_of(watcher.addr) else {
            return;
        };
        if !self.running(&watcher)
            || self.net.is_blocked(watcher.addr, target.addr)
            || self.net.is_blocked(target.addr, watcher.addr)
        {
            return;
        }
        let evidence = match slot_of(target.addr).and_then(|s| self.process_of(s)) {
            None => GoneEvidence::ConnectionRefused,
            Some(now) if now != target => GoneEvidence::Restarted { now },
            Some(_) => return,
        };
        self.push(
            self.now,
            Happening::Input {
                slot,
                process: Some(watcher),
                input: Input::PeerGone {
                    process: target,
                    evidence,
                },
            },
        );
    }

    /// A client of `slot` asks for a lock.
    fn acquire(&mut self, slot: usize, client: Client) {
        let Some(process) = self.process_of(slot) else {
            return;
        };
        // The insider's own clients are not the honest nodes' to protect.
        if self.insider_slot() == Some(slot) {
            return;
        }
        let state = &mut self.slots[slot];
        state.next_ticket += 1;
        let ticket = state.next_ticket;
        state.clients.insert(ticket, client.clone());
        if let Some(after) = client.vanishes_after {
            self.push(
                self.now + after,
                Happening::Release {
                    slot,
                    process,
                    lock: client.lock.clone(),
                    ticket,
                },
            );
        }
        self.deliver(
            slot,
            Input::Acquire {
                lock: client.lock,
                ticket,
                try_only: client.try_only,
            },
        );
    }

    /// A broken stream comes back once the path is clear: the sender flushes what
    /// it queued meanwhile and hears that earlier messages may be lost.
    fn reconnect(&mut self, key: StreamKey) {
        if !self.running(&key.from) {
            return;
        }
        match self.net.reconnect(key) {
            None => self.push(
                self.now + Duration::from_secs(1),
                Happening::Reconnect { key },
            ),
            Some(queued) => {
                for envelope in queued {
                    self.transmit(envelope);
                }
                if let Some(slot) = slot_of(key.from.addr) {
                    self.push(
                        self.now,
                        Happening::Input {
                            slot,
                            process: Some(key.from),
                            input: Input::Reconnected { peer: key.to },
                        },
                    );
                }
            }
        }
    }

    fn deliver(&mut self, slot: usize, input: Input) {
        let Some(state) = self.slots.get_mut(slot) else {
            return;
        };
        if state.paused_until.is_some() {
            state.paused_inbox.push(input);
            return;
        }
        let Some(node) = state.node.as_mut() else {
            return;
        };
        node.handle(self.now, input);
        if self.hostile.is_some() {
            let (me, clock) = (node.me(), node.clock());
            let before = self.clocks.insert(me, clock).unwrap_or(0);
            if clock < before {
                self.oracle.violations.push(format!(
                    "clock of {me} went back from {before} to {clock} at {:?}",
                    self.now
                ));
            }
        }
        self.collect(slot);
    }

    /// With `trace_datagrams`: a datagram `sender` sent, as from `from`.
    fn trace_datagram(
        &mut self,
        sender: &str,
        from: SocketAddr,
        to: SocketAddr,
        bytes: usize,
        arrivals: &[Duration],
    ) {
        if self.config.trace_datagrams {
            self.trace.push(format!(
                "{:>10.3}s {sender}: datagram to {to} as from {from}, {bytes} bytes, arrives {arrivals:?}",
                self.now.as_secs_f64(),
            ));
        }
    }

    fn insider_slot(&self) -> Option<usize> {
        self.hostile
            .as_ref()
            .filter(|h| h.kind == Hostility::Insider)
            .and_then(|h| slot_of(h.addr))
    }

    /// The hostile peer's turn: what it sends arrives after a network delay
    /// (its datagrams from anywhere, so cuts do not stop them; the insider's
    /// messages on its own streams, so they do).
    fn attack(&mut self) {
        let insider_slot = self.insider_slot();
        let insider = insider_slot.and_then(|s| self.process_of(s));
        let targets: Vec<ProcessId> = (0..self.slots.len())
            .filter(|s| Some(*s) != insider_slot)
            .filter_map(|s| self.process_of(s))
            .collect();
        let Some(hostile) = self.hostile.as_mut() else {
            return;
        };
        let attacks = hostile.attack(&mut self.hostile_rng, &targets, insider);
        for attack in attacks {
            let at = self.now + self.net.delay(&self.config.net, &mut self.hostile_rng);
            let (to, input) = match attack {
                Attack::Datagram { from, to, data } => {
                    self.trace_datagram("hostile", from, to, data.len(), &[at]);
                    (to, Input::Datagram { from, data })
                }
                Attack::Message(envelope) => match crate::wire::roundtrip(&envelope) {
                    Ok(envelope) if self.net.is_blocked(envelope.from.addr, envelope.to.addr) => {
                        continue;
                    }
                    Ok(envelope) => (envelope.to.addr, Input::Message(envelope)),
                    Err(_) => {
                        self.hostile_refused_at_wire += 1;
                        continue;
                    }
                },
            };
            if let Some(slot) = slot_of(to) {
                let process = None;
                self.push(
                    at,
                    Happening::Input {
                        slot,
                        process,
                        input,
                    },
                );
            }
        }
        if self.now < self.config.faults_end {
            let pause = Duration::from_millis(self.hostile_rng.random_range(2..=40));
            self.push(self.now + pause, Happening::Attack);
        }
    }

    fn collect(&mut self, slot: usize) {
        let Some(node) = self.slots[slot].node.as_mut() else {
            return;
        };
        let me = node.me();
        let outputs: Vec<Output> = node.drain_outputs().collect();
        for output in outputs {
            match output {
                Output::Datagram { to, data } => {
                    if let Some(hostile) = self.hostile.as_mut() {
                        hostile.tap_datagram(me.addr, to, &data);
                    }
                    let arrivals =
                        self.net
                            .datagram(&self.config.net, &mut self.rng, self.now, me.addr, to);
                    self.trace_datagram(&me.to_string(), me.addr, to, data.len(), &arrivals);
                    if let Some(target) = slot_of(to) {
                        for at in arrivals {
                            let data = Network::damage(&self.config.net, &mut self.rng, &data);
                            self.push(
                                at,
                                Happening::Input {
                                    slot: target,
                                    process: None,
                                    input: Input::Datagram {
                                        from: me.addr,
                                        data,
                                    },
                                },
                            );
                        }
                    }
                }
                Output::Message(envelope) => self.send(envelope),
                Output::Timer { at, timer } => self.push(
                    at,
                    Happening::Input {
                        slot,
                        process: Some(me),
                        input: Input::Timer(timer),
                    },
                ),
                Output::Event(event) => self.observe(me, &event),
                Output::Granted { lock, ticket, .. } => {
                    if let Some(client) = self.slots[slot].clients.get(&ticket) {
                        self.push(
                            self.now + client.hold,
                            Happening::Release {
                                slot,
                                process: me,
                                lock,
                                ticket,
                            },
                        );
                    }
                }
                Output::Lost { lock, ticket, .. } => {
                    // A holder's client stops its work and gives the ticket back;
                    // a waiter's ticket is simply over.
                    let holding = self.slots[slot]
                        .node
                        .as_ref()
                        .is_some_and(|n| n.holds_ticket(&lock, ticket));
                    if holding {
                        self.push(
                            self.now + Duration::from_millis(5),
                            Happening::Release {
                                slot,
                                process: me,
                                lock,
                                ticket,
                            },
                        );
                    } else {
                        self.slots[slot].clients.remove(&ticket);
                    }
                }
                // Nobody in the simulation asks who holds what.
                Output::Holding { .. } => {}
                Output::Watch(processes) => {
                    // The shell expects the latest process it watched or sent
                    // to at each address (the transport's `expected`).
                    for process in &processes {
                        self.note_expected(me, *process);
                    }
                    self.watching.insert(me, processes);
                }
                Output::Refused { ticket, .. } => {
                    self.slots[slot].clients.remove(&ticket);
                }
                Output::Persist(state) => {
                    if self.config.durable {
                        self.slots[slot].disk = Some(state);
                    }
                }
                Output::Left => {
                    self.oracle.on_stop(me);
                    self.slots[slot].node = None;
                    self.slots[slot].clients.clear();
                    self.streams_break(me);
                }
            }
        }
    }

    /// The latest process `by`'s shell expects at `process`'s address.
    fn note_expected(&mut self, by: ProcessId, process: ProcessId) -> ProcessId {
        let latest = self
            .contacted
            .entry(by)
            .or_default()
            .entry(process.addr)
            .or_insert(process);
        if latest.incarnation < process.incarnation {
            *latest = process;
        }
        *latest
    }

    fn send(&mut self, envelope: Envelope) {
        // Sent after the process it expects there died: the shell's stream
        // to the address is refused (or meets the next process) as it
        // reconnects, as it would have had the stream been open at the death.
        let expected = self.note_expected(envelope.from, envelope.to);
        if !self.running(&expected) && self.reconnecting.insert((envelope.from, expected.addr)) {
            self.schedule_death_check(envelope.from, expected);
        }
        // Every message goes through the real wire format, so a conversion bug
        // shows up here too.
        let envelope = match crate::wire::roundtrip(&envelope) {
            Ok(e) => e,
            Err(e) => {
                self.oracle.violations.push(format!(
                    "{envelope:?} does not survive the wire format: {e}"
                ));
                return;
            }
        };
        if let Some(hostile) = self.hostile.as_mut() {
            hostile.tap_message(&envelope);
        }
        self.transmit(envelope);
    }

    fn transmit(&mut self, envelope: Envelope) {
        let key = StreamKey {
            from: envelope.from,
            to: envelope.to.addr,
        };
        match self
            .net
            .stream_send(&self.config.net, &mut self.rng, self.now, key, &envelope)
        {
            Fate::Deliver {
                at,
                generation,
                seq,
            } => self.push(
                at,
                Happening::StreamArrival {
                    key,
                    generation,
                    seq,
                    envelope,
                },
            ),
            Fate::Broken { reconnect_at } => self.push(reconnect_at, Happening::Reconnect { key }),
            Fate::Queued => {}
        }
    }

    fn observe(&mut self, at: ProcessId, event: &Event) {
        let line = format!("{:>10.3}s {at}: {event:?}", self.now.as_secs_f64());
        line.hash(&mut self.hasher);
        if self.config.trace {
            self.trace.push(line);
            self.events.push((self.now, at, event.clone()));
        }
        if let Event::ActiveSetInstalled { seated, .. } = event {
            self.knows_a_set_since.entry(at).or_insert(self.now);
            if *seated {
                self.seated_since.entry(at).or_insert(self.now);
            } else {
                self.seated_since.remove(&at);
            }
        }
        let cluster = slot_of(at.addr)
            .and_then(|s| self.slots.get(s)?.node.as_ref()?.active_set())
            .map(|v| v.cluster);
        if let Event::ActiveSetInstalled {
            epoch,
            removed,
            source: crate::event::SetSource::Decided,
            ..
        } = event
            && cluster.is_some_and(|cluster| self.judged_decisions.insert((cluster, *epoch)))
        {
            // A member the decider itself still wanted seated was removed by an
            // earlier vote that Paxos had to carry through, not by a verdict.
            let wanted = self.proposed.get(&at).cloned().unwrap_or_default();
            let healthy: Vec<ProcessId> = removed
                .iter()
                .copied()
                .filter(|m| self.healthy_and_connected(at, *m))
                .collect();
            for member in &healthy {
                if wanted.contains(member) {
                    self.oracle.stats.carried_evictions += 1;
                } else {
                    self.oracle.stats.healthy_evictions += 1;
                }
            }
        }
        if let Event::ProposalStarted { members, .. } = event {
            self.proposed.insert(at, members.clone());
        }
        if let Event::Enter { .. } = event {
            self.last_entry = self.now;
            if !self.reaches_quorum(at) {
                self.oracle.note_minority_entry();
            }
        }
        let running: BTreeSet<ProcessId> = if matches!(
            event,
            Event::MemberFailed { .. } | Event::ActiveSetInstalled { .. }
        ) {
            self.slots
                .iter()
                .filter_map(|s| s.node.as_ref().map(Node::me))
                .collect()
        } else {
            BTreeSet::new()
        };
        self.oracle
            .on_event(self.now, at, cluster, event, |p| running.contains(p));
    }

    /// A process that nothing wrong happened to: running, not paused or cut off
    /// from `decider` in the last [`SETTLED`], not leaving. Removing it from the
    /// active set is a needless reconfiguration (a stale verdict acted on).
    fn healthy_and_connected(&self, decider: ProcessId, member: ProcessId) -> bool {
        const SETTLED: Duration = Duration::from_secs(2);
        let Some(slot) = slot_of(member.addr) else {
            return false;
        };
        let settled = |at: Option<Duration>| at.is_none_or(|t| self.now >= t + SETTLED);
        self.running(&member)
            && self.slots[slot].paused_until.is_none()
            && settled(self.slots[slot].resumed_at)
            && settled(self.last_heal)
            && !self.net.has_cuts()
            && !self.leavers.contains(&member)
            && member != decider
    }

    /// The newest active set any running process knows.
    fn latest_decided_set(&self) -> Option<ActiveSet> {
        self.slots
            .iter()
            .filter_map(|s| s.node.as_ref()?.active_set().cloned())
            .max_by_key(|v| (v.cluster.seat_key(), std::cmp::Reverse(v.epoch)))
            .and_then(|oldest_cluster| {
                self.slots
                    .iter()
                    .filter_map(|s| s.node.as_ref()?.active_set().cloned())
                    .filter(|v| v.same_cluster(&oldest_cluster))
                    .max_by_key(|v| v.epoch)
            })
    }

    /// Whether `process` can talk both ways with a quorum of the newest active set
    /// (running, unpaused members, no cut either way).
    fn reaches_quorum(&self, process: ProcessId) -> bool {
        let Some(set) = self.latest_decided_set() else {
            return false;
        };
        let reachable: BTreeSet<ProcessId> = set
            .members
            .iter()
            .copied()
            .filter(|m| {
                *m == process
                    || (self.running(m)
                        && slot_of(m.addr).is_some_and(|s| self.slots[s].paused_until.is_none())
                        && !self.net.is_blocked(process.addr, m.addr)
                        && !self.net.is_blocked(m.addr, process.addr))
            })
            .collect();
        set.is_quorum(&reachable)
    }

    /// Whether losing `slot` now would leave every known active set with a quorum
    /// of healthy members (so the cluster can still move on).
    fn can_lose(&self, slot: usize) -> bool {
        let Some(process) = self.process_of(slot) else {
            return true;
        };
        let healthy = |p: &ProcessId| {
            *p != process
                && self.running(p)
                && slot_of(p.addr).is_some_and(|s| self.slots[s].paused_until.is_none())
        };
        let sets: Vec<ActiveSet> = self
            .slots
            .iter()
            .filter_map(|s| s.node.as_ref()?.active_set().cloned())
            .filter(|v| v.contains(&process))
            .collect();
        if sets.is_empty() {
            return true;
        }
        // Losing a member keeps the cluster live only when nothing is cut, every
        // other member of every known set is healthy, and what remains of each
        // set is still a quorum of it.
        !self.net.has_cuts()
            && sets.iter().all(|set| {
                let rest: BTreeSet<ProcessId> =
                    set.members.iter().copied().filter(healthy).collect();
                rest.len() + 1 == set.members.len() && set.is_quorum(&rest)
            })
    }

    fn act(&mut self, action: Action) {
        if self.config.trace {
            self.trace
                .push(format!("{:>10.3}s ** {action:?}", self.now.as_secs_f64()));
        }
        match action {
            Action::Start { slot, seeds } => self.start(slot, seeds),
            Action::Request { slot, count } => {
                for _ in 0..count {
                    let client = Client {
                        lock: LockName::default_lock(),
                        hold: self.config.hold,
                        vanishes_after: None,
                        try_only: false,
                    };
                    self.acquire(slot, client);
                }
            }
            Action::Acquire { slot, client } => self.acquire(slot, client),
            Action::Leave { slot } => {
                if self.config.keep_quorum && !self.can_lose(slot) {
                    self.skipped_faults += 1;
                    return;
                }
                if let Some(process) = self.process_of(slot) {
                    self.leavers.insert(process);
                }
                self.deliver(slot, Input::Leave);
            }
            Action::Crash { slot } => {
                if self.config.keep_quorum && !self.can_lose(slot) {
                    self.skipped_faults += 1;
                    return;
                }
                if let Some(node) = self.slots.get_mut(slot).and_then(|s| s.node.take()) {
                    self.slots[slot].paused_until = None;
                    self.slots[slot].paused_inbox.clear();
                    self.slots[slot].clients.clear();
                    self.oracle.on_stop(node.me());
                    self.streams_break(node.me());
                }
            }
            Action::Pause { slot, duration } => {
                if self.config.keep_quorum && !self.can_lose(slot) {
                    self.skipped_faults += 1;
                    return;
                }
                if let Some(state) = self.slots.get_mut(slot)
                    && state.node.is_some()
                    && state.paused_until.is_none()
                {
                    state.paused_until = Some(self.now + duration);
                    self.push(self.now + duration, Happening::Resume { slot });
                }
            }
            Action::Cut { from, to } => {
                self.had_partition = true;
                for f in &from {
                    for t in &to {
                        if f != t {
                            self.net.cut(slot_addr(*f), slot_addr(*t));
                        }
                    }
                }
            }
            Action::Stall { from, to } => {
                self.had_partition = true;
                for f in &from {
                    for t in &to {
                        if f != t {
                            self.net.stall(slot_addr(*f), slot_addr(*t));
                        }
                    }
                }
            }
            Action::HealStreams => {
                self.last_heal = Some(self.now);
                for envelope in self.net.heal_streams() {
                    self.transmit(envelope);
                }
            }
            Action::Heal => {
                self.last_heal = Some(self.now);
                for envelope in self.net.heal() {
                    self.transmit(envelope);
                }
            }
            Action::BreakStreams { slot } => {
                if let Some(process) = self.process_of(slot) {
                    for peer in 0..self.slots.len() {
                        let key = StreamKey {
                            from: process,
                            to: slot_addr(peer),
                        };
                        if let Fate::Broken { reconnect_at } =
                            self.net.break_stream(&self.config.net, self.now, key)
                        {
                            self.push(reconnect_at, Happening::Reconnect { key });
                        }
                    }
                }
            }
        }
    }

    fn start(&mut self, slot: usize, seeds: Vec<usize>) {
        if slot >= self.slots.len() || self.slots[slot].node.is_some() {
            return;
        }
        // The incarnation is the start time, as in production: a restart is later.
        let incarnation = 1_700_000_000_000_000 + self.now.as_micros() as u64 + slot as u64;
        let process = ProcessId::new(slot_addr(slot), incarnation);
        let seeds = seeds
            .into_iter()
            .filter(|s| *s != slot)
            .map(slot_addr)
            .collect();
        let node_seed = self.rng.random::<u64>();
        let durability = match (&self.slots[slot].disk, self.config.durable) {
            (_, false) => Durability::Off,
            (None, true) => Durability::Fresh,
            (Some(state), true) => Durability::Restored(state.clone()),
        };
        let node = Node::with_durability(
            process,
            seeds,
            self.config.settings.clone(),
            node_seed,
            self.now,
            durability,
        );
        let state = &mut self.slots[slot];
        state.node = Some(node);
        state.clients.clear();
        state.started_once = true;
        self.collect(slot);
    }

    fn resume(&mut self, slot: usize) {
        let Some(state) = self.slots.get_mut(slot) else {
            return;
        };
        state.paused_until = None;
        state.resumed_at = Some(self.now);
        let inbox = std::mem::take(&mut state.paused_inbox);
        for input in inbox {
            self.deliver(slot, input);
        }
    }

    fn finish(mut self) -> Report {
        // Spectators are served through members: anyone still waiting is a
        // liveness failure, seated or not.
        let mut unserved = Vec::new();
        let spectators_waiting = 0;
        let mut stranded = 0;
        for (slot, state) in self.slots.iter().enumerate() {
            if let Some(node) = &state.node {
                let outstanding = node.waiting_tickets();
                if outstanding == 0 {
                    continue;
                }
                // Every seed it was given is gone for good: it cannot join, as
                // designed (it keeps trying and logs that it does).
                // A node restarted from its data directory also knows the
                // addresses of its last set: stranded only if all are gone too.
                let old_members: Vec<usize> = node
                    .recovering_from()
                    .map(|set| set.members.iter().filter_map(|m| slot_of(m.addr)).collect())
                    .unwrap_or_default();
                // One that found a cluster only after the faults ended, without
                // a live seed, was let in by chance (a member announcing to it):
                // the bound from the heal does not hold for it either.
                let joined_in_time = self
                    .knows_a_set_since
                    .get(&node.me())
                    .is_some_and(|at| *at <= self.config.faults_end);
                let seeds_gone = !joined_in_time
                    && state
                        .seeds
                        .iter()
                        .chain(old_members.iter())
                        .filter(|s| **s != slot)
                        .all(|s| self.slots.get(*s).is_none_or(|seed| seed.node.is_none()));
                if seeds_gone {
                    stranded += outstanding;
                } else {
                    unserved.push((node.me(), outstanding));
                }
            }
        }
        let quorum_lost = self.latest_decided_set().is_some_and(|set| {
            let alive: BTreeSet<ProcessId> = set
                .members
                .iter()
                .copied()
                .filter(|m| self.running(m))
                .collect();
            !set.is_quorum(&alive)
        });
        if !unserved.is_empty() && !quorum_lost {
            let list: Vec<String> = unserved.iter().map(|(p, n)| format!("{p}: {n}")).collect();
            self.oracle.violations.push(format!(
                "tickets still waiting {:?} after the last fault healed: {}",
                self.config.liveness_bound,
                list.join(", ")
            ));
        }
        Report {
            seed: self.config.seed,
            stats: self.oracle.stats.clone(),
            violations: std::mem::take(&mut self.oracle.violations),
            unserved,
            quorum_lost,
            skipped_faults: self.skipped_faults,
            spectators_waiting,
            stranded,
            had_partition: self.had_partition,
            last_entry: self.last_entry,
            trace_hash: self.hasher.finish(),
            trace: self.trace,
            events: self.events,
            hostile_sent: self.hostile.as_ref().map_or(0, |h| h.sent),
            hostile_refused_at_wire: self.hostile_refused_at_wire,
            highest_clock: self.clocks.values().copied().max().unwrap_or(0),
        }
    }
}
