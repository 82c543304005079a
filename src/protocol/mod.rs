//! The protocol core, free of I/O: identities, the Lamport clock, lock names and
//! fences, the active set and its Paxos reconfiguration, and Ricart–Agrawala.

pub mod active_set;
pub mod clock;
pub mod ids;
pub mod lock;
pub mod message;
pub mod mutations;
pub mod paxos;
pub mod ricart_agrawala;
