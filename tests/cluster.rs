//! Real `ra` processes on loopback, started with the card's commands: contention,
//! a SIGKILL, a late joiner and a spectator that waits for a seat.

mod support;

use std::time::Duration;

use support::{
    Node, Scratch, assert_mutual_exclusion, event_is, free_port, last_active_set, wait_for,
};

fn entries_by(entries: &[(String, u64, u64)], node: &Node) -> usize {
    entries.iter().filter(|(n, _, _)| *n == node.addr()).count()
}

#[test]
fn three_nodes_contend_survive_a_kill_and_seat_a_spectator() {
    let scratch = Scratch::new("cluster");
    let cs = scratch.path("cs.jsonl");
    let cs_arg = cs.to_str().expect("utf-8 path").to_string();
    let common = ["--hold-ms", "100", "--cs-file", cs_arg.as_str()];
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let join = |i: usize| format!(":{}", ports[i]);

    // The card: ra --bind :7000; ra --bind :7001 --join :7000; ra --bind :7002 --join :7001
    let mut a = Node::start(&scratch, ports[0], &common);
    let mut b = Node::start(
        &scratch,
        ports[1],
        &[&["--join", &join(0)], &common[..]].concat(),
    );
    let mut c = Node::start(
        &scratch,
        ports[2],
        &[&["--join", &join(1)], &common[..]].concat(),
    );
    wait_for(
        "an active set of all three",
        Duration::from_secs(15),
        || [&a, &b, &c].iter().all(|n| last_active_set(n).len() == 3),
    );

    // Everyone asks several times at once.
    for node in [&mut a, &mut b, &mut c] {
        node.request(4);
    }
    wait_for("12 entries", Duration::from_secs(20), || {
        support::cs_records(&cs)
            .iter()
            .filter(|r| r["event"] == "exit")
            .count()
            == 12
    });
    let entries = assert_mutual_exclusion(&cs);
    for node in [&a, &b, &c] {
        assert_eq!(
            entries_by(&entries, node),
            4,
            "{} was served 4 times",
            node.addr()
        );
    }
    // Contention shows in the logs: some replies were deferred.
    assert!(
        [&a, &b, &c]
            .iter()
            .any(|n| n.has_event(|e| event_is(e, "reply_sent") && e["deferred"] == true))
    );

    // SIGKILL one; the others log it as failed, drop it from the set, and go on.
    b.kill();
    for node in [&a, &c] {
        wait_for(
            "the kill to be logged as a failure",
            Duration::from_secs(10),
            || node.has_event(|e| event_is(e, "member_failed") && e["peer"] == b.addr()),
        );
    }
    wait_for(
        "an active set without the killed node",
        Duration::from_secs(10),
        || {
            [&a, &c]
                .iter()
                .all(|n| last_active_set(n) == [a.addr(), c.addr()])
        },
    );
    a.request(2);
    c.request(2);
    wait_for("4 more entries", Duration::from_secs(20), || {
        support::cs_records(&cs)
            .iter()
            .filter(|r| r["event"] == "exit")
            .count()
            == 16
    });
    let entries = assert_mutual_exclusion(&cs);
    assert_eq!(entries_by(&entries, &a), 6);
    assert_eq!(entries_by(&entries, &c), 6);

    // A fourth node takes the free seat; a fifth waits as a spectator.
    let d = Node::start(
        &scratch,
        ports[3],
        &[&["--join", &join(2)], &common[..]].concat(),
    );
    wait_for("the fourth node seated", Duration::from_secs(15), || {
        last_active_set(&a).contains(&d.addr())
    });
    let mut e = Node::start(
        &scratch,
        ports[4],
        &[&["--join", &join(0)], &common[..]].concat(),
    );
    wait_for(
        "the fifth node to learn the set",
        Duration::from_secs(15),
        || last_active_set(&e).len() == 3,
    );
    assert!(
        !last_active_set(&e).contains(&e.addr()),
        "the fifth node took a seat while none was free"
    );
    e.request(1);
    wait_for(
        "the spectator to say it waits for a seat",
        Duration::from_secs(5),
        || e.has_event(|ev| event_is(ev, "waiting_for_seat")),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        entries_by(&assert_mutual_exclusion(&cs), &e),
        0,
        "the spectator entered without a seat"
    );

    // An active member leaves: the spectator takes its seat and is served.
    a.type_line("leave");
    assert!(
        a.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "leave did not exit cleanly"
    );
    wait_for(
        "the spectator to be served",
        Duration::from_secs(15),
        || entries_by(&assert_mutual_exclusion(&cs), &e) == 1,
    );
    for node in [&c, &d] {
        assert!(
            node.has_event(|ev| event_is(ev, "member_left") && ev["peer"] == a.addr()),
            "{} did not log the leave as a leave",
            node.addr()
        );
        assert!(!node.has_event(|ev| event_is(ev, "member_failed") && ev["peer"] == a.addr()));
    }
    let left_at = support::cs_records(&cs).len();
    assert!(left_at > 0);
}

#[test]
fn a_node_started_before_its_seed_joins_once_the_seed_is_up() {
    let scratch = Scratch::new("late-seed");
    let (p0, p1) = (free_port(), free_port());
    let joiner = Node::start(&scratch, p1, &["--join", &format!(":{p0}")]);
    std::thread::sleep(Duration::from_secs(2));
    let seed = Node::start(&scratch, p0, &[]);
    wait_for("both in one active set", Duration::from_secs(15), || {
        last_active_set(&joiner).len() == 2 && last_active_set(&seed).len() == 2
    });
}

#[test]
fn sigterm_leaves_gracefully_and_a_restart_rejoins() {
    let scratch = Scratch::new("restart");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let a = Node::start(&scratch, ports[0], &[]);
    let b = Node::start(&scratch, ports[1], &["--join", &format!(":{}", ports[0])]);
    let mut c = Node::start(&scratch, ports[2], &["--join", &format!(":{}", ports[0])]);
    wait_for("three in the active set", Duration::from_secs(15), || {
        last_active_set(&a).len() == 3
    });

    c.signal(libc::SIGTERM);
    assert!(
        c.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    for node in [&a, &b] {
        wait_for("the leave to be logged", Duration::from_secs(5), || {
            node.has_event(|e| event_is(e, "member_left") && e["peer"] == c.addr())
        });
    }
    // Restart on the same address: a new process, which rejoins and takes a seat.
    drop(c);
    let c = Node::start(&scratch, ports[2], &["--join", &format!(":{}", ports[1])]);
    wait_for(
        "the restarted node seated again",
        Duration::from_secs(15),
        || last_active_set(&a).contains(&c.addr()) && last_active_set(&c).len() == 3,
    );
}

#[test]
fn a_one_second_stall_is_not_a_failure() {
    let scratch = Scratch::new("stall");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let a = Node::start(&scratch, ports[0], &[]);
    let b = Node::start(&scratch, ports[1], &["--join", &format!(":{}", ports[0])]);
    let c = Node::start(&scratch, ports[2], &["--join", &format!(":{}", ports[0])]);
    wait_for("three in the active set", Duration::from_secs(15), || {
        last_active_set(&a).len() == 3
    });
    for _ in 0..3 {
        c.signal(libc::SIGSTOP);
        std::thread::sleep(Duration::from_secs(1));
        c.signal(libc::SIGCONT);
        std::thread::sleep(Duration::from_secs(2));
    }
    for node in [&a, &b] {
        assert!(
            !node.has_event(|e| event_is(e, "member_failed")),
            "{} declared the stalled node failed",
            node.addr()
        );
    }
}
