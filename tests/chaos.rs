//! Fault injection with real `ra` processes in network namespaces: the faults of
//! issue 11 (partitions, a holder paused past failure detection, a holder
//! killed, churn, hostile traffic) and the real-network regressions of issue 14
//! (a late grant after a one-way cut, corrupted and forged SWIM datagrams).
//!
//! Needs root (network namespaces). Without it, or without a working `ip netns`,
//! each fault test prints one line and passes, except under `CI=true`, where it
//! fails: a green CI must mean the faults ran. The harness lives in `tests/chaos/`:
//! `lab.rs` (namespaces, faults, nodes; a loopback-only lab for forged traffic),
//! `logs.rs` (every read of ra's output), `store.rs` (the fenced counter),
//! `workload.rs` (guarded increments: `ra lock counter -- <store client>` in the
//! host's namespace), `scenario.rs` (starting a cluster, the report, the store's
//! accounting, `ra check --logs`), and one file per fault: `partition.rs`,
//! `late_grant.rs`, `holder.rs` (paused, killed), `churn.rs`, `hostile.rs`,
//! `forged.rs`.
//!
//! The test binary also serves as its own helper processes (the store client, UDP
//! and TCP probes, the attacker, the datagram capture and the flood): run with
//! `RA_CHAOS_ROLE` set and `helper_role --exact`, it does that job and exits.
//!
//! Running it: `cargo test --release --test chaos -- --nocapture` shows each
//! scenario's table. A failed scenario keeps its scratch directory
//! (`/tmp/rachaos-<pid>-<n>-<test>/`: node logs, `cs.jsonl`, `report.txt`,
//! `store-history.txt`, `ra-check.txt`) and prints its path. `RA_CHAOS_KEEP=1`
//! keeps it always; `RA_CHAOS_REPEAT=N` runs each partition and late-grant
//! scenario up to N times (to chase a race); `RA_CHAOS_HOSTILE_ROUNDS=N` and
//! `RA_CHAOS_HOSTILE_PARTS=udp,idle,garbage,preface` vary the hostile traffic;
//! `RA_CHAOS_SPOOF=none|half|all` says how many forged datagrams carry the real
//! sender's address. Namespaces left by a killed run are removed by the next
//! run; `ip netns list` shows them meanwhile (`rachaos-<pid>-...`).

mod chaos {
    pub mod churn;
    pub mod forged;
    pub mod holder;
    pub mod hostile;
    pub mod lab;
    pub mod late_grant;
    pub mod logs;
    pub mod partition;
    pub mod scenario;
    pub mod store;
    pub mod workload;
}

use std::time::Duration;

use chaos::churn;
use chaos::forged;
use chaos::holder;
use chaos::hostile;
use chaos::lab::{self, NodeOpts, ROLE_ENV, lab_or_skip};
use chaos::late_grant::{self, Heal};
use chaos::partition::{self, Fault};

/// A helper process: returns at once unless `RA_CHAOS_ROLE` is set (see
/// `lab::ROLE_TEST`, which must name this function).
#[test]
fn helper_role() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let code = match role.as_str() {
        "client" => chaos::store::client_main(),
        "hostile" => hostile::attacker_main(),
        "capture" => forged::capture_main(),
        "flood" => forged::flood_main(),
        "udp-recv" | "udp-send" | "tcp-recv" | "tcp-send" => lab::probe_main(&role),
        other => {
            eprintln!("unknown {ROLE_ENV}={other}");
            2
        }
    };
    std::process::exit(code);
}

/// The store client as a separate process, as a node will run it under `ra lock`.
#[test]
fn store_client_process_obeys_the_fence_rule() {
    let dir = tempfile::Builder::new()
        .prefix("rachaos-client-")
        .tempdir()
        .expect("temp dir");
    let store = chaos::store::Store::start(&dir.path().join("s.sock")).expect("store starts");
    let client = |fence: u64| {
        lab::helper("client")
            .env("RA_CHAOS_STORE", &store.path)
            .env("RA_FENCE", fence.to_string())
            .env("RA_CHAOS_CLIENT", format!("f{fence}"))
            .env("RA_CHAOS_PAUSE_MS", "1")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run the client process")
            .code()
    };
    assert_eq!(client(2_000_001), Some(chaos::store::CLIENT_ACCEPTED));
    assert_eq!(client(1_000_005), Some(chaos::store::CLIENT_REFUSED));
    assert_eq!(client(2_000_002), Some(chaos::store::CLIENT_ACCEPTED));
    let v = chaos::store::verdict(&store.history());
    assert_eq!((v.accepted, v.refused, v.final_value), (2, 1, 2));
    drop(store);
}

/// The lab's faults are real: a cut stops datagrams both ways, a dropped inbound
/// only one way, a heal restores them; pause, kill and restart act on ra's own pid.
#[test]
fn lab_faults_are_real() {
    let Some(lab) = lab_or_skip("lab_faults_are_real", 3) else {
        return;
    };
    let reach = |a, b| lab.udp_reaches(a, b).expect("udp probe");
    assert!(
        reach(0, 1) && reach(1, 0) && reach(2, 1),
        "the lab network works"
    );
    lab.cut(&[1]).expect("cut");
    assert!(!reach(0, 1) && !reach(1, 0), "a cut blocks both ways");
    assert!(reach(0, 2), "a cut leaves the rest connected");
    lab.heal(&[1]).expect("heal");
    assert!(reach(0, 1) && reach(1, 0), "a heal restores both ways");
    lab.drop_inbound(1).expect("drop inbound");
    assert!(!reach(0, 1), "dropped inbound blocks what arrives");
    assert!(reach(1, 0), "dropped inbound lets the host send");
    let tcp = |a, b| lab.tcp_reaches(a, b).expect("tcp probe");
    assert!(!tcp(0, 1), "dropped inbound blocks TCP");
    lab.drop_inbound_udp_only(1).expect("the staged heal");
    assert!(!reach(0, 1), "the staged heal still drops inbound UDP");
    assert!(tcp(0, 1), "the staged heal lets TCP in");
    lab.restore_inbound(1).expect("restore inbound");
    assert!(reach(0, 1), "restored inbound");
    lab.link_down(2).expect("link down");
    assert!(!reach(0, 2), "a link down blocks");
    lab.link_up(2).expect("link up");
    assert!(
        wait(Duration::from_secs(3), || reach(0, 2)),
        "a link up restores"
    );

    // A node's pid is ra's own: SIGSTOP shows as state T, SIGKILL ends it.
    lab.start_node(0, &NodeOpts::default()).expect("start ra");
    let state = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim().chars().next()))
            .flatten()
    };
    let pid = lab.node(0).pid().expect("a pid");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the node's executable");
    assert_eq!(
        exe,
        std::fs::canonicalize(env!("CARGO_BIN_EXE_ra")).expect("the ra binary"),
        "the child is ra itself, not a wrapper"
    );
    lab.node(0).pause().expect("pause");
    assert!(wait(Duration::from_secs(2), || state(pid) == Some('T')));
    lab.node(0).resume().expect("resume");
    assert!(wait(Duration::from_secs(2), || state(pid) != Some('T')));
    lab.node(0).kill();
    assert!(!lab.node(0).is_running());
    lab.start_node(0, &NodeOpts::default()).expect("restart ra");
    assert!(lab.node(0).is_running());
    assert_eq!(lab.node(0).starts(), 2);
}

fn wait(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The founder (first in seat order, the first proposer) is cut off from the other
/// two, both ways, while all three ask.
#[test]
fn symmetric_partition_of_one_active_member() {
    partition::run(
        "symmetric_partition_of_one_active_member",
        Fault::Symmetric,
        0,
    );
}

/// A member stops receiving (it still sends: its gossip and its requests reach the
/// others) while all three ask.
#[test]
fn one_way_partition_inbound_dropped() {
    partition::run(
        "one_way_partition_inbound_dropped",
        Fault::InboundDropped,
        1,
    );
}

/// Issue 11, fault 3: while `ra lock` runs its command on a host, every process
/// of that host (node, ra lock, the command: a frozen VM) is stopped for 6 s,
/// past failure detection. The others go on; the woken command's late write is
/// refused by the store (its fence is lower) and ra lock exits 75 (lock lost).
#[test]
fn holder_paused_past_failure_detection() {
    holder::run(
        "holder_paused_past_failure_detection",
        holder::Stop::Freeze(Duration::from_secs(6)),
    );
}

/// Issue 11, fault 4: the holder's node is SIGKILLed while its command runs. The
/// next holder gets in within the failover time, and the orphaned command's
/// write (after the next holder's) is refused.
#[test]
fn holder_killed() {
    holder::run("holder_killed", holder::Stop::KillNode);
}

/// Issue 14, point 1: a one-way cut of an active member while its request is
/// out; the others evict it and go on; TCP heals 4 s before UDP. Its delayed
/// grants must not let it in under the old epoch.
#[test]
fn late_grant_after_one_way_cut_staged_heal() {
    late_grant::run("late_grant_after_one_way_cut_staged_heal", Heal::Staged);
}

/// The same cut, healed all at once.
#[test]
fn late_grant_after_one_way_cut_natural_heal() {
    late_grant::run("late_grant_after_one_way_cut_natural_heal", Heal::Natural);
}

/// Issue 11, fault 5: 60 s of churn (joins, graceful leaves, kills, restarts)
/// under three contenders: every request served or explicitly refused, the
/// counter equals its accepted writes, no fence shared, no panic, RSS of the
/// steady nodes within 20%.
#[test]
fn churn_under_contention() {
    churn::run("churn_under_contention");
}

/// Issue 11, fault 6: random datagrams, 1,000 idle TCP connections, random bytes
/// and HTTP/2 prefaces with garbage at one node while three contend: entries
/// keep flowing, drops are logged a few at a time then summarised, RSS stays
/// bounded (before, peak and after reported).
#[test]
fn hostile_traffic_during_a_run() {
    hostile::run("hostile_traffic_during_a_run");
}

/// Issue 14, point 2: 10,000 bit-flipped and 10,000 forged (validly resealed)
/// copies of real SWIM datagrams to one node of three, in a namespace with only
/// `lo`: the cluster keeps serving, no phantom is seated, the target's identity
/// renewals stay few, no crash.
#[test]
fn corrupted_and_forged_datagrams() {
    forged::run("corrupted_and_forged_datagrams");
}
