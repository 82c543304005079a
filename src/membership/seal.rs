//! The frame around every SWIM datagram. foca is sans-IO, so this wraps its
//! bytes on the way out and unwraps them on the way in, before `handle_data`.
//!
//! - **Plain** (no cluster key): `[0xA1][payload][8-byte SHA-256 checksum]`.
//!   It keeps corrupted datagrams out (bit flips, truncations); it proves
//!   nothing about who sent them.
//! - **Keyed** (`--cluster-key`): `[0xA2][key id, 4 bytes][nonce, 24 bytes]
//!   [XChaCha20-Poly1305 ciphertext and tag]`, the first four bytes as
//!   associated data. A datagram is opened with the key its id names; every key
//!   of the ring is accepted and the first one seals, so keys rotate without
//!   downtime (Serf's keyring, as a file).

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

const PLAIN: u8 = 0xA1;
const KEYED: u8 = 0xA2;
/// A short notice back to a sender whose datagrams this node cannot open, so
/// both sides can say why they do not hear each other. Not authenticated: it
/// only ever leads to a log line.
const REFUSAL: u8 = 0xA3;
const CHECKSUM: usize = 8;
const KEY_ID: usize = 4;
const NONCE: usize = 24;
const TAG: usize = 16;
pub const KEY_BYTES: usize = 32;

/// One cluster key.
#[derive(Clone)]
pub struct Key {
    id: [u8; KEY_ID],
    bytes: [u8; KEY_BYTES],
    cipher: XChaCha20Poly1305,
}

impl Key {
    pub fn new(bytes: [u8; KEY_BYTES]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"ra cluster key id")
            .chain_update(bytes)
            .finalize();
        let mut id = [0u8; KEY_ID];
        id.copy_from_slice(&digest[..KEY_ID]);
        Self {
            id,
            bytes,
            cipher: XChaCha20Poly1305::new(&bytes.into()),
        }
    }

    /// A short, public name for the key (its id), for logs and `ra status`.
    pub fn id(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key itself, for the stream handshake's MACs.
    pub fn secret(&self) -> &[u8; KEY_BYTES] {
        &self.bytes
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key itself.
        write!(f, "Key({})", self.id())
    }
}

/// The keys a node accepts, the first of which it seals with.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    pub fn new(keys: Vec<Key>) -> Option<Self> {
        (!keys.is_empty()).then_some(Self { keys })
    }

    pub fn primary(&self) -> Option<&Key> {
        self.keys.first()
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    fn by_id(&self, id: &[u8]) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }
}

/// How this node frames its datagrams.
#[derive(Clone, Debug)]
pub enum Sealer {
    Plain,
    Keyed(Keyring),
}

/// Why a datagram could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    TooShort,
    UnknownFormat(u8),
    /// A plain datagram whose checksum does not match: corrupted on the way.
    Corrupted,
    /// A keyed datagram, but this node has no cluster key.
    KeyedButNoKey,
    /// A plain datagram, but this cluster requires the key.
    PlainRefused,
    /// Sealed with a key this node does not have.
    UnknownKey(String),
    /// The key id matched but the datagram does not authenticate.
    NotAuthentic,
    /// A peer's notice that it cannot open what we send it.
    RefusedByPeer(Refusal),
}

/// Why a peer cannot open our datagrams, as its notice says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It requires a cluster key; we send plain.
    KeyRequired,
    /// It has no cluster key; we seal ours.
    NoKeyThere,
    /// It has none of our keys (its sealing key's id, if it said).
    OtherKey(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::KeyRequired => write!(
                f,
                "it requires a cluster key, and this node has none (--cluster-key)"
            ),
            Refusal::NoKeyThere => write!(
                f,
                "it runs without a cluster key, and this node seals with one"
            ),
            Refusal::OtherKey(id) => write!(
                f,
                "it seals with key {id}, which is not among this node's keys (wrong or rotated cluster key)"
            ),
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::TooShort => write!(f, "too short to be a datagram of ra"),
            OpenError::UnknownFormat(b) => write!(f, "not a datagram of ra (first byte {b:#04x})"),
            OpenError::Corrupted => write!(f, "its checksum does not match (corrupted)"),
            OpenError::KeyedButNoKey => write!(
                f,
                "it is encrypted with a cluster key, and this node has none (--cluster-key)"
            ),
            OpenError::PlainRefused => write!(
                f,
                "it is not encrypted, and this cluster requires its key (is the sender started without --cluster-key, or without the --tls-* files?)"
            ),
            OpenError::UnknownKey(id) => write!(
                f,
                "it is sealed with key {id}, which this node does not have (wrong or rotated cluster key, or another --tls-ca)"
            ),
            OpenError::NotAuthentic => write!(f, "it does not authenticate (forged or corrupted)"),
            OpenError::RefusedByPeer(why) => write!(f, "the peer cannot open our datagrams: {why}"),
        }
    }
}

impl std::error::Error for OpenError {}

fn checksum(payload: &[u8]) -> [u8; CHECKSUM] {
    let digest = Sha256::new()
        .chain_update(b"ra datagram")
        .chain_update(payload)
        .finalize();
    let mut sum = [0u8; CHECKSUM];
    sum.copy_from_slice(&digest[..CHECKSUM]);
    sum
}

impl Sealer {
    pub fn is_keyed(&self) -> bool {
        matches!(self, Sealer::Keyed(_))
    }

    /// Frame `payload` for the wire. `nonce` must be fresh random bytes for
    /// every datagram (24 bytes: collisions are out of reach).
    pub fn seal(&self, payload: &[u8], nonce: [u8; NONCE]) -> Vec<u8> {
        match self {
            Sealer::Plain => {
                let mut out = Vec::with_capacity(1 + payload.len() + CHECKSUM);
                out.push(PLAIN);
                out.extend_from_slice(payload);
                out.extend_from_slice(&checksum(payload));
                out
            }
            Sealer::Keyed(ring) => {
                let Some(key) = ring.primary() else {
                    return Vec::new();
                };
                let mut header = [0u8; 1 + KEY_ID];
                header[0] = KEYED;
                header[1..].copy_from_slice(&key.id);
                let sealed = key.cipher.encrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: payload,
                        aad: &header,
                    },
                );
                // Encryption of an in-memory buffer cannot fail (the length is
                // far below the cipher's limit); an empty frame is dropped by
                // every receiver as too short.
                let Ok(sealed) = sealed else {
                    return Vec::new();
                };
                let mut out = Vec::with_capacity(header.len() + NONCE + sealed.len());
                out.extend_from_slice(&header);
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                out
            }
        }
    }

    /// Unwrap a datagram from the wire.
    pub fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (&format, rest) = datagram.split_first().ok_or(OpenError::TooShort)?;
        match (format, self) {
            (PLAIN, Sealer::Plain) => {
                if rest.len() < CHECKSUM {
                    return Err(OpenError::TooShort);
                }
                let (payload, sum) = rest.split_at(rest.len() - CHECKSUM);
                if checksum(payload) != sum {
                    return Err(OpenError::Corrupted);
                }
                Ok(payload.to_vec())
            }
            (PLAIN, Sealer::Keyed(_)) => Err(OpenError::PlainRefused),
            (KEYED, Sealer::Plain) => Err(OpenError::KeyedButNoKey),
            (KEYED, Sealer::Keyed(ring)) => {
                if rest.len() < KEY_ID + NONCE + TAG {
                    return Err(OpenError::TooShort);
                }
                let (id, rest) = rest.split_at(KEY_ID);
                let (nonce, sealed) = rest.split_at(NONCE);
                let key = ring.by_id(id).ok_or_else(|| {
                    OpenError::UnknownKey(id.iter().map(|b| format!("{b:02x}")).collect())
                })?;
                let mut nonce_bytes = [0u8; NONCE];
                nonce_bytes.copy_from_slice(nonce);
                key.cipher
                    .decrypt(
                        &XNonce::from(nonce_bytes),
                        Payload {
                            msg: sealed,
                            aad: &datagram[..1 + KEY_ID],
                        },
                    )
                    .map_err(|_| OpenError::NotAuthentic)
            }
            (REFUSAL, _) => Err(OpenError::RefusedByPeer(match rest {
                [1] => Refusal::KeyRequired,
                [2] => Refusal::NoKeyThere,
                [3, id @ ..] if id.len() == KEY_ID => {
                    Refusal::OtherKey(id.iter().map(|b| format!("{b:02x}")).collect())
                }
                _ => return Err(OpenError::UnknownFormat(REFUSAL)),
            })),
            (other, _) => Err(OpenError::UnknownFormat(other)),
        }
    }

    /// The notice to send back for a datagram that failed to open for want
    /// of the right key (none for corruption, or a notice itself).
    pub fn refusal_notice(&self, error: &OpenError) -> Option<Vec<u8>> {
        match (error, self) {
            (OpenError::PlainRefused, _) => Some(vec![REFUSAL, 1]),
            (OpenError::KeyedButNoKey, _) => Some(vec![REFUSAL, 2]),
            (OpenError::UnknownKey(_), Sealer::Keyed(ring)) => {
                let mut notice = vec![REFUSAL, 3];
                notice.extend_from_slice(&ring.primary()?.id);
                Some(notice)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fill: u8) -> Key {
        Key::new([fill; KEY_BYTES])
    }

    fn keyed(keys: &[u8]) -> Sealer {
        Sealer::Keyed(Keyring::new(keys.iter().map(|k| key(*k)).collect()).expect("keys"))
    }

    #[test]
    fn plain_frames_round_trip_and_catch_every_single_bit_flip() {
        let payload = b"a SWIM datagram".to_vec();
        let sealed = Sealer::Plain.seal(&payload, [0; NONCE]);
        assert_eq!(Sealer::Plain.open(&sealed), Ok(payload));
        for bit in 0..sealed.len() * 8 {
            let mut flipped = sealed.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                Sealer::Plain.open(&flipped).is_err(),
                "bit {bit} went unnoticed"
            );
        }
        assert_eq!(Sealer::Plain.open(&sealed[..4]), Err(OpenError::TooShort));
        assert_eq!(Sealer::Plain.open(&[]), Err(OpenError::TooShort));
    }

    #[test]
    fn keyed_frames_need_a_key_of_the_ring() {
        let payload = b"a SWIM datagram".to_vec();
        let sender = keyed(&[1]);
        let sealed = sender.seal(&payload, [7; NONCE]);
        assert_ne!(&sealed[1 + KEY_ID + NONCE..], &payload[..], "encrypted");
        assert_eq!(sender.open(&sealed), Ok(payload.clone()));
        // A ring that also has the key opens it (rotation: new key installed).
        assert_eq!(keyed(&[2, 1]).open(&sealed), Ok(payload.clone()));
        // The wrong key, no key, or plain in a keyed cluster: refused, and why.
        assert!(matches!(
            keyed(&[2]).open(&sealed),
            Err(OpenError::UnknownKey(_))
        ));
        assert_eq!(Sealer::Plain.open(&sealed), Err(OpenError::KeyedButNoKey));
        let plain = Sealer::Plain.seal(&payload, [0; NONCE]);
        assert_eq!(sender.open(&plain), Err(OpenError::PlainRefused));
        // Any flipped bit, in the header, the nonce or the body, fails.
        for bit in 0..sealed.len() * 8 {
            let mut flipped = sealed.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(sender.open(&flipped).is_err(), "bit {bit} went unnoticed");
        }
    }

    #[test]
    fn a_refused_sender_hears_why() {
        let (plain, ours, theirs) = (Sealer::Plain, keyed(&[1]), keyed(&[2]));
        let cases = [
            (&plain, &ours, Refusal::KeyRequired),
            (&ours, &plain, Refusal::NoKeyThere),
            (&theirs, &ours, Refusal::OtherKey(key(1).id())),
        ];
        for (sender, receiver, expected) in cases {
            let error = receiver
                .open(&sender.seal(b"x", [0; NONCE]))
                .expect_err("refused");
            let notice = receiver.refusal_notice(&error).expect("a notice");
            assert_eq!(
                sender.open(&notice),
                Err(OpenError::RefusedByPeer(expected))
            );
            // A notice never calls for a notice.
            assert_eq!(
                receiver.refusal_notice(&OpenError::RefusedByPeer(Refusal::NoKeyThere)),
                None
            );
        }
        assert_eq!(plain.refusal_notice(&OpenError::Corrupted), None);
    }

    #[test]
    fn the_first_key_seals() {
        let ring = keyed(&[3, 4]);
        let sealed = ring.seal(b"x", [0; NONCE]);
        assert_eq!(&sealed[1..1 + KEY_ID], &key(3).id);
        assert_eq!(keyed(&[4, 3]).open(&sealed), Ok(b"x".to_vec()));
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let text = format!("{:?}", key(0xAB));
        assert!(!text.contains("ab, ab") && !text.contains("171"), "{text}");
    }
}
