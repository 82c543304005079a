//! A deterministic simulator: whole clusters of the real [`crate::node::Node`]
//! over a simulated network and clock, with faults, checked by oracles; and
//! a hostile peer among them (`hostile`), with or without the cluster key.
//!
//! Test code: compiled only with the `sim` cargo feature, which `cargo test`
//! turns on and a release build leaves out.

pub mod hostile;
pub mod network;
pub mod oracle;
pub mod world;

pub use network::NetConfig;
pub use world::{Action, Report, SimConfig, World, slot_addr};
pub mod scenarios;
pub mod schedule;
