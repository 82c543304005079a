//! SWIM membership through foca: identities, timing settings, and the custom
//! broadcasts ra piggybacks on it.

pub mod gossip;
pub mod identity;
pub mod settings;
