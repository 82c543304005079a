//! The command line: `ra [NODE OPTIONS]` runs a node; subcommands run the
//! tools and the clients. Only the binary uses this module: the library takes
//! resolved settings (`ra::config`) and each tool's own options.

use clap::{Parser, Subcommand};

use ra::commands::{lock_command::LockArgs, status::StatusArgs};
use ra::config::NodeFlags;
use ra::tools::{bench::BenchArgs, check::CheckArgs, demo::DemoArgs, trace::TraceArgs};

#[derive(Parser, Debug)]
#[command(
    name = "ra",
    version,
    about = "Peer-to-peer mutual exclusion: SWIM membership feeding Ricart-Agrawala over gRPC",
    long_about = "Runs one node of a peer-to-peer mutual exclusion cluster. Press Enter to ask \
                  for the critical section; type `help` for the other commands.\n\nStart the \
                  first node without --join; every other node joins through any running member.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub node: NodeFlags,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Take a named lock through a node, run CMD while holding it, release when
    /// it exits. CMD gets RA_LOCK, RA_FENCE and RA_NODE. Exit status: CMD's, or
    /// 69 node unreachable, 75 lock lost (CMD stopped), 124 timed out or taken
    /// (--try), 125 ra lock's own error, 126/127 CMD cannot run / not found.
    Lock(LockArgs),
    /// What a node knows: members, the active set, its role, who holds what.
    Status(StatusArgs),
    /// The cluster's members as a node sees them.
    Members(StatusArgs),
    /// Print a new random cluster key (base64, 32 bytes) for --cluster-key.
    Keygen,
    /// Start a local cluster, make it contend, add a spectator, make a member
    /// leave, and print the story and a verdict.
    Demo(DemoArgs),
    /// Verify a shared critical-section file: entries and exits alternate per
    /// lock, every exit is by the holder, fences increase.
    Check(CheckArgs),
    /// Render the JSON logs of several nodes as a sequence diagram.
    Trace(TraceArgs),
    /// Measure latency, throughput, messages per entry, membership timings and
    /// footprint of a local cluster.
    Bench(BenchArgs),
}
