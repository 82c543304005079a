//! `ra trace`: merges the JSON logs of several nodes (`--log-format json`) into
//! one story, drawn as a Mermaid sequence diagram or as plain-text swim lanes.
//!
//! Both outputs come from the same list of [`Row`]s, so they always tell the
//! same story: parse every line into an event, sort by time, pick the events to
//! show (a time window, or the messages that led to one entry), then turn each
//! into an arrow or a note, saying each membership fact once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cli::{TraceArgs, TraceFormat};
use crate::tools::time::parse_rfc3339;

/// What to draw and how.
#[derive(Clone, Debug, Default)]
pub struct TraceOptions {
    pub format: TraceFormat,
    /// Only the events that led to one entry of one node.
    pub focus: Option<Focus>,
    /// RFC 3339, or seconds since the first event.
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The `k`-th entry (from 1) of `node` into the critical section.
#[derive(Clone, Debug)]
pub struct Focus {
    pub node: String,
    pub entry: usize,
}

impl TraceOptions {
    pub fn from_args(args: &TraceArgs) -> Self {
        Self {
            format: args.format,
            focus: args.node.as_ref().map(|node| Focus {
                node: node.clone(),
                entry: args.entry,
            }),
            from: args.from.clone(),
            to: args.to.clone(),
        }
    }
}

pub fn run(args: &TraceArgs) -> Result<ExitCode> {
    let mut logs = Vec::with_capacity(args.logs.len());
    for path in &args.logs {
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read the log {}", path.display()))?;
        // A stray invalid byte must not cost the whole log: such a line is skipped later.
        let text = String::from_utf8_lossy(&text).into_owned();
        logs.push((display_name(path), text));
    }
    print!("{}", render(&logs, &TraceOptions::from_args(args))?);
    Ok(ExitCode::SUCCESS)
}

fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Renders the logs, given as (file name, contents), in the chosen format.
///
/// Lines that are not node events are skipped and counted in the output's
/// header; errors are only for options that cannot be honoured (an unknown
/// node, a missing entry, an unreadable time).
pub fn render(logs: &[(String, String)], options: &TraceOptions) -> Result<String> {
    let parsed = parse_logs(logs);
    let model = build(&parsed, options)?;
    Ok(match options.format {
        TraceFormat::Mermaid => render_mermaid(&model),
        TraceFormat::Text => render_text(&model),
    })
}

// ---------------------------------------------------------------------------
// Parsing

/// One node event from a log line. Absent fields stay `None`.
#[derive(Clone, Debug, Default)]
struct Ev {
    /// Microseconds since the Unix epoch.
    t: i64,
    timestamp: String,
    node: String,
    kind: String,
    message: String,
    peer: Option<String>,
    request_id: Option<u64>,
    ts: Option<u64>,
    own_ts: Option<u64>,
    epoch: Option<u64>,
    fence: Option<u64>,
    lamport: Option<u64>,
    deferred: Option<bool>,
    members: Option<String>,
    waited_ms: Option<f64>,
}

struct Parsed {
    files: Vec<String>,
    /// Sorted by time; ties keep file order, then line order.
    events: Vec<Ev>,
    /// Lines that are not node events.
    skipped: usize,
}

fn parse_logs(logs: &[(String, String)]) -> Parsed {
    let mut keyed = Vec::new();
    let mut skipped = 0;
    for (file, (_, text)) in logs.iter().enumerate() {
        for (line, raw) in text.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            match parse_line(raw) {
                Some(ev) => keyed.push(((ev.t, file, line), ev)),
                None => skipped += 1,
            }
        }
    }
    keyed.sort_by_key(|(key, _)| *key);
    Parsed {
        files: logs.iter().map(|(name, _)| name.clone()).collect(),
        events: keyed.into_iter().map(|(_, ev)| ev).collect(),
        skipped,
    }
}

/// A node event, or `None` for anything else (not JSON, a line of the shell
/// without `node`/`event`, a timestamp that does not parse).
fn parse_line(raw: &str) -> Option<Ev> {
    let value: Value = serde_json::from_str(raw).ok()?;
    let obj = value.as_object()?;
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    let num = |k: &str| obj.get(k).and_then(Value::as_u64);
    let timestamp = text("timestamp")?;
    Some(Ev {
        t: parse_rfc3339(&timestamp)?,
        timestamp,
        node: text("node")?,
        kind: text("event")?,
        message: text("message").unwrap_or_default(),
        peer: text("peer"),
        request_id: num("request_id"),
        ts: num("ts"),
        own_ts: num("own_ts"),
        epoch: num("epoch"),
        fence: num("fence"),
        lamport: num("lamport"),
        deferred: obj.get("deferred").and_then(Value::as_bool),
        members: text("members"),
        waited_ms: obj.get("waited_ms").and_then(Value::as_f64),
    })
}

// ---------------------------------------------------------------------------
// The story: rows of arrows and notes

#[derive(Clone, Debug, PartialEq)]
enum Item {
    Arrow {
        from: String,
        to: String,
        label: String,
        /// Replies are drawn dashed.
        reply: bool,
    },
    Note {
        at: String,
        lines: Vec<String>,
    },
    /// A fact of the whole cluster, drawn across every participant.
    Wide {
        lines: Vec<String>,
    },
    /// `activate`: the node holds the critical section. `rect` opens the
    /// highlight band (only one at a time, so the blocks nest).
    Enter {
        at: String,
        lines: Vec<String>,
        rect: bool,
    },
    /// `active`: the node was drawn as holding; `rect`: this closes the band.
    Exit {
        at: String,
        lines: Vec<String>,
        active: bool,
        rect: bool,
    },
    /// A holder gone without an exit (it crashed, restarted, or the logs end).
    Release {
        at: String,
        rect: bool,
    },
}

#[derive(Clone, Debug)]
struct Row {
    t: i64,
    item: Item,
}

struct Model {
    files: Vec<String>,
    events: usize,
    skipped: usize,
    /// The first event's time (microseconds) and timestamp: times are shown relative to it.
    t0: i64,
    t0_text: String,
    focus: Option<String>,
    window: Option<String>,
    /// Addresses, ordered numerically.
    participants: Vec<String>,
    rows: Vec<Row>,
}

fn build(parsed: &Parsed, options: &TraceOptions) -> Result<Model> {
    let events = &parsed.events;
    let t0 = events.first().map_or(0, |e| e.t);
    let t0_text = events
        .first()
        .map_or_else(String::new, |e| e.timestamp.clone());
    let from = options
        .from
        .as_deref()
        .map(|s| parse_time(s, t0, "--from"))
        .transpose()?;
    let to = options
        .to
        .as_deref()
        .map(|s| parse_time(s, t0, "--to"))
        .transpose()?;

    let mut keep = vec![true; events.len()];
    let mut focus_text = None;
    if let Some(focus) = &options.focus {
        let (selected, text) = focus_on(events, focus)?;
        keep = selected;
        focus_text = Some(text);
    }
    for (k, e) in keep.iter_mut().zip(events) {
        if from.is_some_and(|f| e.t < f) || to.is_some_and(|t| e.t > t) {
            *k = false;
        }
    }

    let log_nodes: HashSet<&str> = events.iter().map(|e| e.node.as_str()).collect();
    let mut builder = Builder {
        log_nodes,
        rows: Vec::new(),
        facts: HashMap::new(),
        views: HashSet::new(),
        started: HashSet::new(),
        holding: Vec::new(),
        rect_owner: None,
    };
    for (e, keep) in events.iter().zip(&keep) {
        builder.event(e, *keep);
    }
    builder.release_all();

    let mut participants: BTreeSet<String> = BTreeSet::new();
    for row in &builder.rows {
        match &row.item {
            Item::Arrow { from, to, .. } => {
                participants.insert(from.clone());
                participants.insert(to.clone());
            }
            Item::Note { at, .. }
            | Item::Enter { at, .. }
            | Item::Exit { at, .. }
            | Item::Release { at, .. } => {
                participants.insert(at.clone());
            }
            Item::Wide { .. } => {}
        }
    }
    if participants.is_empty() {
        participants = events.iter().map(|e| e.node.clone()).collect();
    }
    let mut participants: Vec<String> = participants.into_iter().collect();
    participants.sort_by_key(|a| address_key(a));

    let window = match (&options.from, &options.to) {
        (None, None) => None,
        (f, t) => Some(format!(
            "window: {} to {}",
            f.as_deref().unwrap_or("the start"),
            t.as_deref().unwrap_or("the end")
        )),
    };
    Ok(Model {
        files: parsed.files.clone(),
        events: events.len(),
        skipped: parsed.skipped,
        t0,
        t0_text,
        focus: focus_text,
        window,
        participants,
        rows: builder.rows,
    })
}

/// Orders addresses numerically (IP, then port); anything else after, by name.
fn address_key(a: &str) -> (u8, Option<SocketAddr>, String) {
    match a.parse::<SocketAddr>() {
        Ok(addr) => (0, Some(addr), String::new()),
        Err(_) => (1, None, a.to_string()),
    }
}

/// `--from`/`--to`: an RFC 3339 time, or seconds since the first event.
fn parse_time(s: &str, t0: i64, flag: &str) -> Result<i64> {
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() => Ok(t0.saturating_add((secs * 1e6).round() as i64)),
        _ => bail!(
            "{flag} {s:?}: expected an RFC 3339 time (2026-11-27T13:29:39Z) or seconds since the first event (3.5)"
        ),
    }
}

/// The events that led to one entry: from the node's `request` to its exit and
/// the deferred replies it sent then. Returns which events to keep and a line
/// saying what was picked.
fn focus_on(events: &[Ev], focus: &Focus) -> Result<(Vec<bool>, String)> {
    let nodes: BTreeSet<&str> = events.iter().map(|e| e.node.as_str()).collect();
    // `:PORT` is accepted as everywhere else in `ra`.
    let node = if nodes.contains(focus.node.as_str()) {
        focus.node.clone()
    } else {
        let matches: Vec<&&str> = nodes
            .iter()
            .filter(|n| focus.node.starts_with(':') && n.ends_with(focus.node.as_str()))
            .collect();
        match matches.as_slice() {
            [one] => one.to_string(),
            _ => bail!(
                "--node {}: no such node in these logs (nodes: {})",
                focus.node,
                nodes.iter().copied().collect::<Vec<_>>().join(", ")
            ),
        }
    };
    let mine: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].node == node)
        .collect();
    let enters: Vec<usize> = mine
        .iter()
        .copied()
        .filter(|&i| events[i].kind == "enter")
        .collect();
    if focus.entry == 0 || focus.entry > enters.len() {
        bail!(
            "--entry {}: {node} entered the critical section {} time(s) in these logs (count from 1)",
            focus.entry,
            enters.len()
        );
    }
    let enter_at = enters[focus.entry - 1];
    let enter = &events[enter_at];
    let Some(rid) = enter.request_id else {
        bail!(
            "entry {} of {node} has no request_id in the log",
            focus.entry
        );
    };
    let before: Vec<usize> = mine.iter().copied().filter(|&i| i < enter_at).collect();
    // Request ids start again at 1 when a node restarts: take the latest `request`.
    let previous_exit = before
        .iter()
        .rev()
        .find(|&&i| events[i].kind == "exit")
        .copied();
    let start = before
        .iter()
        .rev()
        .find(|&&i| events[i].kind == "request" && events[i].request_id == Some(rid))
        .or_else(|| {
            // The `request` line is missing (log cut): the first line of this request.
            before
                .iter()
                .find(|&&i| Some(i) > previous_exit && events[i].request_id == Some(rid))
        })
        .copied()
        .unwrap_or(enter_at);
    let after: Vec<usize> = mine.iter().copied().filter(|&i| i > enter_at).collect();
    let mut end = events.len().saturating_sub(1);
    if let Some(pos) = after.iter().position(|&i| events[i].kind == "exit") {
        end = after[pos];
        // The replies it deferred go out right after the exit: part of the story.
        for &i in &after[pos + 1..] {
            if events[i].kind == "reply_sent" && events[i].deferred == Some(true) {
                end = i;
            } else {
                break;
            }
        }
    }

    let mut keep = vec![false; events.len()];
    const OWN: &[&str] = &[
        "request",
        "request_sent",
        "reply_received",
        "reply_ignored",
        "reissued",
        "withdrawn",
        "enter",
        "exit",
    ];
    const ANSWERS: &[&str] = &["request_received", "reply_sent", "newer_view_sent"];
    for i in start..=end {
        let e = &events[i];
        let wanted = if e.node == node {
            // Its own request, and whatever it did with the requests of others.
            (OWN.contains(&e.kind.as_str()) && e.request_id == Some(rid))
                || ANSWERS.contains(&e.kind.as_str())
        } else {
            // Answers to its request, who held the section meanwhile, and views.
            (ANSWERS.contains(&e.kind.as_str())
                && e.peer.as_deref() == Some(node.as_str())
                && e.request_id == Some(rid))
                || matches!(e.kind.as_str(), "enter" | "exit")
                || is_membership(&e.kind)
        };
        if wanted || (e.node == node && is_membership(&e.kind)) {
            keep[i] = true;
        }
        // A request this node answered may have been sent before the window.
        if e.node == node && e.kind == "request_received" {
            let sender = e.peer.as_deref();
            if let Some(j) = (0..i).rev().find(|&j| {
                let s = &events[j];
                s.kind == "request_sent"
                    && Some(s.node.as_str()) == sender
                    && s.peer.as_deref() == Some(node.as_str())
                    && s.request_id == e.request_id
                    && s.ts == e.ts
            }) {
                keep[j] = true;
            }
        }
    }
    let fence = enter
        .fence
        .map_or_else(String::new, |f| format!(", fence {f}"));
    Ok((
        keep,
        format!("entry {} of {node}: REQUEST {rid}{fence}", focus.entry),
    ))
}

fn is_membership(kind: &str) -> bool {
    matches!(
        kind,
        "member_joined"
            | "member_left"
            | "member_failed"
            | "member_restarted"
            | "member_back"
            | "member_leaving"
            | "active_set"
            | "founded"
            | "started"
            | "rejoined"
            | "cluster_merged"
            | "leaving"
            | "left"
    )
}

/// Turns events into rows, remembering what was already said.
struct Builder<'a> {
    /// Nodes whose own log is among the inputs: their messages are drawn when
    /// sent; messages of others only when received.
    log_nodes: HashSet<&'a str>,
    rows: Vec<Row>,
    /// The membership state last shown for each address, so the same fact
    /// logged by every node appears once.
    facts: HashMap<String, &'static str>,
    /// Active sets already shown: (epoch, members).
    views: HashSet<(Option<u64>, String)>,
    /// Nodes whose first `started` was seen: a second one is a restart.
    started: HashSet<String>,
    /// Nodes drawn as holding the critical section, in order of entry.
    holding: Vec<String>,
    /// The holder whose entry opened the highlight band.
    rect_owner: Option<String>,
}

impl Builder<'_> {
    fn push(&mut self, t: i64, item: Item) {
        self.rows.push(Row { t, item });
    }

    fn note(&mut self, e: &Ev, lines: Vec<String>) {
        self.push(
            e.t,
            Item::Note {
                at: e.node.clone(),
                lines,
            },
        );
    }

    /// Records a membership fact; true if it is news (not what was last said
    /// about that address, or an active set not seen before). Every event goes
    /// through here, shown or not, so a fact known before a window or a focus
    /// is not repeated inside it.
    fn remember(&mut self, e: &Ev, restarted: bool) -> bool {
        let peer = e.peer.as_deref().unwrap_or("?");
        let (subject, state) = match e.kind.as_str() {
            "started" if restarted => (e.node.as_str(), "restarted"),
            "member_joined" => (peer, "joined"),
            "member_left" => (peer, "left"),
            "left" => (e.node.as_str(), "left"),
            "member_failed" => (peer, "failed"),
            "member_restarted" => (peer, "restarted"),
            "member_back" => (peer, "back"),
            "member_leaving" => (peer, "leaving"),
            "leaving" => (e.node.as_str(), "leaving"),
            "active_set" => {
                let members = e.members.clone().unwrap_or_default();
                return self.views.insert((e.epoch, members));
            }
            _ => return true,
        };
        self.facts.insert(subject.to_string(), state) != Some(state)
    }

    /// `subject` no longer holds the critical section without having exited.
    fn release(&mut self, t: i64, subject: &str) {
        if let Some(pos) = self.holding.iter().position(|h| h == subject) {
            self.holding.remove(pos);
            let rect = self.rect_owner.as_deref() == Some(subject);
            if rect {
                self.rect_owner = None;
            }
            self.push(
                t,
                Item::Release {
                    at: subject.to_string(),
                    rect,
                },
            );
        }
    }

    fn release_all(&mut self) {
        let t = self.rows.last().map_or(0, |r| r.t);
        for node in self.holding.clone().iter().rev() {
            self.release(t, node);
        }
    }

    fn event(&mut self, e: &Ev, keep: bool) {
        // Restarts are detected over all events, shown or not.
        let restarted = e.kind == "started" && !self.started.insert(e.node.clone());
        let novel = self.remember(e, restarted);
        if !keep {
            return;
        }
        let node = e.node.as_str();
        let peer = e.peer.as_deref().unwrap_or("?");
        let rid = e
            .request_id
            .map_or_else(|| "?".to_string(), |r| r.to_string());
        match e.kind.as_str() {
            "request_sent" => {
                let label = match e.ts {
                    Some(ts) => format!("REQUEST {rid} ts={ts}"),
                    None => format!("REQUEST {rid}"),
                };
                self.arrow(e, node, peer, label, false);
            }
            "request_received" => {
                if !self.log_nodes.contains(peer) {
                    let label = match e.ts {
                        Some(ts) => format!("REQUEST {rid} ts={ts}"),
                        None => format!("REQUEST {rid}"),
                    };
                    self.arrow(e, peer, node, label, false);
                }
                let ts = e.ts.map_or_else(|| "?".to_string(), |t| t.to_string());
                match (e.deferred, e.own_ts) {
                    (Some(true), Some(own)) => {
                        let why = precedence(
                            &format!("own ts={own}"),
                            &format!("ts={ts}"),
                            e.ts == Some(own),
                        );
                        self.note(e, vec![format!("defers REQUEST {rid} of {peer}"), why]);
                    }
                    (Some(true), None) => {
                        self.note(
                            e,
                            vec![
                                format!("defers REQUEST {rid} of {peer}"),
                                "in the critical section".to_string(),
                            ],
                        );
                    }
                    (Some(false), Some(own)) => {
                        let why = precedence(
                            &format!("ts={ts}"),
                            &format!("own ts={own}"),
                            e.ts == Some(own),
                        );
                        self.note(e, vec![format!("grants REQUEST {rid} of {peer}"), why]);
                    }
                    _ => {}
                }
            }
            "reply_sent" => {
                let label = if e.deferred == Some(true) {
                    format!("REPLY {rid} (deferred)")
                } else {
                    format!("REPLY {rid}")
                };
                self.arrow(e, node, peer, label, true);
            }
            "reply_received" if !self.log_nodes.contains(peer) => {
                self.arrow(e, peer, node, format!("REPLY {rid}"), true);
            }
            "newer_view_sent" => {
                let epoch = e.epoch.map_or_else(String::new, |x| format!(" epoch {x}"));
                self.arrow(e, node, peer, format!("NEWER VIEW{epoch}: ask again"), true);
            }
            "reply_ignored" => self.note(e, vec![format!("ignores a stale REPLY {rid} of {peer}")]),
            "reissued" => {
                let epoch = e
                    .epoch
                    .map_or_else(String::new, |x| format!(" (epoch {x})"));
                self.note(e, vec![format!("asks again for REQUEST {rid}{epoch}")]);
            }
            "withdrawn" => {
                let mut lines = vec![format!("REQUEST {rid} withdrawn")];
                if let Some((_, why)) = e.message.split_once("withdrawn: ") {
                    lines.push(why.to_string());
                }
                self.note(e, lines);
            }
            "request" if e.members.as_deref() == Some("[]") => {
                let ts = e.ts.map_or_else(String::new, |t| format!(" ts={t}"));
                self.note(e, vec![format!("REQUEST {rid}{ts}: alone, no one to ask")]);
            }
            "enter" => self.enter(e),
            "exit" => self.exit(e),
            "started" if restarted => {
                self.release(e.t, node);
                if novel {
                    self.note(e, vec![format!("{node} restarted")]);
                }
            }
            "member_left" | "member_failed" | "member_restarted" | "left" => {
                // A holder that is gone no longer holds, exit or not.
                let subject = if e.kind == "left" { node } else { peer };
                self.release(e.t, subject);
                if novel {
                    let what = match e.kind.as_str() {
                        "member_failed" => "FAILED",
                        "member_restarted" => "restarted",
                        _ => "left",
                    };
                    self.note(e, vec![format!("{subject} {what}")]);
                }
            }
            "member_joined" | "member_back" | "member_leaving" | "leaving" if novel => {
                let (subject, what) = match e.kind.as_str() {
                    "member_joined" => (peer, "joined"),
                    "member_back" => (peer, "is back"),
                    "member_leaving" => (peer, "is leaving"),
                    _ => (node, "is leaving"),
                };
                self.note(e, vec![format!("{subject} {what}")]);
            }
            "active_set" if novel => {
                let epoch = e.epoch.map_or_else(|| "?".to_string(), |x| x.to_string());
                let members = strip_brackets(e.members.as_deref().unwrap_or_default());
                self.push(
                    e.t,
                    Item::Wide {
                        lines: vec![format!("active set epoch {epoch}"), members],
                    },
                );
            }
            "founded" => self.note(e, vec!["founded a new cluster".to_string()]),
            "rejoined" => self.note(e, vec!["declared failed: rejoins".to_string()]),
            "cluster_merged" => self.note(e, vec!["joins an older cluster".to_string()]),
            "alone" => self.note(e, vec!["alone: no live member in view".to_string()]),
            "leave_timed_out" => {
                self.note(e, vec!["leave not confirmed: leaves anyway".to_string()])
            }
            "dropped" => self.note(e, vec![e.message.clone()]),
            // Progress the arrows already show, chatter, and unknown kinds.
            _ => {}
        }
    }

    fn arrow(&mut self, e: &Ev, from: &str, to: &str, label: String, reply: bool) {
        self.push(
            e.t,
            Item::Arrow {
                from: from.to_string(),
                to: to.to_string(),
                label,
                reply,
            },
        );
    }

    fn enter(&mut self, e: &Ev) {
        let mut first = match e.fence {
            Some(f) => format!("ENTER fence {f}"),
            None => "ENTER".to_string(),
        };
        // Two holders at once is the bug this tool exists to show.
        if let Some(other) = self.holding.iter().find(|h| **h != e.node) {
            first.push_str(&format!(" while {other} holds: OVERLAP"));
        }
        let mut second = Vec::new();
        if let Some(l) = e.lamport {
            second.push(format!("Lamport {l}"));
        }
        if let Some(w) = e.waited_ms {
            second.push(format!("waited {w:.1} ms"));
        }
        let mut lines = vec![first];
        if !second.is_empty() {
            lines.push(second.join(", "));
        }
        let rect = self.rect_owner.is_none();
        if rect {
            self.rect_owner = Some(e.node.clone());
        }
        self.holding.push(e.node.clone());
        self.push(
            e.t,
            Item::Enter {
                at: e.node.clone(),
                lines,
                rect,
            },
        );
    }

    fn exit(&mut self, e: &Ev) {
        let text = match (e.fence, e.lamport) {
            (Some(f), Some(l)) => format!("EXIT fence {f} (Lamport {l})"),
            (Some(f), None) => format!("EXIT fence {f}"),
            _ => "EXIT".to_string(),
        };
        let active = match self.holding.iter().position(|h| *h == e.node) {
            Some(pos) => {
                self.holding.remove(pos);
                true
            }
            None => false,
        };
        let rect = active && self.rect_owner.as_deref() == Some(e.node.as_str());
        if rect {
            self.rect_owner = None;
        }
        self.push(
            e.t,
            Item::Exit {
                at: e.node.clone(),
                lines: vec![text],
                active,
                rect,
            },
        );
    }
}

fn strip_brackets(s: &str) -> String {
    s.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

fn seconds(micros: i64) -> String {
    format!("+{:.3}s", micros as f64 / 1e6)
}

/// Header lines shared by both formats.
fn header(model: &Model) -> Vec<String> {
    let mut lines = vec![format!("ra trace of {}", model.files.join(", "))];
    let mut counts = match model.events {
        0 => "no node events (were the logs written with --log-format json?)".to_string(),
        n => format!("{n} node events"),
    };
    if !model.t0_text.is_empty() {
        counts.push_str(&format!(" from {}", model.t0_text));
    }
    lines.push(counts);
    if let Some(f) = &model.focus {
        lines.push(format!("focus: {f}"));
    }
    if let Some(w) = &model.window {
        lines.push(w.clone());
    }
    if model.skipped > 0 {
        lines.push(format!(
            "{} log {} skipped: not JSON, or without event, node or timestamp",
            model.skipped,
            if model.skipped == 1 { "line" } else { "lines" }
        ));
    }
    lines
}

// ---------------------------------------------------------------------------
// Mermaid

/// Text safe after `:` in Mermaid: `#` starts a comment or an entity, `;` ends
/// a statement, and a line break ends the line; `<`/`>` could open a tag.
fn mermaid_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '#' | '<' | '>' | '\n' | '\r' | '\t' => ' ',
            ';' => ',',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '?',
        })
        .collect()
}

fn mermaid_lines(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| mermaid_text(l))
        .collect::<Vec<_>>()
        .join("<br>")
}

fn render_mermaid(model: &Model) -> String {
    let alias: HashMap<&str, String> = model
        .participants
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), format!("N{}", i + 1)))
        .collect();
    let name = |addr: &str| alias.get(addr).cloned().unwrap_or_else(|| "N0".to_string());
    let mut out = String::from("sequenceDiagram\n");
    for line in header(model) {
        let _ = writeln!(out, "    %% {line}");
    }
    for p in &model.participants {
        let _ = writeln!(out, "    participant {} as {}", name(p), mermaid_text(p));
    }
    let wide = match (model.participants.first(), model.participants.last()) {
        (Some(a), Some(b)) if a != b => format!("{},{}", name(a), name(b)),
        (Some(a), _) => name(a),
        _ => String::new(),
    };
    let mut depth = 1;
    let pad = |depth: usize| "    ".repeat(depth);
    for row in &model.rows {
        match &row.item {
            Item::Arrow {
                from,
                to,
                label,
                reply,
            } => {
                let arrow = if *reply { "-->>" } else { "->>" };
                let _ = writeln!(
                    out,
                    "{}{}{arrow}{}: {}",
                    pad(depth),
                    name(from),
                    name(to),
                    mermaid_text(label)
                );
            }
            Item::Note { at, lines } => {
                let _ = writeln!(
                    out,
                    "{}Note over {}: {}",
                    pad(depth),
                    name(at),
                    mermaid_lines(lines)
                );
            }
            Item::Wide { lines } => {
                if !wide.is_empty() {
                    let _ = writeln!(
                        out,
                        "{}Note over {wide}: {}",
                        pad(depth),
                        mermaid_lines(lines)
                    );
                }
            }
            Item::Enter { at, lines, rect } => {
                if *rect {
                    let _ = writeln!(out, "{}rect rgba(40, 160, 40, 0.15)", pad(depth));
                    depth += 1;
                }
                let _ = writeln!(out, "{}activate {}", pad(depth), name(at));
                let _ = writeln!(
                    out,
                    "{}Note over {}: {}",
                    pad(depth),
                    name(at),
                    mermaid_lines(lines)
                );
            }
            Item::Exit {
                at,
                lines,
                active,
                rect,
            } => {
                let _ = writeln!(
                    out,
                    "{}Note over {}: {}",
                    pad(depth),
                    name(at),
                    mermaid_lines(lines)
                );
                if *active {
                    let _ = writeln!(out, "{}deactivate {}", pad(depth), name(at));
                }
                if *rect && depth > 1 {
                    depth -= 1;
                    let _ = writeln!(out, "{}end", pad(depth));
                }
            }
            Item::Release { at, rect } => {
                let _ = writeln!(out, "{}deactivate {}", pad(depth), name(at));
                if *rect && depth > 1 {
                    depth -= 1;
                    let _ = writeln!(out, "{}end", pad(depth));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Text swim lanes

/// Width of the time column, `+12.345s` and a space.
const TIME_WIDTH: usize = 10;

fn render_text(model: &Model) -> String {
    let n = model.participants.len().max(1);
    // 100-160 columns: lanes share about 140, but never so narrow a label won't fit.
    let lane = (140 / n).clamp(26, 46);
    let x = |i: usize| TIME_WIDTH + 2 + i * lane;
    let width = x(n - 1) + lane;
    let index: HashMap<&str, usize> = model
        .participants
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let mut holding = vec![false; n];

    let mut out = String::new();
    for line in header(model) {
        let _ = writeln!(out, "{line}");
    }
    if model.participants.is_empty() {
        let _ = writeln!(out, "nothing to draw");
        return out;
    }
    let _ = writeln!(
        out,
        "times are seconds since the first event; # marks a holder of the critical section"
    );
    let _ = writeln!(out);
    let mut top: Vec<char> = vec![' '; width];
    put(&mut top, 0, "    time");
    for (i, p) in model.participants.iter().enumerate() {
        put(&mut top, x(i), p);
    }
    push_line(&mut out, &top);
    push_line(&mut out, &lifelines(&holding, width, x));

    for row in &model.rows {
        let time = format!("{:>w$}", seconds(row.t - model.t0), w = TIME_WIDTH - 1);
        let mut first = true;
        let mut emit = |out: &mut String, mut canvas: Vec<char>| {
            if first {
                put(&mut canvas, 0, &time);
                first = false;
            }
            push_line(out, &canvas);
        };
        match &row.item {
            Item::Arrow {
                from,
                to,
                label,
                reply,
            } => {
                let mut canvas = lifelines(&holding, width, x);
                match (index.get(from.as_str()), index.get(to.as_str())) {
                    (Some(&a), Some(&b)) if a != b => {
                        draw_arrow(&mut canvas, x(a), x(b), label, *reply)
                    }
                    _ => put(&mut canvas, x(0), &format!("{from} -> {to}: {label}")),
                }
                emit(&mut out, canvas);
            }
            Item::Note { at, lines }
            | Item::Enter { at, lines, .. }
            | Item::Exit { at, lines, .. } => {
                let i = index.get(at.as_str()).copied().unwrap_or(0);
                if matches!(row.item, Item::Enter { .. }) {
                    holding[i] = true;
                }
                // Notes stay in their lane, except in the last one, which has room.
                let room = if i + 1 == n {
                    lane.max(40) - 3
                } else {
                    lane - 3
                };
                let mut wrapped = Vec::new();
                for l in lines {
                    wrapped.extend(wrap(l, room));
                }
                for (k, text) in wrapped.iter().enumerate() {
                    let mut canvas = lifelines(&holding, width.max(x(i) + 2 + room), x);
                    if k == 0 {
                        canvas[x(i)] = '*';
                    }
                    put(&mut canvas, x(i) + 2, text);
                    emit(&mut out, canvas);
                }
                if let Item::Exit { .. } = row.item {
                    holding[i] = false;
                }
            }
            Item::Wide { lines } => {
                let mut canvas = vec![' '; width];
                let text = format!(" {} ", lines.join(": "));
                let span = (x(n - 1) + 1).saturating_sub(x(0));
                let start = x(0) + span.saturating_sub(text.len()) / 2;
                for c in canvas.iter_mut().take(x(n - 1) + 1).skip(x(0)) {
                    *c = '=';
                }
                put(&mut canvas, start, &text);
                emit(&mut out, canvas);
            }
            Item::Release { at, .. } => {
                if let Some(&i) = index.get(at.as_str()) {
                    holding[i] = false;
                }
            }
        }
    }
    push_line(&mut out, &lifelines(&holding, width, x));
    out
}

fn lifelines(holding: &[bool], width: usize, x: impl Fn(usize) -> usize) -> Vec<char> {
    let mut canvas = vec![' '; width];
    for (i, h) in holding.iter().enumerate() {
        if let Some(c) = canvas.get_mut(x(i)) {
            *c = if *h { '#' } else { '|' };
        }
    }
    canvas
}

/// Writes `text` at column `at`, growing the line if needed.
fn put(canvas: &mut Vec<char>, at: usize, text: &str) {
    for (k, c) in text.chars().enumerate() {
        let c = if c.is_ascii() && !c.is_ascii_control() {
            c
        } else {
            '?'
        };
        match canvas.get_mut(at + k) {
            Some(slot) => *slot = c,
            None => {
                canvas.resize(at + k, ' ');
                canvas.push(c);
            }
        }
    }
}

/// `|----REQUEST 1 ts=11---->|` or `|<....REPLY 1.....|` between two lifelines.
fn draw_arrow(canvas: &mut [char], a: usize, b: usize, label: &str, reply: bool) {
    let body = if reply { '.' } else { '-' };
    let (lo, hi) = (a.min(b), a.max(b));
    for c in &mut canvas[lo + 1..hi] {
        *c = body;
    }
    if b > a {
        canvas[hi - 1] = '>';
    } else {
        canvas[lo + 1] = '<';
    }
    // The label sits in the middle, with a space either side, cut if it must.
    let inner = (hi - lo).saturating_sub(5);
    let label: String = label.chars().take(inner.saturating_sub(2)).collect();
    if label.is_empty() {
        return;
    }
    let text = format!(" {label} ");
    let start = lo + 1 + (hi - lo - 1).saturating_sub(text.chars().count()) / 2;
    for (k, c) in text.chars().enumerate() {
        if let Some(slot) = canvas.get_mut(start + k) {
            *slot = c;
        }
    }
}

fn push_line(out: &mut String, canvas: &[char]) {
    let line: String = canvas.iter().collect();
    let _ = writeln!(out, "{}", line.trim_end());
}

/// Greedy word wrap; a word longer than the line is cut.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word = word.to_string();
        while word.len() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let rest = word.split_off(width);
            lines.push(word);
            word = rest;
        }
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Why the first request comes before the second: an earlier timestamp, or on a
/// tie the lower address.
fn precedence(first: &str, second: &str, tie: bool) -> String {
    if tie {
        format!("{first} = {second}, lower address first")
    } else {
        format!("{first} before {second}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_words() {
        assert_eq!(wrap("a bb ccc dddd", 8), vec!["a bb ccc", "dddd"]);
        assert_eq!(wrap("abcdefghijkl", 8), vec!["abcdefgh", "ijkl"]);
    }

    #[test]
    fn mermaid_text_drops_special_characters() {
        assert_eq!(mermaid_text("REQUEST #1; x<y"), "REQUEST  1, x y");
    }
}
