//! Named schedules that always run: the cases that matter most, written out by
//! hand so each one happens for sure rather than by chance.

use std::time::Duration;

use super::network::NetConfig;
use super::schedule::Schedule;
use super::world::{Action, SimConfig};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn calm(slots: usize) -> SimConfig {
    let mut config = SimConfig::new(1, slots);
    config.net = NetConfig::calm();
    config.trace = true;
    config
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
/// Then the views diverge for real: r2 is paused long enough to be evicted and
/// wakes up unable to hear anyone, asking under the set it last knew. The view
/// check is all that stops a and b from granting it.
pub fn view_divergence() -> Schedule {
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
    config.settings.hold = ms(500);
    Schedule {
        config,
        actions,
        until: ms(30_000),
    }
}

/// The holder is killed inside the critical section: the others wait for failure
/// detection, then go on under an active set without it, with larger fences.
pub fn holder_crashes_in_cs() -> Schedule {
    let mut config = calm(3);
    config.settings.hold = ms(2000);
    let actions = [
        three_nodes(),
        vec![
            (ms(6000), request(1)),
            (ms(6300), request(0)),
            (ms(6300), request(2)),
            (ms(7000), Action::Crash { slot: 1 }),
        ],
    ]
    .concat();
    Schedule {
        config,
        actions,
        until: ms(16_000),
    }
}

/// A fourth node joins while three contend, and takes a free seat: the pending
/// requests are asked again under the new set, the newcomer included.
pub fn join_during_contention() -> Schedule {
    let mut config = calm(4);
    config.settings.max_active = 4;
    config.settings.hold = ms(40);
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
    config.settings.hold = ms(1000);
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
    config.settings.hold = ms(1000);
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
    config.settings.hold = ms(200);
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
