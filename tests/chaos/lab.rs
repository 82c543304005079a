//! A lab of network namespaces on this machine, for real faults between real `ra`
//! processes.
//!
//! Layout (every name carries `rachaos-<pid>-<lab>-`, so concurrent runs and
//! leftovers of killed runs never clash):
//!
//! ```text
//!   namespace …-hub:  br0 (the network)   br1 (the other side of a cut)
//!                      |  |  |
//!                      h0 h1 h2 …          hub ends of the veth pairs
//!                      |  |  |
//!   namespace …-h0:   eth0 10.203.0.1/24   (one namespace per host, `lo` up)
//!   namespace …-h1:   eth0 10.203.0.2/24
//! ```
//!
//! Nothing is created in the root namespace and nothing is routed: the subnet exists
//! only inside these namespaces. A host may run a `ra` node ([`Lab::start_node`]) or
//! anything else ([`Lab::command_in`], e.g. hostile traffic).
//!
//! Faults:
//! - [`Lab::cut`]: move hosts' hub ends to `br1` (symmetric partition; the cut hosts
//!   still reach each other), [`Lab::heal`] moves them back.
//! - [`Lab::drop_inbound`]: drop every IP packet arriving at a host (one-way cut:
//!   it still sends), with a `tc` ingress filter inside the host's namespace (no
//!   iptables needed). ARP still passes, so the host's own sends keep working.
//! - [`Lab::link_down`] / [`Lab::link_up`]: the hub end of a host's cable.
//! - [`Node::pause`], [`Node::resume`], [`Node::kill`], and a restart with
//!   [`Lab::start_node`] again.
//!
//! The [`Lab`] guard kills every process it started and deletes every namespace it
//! created when dropped, also on panic; a lab that is dropped while panicking keeps
//! its scratch directory (the node logs) and says where (so does every lab when
//! `RA_CHAOS_KEEP` is set). [`Lab::new`] first sweeps
//! namespaces left by earlier runs that were killed (their pid is gone).
//!
//! Labs run two at a time in a process (libtest's two threads on 2 cores), except
//! the CPU-heavy ones ([`CPU_HEAVY`]: floods, churn), which run alone so that
//! timing-sensitive failure detection does not compete with them.
//!
//! Long because it is one job: namespaces, links, faults and processes of the lab,
//! and their clean-up.

// A toolkit: later fault tests use parts the current ones do not.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every namespace of every lab starts with this.
pub const PREFIX: &str = "rachaos-";
/// The lab's subnet: host `i` is `10.203.0.(i+1)`.
pub const SUBNET: [u8; 3] = [10, 203, 0];
/// The port every node binds (UDP and TCP).
pub const PORT: u16 = 7000;
/// Environment variable that makes the test binary act as a helper process.
pub const ROLE_ENV: &str = "RA_CHAOS_ROLE";
/// The one `#[test]` function of the chaos binary that runs a helper role.
pub const ROLE_TEST: &str = "helper_role";

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);
/// Labs share the machine two at a time (libtest runs two tests at once on two
/// cores), but these run alone: floods and churn's restarts take the CPU that
/// another lab's failure detection needs to keep its timings.
static CPU_HEAVY: [&str; 3] = [
    "churn_under_contention",
    "hostile_traffic_during_a_run",
    "corrupted_and_forged_datagrams",
];
static TURNS: RwLock<()> = RwLock::new(());

/// A lab's turn on the machine: shared, or alone for a CPU-heavy test.
enum Turn {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

impl Turn {
    fn take(test: &str) -> Turn {
        if CPU_HEAVY.contains(&test) {
            Turn::Alone(TURNS.write().unwrap_or_else(|e| e.into_inner()))
        } else {
            Turn::Shared(TURNS.read().unwrap_or_else(|e| e.into_inner()))
        }
    }
}

/// Microseconds since the Unix epoch: the clock of `--cs-file` and of the logs.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Why this process cannot run a lab, or `None` if it can (checked once).
pub fn missing_capability() -> Option<String> {
    static CHECKED: OnceLock<Option<String>> = OnceLock::new();
    CHECKED.get_or_init(check_capability).clone()
}

fn check_capability() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Some(format!(
            "not root (euid {uid}); network namespaces need root"
        ));
    }
    let probe = format!("{PREFIX}{}-probe", std::process::id());
    if let Err(e) = run("ip", &["netns", "add", &probe]) {
        return Some(format!("`ip netns` does not work here: {e}"));
    }
    let _ = run("ip", &["netns", "del", &probe]);
    None
}

/// A lab with `hosts` namespaces, or `None` when this machine cannot run one. Prints
/// one line saying why; under `CI=true` that is a failure instead (a green CI must
/// mean the faults ran).
pub fn lab_or_skip(test: &str, hosts: usize) -> Option<Lab> {
    can_run_or_skip(test)?;
    Some(Lab::new(test, hosts).unwrap_or_else(|e| panic!("setting up the lab for {test}: {e}")))
}

/// A loopback lab ([`Lab::loopback`]) of `nodes` nodes, or `None` as in
/// [`lab_or_skip`].
pub fn loopback_or_skip(test: &str, nodes: usize) -> Option<Lab> {
    can_run_or_skip(test)?;
    Some(
        Lab::loopback(test, nodes)
            .unwrap_or_else(|e| panic!("setting up the loopback lab for {test}: {e}")),
    )
}

fn can_run_or_skip(test: &str) -> Option<()> {
    if let Some(why) = missing_capability() {
        let line = format!("chaos test {test} cannot run: {why}");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{line} (CI=true: the fault tests must run; run the tests as root)");
        }
        // Straight to fd 2, past the test harness's output capture.
        let _ = writeln!(std::io::stderr(), "{line}; skipped (set CI=true to fail)");
        return None;
    }
    Some(())
}

/// Run a command to completion; its stderr becomes the error.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Delete namespaces of earlier runs whose process is gone, killing whatever still
/// runs inside them. Returns the names removed.
pub fn sweep_leftovers() -> Vec<String> {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        delete_namespace(name);
        removed.push(name.to_string());
    }
    removed
}

/// Kill every process inside a namespace, then delete it.
fn delete_namespace(name: &str) {
    for _ in 0..3 {
        let pids = run("ip", &["netns", "pids", name]).unwrap_or_default();
        let pids: Vec<i32> = pids.lines().filter_map(|p| p.trim().parse().ok()).collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: kill(2) with a pid read from the kernel; no memory concerns.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Err(e) = run("ip", &["netns", "del", name]) {
        let _ = writeln!(std::io::stderr(), "chaos lab cleanup: {e}");
    }
}

/// How to start a node; see [`Lab::start_node`].
#[derive(Clone, Debug)]
pub struct NodeOpts {
    /// Hosts whose nodes to join through (none: this node founds the cluster).
    pub join: Vec<usize>,
    pub hold_ms: u64,
    /// Further arguments for `ra`.
    pub extra: Vec<String>,
}

impl Default for NodeOpts {
    fn default() -> Self {
        Self {
            join: Vec::new(),
            hold_ms: 100,
            extra: Vec::new(),
        }
    }
}

/// One host: a namespace with one address on the lab network.
pub struct Host {
    pub index: usize,
    pub ns: String,
    pub ip: Ipv4Addr,
    /// The hub end of its veth pair (inside the hub namespace).
    pub hub_port: String,
    /// Where its node logs go (every incarnation appends).
    pub log: PathBuf,
    node: Node,
}

/// The `ra` process of a host, if one runs. Shared between threads: a workload
/// thread types on its stdin while the test cuts the network.
pub struct Node {
    pub addr: String,
    proc: Mutex<Option<RaProcess>>,
    starts: AtomicUsize,
}

struct RaProcess {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Node {
    fn with<R>(&self, f: impl FnOnce(&mut RaProcess) -> R) -> Option<R> {
        let mut guard = self.proc.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_mut().map(f)
    }

    /// The pid of the running `ra` (not of a wrapper: `ip netns exec` execs).
    pub fn pid(&self) -> Option<u32> {
        self.with(|p| p.child.id())
    }

    /// Type one line on the node's stdin; an empty line asks for the critical section.
    pub fn type_line(&self, line: &str) -> Result<(), String> {
        self.with(|p| match p.stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "{line}")
                .and_then(|()| stdin.flush())
                .map_err(|e| format!("writing to the stdin of {}: {e}", self.addr)),
            None => Err(format!("the stdin of {} is closed", self.addr)),
        })
        .unwrap_or_else(|| Err(format!("no node runs at {}", self.addr)))
    }

    /// Ask for the critical section once (press Enter).
    pub fn ask(&self) -> Result<(), String> {
        self.type_line("")
    }

    pub fn signal(&self, signal: i32) -> Result<(), String> {
        let pid = self
            .pid()
            .ok_or_else(|| format!("no node runs at {}", self.addr))?;
        // SAFETY: kill(2) on our own child; no memory concerns.
        let rc = unsafe { libc::kill(pid as i32, signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!(
                "kill({pid}, {signal}) for {}: {}",
                self.addr,
                std::io::Error::last_os_error()
            ))
        }
    }

    /// SIGSTOP: the process keeps its sockets (connects still complete) but answers
    /// nothing.
    pub fn pause(&self) -> Result<(), String> {
        self.signal(libc::SIGSTOP)
    }

    pub fn resume(&self) -> Result<(), String> {
        self.signal(libc::SIGCONT)
    }

    /// SIGKILL and reap; a no-op if none runs.
    pub fn kill(&self) {
        let taken = self.proc.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut p) = taken {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Whether the process still runs (stopped counts as running).
    pub fn is_running(&self) -> bool {
        self.with(|p| matches!(p.child.try_wait(), Ok(None)))
            .unwrap_or(false)
    }

    /// The exit status, if the process ended by itself.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.with(|p| p.child.try_wait().ok().flatten()).flatten()
    }

    /// Leave gracefully (SIGTERM, as an operator would) and wait up to
    /// `within` for the process to exit. Its exit status, or an error.
    pub fn leave(&self, within: Duration) -> Result<ExitStatus, String> {
        self.signal(libc::SIGTERM)?;
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.exit_status() {
                self.kill(); // reap and forget it
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "{} did not exit within {within:?} of SIGTERM",
                    self.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the running process, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid()?)
    }

    /// Processes started on this host so far (restarts count).
    pub fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }
}

/// The lab guard. See the module documentation.
pub struct Lab {
    pub name: String,
    /// Scratch directory: node logs, the shared cs-file, the store's socket.
    pub dir: PathBuf,
    /// The hub namespace (empty in a loopback lab, which has none).
    hub: String,
    /// Every namespace made, in order (deleted in reverse by Drop).
    namespaces: Vec<String>,
    hosts: Vec<Host>,
    others: Mutex<Vec<Child>>,
    keep: AtomicBool,
    _turn: Turn,
}

impl Lab {
    /// An empty lab: its name, its scratch directory, no namespace yet. Sweeps
    /// leftovers of killed runs first. Waits for its [`Turn`].
    fn blank(test: &str) -> Result<Lab, String> {
        let turn = Turn::take(test);
        let swept = sweep_leftovers();
        if !swept.is_empty() {
            let _ = writeln!(
                std::io::stderr(),
                "chaos lab: removed {} namespaces left by killed runs: {}",
                swept.len(),
                swept.join(", ")
            );
        }
        let name = format!(
            "{PREFIX}{}-{}-",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::SeqCst)
        );
        let dir = std::env::temp_dir().join(format!("{name}{test}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("creating scratch directory {}: {e}", dir.display()))?;
        Ok(Lab {
            name,
            dir,
            hub: String::new(),
            namespaces: Vec::new(),
            hosts: Vec::new(),
            others: Mutex::new(Vec::new()),
            keep: AtomicBool::new(std::env::var_os("RA_CHAOS_KEEP").is_some()),
            _turn: turn,
        })
    }

    /// Make a namespace with `lo` up, and remember it for Drop.
    fn add_namespace(&mut self, ns: &str) -> Result<(), String> {
        run("ip", &["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        run("ip", &["-n", ns, "link", "set", "lo", "up"]).map(|_| ())
    }

    /// A lab of one namespace with only `lo` and no routes beyond loopback, and
    /// `nodes` hosts in it: node `i` at `127.0.0.1:(7000+i)`. For traffic that
    /// may make a node dial what it learned (forged gossip): nothing can leave
    /// this namespace, and the host's own loopback is never touched. Faults of
    /// the network ([`Lab::cut`], [`Lab::drop_inbound`], ...) do not apply.
    pub fn loopback(test: &str, nodes: usize) -> Result<Lab, String> {
        assert!((1..=100).contains(&nodes), "1 to 100 nodes");
        let mut lab = Lab::blank(test)?;
        let ns = format!("{}lo", lab.name);
        lab.add_namespace(&ns)?;
        let routes = run("ip", &["-n", &ns, "-4", "route", "show", "table", "all"])?;
        if routes.lines().any(|l| l.starts_with("default")) {
            return Err(format!(
                "the loopback namespace {ns} has a default route: {routes}"
            ));
        }
        let links = run("ip", &["-n", &ns, "-o", "link", "show"])?;
        if links.lines().count() != 1 {
            return Err(format!(
                "the loopback namespace {ns} has links besides lo: {links}"
            ));
        }
        for index in 0..nodes {
            let ip = Ipv4Addr::LOCALHOST;
            lab.hosts.push(Host {
                index,
                ns: ns.clone(),
                ip,
                hub_port: String::new(),
                log: lab.dir.join(format!("node-{index}.log")),
                node: Node {
                    addr: SocketAddrV4::new(ip, PORT + index as u16).to_string(),
                    proc: Mutex::new(None),
                    starts: AtomicUsize::new(0),
                },
            });
        }
        Ok(lab)
    }

    /// Create `hosts` namespaces on a fresh hub. Sweeps leftovers of killed runs
    /// first. Waits for its [`Turn`].
    pub fn new(test: &str, hosts: usize) -> Result<Lab, String> {
        assert!((1..=250).contains(&hosts), "1 to 250 hosts");
        let mut lab = Lab::blank(test)?;
        let name = lab.name.clone();
        let hub = format!("{name}hub");
        lab.hub = hub.clone();
        // From here on, Drop deletes whatever was made, also if a step fails.
        lab.add_namespace(&hub)?;
        let h = hub.as_str();
        for br in ["br0", "br1"] {
            run("ip", &["-n", h, "link", "add", br, "type", "bridge"])?;
            run("ip", &["-n", h, "link", "set", br, "up"])?;
        }
        for index in 0..hosts {
            let ns = format!("{name}h{index}");
            let hub_port = format!("h{index}");
            let ip = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], index as u8 + 1);
            lab.add_namespace(&ns)?;
            lab.hosts.push(Host {
                index,
                ns: ns.clone(),
                ip,
                hub_port: hub_port.clone(),
                log: lab.dir.join(format!("node-{index}.log")),
                node: Node {
                    addr: SocketAddrV4::new(ip, PORT).to_string(),
                    proc: Mutex::new(None),
                    starts: AtomicUsize::new(0),
                },
            });
            run(
                "ip",
                &[
                    "-n", h, "link", "add", &hub_port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            run("ip", &["-n", h, "link", "set", &hub_port, "master", "br0"])?;
            run("ip", &["-n", h, "link", "set", &hub_port, "up"])?;
            let cidr = format!("{ip}/24");
            run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(lab)
    }

    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.hosts[i].node
    }

    /// The node address of host `i` (`10.203.0.(i+1):7000`).
    pub fn addr(&self, i: usize) -> &str {
        &self.hosts[i].node.addr
    }

    /// Which host has this node address.
    pub fn host_of(&self, addr: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.node.addr == addr)
    }

    /// The shared critical-section file every node appends to.
    pub fn cs_file(&self) -> PathBuf {
        self.dir.join("cs.jsonl")
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Keep the scratch directory after the lab is dropped, and say where it is.
    pub fn keep_files(&self) {
        self.keep.store(true, Ordering::SeqCst);
    }

    /// A command that runs `program` inside host `i`'s namespace.
    pub fn command_in(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i].ns]).arg(program);
        cmd
    }

    /// Spawn a command (from [`Lab::command_in`]) whose process the lab kills when
    /// dropped.
    pub fn spawn_tracked(&self, mut cmd: Command) -> Result<u32, String> {
        die_with_this_thread(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        let pid = child.id();
        self.others
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        Ok(pid)
    }

    /// Start (or restart) `ra` on host `i`:
    /// `ip netns exec NS ra --bind IP:7000 --advertise IP:7000 [--join ...]
    /// --hold-ms H --cs-file <lab>/cs.jsonl --log-format json [extra]`,
    /// stdin piped, stderr appended to the host's log, stdout to `node-i.out`.
    ///
    /// The process gets SIGKILL if the thread that started it ends (so a test run
    /// that is killed does not leave nodes behind): start nodes from the test's own
    /// thread.
    /// The client API socket of host `i`'s node (for `ra lock --node`).
    pub fn api_socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node-{i}.sock"))
    }

    pub fn start_node(&self, i: usize, opts: &NodeOpts) -> Result<(), String> {
        let host = &self.hosts[i];
        if host.node.is_running() {
            return Err(format!("a node already runs on host {i}"));
        }
        host.node.kill(); // reap an exited one
        let addr = host.node.addr.clone();
        let mut cmd = self.command_in(i, env!("CARGO_BIN_EXE_ra"));
        cmd.args(["--bind", &addr, "--advertise", &addr]);
        for j in &opts.join {
            cmd.args(["--join", self.addr(*j)]);
        }
        // Every host's node listens on port 7000, and network namespaces share
        // the filesystem: each needs its own API socket.
        cmd.args(["--hold-ms", &opts.hold_ms.to_string()])
            .arg("--api")
            .arg(self.api_socket(i))
            .arg("--cs-file")
            .arg(self.cs_file())
            .args(["--log-format", "json"])
            .args(&opts.extra);
        let log = append(&host.log)?;
        let out = append(&self.dir.join(format!("node-{i}.out")))?;
        cmd.stdin(Stdio::piped()).stdout(out).stderr(log);
        die_with_this_thread(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting ra on host {i}: {e}"))?;
        let stdin = child.stdin.take();
        let pid = child.id();
        *host.node.proc.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(RaProcess { child, stdin });
        host.node.starts.fetch_add(1, Ordering::SeqCst);
        // `ip netns exec` execs ra: from then on the pid is ra's own, and signals
        // reach it (not a wrapper). Wait for that, so pause and kill are exact.
        let ra = std::fs::canonicalize(env!("CARGO_BIN_EXE_ra"))
            .map_err(|e| format!("the ra binary: {e}"))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::read_link(format!("/proc/{pid}/exe")) {
                Ok(exe) if exe == ra => return Ok(()),
                Err(_) => {
                    return Err(format!(
                        "ra on host {i} exited at once; see {}",
                        host.log.display()
                    ));
                }
                _ if std::time::Instant::now() >= deadline => {
                    return Err(format!("ra on host {i} was not exec'd within 5 s"));
                }
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// Symmetric partition: these hosts move to the second bridge. They reach each
    /// other, and nobody on the first.
    pub fn cut(&self, hosts: &[usize]) -> Result<(), String> {
        for &i in hosts {
            self.hub_ip(&["link", "set", &self.hosts[i].hub_port, "master", "br1"])?;
        }
        Ok(())
    }

    /// Undo [`Lab::cut`] for these hosts.
    pub fn heal(&self, hosts: &[usize]) -> Result<(), String> {
        for &i in hosts {
            self.hub_ip(&["link", "set", &self.hosts[i].hub_port, "master", "br0"])?;
        }
        Ok(())
    }

    /// One-way cut: every IP packet arriving at host `i` is dropped (it still
    /// sends). A `tc` ingress filter inside its namespace: classic BPF `ret #2`
    /// (TC_ACT_SHOT) in direct-action mode, or `matchall`/`u32` with a drop action
    /// on kernels that have those (this machine's kernel lacks matchall and gact).
    pub fn drop_inbound(&self, i: usize) -> Result<(), String> {
        let ns = &self.hosts[i].ns;
        run(
            "ip",
            &[
                "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "ingress",
            ],
        )?;
        let filter = [
            "netns", "exec", ns, "tc", "filter", "add", "dev", "eth0", "ingress", "protocol", "ip",
            "prio", "1",
        ];
        let ways: [&[&str]; 3] = [
            &["bpf", "da", "bytecode", "1,6 0 0 2"],
            &["matchall", "action", "drop"],
            &["u32", "match", "u32", "0", "0", "action", "drop"],
        ];
        let mut errors = Vec::new();
        for way in ways {
            match run("ip", &[&filter[..], way].concat()) {
                Ok(_) => return Ok(()),
                Err(e) => errors.push(e),
            }
        }
        let _ = self.restore_inbound(i);
        Err(format!(
            "no tc ingress drop works here: {}",
            errors.join("; ")
        ))
    }

    /// Undo [`Lab::drop_inbound`].
    pub fn restore_inbound(&self, i: usize) -> Result<(), String> {
        let ns = &self.hosts[i].ns;
        run(
            "ip",
            &[
                "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "ingress",
            ],
        )
        .map(|_| ())
    }

    /// The staged heal of a one-way cut: from dropping everything that arrives
    /// at host `i` ([`Lab::drop_inbound`]) to dropping only its inbound UDP, so
    /// TCP (gRPC) flows again while SWIM datagrams still do not. The UDP filter
    /// goes in behind the drop-all one, then the drop-all one goes: nothing
    /// passes in between. A classic BPF program on the Ethernet frame (tc pushes
    /// the MAC header back at ingress): IPv4 protocol byte 17 is dropped
    /// (TC_ACT_SHOT), all else passes. [`Lab::restore_inbound`] removes it.
    pub fn drop_inbound_udp_only(&self, i: usize) -> Result<(), String> {
        let ns = &self.hosts[i].ns;
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "tc",
                "filter",
                "add",
                "dev",
                "eth0",
                "ingress",
                "protocol",
                "ip",
                "prio",
                "2",
                "bpf",
                "da",
                "bytecode",
                "4,48 0 0 23,21 0 1 17,6 0 0 2,6 0 0 0",
            ],
        )?;
        run(
            "ip",
            &[
                "netns", "exec", ns, "tc", "filter", "del", "dev", "eth0", "ingress", "protocol",
                "ip", "prio", "1",
            ],
        )
        .map(|_| ())
    }

    /// The pids of every process inside host `i`'s namespace: its node, the `ra
    /// lock` clients started there and their commands. Freezing them all is a
    /// frozen VM.
    pub fn host_pids(&self, i: usize) -> Vec<i32> {
        run("ip", &["netns", "pids", &self.hosts[i].ns])
            .unwrap_or_default()
            .lines()
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }

    /// Unplug host `i`'s cable at the hub.
    pub fn link_down(&self, i: usize) -> Result<(), String> {
        self.hub_ip(&["link", "set", &self.hosts[i].hub_port, "down"])
    }

    pub fn link_up(&self, i: usize) -> Result<(), String> {
        self.hub_ip(&["link", "set", &self.hosts[i].hub_port, "up"])
    }

    fn hub_ip(&self, args: &[&str]) -> Result<(), String> {
        run("ip", &[&["-n", self.hub.as_str()], args].concat()).map(|_| ())
    }

    /// Whether a UDP datagram from host `from` reaches host `to` (port 7999) right
    /// now: a receiver in `to`, a few datagrams sent from `from`. Both are this
    /// test binary in a helper role ([`probe_main`]).
    pub fn udp_reaches(&self, from: usize, to: usize) -> Result<bool, String> {
        let (mut receiver, sent) = self.probe_pair("udp", from, to, 7999)?;
        if !sent.success() {
            stop(&mut receiver);
            return Err(format!("udp sender in host {from} failed: {sent}"));
        }
        let status = receiver.wait().map_err(|e| format!("udp receiver: {e}"))?;
        Ok(status.success())
    }

    /// Whether a TCP connection from host `from` to host `to` (port 7998) is
    /// established right now (within a second).
    pub fn tcp_reaches(&self, from: usize, to: usize) -> Result<bool, String> {
        let (mut receiver, connected) = self.probe_pair("tcp", from, to, 7998)?;
        stop(&mut receiver);
        Ok(connected.success())
    }

    /// The `PROTO-recv` helper in host `to`, bound to `port` and ready, and the
    /// exit status of the `PROTO-send` helper run against it from host `from`.
    fn probe_pair(
        &self,
        proto: &str,
        from: usize,
        to: usize,
        port: u16,
    ) -> Result<(Child, ExitStatus), String> {
        let target = SocketAddrV4::new(self.hosts[to].ip, port).to_string();
        let mut recv = self.helper_in(to, &format!("{proto}-recv"));
        recv.env("RA_CHAOS_ADDR", &target)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_this_thread(&mut recv);
        let mut receiver = recv.spawn().map_err(|e| format!("{proto} receiver: {e}"))?;
        // It says "ready" once bound (after the test harness's own lines).
        let ready = receiver.stdout.take().is_some_and(|out| {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.trim() == "ready")
        });
        if !ready {
            stop(&mut receiver);
            return Err(format!("{proto} receiver in host {to} did not start"));
        }
        let mut send = self.helper_in(from, &format!("{proto}-send"));
        send.env("RA_CHAOS_ADDR", &target).stdout(Stdio::null());
        match send.status() {
            Ok(status) => Ok((receiver, status)),
            Err(e) => {
                stop(&mut receiver);
                Err(format!("{proto} sender: {e}"))
            }
        }
    }

    /// This test binary, running its helper role `role` inside host `i`.
    pub fn helper_in(&self, i: usize, role: &str) -> Command {
        let mut cmd = self.command_in(i, current_exe());
        helper_args(&mut cmd, role);
        cmd
    }
}

/// Resident memory of a process, in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Send `signal` to each of `pids`; the ones that are gone are skipped.
pub fn signal_all(pids: &[i32], signal: i32) {
    for &pid in pids {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// This test binary running one helper role (see [`ROLE_TEST`]), outside any lab
/// namespace.
pub fn helper(role: &str) -> Command {
    let mut cmd = Command::new(current_exe());
    helper_args(&mut cmd, role);
    cmd
}

/// Append this test binary in helper role `role` to `cmd`'s arguments (as the
/// command `ra lock` runs, say), with the role in the environment.
pub fn add_helper(cmd: &mut Command, role: &str) {
    cmd.arg(current_exe());
    helper_args(cmd, role);
}

fn current_exe() -> PathBuf {
    std::env::current_exe().expect("the path of the running test binary")
}

fn helper_args(cmd: &mut Command, role: &str) {
    cmd.args([
        ROLE_TEST,
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(ROLE_ENV, role);
}

fn append(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))
}

/// Kill a helper and reap it.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILL the child when the spawning thread ends (a killed test run must not
/// leave nodes running; `ip netns exec` execs, and the setting survives exec).
pub fn die_with_this_thread(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for host in &self.hosts {
            host.node.kill();
        }
        for mut child in self
            .others
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            delete_namespace(ns);
        }
        if std::thread::panicking() || self.keep.load(Ordering::SeqCst) {
            let _ = writeln!(
                std::io::stderr(),
                "chaos lab {}: logs kept in {}",
                self.name,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The probe roles of the test binary: `udp-recv` binds `RA_CHAOS_ADDR`, says
/// "ready", and exits 0 if a datagram arrives within a second (1 otherwise);
/// `udp-send` sends a few datagrams to it; `tcp-recv` listens there for 5 s,
/// `tcp-send` exits 0 if it connects within a second.
pub fn probe_main(role: &str) -> i32 {
    let Ok(addr) = std::env::var("RA_CHAOS_ADDR") else {
        eprintln!("{role}: RA_CHAOS_ADDR is not set");
        return 2;
    };
    match role {
        "udp-recv" => {
            let socket = match UdpSocket::bind(&addr) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("udp-recv: bind {addr}: {e}");
                    return 2;
                }
            };
            let _ = socket.set_read_timeout(Some(Duration::from_secs(1)));
            println!("ready");
            let _ = std::io::stdout().flush();
            let mut buf = [0u8; 64];
            match socket.recv_from(&mut buf) {
                Ok(_) => 0,
                Err(_) => 1,
            }
        }
        "udp-send" => {
            let socket = match UdpSocket::bind("0.0.0.0:0") {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("udp-send: bind: {e}");
                    return 2;
                }
            };
            for _ in 0..5 {
                let _ = socket.send_to(b"probe", &addr);
                std::thread::sleep(Duration::from_millis(20));
            }
            0
        }
        "tcp-recv" => {
            let listener = match std::net::TcpListener::bind(&addr) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("tcp-recv: bind {addr}: {e}");
                    return 2;
                }
            };
            println!("ready");
            let _ = std::io::stdout().flush();
            // Held open until the prober kills it; accepting is the kernel's job.
            std::thread::sleep(Duration::from_secs(5));
            drop(listener);
            0
        }
        "tcp-send" => {
            let Ok(target) = addr.parse::<std::net::SocketAddr>() else {
                eprintln!("tcp-send: bad address {addr}");
                return 2;
            };
            match std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                Ok(_) => 0,
                Err(_) => 1,
            }
        }
        other => {
            eprintln!("unknown probe role {other}");
            2
        }
    }
}
