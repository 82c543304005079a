//! The workload: closed-loop clients, each doing guarded increments of the fenced
//! store through `ra lock`, as a user would, until told to stop.
//!
//! One guarded increment ([`Workload::guarded_increment`]) is
//!
//! ```text
//! ip netns exec <host's namespace> ra lock --node <host's API socket> counter -- \
//!     <this test binary as the store client>
//! ```
//!
//! `ra lock` takes the lock `counter` through the host's node, runs the client
//! with `RA_FENCE` in its environment, and releases when it exits. The client
//! reads the counter, pauses (work under the lock), and writes n+1 with that
//! fence; the store refuses a fence that is not above the highest it accepted.
//! Every client has a name of its own (`h<host>.<n>`), so its read and write
//! are found in the store's history.
//!
//! How an increment ended is `ra lock`'s exit status: the client's own (0
//! accepted, 3 refused by the store, 2 store error) or one of ra lock's (69 node
//! unreachable, 75 lock lost, 124 timed out, 125 its own error, 126/127 the
//! client cannot run). The node still writes `--cs-file`, which the scenarios
//! judge alongside.

// A toolkit: each scenario uses its own parts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::Scope;
use std::time::{Duration, Instant};

use super::lab::{self, Lab, now_us};
use super::store;

/// Pause between a client's read and its write (work done under the lock).
pub const CLIENT_PAUSE_MS: u64 = 10;
/// Pause between one increment and the next request of a client.
pub const THINK: Duration = Duration::from_millis(30);
/// Pause after an increment that was not served (the node is gone, say), so a
/// client of a dead node does not spin.
pub const BACKOFF: Duration = Duration::from_millis(250);

/// `ra lock`'s exit statuses (README; `ra::commands::exit`).
pub const EXIT_UNREACHABLE: i32 = 69;
pub const EXIT_LOST: i32 = 75;
pub const EXIT_TIMED_OUT: i32 = 124;

/// How one guarded increment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client ran under the lock and the store accepted its write.
    Accepted,
    /// The client ran under the lock and the store refused its write (its fence
    /// was not above the highest).
    Refused,
    /// `ra lock` said the lock was lost while the client ran (75).
    Lost,
    /// `ra lock` could not reach the node, or the node went away before
    /// granting (69).
    Unreachable,
    /// `--timeout` ran out (124).
    TimedOut,
    /// Anything else: the client failed, ra lock's own error, a signal.
    Failed(String),
    /// Still waiting when the workload was aborted (its ra lock was stopped).
    NotServed,
}

impl Outcome {
    /// The request got an answer: served (accepted, refused, lost) or refused by
    /// ra lock with one of its documented statuses.
    pub fn is_explicit(&self) -> bool {
        !matches!(self, Outcome::Failed(_) | Outcome::NotServed)
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Refused => "refused",
            Outcome::Lost => "lost (75)",
            Outcome::Unreachable => "unreachable (69)",
            Outcome::TimedOut => "timed out (124)",
            Outcome::Failed(_) => "failed",
            Outcome::NotServed => "not served",
        }
    }
}

/// One guarded increment.
#[derive(Clone, Debug)]
pub struct Increment {
    pub host: usize,
    /// The client's name in the store's history.
    pub client: String,
    pub asked_us: u64,
    /// The fence ra lock announced, and when it said it holds the lock.
    pub served: Option<(u64, u64)>,
    pub ended_us: u64,
    /// ra lock's exit status (None: killed by a signal).
    pub status: Option<i32>,
    pub outcome: Outcome,
    /// What ra lock and the client wrote on stderr.
    pub stderr: String,
}

/// How a client of the workload runs.
#[derive(Clone, Debug)]
pub struct ClientOpts {
    /// Pause between read and write.
    pub pause_ms: u64,
    /// The client ignores SIGTERM (a program that finishes its write before it
    /// stops; ra lock's `--grace` bounds that with SIGKILL).
    pub ignore_term: bool,
    /// ra lock `--grace`.
    pub grace: Option<Duration>,
    /// ra lock `--timeout`.
    pub timeout: Option<Duration>,
}

impl Default for ClientOpts {
    fn default() -> Self {
        Self {
            pause_ms: CLIENT_PAUSE_MS,
            ignore_term: false,
            grace: None,
            timeout: None,
        }
    }
}

pub struct Workload<'a> {
    lab: &'a Lab,
    store: PathBuf,
    opts: ClientOpts,
    stop: AtomicBool,
    abort: AtomicBool,
    next_id: AtomicUsize,
    /// Running ra lock processes: client name -> (host, asked at, pid).
    outstanding: Mutex<BTreeMap<String, (usize, u64, u32)>>,
    done: Mutex<Vec<Increment>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'a> Workload<'a> {
    pub fn new(lab: &'a Lab, store: &Path) -> Self {
        Self::with_opts(lab, store, ClientOpts::default())
    }

    pub fn with_opts(lab: &'a Lab, store: &Path, opts: ClientOpts) -> Self {
        Self {
            lab,
            store: store.to_path_buf(),
            opts,
            stop: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            next_id: AtomicUsize::new(0),
            outstanding: Mutex::new(BTreeMap::new()),
            done: Mutex::new(Vec::new()),
        }
    }

    /// Do one guarded increment through the node on `host`, with the workload's
    /// client options. Blocks until ra lock exits.
    pub fn guarded_increment(&self, host: usize) -> Increment {
        self.guarded_increment_with(host, &self.opts)
    }

    /// One guarded increment with these client options (a slow or stubborn
    /// client for one scenario's victim).
    pub fn guarded_increment_with(&self, host: usize, opts: &ClientOpts) -> Increment {
        let client = format!("h{host}.{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let asked_us = now_us();
        let mut inc = Increment {
            host,
            client: client.clone(),
            asked_us,
            served: None,
            ended_us: asked_us,
            status: None,
            outcome: Outcome::NotServed,
            stderr: String::new(),
        };
        if self.abort.load(Ordering::SeqCst) {
            return inc;
        }
        let mut cmd = self.lab.command_in(host, env!("CARGO_BIN_EXE_ra"));
        cmd.arg("lock").arg("--node").arg(self.lab.api_socket(host));
        if let Some(grace) = opts.grace {
            cmd.args(["--grace", &format!("{}ms", grace.as_millis())]);
        }
        if let Some(timeout) = opts.timeout {
            cmd.args(["--timeout", &format!("{}ms", timeout.as_millis())]);
        }
        cmd.args(["counter", "--"]);
        lab::add_helper(&mut cmd, "client");
        cmd.env("RA_CHAOS_STORE", &self.store)
            .env("RA_CHAOS_CLIENT", &client)
            .env("RA_CHAOS_PAUSE_MS", opts.pause_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if opts.ignore_term {
            cmd.env("RA_CHAOS_IGNORE_TERM", "1");
        }
        lab::die_with_this_thread(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                inc.outcome = Outcome::Failed(format!("cannot run ra lock: {e}"));
                return inc;
            }
        };
        lock(&self.outstanding).insert(client.clone(), (host, asked_us, child.id()));
        // stderr stays open while ra lock or the client runs (the client
        // inherits it); reading it to the end waits for both.
        if let Some(err) = child.stderr.take() {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(fence) = holding_fence(&line) {
                    inc.served = Some((fence, now_us()));
                }
                inc.stderr.push_str(&line);
                inc.stderr.push('\n');
            }
        }
        let status = child.wait();
        inc.ended_us = now_us();
        lock(&self.outstanding).remove(&client);
        inc.status = status.as_ref().ok().and_then(|s| s.code());
        inc.outcome = match status {
            Err(e) => Outcome::Failed(format!("cannot wait for ra lock: {e}")),
            Ok(s) => match s.code() {
                Some(store::CLIENT_ACCEPTED) => Outcome::Accepted,
                Some(store::CLIENT_REFUSED) => Outcome::Refused,
                Some(EXIT_LOST) => Outcome::Lost,
                Some(EXIT_UNREACHABLE) => Outcome::Unreachable,
                Some(EXIT_TIMED_OUT) => Outcome::TimedOut,
                _ if self.abort.load(Ordering::SeqCst) && inc.served.is_none() => {
                    Outcome::NotServed
                }
                other => Outcome::Failed(format!(
                    "ra lock exit {other:?} ({s}): {}",
                    inc.stderr.trim()
                )),
            },
        };
        inc
    }

    /// Start one closed-loop client per entry of `hosts` (a host may appear more
    /// than once).
    pub fn run<'scope>(&'scope self, scope: &'scope Scope<'scope, '_>, hosts: &[usize]) {
        for &host in hosts {
            scope.spawn(move || {
                while !self.stop.load(Ordering::SeqCst) && !self.abort.load(Ordering::SeqCst) {
                    let inc = self.guarded_increment(host);
                    let served = inc.served.is_some();
                    lock(&self.done).push(inc);
                    std::thread::sleep(if served { THINK } else { BACKOFF });
                }
            });
        }
    }

    /// Record an increment made outside [`Workload::run`] (a scenario's own).
    pub fn record(&self, inc: Increment) {
        lock(&self.done).push(inc);
    }

    /// No new requests; those outstanding still complete.
    pub fn stop_asking(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Give up waiting: every ra lock still running gets SIGTERM (a waiting one
    /// cancels its request and exits; a holding one stops its client).
    pub fn abort(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.abort.store(true, Ordering::SeqCst);
        let pids: Vec<i32> = lock(&self.outstanding)
            .values()
            .map(|(_, _, pid)| *pid as i32)
            .collect();
        lab::signal_all(&pids, libc::SIGTERM);
    }

    /// Aborts the workload when dropped: put it first in a scope, so a panic in the
    /// test does not leave clients waiting forever (the scope joins them).
    pub fn abort_on_drop(&self) -> AbortOnDrop<'_, 'a> {
        AbortOnDrop(self)
    }

    /// Wait until no request is outstanding, or `deadline`. Returns the requests
    /// still outstanding then, as (host, asked at).
    pub fn wait_idle(&self, deadline: Instant) -> Vec<(usize, u64)> {
        loop {
            let waiting: Vec<(usize, u64)> = lock(&self.outstanding)
                .values()
                .map(|(h, t, _)| (*h, *t))
                .collect();
            if waiting.is_empty() || Instant::now() >= deadline {
                return waiting;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The ra lock processes running now: (client, host, pid).
    pub fn running(&self) -> Vec<(String, usize, u32)> {
        lock(&self.outstanding)
            .iter()
            .map(|(c, (h, _, pid))| (c.clone(), *h, *pid))
            .collect()
    }

    /// Every increment done so far.
    pub fn increments(&self) -> Vec<Increment> {
        lock(&self.done).clone()
    }
}

/// The fence in ra lock's "holding lock counter with fence F (on ...)" line.
pub fn holding_fence(line: &str) -> Option<u64> {
    let rest = line.split("holding lock ").nth(1)?;
    let rest = rest.split(" with fence ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

pub struct AbortOnDrop<'w, 'a>(&'w Workload<'a>);

impl Drop for AbortOnDrop<'_, '_> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts of outcomes, in a fixed order, as "label n" pieces.
pub fn outcome_counts(incs: &[&Increment]) -> String {
    let labels = [
        "accepted",
        "refused",
        "lost (75)",
        "unreachable (69)",
        "timed out (124)",
        "failed",
        "not served",
    ];
    labels
        .iter()
        .filter_map(|l| {
            let n = incs.iter().filter(|i| i.outcome.label() == *l).count();
            (n > 0).then(|| format!("{l} {n}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fence_is_read_from_ra_lock_s_line() {
        assert_eq!(
            super::holding_fence(
                "ra lock: holding lock counter with fence 2199023255553 (on 10.203.0.1:7000); running x"
            ),
            Some(2_199_023_255_553)
        );
        assert_eq!(super::holding_fence("ra lock: LOCK LOST: counter"), None);
    }
}
