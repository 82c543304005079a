//! `ra status` and `ra members`: what a node knows, from any shell, as text or
//! JSON (in the manner of `serf members`).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::runtime::log::TicketNo;
use crate::wire::pb;

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// The node to ask: `:PORT`, `PORT`, or the path of its API socket.
    #[arg(long, env = "RA_NODE", default_value = ":7000")]
    pub node: String,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Member {
    addr: String,
    incarnation: u64,
}

#[derive(Serialize)]
struct Holder {
    lock: String,
    node: String,
    fence: u64,
    held_ms: u64,
}

#[derive(Serialize)]
struct LocalLock {
    name: String,
    held_here: Option<LocalHolder>,
    waiting_here: u32,
    request_waiting_for: Vec<String>,
    deferring: Vec<String>,
    last_granted_to: Option<String>,
    last_fence: Option<u64>,
}

#[derive(Serialize)]
struct LocalHolder {
    ticket: u64,
    fence: u64,
    held_ms: u64,
    lost: bool,
}

#[derive(Serialize)]
struct ActiveSet {
    epoch: u64,
    members: Vec<Member>,
    max_active: u32,
    cluster: Option<Member>,
}

/// `ra status --json`: stable field names for scripts.
#[derive(Serialize)]
struct StatusJson {
    node: String,
    incarnation: u64,
    role: String,
    api: String,
    uptime_ms: u64,
    lamport_clock: u64,
    live_members: Vec<Member>,
    active_set: Option<ActiveSet>,
    spectators: Vec<Member>,
    holders: Vec<Holder>,
    no_answer: Vec<String>,
    locks: Vec<LocalLock>,
    locks_not_listed: u32,
}

fn member(m: &pb::Member) -> Member {
    Member {
        addr: m.addr.clone(),
        incarnation: m.incarnation,
    }
}

fn to_json(reply: &pb::StatusReply) -> StatusJson {
    let node = reply.node.as_ref();
    StatusJson {
        node: node.map(|n| n.addr.clone()).unwrap_or_default(),
        incarnation: node.map_or(0, |n| n.incarnation),
        role: reply.role.clone(),
        api: reply.api.clone(),
        uptime_ms: reply.uptime_ms,
        lamport_clock: reply.lamport_clock,
        live_members: reply.live_members.iter().map(member).collect(),
        active_set: (reply.epoch > 0).then(|| ActiveSet {
            epoch: reply.epoch,
            members: reply.active_set.iter().map(member).collect(),
            max_active: reply.max_active,
            cluster: reply.cluster.as_ref().map(member),
        }),
        spectators: reply.spectators.iter().map(member).collect(),
        holders: reply
            .holders
            .iter()
            .map(|h| Holder {
                lock: h.lock.clone(),
                node: h.node.clone(),
                fence: h.fence,
                held_ms: h.held_ms,
            })
            .collect(),
        no_answer: reply.no_answer.clone(),
        locks: reply
            .locks
            .iter()
            .map(|l| LocalLock {
                name: l.name.clone(),
                held_here: l.holder.as_ref().map(|h| LocalHolder {
                    ticket: h.ticket,
                    fence: h.fence,
                    held_ms: h.held_ms,
                    lost: h.lost,
                }),
                waiting_here: l.waiting_here,
                request_waiting_for: l.request_waiting_for.clone(),
                deferring: l.deferring.clone(),
                last_granted_to: (!l.last_granted_to.is_empty()).then(|| l.last_granted_to.clone()),
                last_fence: (l.last_fence > 0).then_some(l.last_fence),
            })
            .collect(),
        locks_not_listed: reply.locks_not_listed,
    }
}

async fn fetch(node: &str) -> Result<pb::StatusReply> {
    let (mut client, path) = super::connect(node).await?;
    let reply = client
        .status(pb::StatusRequest {})
        .await
        .with_context(|| format!("the node at {} did not answer", path.display()))?;
    Ok(reply.into_inner())
}

fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

fn list(members: &[pb::Member]) -> String {
    if members.is_empty() {
        "none".into()
    } else {
        members
            .iter()
            .map(|m| m.addr.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn run_status(args: &StatusArgs) -> Result<ExitCode> {
    let reply = block_on(fetch(&args.node))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&reply))?);
        return Ok(ExitCode::SUCCESS);
    }
    let node = reply.node.as_ref().map(|n| n.addr.as_str()).unwrap_or("?");
    println!(
        "node {node}: {} (up {:.0} s); API {}",
        reply.role,
        reply.uptime_ms as f64 / 1000.0,
        reply.api
    );
    println!("  live members: {}", list(&reply.live_members));
    if reply.epoch > 0 {
        println!(
            "  active set, epoch {}: {} (at most {})",
            reply.epoch,
            list(&reply.active_set),
            reply.max_active
        );
    } else {
        println!("  no cluster yet");
    }
    println!("  spectators in line: {}", list(&reply.spectators));
    println!("  Lamport clock: {}", reply.lamport_clock);
    if reply.holders.is_empty() {
        println!("  holders: none");
    }
    for holder in &reply.holders {
        println!(
            "  lock {} held by {} (fence {}, for {:.1} s)",
            holder.lock,
            holder.node,
            holder.fence,
            holder.held_ms as f64 / 1000.0
        );
    }
    if !reply.no_answer.is_empty() {
        println!(
            "  no answer from {} (what they hold is unknown)",
            reply.no_answer.join(", ")
        );
    }
    for lock in &reply.locks {
        println!("  {}", lock_line(lock));
    }
    if reply.locks_not_listed > 0 {
        println!("  ... and {} more locks", reply.locks_not_listed);
    }
    Ok(ExitCode::SUCCESS)
}

/// One lock as this node sees it: the clauses that apply, `idle` if none does.
fn lock_line(lock: &pb::LockState) -> String {
    let mut clauses = Vec::new();
    if let Some(h) = &lock.holder {
        let mut held = format!("held by ticket {} (fence {})", TicketNo(h.ticket), h.fence);
        if h.lost {
            held.push_str(", LOST: waiting for its client to stop");
        }
        clauses.push(held);
    }
    if lock.waiting_here > 0 {
        clauses.push(format!("{} waiting", lock.waiting_here));
    }
    if !lock.request_waiting_for.is_empty() {
        clauses.push(format!(
            "request waits for {}",
            lock.request_waiting_for.join(", ")
        ));
    }
    if !lock.deferring.is_empty() {
        clauses.push(format!("deferring {}", lock.deferring.join(", ")));
    }
    if lock.last_fence > 0 {
        clauses.push(format!("last fence {}", lock.last_fence));
    }
    if clauses.is_empty() {
        clauses.push("idle".into());
    }
    format!("lock {} here: {}", lock.name, clauses.join("; "))
}

#[derive(Serialize)]
struct MemberRow {
    addr: String,
    incarnation: u64,
    status: &'static str,
}

/// The node itself by its own role; another member is active when seated, a
/// spectator when in line for a seat, and otherwise joining: heard of, but
/// not yet heard from directly (or on its way out).
fn member_rows(reply: &pb::StatusReply) -> Vec<MemberRow> {
    let listed = |list: &[pb::Member], m: &pb::Member| list.iter().any(|a| a.addr == m.addr);
    let me = reply.node.iter().map(|m| MemberRow {
        addr: m.addr.clone(),
        incarnation: m.incarnation,
        status: match reply.role.as_str() {
            "active" => "active",
            "spectator" => "spectator",
            "leaving" => "leaving",
            _ => "joining",
        },
    });
    let others = reply.live_members.iter().map(|m| MemberRow {
        addr: m.addr.clone(),
        incarnation: m.incarnation,
        status: if listed(&reply.active_set, m) {
            "active"
        } else if listed(&reply.spectators, m) {
            "spectator"
        } else {
            "joining"
        },
    });
    let mut rows: Vec<MemberRow> = me.chain(others).collect();
    rows.sort_by(|a, b| a.addr.cmp(&b.addr));
    rows.dedup_by(|a, b| a.addr == b.addr);
    rows
}

pub fn run_members(args: &StatusArgs) -> Result<ExitCode> {
    let reply = block_on(fetch(&args.node))?;
    let rows = member_rows(&reply);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    for row in rows {
        println!(
            "{:<24} {:<10} incarnation {}",
            row.addr, row.status, row.incarnation
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(addr: &str) -> pb::Member {
        pb::Member {
            addr: addr.into(),
            incarnation: 1,
        }
    }

    #[test]
    fn a_lock_line_has_no_empty_clause() {
        let mut lock = pb::LockState {
            name: "job".into(),
            request_waiting_for: vec!["127.0.0.1:7001".into()],
            ..Default::default()
        };
        assert_eq!(
            lock_line(&lock),
            "lock job here: request waits for 127.0.0.1:7001"
        );
        lock.request_waiting_for.clear();
        assert_eq!(lock_line(&lock), "lock job here: idle");
        lock.waiting_here = 2;
        lock.last_fence = 9;
        assert_eq!(lock_line(&lock), "lock job here: 2 waiting; last fence 9");
        // A spectator's ticket its member carries reads as S<n>.
        lock.holder = Some(pb::LocalHolder {
            ticket: crate::node::PROXY_TICKETS + 1,
            fence: 10,
            ..Default::default()
        });
        assert!(
            lock_line(&lock).starts_with("lock job here: held by ticket S1 (fence 10); 2 waiting"),
            "{}",
            lock_line(&lock)
        );
    }

    #[test]
    fn members_still_joining_are_not_called_spectators() {
        let mut reply = pb::StatusReply {
            node: Some(member("127.0.0.1:7003")),
            role: "joining".into(),
            live_members: vec![member("127.0.0.1:7000"), member("127.0.0.1:7004")],
            ..Default::default()
        };
        let statuses = |reply: &pb::StatusReply| -> Vec<(String, &'static str)> {
            member_rows(reply)
                .into_iter()
                .map(|r| (r.addr, r.status))
                .collect()
        };
        assert_eq!(
            statuses(&reply),
            [
                ("127.0.0.1:7000".to_string(), "joining"),
                ("127.0.0.1:7003".to_string(), "joining"),
                ("127.0.0.1:7004".to_string(), "joining"),
            ]
        );
        reply.role = "spectator".into();
        reply.epoch = 2;
        reply.active_set = vec![member("127.0.0.1:7000")];
        reply.spectators = vec![member("127.0.0.1:7003")];
        assert_eq!(
            statuses(&reply),
            [
                ("127.0.0.1:7000".to_string(), "active"),
                ("127.0.0.1:7003".to_string(), "spectator"),
                ("127.0.0.1:7004".to_string(), "joining"),
            ]
        );
    }
}
