//! SWIM membership through foca: identities, timing settings, and the custom
//! broadcasts ra piggybacks on it.

pub mod codec;
pub mod gossip;
pub mod identity;
pub mod keyfile;
pub mod seal;
pub mod settings;
