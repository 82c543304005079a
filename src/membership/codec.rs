//! foca's postcard codec, with every identity checked as it is decoded: a
//! datagram naming an identity no member of this cluster could have is
//! refused whole, before foca applies any of it.
//!
//! In plain mode anyone can send datagrams, and a corrupted one decodes just
//! as well as a real one. An identity is implausible when its address is
//! outside the cluster's family and scope (see [`Plausible`]), or when it
//! claims a start (or a standing, see [`MemberId::standing`]) later than this
//! host's clock allows. What is left is what a real process could send; a
//! forged later identity at a live member's address is then beaten by that
//! member itself (see [`Claims`] and `Node::maybe_renew`).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member, PostcardCodec};

use super::identity::MemberId;

/// Where an address sits, for the rule that a cluster keeps to one scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Loopback,
    LinkLocal,
    Private,
    Global,
}

fn scope(ip: IpAddr) -> Option<Scope> {
    if ip.is_unspecified() || ip.is_multicast() {
        return None;
    }
    Some(match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_broadcast() {
                return None;
            }
            if v4.is_loopback() {
                Scope::Loopback
            } else if v4.is_link_local() {
                Scope::LinkLocal
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                // RFC 1918, and the shared space of RFC 6598 (carrier-grade NAT).
                Scope::Private
            } else {
                Scope::Global
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Scope::Loopback
            } else if first & 0xffc0 == 0xfe80 {
                Scope::LinkLocal
            } else if first & 0xfe00 == 0xfc00 {
                Scope::Private
            } else {
                Scope::Global
            }
        }
    })
}

/// Which addresses a member of this cluster could have: our own address
/// family and scope (a loopback cluster never dials a public address), or a
/// seed we were given.
#[derive(Clone, Debug)]
pub struct Plausible {
    me: SocketAddr,
    seeds: Vec<SocketAddr>,
}

impl Plausible {
    pub fn new(me: SocketAddr, seeds: &[SocketAddr]) -> Self {
        Self {
            me,
            seeds: seeds.to_vec(),
        }
    }

    pub fn address(&self, addr: SocketAddr) -> bool {
        if addr.port() == 0 {
            return false;
        }
        if self.seeds.contains(&addr) {
            return true;
        }
        match (scope(addr.ip()), scope(self.me.ip())) {
            (Some(theirs), Some(ours)) => theirs == ours && addr.is_ipv4() == self.me.is_ipv4(),
            _ => false,
        }
    }
}

/// What the codec shares with the node: the wall clock it checks against,
/// and the strongest identity claimed at our own address.
#[derive(Debug, Default)]
pub struct Claims {
    wall_now_us: AtomicU64,
    at_my_address: Mutex<Option<MemberId>>,
}

impl Claims {
    pub fn set_wall_now(&self, micros: u64) {
        self.wall_now_us.store(micros, Ordering::Relaxed);
    }

    fn wall_now(&self) -> u64 {
        self.wall_now_us.load(Ordering::Relaxed)
    }

    /// The strongest identity at our address seen since the last call.
    pub fn take_rival(&self) -> Option<MemberId> {
        self.at_my_address.lock().ok().and_then(|mut r| r.take())
    }

    fn note(&self, id: MemberId) {
        if let Ok(mut rival) = self.at_my_address.lock()
            && rival.is_none_or(|r| id.standing_key() > r.standing_key())
        {
            *rival = Some(id);
        }
    }
}

/// Why a datagram was refused.
#[derive(Debug)]
pub enum CodecError {
    Postcard(postcard::Error),
    ImplausibleAddress(SocketAddr),
    FromTheFuture { id: MemberId, ahead_s: u64 },
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Postcard(e) => write!(f, "{e}"),
            Self::ImplausibleAddress(addr) => {
                write!(
                    f,
                    "names {addr}, an address no member of this cluster could have"
                )
            }
            Self::FromTheFuture { id, ahead_s } => write!(
                f,
                "names {}~{} (renewed {} times), {ahead_s} s ahead of this host's clock",
                id.process.addr, id.process.incarnation, id.bump
            ),
        }
    }
}

impl std::error::Error for CodecError {}

/// foca's [`PostcardCodec`] plus the checks above.
#[derive(Clone, Debug)]
pub struct CheckedCodec {
    plausible: Plausible,
    claims: Arc<Claims>,
}

impl CheckedCodec {
    pub fn new(plausible: Plausible, claims: Arc<Claims>) -> Self {
        Self { plausible, claims }
    }

    fn check(&self, id: &MemberId) -> Result<(), CodecError> {
        if id.is_placeholder() {
            // Stands for whatever listens at a seed: names no process.
            return Ok(());
        }
        if !self.plausible.address(id.process.addr) {
            return Err(CodecError::ImplausibleAddress(id.process.addr));
        }
        let wall_now = self.claims.wall_now();
        if !id.plausible_at(wall_now) {
            let ahead_s = id.standing().saturating_sub(wall_now) / 1_000_000;
            return Err(CodecError::FromTheFuture { id: *id, ahead_s });
        }
        if id.process.addr == self.plausible.me {
            self.claims.note(*id);
        }
        Ok(())
    }
}

impl Codec<MemberId> for CheckedCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<MemberId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        PostcardCodec
            .encode_header(header, buf)
            .map_err(CodecError::Postcard)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<MemberId>, Self::Error> {
        let header: Header<MemberId> = PostcardCodec
            .decode_header(buf)
            .map_err(CodecError::Postcard)?;
        self.check(&header.src)?;
        self.check(&header.dst)?;
        Ok(header)
    }

    fn encode_member(
        &mut self,
        member: &Member<MemberId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        PostcardCodec
            .encode_member(member, buf)
            .map_err(CodecError::Postcard)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<MemberId>, Self::Error> {
        let member: Member<MemberId> = PostcardCodec
            .decode_member(buf)
            .map_err(CodecError::Postcard)?;
        self.check(member.id())?;
        Ok(member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::identity::MAX_CLOCK_AHEAD_US;
    use crate::protocol::ids::ProcessId;

    const NOW: u64 = 1_800_000_000_000_000;

    fn codec() -> CheckedCodec {
        let claims = Arc::new(Claims::default());
        claims.set_wall_now(NOW);
        let me: SocketAddr = "127.0.0.1:7000".parse().expect("address");
        CheckedCodec::new(
            Plausible::new(me, &["10.0.0.9:7000".parse().expect("seed")]),
            claims,
        )
    }

    fn id(addr: &str, incarnation: u64, bump: u32) -> MemberId {
        MemberId {
            process: ProcessId::new(addr.parse().expect("address"), incarnation),
            bump,
        }
    }

    #[test]
    fn scopes_keep_a_cluster_together() {
        let s = |text: &str| scope(text.parse().expect("ip"));
        assert_eq!(s("127.0.0.1"), Some(Scope::Loopback));
        assert_eq!(s("::1"), Some(Scope::Loopback));
        assert_eq!(s("10.203.0.4"), Some(Scope::Private));
        assert_eq!(s("192.168.1.9"), Some(Scope::Private));
        assert_eq!(s("100.72.0.1"), Some(Scope::Private));
        assert_eq!(s("fd00::5"), Some(Scope::Private));
        assert_eq!(s("169.254.3.3"), Some(Scope::LinkLocal));
        assert_eq!(s("fe80::1"), Some(Scope::LinkLocal));
        assert_eq!(s("95.0.0.1"), Some(Scope::Global));
        assert_eq!(s("0.0.0.0"), None);
        assert_eq!(s("224.0.0.1"), None);
    }

    #[test]
    fn identities_a_real_process_could_have_pass() {
        let c = codec();
        assert!(c.check(&id("127.0.0.1:7001", NOW - 5_000_000, 0)).is_ok());
        assert!(c.check(&id("127.0.0.1:7001", NOW - 5_000_000, 4)).is_ok());
        // A seed may sit anywhere; a host whose clock runs a little ahead too.
        assert!(c.check(&id("10.0.0.9:7000", NOW + 60_000_000, 0)).is_ok());
        assert!(
            c.check(&MemberId::placeholder("127.0.0.1:7009".parse().expect("a")))
                .is_ok()
        );
    }

    #[test]
    fn identities_no_member_could_have_are_refused() {
        let c = codec();
        // Another scope, port 0, a start time far ahead, more renewals than seconds.
        for bad in [
            id("95.0.0.1:7001", NOW, 0),
            id("127.0.0.1:0", NOW, 0),
            id("127.0.0.1:7001", NOW + 2 * MAX_CLOCK_AHEAD_US, 0),
            id("127.0.0.1:7001", NOW, u32::MAX),
            id("127.0.0.1:7001", u64::MAX, 0),
        ] {
            assert!(c.check(&bad).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn claims_at_our_own_address_are_reported_strongest_first() {
        let c = codec();
        let weaker = id("127.0.0.1:7000", NOW - 1_000_000, 0);
        let stronger = id("127.0.0.1:7000", NOW - 1_000_000, 9);
        for claim in [stronger, weaker] {
            assert!(c.check(&claim).is_ok());
        }
        assert!(c.check(&id("127.0.0.1:7001", NOW, 50)).is_ok());
        assert_eq!(c.claims.take_rival(), Some(stronger));
        assert_eq!(c.claims.take_rival(), None);
    }
}
