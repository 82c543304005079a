//! Spectators are served through seated members, the way Consul's clients go
//! through its servers: a spectator forwards each of its clients' tickets to
//! one member of the active set, which asks for the lock as for a ticket of
//! its own and holds it until the spectator releases.
//!
//! Why not rotate seats: every rotation is a Paxos round and a new epoch,
//! and the epoch is the high part of every fence (2^24 of them). Proxying
//! keeps the set stable, so a spectator's entry costs the seated members'
//! 2(N-1) messages plus three of its own (acquire, granted, release), and
//! the set changes only on joins, leaves and failures.
//!
//! While it holds for a spectator the member sends a heartbeat every
//! [`HEARTBEAT`]. A spectator that hears nothing for [`SILENCE`] tells its
//! client the lock is lost; the member lets go only when the spectator
//! releases, leaves, or is declared failed, which takes longer than that.
//!
//! Long because both ends of one exchange live here, spectator and member, so each
//! message's sender and receiver can be read side by side.

use super::*;
use crate::event::RefusedReason;
use crate::protocol::message::ProxyNews;

/// Tickets a member takes on for spectators are numbered from here, apart
/// from the tickets of its own clients.
pub const PROXY_TICKETS: Ticket = 1 << 62;
/// How often a member holding for a spectator says so.
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// A spectator holding through a member that has been silent this long
/// counts the lock as lost.
pub const SILENCE: Duration = Duration::from_millis(1000);
/// A ticket still waiting is asked for again this often: asking twice is
/// harmless, and it covers any way the member may have forgotten it.
pub const REASK: Duration = Duration::from_secs(2);
/// Tickets one member serves for one spectator at most, and in all.
const MAX_PER_SPECTATOR: usize = 1024;
const MAX_SERVED: usize = 16 * 1024;

/// A spectator's ticket this member serves.
#[derive(Clone, Debug)]
pub(super) struct Served {
    spectator: ProcessId,
    their_ticket: Ticket,
    lock: LockName,
    /// The fence it holds with, once entered.
    granted: Option<Fence>,
    last_heartbeat: Duration,
    /// The spectator was declared failed while we held for it: heartbeats
    /// stop, and the lock goes back at this time, when the spectator's client
    /// has surely been told the lock is lost.
    letting_go_at: Option<Duration>,
}

/// A ticket of this node's client, forwarded to a member.
#[derive(Clone, Debug)]
pub(super) struct Forwarded {
    to: ProcessId,
    try_only: bool,
    asked_at: Duration,
    /// The fence and when, once the member entered for it.
    granted: Option<(Fence, Duration)>,
    /// When the member last said anything about it.
    last_news: Duration,
    /// When we last asked the member for it.
    last_asked: Duration,
    lost: bool,
}

/// Both sides' state.
#[derive(Default)]
pub(super) struct Proxy {
    /// As a member: our ticket for each spectator's ticket we serve.
    served: BTreeMap<Ticket, Served>,
    by_spectator: BTreeMap<(ProcessId, LockName, Ticket), Ticket>,
    next_ticket: Ticket,
    /// As a spectator: our clients' tickets, forwarded.
    forwarded: BTreeMap<(LockName, Ticket), Forwarded>,
}

impl Proxy {
    /// Whose ticket `ticket` is: the spectator we carry it for, or `None` for
    /// our own clients'.
    pub(super) fn origin_of(&self, ticket: Ticket) -> Option<ProcessId> {
        self.served.get(&ticket).map(|s| s.spectator)
    }
}

impl Node {
    // ---- as a spectator --------------------------------------------------

    /// The member to forward to: one of the seated, picked by our rank among
    /// the spectators we know. Members take turns among their own clients and
    /// the spectators they carry, so an even spread is a fair one: picked by
    /// port, 5 spectators once fell 4 on one member and none on another, whose
    /// node then entered 5 times as often as theirs.
    fn proxy_target(&self, not: Option<ProcessId>) -> Option<ProcessId> {
        let set = self.active_set.as_ref()?;
        let members: Vec<ProcessId> = set
            .members
            .iter()
            .copied()
            .filter(|m| *m != self.me && Some(*m) != not)
            .collect();
        if members.is_empty() {
            return None;
        }
        let rank = self
            .live_processes()
            .iter()
            .filter(|p| **p < self.me && !set.contains(p))
            .count();
        // From our place on, the first member usable now: one we have not
        // heard from yet (right after joining) is passed over until we have.
        (0..members.len())
            .map(|step| members[(rank + step) % members.len()])
            .find(|m| self.is_usable(m))
    }

    /// Forward the local tickets waiting in line while we have no seat.
    /// Returns whether any ticket still waits for lack of a member to ask.
    pub(super) fn forward_waiting(&mut self) -> bool {
        let Some(target) = self.proxy_target(None) else {
            return true;
        };
        let names: Vec<LockName> = self
            .locks
            .busy()
            .filter(|(_, slot)| !slot.line.is_empty() && slot.ra.is_idle())
            .map(|(name, _)| name.clone())
            .collect();
        for lock in names {
            let line = match self.locks.get_mut(&lock) {
                Some(slot) => std::mem::take(&mut slot.line),
                None => continue,
            };
            for waiter in line {
                if waiter.ticket >= PROXY_TICKETS {
                    // A spectator's ticket we took on while seated: we have
                    // no seat now, so it must ask a member that has.
                    self.give_back_served(waiter.ticket, ProxyNews::AskElsewhere);
                    continue;
                }
                self.forward(
                    lock.clone(),
                    waiter.ticket,
                    waiter.try_only,
                    waiter.asked_at,
                    target,
                );
            }
        }
        false
    }

    fn forward(
        &mut self,
        lock: LockName,
        ticket: Ticket,
        try_only: bool,
        asked_at: Duration,
        to: ProcessId,
    ) {
        self.emit(Event::Forwarded {
            lock: lock.clone(),
            ticket,
            to,
        });
        self.send(
            to,
            Body::ProxyAcquire {
                lock: lock.clone(),
                ticket,
                try_only,
            },
        );
        self.proxy.forwarded.insert(
            (lock, ticket),
            Forwarded {
                to,
                try_only,
                asked_at,
                granted: None,
                last_news: self.now,
                last_asked: self.now,
                lost: false,
            },
        );
    }

    /// Our client gives a forwarded ticket back. Returns false if it is not
    /// one of ours.
    pub(super) fn release_forwarded(&mut self, lock: &LockName, ticket: Ticket) -> bool {
        let Some(forwarded) = self.proxy.forwarded.remove(&(lock.clone(), ticket)) else {
            return false;
        };
        self.send_proxy_release(forwarded.to, lock, ticket);
        match forwarded.granted {
            Some((fence, since)) => self.emit(Event::ExitVia {
                lock: lock.clone(),
                ticket,
                fence,
                via: forwarded.to,
                held: self.now.saturating_sub(since),
            }),
            None => self.emit(Event::Cancelled {
                lock: lock.clone(),
                ticket,
            }),
        }
        true
    }

    pub(super) fn on_proxy_news(
        &mut self,
        from: ProcessId,
        lock: LockName,
        ticket: Ticket,
        news: ProxyNews,
    ) {
        let key = (lock.clone(), ticket);
        let ours = self.proxy.forwarded.get(&key).is_some_and(|f| f.to == from);
        if !ours {
            // A ticket we released or moved elsewhere, and the member did not
            // hear (a broken stream): it must not hold the lock for it.
            if matches!(news, ProxyNews::Granted { .. } | ProxyNews::Held) {
                self.send_proxy_release(from, &lock, ticket);
            }
            return;
        }
        let Some(forwarded) = self.proxy.forwarded.get_mut(&key) else {
            return;
        };
        forwarded.last_news = self.now;
        match news {
            ProxyNews::Granted { fence } => {
                if forwarded.granted.is_some() || forwarded.lost {
                    return;
                }
                forwarded.granted = Some((fence, self.now));
                let waited = self.now.saturating_sub(forwarded.asked_at);
                self.emit(Event::EnterVia {
                    lock: lock.clone(),
                    ticket,
                    fence,
                    via: from,
                    waited,
                });
                self.out.push(Output::Granted {
                    lock,
                    ticket,
                    fence,
                });
            }
            ProxyNews::Held => {}
            ProxyNews::Lost => self.lose_forwarded(&key, LossReason::ProxyLost),
            ProxyNews::NotFree => {
                self.proxy.forwarded.remove(&key);
                self.refuse(lock, ticket, RefusedReason::NotFree);
            }
            ProxyNews::TooMany => {
                self.proxy.forwarded.remove(&key);
                self.refuse(lock, ticket, RefusedReason::TooMany);
            }
            ProxyNews::AskElsewhere => {
                if forwarded.granted.is_some() {
                    self.lose_forwarded(&key, LossReason::ProxyLost);
                } else {
                    self.forward_again(&key, Some(from));
                }
            }
        }
    }

    fn lose_forwarded(&mut self, key: &(LockName, Ticket), why: LossReason) {
        let Some(forwarded) = self.proxy.forwarded.get_mut(key) else {
            return;
        };
        let Some((fence, _)) = forwarded.granted else {
            return;
        };
        if forwarded.lost {
            return;
        }
        forwarded.lost = true;
        let (lock, ticket) = key.clone();
        self.emit(Event::Lost {
            lock: lock.clone(),
            ticket,
            fence: Some(fence),
            why,
        });
        self.out.push(Output::Lost { lock, ticket, why });
    }

    pub(super) fn lose_all_forwarded(&mut self, why: LossReason) {
        let keys: Vec<(LockName, Ticket)> = self.proxy.forwarded.keys().cloned().collect();
        for key in keys {
            self.lose_forwarded(&key, why);
        }
    }

    /// Ask another member for a ticket still waiting (its member went away).
    fn forward_again(&mut self, key: &(LockName, Ticket), not: Option<ProcessId>) {
        let Some(old) = self.proxy.forwarded.get(key).cloned() else {
            return;
        };
        let Some(target) = self.proxy_target(not) else {
            // No member to ask now: wait, and try again on the next tick.
            return;
        };
        if target == old.to {
            return;
        }
        // The old member may still be there: take the ticket back from it.
        self.send_proxy_release(old.to, &key.0, key.1);
        self.forward(key.0.clone(), key.1, old.try_only, old.asked_at, target);
    }

    /// Every tick: a holder whose member fell silent counts the lock lost; a
    /// ticket waiting at a member that has gone (or lost its seat) asks
    /// another.
    pub(super) fn check_forwarded(&mut self) {
        let keys: Vec<(LockName, Ticket)> = self.proxy.forwarded.keys().cloned().collect();
        for key in keys {
            let Some(forwarded) = self.proxy.forwarded.get(&key).cloned() else {
                continue;
            };
            let seated = self
                .active_set
                .as_ref()
                .is_some_and(|s| s.contains(&forwarded.to));
            let usable = seated && self.is_usable(&forwarded.to);
            if forwarded.granted.is_some() {
                let silent = self.now.saturating_sub(forwarded.last_news) >= SILENCE;
                if silent || !usable {
                    self.lose_forwarded(&key, LossReason::ProxySilent);
                }
            } else if !usable {
                self.forward_again(&key, Some(forwarded.to));
            } else if self.now.saturating_sub(forwarded.last_asked) >= REASK {
                if let Some(f) = self.proxy.forwarded.get_mut(&key) {
                    f.last_asked = self.now;
                }
                self.send(
                    forwarded.to,
                    Body::ProxyAcquire {
                        lock: key.0.clone(),
                        ticket: key.1,
                        try_only: forwarded.try_only,
                    },
                );
            }
        }
    }

    /// After a stream to `peer` broke: ask again for what waits there (a
    /// member takes a repeated ask as the same ticket).
    pub(super) fn reforward_to(&mut self, peer: SocketAddr) {
        let again: Vec<(LockName, Ticket, ProcessId, bool)> = self
            .proxy
            .forwarded
            .iter()
            .filter(|(_, f)| f.to.addr == peer && f.granted.is_none())
            .map(|((lock, ticket), f)| (lock.clone(), *ticket, f.to, f.try_only))
            .collect();
        for (lock, ticket, to, try_only) in again {
            self.send(
                to,
                Body::ProxyAcquire {
                    lock,
                    ticket,
                    try_only,
                },
            );
        }
        let granted: Vec<(ProcessId, LockName, Ticket, Fence)> = self
            .proxy
            .served
            .values()
            .filter(|s| s.spectator.addr == peer)
            .filter_map(|s| Some((s.spectator, s.lock.clone(), s.their_ticket, s.granted?)))
            .collect();
        for (spectator, lock, ticket, fence) in granted {
            self.send(
                spectator,
                Body::ProxyNews {
                    lock,
                    ticket,
                    news: ProxyNews::Granted { fence },
                },
            );
        }
    }

    /// Leaving: our forwarded tickets end (the waiting ones refused, the
    /// held ones lost), and their members are told.
    pub(super) fn drop_forwarded(&mut self) -> usize {
        let all = std::mem::take(&mut self.proxy.forwarded);
        let count = all.len();
        for ((lock, ticket), forwarded) in all {
            self.send_proxy_release(forwarded.to, &lock, ticket);
            match forwarded.granted {
                Some((fence, _)) if !forwarded.lost => {
                    self.emit(Event::Lost {
                        lock: lock.clone(),
                        ticket,
                        fence: Some(fence),
                        why: LossReason::NodeLeaving,
                    });
                    self.out.push(Output::Lost {
                        lock,
                        ticket,
                        why: LossReason::NodeLeaving,
                    });
                }
                Some(_) => {}
                None => self.refuse(lock, ticket, RefusedReason::NodeLeaving),
            }
        }
        count
    }

    pub(super) fn forwarded_progress(
        &self,
        lock: &LockName,
        ticket: Ticket,
    ) -> Option<TicketProgress> {
        let forwarded = self.proxy.forwarded.get(&(lock.clone(), ticket))?;
        Some(TicketProgress {
            role: self.role(),
            ahead_here: 0,
            waiting_for: vec![forwarded.to],
            seat_position: 0,
            seat_line: 0,
            holding: forwarded.granted.is_some(),
        })
    }

    pub(super) fn forwarded_waiting(&self) -> usize {
        self.proxy
            .forwarded
            .values()
            .filter(|f| f.granted.is_none())
            .count()
    }

    pub(super) fn holds_via(&self, lock: &LockName, ticket: Ticket) -> bool {
        self.proxy
            .forwarded
            .get(&(lock.clone(), ticket))
            .is_some_and(|f| f.granted.is_some())
    }

    /// Locks our clients hold through members (for `ra status`).
    pub(super) fn held_via(&self) -> Vec<HeldLock> {
        self.proxy
            .forwarded
            .iter()
            .filter(|(_, f)| !f.lost)
            .filter_map(|((lock, _), f)| {
                let (fence, since) = f.granted?;
                Some(HeldLock {
                    lock: lock.clone(),
                    fence,
                    held: self.now.saturating_sub(since),
                })
            })
            .collect()
    }

    // ---- as a member -----------------------------------------------------

    pub(super) fn on_proxy_acquire(
        &mut self,
        from: ProcessId,
        lock: LockName,
        ticket: Ticket,
        try_only: bool,
    ) {
        let seated = self
            .active_set
            .as_ref()
            .is_some_and(|s| s.contains(&self.me));
        let news = |news| Body::ProxyNews {
            lock: lock.clone(),
            ticket,
            news,
        };
        if !seated || self.life != Life::Running {
            self.send(from, news(ProxyNews::AskElsewhere));
            return;
        }
        if self.spectator_gone(&from) {
            // An ask older than our verdict (it waited in a stalled stream):
            // served now, no later verdict would ever take the lock back. A
            // spectator that is alive after all asks again every `REASK`.
            self.drop_message(from, DropReason::SenderHeldGone);
            return;
        }
        let key = (from, lock.clone(), ticket);
        if let Some(ours) = self.proxy.by_spectator.get(&key) {
            // Asked again (a broken stream): the same ticket.
            if let Some(fence) = self.proxy.served.get(ours).and_then(|s| s.granted) {
                self.send(from, news(ProxyNews::Granted { fence }));
            }
            return;
        }
        let of_this_spectator = self
            .proxy
            .by_spectator
            .keys()
            .filter(|(s, _, _)| *s == from)
            .count();
        if of_this_spectator >= MAX_PER_SPECTATOR || self.proxy.served.len() >= MAX_SERVED {
            self.send(from, news(ProxyNews::TooMany));
            return;
        }
        let ours = PROXY_TICKETS.saturating_add(self.proxy.next_ticket);
        self.proxy.next_ticket = self.proxy.next_ticket.saturating_add(1);
        self.proxy.by_spectator.insert(key, ours);
        self.proxy.served.insert(
            ours,
            Served {
                spectator: from,
                their_ticket: ticket,
                lock: lock.clone(),
                granted: None,
                last_heartbeat: self.now,
                letting_go_at: None,
            },
        );
        self.emit(Event::Serving {
            lock: lock.clone(),
            ticket: ours,
            spectator: from,
            their_ticket: ticket,
        });
        self.on_acquire(lock, ours, try_only);
    }

    pub(super) fn on_proxy_release(&mut self, from: ProcessId, lock: LockName, ticket: Ticket) {
        let Some(ours) = self
            .proxy
            .by_spectator
            .remove(&(from, lock.clone(), ticket))
        else {
            return;
        };
        self.proxy.served.remove(&ours);
        self.on_release(lock, ours);
    }

    /// Tell the spectator about a ticket we serve, and forget it.
    fn give_back_served(&mut self, ours: Ticket, news: ProxyNews) {
        let Some(served) = self.proxy.served.remove(&ours) else {
            return;
        };
        self.proxy.by_spectator.remove(&(
            served.spectator,
            served.lock.clone(),
            served.their_ticket,
        ));
        self.send(
            served.spectator,
            Body::ProxyNews {
                lock: served.lock,
                ticket: served.their_ticket,
                news,
            },
        );
    }

    /// What the lock code says about tickets we serve goes to their
    /// spectators instead of our clients.
    pub(super) fn route_served_outputs(&mut self) {
        if self.proxy.served.is_empty() {
            return;
        }
        let outputs = std::mem::take(&mut self.out);
        for output in outputs {
            match output {
                Output::Granted { ticket, fence, .. }
                    if self.proxy.served.contains_key(&ticket) =>
                {
                    let now = self.now;
                    if let Some(served) = self.proxy.served.get_mut(&ticket) {
                        served.granted = Some(fence);
                        served.last_heartbeat = now;
                        let (to, lock, theirs) =
                            (served.spectator, served.lock.clone(), served.their_ticket);
                        self.send(
                            to,
                            Body::ProxyNews {
                                lock,
                                ticket: theirs,
                                news: ProxyNews::Granted { fence },
                            },
                        );
                    }
                }
                Output::Lost { ticket, .. } if self.proxy.served.contains_key(&ticket) => {
                    if let Some(served) = self.proxy.served.get(&ticket).cloned() {
                        self.send(
                            served.spectator,
                            Body::ProxyNews {
                                lock: served.lock,
                                ticket: served.their_ticket,
                                news: ProxyNews::Lost,
                            },
                        );
                    }
                }
                Output::Refused { ticket, why, .. } if self.proxy.served.contains_key(&ticket) => {
                    let news = match why {
                        RefusedReason::NotFree => ProxyNews::NotFree,
                        RefusedReason::TooMany => ProxyNews::TooMany,
                        RefusedReason::NodeLeaving => ProxyNews::AskElsewhere,
                    };
                    self.give_back_served(ticket, news);
                }
                other => self.out.push(other),
            }
        }
    }

    /// Every tick: heartbeats for what we hold for spectators, and the locks
    /// of failed spectators given back once their grace is over.
    pub(super) fn send_heartbeats(&mut self) {
        let now = self.now;
        let due: Vec<(ProcessId, LockName, Ticket)> = self
            .proxy
            .served
            .values_mut()
            .filter(|s| {
                s.granted.is_some()
                    && s.letting_go_at.is_none()
                    && now.saturating_sub(s.last_heartbeat) >= HEARTBEAT
            })
            .map(|s| {
                s.last_heartbeat = now;
                (s.spectator, s.lock.clone(), s.their_ticket)
            })
            .collect();
        for (to, lock, ticket) in due {
            self.send(
                to,
                Body::ProxyNews {
                    lock,
                    ticket,
                    news: ProxyNews::Held,
                },
            );
        }
        let over: Vec<Ticket> = self
            .proxy
            .served
            .iter()
            .filter(|(_, s)| s.letting_go_at.is_some_and(|at| now >= at))
            .map(|(t, _)| *t)
            .collect();
        for ticket in over {
            self.let_go(ticket);
        }
    }

    fn let_go(&mut self, ticket: Ticket) {
        if let Some(served) = self.proxy.served.remove(&ticket) {
            self.proxy.by_spectator.remove(&(
                served.spectator,
                served.lock.clone(),
                served.their_ticket,
            ));
            self.on_release(served.lock, ticket);
        }
    }

    /// Stop waiting for a spectator's ticket, and tell it to ask again.
    fn give_up_waiting(&mut self, ticket: Ticket) {
        if let Some(served) = self.proxy.served.get(&ticket).cloned() {
            self.let_go(ticket);
            self.send(
                served.spectator,
                Body::ProxyNews {
                    lock: served.lock,
                    ticket: served.their_ticket,
                    news: ProxyNews::AskElsewhere,
                },
            );
        }
    }

    /// A spectator failed or left: what we wait for on its behalf is given
    /// back now, and what we hold for it once its client has surely been
    /// told (it stops hearing our heartbeats). Proof that the process is
    /// gone (`at_once`) needs no grace: nothing of it runs any more.
    pub(super) fn drop_served_for(&mut self, spectator: ProcessId, at_once: bool) {
        let ours: Vec<(Ticket, bool)> = self
            .proxy
            .served
            .iter()
            .filter(|(_, s)| s.spectator == spectator && s.letting_go_at.is_none())
            .map(|(t, s)| (*t, s.granted.is_some()))
            .collect();
        let grace_over = self.now + SILENCE + HEARTBEAT;
        for (ticket, holding) in ours {
            if holding && !at_once {
                if let Some(served) = self.proxy.served.get_mut(&ticket) {
                    served.letting_go_at = Some(grace_over);
                    let (lock, theirs) = (served.lock.clone(), served.their_ticket);
                    // It may still hear us: say so rather than only fall silent.
                    self.send(
                        spectator,
                        Body::ProxyNews {
                            lock,
                            ticket: theirs,
                            news: ProxyNews::Lost,
                        },
                    );
                }
            } else if holding {
                self.let_go(ticket);
            } else {
                // It may be alive after all (a false verdict): it asks again.
                self.give_up_waiting(ticket);
            }
        }
    }

    /// Whether this node has a verdict that `spectator` is gone: declared
    /// down, leaving, proved gone, or replaced by a later process at its
    /// address that we heard from ourselves (a rumour alone may be forged).
    fn spectator_gone(&self, spectator: &ProcessId) -> bool {
        self.gone.contains(spectator)
            || self.leaving_peers.contains_key(spectator)
            || self.peers.get(&spectator.addr).is_some_and(|peer| {
                let later = peer.id.process;
                (later == *spectator && !peer.alive)
                    || (later.incarnation > spectator.incarnation
                        && self.heard_from(&later).is_some())
            })
    }

    /// Every tick: tickets served for a spectator found gone by another way
    /// than the verdict's own event (an ask from a process we never knew,
    /// whose successor at its address we met later) are given back too.
    pub(super) fn drop_served_for_gone(&mut self) {
        let gone: BTreeSet<ProcessId> = self
            .proxy
            .served
            .values()
            .filter(|s| s.letting_go_at.is_none())
            .map(|s| s.spectator)
            .filter(|s| self.spectator_gone(s))
            .collect();
        for spectator in gone {
            let proved = self.gone.contains(&spectator);
            self.drop_served_for(spectator, proved);
        }
    }

    /// Tell the member that carries `ticket` for us that we are done with it.
    fn send_proxy_release(&mut self, member: ProcessId, lock: &LockName, ticket: Ticket) {
        self.send(
            member,
            Body::ProxyRelease {
                lock: lock.clone(),
                ticket,
            },
        );
    }

    /// The spectators we serve tickets for.
    pub(super) fn served_spectators(&self) -> BTreeSet<ProcessId> {
        self.proxy.served.values().map(|s| s.spectator).collect()
    }

    /// The spectator behind a ticket we serve, for the log.
    pub fn served_spectator(&self, ticket: Ticket) -> Option<ProcessId> {
        self.proxy.served.get(&ticket).map(|s| s.spectator)
    }
}
