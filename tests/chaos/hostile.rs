//! Issue 11, fault 6: hostile traffic at one node while the cluster works.
//! From a fourth host of the lab (never outside it): random datagrams to the
//! SWIM port, 1,000 idle TCP connections and random bytes to the gRPC port, and
//! HTTP/2 prefaces followed by garbage. Entries must keep flowing, the node must
//! log and drop (a few lines, then `drops_summarised`), and its memory must stay
//! bounded: RSS before, at its peak during, and after.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::lab::{lab_or_skip, now_us};
use super::logs::clock;
use super::scenario::{Report, entries_between, gather, secs, start_cluster};
use super::store::Store;
use super::workload::{Increment, Workload, outcome_counts};

/// The node under attack, and the attacker's host (no node runs there).
const TARGET: usize = 0;
const ATTACKER: usize = 3;
const DATAGRAMS: usize = 10_000;
const IDLE_CONNECTIONS: usize = 1_000;
/// Connections that send random bytes, and ones that send the HTTP/2 preface
/// and then garbage.
const GARBAGE_CONNECTIONS: usize = 200;
const PREFACE_CONNECTIONS: usize = 200;
/// How long the attacker keeps opening idle connections at most (garbage
/// ones: three times this).
const OPENING: Duration = Duration::from_secs(5);
/// How long the idle connections are held.
const HOLD: Duration = Duration::from_secs(4);
/// The same attack, twice: the report shows what the second one kept on top of
/// the first (`RA_CHAOS_HOSTILE_ROUNDS` runs more).
const ROUNDS: usize = 2;
/// RSS is read this long after each round.
const SETTLE: Duration = Duration::from_secs(2);
/// Peak RSS during the attack may exceed the RSS before by at most this.
const PEAK_ALLOWANCE_KIB: u64 = 64 * 1024;
/// After each round, RSS must be within this of the RSS before (issue 14: "near
/// its baseline"). The node hands free memory back once a flood ebbs; it kept
/// under 0.5 MiB per round when measured, and about 15 MiB before it did.
const AFTER_ALLOWANCE_KIB: u64 = 8 * 1024;
/// Dropped inputs logged one by one, at most (the rest are summarised).
const LOGGED_DROPS_MAX: u64 = 200;
/// No gap between entries longer than this during the attack.
const GAP_MAX: Duration = Duration::from_secs(2);

/// A small xorshift generator: the traffic is random but reproducible from
/// the seed the attacker prints.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Raise this process's open-file limit to its hard limit (1,000 connections).
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The attacker role: `RA_CHAOS_ADDR` the node's address, `RA_CHAOS_SEED` the
/// seed. Prints one `hostile: ...` line with what it did.
pub fn attacker_main() -> i32 {
    let Ok(addr) = std::env::var("RA_CHAOS_ADDR") else {
        eprintln!("hostile: RA_CHAOS_ADDR is not set");
        return 2;
    };
    let Ok(target) = addr.parse::<SocketAddr>() else {
        eprintln!("hostile: bad address {addr}");
        return 2;
    };
    let seed: u64 = std::env::var("RA_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    raise_nofile();
    // RA_CHAOS_HOSTILE_PARTS (udp,idle,garbage,preface) picks parts, to find
    // which one costs memory; all by default.
    let parts = std::env::var("RA_CHAOS_HOSTILE_PARTS")
        .unwrap_or_else(|_| "udp,idle,garbage,preface".into());
    let on = |p: &str| parts.split(',').any(|x| x == p);
    let (u, i, g, p) = (on("udp"), on("idle"), on("garbage"), on("preface"));
    let udp = std::thread::spawn(move || if u { random_datagrams(target, seed) } else { 0 });
    let idle = std::thread::spawn(move || if i { idle_connections(target) } else { (0, 0) });
    let garbage = std::thread::spawn(move || {
        if g {
            garbage_connections(target, seed ^ 0x5555, false)
        } else {
            (0, 0)
        }
    });
    let preface = std::thread::spawn(move || {
        if p {
            garbage_connections(target, seed ^ 0xaaaa, true)
        } else {
            (0, 0)
        }
    });
    let udp = udp.join().unwrap_or(0);
    let garbage = garbage.join().unwrap_or((0, 0));
    let preface = preface.join().unwrap_or((0, 0));
    let idle = idle.join().unwrap_or((0, 0));
    println!(
        "hostile: seed {seed}; {udp} random datagrams; {} of {IDLE_CONNECTIONS} idle connections established ({} still open after {:.0} s); {} of {GARBAGE_CONNECTIONS} connections sent random bytes ({} answered or closed by the node); {} of {PREFACE_CONNECTIONS} sent the HTTP/2 preface and garbage ({} answered or closed)",
        idle.0,
        idle.1,
        HOLD.as_secs_f64(),
        garbage.0,
        garbage.1,
        preface.0,
        preface.1
    );
    0
}

/// Random datagrams: a third look like plain frames (0xA1), a third like
/// keyed ones (0xA2), a third anything. Paced at about 2,000 a second.
fn random_datagrams(target: SocketAddr, seed: u64) -> usize {
    let Ok(socket) = UdpSocket::bind("0.0.0.0:0") else {
        return 0;
    };
    let mut rng = Rng::new(seed);
    let mut sent = 0;
    for i in 0..DATAGRAMS {
        let len = 1 + rng.below(1400);
        let mut d = rng.bytes(len);
        match i % 3 {
            0 => d[0] = 0xA1,
            1 => d[0] = 0xA2,
            _ => {}
        }
        if socket.send_to(&d, target).is_ok() {
            sent += 1;
        }
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    sent
}

/// Open idle connections and hold them; (established, still open at the end).
fn idle_connections(target: SocketAddr) -> (usize, usize) {
    let mut held = Vec::new();
    let began = Instant::now();
    for _ in 0..IDLE_CONNECTIONS {
        // Past the node's connection cap and the kernel's backlog, each
        // attempt waits out its timeout: stop trying rather than outlast the round.
        if began.elapsed() > OPENING {
            break;
        }
        if let Ok(c) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
            held.push(c);
        }
    }
    let established = held.len();
    std::thread::sleep(HOLD);
    // A connection the node closed reads EOF (or an error) at once.
    let open = held
        .iter_mut()
        .filter(|c| {
            let c: &TcpStream = c;
            let _ = c.set_nonblocking(true);
            let mut b = [0u8; 64];
            matches!((&mut &*c).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    (established, open)
}

/// Connections that send garbage (after the HTTP/2 preface if `preface`);
/// (connections that sent it, connections the node answered or closed).
fn garbage_connections(target: SocketAddr, seed: u64, preface: bool) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let count = if preface {
        PREFACE_CONNECTIONS
    } else {
        GARBAGE_CONNECTIONS
    };
    let (mut sent, mut answered) = (0, 0);
    let began = Instant::now();
    for _ in 0..count {
        if began.elapsed() > OPENING * 3 {
            break;
        }
        let Ok(mut c) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
            continue;
        };
        let mut bytes = Vec::new();
        if preface {
            bytes.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        }
        let len = 1 + rng.below(16 * 1024);
        bytes.extend(rng.bytes(len));
        if c.write_all(&bytes).is_ok() {
            sent += 1;
        }
        let _ = c.set_read_timeout(Some(Duration::from_millis(20)));
        let mut b = [0u8; 256];
        if c.read(&mut b).is_ok() {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (sent, answered)
}

/// One round of the attack, as the test saw it.
#[derive(Default)]
struct Round {
    start_us: u64,
    end_us: u64,
    said: String,
    rss_peak: u64,
    rss_after: u64,
    fds_peak: usize,
    fds_after: usize,
}

pub fn run(test: &str) {
    let Some(lab) = lab_or_skip(test, 4) else {
        return;
    };
    let store = Store::start(&lab.path("store.sock")).expect("the fenced store starts");
    start_cluster(&lab, test, &[0, 1, 2], 3);
    let target_addr = lab.addr(TARGET).to_string();
    let target_pid = lab.node(TARGET).pid().expect("the target runs");
    let fds = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let seed = now_us() ^ u64::from(std::process::id());

    let workload = Workload::new(&lab, &store.path);
    let mut rounds: Vec<Round> = Vec::new();
    let (mut rss_before, mut fds_before) = (0, 0);
    std::thread::scope(|s| {
        let _abort = workload.abort_on_drop();
        workload.run(s, &[0, 1, 2]);
        std::thread::sleep(Duration::from_secs(2));
        rss_before = lab.node(TARGET).rss_kib().unwrap_or(0);
        fds_before = fds(target_pid);
        let rounds_wanted = std::env::var("RA_CHAOS_HOSTILE_ROUNDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(ROUNDS);
        for round in 0..rounds_wanted {
            let mut attacker = lab.helper_in(ATTACKER, "hostile");
            attacker
                .env("RA_CHAOS_ADDR", &target_addr)
                .env("RA_CHAOS_SEED", (seed + round as u64).to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            super::lab::die_with_this_thread(&mut attacker);
            let mut r = Round {
                start_us: now_us(),
                ..Round::default()
            };
            let mut child = attacker.spawn().expect("start the attacker");
            let out = child.stdout.take();
            let reader = s.spawn(move || {
                let mut text = String::new();
                if let Some(mut out) = out {
                    let _ = out.read_to_string(&mut text);
                }
                text
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                r.rss_peak = r.rss_peak.max(lab.node(TARGET).rss_kib().unwrap_or(0));
                r.fds_peak = r.fds_peak.max(fds(target_pid));
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            r.end_us = now_us();
            r.said = reader
                .join()
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("hostile:"))
                .collect();
            std::thread::sleep(SETTLE);
            r.rss_after = lab.node(TARGET).rss_kib().unwrap_or(0);
            r.fds_after = fds(target_pid);
            rounds.push(r);
        }
        workload.stop_asking();
        workload.wait_idle(Instant::now() + Duration::from_secs(10));
        workload.abort();
    });
    let attack_us = rounds.first().map_or(0, |r| r.start_us);
    let attack_end_us = rounds.last().map_or(0, |r| r.end_us);

    let (logs, history, incs, holds_all) = gather(&lab, &store, &workload);
    let mut r = Report::new(
        &lab,
        test,
        &format!(
            "hostile traffic from {} at {target_addr} while three contend",
            lab.addr(ATTACKER).trim_end_matches(":7000")
        ),
    );
    for (n, round) in rounds.iter().enumerate() {
        let _ = writeln!(
            r,
            "round {}: {}..{} ({}): {}",
            n + 1,
            clock(round.start_us),
            clock(round.end_us),
            secs(round.start_us, round.end_us),
            round.said.trim_start_matches("hostile: ")
        );
    }
    let _ = writeln!(
        r,
        "{:<17} {:>7} {:>7} {:>7}   outcomes",
        "node", "before", "during", "after"
    );
    for i in 0..3 {
        let addr = lab.addr(i);
        let n = |from: u64, to: u64| entries_between(&holds_all, addr, from, to);
        let mine: Vec<&Increment> = incs.iter().filter(|x| x.host == i).collect();
        let during = n(attack_us, attack_end_us);
        let _ = writeln!(
            r,
            "{addr:<17} {:>7} {during:>7} {:>7}   {}",
            n(0, attack_us),
            n(attack_end_us, u64::MAX),
            outcome_counts(&mine)
        );
        r.expect(during > 0, || {
            format!("{addr} made no entry during the attack")
        });
    }
    let mut enters: Vec<u64> = holds_all
        .iter()
        .map(|h| h.enter_us)
        .filter(|t| (attack_us..attack_end_us).contains(t))
        .collect();
    enters.sort_unstable();
    let gap = enters
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain(enters.first().map(|f| f - attack_us))
        .max()
        .unwrap_or(u64::MAX);
    let _ = writeln!(
        r,
        "longest gap between entries during the attack: {}",
        secs(0, gap)
    );
    r.expect(gap <= GAP_MAX.as_micros() as u64, || {
        format!(
            "entries stalled during the attack: a gap of {}",
            secs(0, gap)
        )
    });
    let _ = writeln!(
        r,
        "RSS of {target_addr}: {rss_before} KiB before (open fds {fds_before}); {}",
        rounds
            .iter()
            .enumerate()
            .map(|(n, x)| format!(
                "round {}: peak {} KiB, {} KiB {:.0} s after (fds {} peak, {} after)",
                n + 1,
                x.rss_peak,
                x.rss_after,
                SETTLE.as_secs_f64(),
                x.fds_peak,
                x.fds_after
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    for (n, x) in rounds.iter().enumerate() {
        r.expect(x.rss_peak <= rss_before + PEAK_ALLOWANCE_KIB, || {
            format!(
                "RSS rose from {rss_before} KiB to {} KiB during round {} (allowed: +{PEAK_ALLOWANCE_KIB} KiB)",
                x.rss_peak,
                n + 1
            )
        });
        r.expect(x.rss_after <= rss_before + AFTER_ALLOWANCE_KIB, || {
            format!(
                "RSS stayed at {} KiB after round {}, from {rss_before} KiB before (allowed: +{AFTER_ALLOWANCE_KIB} KiB)",
                x.rss_after,
                n + 1
            )
        });
        r.expect(x.fds_after <= fds_before + 8, || {
            format!(
                "{} file descriptors open after round {}, {fds_before} before",
                x.fds_after,
                n + 1
            )
        });
    }
    if let [first, second] = rounds.as_slice() {
        // Reported, not judged: what a second, identical flood kept on top of
        // the first (issue 14, point 5 wants memory back near the baseline).
        let _ = writeln!(
            r,
            "kept after round 1: {:+} KiB over the baseline; round 2 kept {:+} KiB more",
            first.rss_after as i64 - rss_before as i64,
            second.rss_after as i64 - first.rss_after as i64
        );
    }
    let drops = logs[TARGET].drops(attack_us, attack_end_us + SETTLE.as_micros() as u64);
    let _ = writeln!(
        r,
        "{target_addr} dropped {} inputs: {} logged one by one, {} in {} drops_summarised records; by reason: {:?}",
        drops.total(),
        drops.logged,
        drops.summarised,
        drops.summaries,
        drops.reasons
    );
    r.expect(drops.summaries > 0, || {
        "the target logged no drops_summarised record".into()
    });
    r.expect(drops.logged <= LOGGED_DROPS_MAX, || {
        format!(
            "the target logged {} drops one by one (at most {LOGGED_DROPS_MAX}: the rest summarised)",
            drops.logged
        )
    });
    let warnings = logs[TARGET].warnings(attack_us, attack_end_us + SETTLE.as_micros() as u64);
    let _ = writeln!(
        r,
        "{target_addr} log lines at WARN or above during the attack: {}",
        warnings.len()
    );
    r.expect(lab.node(TARGET).is_running(), || {
        format!("{target_addr} is not running after the attack")
    });
    r.conclude(&history, &incs, &logs);
}
