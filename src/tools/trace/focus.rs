//! `--node ADDR --entry K`: the events that led to one entry, from the node's
//! request to its exit and the deferred replies it sent then; the requests of
//! others it answered meanwhile, the answers to its own, who held the lock, and
//! membership.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use anyhow::{Result, bail};

use super::Focus;
use super::parse::Ev;
use super::story::fence_text;
use crate::event::Event;
use crate::protocol::ids::ProcessId;

/// The request an event is about, for the events that name one.
fn request_of(event: &Event) -> Option<u64> {
    match event {
        Event::RequestIssued { request_id, .. }
        | Event::RequestSent { request_id, .. }
        | Event::RequestReceived { request_id, .. }
        | Event::ReplySent { request_id, .. }
        | Event::ReplyReceived { request_id, .. }
        | Event::ReplyIgnored { request_id, .. }
        | Event::ReplyExpired { request_id, .. }
        | Event::NewerSetSent { request_id, .. }
        | Event::Reissued { request_id, .. }
        | Event::Withdrawn { request_id, .. }
        | Event::Enter { request_id, .. } => Some(*request_id),
        _ => None,
    }
}

/// The other process a message event names: who sent it or who it goes to.
fn peer_of(event: &Event) -> Option<&ProcessId> {
    match event {
        Event::RequestSent { to, .. }
        | Event::ReplySent { to, .. }
        | Event::NewerSetSent { to, .. } => Some(to),
        Event::RequestReceived { from, .. }
        | Event::ReplyReceived { from, .. }
        | Event::ReplyIgnored { from, .. }
        | Event::ReplyExpired { from, .. } => Some(from),
        _ => None,
    }
}

/// What a node does with the requests of others.
fn is_answer(event: &Event) -> bool {
    matches!(
        event,
        Event::RequestReceived { .. } | Event::ReplySent { .. } | Event::NewerSetSent { .. }
    )
}

/// The steps of a node's own request.
fn is_own_step(event: &Event) -> bool {
    matches!(
        event,
        Event::RequestIssued { .. }
            | Event::RequestSent { .. }
            | Event::ReplyReceived { .. }
            | Event::ReplyIgnored { .. }
            | Event::ReplyExpired { .. }
            | Event::Reissued { .. }
            | Event::Withdrawn { .. }
            | Event::Enter { .. }
    )
}

fn is_membership(event: &Event) -> bool {
    matches!(
        event,
        Event::MemberJoined { .. }
            | Event::MemberLeft { .. }
            | Event::MemberFailed { .. }
            | Event::MemberRestarted { .. }
            | Event::MemberBack { .. }
            | Event::PeerLeaving { .. }
            | Event::ActiveSetInstalled { .. }
            | Event::Founded { .. }
            | Event::Started { .. }
            | Event::Rejoined { .. }
            | Event::ClusterMerged { .. }
            | Event::Leaving { .. }
            | Event::Left
    )
}

/// The node that `--node` names: an address, or `:PORT` when one node has it.
fn resolve_node(events: &[Ev], wanted: &str) -> Result<SocketAddr> {
    let nodes: BTreeSet<SocketAddr> = events.iter().map(Ev::node).collect();
    let exact = wanted
        .parse::<SocketAddr>()
        .ok()
        .filter(|a| nodes.contains(a));
    let by_port: Vec<&SocketAddr> = match wanted.strip_prefix(':').map(str::parse::<u16>) {
        Some(Ok(port)) => nodes.iter().filter(|a| a.port() == port).collect(),
        _ => Vec::new(),
    };
    match (exact, by_port.as_slice()) {
        (Some(addr), _) => Ok(addr),
        (None, [one]) => Ok(**one),
        _ => bail!(
            "--node {wanted}: no such node in these logs (nodes: {})",
            nodes
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The events that led to one entry: from the node's request to its exit and
/// the deferred replies it sent then. Returns which events to keep and a line
/// saying what was picked.
pub(super) fn focus_on(events: &[Ev], focus: &Focus) -> Result<(Vec<bool>, String)> {
    let node = resolve_node(events, &focus.node)?;
    let enters: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].node() == node && matches!(events[i].event, Event::Enter { .. }))
        .collect();
    if focus.entry == 0 || focus.entry > enters.len() {
        bail!(
            "--entry {}: {node} took a lock {} time(s) in these logs (count from 1)",
            focus.entry,
            enters.len()
        );
    }
    let enter_at = enters[focus.entry - 1];
    let Event::Enter {
        lock,
        ticket,
        request_id: rid,
        fence,
        ..
    } = &events[enter_at].event
    else {
        unreachable!("picked among the entries");
    };
    // One process: request ids start again at 1 when a node restarts.
    let me = events[enter_at].process;
    let mine: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].process == me)
        .collect();
    let same_lock = |e: &Ev| e.lock() == Some(lock);
    let this_request = |e: &Ev| same_lock(e) && request_of(&e.event) == Some(*rid);
    let before: Vec<usize> = mine.iter().copied().filter(|&i| i < enter_at).collect();
    let previous_exit = before
        .iter()
        .rev()
        .find(|&&i| same_lock(&events[i]) && matches!(events[i].event, Event::Exit { .. }))
        .copied();
    let start = before
        .iter()
        .rev()
        .find(|&&i| {
            this_request(&events[i]) && matches!(events[i].event, Event::RequestIssued { .. })
        })
        .or_else(|| {
            // The request line is missing (log cut): the first line of this request.
            before
                .iter()
                .find(|&&i| Some(i) > previous_exit && this_request(&events[i]))
        })
        .copied()
        .unwrap_or(enter_at);
    let own_exit = |e: &Ev| matches!(&e.event, Event::Exit { lock: l, ticket: t, .. } if l == lock && t == ticket);
    let after: Vec<usize> = mine
        .iter()
        .copied()
        .filter(|&i| i > enter_at && same_lock(&events[i]))
        .collect();
    let mut end = events.len().saturating_sub(1);
    if let Some(pos) = after.iter().position(|&i| own_exit(&events[i])) {
        end = after[pos];
        // The replies it deferred go out right after the exit: part of the story.
        for &i in &after[pos + 1..] {
            if matches!(events[i].event, Event::ReplySent { deferred: true, .. }) {
                end = i;
            } else {
                break;
            }
        }
    }

    let mut keep = vec![false; events.len()];
    for i in start..=end {
        let e = &events[i];
        let wanted = if e.process == me {
            // Its own request, and whatever it did with the requests of others.
            (is_own_step(&e.event) && this_request(e))
                || own_exit(e)
                || matches!(&e.event, Event::Lost { lock: l, ticket: t, .. } if l == lock && t == ticket)
                || (is_answer(&e.event) && same_lock(e))
                || is_membership(&e.event)
        } else {
            // Answers to its request, who held the lock meanwhile, and views.
            (is_answer(&e.event) && this_request(e) && peer_of(&e.event) == Some(&me))
                || (same_lock(e) && matches!(e.event, Event::Enter { .. } | Event::Exit { .. }))
                || is_membership(&e.event)
        };
        if wanted {
            keep[i] = true;
        }
        // A request this node answered may have been sent before the window.
        if let (true, Event::RequestReceived { from, timestamp, .. }) = (e.process == me, &e.event)
            && same_lock(e)
            && let Some(j) = (0..i).rev().find(|&j| {
                let s = &events[j];
                s.process == *from
                    && same_lock(s)
                    && matches!(&s.event, Event::RequestSent { to, timestamp: ts, .. } if *to == me && ts == timestamp)
                    && request_of(&s.event) == request_of(&e.event)
            })
        {
            keep[j] = true;
        }
    }
    Ok((
        keep,
        format!(
            "entry {} of {node}: lock {lock}, REQUEST {rid}, fence {}",
            focus.entry,
            fence_text(fence)
        ),
    ))
}
