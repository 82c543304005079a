//! `ra demo`: a real cluster on loopback, told as a story, judged at the end.
//!
//! Every node is a separate `ra` process ([`RaProcess`]) with its own sockets
//! and a JSON log; the demo drives them through stdin exactly as a person would,
//! merges their logs into one timeline as it goes, and checks the shared
//! critical-section file.
//!
//! A little over 500 lines with its tests: the story, its pacing and its verdict.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cs::{CsEvent, CsRecord};
use crate::event::{Event, LogRecord};
use crate::node::PROXY_TICKETS;
use crate::tools::check;
use crate::tools::process::{RaProcess, Spawn, write_quick_config};

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Nodes in the initial cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Rounds in which every node asks for the critical section at once.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// How long each entry holds the critical section, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub hold_ms: u64,
    /// Where to write the logs and the shared file (default: a new directory
    /// under the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print only the verdict, not the timeline.
    #[arg(long)]
    pub quiet: bool,
}

/// Events worth a line in the story; the rest stays in the logs.
fn in_story(event: &Event) -> bool {
    matches!(
        event,
        Event::Founded { .. }
            | Event::MemberJoined { .. }
            | Event::MemberLeft { .. }
            | Event::MemberFailed { .. }
            | Event::MemberRestarted { .. }
            | Event::ActiveSetInstalled { .. }
            | Event::WaitingForSeat { .. }
            | Event::RequestIssued { .. }
            | Event::RequestReceived { .. }
            | Event::ReplySent { .. }
            | Event::Enter { .. }
            | Event::Exit { .. }
            | Event::Forwarded { .. }
            | Event::Serving { .. }
            | Event::EnterVia { .. }
            | Event::ExitVia { .. }
            | Event::Lost { .. }
            | Event::Leaving { .. }
            | Event::Left
            | Event::Dropped { .. }
    )
}

// A member's tickets from PROXY_TICKETS on are spectators' it carries: they
// count as the spectator's (its own Asked, EnterVia, ExitVia), not the member's.
fn is_asked(e: &Event) -> bool {
    matches!(e, Event::Asked { ticket, .. } if *ticket < PROXY_TICKETS)
}
fn is_enter(e: &Event) -> bool {
    matches!(e, Event::Enter { ticket, .. } if *ticket < PROXY_TICKETS)
        || matches!(e, Event::EnterVia { .. })
}
fn is_exit(e: &Event) -> bool {
    matches!(e, Event::Exit { ticket, .. } if *ticket < PROXY_TICKETS)
        || matches!(e, Event::ExitVia { .. })
}
fn is_served_via(e: &Event) -> bool {
    matches!(e, Event::EnterVia { .. })
}
fn is_left(e: &Event) -> bool {
    matches!(e, Event::Left)
}

struct Demo {
    dir: PathBuf,
    cs_file: PathBuf,
    config: PathBuf,
    hold_ms: u64,
    nodes: Vec<RaProcess>,
    quiet: bool,
    /// Records already put in the story, per node.
    told: Vec<usize>,
    /// Log lines read but not printed yet: they wait a moment so that lines of
    /// different processes come out in time order. (time, read at, node, message)
    pending: Vec<(jiff::Timestamp, Instant, String, String)>,
    /// The time of the first event: the story counts from it.
    first_event: Option<jiff::Timestamp>,
}

impl Demo {
    fn say(&mut self, text: &str) {
        // What happened before this point is told before it.
        let _ = self.pump(true);
        if !self.quiet {
            println!("\n== {text}");
        }
    }

    fn start_node(&mut self, join: Option<usize>) -> Result<usize> {
        let index = self.nodes.len();
        let name = format!("n{}", index + 1);
        let exe = std::env::current_exe().context("cannot find the ra executable")?;
        let mut spawn = Spawn::new(exe, &self.dir, &name)
            .arg("--hold-ms")
            .arg(self.hold_ms.to_string())
            .arg("--cs-file")
            .arg(&self.cs_file)
            .arg("--config")
            .arg(&self.config);
        let seed = join.map(|seed| self.nodes[seed].addr());
        if let Some(seed) = seed {
            spawn = spawn.join(seed);
        }
        let node = RaProcess::start(spawn).with_context(|| format!("cannot start {name}"))?;
        if !self.quiet {
            let how = match seed {
                Some(seed) => format!("ra --bind 127.0.0.1:0 --join {seed}"),
                None => "ra --bind 127.0.0.1:0".to_string(),
            };
            println!("   {name} = {}   ({how})", node.addr());
        }
        self.nodes.push(node);
        self.told.push(0);
        Ok(index)
    }

    /// Read the logs and print the story so far.
    fn pump(&mut self, flush: bool) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.nodes[i].poll()?;
            let fresh: Vec<LogRecord> = self.nodes[i].records_read()[self.told[i]..].to_vec();
            self.told[i] += fresh.len();
            let name = self.nodes[i].name.clone();
            for record in fresh {
                if in_story(&record.event) {
                    let message = self.shorten(&record.message);
                    self.pending
                        .push((record.time, Instant::now(), name.clone(), message));
                }
            }
        }
        self.pending.sort_by_key(|p| p.0);
        let settle = Duration::from_millis(150);
        let cut = if flush {
            self.pending.len()
        } else {
            // Print in order up to the first line that may still have company coming.
            self.pending
                .iter()
                .position(|(_, read, _, _)| read.elapsed() < settle)
                .unwrap_or(self.pending.len())
        };
        let ready: Vec<_> = self.pending.drain(..cut).collect();
        if !self.quiet {
            for (at, _, name, message) in ready {
                let first = *self.first_event.get_or_insert(at);
                let since = at.duration_since(first).as_secs_f64();
                println!("{since:>8.3}s  {name:<3} {message}");
            }
        }
        Ok(())
    }

    /// Node names instead of addresses: the story reads better. The node's
    /// sentences name a peer on the same host by `:PORT`.
    fn shorten(&self, message: &str) -> String {
        let mut text = message.trim().to_string();
        for node in &self.nodes {
            text = text.replace(&node.addr().to_string(), &node.name);
        }
        for node in &self.nodes {
            text = replace_port(&text, node.addr(), &node.name);
        }
        text
    }

    fn wait_until(
        &mut self,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.pump(false)?;
            if done(self) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.pump(true)?;
                bail!("gave up after {within:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exits_in_file(&self) -> usize {
        std::fs::read_to_string(&self.cs_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<CsRecord>(l).ok())
            .filter(|r| r.event == CsEvent::Exit)
            .count()
    }

    /// A running node with a request not yet served.
    fn first_waiting(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|node| node.count(is_left) == 0 && node.count(is_asked) > node.count(is_exit))
    }

    /// A running member of the active set with nothing left to ask.
    fn idle_active_member(&self) -> Option<usize> {
        (0..self.nodes.len()).rev().find(|&i| {
            let node = &self.nodes[i];
            node.count(is_left) == 0
                && node.count(is_asked) == node.count(is_exit)
                && node.active_set().is_some_and(|set| set.contains(&node.me))
        })
    }
}

/// `:PORT` (not followed by another digit) to `name`.
fn replace_port(text: &str, addr: SocketAddr, name: &str) -> String {
    let short = format!(":{}", addr.port());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(&short) {
        let after = &rest[pos + short.len()..];
        out.push_str(&rest[..pos]);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(&short);
        } else {
            out.push_str(name);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

pub fn run(args: &DemoArgs) -> Result<ExitCode> {
    if args.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.clone()
        }
        // A fresh directory each run, kept afterwards: the story names its files.
        None => tempfile::Builder::new()
            .prefix("ra-demo-")
            .tempdir()
            .context("cannot create a directory for the demo")?
            .keep(),
    };
    let cs_file = dir.join("cs.jsonl");
    let _ = std::fs::remove_file(&cs_file);
    let config = dir.join("demo.toml");
    write_quick_config(&config, Duration::from_millis(300))?;
    let mut demo = Demo {
        dir: dir.clone(),
        cs_file,
        config,
        hold_ms: args.hold_ms,
        nodes: Vec::new(),
        quiet: args.quiet,
        told: Vec::new(),
        pending: Vec::new(),
        first_event: None,
    };
    println!(
        "ra demo: {} nodes, {} rounds, critical section held {} ms; files in {}",
        args.nodes,
        args.rounds,
        args.hold_ms,
        dir.display()
    );
    let result = story(&mut demo, args);
    let _ = demo.pump(true);
    let verdict = judge(&demo, result.as_ref().err());
    let stopped = stop_all(&mut demo);
    println!(
        "\nlogs: {}/n*.log   shared file: {}",
        dir.display(),
        demo.cs_file.display()
    );
    println!(
        "see the messages as a diagram:   ra trace {}/n*.log",
        dir.display()
    );
    println!(
        "check the shared file again:     ra check {} --logs {}/n*.log",
        demo.cs_file.display(),
        dir.display()
    );
    match (verdict, result, stopped) {
        (true, Ok(()), Ok(())) => Ok(ExitCode::SUCCESS),
        (_, Err(e), _) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::FAILURE)
        }
        (_, _, Err(e)) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::FAILURE)
        }
        (false, ..) => Ok(ExitCode::FAILURE),
    }
}

fn story(demo: &mut Demo, args: &DemoArgs) -> Result<()> {
    demo.say(&format!(
        "Starting {} nodes: the first founds the cluster, the others join through any member",
        args.nodes
    ));
    demo.start_node(None)?;
    for i in 1..args.nodes {
        demo.start_node(Some(i - 1))?;
    }
    let cluster = args.nodes;
    demo.wait_until("the active set to form", Duration::from_secs(20), |d| {
        d.nodes.iter().all(|n| n.active_set_full(cluster))
    })?;

    for round in 1..=args.rounds {
        demo.say(&format!(
            "Round {round}: every node asks for the critical section at the same moment"
        ));
        let before = demo.exits_in_file();
        let everyone = demo.nodes.len();
        for node in &mut demo.nodes {
            node.type_line("")?;
        }
        let want = before + everyone;
        demo.wait_until(
            "every node to be served, spectators through members",
            Duration::from_secs(30),
            |d| d.exits_in_file() >= want,
        )?;
    }

    demo.say(
        "A new node joins: the active set is full, so it is a spectator; its Enter is \
         forwarded to a member, which asks for it",
    );
    let newcomer = demo.start_node(Some(0))?;
    demo.wait_until(
        "the newcomer to learn the active set",
        Duration::from_secs(20),
        |d| d.nodes[newcomer].active_set().is_some(),
    )?;
    if demo.nodes[newcomer]
        .active_set()
        .is_some_and(|set| set.contains(&demo.nodes[newcomer].me))
    {
        bail!("the newcomer took a seat while none was free");
    }
    demo.nodes[newcomer].type_line("")?;
    demo.wait_until(
        "the spectator to be served through a member",
        Duration::from_secs(15),
        |d| d.nodes[newcomer].count(is_served_via) > 0 && d.nodes[newcomer].count(is_exit) > 0,
    )?;

    // A seat frees when a member leaves: the first spectator in line takes it.
    if let Some(leaver) = demo.idle_active_member() {
        demo.say("An active member leaves: the first spectator in line takes its seat");
        demo.nodes[leaver].type_line("leave")?;
        demo.wait_until("the leaver to exit", Duration::from_secs(10), |d| {
            d.nodes[leaver].exited()
        })?;
        demo.wait_until(
            "a spectator to take the free seat",
            Duration::from_secs(15),
            |d| {
                let running: Vec<usize> = (0..d.nodes.len())
                    .filter(|&i| i != leaver && d.nodes[i].count(is_left) == 0)
                    .collect();
                running
                    .iter()
                    .all(|&i| d.nodes[i].active_set_full(running.len()))
            },
        )?;
    }
    if demo.first_waiting().is_some() {
        bail!("a request is still waiting");
    }
    Ok(())
}

/// Leave, in order, and make sure every process is gone.
fn stop_all(demo: &mut Demo) -> Result<()> {
    demo.say("Stopping: every node leaves the cluster");
    for node in &mut demo.nodes {
        if !node.exited() {
            let _ = node.type_line("leave");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !demo.nodes.iter_mut().all(RaProcess::exited) {
        let _ = demo.pump(false);
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = demo.pump(true);
    let stubborn: Vec<String> = demo
        .nodes
        .iter_mut()
        .filter_map(|n| {
            if n.exited() {
                None
            } else {
                n.kill();
                Some(n.name.clone())
            }
        })
        .collect();
    if stubborn.is_empty() {
        Ok(())
    } else {
        bail!(
            "had to kill {} (they did not leave in time)",
            stubborn.join(", ")
        )
    }
}

/// The verdict: what the shared file proves, and what the logs count.
fn judge(demo: &Demo, failure: Option<&anyhow::Error>) -> bool {
    println!("\n== Verdict");
    let logs: Vec<PathBuf> = demo.nodes.iter().map(|n| n.log.clone()).collect();
    let report = match check::check_file_with_logs(&demo.cs_file, &logs) {
        Ok(report) => report,
        Err(e) => {
            println!(
                "the shared file {} cannot be checked: {e}",
                demo.cs_file.display()
            );
            return false;
        }
    };
    let entries = report.entries;
    let count =
        |pick: fn(&Event) -> bool| -> usize { demo.nodes.iter().map(|n| n.count(pick)).sum() };
    let asked = count(is_asked);
    let served = count(is_enter);
    let dropped: usize = demo
        .nodes
        .iter()
        .flat_map(|n| n.records_read())
        .map(|r| match r.event {
            Event::Leaving { dropped_tickets } => dropped_tickets,
            _ => 0,
        })
        .sum();
    let outstanding = asked.saturating_sub(served + dropped);
    let messages = count(|e| matches!(e, Event::RequestSent { .. } | Event::ReplySent { .. }));
    let by_node: BTreeMap<&str, usize> = demo
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.count(is_enter)))
        .collect();
    println!(
        "entries served:            {entries}  ({})",
        by_node
            .iter()
            .map(|(n, c)| format!("{n}: {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "requests outstanding:      {outstanding}  (asked {asked}, served {served}, dropped by leaving {dropped})"
    );
    println!("most holders at once:      {}", report.max_holders);
    println!(
        "messages per entry:        {:.2}  (requests and replies sent; Ricart-Agrawala needs 2(N-1) = 4 with 3 active members)",
        messages as f64 / served.max(1) as f64
    );
    for violation in &report.violations {
        println!("VIOLATION {}", violation.message);
    }
    let held = report.ok() && report.max_holders <= 1;
    println!(
        "mutual exclusion {}; {}",
        if held { "HELD" } else { "VIOLATED" },
        if outstanding == 0 {
            "every request was served"
        } else {
            "some requests were not served"
        }
    );
    held && outstanding == 0 && failure.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_become_names_but_longer_ports_stay() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            replace_port("asking [:4000, :40001]: :4000", addr, "n1"),
            "asking [n1, :40001]: n1"
        );
    }
}
