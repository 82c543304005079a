//! `ra`: peer-to-peer mutual exclusion. SWIM membership (foca, UDP) decides who is
//! alive; a Paxos-decided active set of at most `max_active` members runs
//! Ricart–Agrawala over gRPC (tonic).
//!
//! The protocol lives in [`node::Node`], a sans-IO state machine; [`runtime`]
//! drives it with tokio and real sockets, `sim` with a simulated network and
//! clock. The simulator, and the switches that break the protocol on purpose
//! (`protocol::mutations`), come with the `sim` cargo feature: the tests turn
//! it on (Cargo.toml's dev-dependency on `ra` itself), the release binary
//! leaves it out.

pub mod agenda;
pub mod commands;
pub mod config;
pub mod cs;
pub mod durable;
pub mod event;
pub mod membership;
pub mod node;
pub mod protocol;
pub mod runtime;
#[cfg(feature = "sim")]
pub mod sim;
pub mod tools;
pub mod wire;
