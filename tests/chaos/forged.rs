//! Issue 14, point 2, on real processes: corrupted and forged SWIM datagrams.
//!
//! Three nodes on 127.0.0.1:7000-7002 inside one network namespace that has
//! only `lo` and no routes ([`Lab::loopback`]): a node may dial any address it
//! learns from a forgery, and nothing can leave that namespace (never the
//! host's own loopback). Real datagrams are captured there (an AF_PACKET socket
//! on `lo`, UDP between ports 7000-7002), then node 0 gets
//! (a) 10,000 copies with 1-3 random bits flipped (the checksum must refuse
//!     them), and
//! (b) 10,000 forged copies: unwrapped with `Sealer::Plain.open`, 1-3 bits
//!     flipped in the foca payload, resealed validly.
//! Half of each are sent from the captured sender's own address (a raw socket
//! writes the UDP header), half from an ephemeral port.
//!
//! Oracles: the cluster keeps serving (entries during the floods, and within
//! failure-detection time once they stop), no phantom member is ever seated
//! (every active set's members are among the three real processes), the
//! target's identity renewals (`rejoined`) stay few, no node crashes.
//!
//! Long because the capture and flood roles run as child processes of this same
//! file, beside the test that drives them.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ra::membership::seal::Sealer;

use super::hostile::Rng;
use super::lab::{Lab, loopback_or_skip, now_us};
use super::logs::clock;
use super::scenario::{Report, gather, secs, start_cluster};
use super::store::Store;
use super::workload::{Increment, Workload, outcome_counts};

const NODES: usize = 3;
const TARGET: usize = 0;
const COPIES: usize = 10_000;
const CAPTURE: Duration = Duration::from_secs(3);
/// After each flood.
const SETTLE: Duration = Duration::from_secs(2);
const AFTER: Duration = Duration::from_secs(4);
/// Failure detection with the shipped timings: the cluster serves again within
/// this once a flood stops.
const DETECTION: Duration = Duration::from_secs(2);
/// The target may renew its identity at most this often over both floods.
const REJOINS_MAX: usize = 10;

/// One captured datagram: UDP source and destination ports, the bytes.
#[derive(Clone, Debug)]
pub struct Captured {
    pub from: u16,
    pub to: u16,
    pub bytes: Vec<u8>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn read_captured(path: &std::path::Path) -> Vec<Captured> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(Captured {
                from: w.next()?.parse().ok()?,
                to: w.next()?.parse().ok()?,
                bytes: unhex(w.next()?)?,
            })
        })
        .collect()
}

/// The capture role, inside the loopback namespace: an AF_PACKET socket on
/// `lo` for `RA_CHAOS_SECS` seconds; UDP datagrams between ports
/// `RA_CHAOS_PORT_LO..=RA_CHAOS_PORT_HI` are written to `RA_CHAOS_OUT`, one a
/// line: "from to hex".
pub fn capture_main() -> i32 {
    let env = |n: &str| std::env::var(n).ok();
    let (Some(out), Some(secs), Some(lo), Some(hi)) = (
        env("RA_CHAOS_OUT"),
        env("RA_CHAOS_SECS").and_then(|s| s.parse::<f64>().ok()),
        env("RA_CHAOS_PORT_LO").and_then(|s| s.parse::<u16>().ok()),
        env("RA_CHAOS_PORT_HI").and_then(|s| s.parse::<u16>().ok()),
    ) else {
        eprintln!("capture: RA_CHAOS_OUT, RA_CHAOS_SECS, RA_CHAOS_PORT_LO/HI must be set");
        return 2;
    };
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket calls with locals of the right types and sizes.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
    if fd < 0 {
        eprintln!("capture: socket: {}", std::io::Error::last_os_error());
        return 2;
    }
    // SAFETY: as above; the name is a NUL-terminated literal.
    let ifindex = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: bind and setsockopt with pointers to locals and their sizes.
    let ok = unsafe {
        libc::bind(
            fd,
            (&raw const sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) == 0
            && libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            ) == 0
    };
    if !ok {
        eprintln!("capture: bind to lo: {}", std::io::Error::last_os_error());
        return 2;
    }
    let Ok(mut file) = std::fs::File::create(&out) else {
        eprintln!("capture: cannot write {out}");
        return 2;
    };
    println!("ready");
    let _ = std::io::stdout().flush();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut buf = vec![0u8; 65_536];
    let mut kept = 0;
    while Instant::now() < deadline {
        // SAFETY: sockaddr_ll is plain data.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: recvfrom into a buffer of the given length and a local address.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from).cast(),
                &mut len,
            )
        };
        if n <= 0 {
            continue;
        }
        // Every packet on lo is seen going out and coming in: keep one.
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        let p = &buf[..n as usize];
        if p.len() < 28 || p[0] >> 4 != 4 || p[9] != 17 {
            continue;
        }
        let ihl = usize::from(p[0] & 0xf) * 4;
        let Some(udp) = p.get(ihl..) else { continue };
        if udp.len() < 8 {
            continue;
        }
        let sport = u16::from_be_bytes([udp[0], udp[1]]);
        let dport = u16::from_be_bytes([udp[2], udp[3]]);
        let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        if !(lo..=hi).contains(&sport) || !(lo..=hi).contains(&dport) || ulen < 8 {
            continue;
        }
        let Some(payload) = udp.get(8..ulen) else {
            continue;
        };
        if writeln!(file, "{sport} {dport} {}", hex(payload)).is_ok() {
            kept += 1;
        }
    }
    // SAFETY: closing our own descriptor.
    unsafe {
        libc::close(fd);
    }
    println!("captured {kept}");
    0
}

/// Send `bytes` to 127.0.0.1:`to` as if from 127.0.0.1:`from`: a raw IPv4
/// socket, the UDP header written here (checksum 0: none, valid for IPv4).
fn send_spoofed(raw: i32, from: u16, to: u16, bytes: &[u8]) -> bool {
    let len = 8 + bytes.len();
    let mut packet = Vec::with_capacity(len);
    packet.extend_from_slice(&from.to_be_bytes());
    packet.extend_from_slice(&to.to_be_bytes());
    packet.extend_from_slice(&(len as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(bytes);
    let dest = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sendto from a live buffer to a local address of the right size.
    let n = unsafe {
        libc::sendto(
            raw,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const dest).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    n == packet.len() as isize
}

/// Flip 1-3 random bits of `bytes`.
fn flip_bits(rng: &mut Rng, bytes: &mut [u8]) {
    if bytes.is_empty() {
        return;
    }
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(bytes.len());
        bytes[i] ^= 1 << rng.below(8);
    }
}

/// The flood role, inside the loopback namespace: `RA_CHAOS_IN` the captured
/// datagrams, `RA_CHAOS_PORT` the target's port, `RA_CHAOS_MODE` `bitflip` or
/// `forged`, `RA_CHAOS_COUNT` copies, `RA_CHAOS_SEED`. Prints one `flood: ...`
/// line.
pub fn flood_main() -> i32 {
    let env = |n: &str| std::env::var(n).ok();
    let (Some(input), Some(port), Some(mode)) = (
        env("RA_CHAOS_IN"),
        env("RA_CHAOS_PORT").and_then(|s| s.parse::<u16>().ok()),
        env("RA_CHAOS_MODE"),
    ) else {
        eprintln!("flood: RA_CHAOS_IN, RA_CHAOS_PORT and RA_CHAOS_MODE must be set");
        return 2;
    };
    let count: usize = env("RA_CHAOS_COUNT")
        .and_then(|s| s.parse().ok())
        .unwrap_or(COPIES);
    let seed: u64 = env("RA_CHAOS_SEED")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    // RA_CHAOS_SPOOF: `half` (default), `none` or `all` of the copies sent from
    // the captured sender's own address.
    let spoofing = env("RA_CHAOS_SPOOF").unwrap_or_else(|| "half".into());
    let all = read_captured(std::path::Path::new(&input));
    // Real datagrams addressed to the target, from another node.
    let mut pool: Vec<Captured> = all
        .iter()
        .filter(|c| c.to == port && c.from != port)
        .cloned()
        .collect();
    if pool.is_empty() {
        pool = all.iter().filter(|c| c.from != port).cloned().collect();
    }
    if pool.is_empty() {
        eprintln!("flood: no captured datagram to copy");
        return 2;
    }
    let Ok(udp) = UdpSocket::bind("127.0.0.1:0") else {
        eprintln!("flood: cannot bind a UDP socket");
        return 2;
    };
    // SAFETY: a raw socket; the fd is closed at the end.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP) };
    let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let mut rng = Rng::new(seed);
    let (mut spoofed, mut plain, mut unopenable) = (0, 0, 0);
    for i in 0..count {
        let c = &pool[rng.below(pool.len())];
        let bytes = if mode == "forged" {
            match Sealer::Plain.open(&c.bytes) {
                Ok(mut payload) => {
                    flip_bits(&mut rng, &mut payload);
                    Sealer::Plain.seal(&payload, [0u8; 24])
                }
                Err(_) => {
                    unopenable += 1;
                    continue;
                }
            }
        } else {
            let mut b = c.bytes.clone();
            flip_bits(&mut rng, &mut b);
            b
        };
        let spoof = match spoofing.as_str() {
            "none" => false,
            "all" => true,
            _ => i % 2 == 0,
        };
        if spoof && raw >= 0 && send_spoofed(raw, c.from, port, &bytes) {
            spoofed += 1;
        } else if udp.send_to(&bytes, target).is_ok() {
            plain += 1;
        }
        // About 5,000 a second.
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if raw >= 0 {
        // SAFETY: our own descriptor.
        unsafe {
            libc::close(raw);
        }
    }
    println!(
        "flood: {mode}, seed {seed}: {} copies of {} real datagrams to port {port}: {spoofed} from the real sender's address, {plain} from an ephemeral port{}",
        spoofed + plain,
        pool.len(),
        if unopenable > 0 {
            format!(", {unopenable} captured ones did not open")
        } else {
            String::new()
        }
    );
    0
}

/// Run a helper in the loopback namespace to its end; its stdout.
fn helper_output(lab: &Lab, role: &str, envs: &[(&str, String)]) -> String {
    let mut cmd = lab.helper_in(0, role);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    super::lab::die_with_this_thread(&mut cmd);
    match cmd.output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => format!("cannot run {role}: {e}"),
    }
}

pub fn run(test: &str) {
    let Some(lab) = loopback_or_skip(test, NODES) else {
        return;
    };
    let store = Store::start(&lab.path("store.sock")).expect("the fenced store starts");
    start_cluster(&lab, test, &[0, 1, 2], NODES);
    let ports: Vec<u16> = (0..NODES)
        .map(|i| {
            lab.addr(i)
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    let target_port = ports[TARGET];
    let captured = lab.path("captured.txt");
    let seed = now_us() ^ u64::from(std::process::id());

    let workload = Workload::new(&lab, &store.path);
    let mut said: Vec<String> = Vec::new();
    let mut phases: Vec<(&str, u64, u64)> = Vec::new();
    let mut end_us = 0;
    std::thread::scope(|s| {
        let _abort = workload.abort_on_drop();
        workload.run(s, &[0, 1, 2]);
        std::thread::sleep(Duration::from_secs(1));
        let out = helper_output(
            &lab,
            "capture",
            &[
                ("RA_CHAOS_OUT", captured.display().to_string()),
                ("RA_CHAOS_SECS", CAPTURE.as_secs_f64().to_string()),
                ("RA_CHAOS_PORT_LO", ports[0].to_string()),
                ("RA_CHAOS_PORT_HI", ports[NODES - 1].to_string()),
            ],
        );
        said.extend(
            out.lines()
                .filter(|l| l.starts_with("captured"))
                .map(String::from),
        );
        for (mode, n) in [("bitflip", 0u64), ("forged", 1)] {
            let from = now_us();
            let out = helper_output(
                &lab,
                "flood",
                &[
                    ("RA_CHAOS_IN", captured.display().to_string()),
                    ("RA_CHAOS_PORT", target_port.to_string()),
                    ("RA_CHAOS_MODE", mode.to_string()),
                    ("RA_CHAOS_COUNT", COPIES.to_string()),
                    ("RA_CHAOS_SEED", (seed + n).to_string()),
                    (
                        "RA_CHAOS_SPOOF",
                        std::env::var("RA_CHAOS_SPOOF").unwrap_or_else(|_| "half".into()),
                    ),
                ],
            );
            phases.push((mode, from, now_us()));
            said.extend(
                out.lines()
                    .filter(|l| l.starts_with("flood"))
                    .map(String::from),
            );
            std::thread::sleep(SETTLE);
        }
        std::thread::sleep(AFTER.saturating_sub(SETTLE));
        end_us = now_us();
        workload.stop_asking();
        workload.wait_idle(Instant::now() + Duration::from_secs(10));
        workload.abort();
    });

    let (logs, history, incs, holds_all) = gather(&lab, &store, &workload);
    let target_addr = lab.addr(TARGET).to_string();
    let mut r = Report::new(
        &lab,
        test,
        &format!(
            "bit-flipped and forged copies of real SWIM datagrams to {target_addr}, three nodes in a namespace with only lo"
        ),
    );
    let n_captured = read_captured(&captured).len();
    for line in &said {
        let _ = writeln!(r, "{line}");
    }
    r.expect(n_captured > 0, || "no datagram was captured".into());
    r.expect(phases.len() == 2, || "the floods did not run".into());

    // Entries per node and phase.
    let first_flood = phases.first().map_or(0, |p| p.1);
    let mut bounds: Vec<(String, u64, u64)> = vec![("before".into(), 0, first_flood)];
    for (i, (mode, from, to)) in phases.iter().enumerate() {
        bounds.push((mode.to_string(), *from, *to));
        let next = phases.get(i + 1).map_or(u64::MAX, |p| p.1);
        bounds.push((format!("after {mode}"), *to, next));
    }
    let _ = writeln!(
        r,
        "{:<17} {}   outcomes",
        "node",
        bounds
            .iter()
            .map(|(l, _, _)| format!("{l:>15}"))
            .collect::<String>()
    );
    for i in 0..NODES {
        let addr = lab.addr(i);
        let mine: Vec<&Increment> = incs.iter().filter(|x| x.host == i).collect();
        let cells: String = bounds
            .iter()
            .map(|(_, from, to)| {
                let n = holds_all
                    .iter()
                    .filter(|h| h.node == addr && h.enter_us >= *from && h.enter_us < *to)
                    .count();
                format!("{n:>15}")
            })
            .collect();
        let _ = writeln!(r, "{addr:<17} {cells}   {}", outcome_counts(&mine));
    }
    let mut enters: Vec<u64> = holds_all.iter().map(|h| h.enter_us).collect();
    enters.sort_unstable();
    for (mode, from, to) in &phases {
        let during = enters.iter().filter(|t| (*from..*to).contains(*t)).count();
        let next = enters.iter().find(|t| **t >= *to).copied();
        let gap = enters
            .windows(2)
            .filter(|w| w[1] >= *from && w[0] <= *to)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            r,
            "{mode} flood {} ({}): {during} entries during it, longest gap {}; first entry after it: {}",
            clock(*from),
            secs(*from, *to),
            secs(0, gap),
            next.map_or("none".into(), |n| format!("+{}", secs(*to, n)))
        );
        r.expect(
            next.is_some_and(|n| n - to <= DETECTION.as_micros() as u64),
            || {
                format!(
                    "no entry within {DETECTION:?} of the end of the {mode} flood (first: {:?})",
                    next.map(|n| secs(*to, n))
                )
            },
        );
    }
    if let Some((_, _, last_to)) = phases.last() {
        for i in 0..NODES {
            let addr = lab.addr(i);
            let n = holds_all
                .iter()
                .filter(|h| h.node == addr && h.enter_us >= *last_to && h.enter_us < end_us)
                .count();
            r.expect(n > 0, || format!("{addr} made no entry after the floods"));
        }
    }

    // No phantom is ever seated: every member of every active set any node
    // installed is one of the real processes.
    let real: BTreeSet<String> = logs
        .iter()
        .flat_map(|l| l.processes())
        .map(|p| format!("{}~{}", p.addr, p.incarnation))
        .collect();
    let mut seated_phantoms: BTreeSet<String> = BTreeSet::new();
    let mut installs = 0;
    for log in &logs {
        for install in log.installs() {
            installs += 1;
            for m in &install.members {
                let id = format!("{}~{}", m.addr, m.incarnation);
                if !real.contains(&id) {
                    seated_phantoms.insert(format!("{id} (epoch {})", install.epoch));
                }
            }
        }
    }
    let flood_from = phases.first().map_or(0, |p| p.1);
    let learned: BTreeSet<String> = logs
        .iter()
        .flat_map(|l| l.members_learned(flood_from, u64::MAX))
        .map(|p| format!("{}~{}", p.addr, p.incarnation))
        .filter(|id| !real.contains(id))
        .collect();
    let _ = writeln!(
        r,
        "active sets installed: {installs}; members not among the {} real processes: seated {}, learned of {}{}",
        real.len(),
        seated_phantoms.len(),
        learned.len(),
        if learned.is_empty() {
            String::new()
        } else {
            format!(
                " (e.g. {})",
                learned
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    for p in &seated_phantoms {
        r.fail(format!("a phantom member was seated: {p}"));
    }

    // The target's identity, and what it dropped.
    let rejoins = logs[TARGET].rejoined(flood_from, u64::MAX);
    let others: Vec<usize> = (1..NODES)
        .map(|i| logs[i].rejoined(flood_from, u64::MAX).len())
        .collect();
    let _ = writeln!(
        r,
        "{target_addr} renewed its identity {} times (bumps {:?}); the others {:?}",
        rejoins.len(),
        rejoins,
        others
    );
    r.expect(rejoins.len() <= REJOINS_MAX, || {
        format!(
            "{target_addr} renewed its identity {} times (at most {REJOINS_MAX})",
            rejoins.len()
        )
    });
    // Drops are summarised every ten seconds or so: count to the end.
    let d = logs[TARGET].drops(flood_from, u64::MAX);
    let _ = writeln!(
        r,
        "{target_addr} dropped {} inputs from the first flood on ({} logged one by one, {} summaries), by reason {:?}",
        d.total(),
        d.logged,
        d.summaries,
        d.reasons
    );
    for i in 0..NODES {
        r.expect(lab.node(i).is_running(), || {
            format!("{} is not running at the end", lab.addr(i))
        });
    }
    r.conclude(&history, &incs, &logs);
}
