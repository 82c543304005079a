//! The command line: `ra [NODE OPTIONS]` runs a node; subcommands run the tools.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "ra",
    version,
    about = "Peer-to-peer mutual exclusion: SWIM membership feeding Ricart-Agrawala over gRPC",
    long_about = "Runs one node of a peer-to-peer mutual exclusion cluster. Press Enter to ask \
                  for the critical section; type `status` to see the node's state, `leave` to \
                  leave the cluster.\n\nStart the first node without --join; every other node \
                  joins through any running member.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a local cluster, make it contend, add a spectator, make a member
    /// leave, and print the story and a verdict.
    Demo(DemoArgs),
    /// Verify a shared critical-section file: entries and exits alternate, every
    /// exit is by the holder, fences increase.
    Check(CheckArgs),
    /// Render the JSON logs of several nodes as a sequence diagram.
    Trace(TraceArgs),
    /// Measure latency, throughput, messages per entry, membership timings and
    /// footprint of a local cluster.
    Bench(BenchArgs),
}

#[derive(Args, Debug, Default, Clone)]
pub struct NodeArgs {
    /// Address to listen on, UDP (SWIM) and TCP (gRPC) on the same port:
    /// `:PORT` (all interfaces) or `HOST:PORT`.
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// A member to join through (`:PORT` is 127.0.0.1:PORT); repeat for more.
    #[arg(long, value_name = "ADDR")]
    pub join: Vec<String>,
    /// The address other nodes use to reach this one (default: the bind address,
    /// or 127.0.0.1 when bound to all interfaces).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// A TOML file with settings (see config/ra.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Most members of the active set; further nodes wait as spectators.
    #[arg(long, value_name = "N")]
    pub max_active: Option<u32>,
    /// How long the critical section is held, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub hold_ms: Option<u64>,
    /// Append one JSON line per entry and exit to this shared file.
    #[arg(long, value_name = "PATH")]
    pub cs_file: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Ask for the critical section N times, one after another, without stdin.
    #[arg(long, value_name = "N")]
    pub requests: Option<u32>,
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

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

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// The shared critical-section file (JSON lines from --cs-file).
    pub file: PathBuf,
}

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
    /// Skip events before this time (RFC 3339, or seconds since the first event).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Skip events after this time (RFC 3339, or seconds since the first event).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Also run every size from 2 to the active-set cap plus two spectators.
    #[arg(long)]
    pub sweep: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Critical-section entries to time for latency and throughput.
    #[arg(long, default_value_t = 2000)]
    pub entries: u32,
    /// Seconds to watch an idle node for CPU use.
    #[arg(long, default_value_t = 3.0)]
    pub idle_seconds: f64,
    /// Skip the membership timings (join, leave, crash detection).
    #[arg(long)]
    pub skip_membership: bool,
}
