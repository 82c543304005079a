//! Who is who: a process, and the order the protocol compares processes in.

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One running `ra` process: the address it advertises and when it started.
///
/// The address alone is not enough: a process restarted on the same address must
/// never answer for its previous incarnation (its promises and grants died with it).
///
/// Serialized as `"ADDR~INCARNATION"` in human-readable formats (the JSON log),
/// and as a pair in compact ones (the gossip's postcard).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessId {
    pub addr: SocketAddr,
    /// Unix time in microseconds when the process started.
    pub incarnation: u64,
}

impl ProcessId {
    pub fn new(addr: SocketAddr, incarnation: u64) -> Self {
        Self { addr, incarnation }
    }

    /// The order in which processes get a seat in the active set: by start time,
    /// so a newcomer never pushes out a member that joined before it.
    pub fn seat_key(&self) -> (u64, AddrKey) {
        (self.incarnation, AddrKey::of(self.addr))
    }
}

/// Addresses compared as numbers, never as strings ("10" < "2" is a classic bug).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct AddrKey(u8, u128, u16);

impl AddrKey {
    pub fn of(addr: SocketAddr) -> Self {
        match addr.ip() {
            IpAddr::V4(ip) => AddrKey(4, u128::from(u32::from(ip)), addr.port()),
            IpAddr::V6(ip) => AddrKey(6, u128::from(ip), addr.port()),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ProcessPair {
    addr: SocketAddr,
    incarnation: u64,
}

impl Serialize for ProcessId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(&format_args!("{}~{}", self.addr, self.incarnation))
        } else {
            ProcessPair {
                addr: self.addr,
                incarnation: self.incarnation,
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ProcessId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            let (addr, incarnation) = text
                .rsplit_once('~')
                .ok_or_else(|| serde::de::Error::custom("expected ADDR~INCARNATION"))?;
            let addr = addr.parse().map_err(serde::de::Error::custom)?;
            let incarnation = incarnation.parse().map_err(serde::de::Error::custom)?;
            Ok(ProcessId::new(addr, incarnation))
        } else {
            let pair = ProcessPair::deserialize(d)?;
            Ok(ProcessId::new(pair.addr, pair.incarnation))
        }
    }
}

impl Ord for ProcessId {
    /// Total order used to break ties between requests with equal timestamps.
    fn cmp(&self, other: &Self) -> Ordering {
        (AddrKey::of(self.addr), self.incarnation)
            .cmp(&(AddrKey::of(other.addr), other.incarnation))
    }
}

impl PartialOrd for ProcessId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)
    }
}

impl fmt::Debug for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}~{}", self.addr, self.incarnation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str, inc: u64) -> ProcessId {
        ProcessId::new(s.parse().expect("test address"), inc)
    }

    #[test]
    fn addresses_compare_numerically_not_as_strings() {
        assert!(pid("127.0.0.1:7002", 1) < pid("127.0.0.1:7010", 1));
        assert!(pid("10.0.0.2:1", 1) < pid("10.0.0.10:1", 1));
        assert!(pid("127.0.0.1:9", 1) < pid("127.0.0.1:10", 1));
    }

    #[test]
    fn json_names_the_process_in_one_string() {
        let p = pid("127.0.0.1:7002", 17);
        let json = serde_json::to_string(&p).expect("serialize");
        assert_eq!(json, "\"127.0.0.1:7002~17\"");
        assert_eq!(serde_json::from_str::<ProcessId>(&json).expect("back"), p);
        let v6 = pid("[::1]:7000", 3);
        let back: ProcessId =
            serde_json::from_str(&serde_json::to_string(&v6).expect("serialize")).expect("back");
        assert_eq!(back, v6);
        let compact = postcard::to_allocvec(&p).expect("postcard");
        assert_eq!(
            postcard::from_bytes::<ProcessId>(&compact).expect("back"),
            p
        );
    }

    #[test]
    fn seats_go_by_start_time_then_address() {
        let early = pid("127.0.0.9:1", 5);
        let late = pid("127.0.0.1:1", 6);
        assert!(early.seat_key() < late.seat_key());
        let tie_a = pid("127.0.0.1:2", 5);
        let tie_b = pid("127.0.0.1:10", 5);
        assert!(tie_a.seat_key() < tie_b.seat_key());
    }
}
