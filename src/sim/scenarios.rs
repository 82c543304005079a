//! Named schedules that always run: the cases that matter most, written out by
//! hand so each one happens for sure rather than by chance.
//!
//! Long because it is a list: each scenario is a short, separate schedule.

use std::time::Duration;

use super::network::NetConfig;
use super::schedule::Schedule;
use super::world::{Action, Client, SimConfig};
use crate::protocol::lock::LockName;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn calm(slots: usize) -> SimConfig {
    let mut config = SimConfig::new(1, slots);
    config.net = NetConfig::calm();
    config.trace = true;
    config
}

/// The same schedule with every datagram traced too (for debugging a scenario).
pub fn with_datagrams(mut schedule: Schedule) -> Schedule {
    schedule.config.trace_datagrams = true;
    schedule
}

fn start(slot: usize, seeds: &[usize]) -> Action {
    Action::Start {
        slot,
        seeds: seeds.to_vec(),
    }
}

/// The card's three commands: slot 0 founds, 1 joins through 0, 2 through 1.
fn three_nodes() -> Vec<(Duration, Action)> {
    vec![
        (ms(0), start(0, &[])),
        (ms(100), start(1, &[0])),
        (ms(200), start(2, &[1])),
    ]
}

fn request(slot: usize) -> Action {
    Action::Request { slot, count: 1 }
}

/// Section 3 of the guide: a < b < r2 < r1 by start time, but b and r2 only reach
/// the cluster after r1 took a seat. A naive "first three by join order" rule
/// gives r1 and r2 different active sets, and both enter. Here r1 keeps its seat,
/// b takes the free one, r2 waits as a spectator until r1 leaves.
///
/// Then the sets diverge for real: r2 is paused long enough to be evicted and
/// wakes up unable to hear anyone, asking under the set it last knew. The epoch
/// check is all that stops a and b from granting it.
pub fn set_divergence() -> Schedule {
    let (a, r1, b, r2) = (0, 1, 2, 3);
    let mut actions = vec![
        (ms(0), start(a, &[])),
        (ms(50), start(b, &[a])),
        (ms(80), start(r2, &[a])),
        (ms(100), start(r1, &[a])),
        // b and r2 cannot reach a or r1 until 6 s.
        (
            ms(0),
            Action::Cut {
                from: vec![b, r2],
                to: vec![a, r1],
            },
        ),
        (
            ms(0),
            Action::Cut {
                from: vec![a, r1],
                to: vec![b, r2],
            },
        ),
        (ms(6000), Action::Heal),
    ];
    // Everyone asks while the news of the newcomers is still spreading.
    for slot in [r1, b, r2, a] {
        actions.push((ms(6010), request(slot)));
    }
    actions.push((ms(8000), Action::Leave { slot: r1 }));
    actions.extend([
        (
            ms(10_000),
            Action::Pause {
                slot: r2,
                duration: ms(3000),
            },
        ),
        (
            ms(10_500),
            Action::Cut {
                from: vec![a, b],
                to: vec![r2],
            },
        ),
        (ms(13_050), request(r2)),
        (ms(13_200), request(a)),
        (ms(16_000), Action::Heal),
    ]);
    let mut config = calm(4);
    config.hold = ms(500);
    Schedule {
        config,
        actions,
        until: ms(30_000),
    }
}

/// The holder is killed inside the critical section: its host refuses the
/// reconnect, so the others know at once it is gone, and go on under an active
/// set without it, with larger fences.
pub fn holder_crashes_in_cs() -> Schedule {
    let mut config = calm(3);
    config.hold = ms(2000);
    let actions = [
        three_nodes(),
        vec![
            (ms(6000), request(1)),
            (ms(6300), request(0)),
            (ms(6300), request(2)),
            (ms(6500), Action::Crash { slot: 1 }),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(16_000),
    }
}

/// The holder is killed while the paths to it are cut: no host can say the
/// process is gone, so the others wait for SWIM's verdict before going on.
pub fn holder_crashes_behind_a_cut() -> Schedule {
    let mut schedule = holder_crashes_in_cs();
    for (from, to) in [(vec![1], vec![0, 2]), (vec![0, 2], vec![1])] {
        schedule.actions.push((ms(6400), Action::Cut { from, to }));
    }
    schedule.actions.sort_by_key(|(t, _)| *t);
    schedule
}

/// The holder is killed and a new process starts at its address at once:
/// the reconnect meets the new incarnation, which is proof the old one died.
pub fn holder_restarts_at_once() -> Schedule {
    let mut schedule = holder_crashes_in_cs();
    schedule.actions.push((ms(6500), start(1, &[0, 2])));
    schedule
}

/// A fourth node joins while three contend, and takes a free seat: the pending
/// requests are asked again under the new set, the newcomer included.
pub fn join_during_contention() -> Schedule {
    let mut config = calm(4);
    config.settings.max_active = 4;
    config.hold = ms(40);
    let mut actions = three_nodes();
    let mut t = 6000;
    while t < 9000 {
        for slot in 0..3 {
            actions.push((ms(t), request(slot)));
        }
        t += 60;
    }
    // Joins through a member that is not the founder.
    actions.push((ms(7000), start(3, &[2])));
    actions.push((ms(9500), request(3)));
    Schedule {
        config,
        actions,
        until: ms(20_000),
    }
}

/// The holder is asked to leave while two requests wait on it: it leaves once
/// its critical section ends, releasing both at once rather than making them
/// wait for failure detection, and its peers log a leave, not a failure.
pub fn leave_with_deferred_replies() -> Schedule {
    let mut config = calm(3);
    config.hold = ms(1000);
    let actions = [
        three_nodes(),
        vec![
            (ms(6000), request(0)),
            (ms(6200), request(1)),
            (ms(6200), request(2)),
            (ms(6500), Action::Leave { slot: 0 }),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(12_000),
    }
}

/// A request waits for a reply from a process that is killed and restarted on
/// the same address: the new process must not answer for the old one, and the
/// request is served once the old one is out of the active set.
pub fn restart_while_request_waits() -> Schedule {
    let mut config = calm(3);
    config.hold = ms(1000);
    let actions = [
        three_nodes(),
        vec![
            (ms(6000), request(1)),
            (ms(6100), request(0)),
            (ms(6500), Action::Crash { slot: 1 }),
            (ms(6600), start(1, &[0, 2])),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(16_000),
    }
}

/// A member is cut off with a request pending: it never enters while cut off
/// (its side has no quorum), the majority goes on, and it is served after the
/// partition heals.
pub fn minority_waits() -> Schedule {
    let config = calm(3);
    let actions = [
        three_nodes(),
        vec![
            (
                ms(6000),
                Action::Cut {
                    from: vec![2],
                    to: vec![0, 1],
                },
            ),
            (
                ms(6000),
                Action::Cut {
                    from: vec![0, 1],
                    to: vec![2],
                },
            ),
            (ms(6100), request(2)),
            (ms(6100), request(0)),
            (ms(9000), request(1)),
            (ms(12_000), Action::Heal),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(25_000),
    }
}

/// Two of three members are killed at once: the survivor cannot tell a crash from
/// a partition, so it waits rather than enter alone.
pub fn quorum_lost_waits() -> Schedule {
    let mut config = calm(3);
    config.keep_quorum = false;
    let actions = [
        three_nodes(),
        vec![
            (ms(6000), Action::Crash { slot: 0 }),
            (ms(6000), Action::Crash { slot: 1 }),
            (ms(6100), request(2)),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(20_000),
    }
}

/// The holder is paused inside the critical section for longer than failure
/// detection: the others declare it failed, move on, and enter while it is
/// stopped. This is the known limit of any lock built on a failure detector; the
/// later holders' fences are larger, and the paused one says so when it wakes up.
pub fn holder_paused_in_cs() -> Schedule {
    let mut config = calm(3);
    config.hold = ms(200);
    let actions = [
        three_nodes(),
        vec![
            (ms(6000), request(1)),
            (
                ms(6050),
                Action::Pause {
                    slot: 1,
                    duration: ms(5000),
                },
            ),
            (ms(6100), request(0)),
            (ms(6100), request(2)),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(20_000),
    }
}

fn client(lock: &str, hold: u64, vanishes_after: Option<u64>) -> Client {
    Client {
        lock: LockName::new(lock).unwrap_or_else(|_| LockName::default_lock()),
        hold: ms(hold),
        vanishes_after: vanishes_after.map(ms),
        try_only: false,
    }
}

fn acquire(slot: usize, client: Client) -> Action {
    Action::Acquire { slot, client }
}

/// Issue "holes found on real networks", point 1: n2's inbound traffic is
/// dropped. Its request still reaches the others, whose grants sit in TCP's
/// retransmission queue while they evict n2 and go on contending. When TCP heals
/// before UDP (`staged`), the old grants arrive before n2 hears of its eviction:
/// they must not let it in. With a plain heal, both come back together.
pub fn late_grant_after_one_way_cut(staged: bool, seed: u64) -> Schedule {
    let mut config = calm(3);
    // The seed decides the message delays, so the order in which the held
    // grants and the news of the eviction arrive.
    config.seed = seed;
    config.hold = ms(1000);
    let mut actions = [
        three_nodes(),
        vec![
            (
                ms(6000),
                Action::Stall {
                    from: vec![0, 2],
                    to: vec![1],
                },
            ),
            (ms(6100), request(1)),
        ],
    ]
    .concat();
    // The others contend throughout, with short holds.
    let mut t = 6200;
    while t < 16_000 {
        actions.push((ms(t), acquire(0, client("default", 200, None))));
        actions.push((ms(t + 50), acquire(2, client("default", 200, None))));
        t += 700;
    }
    if staged {
        actions.push((ms(11_000), Action::HealStreams));
        actions.push((ms(14_000), Action::Heal));
    } else {
        actions.push((ms(11_000), Action::Heal));
    }
    Schedule {
        config,
        actions,
        until: ms(30_000),
    }
}

/// A waiting ticket is cancelled while its node holds back a later request
/// (its own request came first): the node must release that request at once,
/// or the other waits for a reply that never comes.
pub fn cancelled_ticket_releases_deferred() -> Schedule {
    let config = calm(3);
    let actions = [
        three_nodes(),
        vec![
            (ms(6000), acquire(0, client("default", 1000, None))),
            // Slot 1 asks before slot 2, so slot 1 holds slot 2's request back...
            (ms(6100), acquire(1, client("default", 50, Some(500)))),
            (ms(6200), acquire(2, client("default", 50, None))),
            // ...and slot 1's client goes away at 6.6 s, while still waiting.
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(15_000),
    }
}

/// A holder's client is killed 200 ms into a 10 s hold: its ticket is released
/// with it, and the next node gets in at once rather than 10 s later.
pub fn client_gone_while_holding() -> Schedule {
    let config = calm(3);
    let actions = [
        three_nodes(),
        vec![
            (ms(6000), acquire(0, client("default", 10_000, Some(200)))),
            (ms(6050), acquire(1, client("default", 50, None))),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(15_000),
    }
}

/// Two nodes hold two different locks at the same time, each after the
/// 2(N-1) messages of its own lock.
pub fn two_locks_at_once() -> Schedule {
    let config = calm(3);
    let actions = [
        three_nodes(),
        vec![
            (ms(6000), acquire(0, client("jobs", 1000, None))),
            (ms(6000), acquire(1, client("backups", 1000, None))),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(10_000),
    }
}

/// `ra lock --try`: slot 1 tries while slot 0 holds (refused at once, no
/// waiting), then again once the lock is free (granted).
pub fn try_when_taken_and_when_free() -> Schedule {
    let config = calm(3);
    let mut taken = client("default", 50, None);
    taken.try_only = true;
    let free = taken.clone();
    let actions = [
        three_nodes(),
        vec![
            (ms(6000), acquire(0, client("default", 1000, None))),
            (ms(6200), acquire(1, taken)),
            (ms(8000), acquire(1, free)),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(12_000),
    }
}

/// Issue "every node that asks gets in": a fourth node with a cap of three,
/// while the three members stay up and idle. Its one request is served through a
/// member that carries its ticket; the active set does not change.
pub fn spectator_served_while_members_idle() -> Schedule {
    let config = calm(4);
    let actions = [
        three_nodes(),
        vec![(ms(5000), start(3, &[0])), (ms(8000), request(3))],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(14_000),
    }
}

/// Five nodes, a cap of three, everyone asking without pause: the two
/// spectators are served as well as the members, not after them.
pub fn five_contend_with_a_cap_of_three() -> Schedule {
    let mut config = calm(5);
    config.hold = ms(20);
    let mut actions = three_nodes();
    actions.push((ms(300), start(3, &[2])));
    actions.push((ms(400), start(4, &[0])));
    for slot in 0..5 {
        actions.push((ms(6000), Action::Request { slot, count: 20 }));
    }
    Schedule {
        config,
        actions,
        until: ms(30_000),
    }
}

/// Five idle nodes (three members, two spectators); at `stop_at` the node in
/// `slot` stops for `stopped_for`, as SIGSTOP stops a process: its datagrams
/// and timers wait, and its streams stay open. `seed` moves every node's
/// place in SWIM's probe cycle against the stop.
pub fn node_stopped(seed: u64, slot: usize, stop_at: Duration, stopped_for: Duration) -> Schedule {
    let mut config = calm(5);
    config.seed = seed;
    let mut actions = three_nodes();
    actions.push((ms(300), start(3, &[0])));
    actions.push((ms(400), start(4, &[0])));
    actions.push((
        stop_at,
        Action::Pause {
            slot,
            duration: stopped_for,
        },
    ));
    Schedule {
        config,
        actions,
        until: stop_at + stopped_for + ms(5000),
    }
}

/// The simulator's seed 653499559 of an older schedule mix: a joiner's only
/// seed answers it, then pauses and leaves. The joiner has learned the decided
/// active set by gossip, not its members by SWIM; it must find its way to them
/// rather than announce to its dead seed for ever.
pub fn joiner_whose_seed_leaves() -> Schedule {
    let mut config = calm(4);
    config.settings.max_active = 3;
    let actions = [
        three_nodes(),
        vec![
            (ms(6000), start(3, &[1])),
            (
                ms(6150),
                Action::Pause {
                    slot: 1,
                    duration: ms(400),
                },
            ),
            (ms(6600), Action::Leave { slot: 1 }),
            (ms(6700), Action::Request { slot: 3, count: 3 }),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(30_000),
    }
}

/// The member that carries a spectator's ticket is asked to leave while it holds
/// the lock for itself, has deferred replies, and a request of its own waits
/// behind: the deferred replies go out as it leaves, the spectator's ticket moves
/// to another member, and no two holders overlap.
pub fn carrier_leaves_with_deferred_replies(carrier: usize) -> Schedule {
    let mut config = calm(4);
    config.hold = ms(600);
    let actions = [
        three_nodes(),
        vec![
            (ms(5000), start(3, &[0])),
            (ms(8000), request(carrier)),
            (ms(8100), request(3)),
            (ms(8150), request((carrier + 1) % 3)),
            (ms(8150), request((carrier + 2) % 3)),
            (ms(8200), request(carrier)),
            (ms(8300), Action::Leave { slot: carrier }),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(20_000),
    }
}

/// Every node has a data directory. The three take the lock, are all killed at
/// once, and start again with the quick start's commands (the founder without
/// seeds): the cluster starts again above every epoch it knew, so every fence
/// of the second run is above every fence of the first. The oracle compares
/// fences across the restart: the cluster keeps its identity.
pub fn whole_cluster_restart_durable() -> Schedule {
    let mut config = calm(3);
    config.durable = true;
    config.keep_quorum = false;
    let mut actions = three_nodes();
    for slot in 0..3 {
        actions.push((ms(6000), Action::Request { slot, count: 3 }));
    }
    for slot in 0..3 {
        actions.push((ms(9000), Action::Crash { slot }));
    }
    actions.extend([
        (ms(9500), start(0, &[])),
        (ms(9600), start(1, &[0])),
        (ms(9700), start(2, &[1])),
    ]);
    for slot in 0..3 {
        actions.push((ms(16_000), Action::Request { slot, count: 3 }));
    }
    Schedule {
        config,
        actions,
        until: ms(30_000),
    }
}

/// The founder is killed and restarted without seeds (its command) while cut
/// off from the two others, which go on without it. With its data directory
/// it never founds a second cluster: it waits, and rejoins its old cluster
/// once the cut heals. (Without one, it founds a second cluster after
/// `found_after`.)
pub fn founder_restarts_cut_off(durable: bool) -> Schedule {
    let mut config = calm(3);
    config.durable = durable;
    let mut actions = three_nodes();
    for slot in 0..3 {
        actions.push((ms(6000), request(slot)));
    }
    actions.extend([
        (ms(8000), Action::Crash { slot: 0 }),
        (
            ms(8000),
            Action::Cut {
                from: vec![0],
                to: vec![1, 2],
            },
        ),
        (
            ms(8000),
            Action::Cut {
                from: vec![1, 2],
                to: vec![0],
            },
        ),
        (ms(8500), start(0, &[])),
        (ms(14_000), request(0)),
        (ms(14_000), request(1)),
        (ms(20_000), Action::Heal),
        (ms(24_000), request(0)),
        (ms(24_000), request(2)),
    ]);
    Schedule {
        config,
        actions,
        until: ms(45_000),
    }
}

/// The simulator's seeds 61004139, 61017007 and 61017877 in their simplest
/// form: a spectator forwards its ticket while a stall holds its stream's
/// bytes, the members declare it failed, and it is killed. When TCP gets
/// through again, the old ask reaches its member, which must not hold the
/// lock for a process it has already declared failed: no later verdict would
/// ever take the lock back, and the members' own requests would wait for
/// ever.
pub fn stale_ask_of_a_failed_spectator() -> Schedule {
    let mut config = calm(4);
    config.hold = ms(50);
    let members = vec![0, 1, 2];
    let actions = [
        three_nodes(),
        vec![
            (ms(5000), start(3, &[0])),
            (
                ms(8000),
                Action::Stall {
                    from: vec![3],
                    to: members.clone(),
                },
            ),
            (ms(8100), request(3)),
            (ms(12_000), Action::Crash { slot: 3 }),
            (ms(13_000), Action::HealStreams),
            (ms(14_000), Action::Heal),
            (ms(15_000), request(0)),
            (ms(15_000), request(1)),
            (ms(15_000), request(2)),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(25_000),
    }
}

/// A long hold ahead of a request: slot 1 asks while slot 0 holds for 8 s.
/// Slot 2's grant comes at once and is renewed a few times, then left to run
/// out; when slot 0 exits, slot 1 asks slot 2 again before it enters.
pub fn grant_expires_behind_a_long_hold() -> Schedule {
    let config = calm(3);
    let actions = [
        three_nodes(),
        vec![
            (ms(6000), acquire(0, client("default", 8000, None))),
            (ms(6100), acquire(1, client("default", 100, None))),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(18_000),
    }
}
