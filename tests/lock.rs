//! `ra lock NAME -- CMD` and the node's local gRPC API, run as a user runs
//! them: real `ra` nodes on loopback, each with its API on a Unix socket in the
//! test's scratch directory, and real `ra lock` processes running shell
//! commands under the lock.
//!
//! Covered: no lost update on a shared counter with strictly increasing
//! `RA_FENCE`s; two names held at once while one name never overlaps; the
//! exit statuses `ra lock --help` documents (CMD's own, 128+signal, 126, 127,
//! 125, 69); `--try` and `--timeout` (124); a SIGKILLed `ra lock` frees its
//! lock; `grpc.health.v1` on the API socket; a holder whose node is stopped
//! loses the lock (75) and CMD is stopped; and `--requests` ends by itself.
//!
//! Over 500 lines: eight scenarios, each needing its own cluster and its own
//! shell commands, and the process guards every one of them shares.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ra::event::Event;
use support::{Node, Scratch, assert_mutual_exclusion, exits, logged, read, wait_for};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// `ra lock`'s exit statuses, as `ra lock --help` lists them.
const NODE_UNREACHABLE: i32 = 69;
const LOCK_LOST: i32 = 75;
const TIMED_OUT: i32 = 124;
const OWN_ERROR: i32 = 125;
const CANNOT_RUN: i32 = 126;
const NOT_FOUND: i32 = 127;

/// Generous bounds for a loaded 2-core machine: they only stop a hung test.
const FORMED_WITHIN: Duration = Duration::from_secs(20);
const CLIENT_WITHIN: Duration = Duration::from_secs(30);

/// A cluster of `ra` nodes whose APIs listen in the scratch directory.
struct Cluster {
    // Nodes first: they are killed before the directory is looked at.
    nodes: Vec<Node>,
    scratch: Scratch,
}

impl Cluster {
    /// `size` nodes, the first founding at once, the others joining it, all
    /// writing `cs.jsonl`; returns when every node has installed a full active
    /// set.
    fn start(name: &str, size: usize) -> Self {
        let scratch = Scratch::new(name);
        let config = quick_config(&scratch, 200);
        let cs = scratch.path("cs.jsonl");
        let mut nodes: Vec<Node> = Vec::new();
        for i in 0..size {
            let api = scratch.path(&format!("n{i}.sock"));
            let args = [
                "--config",
                config.as_str(),
                "--api",
                api.to_str().expect("utf-8 path"),
                "--cs-file",
                cs.to_str().expect("utf-8 path"),
            ];
            let node = match nodes.first() {
                None => scratch.start(&format!("n{i}"), &args),
                Some(seed) => scratch.start_joining(&format!("n{i}"), seed, &args),
            };
            nodes.push(node);
        }
        wait_for("the cluster to form", FORMED_WITHIN, || {
            nodes.iter_mut().all(|n| read(n).active_set_full(size))
        });
        Self { nodes, scratch }
    }

    fn api(&self, node: usize) -> PathBuf {
        self.scratch.path(&format!("n{node}.sock"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path(name)
    }

    /// `ra lock --node <node's API> [options] NAME -- CMD...`, started now.
    fn lock(&self, node: usize, options: &[&str], name: &str, cmd: &[&str]) -> Client {
        lock_via(&self.scratch, &self.api(node), options, name, cmd)
    }
}

/// A settings file whose founder does not wait the shipped 4 s.
fn quick_config(scratch: &Scratch, found_after_ms: u64) -> String {
    let path = scratch.path(&format!("quick-{found_after_ms}.toml"));
    ra::tools::process::write_quick_config(&path, Duration::from_millis(found_after_ms))
        .expect("write the settings file");
    path.to_str().expect("utf-8 path").to_string()
}

/// One `ra lock` process. Dropping it kills it (its CMD then gets SIGTERM from
/// the kernel, `PR_SET_PDEATHSIG`), also when the test panics.
struct Client {
    label: String,
    child: Child,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

static NEXT_CLIENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn lock_via(scratch: &Scratch, api: &Path, options: &[&str], name: &str, cmd: &[&str]) -> Client {
    let n = NEXT_CLIENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let label = format!("client{n}");
    let stderr = scratch.path(&format!("{label}.err"));
    let stdout = scratch.path(&format!("{label}.out"));
    let mut command = support::ra();
    command
        .arg("lock")
        .arg("--node")
        .arg(api)
        .args(options)
        .arg(name)
        .arg("--")
        .args(cmd)
        .current_dir(scratch.dir())
        .env_remove("RA_NODE")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("create the client's stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("create the client's stderr file"));
    // SAFETY: prctl is async-signal-safe; the closure touches nothing else.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("start ra lock");
    Client {
        label: format!("{label} (ra lock {name} -- {})", cmd.join(" ")),
        child,
        stderr,
        status: None,
    }
}

impl Client {
    /// Wait for `ra lock` to exit by itself; its status.
    fn wait(&mut self, within: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    return status;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => panic!(
                    "{} still running after {within:?}; its stderr: {}",
                    self.label,
                    self.stderr_text()
                ),
                Err(e) => panic!("wait for {}: {e}", self.label),
            }
        }
    }

    /// Wait for `ra lock` to exit; its exit code (a signal is a failure).
    fn code(&mut self, within: Duration) -> i32 {
        let status = self.wait(within);
        status.code().unwrap_or_else(|| {
            panic!(
                "{} was killed by signal {:?}; its stderr: {}",
                self.label,
                status.signal(),
                self.stderr_text()
            )
        })
    }

    /// Wait, and require exit code `expected`.
    fn expect_code(&mut self, expected: i32, within: Duration) {
        let code = self.code(within);
        assert_eq!(
            code,
            expected,
            "{} exited {code}, not {expected}; its stderr: {}",
            self.label,
            self.stderr_text()
        );
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own unreaped child has no memory-safety concerns.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A shell command for CMD: `sh -c SCRIPT sh ARGS...`.
fn sh(script: &str, args: &[&str]) -> Vec<String> {
    let mut cmd = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    cmd.push("sh".to_string());
    cmd.extend(args.iter().map(|a| a.to_string()));
    cmd
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Poll `condition` finely until it holds; how long that took (for a print:
/// [`wait_for`] polls too coarsely to measure).
fn time_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    started.elapsed()
}

/// Whether a process with this pid exists (not yet reaped, or still running).
fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks; no memory-safety concerns.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Whether a process is gone or a zombie (ended, not yet reaped by its parent).
fn ended(pid: i32) -> bool {
    if !alive(pid) {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("a pid in {}: {e}", path.display()))
}

/// A whole-number file's value.
fn read_number(path: &Path) -> u64 {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("a number in {} ({text:?}): {e}", path.display()))
}

/// Eight clients on each of three nodes increment a shared counter file at once,
/// read-modify-write under the lock `counter`: no update is lost, and the
/// fences the commands saw, in the order they ran, strictly increase.
#[test]
fn a_guarded_counter_loses_no_update_and_fences_increase() {
    const PER_NODE: usize = 8;
    let cluster = Cluster::start("lock-counter", 3);
    let cs = cluster.path("cs.jsonl");
    let counter = cluster.path("counter");
    let fences = cluster.path("fences");
    std::fs::write(&counter, "0\n").expect("write the counter");
    // Read, record the fence, pause (work under the lock), write n+1.
    let script = r#"n=$(cat "$1") || exit 3
[ -n "$RA_FENCE" ] && [ "$RA_LOCK" = counter ] && [ -n "$RA_NODE" ] || exit 4
echo "$RA_FENCE $RA_NODE" >> "$2"
sleep 0.02
echo $((n + 1)) > "$1""#;
    let cmd = sh(
        script,
        &[
            counter.to_str().expect("utf-8 path"),
            fences.to_str().expect("utf-8 path"),
        ],
    );
    let started = Instant::now();
    let mut clients: Vec<Client> = (0..3 * PER_NODE)
        .map(|i| cluster.lock(i % 3, &["--timeout", "40s"], "counter", &strs(&cmd)))
        .collect();
    for client in &mut clients {
        client.expect_code(0, Duration::from_secs(45));
    }
    let runs = clients.len();
    println!(
        "{runs} guarded increments through 3 nodes took {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        read_number(&counter),
        runs as u64,
        "updates were lost: the counter is not the number of runs"
    );
    let seen: Vec<(u64, String)> = std::fs::read_to_string(&fences)
        .expect("read the fences")
        .lines()
        .map(|l| {
            let (fence, node) = l.split_once(' ').expect("fence and node");
            (
                fence.parse().expect("RA_FENCE is a number"),
                node.to_string(),
            )
        })
        .collect();
    assert_eq!(seen.len(), runs, "every command recorded its fence");
    for pair in seen.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "fences did not strictly increase: {} then {}",
            pair[0].0,
            pair[1].0
        );
    }
    let nodes: std::collections::BTreeSet<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(nodes.len(), 3, "RA_NODE named every node: {nodes:?}");
    // The nodes' own record agrees: one entry per run, none overlapping.
    wait_for("every exit in the shared file", FORMED_WITHIN, || {
        exits(&cs) == runs
    });
    let entries = assert_mutual_exclusion(&cs);
    assert_eq!(entries.len(), runs);
}

/// Two names are held at once (each holder waits until the other name is held
/// too, which could never happen if one lock served both), while clients of
/// one name never overlap (each holds a directory that only one can create).
#[test]
fn different_names_are_held_at_once_and_one_name_never_overlaps() {
    let cluster = Cluster::start("lock-names", 3);
    let cs = cluster.path("cs.jsonl");
    // Mark this name held, then wait (at most 20 s) for the other one.
    let both = r#"touch "$RA_LOCK.held"
i=0
while [ ! -e "$1.held" ]; do
    i=$((i + 1)); [ $i -gt 400 ] && exit 5
    sleep 0.05
done"#;
    let alpha_cmd = sh(both, &["beta"]);
    let beta_cmd = sh(both, &["alpha"]);
    let mut alpha = cluster.lock(0, &[], "alpha", &strs(&alpha_cmd));
    let mut beta = cluster.lock(1, &[], "beta", &strs(&beta_cmd));
    alpha.expect_code(0, CLIENT_WITHIN);
    beta.expect_code(0, CLIENT_WITHIN);

    // Now several clients of each name at once, from every node.
    let exclusive = r#"mkdir "$RA_LOCK.inside" || exit 3
sleep 0.05
rmdir "$RA_LOCK.inside""#;
    let cmd = sh(exclusive, &[]);
    let mut clients: Vec<Client> = (0..12)
        .map(|i| {
            let name = if i % 2 == 0 { "alpha" } else { "beta" };
            cluster.lock(i % 3, &["--timeout", "40s"], name, &strs(&cmd))
        })
        .collect();
    for client in &mut clients {
        client.expect_code(0, Duration::from_secs(45));
    }
    let total = 2 + clients.len();
    wait_for("every exit in the shared file", FORMED_WITHIN, || {
        exits(&cs) == total
    });
    // `ra check` judges each lock on its own: entries and exits alternate.
    assert_eq!(assert_mutual_exclusion(&cs).len(), total);
}

/// The exit statuses `ra lock --help` lists: CMD's own, 128 + the signal that
/// killed it, 126 cannot run, 127 not found, 125 its own error (a bad name, a
/// bad option value), 69 node unreachable; and a CMD that could not run
/// leaves the lock free.
#[test]
fn exit_statuses_are_the_documented_ones() {
    let cluster = Cluster::start("lock-exits", 1);
    let run = |name: &str, options: &[&str], cmd: &[&str]| -> i32 {
        cluster.lock(0, options, name, cmd).code(CLIENT_WITHIN)
    };
    let cases: &[(&[&str], i32)] = &[
        (&["sh", "-c", "exit 0"], 0),
        (&["sh", "-c", "exit 7"], 7),
        (&["sh", "-c", "exit 255"], 255),
        (&["sh", "-c", "kill -KILL $$"], 128 + libc::SIGKILL),
        (&["sh", "-c", "kill -TERM $$"], 128 + libc::SIGTERM),
        (&["sh", "-c", r#"[ "$RA_LOCK" = status ] && exit 9"#], 9),
    ];
    for (cmd, expected) in cases {
        assert_eq!(
            run("status", &[], cmd),
            *expected,
            "ra lock status -- {cmd:?}"
        );
    }

    let not_executable = cluster.path("not-executable.sh");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").expect("write a script");
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644))
        .expect("chmod 644");
    let cannot_run = [
        (not_executable.to_str().expect("utf-8 path"), CANNOT_RUN),
        ("no-such-command-for-ra-lock", NOT_FOUND),
        ("/no/such/dir/cmd", NOT_FOUND),
    ];
    for (cmd, expected) in cannot_run {
        let mut client = cluster.lock(0, &[], "status", &[cmd]);
        client.expect_code(expected, CLIENT_WITHIN);
        assert!(
            client.stderr_text().contains("cannot run"),
            "no reason given: {}",
            client.stderr_text()
        );
        // The lock was given back: a --try gets it at once.
        assert_eq!(run("status", &["--try"], &["true"]), 0, "after {cmd}");
    }

    // ra lock's own errors: a bad lock name, and a bad option value.
    let mut bad_name = cluster.lock(0, &[], "two\nlines", &["true"]);
    bad_name.expect_code(OWN_ERROR, CLIENT_WITHIN);
    assert!(bad_name.stderr_text().contains("bad lock name"));
    let mut bad_option = cluster.lock(0, &["--timeout", "soon"], "status", &["true"]);
    bad_option.expect_code(OWN_ERROR, CLIENT_WITHIN);

    // No node at that socket.
    let scratch = &cluster.scratch;
    let mut unreachable = lock_via(
        scratch,
        &scratch.path("nobody.sock"),
        &[],
        "status",
        &["touch", "ran"],
    );
    unreachable.expect_code(NODE_UNREACHABLE, CLIENT_WITHIN);
    assert!(!scratch.path("ran").exists(), "CMD ran without the lock");
}

/// `--try` fails at once while another client holds the lock, through the
/// holder's node or another; `--timeout` gives up; both exit 124 without
/// running CMD. A waiter with time to spare gets the lock once it is released.
#[test]
fn try_and_timeout_give_up_with_124() {
    let cluster = Cluster::start("lock-try", 3);
    let hold = r#"touch held
i=0
while [ ! -e release ]; do
    i=$((i + 1)); [ $i -gt 600 ] && exit 5
    sleep 0.05
done"#;
    let hold_cmd = sh(hold, &[]);
    let mut holder = cluster.lock(0, &[], "job", &strs(&hold_cmd));
    wait_for("the holder to run", CLIENT_WITHIN, || {
        cluster.path("held").exists()
    });
    let mut waiter = cluster.lock(2, &["--timeout", "40s"], "job", &["touch", "waited"]);

    for node in [1, 0] {
        let started = Instant::now();
        let mut tried = cluster.lock(node, &["--try"], "job", &["touch", "tried"]);
        tried.expect_code(TIMED_OUT, CLIENT_WITHIN);
        println!(
            "--try through node {node} answered in {:.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        assert!(
            tried.stderr_text().contains("taken"),
            "{}",
            tried.stderr_text()
        );
    }
    let started = Instant::now();
    let mut timed = cluster.lock(1, &["--timeout", "1s"], "job", &["touch", "timed"]);
    timed.expect_code(TIMED_OUT, CLIENT_WITHIN);
    println!(
        "--timeout 1s gave up after {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        timed.stderr_text().contains("timed out"),
        "{}",
        timed.stderr_text()
    );
    assert!(
        !cluster.path("tried").exists() && !cluster.path("timed").exists(),
        "a client that gave up ran CMD"
    );
    assert!(holder.running(), "the holder stopped early");
    assert!(
        !cluster.path("waited").exists(),
        "the waiter ran while the lock was held"
    );

    std::fs::write(cluster.path("release"), "").expect("create the release file");
    holder.expect_code(0, CLIENT_WITHIN);
    waiter.expect_code(0, CLIENT_WITHIN);
    assert!(cluster.path("waited").exists());
    // Free again: a --try through any node gets it.
    cluster
        .lock(1, &["--try"], "job", &["true"])
        .expect_code(0, CLIENT_WITHIN);
}

/// A SIGKILLed `ra lock` cannot release: its node sees the session end, lets
/// the next client in, and the kernel stops the orphaned CMD.
#[test]
fn a_killed_client_frees_its_lock() {
    let cluster = Cluster::start("lock-killed", 3);
    let hold = r#"echo $$ > holder.pid
echo "$RA_FENCE" > holder.fence
exec sleep 60"#;
    let hold_cmd = sh(hold, &[]);
    let holder = cluster.lock(0, &[], "job", &strs(&hold_cmd));
    wait_for("the holder to run", CLIENT_WITHIN, || {
        cluster.path("holder.fence").exists()
    });
    let cmd_pid = read_pid(&cluster.path("holder.pid"));
    let got = r#"echo "$RA_FENCE" > waiter.fence"#;
    let got_cmd = sh(got, &[]);
    let mut waiter = cluster.lock(1, &[], "job", &strs(&got_cmd));
    // Let the waiter queue behind the holder (it must wait, whatever the delay).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !cluster.path("waiter.fence").exists(),
        "the waiter got a held lock"
    );

    holder.signal(libc::SIGKILL);
    let passed = time_until("the waiter to get the lock", CLIENT_WITHIN, || {
        cluster.path("waiter.fence").exists()
    });
    println!(
        "the lock passed {:.1} ms after the holder's ra lock was SIGKILLed",
        passed.as_secs_f64() * 1000.0
    );
    waiter.expect_code(0, CLIENT_WITHIN);
    assert!(
        read_number(&cluster.path("waiter.fence")) > read_number(&cluster.path("holder.fence")),
        "the next holder's fence is not above the killed one's"
    );
    wait_for("the orphaned CMD to be stopped", CLIENT_WITHIN, || {
        ended(cmd_pid)
    });
    drop(holder);
}

/// A gRPC client over the API's Unix socket, on a runtime of its own.
struct Api {
    runtime: tokio::runtime::Runtime,
    health: HealthClient<tonic::transport::Channel>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

impl Api {
    fn try_connect(path: &Path) -> Result<Self, tonic::transport::Error> {
        let runtime = runtime();
        let endpoint = tonic::transport::Endpoint::from_shared(format!("unix:{}", path.display()))
            .expect("a unix: endpoint");
        let channel = runtime.block_on(endpoint.connect())?;
        Ok(Self {
            runtime,
            health: HealthClient::new(channel),
        })
    }

    fn connect(path: &Path) -> Self {
        Self::try_connect(path).unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()))
    }

    /// `grpc.health.v1.Health/Check` for `service`.
    fn check(&mut self, service: &str) -> Result<ServingStatus, tonic::Status> {
        let request = HealthCheckRequest {
            service: service.to_string(),
        };
        let reply = self.runtime.block_on(self.health.check(request))?;
        Ok(reply.into_inner().status())
    }

    /// `ra.v1.Lock/Status`, through the library's own client: the node's role.
    fn role(path: &Path) -> String {
        runtime().block_on(async {
            let (mut client, _) = ra::commands::connect(path.to_str().expect("utf-8 path"))
                .await
                .unwrap_or_else(|e| panic!("connect to {}: {e:#}", path.display()));
            client
                .status(ra::wire::pb::StatusRequest::default())
                .await
                .expect("a status reply")
                .into_inner()
                .role
        })
    }
}

/// The very first health answer of a node started with `args`: a thread
/// connects as soon as the socket file appears, while the node starts.
fn first_health_answer(scratch: &Scratch, name: &str, args: &[&str]) -> ServingStatus {
    let api = scratch.path(&format!("{name}.sock"));
    let watched = api.clone();
    let watcher = std::thread::spawn(move || {
        let deadline = Instant::now() + FORMED_WITHIN;
        loop {
            // Until the node has bound and listens, connects fail: try again.
            if watched.exists()
                && let Ok(mut client) = Api::try_connect(&watched)
            {
                return client.check("");
            }
            assert!(Instant::now() < deadline, "no API at {}", watched.display());
            std::thread::yield_now();
        }
    });
    let mut all = vec!["--api", api.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let node = scratch.start(name, &all);
    let answer = watcher
        .join()
        .expect("the watching thread")
        .expect("a health answer");
    drop(node);
    answer
}

/// The API answers `grpc.health.v1`: NOT_SERVING while the node has joined no
/// cluster (its only seed never answers), from its very first answer on;
/// SERVING once it is a member, for the whole server ("") and `ra.v1.Lock`.
#[test]
fn health_says_serving_only_in_a_cluster() {
    let scratch = Scratch::new("lock-health");
    // A seed that never answers: a bound UDP port nobody reads.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    let silent_addr = silent.local_addr().expect("its address").to_string();
    let lonely = ["--join", silent_addr.as_str()];

    // The first answer races the node's first look at itself: try it often.
    let firsts: Vec<ServingStatus> = (0..50)
        .map(|i| first_health_answer(&scratch, &format!("early{i}"), &lonely))
        .collect();
    assert!(
        firsts.iter().all(|s| *s == ServingStatus::NotServing),
        "nodes that joined no cluster answered first {firsts:?}"
    );

    let lonely_api = scratch.path("lonely.sock");
    let _lonely = scratch.start(
        "lonely",
        &[
            lonely[0],
            lonely[1],
            "--api",
            lonely_api.to_str().expect("utf-8 path"),
        ],
    );
    let mut api = Api::connect(&lonely_api);
    let mut answers = Vec::new();
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(1500) {
        answers.push(api.check("").expect("a health answer"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        answers.iter().all(|s| *s == ServingStatus::NotServing),
        "a node that has joined no cluster said {answers:?}"
    );
    assert_eq!(
        api.check("ra.v1.Lock").ok(),
        Some(ServingStatus::NotServing)
    );
    assert_eq!(Api::role(&lonely_api), "joining");

    let config = quick_config(&scratch, 200);
    let founder_api = scratch.path("founder.sock");
    let _founder = scratch.start(
        "founder",
        &[
            "--config",
            &config,
            "--api",
            founder_api.to_str().expect("utf-8 path"),
        ],
    );
    let mut api = Api::connect(&founder_api);
    let became = Instant::now();
    wait_for("the founder to say SERVING", FORMED_WITHIN, || {
        api.check("").ok() == Some(ServingStatus::Serving)
    });
    println!(
        "the founder said SERVING {:.2} s after it listened",
        became.elapsed().as_secs_f64()
    );
    assert_eq!(api.check("ra.v1.Lock").ok(), Some(ServingStatus::Serving));
    assert_eq!(Api::role(&founder_api), "active");
    let unknown = api.check("no.such.Service");
    assert_eq!(
        unknown.as_ref().err().map(tonic::Status::code),
        Some(tonic::Code::NotFound),
        "an unknown service: {unknown:?}"
    );
    drop(silent);
}

/// A holder whose node is stopped (SIGSTOP) hears nothing from it: `ra lock`
/// declares the lock lost, stops CMD and exits 75. The others evict the
/// stopped node and a waiter through another node gets the lock; resumed, the
/// stopped node notices it was paused.
#[test]
fn a_holder_whose_node_stops_loses_the_lock_with_75() {
    let mut cluster = Cluster::start("lock-lost", 3);
    let hold = r#"echo $$ > holder.pid
echo "$RA_FENCE" > holder.fence
exec sleep 60"#;
    let hold_cmd = sh(hold, &[]);
    let mut holder = cluster.lock(1, &["--grace", "2s"], "job", &strs(&hold_cmd));
    wait_for("the holder to run", CLIENT_WITHIN, || {
        cluster.path("holder.fence").exists()
    });
    let cmd_pid = read_pid(&cluster.path("holder.pid"));
    let got = r#"echo "$RA_FENCE" > waiter.fence"#;
    let got_cmd = sh(got, &[]);
    let mut waiter = cluster.lock(0, &[], "job", &strs(&got_cmd));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !cluster.path("waiter.fence").exists(),
        "the waiter got a held lock"
    );

    let stopped = Instant::now();
    cluster.nodes[1].signal(libc::SIGSTOP);
    holder.expect_code(LOCK_LOST, CLIENT_WITHIN);
    let lost_after = stopped.elapsed();
    assert!(
        holder.stderr_text().contains("LOCK LOST"),
        "{}",
        holder.stderr_text()
    );
    time_until("CMD to be stopped", CLIENT_WITHIN, || ended(cmd_pid));
    let cmd_ended_after = stopped.elapsed();
    time_until("the waiter to get the lock", CLIENT_WITHIN, || {
        cluster.path("waiter.fence").exists()
    });
    let passed_after = stopped.elapsed();
    println!(
        "node stopped; ra lock exited 75 after {:.2} s, CMD gone after {:.2} s, \
         the waiter through another node held the lock after {:.2} s",
        lost_after.as_secs_f64(),
        cmd_ended_after.as_secs_f64(),
        passed_after.as_secs_f64()
    );
    waiter.expect_code(0, CLIENT_WITHIN);
    assert!(
        read_number(&cluster.path("waiter.fence")) > read_number(&cluster.path("holder.fence")),
        "the next holder's fence is not above the lost one's"
    );

    cluster.nodes[1].signal(libc::SIGCONT);
    let node = &mut cluster.nodes[1];
    wait_for(
        "the resumed node to notice its pause",
        CLIENT_WITHIN,
        || logged(node, |e| matches!(e, Event::Paused { .. })),
    );
}

/// `ra --requests 10000 --hold-ms 0` takes the lock ten thousand times, then
/// leaves and exits 0 by itself.
#[test]
fn requests_run_to_completion_and_the_node_exits_0() {
    const REQUESTS: usize = 10_000;
    let scratch = Scratch::new("lock-requests");
    let config = quick_config(&scratch, 200);
    let cs = scratch.path("cs.jsonl");
    let started = Instant::now();
    let mut node = scratch.start(
        "solo",
        &[
            "--config",
            &config,
            "--requests",
            &REQUESTS.to_string(),
            "--hold-ms",
            "0",
            "--no-api",
            "--cs-file",
            cs.to_str().expect("utf-8 path"),
        ],
    );
    let status = node
        .wait_exit(Duration::from_secs(50))
        .unwrap_or_else(|| panic!("still running after 50 s; {} exits so far", exits(&cs)));
    println!(
        "{REQUESTS} entries and the exit took {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(status.code(), Some(0), "{status}: {}", node.log_text());
    assert_eq!(exits(&cs), REQUESTS);
    assert_eq!(assert_mutual_exclusion(&cs).len(), REQUESTS);
}
