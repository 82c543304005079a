//! Seeded random schedules: who starts when and through whom, bursts of
//! requests, and a mix of faults, all derived from one seed.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::hostile::Hostility;
use super::network::NetConfig;
use super::world::{Action, Client, Report, SimConfig, World};
use crate::protocol::lock::LockName;

/// The kinds of schedule the simulator draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Every fault kind, mixed.
    Everything,
    /// Partitions (symmetric and one-way) and pauses; no crashes.
    Partitions,
    /// Every fault kind, and bit flips in a share of the datagrams, as a
    /// damaged network or a hostile peer without the key would send them.
    Corrupted,
    /// Every fault kind, and a hostile peer (`sim::hostile`) sending until
    /// the faults end.
    Hostile(Hostility),
}

#[derive(Clone, Debug)]
pub struct Schedule {
    pub config: SimConfig,
    pub actions: Vec<(Duration, Action)>,
    pub until: Duration,
}

impl Schedule {
    pub fn run(self) -> Report {
        let mut world = World::new(self.config);
        for (at, action) in self.actions {
            world.schedule(at, action);
        }
        world.run(self.until)
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn between(rng: &mut SmallRng, low: Duration, high: Duration) -> Duration {
    let span = high.saturating_sub(low).as_millis() as u64;
    low + ms(rng.random_range(0..=span))
}

/// A random subset of `0..n` with at least one element.
fn some_of(rng: &mut SmallRng, n: usize) -> Vec<usize> {
    let picked: Vec<usize> = (0..n).filter(|_| rng.random_bool(0.5)).collect();
    if picked.is_empty() {
        vec![rng.random_range(0..n)]
    } else {
        picked
    }
}

/// The seeds a process is restarted with: the founder's command has none (as an
/// operator restarting it with the same command would), every other process
/// gets every address, as with a static seed list.
fn restart_seeds(slot: usize, slots: usize) -> Vec<usize> {
    if slot == 0 {
        Vec::new()
    } else {
        (0..slots).collect()
    }
}

pub fn random(seed: u64, mix: Mix) -> Schedule {
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let slots = rng.random_range(3..=6usize);
    let initial = rng.random_range(3..=slots);
    let mut config = SimConfig::new(seed, slots);
    config.settings.max_active = if rng.random_bool(0.8) {
        3
    } else {
        rng.random_range(2..=4)
    };
    config.hold = ms(rng.random_range(5..=80));
    config.net = NetConfig {
        loss: rng.random_range(0.0..0.05),
        duplicate: rng.random_range(0.0..0.03),
        stream_break: rng.random_range(0.0..0.01),
        slow_message: rng.random_range(0.0..0.03),
        ..NetConfig::default()
    };
    if mix == Mix::Corrupted {
        config.net.corrupt = rng.random_range(0.01..0.1);
    }
    if let Mix::Hostile(kind) = mix {
        config.hostile = Some(kind);
    }
    // Every other schedule gives each process a data directory that survives
    // its crashes (drawn from the seed, not the generator, so the rest of each
    // schedule stays what it was).
    config.durable = seed.is_multiple_of(2);
    let faults_start = ms(5_000);
    let faults_end = config.faults_end;
    let mut actions = Vec::new();

    // Starts: slot 0 founds; the others join through one or two random peers,
    // not always the founder, and sometimes through a peer that starts later.
    actions.push((
        Duration::ZERO,
        Action::Start {
            slot: 0,
            seeds: vec![],
        },
    ));
    // Seeds always include an earlier slot, so everyone can reach the founder.
    for slot in 1..initial {
        let mut seeds = vec![rng.random_range(0..slot)];
        if rng.random_bool(0.3) {
            seeds.push(rng.random_range(0..initial));
        }
        actions.push((
            between(&mut rng, ms(0), ms(1500)),
            Action::Start { slot, seeds },
        ));
    }
    // Late joiners, beyond the first nodes (and so often beyond max_active),
    // through any one member.
    for slot in initial..slots {
        let seeds = vec![rng.random_range(0..initial)];
        actions.push((
            between(&mut rng, faults_start, faults_end),
            Action::Start { slot, seeds },
        ));
    }

    // Bursts of clients through the whole fault phase, on one to three lock
    // names, holding for a random while; some go away early, waiting or holding.
    let names: Vec<LockName> = ["default", "jobs", "backups"][..rng.random_range(1..=3)]
        .iter()
        .filter_map(|n| LockName::new(n).ok())
        .collect();
    let mut t = faults_start;
    while t < faults_end {
        for slot in some_of(&mut rng, slots) {
            for _ in 0..rng.random_range(1..=3) {
                let hold = config.hold.mul_f64(rng.random_range(0.2..3.0));
                let vanishes_after = rng.random_bool(0.1).then(|| ms(rng.random_range(1..=300)));
                let client = Client {
                    lock: names[rng.random_range(0..names.len())].clone(),
                    hold,
                    vanishes_after,
                    try_only: rng.random_bool(0.05),
                };
                actions.push((t, Action::Acquire { slot, client }));
            }
        }
        t += between(&mut rng, ms(300), ms(2500));
    }

    let faults = rng.random_range(2..=6);
    for fault in 0..faults {
        let at = between(&mut rng, faults_start, faults_end - ms(500));
        let slot = rng.random_range(0..slots);
        let kind = match mix {
            Mix::Everything | Mix::Corrupted | Mix::Hostile(_) => rng.random_range(0..6),
            // At least one partition, then partitions and pauses.
            Mix::Partitions if fault == 0 => 3,
            Mix::Partitions => [3, 3, 4][rng.random_range(0..3)],
        };
        match kind {
            0 => {
                actions.push((at, Action::Crash { slot }));
                if rng.random_bool(0.7) {
                    let back = (at + between(&mut rng, ms(200), ms(6000))).min(faults_end);
                    actions.push((
                        back,
                        Action::Start {
                            slot,
                            seeds: restart_seeds(slot, slots),
                        },
                    ));
                }
            }
            1 => {
                actions.push((at, Action::Leave { slot }));
                if rng.random_bool(0.5) {
                    let back = (at + between(&mut rng, ms(1000), ms(6000))).min(faults_end);
                    actions.push((
                        back,
                        Action::Start {
                            slot,
                            seeds: restart_seeds(slot, slots),
                        },
                    ));
                }
            }
            2 => actions.push((at, Action::BreakStreams { slot })),
            3 => {
                let side = some_of(&mut rng, slots);
                let rest: Vec<usize> = (0..slots).filter(|s| !side.contains(s)).collect();
                // A cut breaks streams; a stall holds their messages in TCP's
                // retransmission queue and delivers them late, sometimes with
                // TCP healing a while before UDP.
                let stall = rng.random_bool(0.4);
                let cut = |from: Vec<usize>, to: Vec<usize>| {
                    if stall {
                        Action::Stall { from, to }
                    } else {
                        Action::Cut { from, to }
                    }
                };
                actions.push((at, cut(side.clone(), rest.clone())));
                if rng.random_bool(0.7) {
                    actions.push((at, cut(rest, side)));
                }
                let heal = (at + between(&mut rng, ms(500), ms(8000))).min(faults_end);
                if stall && rng.random_bool(0.5) {
                    let udp_heal = (heal + between(&mut rng, ms(100), ms(4000))).min(faults_end);
                    actions.push((heal, Action::HealStreams));
                    actions.push((udp_heal, Action::Heal));
                } else {
                    actions.push((heal, Action::Heal));
                }
            }
            4 => {
                let longest = faults_end.saturating_sub(at).min(ms(5000));
                let duration = between(&mut rng, ms(300), longest.max(ms(300)));
                actions.push((at, Action::Pause { slot, duration }));
            }
            _ => {
                // A crash inside the critical section is likely right after a burst.
                actions.push((at, Action::Request { slot, count: 1 }));
                actions.push((at + ms(rng.random_range(1..=60)), Action::Crash { slot }));
                actions.push((
                    (at + ms(2000)).min(faults_end),
                    Action::Start {
                        slot,
                        seeds: restart_seeds(slot, slots),
                    },
                ));
            }
        }
    }

    // Everything heals; crashed processes mostly come back; one last request each.
    actions.push((faults_end, Action::Heal));
    for slot in 0..slots {
        if rng.random_bool(0.6) {
            actions.push((
                faults_end,
                Action::Start {
                    slot,
                    seeds: restart_seeds(slot, slots),
                },
            ));
        }
        actions.push((faults_end + ms(500), Action::Request { slot, count: 1 }));
    }
    let until = faults_end + config.liveness_bound;
    Schedule {
        config,
        actions,
        until,
    }
}
