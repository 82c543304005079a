//! `ra trace`: merges the JSON logs of several nodes (`--log-format json`) into
//! one story, drawn as a Mermaid sequence diagram or as plain-text swim lanes.
//!
//! Both outputs come from the same rows, so they always tell the same story:
//! [`parse`] reads every line as a typed record and sorts them by time,
//! [`story`] picks the events to show (a time window, one lock, or with
//! [`focus`] the messages that led to one entry) and turns each into an arrow
//! or a note, and
//! [`mermaid`] and [`text`] draw the rows.

mod focus;
mod mermaid;
mod parse;
mod story;
mod text;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceFormat {
    #[default]
    Mermaid,
    Text,
}

#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// JSON logs of the nodes (--log-format json), one file per node.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TraceFormat::Mermaid)]
    pub format: TraceFormat,
    /// Show only the messages that led to one entry: the node's address.
    #[arg(long, value_name = "ADDR")]
    pub node: Option<String>,
    /// With --node: which of its entries, counting from 1.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub entry: usize,
    /// Show only this lock (and the membership around it).
    #[arg(long, value_name = "NAME")]
    pub lock: Option<String>,
    /// Skip events before this time (RFC 3339, or seconds since the first event).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Skip events after this time (RFC 3339, or seconds since the first event).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
}

/// What to draw and how.
#[derive(Clone, Debug, Default)]
pub struct TraceOptions {
    pub format: TraceFormat,
    /// Only the events that led to one entry of one node.
    pub focus: Option<Focus>,
    /// Only the events of this lock, besides membership.
    pub lock: Option<String>,
    /// RFC 3339, or seconds since the first event.
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The `entry`-th entry (from 1) of `node` into any lock (into the `--lock`
/// one, with that option).
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
            lock: args.lock.clone(),
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
/// Lines that are not node records are skipped and counted in the output's
/// header; errors are only for options that cannot be honoured (an unknown
/// node or lock, a missing entry, an unreadable time).
pub fn render(logs: &[(String, String)], options: &TraceOptions) -> Result<String> {
    let model = story::build(parse::parse_logs(logs), options)?;
    Ok(match options.format {
        TraceFormat::Mermaid => mermaid::render(&model),
        TraceFormat::Text => text::render(&model),
    })
}

fn seconds(micros: i64) -> String {
    format!("+{:.3}s", micros as f64 / 1e6)
}

/// Header lines shared by both formats.
fn header(model: &story::Model) -> Vec<String> {
    let mut lines = vec![format!("ra trace of {}", model.files.join(", "))];
    let mut counts = match model.events {
        0 => "no node events (were the logs written with --log-format json?)".to_string(),
        n => format!("{n} node events"),
    };
    if !model.t0_text.is_empty() {
        counts.push_str(&format!(" from {}", model.t0_text));
    }
    lines.push(counts);
    if let Some(lock) = &model.lock {
        lines.push(format!("lock: {lock} only"));
    }
    if let Some(f) = &model.focus {
        lines.push(format!("focus: {f}"));
    }
    if let Some(w) = &model.window {
        lines.push(w.clone());
    }
    if model.skipped > 0 {
        lines.push(format!(
            "{} log {} skipped: not a node's record (--log-format json)",
            model.skipped,
            if model.skipped == 1 { "line" } else { "lines" }
        ));
    }
    lines
}
