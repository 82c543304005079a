//! SWIM membership through foca: identities (`identity`), timing settings
//! (`settings`), the checked codec (`codec`), the frame that checksums or seals
//! each datagram (`seal`) and its key file (`keyfile`), and the custom
//! broadcasts ra piggybacks on it (`gossip`).

pub mod codec;
pub mod gossip;
pub mod identity;
pub mod keyfile;
pub mod seal;
pub mod settings;
