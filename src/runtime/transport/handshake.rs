//! The opening of every peer stream: Hello, Welcome, Proof (see
//! `proto/ra/v1/ra.proto`). With a cluster key both sides prove they hold it
//! with an HMAC over both fresh nonces and both identities, so a captured
//! handshake proves nothing on another stream, and the stream is bound to the
//! caller it names: every later envelope must come from that caller.
//! Without a key the handshake still tells each side who the other is.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::membership::seal::{Key, Keyring};
use crate::protocol::ids::ProcessId;

pub const NONCE_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Which side a MAC proves: never the same input for both.
#[derive(Clone, Copy)]
pub enum Side {
    /// The callee's Welcome.
    Welcome,
    /// The caller's Proof.
    Hello,
}

fn transcript(
    side: Side,
    caller_nonce: &[u8],
    callee_nonce: &[u8],
    caller: &ProcessId,
    callee: &ProcessId,
) -> Vec<u8> {
    let label: &[u8] = match side {
        Side::Welcome => b"ra welcome",
        Side::Hello => b"ra hello",
    };
    let mut bytes = Vec::with_capacity(128);
    for part in [label, caller_nonce, callee_nonce] {
        bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
        bytes.extend_from_slice(part);
    }
    for process in [caller, callee] {
        let addr = process.addr.to_string();
        bytes.extend_from_slice(&(addr.len() as u32).to_be_bytes());
        bytes.extend_from_slice(addr.as_bytes());
        bytes.extend_from_slice(&process.incarnation.to_be_bytes());
    }
    bytes
}

/// The MAC of one side of a handshake.
pub fn mac(
    key: &Key,
    side: Side,
    caller_nonce: &[u8],
    callee_nonce: &[u8],
    caller: &ProcessId,
    callee: &ProcessId,
) -> Vec<u8> {
    let Ok(mut mac) = HmacSha256::new_from_slice(key.secret()) else {
        // HMAC takes keys of any length: unreachable.
        return Vec::new();
    };
    mac.update(&transcript(
        side,
        caller_nonce,
        callee_nonce,
        caller,
        callee,
    ));
    mac.finalize().into_bytes().to_vec()
}

/// Whether `tag` is the right MAC (compared in constant time).
pub fn verify(
    key: &Key,
    side: Side,
    caller_nonce: &[u8],
    callee_nonce: &[u8],
    caller: &ProcessId,
    callee: &ProcessId,
    tag: &[u8],
) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(key.secret()) else {
        return false;
    };
    mac.update(&transcript(
        side,
        caller_nonce,
        callee_nonce,
        caller,
        callee,
    ));
    mac.verify_slice(tag).is_ok()
}

/// The key a caller named by its id, if this ring has it.
pub fn key_named<'a>(ring: &'a Keyring, id: &str) -> Option<&'a Key> {
    ring.keys().iter().find(|k| k.id() == id)
}

/// Fresh random bytes for a nonce.
pub fn nonce() -> Option<[u8; NONCE_BYTES]> {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(port: u16, inc: u64) -> ProcessId {
        ProcessId::new(format!("127.0.0.1:{port}").parse().expect("addr"), inc)
    }

    #[test]
    fn macs_bind_the_key_both_nonces_both_sides_and_the_side() {
        let key = Key::new([9; 32]);
        let other = Key::new([8; 32]);
        let (caller, callee) = (pid(1, 1), pid(2, 2));
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let tag = mac(&key, Side::Hello, &a, &b, &caller, &callee);
        assert!(verify(&key, Side::Hello, &a, &b, &caller, &callee, &tag));
        // Anything different fails.
        assert!(!verify(&other, Side::Hello, &a, &b, &caller, &callee, &tag));
        assert!(!verify(&key, Side::Welcome, &a, &b, &caller, &callee, &tag));
        assert!(!verify(&key, Side::Hello, &b, &a, &caller, &callee, &tag));
        let (stranger, impostor) = (pid(3, 1), pid(2, 3));
        assert!(!verify(&key, Side::Hello, &a, &b, &stranger, &callee, &tag));
        assert!(!verify(&key, Side::Hello, &a, &b, &caller, &impostor, &tag));
        assert!(!verify(
            &key,
            Side::Hello,
            &a,
            &b,
            &caller,
            &callee,
            &tag[..31]
        ));
    }
}
