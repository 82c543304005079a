//! The card's interactive mode, as clients of the node like any other: Enter
//! asks for the lock named `default` and holds it for `--hold-ms`; `status`,
//! `help` and `leave` on stdin; `--requests N`; a graceful leave on signals.

use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use super::client::{Clients, TicketNews};
use super::log::TicketNo;
use crate::node::{Role, Status};
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::LockName;

const HELP: &str = "\
commands:
  (Enter)   ask for the lock named `default`, hold it for --hold-ms, release it
  status    members, the active set, this node's role, locks, the Lamport clock
  help      this text
  leave     leave the cluster gracefully (also Ctrl-C or SIGTERM)";

/// Enter asks for the critical section; `status`, `help` and `leave` do what
/// they say. End of input does not stop the node: it keeps serving its peers.
pub async fn read_console(clients: Clients, hold: Duration) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let sent = match line.trim() {
            "" => {
                tokio::spawn(hold_once(clients.clone(), hold));
                Ok(())
            }
            "status" => clients.print_status(),
            "help" | "?" => {
                println!("{HELP}");
                Ok(())
            }
            "leave" | "quit" | "exit" => clients.leave(),
            other => {
                println!("unknown command {other:?}; type `help`");
                Ok(())
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// One entry of the `default` lock held for `hold`; false if it never came
/// (the node left or stopped).
async fn hold_once(clients: Clients, hold: Duration) -> bool {
    let Ok(mut ticket) = clients.acquire(LockName::default_lock()) else {
        return false;
    };
    match ticket.next().await {
        Some(TicketNews::Granted(_)) => {
            // A loss while holding (eviction, pause) ends the hold early. A zero
            // hold skips the timer: tokio would round it up to a whole millisecond.
            if !hold.is_zero() {
                let _ = tokio::time::timeout(hold, ticket.next()).await;
            }
            ticket.release();
            true
        }
        _ => false,
    }
}

/// `--requests N`: N entries one after another, then leave unless `stay`.
pub async fn run_requests(clients: Clients, count: u32, hold: Duration, stay: bool) {
    for _ in 0..count {
        if !hold_once(clients.clone(), hold).await {
            return;
        }
    }
    if !stay {
        tracing::info!(target: "ra::console", "{count} requested entries done: leaving (use --stay to keep serving)");
        // The node may have stopped already: then there is nothing to leave.
        let _ = clients.leave();
    }
}

/// The first SIGINT or SIGTERM leaves gracefully; a second one exits at once.
pub async fn leave_on_signal(clients: Clients) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!(target: "ra::console", "cannot listen for signals: Ctrl-C will not leave gracefully");
        return;
    };
    let mut asked = false;
    loop {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        if asked {
            tracing::warn!(target: "ra::console", "second signal: exiting without waiting for the handover");
            std::process::exit(130);
        }
        asked = true;
        tracing::info!(target: "ra::console", "signal received: leaving the cluster (send it again to exit at once)");
        if clients.leave().is_err() {
            return;
        }
    }
}

/// SIGHUP re-reads the cluster key file: install, use and remove keys without
/// a restart. A file that does not read keeps the keys in use.
pub async fn reload_keys_on_hangup(
    path: std::path::PathBuf,
    sealer: std::sync::Arc<std::sync::RwLock<crate::membership::seal::Sealer>>,
    me: ProcessId,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangup.recv().await.is_some() {
        let event = match crate::membership::keyfile::read(&path) {
            Ok(keys) => {
                let accepting: Vec<String> = keys.keys().iter().map(|k| k.id()).collect();
                if let Ok(mut sealer) = sealer.write() {
                    *sealer = crate::membership::seal::Sealer::Keyed(keys);
                }
                crate::event::Event::KeysReloaded {
                    sealing: accepting.first().cloned().unwrap_or_default(),
                    accepting,
                }
            }
            Err(e) => crate::event::Event::KeysNotReloaded {
                error: format!("{e:#}"),
            },
        };
        super::log::emit(me, &event);
    }
}

fn list(processes: &[ProcessId]) -> String {
    if processes.is_empty() {
        "none".to_string()
    } else {
        processes
            .iter()
            .map(|p| p.addr.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The console's `status`: the same facts as `ra status`, as text.
pub fn print_status(status: &Status, uptime: Duration) {
    let role = match status.role {
        Role::Joining => "joining (no cluster yet)",
        Role::Active => "active",
        Role::Spectator => "a spectator",
        Role::Leaving => "leaving",
    };
    println!(
        "node {} ({role}, up {:.0} s)",
        status.me.addr,
        uptime.as_secs_f64()
    );
    println!("  live members: {}", list(&status.live_members));
    match &status.active_set {
        Some(set) => println!(
            "  active set, epoch {} of the cluster founded by {}: {} (at most {})",
            set.epoch,
            set.cluster.addr,
            list(&set.members),
            set.max_active
        ),
        None => println!("  no cluster yet"),
    }
    println!("  spectators in line: {}", list(&status.spectators));
    println!("  Lamport clock: {}", status.clock);
    if status.locks.is_empty() {
        println!("  locks: none used yet");
    }
    for lock in &status.locks {
        let mut line = format!("  lock {}:", lock.name);
        match &lock.holder {
            Some(h) => line.push_str(&format!(
                " held here by ticket {} (fence {}{})",
                TicketNo(h.ticket),
                h.fence,
                if h.lost { ", LOST" } else { "" }
            )),
            None => match lock.last_granted {
                Some((peer, _)) => line.push_str(&format!(" last granted to {}", peer.addr)),
                None => line.push_str(" not held here"),
            },
        }
        if !lock.waiting.is_empty() {
            line.push_str(&format!("; {} waiting here", lock.waiting.len()));
        }
        if let Some(request) = &lock.request {
            line.push_str(&format!(
                "; request #{} ts={} waits for {}",
                request.request_id,
                request.timestamp,
                list(&request.awaiting)
            ));
        }
        if !lock.deferring.is_empty() {
            line.push_str(&format!("; deferring {}", list(&lock.deferring)));
        }
        if let Some(fence) = lock.last_fence {
            line.push_str(&format!("; last fence {fence}"));
        }
        println!("{line}");
    }
}
