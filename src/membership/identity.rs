//! The identity foca gossips about: a process plus a bump that lets a process
//! that was wrongly declared down come back at once.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::protocol::ids::ProcessId;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct MemberId {
    pub process: ProcessId,
    /// Raised by `renew` each time this process rejoins after being declared down.
    pub bump: u16,
}

impl MemberId {
    pub fn new(process: ProcessId) -> Self {
        Self { process, bump: 0 }
    }

    /// Stands for whatever process listens at a seed address: foca accepts an
    /// announce addressed to any identity with our address.
    pub fn placeholder(addr: SocketAddr) -> Self {
        Self {
            process: ProcessId::new(addr, 0),
            bump: 0,
        }
    }
}

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            process: self.process,
            bump: self.bump.wrapping_add(1),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    /// A later process on the same address replaces an earlier one, and a renewed
    /// identity replaces the one it renewed.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.process.incarnation, self.bump) > (adversary.process.incarnation, adversary.bump)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn a_restart_wins_over_the_previous_incarnation() {
        let addr: SocketAddr = "127.0.0.1:7000".parse().expect("test address");
        let old = MemberId {
            process: ProcessId::new(addr, 10),
            bump: 7,
        };
        let restarted = MemberId::new(ProcessId::new(addr, 11));
        assert!(restarted.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&restarted));
    }

    #[test]
    fn renewal_keeps_the_process_and_wins() {
        let id = MemberId::new(ProcessId::new(
            "127.0.0.1:7000".parse().expect("test address"),
            3,
        ));
        let renewed = id.renew().expect("renewable");
        assert_eq!(renewed.process, id.process);
        assert!(renewed.win_addr_conflict(&id));
    }
}
