//! The protocol core, free of I/O: identities, the Lamport clock, the active set
//! and its Paxos reconfiguration, and Ricart–Agrawala.

pub mod active_set;
pub mod clock;
pub mod ids;
pub mod message;
pub mod mutex;
pub mod reconfig;
