//! The fenced store: Jepsen's counter mutated under a lock, with Kleppmann's fencing
//! rule. It keeps a counter and the highest fence it has accepted, and refuses any
//! write whose fence is not above that, so a holder that was paused or cut off and
//! writes late is refused instead of overwriting newer work.
//!
//! It runs inside the test process on a Unix socket in the lab's scratch directory
//! (network namespaces do not isolate filesystem sockets, so a client in any
//! namespace reaches it). Protocol, one line each way:
//!
//! ```text
//! READ <client>                    ->  VALUE <n>
//! WRITE <value> <fence> <client>   ->  ACCEPTED | REFUSED <highest fence>
//! anything else                    ->  ERROR <why>
//! ```
//!
//! Every read and every write attempt is recorded, with the time it was handled.
//! The client ([`increment`], run as a helper process by the workload) reads, pauses,
//! and writes n+1 with the fence it was given in `RA_FENCE`.

// A toolkit: each scenario uses its own parts.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::lab::now_us;

/// How a write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Accepted,
    /// The fence was not above this, the highest accepted so far.
    Refused {
        highest: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read {
        value: u64,
    },
    Write {
        value: u64,
        fence: u64,
        outcome: WriteOutcome,
    },
}

/// One operation as the store handled it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub at_us: u64,
    pub client: String,
    pub kind: OpKind,
}

/// The store's state, without any I/O: the fence rule lives here.
#[derive(Debug, Default)]
pub struct State {
    pub value: u64,
    /// Highest fence accepted so far (0: none yet; every real fence is above 0).
    pub highest_fence: u64,
    pub history: Vec<Op>,
}

impl State {
    pub fn read(&mut self, client: &str, at_us: u64) -> u64 {
        self.history.push(Op {
            at_us,
            client: client.to_string(),
            kind: OpKind::Read { value: self.value },
        });
        self.value
    }

    /// Kleppmann's rule: accept only a fence above every fence accepted before.
    pub fn write(&mut self, value: u64, fence: u64, client: &str, at_us: u64) -> WriteOutcome {
        let outcome = if fence > self.highest_fence {
            self.highest_fence = fence;
            self.value = value;
            WriteOutcome::Accepted
        } else {
            WriteOutcome::Refused {
                highest: self.highest_fence,
            }
        };
        self.history.push(Op {
            at_us,
            client: client.to_string(),
            kind: OpKind::Write {
                value,
                fence,
                outcome,
            },
        });
        outcome
    }

    /// Handle one protocol line; the answer without its newline.
    pub fn handle(&mut self, line: &str, at_us: u64) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["READ", client] => format!("VALUE {}", self.read(client, at_us)),
            ["WRITE", value, fence, client] => match (value.parse(), fence.parse()) {
                (Ok(value), Ok(fence)) => match self.write(value, fence, client, at_us) {
                    WriteOutcome::Accepted => "ACCEPTED".to_string(),
                    WriteOutcome::Refused { highest } => format!("REFUSED {highest}"),
                },
                _ => format!("ERROR bad numbers in {line:?}"),
            },
            _ => format!("ERROR unknown request {line:?}"),
        }
    }
}

/// What the history shows about the counter.
#[derive(Debug, Default)]
pub struct Verdict {
    pub reads: usize,
    pub accepted: usize,
    pub refused: usize,
    pub final_value: u64,
    /// Accepted writes that did not add one to the value the previous accepted write
    /// left: an increment was lost (two holders read the same value) or a write
    /// was based on a stale read. Each is (previous accepted write, this one).
    pub lost: Vec<(Op, Op)>,
}

pub fn verdict(history: &[Op]) -> Verdict {
    let mut v = Verdict::default();
    let mut previous: Option<&Op> = None;
    for op in history {
        match op.kind {
            OpKind::Read { .. } => v.reads += 1,
            OpKind::Write {
                value,
                outcome: WriteOutcome::Accepted,
                ..
            } => {
                v.accepted += 1;
                let expected = match previous.map(|p| &p.kind) {
                    Some(OpKind::Write { value, .. }) => value + 1,
                    _ => 1,
                };
                if value != expected {
                    let before = previous.cloned().unwrap_or_else(|| Op {
                        at_us: 0,
                        client: "(initial)".into(),
                        kind: OpKind::Read { value: 0 },
                    });
                    v.lost.push((before, op.clone()));
                }
                v.final_value = value;
                previous = Some(op);
            }
            OpKind::Write { .. } => v.refused += 1,
        }
    }
    v
}

/// The store server. Stops when dropped.
pub struct Store {
    pub path: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Store {
    /// Listen on a Unix socket at `path` (replacing a stale one).
    pub fn start(path: &Path) -> Result<Store, String> {
        let _ = std::fs::remove_file(path);
        let listener =
            UnixListener::bind(path).map_err(|e| format!("store: bind {}: {e}", path.display()))?;
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("fenced-store".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let state = state.clone();
                        let _ = std::thread::Builder::new()
                            .name("fenced-store-conn".into())
                            .spawn(move || serve(conn, &state));
                    }
                })
                .map_err(|e| format!("store thread: {e}"))?
        };
        Ok(Store {
            path: path.to_path_buf(),
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// Wait up to `within` for an operation that `pred` accepts.
    pub fn wait_for(&self, within: Duration, pred: impl Fn(&Op) -> bool) -> Option<Op> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(op) = self.history().into_iter().find(|op| pred(op)) {
                return Some(op);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn history(&self) -> Vec<Op> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .history
            .clone()
    }
}

fn serve(conn: UnixStream, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let answer = state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .handle(&line, now_us());
        if writeln!(writer, "{answer}").is_err() {
            return;
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What one client increment did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientReport {
    pub read: u64,
    pub outcome: WriteOutcome,
}

/// The client: read the counter, pause (as work under the lock would), write n+1
/// with `fence`.
pub fn increment(
    socket: &Path,
    fence: u64,
    client: &str,
    pause: Duration,
) -> Result<ClientReport, String> {
    let conn = UnixStream::connect(socket)
        .map_err(|e| format!("connect to the store at {}: {e}", socket.display()))?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut writer = conn
        .try_clone()
        .map_err(|e| format!("store connection: {e}"))?;
    let mut reader = BufReader::new(conn);
    let mut ask = |line: String| -> Result<String, String> {
        writeln!(writer, "{line}").map_err(|e| format!("store: send {line:?}: {e}"))?;
        let mut answer = String::new();
        reader
            .read_line(&mut answer)
            .map_err(|e| format!("store: answer to {line:?}: {e}"))?;
        Ok(answer.trim().to_string())
    };
    let answer = ask(format!("READ {client}"))?;
    let read: u64 = answer
        .strip_prefix("VALUE ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("store: unexpected answer to READ: {answer:?}"))?;
    std::thread::sleep(pause);
    let answer = ask(format!("WRITE {} {fence} {client}", read + 1))?;
    let outcome = if answer == "ACCEPTED" {
        WriteOutcome::Accepted
    } else if let Some(highest) = answer.strip_prefix("REFUSED ").and_then(|n| n.parse().ok()) {
        WriteOutcome::Refused { highest }
    } else {
        return Err(format!("store: unexpected answer to WRITE: {answer:?}"));
    };
    Ok(ClientReport { read, outcome })
}

/// Exit codes of the client helper process.
pub const CLIENT_ACCEPTED: i32 = 0;
pub const CLIENT_REFUSED: i32 = 3;
pub const CLIENT_ERROR: i32 = 2;

/// The client as a process (a node can run it as the command under a lock):
/// `RA_CHAOS_STORE` the socket, `RA_FENCE` the fence, `RA_CHAOS_CLIENT` a name for
/// the history, `RA_CHAOS_PAUSE_MS` the pause between read and write,
/// `RA_CHAOS_IGNORE_TERM` set: ignore SIGTERM (finish the write; SIGKILL still
/// ends it). Exit 0: accepted, 3: refused, 2: error.
pub fn client_main() -> i32 {
    let env = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    if std::env::var_os("RA_CHAOS_IGNORE_TERM").is_some() {
        // SAFETY: setting a signal's disposition to SIG_IGN installs no handler.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
    let run = || -> Result<ClientReport, String> {
        let socket = PathBuf::from(env("RA_CHAOS_STORE")?);
        let fence: u64 = env("RA_FENCE")?
            .parse()
            .map_err(|e| format!("RA_FENCE: {e}"))?;
        let client =
            env("RA_CHAOS_CLIENT").unwrap_or_else(|_| format!("pid{}", std::process::id()));
        let pause = env("RA_CHAOS_PAUSE_MS")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(10);
        increment(&socket, fence, &client, Duration::from_millis(pause))
    };
    match run() {
        Ok(report) => {
            println!("store client: read {}, {:?}", report.read, report.outcome);
            match report.outcome {
                WriteOutcome::Accepted => CLIENT_ACCEPTED,
                WriteOutcome::Refused { .. } => CLIENT_REFUSED,
            }
        }
        Err(e) => {
            eprintln!("store client: {e}");
            CLIENT_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_rule_refuses_anything_not_above_the_highest() {
        let mut s = State::default();
        assert_eq!(
            s.write(1, 0, "zero", 1),
            WriteOutcome::Refused { highest: 0 },
            "fence 0 is below every real fence"
        );
        assert_eq!(s.write(1, 2_000_001, "a", 2), WriteOutcome::Accepted);
        assert_eq!(
            s.write(2, 2_000_001, "a-again", 3),
            WriteOutcome::Refused { highest: 2_000_001 },
            "the same fence twice"
        );
        assert_eq!(
            s.write(2, 1_000_009, "stale", 4),
            WriteOutcome::Refused { highest: 2_000_001 },
            "an older epoch's fence"
        );
        assert_eq!(s.value, 1, "refused writes change nothing");
        assert_eq!(s.write(2, 2_000_002, "b", 5), WriteOutcome::Accepted);
        assert_eq!(s.write(3, 3_000_001, "c", 6), WriteOutcome::Accepted);
        assert_eq!((s.value, s.highest_fence), (3, 3_000_001));
        assert_eq!(s.history.len(), 6, "every attempt is recorded");
    }

    #[test]
    fn protocol_lines() {
        let mut s = State::default();
        assert_eq!(s.handle("READ a", 1), "VALUE 0");
        assert_eq!(s.handle("WRITE 1 5 a", 2), "ACCEPTED");
        assert_eq!(s.handle("WRITE 1 5 b", 3), "REFUSED 5");
        assert!(s.handle("WRITE x 5 b", 4).starts_with("ERROR"));
        assert!(s.handle("DELETE", 5).starts_with("ERROR"));
        assert_eq!(s.history.len(), 3, "malformed lines are not operations");
    }

    #[test]
    fn verdict_finds_lost_increments() {
        let mut s = State::default();
        // a and b both read 0 (they overlapped): b's increment overwrites a's.
        s.read("a", 1);
        s.read("b", 2);
        s.write(1, 10, "a", 3);
        s.write(1, 11, "b", 4);
        // A stale holder is refused: nothing lost.
        s.read("c", 5);
        s.write(2, 9, "c", 6);
        s.read("d", 7);
        s.write(2, 12, "d", 8);
        let v = verdict(&s.history);
        assert_eq!(
            (v.reads, v.accepted, v.refused, v.final_value),
            (4, 3, 1, 2)
        );
        assert_eq!(v.lost.len(), 1);
        assert_eq!(v.lost[0].1.client, "b");
    }

    #[test]
    fn client_and_server_over_a_socket() {
        let dir = tempfile::Builder::new()
            .prefix("rachaos-store-")
            .tempdir()
            .expect("temp dir");
        let store = Store::start(&dir.path().join("s.sock")).expect("store starts");
        let pause = Duration::from_millis(1);
        let first = increment(&store.path, 7, "one", pause).expect("first increment");
        assert_eq!(
            first,
            ClientReport {
                read: 0,
                outcome: WriteOutcome::Accepted
            }
        );
        let stale = increment(&store.path, 6, "stale", pause).expect("stale increment");
        assert_eq!(stale.outcome, WriteOutcome::Refused { highest: 7 });
        let second = increment(&store.path, 8, "two", pause).expect("second increment");
        assert_eq!(
            second,
            ClientReport {
                read: 1,
                outcome: WriteOutcome::Accepted
            }
        );
        let v = verdict(&store.history());
        assert_eq!(
            (v.accepted, v.refused, v.final_value, v.lost.len()),
            (2, 1, 2, 0)
        );
        drop(store);
    }
}
