//! The protocol core, free of I/O: identities, the Lamport clock, lock names and
//! fences, the active set and its Paxos reconfiguration, and Ricart–Agrawala.

pub mod active_set;
pub mod clock;
pub mod ids;
pub mod lock;
pub mod message;
// Nameable from outside (the tests' switches) only with the `sim` feature.
#[cfg(feature = "sim")]
pub mod mutations;
#[cfg(not(feature = "sim"))]
pub(crate) mod mutations;
pub mod paxos;
pub mod ricart_agrawala;
