//! Named locks and their fencing tokens.
//!
//! Every lock name runs its own Ricart–Agrawala instance; a name is checked once,
//! where it comes in (the API, the command line, the wire), and is a plain value
//! after that.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The lock the interactive Enter and `--requests` use.
pub const DEFAULT_LOCK: &str = "default";

/// A validated lock name: 1 to [`LockName::MAX_BYTES`] bytes of UTF-8 without
/// control characters (names end up in log lines and terminal output, where a
/// newline or an escape sequence would forge or garble them). Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LockName(Arc<str>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockNameError {
    Empty,
    TooLong { bytes: usize },
    ControlCharacter { at: usize },
}

impl fmt::Display for LockNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockNameError::Empty => write!(f, "a lock name cannot be empty"),
            LockNameError::TooLong { bytes } => write!(
                f,
                "a lock name is at most {} bytes of UTF-8; this one has {bytes}",
                LockName::MAX_BYTES
            ),
            LockNameError::ControlCharacter { at } => write!(
                f,
                "a lock name cannot contain control characters (one at byte {at})"
            ),
        }
    }
}

impl std::error::Error for LockNameError {}

impl LockName {
    pub const MAX_BYTES: usize = 200;

    pub fn new(name: &str) -> Result<Self, LockNameError> {
        if name.is_empty() {
            return Err(LockNameError::Empty);
        }
        if name.len() > Self::MAX_BYTES {
            return Err(LockNameError::TooLong { bytes: name.len() });
        }
        if let Some((at, _)) = name.char_indices().find(|(_, c)| c.is_control()) {
            return Err(LockNameError::ControlCharacter { at });
        }
        Ok(Self(Arc::from(name)))
    }

    pub fn default_lock() -> Self {
        Self(Arc::from(DEFAULT_LOCK))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LockName {
    type Error = LockNameError;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::new(&name)
    }
}

impl From<LockName> for String {
    fn from(name: LockName) -> Self {
        name.0.to_string()
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// Bits of the token that hold the sequence within an epoch.
pub const FENCE_SEQ_BITS: u32 = 40;
/// The largest sequence one epoch can hand out: 2^40 - 1 entries, about 1.7
/// years at 20,000 entries a second on one lock.
pub const MAX_FENCE_SEQ: u64 = (1 << FENCE_SEQ_BITS) - 1;
/// The largest epoch a token can carry (2^24 - 1). The active set never moves
/// past it (see `ActiveSet::successor`).
pub const MAX_FENCE_EPOCH: u64 = (1 << (64 - FENCE_SEQ_BITS)) - 1;

/// The fencing token of one entry into one lock: entries of a later epoch come
/// after every entry of an earlier one, and within an epoch each entry learns its
/// predecessor's sequence from the replies that let it in.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Debug, Hash, Serialize, Deserialize,
)]
#[serde(into = "FenceFields", from = "FenceFields")]
pub struct Fence {
    pub epoch: u64,
    pub seq: u64,
}

/// How a fence reads in the JSON log: the pair, and the token a resource sees.
#[derive(Serialize, Deserialize)]
struct FenceFields {
    epoch: u64,
    seq: u64,
    #[serde(default, skip_deserializing)]
    token: Option<u64>,
}

impl From<Fence> for FenceFields {
    fn from(f: Fence) -> Self {
        Self {
            epoch: f.epoch,
            seq: f.seq,
            token: f.token(),
        }
    }
}

impl From<FenceFields> for Fence {
    fn from(f: FenceFields) -> Self {
        Self {
            epoch: f.epoch,
            seq: f.seq,
        }
    }
}

impl Fence {
    /// The pair as one number that orders like the pair: `epoch << 40 | seq`.
    /// `None` outside the representable range, which the protocol never reaches.
    pub fn token(&self) -> Option<u64> {
        (self.epoch <= MAX_FENCE_EPOCH && self.seq <= MAX_FENCE_SEQ)
            .then_some((self.epoch << FENCE_SEQ_BITS) | self.seq)
    }

    pub fn from_token(token: u64) -> Self {
        Self {
            epoch: token >> FENCE_SEQ_BITS,
            seq: token & MAX_FENCE_SEQ,
        }
    }

    /// The next entry's fence in this epoch, if the epoch has room for one.
    pub fn next(&self) -> Option<Fence> {
        (self.seq < MAX_FENCE_SEQ).then_some(Fence {
            epoch: self.epoch,
            seq: self.seq + 1,
        })
    }
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.token() {
            Some(token) => write!(f, "{token}"),
            None => write!(f, "(epoch {}, seq {})", self.epoch, self.seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(LockName::new("nightly-backup").is_ok());
        assert!(LockName::new("données/été ✓").is_ok(), "any UTF-8");
        assert_eq!(LockName::new(""), Err(LockNameError::Empty));
        let long = "x".repeat(LockName::MAX_BYTES + 1);
        assert_eq!(
            LockName::new(&long),
            Err(LockNameError::TooLong {
                bytes: LockName::MAX_BYTES + 1
            })
        );
        assert!(LockName::new(&"é".repeat(LockName::MAX_BYTES / 2)).is_ok());
        assert_eq!(
            LockName::new("a\nb"),
            Err(LockNameError::ControlCharacter { at: 1 })
        );
        assert!(LockName::new("a\u{1b}[31m").is_err());
    }

    #[test]
    fn names_survive_serde_and_refuse_bad_input() {
        let name = LockName::new("jobs").expect("valid");
        let json = serde_json::to_string(&name).expect("serialize");
        assert_eq!(json, "\"jobs\"");
        assert_eq!(serde_json::from_str::<LockName>(&json).expect("back"), name);
        assert!(serde_json::from_str::<LockName>("\"\"").is_err());
    }

    /// Today's rule must not repeat the old one's collision: with `epoch *
    /// 1_000_000 + seq`, Fence{2, 1_000_001} and Fence{3, 1} gave one token.
    #[test]
    fn tokens_order_like_the_pairs_up_to_the_edge() {
        let old_collision = (
            Fence {
                epoch: 2,
                seq: 1_000_001,
            },
            Fence { epoch: 3, seq: 1 },
        );
        let (a, b) = old_collision;
        assert!(a.token() < b.token());
        let last_of_epoch = Fence {
            epoch: 2,
            seq: MAX_FENCE_SEQ,
        };
        let first_of_next = Fence { epoch: 3, seq: 1 };
        let (last, first) = (
            last_of_epoch.token().expect("in range"),
            first_of_next.token().expect("in range"),
        );
        assert!(last < first, "{last} vs {first}");
        assert_eq!(Fence::from_token(last), last_of_epoch);
        assert_eq!(Fence::from_token(first), first_of_next);
        // One past the edge has no token, and no next entry.
        assert_eq!(
            Fence {
                epoch: 2,
                seq: MAX_FENCE_SEQ + 1
            }
            .token(),
            None
        );
        assert_eq!(last_of_epoch.next(), None);
        let top = Fence {
            epoch: MAX_FENCE_EPOCH,
            seq: MAX_FENCE_SEQ,
        };
        assert_eq!(top.token(), Some(u64::MAX));
        assert_eq!(
            Fence {
                epoch: MAX_FENCE_EPOCH + 1,
                seq: 0
            }
            .token(),
            None
        );
    }

    #[test]
    fn at_least_two_to_the_forty_entries_per_epoch() {
        let mut previous = None;
        for seq in [0, 1, 1 << 20, (1 << 40) - 2, (1 << 40) - 1] {
            let token = Fence { epoch: 7, seq }.token().expect("in range");
            assert!(previous < Some(token));
            previous = Some(token);
        }
    }
}
