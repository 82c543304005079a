//! `ra lock [--node ADDR] NAME -- CMD [ARGS...]`: take a named lock through a
//! node's API, run CMD while holding it, release when CMD exits. In the manner
//! of `etcdctl lock` and `consul lock`, with fences:
//!
//! - CMD gets `RA_LOCK` (the name), `RA_FENCE` (the fencing token) and
//!   `RA_NODE` (the node's address) in its environment;
//! - a lost lock (evicted, quorum gone, the node stopped or went away) stops
//!   CMD: SIGTERM, then SIGKILL after `--grace`;
//! - the exit status is CMD's own, or one of [`super::exit`].

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::exit;
use crate::protocol::lock::LockName;
use crate::wire::pb;

#[derive(Args, Debug, Clone)]
pub struct LockArgs {
    /// The node to ask: `:PORT` or `PORT` for the node started with
    /// `--bind :PORT` on this machine, or the path of its API socket.
    #[arg(long, env = "RA_NODE", default_value = ":7000")]
    pub node: String,
    /// Give up waiting after this long (30s, 500ms, 2m): exit status 124.
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Fail at once (exit status 124) unless the lock is free right now.
    #[arg(long = "try")]
    pub try_only: bool,
    /// Once the lock is lost, how long CMD has between SIGTERM and SIGKILL.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub grace: Duration,
    /// Say nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// The lock's name: 1 to 200 bytes of UTF-8, no control characters.
    pub name: String,
    /// The command to run while holding the lock.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(args: &LockArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(ExitCode::from(runtime.block_on(hold(args))))
}

/// Say something about the lock on stderr, as `ra lock: ...`.
fn say(args: &LockArgs, text: impl std::fmt::Display) {
    if !args.quiet {
        eprintln!("ra lock: {text}");
    }
}

fn fail(text: impl std::fmt::Display, code: u8) -> u8 {
    eprintln!("ra lock: {text}");
    code
}

/// The waiting line, redrawn in place on a terminal.
struct ProgressLine {
    shown: bool,
    enabled: bool,
}

impl ProgressLine {
    fn show(&mut self, text: &str) {
        if self.enabled {
            eprint!("\r\x1b[K{text}");
            let _ = std::io::stderr().flush();
            self.shown = true;
        }
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
            let _ = std::io::stderr().flush();
            self.shown = false;
        }
    }
}

fn describe_progress(lock: &str, p: &pb::Progress) -> String {
    if p.role == "joining" {
        return format!("waiting for lock {lock}: the node is not in a cluster yet");
    }
    if p.role == "spectator" {
        // A spectator's ticket is asked for by the member it was forwarded to.
        return match p.waiting_for.first() {
            Some(member) => format!(
                "waiting for lock {lock}: the node is a spectator; member {member} asks for it"
            ),
            None => format!(
                "waiting for lock {lock}: the node is a spectator, looking for a member to ask for it"
            ),
        };
    }
    if p.ahead_here > 0 {
        return format!(
            "waiting for lock {lock}: {} ahead on this node",
            p.ahead_here
        );
    }
    if p.waiting_for.is_empty() {
        format!("waiting for lock {lock}")
    } else {
        format!(
            "waiting for lock {lock}: next on this node, waiting for {}",
            p.waiting_for.join(", ")
        )
    }
}

async fn hold(args: &LockArgs) -> u8 {
    if let Err(e) = LockName::new(&args.name) {
        return fail(format!("bad lock name: {e}"), exit::OWN_ERROR);
    }
    let (mut client, path) = match super::connect(&args.node).await {
        Ok(connected) => connected,
        Err(e) => return fail(format!("{e:#}"), exit::NODE_UNREACHABLE),
    };
    let (requests, rx) = mpsc::channel(4);
    let acquire = pb::HoldRequest {
        kind: Some(pb::hold_request::Kind::Acquire(pb::Acquire {
            lock: args.name.clone(),
            r#try: args.try_only,
            client: format!("ra lock pid {}", std::process::id()),
        })),
    };
    // The channel has room: the first send cannot wait.
    let _ = requests.send(acquire).await;
    let mut events = match client.hold(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return fail(
                format!(
                    "the node at {} refused: {}",
                    path.display(),
                    status.message()
                ),
                if status.code() == tonic::Code::InvalidArgument {
                    exit::OWN_ERROR
                } else {
                    exit::NODE_UNREACHABLE
                },
            );
        }
    };
    let (Ok(mut interrupt), Ok(mut terminate), Ok(mut hangup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return fail("cannot listen for signals", exit::OWN_ERROR);
    };

    // ---- waiting ----
    let mut line = ProgressLine {
        shown: false,
        enabled: std::io::stderr().is_terminal() && !args.quiet,
    };
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut node = String::new();
    let mut heartbeat = crate::runtime::api::HEARTBEAT;
    let granted = loop {
        let timeout = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.message() => match event {
                Ok(Some(pb::HoldEvent { kind: Some(kind) })) => match kind {
                    pb::hold_event::Kind::Queued(queued) => {
                        node = queued.node;
                        heartbeat = Duration::from_millis(u64::from(queued.heartbeat_ms.max(1)));
                    }
                    pb::hold_event::Kind::Progress(progress) => {
                        line.show(&describe_progress(&args.name, &progress));
                    }
                    pb::hold_event::Kind::Granted(granted) => break granted,
                    pb::hold_event::Kind::Refused(refused) => {
                        line.clear();
                        return if refused.why == pb::refused::Why::NotFree as i32 {
                            fail(format!("lock {} is taken (--try)", args.name), exit::TIMED_OUT)
                        } else {
                            fail(format!("the node refused: {}", refused.detail), exit::NODE_UNREACHABLE)
                        };
                    }
                    pb::hold_event::Kind::Lost(_) | pb::hold_event::Kind::Heartbeat(_) => {}
                },
                Ok(Some(_)) => {}
                Ok(None) => {
                    line.clear();
                    return fail("the node closed the session before granting the lock", exit::NODE_UNREACHABLE);
                }
                Err(status) => {
                    line.clear();
                    return fail(format!("lost the node while waiting: {}", status.message()), exit::NODE_UNREACHABLE);
                }
            },
            _ = timeout => {
                line.clear();
                let waited = args.timeout.unwrap_or_default();
                return fail(
                    format!("timed out after {:.1} s waiting for lock {}", waited.as_secs_f64(), args.name),
                    exit::TIMED_OUT,
                );
            }
            // Dropping the stream on return cancels the ticket: no stale entry.
            _ = interrupt.recv() => { line.clear(); return fail("interrupted while waiting; request cancelled", 130); }
            _ = terminate.recv() => { line.clear(); return fail("terminated while waiting; request cancelled", 143); }
            _ = hangup.recv() => { line.clear(); return fail("hung up while waiting; request cancelled", 129); }
        }
    };
    line.clear();
    say(
        args,
        format!(
            "holding lock {} with fence {} (on {node}); running {}",
            args.name,
            granted.fence,
            args.command.join(" ")
        ),
    );

    // ---- holding: run CMD ----
    let interactive = std::io::stdin().is_terminal();
    let mut command = tokio::process::Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .env("RA_LOCK", &args.name)
        .env("RA_FENCE", granted.fence.to_string())
        .env("RA_NODE", &node);
    if !interactive {
        // Its own process group, so a lost lock stops CMD and everything it
        // started. On a terminal it shares ours, so Ctrl-C and the terminal
        // reach it directly.
        command.process_group(0);
    }
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe, as pre_exec requires. If `ra lock`
    // itself is killed (SIGKILL), CMD gets SIGTERM rather than running on
    // without the lock.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = requests.send(release()).await;
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                exit::NOT_FOUND
            } else {
                exit::CANNOT_RUN
            };
            return fail(format!("cannot run {}: {e}", args.command[0]), code);
        }
    };
    let pid = child.id().map_or(0, |p| p as i32);
    let target = if interactive { pid } else { -pid };
    // A holder that hears nothing from its node for this long assumes the worst:
    // the node is stopped or cut off, and the cluster may move on without it.
    let silence_limit = (heartbeat * 5).max(Duration::from_millis(500));
    let mut last_word = tokio::time::Instant::now();
    let lost = loop {
        let silence = tokio::time::sleep_until(last_word + silence_limit);
        tokio::select! {
            status = child.wait() => {
                let _ = requests.send(release()).await;
                return match status {
                    Ok(status) => exit_code_of(status),
                    Err(e) => fail(format!("cannot wait for CMD: {e}"), exit::OWN_ERROR),
                };
            }
            event = events.message() => match event {
                Ok(Some(pb::HoldEvent { kind: Some(pb::hold_event::Kind::Lost(lost)) })) => {
                    break format!("{} ({})", lost.detail, lost.reason);
                }
                Ok(Some(_)) => last_word = tokio::time::Instant::now(),
                Ok(None) => break "the node ended the session".to_string(),
                Err(status) => break format!("lost the node: {}", status.message()),
            },
            _ = silence => {
                break format!(
                    "no word from the node for {:.1} s: it may be stopped or cut off, and the cluster may move on without it",
                    silence_limit.as_secs_f64()
                );
            }
            _ = interrupt.recv() => if !interactive { forward(target, libc::SIGINT) },
            _ = terminate.recv() => forward(target, libc::SIGTERM),
            _ = hangup.recv() => forward(target, libc::SIGHUP),
        }
    };

    // ---- lost: stop CMD ----
    eprintln!(
        "ra lock: LOCK LOST: {} ({lost}); stopping CMD with SIGTERM, SIGKILL in {:.0} s",
        args.name,
        args.grace.as_secs_f64()
    );
    forward(target, libc::SIGTERM);
    if tokio::time::timeout(args.grace, child.wait())
        .await
        .is_err()
    {
        forward(target, libc::SIGKILL);
        let _ = child.wait().await;
    }
    // Only now, with CMD gone, may the node let anyone else in.
    let _ = requests.send(release()).await;
    exit::LOCK_LOST
}

fn release() -> pb::HoldRequest {
    pb::HoldRequest {
        kind: Some(pb::hold_request::Kind::Release(pb::Release {})),
    }
}

/// Send `signal` to CMD (a negative target is its process group).
fn forward(target: i32, signal: i32) {
    if target != 0 && target != -1 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(target, signal);
        }
    }
}

/// CMD's status as ours: its exit code, or 128 + the signal that killed it.
fn exit_code_of(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        _ => 1,
    }
}
