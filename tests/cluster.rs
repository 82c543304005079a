//! Real `ra` processes on loopback, started with the card's commands: contention,
//! a SIGKILL, a late joiner, spectators served through members, five nodes
//! with a cap of three all served.

mod support;

use std::time::Duration;

use ra::event::Event;
use support::{
    Node, Scratch, active_set, assert_mutual_exclusion, exits, is, logged, read, wait_for,
};

fn entries_by(entries: &[(String, u64, u64)], node: &Node) -> usize {
    entries
        .iter()
        .filter(|(n, _, _)| *n == node.addr().to_string())
        .count()
}

#[test]
fn three_nodes_contend_survive_a_kill_and_seat_a_spectator() {
    let scratch = Scratch::new("cluster");
    let cs = scratch.path("cs.jsonl");
    let cs_arg = cs.to_str().expect("utf-8 path").to_string();
    let common = ["--hold-ms", "100", "--cs-file", cs_arg.as_str()];

    // The card: ra --bind :7000; ra --bind :7001 --join :7000; ra --bind :7002 --join :7001
    let mut a = scratch.start("a", &common);
    let mut b = scratch.start_joining("b", &a, &common);
    let mut c = scratch.start_joining("c", &b, &common);
    wait_for(
        "an active set of all three",
        Duration::from_secs(15),
        || {
            [&mut a, &mut b, &mut c]
                .into_iter()
                .all(|n| active_set(n).len() == 3)
        },
    );

    // Everyone asks several times at once.
    for node in [&mut a, &mut b, &mut c] {
        node.request(4).expect("press Enter");
    }
    wait_for("12 entries", Duration::from_secs(20), || exits(&cs) == 12);
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
        [&mut a, &mut b, &mut c]
            .into_iter()
            .any(|n| logged(n, |e| matches!(e, Event::ReplySent { deferred: true, .. })))
    );

    // SIGKILL one; the others log it as failed, drop it from the set, and go on.
    b.kill();
    let killed = b.me;
    for node in [&mut a, &mut c] {
        wait_for(
            "the kill to be logged as a failure",
            Duration::from_secs(10),
            || {
                logged(
                    node,
                    |e| matches!(e, Event::MemberFailed { member, .. } if *member == killed),
                )
            },
        );
    }
    let (a_addr, c_addr) = (a.addr(), c.addr());
    wait_for(
        "an active set without the killed node",
        Duration::from_secs(10),
        || {
            [&mut a, &mut c]
                .into_iter()
                .all(|n| active_set(n) == [a_addr, c_addr])
        },
    );
    a.request(2).expect("press Enter");
    c.request(2).expect("press Enter");
    wait_for("4 more entries", Duration::from_secs(20), || {
        exits(&cs) == 16
    });
    let entries = assert_mutual_exclusion(&cs);
    assert_eq!(entries_by(&entries, &a), 6);
    assert_eq!(entries_by(&entries, &c), 6);

    // A fourth node takes the free seat; a fifth waits as a spectator.
    let d = scratch.start_joining("d", &c, &common);
    let d_addr = d.addr();
    wait_for("the fourth node seated", Duration::from_secs(15), || {
        active_set(&mut a).contains(&d_addr)
    });
    let mut d = d;
    let mut e = scratch.start_joining("e", &a, &common);
    wait_for(
        "the fifth node to learn the set",
        Duration::from_secs(15),
        || active_set(&mut e).len() == 3,
    );
    assert!(
        !active_set(&mut e).contains(&e.addr()),
        "the fifth node took a seat while none was free"
    );
    // The spectator's Enter is served through a member that carries its
    // ticket; no seat changes hands for it.
    let asked = std::time::Instant::now();
    e.request(1).expect("press Enter");
    wait_for(
        "the spectator to be served without a seat",
        Duration::from_secs(15),
        || entries_by(&assert_mutual_exclusion(&cs), &e) == 1,
    );
    println!("spectator served {:?} after its Enter", asked.elapsed());
    assert!(
        logged(&mut e, |ev| matches!(ev, Event::EnterVia { .. })),
        "the spectator entered through a member"
    );
    assert!(
        !active_set(&mut e).contains(&e.addr()),
        "the spectator took a seat while none was free"
    );

    // An active member leaves: the spectator takes its seat, and is served
    // in its own name.
    a.type_line("leave").expect("type leave");
    assert!(
        a.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "leave did not exit cleanly"
    );
    let e_addr = e.addr();
    wait_for("the spectator seated", Duration::from_secs(15), || {
        active_set(&mut e).contains(&e_addr)
    });
    e.request(1).expect("press Enter");
    wait_for(
        "the seated spectator to be served",
        Duration::from_secs(15),
        || entries_by(&assert_mutual_exclusion(&cs), &e) == 2,
    );
    for node in [&mut c, &mut d] {
        read(node);
        assert!(
            node.logged(|ev| matches!(ev, Event::MemberLeft { member } if is(member, &a))),
            "{} did not log the leave as a leave",
            node.addr()
        );
        assert!(
            !node.logged(|ev| matches!(ev, Event::MemberFailed { member, .. } if is(member, &a)))
        );
    }
}

#[test]
fn a_node_started_before_its_seed_joins_once_the_seed_is_up() {
    let scratch = Scratch::new("late-seed");
    // The seed's address must be known before it runs: this test holds a port
    // (UDP and TCP, as a node needs) until the moment the seed binds it.
    let (udp, tcp) = hold_a_port();
    let seed_addr = udp.local_addr().expect("held address");
    let mut joiner = scratch.start("joiner", &["--join", &seed_addr.to_string()]);
    std::thread::sleep(Duration::from_secs(2));
    drop((udp, tcp));
    let mut seed = Node::start(scratch.spawn("seed").bind(seed_addr)).expect("start the seed");
    wait_for("both in one active set", Duration::from_secs(15), || {
        active_set(&mut joiner).len() == 2 && active_set(&mut seed).len() == 2
    });
}

/// A loopback port bound for both UDP and TCP, held by this test.
fn hold_a_port() -> (std::net::UdpSocket, std::net::TcpListener) {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        let port = udp.local_addr().expect("its address").port();
        if let Ok(tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP")
}

#[test]
fn sigterm_leaves_gracefully_and_a_restart_rejoins() {
    let scratch = Scratch::new("restart");
    let mut a = scratch.start("a", &[]);
    let mut b = scratch.start_joining("b", &a, &[]);
    let mut c = scratch.start_joining("c", &a, &[]);
    wait_for("three in the active set", Duration::from_secs(15), || {
        active_set(&mut a).len() == 3
    });

    c.signal(libc::SIGTERM);
    assert!(
        c.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    let gone = c.me;
    for node in [&mut a, &mut b] {
        wait_for("the leave to be logged", Duration::from_secs(5), || {
            logged(
                node,
                |e| matches!(e, Event::MemberLeft { member } if *member == gone),
            )
        });
    }
    // Restart on the same address: a new process, which rejoins and takes a seat.
    let addr = c.addr();
    drop(c);
    let mut c = Node::start(scratch.spawn("c-again").bind(addr).join(b.addr()))
        .expect("restart on the same address");
    assert_ne!(c.me, gone, "a restart is a new process");
    wait_for(
        "the restarted node seated again",
        Duration::from_secs(15),
        || active_set(&mut a).contains(&addr) && active_set(&mut c).len() == 3,
    );
}

#[test]
fn a_one_second_stall_is_not_a_failure() {
    let scratch = Scratch::new("stall");
    let mut a = scratch.start("a", &[]);
    let mut b = scratch.start_joining("b", &a, &[]);
    let c = scratch.start_joining("c", &a, &[]);
    wait_for("three in the active set", Duration::from_secs(15), || {
        active_set(&mut a).len() == 3
    });
    for _ in 0..3 {
        c.signal(libc::SIGSTOP);
        std::thread::sleep(Duration::from_secs(1));
        c.signal(libc::SIGCONT);
        std::thread::sleep(Duration::from_secs(2));
    }
    for node in [&mut a, &mut b] {
        assert!(
            !logged(node, |e| matches!(e, Event::MemberFailed { .. })),
            "{} declared the stalled node failed",
            node.addr()
        );
    }
}

/// Issue "every node that asks gets in", point 5: five nodes with the default
/// cap of three, every one given `--requests 20`: all are served, the two
/// spectators through members, and the shared file checks clean.
#[test]
fn five_nodes_with_a_cap_of_three_are_all_served() {
    let scratch = Scratch::new("five");
    let cs = scratch.path("cs.jsonl");
    let cs_arg = cs.to_str().expect("utf-8 path").to_string();
    // Each node asks from its start, before any cluster exists: its tickets
    // wait until it has one. --stay keeps the early finishers serving.
    let args = [
        "--hold-ms",
        "5",
        "--cs-file",
        cs_arg.as_str(),
        "--requests",
        "20",
        "--stay",
    ];
    let mut first = scratch.start("n0", &args);
    let mut nodes = vec![];
    for i in 1..5 {
        let seed = nodes.last().unwrap_or(&first);
        let node = scratch.start_joining(&format!("n{i}"), seed, &args);
        nodes.push(node);
    }
    wait_for("100 entries", Duration::from_secs(60), || exits(&cs) == 100);
    let entries = assert_mutual_exclusion(&cs);
    let mut spectators = 0;
    for node in std::iter::once(&mut first).chain(nodes.iter_mut()) {
        assert_eq!(
            entries_by(&entries, node),
            20,
            "{} was served 20 times",
            node.addr()
        );
        if logged(node, |ev| matches!(ev, Event::EnterVia { .. })) {
            spectators += 1;
        }
    }
    assert_eq!(spectators, 2, "two nodes were served through members");
    let check = ra::tools::check::check_file(&cs).expect("a readable shared file");
    println!("{}", ra::tools::check::summary(&check));
}
