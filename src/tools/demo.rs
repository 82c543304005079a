//! `ra demo`: a real cluster on loopback, told as a story, judged at the end.
//!
//! Every node is a separate `ra` process with its own sockets and a JSON log; the
//! demo drives them through stdin exactly as a person would, merges their logs
//! into one timeline as it goes, and checks the shared critical-section file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cli::DemoArgs;
use crate::tools::check;

/// Events worth a line in the story; the rest stays in the logs.
const STORY: &[&str] = &[
    "founded",
    "member_joined",
    "member_left",
    "member_failed",
    "member_restarted",
    "active_set",
    "waiting_for_seat",
    "request",
    "request_received",
    "reply_sent",
    "enter",
    "exit",
    "leaving",
    "left",
    "dropped",
];

struct DemoNode {
    name: String,
    addr: String,
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    read_offset: u64,
    events: Vec<Value>,
}

impl DemoNode {
    fn type_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("the node's stdin is closed")?;
        writeln!(stdin, "{line}")
            .with_context(|| format!("{} stopped reading its input", self.name))?;
        stdin.flush()?;
        Ok(())
    }

    /// New complete lines of the log since the last call.
    fn read_new(&mut self) -> Vec<Value> {
        let Ok(mut file) = File::open(&self.log) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.read_offset)).is_err() {
            return Vec::new();
        }
        let mut reader = BufReader::new(file);
        let mut fresh = Vec::new();
        let mut line = String::new();
        while let Ok(n) = reader.read_line(&mut line) {
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            self.read_offset += n as u64;
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                fresh.push(value);
            }
            line.clear();
        }
        self.events.extend(fresh.iter().cloned());
        fresh
    }

    fn count(&self, kind: &str) -> usize {
        self.events.iter().filter(|e| e["event"] == kind).count()
    }

    fn last_active_set(&self) -> Option<String> {
        self.events
            .iter()
            .rev()
            .find(|e| e["event"] == "active_set")
            .and_then(|e| e["members"].as_str().map(str::to_string))
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

struct Demo {
    dir: PathBuf,
    cs_file: PathBuf,
    config: PathBuf,
    hold_ms: u64,
    nodes: Vec<DemoNode>,
    quiet: bool,
    /// Log lines read but not printed yet: they wait a moment so that lines of
    /// different processes come out in timestamp order. (timestamp, read at,
    /// node, message)
    pending: Vec<(String, Instant, String, String)>,
    /// The time of the first event, as Unix microseconds: the story counts from it.
    first_event: Option<i64>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Leave no process behind, whatever happened.
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
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
        let port = super::free_loopback_port()?;
        let name = format!("n{}", index + 1);
        let addr = format!("127.0.0.1:{port}");
        let log = self.dir.join(format!("{name}.log"));
        let exe = std::env::current_exe().context("cannot find the ra executable")?;
        let mut command = Command::new(exe);
        command
            .args(["--bind", &addr, "--log-format", "json", "--hold-ms"])
            .arg(self.hold_ms.to_string())
            .arg("--cs-file")
            .arg(&self.cs_file)
            .arg("--config")
            .arg(&self.config);
        if let Some(seed) = join {
            command.args(["--join", &self.nodes[seed].addr]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(File::create(self.dir.join(format!("{name}.out")))?)
            .stderr(File::create(&log)?)
            .spawn()
            .context("cannot start a node")?;
        let stdin = child.stdin.take();
        if !self.quiet {
            let how = match join {
                Some(seed) => format!("ra --bind {addr} --join {}", self.nodes[seed].addr),
                None => format!("ra --bind {addr}"),
            };
            println!("   {name} = {addr}   ({how})");
        }
        self.nodes.push(DemoNode {
            name,
            addr,
            child,
            stdin,
            log,
            read_offset: 0,
            events: Vec::new(),
        });
        Ok(index)
    }

    /// Read the logs, print the story so far, and check that no node died.
    fn pump(&mut self, flush: bool) -> Result<()> {
        for i in 0..self.nodes.len() {
            let fresh = self.nodes[i].read_new();
            let name = self.nodes[i].name.clone();
            for event in fresh {
                let kind = event["event"].as_str().unwrap_or_default();
                if STORY.contains(&kind) {
                    let at = event["timestamp"].as_str().unwrap_or_default().to_string();
                    let message = self.shorten(event["message"].as_str().unwrap_or_default());
                    self.pending
                        .push((at, Instant::now(), name.clone(), message));
                }
            }
        }
        // RFC 3339 timestamps of one clock sort as text.
        self.pending.sort();
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
                let micros = crate::tools::time::parse_rfc3339(&at).unwrap_or(0);
                let first = *self.first_event.get_or_insert(micros);
                println!(
                    "{:>8.3}s  {name:<3} {message}",
                    (micros - first) as f64 / 1e6
                );
            }
        }
        Ok(())
    }

    /// Node names instead of addresses: the story reads better.
    fn shorten(&self, message: &str) -> String {
        let mut text = message.trim().to_string();
        for node in &self.nodes {
            text = text.replace(&node.addr, &node.name);
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
            .filter(|l| l.contains("\"event\":\"exit\""))
            .count()
    }

    /// A running node with a request not yet served.
    fn first_waiting(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            let node = &self.nodes[i];
            node.count("left") == 0 && node.count("asked") > node.count("exit")
        })
    }

    /// A running member of the active set with nothing left to ask.
    fn idle_active_member(&self) -> Option<usize> {
        (0..self.nodes.len()).rev().find(|&i| {
            let node = &self.nodes[i];
            node.count("left") == 0
                && node.count("asked") == node.count("exit")
                && node
                    .last_active_set()
                    .is_some_and(|set| set.contains(&node.addr))
        })
    }

    fn entries_of(&self, index: usize) -> usize {
        self.nodes[index].count("exit")
    }
}

/// Settings for the demo: the founder need not wait the default 4 s for an old
/// cluster that cannot exist here.
fn write_config(path: &Path) -> Result<()> {
    std::fs::write(path, "[cluster]\nfound_after_ms = 300\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn run(args: &DemoArgs) -> Result<ExitCode> {
    if args.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("ra-demo-{}", crate::cs::unix_us() / 1_000_000)),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cs_file = dir.join("cs.jsonl");
    let _ = std::fs::remove_file(&cs_file);
    let config = dir.join("demo.toml");
    write_config(&config)?;
    let mut demo = Demo {
        dir: dir.clone(),
        cs_file,
        config,
        hold_ms: args.hold_ms,
        nodes: Vec::new(),
        quiet: args.quiet,
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
        "check the shared file again:     ra check {}",
        demo.cs_file.display()
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
    let seated = args.nodes.min(3);
    demo.wait_until("the active set to form", Duration::from_secs(20), |d| {
        d.nodes.iter().all(|n| {
            n.last_active_set()
                .is_some_and(|set| set.matches(", ").count() + 1 == seated)
        })
    })?;

    for round in 1..=args.rounds {
        demo.say(&format!(
            "Round {round}: every node asks for the critical section at the same moment"
        ));
        let before = demo.exits_in_file();
        let active: Vec<usize> = (0..demo.nodes.len()).collect();
        for &i in &active {
            demo.nodes[i].type_line("")?;
        }
        let want = before + active.len().min(seated);
        demo.wait_until(
            "every seated node to be served",
            Duration::from_secs(30),
            |d| d.exits_in_file() >= want,
        )?;
    }
    // Spectators asked too; they are served when a seat frees, below.

    demo.say("A new node joins: the active set is full, so it waits as a spectator");
    let newcomer = demo.start_node(Some(0))?;
    demo.wait_until(
        "the newcomer to learn the active set",
        Duration::from_secs(20),
        |d| d.nodes[newcomer].last_active_set().is_some(),
    )?;
    demo.nodes[newcomer].type_line("")?;
    demo.wait_until(
        "the newcomer to report its place in line",
        Duration::from_secs(10),
        |d| d.nodes[newcomer].count("waiting_for_seat") > 0,
    )?;
    std::thread::sleep(Duration::from_millis(500));
    demo.pump(false)?;
    if demo.entries_of(newcomer) > 0 {
        bail!("the spectator entered without a seat");
    }

    // Spectators wait for a seat: free one at a time, by having an active member
    // with nothing left to ask leave, until every request has been served.
    while let Some(waiting) = demo.first_waiting() {
        let Some(leaver) = demo.idle_active_member() else {
            bail!("requests wait for a seat, but no active member is free to leave");
        };
        demo.say(
            "An active member leaves: the first spectator in line takes its seat and is served",
        );
        let served_before = demo.entries_of(waiting);
        demo.nodes[leaver].type_line("leave")?;
        demo.wait_until("the leaver to exit", Duration::from_secs(10), |d| {
            d.nodes[leaver].exited()
        })?;
        demo.wait_until(
            "a waiting request to be served",
            Duration::from_secs(30),
            |d| d.first_waiting() != Some(waiting) || d.entries_of(waiting) > served_before,
        )?;
    }
    if demo.entries_of(newcomer) == 0 {
        bail!("the newcomer was never served");
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
    while Instant::now() < deadline && !demo.nodes.iter_mut().all(DemoNode::exited) {
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
                let _ = n.child.kill();
                let _ = n.child.wait();
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
    let report = match check::check_file(&demo.cs_file) {
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
    let asked: usize = demo.nodes.iter().map(|n| n.count("asked")).sum();
    let served: usize = demo.nodes.iter().map(|n| n.count("enter")).sum();
    let dropped: usize = demo
        .nodes
        .iter()
        .flat_map(|n| &n.events)
        .filter(|e| e["event"] == "leaving")
        .filter_map(|e| e["dropped"].as_u64())
        .sum::<u64>() as usize;
    let outstanding = asked.saturating_sub(served + dropped);
    let messages: usize = demo
        .nodes
        .iter()
        .map(|n| n.count("request_sent") + n.count("reply_sent"))
        .sum();
    let by_node: BTreeMap<&str, usize> = demo
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.count("enter")))
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
