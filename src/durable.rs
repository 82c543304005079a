//! What a node keeps on disk with `--data-dir`, and its file format.
//!
//! The state is what a restarted node needs so that no fence it, or the cluster
//! it was in, hands out after a restart is below one handed out before: the
//! cluster's identity and the last active set this node installed, the highest
//! epoch it has known, and the highest fence of each lock it has known in that
//! epoch (fences of earlier epochs are all below `(epoch, 0)` and need no line).
//!
//! Pure: encoding and checking only. The node hands the state out as
//! `Output::Persist`; the shell (`runtime::data_dir`) writes it with fsync
//! before it sends anything that follows. A file read back is outside input:
//! its length and checksum are checked, then every number is bounded as the
//! wire bounds it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::protocol::active_set::ActiveSet;
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::{Fence, LockName, MAX_FENCE_EPOCH};

/// The first word of the file, and the format version after it.
const MAGIC: &str = "ra-state";
pub const VERSION: u32 = 1;
/// A state file larger than this is refused unread (a million lock names of
/// 200 bytes fit well below it).
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// Most locks a state file may list.
pub const MAX_FENCES: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurableState {
    /// The advertised address of the node that keeps it: a data directory
    /// belongs to one node (recovery counts members by address).
    pub node: SocketAddr,
    /// The last active set this node installed (its `cluster` is the cluster's
    /// identity).
    pub set: ActiveSet,
    /// The highest epoch this node has known: the set's, or a fence's learned
    /// through a member while this node was a spectator.
    pub epoch: u64,
    /// The highest fence of each lock known in `epoch`.
    pub fences: BTreeMap<LockName, Fence>,
}

/// The body of the file, as JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    node: SocketAddr,
    cluster: ProcessId,
    set_epoch: u64,
    max_active: u32,
    members: Vec<ProcessId>,
    epoch: u64,
    /// Lock name to fencing token (`epoch << 40 | seq`).
    fences: BTreeMap<LockName, u64>,
}

impl DurableState {
    /// The state after installing `set`, keeping what is still above it.
    pub fn new(node: SocketAddr, set: ActiveSet) -> Self {
        Self {
            node,
            epoch: set.epoch,
            set,
            fences: BTreeMap::new(),
        }
    }

    /// Note a set this node installed; true if the state changed.
    pub fn note_set(&mut self, set: &ActiveSet) -> bool {
        if self.set == *set {
            return false;
        }
        self.set = set.clone();
        self.raise_epoch(set.epoch);
        true
    }

    /// Note a fence handed to a client of this node; true if the state changed.
    pub fn note_fence(&mut self, lock: &LockName, fence: Fence) -> bool {
        if fence.epoch < self.epoch {
            return false;
        }
        self.raise_epoch(fence.epoch);
        match self.fences.get_mut(lock) {
            Some(known) if *known >= fence => false,
            Some(known) => {
                *known = fence;
                true
            }
            None => {
                self.fences.insert(lock.clone(), fence);
                true
            }
        }
    }

    fn raise_epoch(&mut self, epoch: u64) {
        if epoch > self.epoch {
            self.epoch = epoch;
            // Every fence of an earlier epoch is below any of this one.
            self.fences.retain(|_, f| f.epoch >= epoch);
        }
    }

    /// The file's bytes: a header line with the version, the body's length and
    /// its SHA-256, then the body.
    pub fn encode(&self) -> Vec<u8> {
        let stored = Stored {
            node: self.node,
            cluster: self.set.cluster,
            set_epoch: self.set.epoch,
            max_active: self.set.max_active,
            members: self.set.members.clone(),
            epoch: self.epoch,
            fences: self
                .fences
                .iter()
                .filter_map(|(name, fence)| Some((name.clone(), fence.token()?)))
                .collect(),
        };
        // Serializing plain data to a Vec cannot fail.
        let body = serde_json::to_vec(&stored).unwrap_or_default();
        let mut header = format!("{MAGIC} {VERSION} {} ", body.len());
        for byte in Sha256::digest(&body) {
            let _ = write!(header, "{byte:02x}");
        }
        header.push('\n');
        let mut bytes = header.into_bytes();
        bytes.extend_from_slice(&body);
        bytes.push(b'\n');
        bytes
    }

    /// Read a file's bytes back; every error says what is wrong with it.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(format!("it is larger than {MAX_FILE_BYTES} bytes"));
        }
        let newline = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("it has no header line")?;
        let header =
            std::str::from_utf8(&bytes[..newline]).map_err(|_| "its header is not text")?;
        let fields: Vec<&str> = header.split(' ').collect();
        let [magic, version, length, checksum] = fields[..] else {
            return Err("its header is not `ra-state VERSION LENGTH SHA256`".into());
        };
        if magic != MAGIC {
            return Err("it is not an ra state file".into());
        }
        if version != VERSION.to_string() {
            return Err(format!(
                "it has format version {version:.10}, and this ra reads version {VERSION}"
            ));
        }
        let length: usize = length
            .parse()
            .map_err(|_| format!("its length {length:.20} is not a number"))?;
        let rest = &bytes[newline + 1..];
        // The body, then the newline that ends the file.
        if rest.len() != length.saturating_add(1) || rest.last() != Some(&b'\n') {
            return Err(format!(
                "its body is {} bytes, and the header says {length} (a torn or truncated write?)",
                rest.len().saturating_sub(1)
            ));
        }
        let body = &rest[..length];
        let mut digest = String::new();
        for byte in Sha256::digest(body) {
            let _ = write!(digest, "{byte:02x}");
        }
        if digest != checksum {
            return Err("its checksum does not match its contents (corrupted)".into());
        }
        let stored: Stored =
            serde_json::from_slice(body).map_err(|e| format!("its contents do not parse: {e}"))?;
        let set = ActiveSet {
            cluster: stored.cluster,
            epoch: stored.set_epoch,
            max_active: stored.max_active,
            members: stored.members,
        };
        set.check()
            .map_err(|e| format!("its active set is not one a cluster could decide: {e}"))?;
        if !(set.epoch..=MAX_FENCE_EPOCH).contains(&stored.epoch) {
            return Err(format!(
                "its epoch {} is below its set's ({}) or above the last a fence can carry",
                stored.epoch, set.epoch
            ));
        }
        if stored.fences.len() > MAX_FENCES {
            return Err(format!("it lists more than {MAX_FENCES} locks"));
        }
        let mut fences = BTreeMap::new();
        for (name, token) in stored.fences {
            let fence = Fence::from_token(token);
            if fence.epoch != stored.epoch || fence.seq == 0 {
                return Err(format!(
                    "the fence {token} of lock {name} is not of its epoch {}",
                    stored.epoch
                ));
            }
            fences.insert(name, fence);
        }
        Ok(Self {
            node: stored.node,
            set,
            epoch: stored.epoch,
            fences,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(port: u16) -> ProcessId {
        ProcessId::new(format!("127.0.0.1:{port}").parse().expect("addr"), 10)
    }

    fn state() -> DurableState {
        let mut s = DurableState::new(
            pid(1).addr,
            ActiveSet {
                cluster: pid(1),
                epoch: 4,
                max_active: 3,
                members: vec![pid(1), pid(2), pid(3)],
            },
        );
        let lock = LockName::new("jobs").expect("name");
        assert!(s.note_fence(&lock, Fence { epoch: 4, seq: 9 }));
        assert!(!s.note_fence(&lock, Fence { epoch: 4, seq: 3 }), "lower");
        assert!(!s.note_fence(&lock, Fence { epoch: 3, seq: 99 }), "older");
        s
    }

    #[test]
    fn a_state_reads_back_as_written() {
        let s = state();
        assert_eq!(DurableState::decode(&s.encode()), Ok(s));
    }

    #[test]
    fn a_newer_epoch_drops_the_fences_below_it() {
        let mut s = state();
        let next = s.set.successor(vec![pid(1), pid(2)]).expect("room");
        assert!(s.note_set(&next));
        assert_eq!(s.epoch, 5);
        assert!(s.fences.is_empty());
        assert!(!s.note_set(&next), "the same set again changes nothing");
    }

    #[test]
    fn every_damage_is_refused_with_a_reason() {
        let good = state().encode();
        let mut flipped = good.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x01;
        let torn = &good[..good.len() - 5];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "no header"),
            (b"hello\n{}\n".to_vec(), "header"),
            (flipped, "checksum"),
            (torn.to_vec(), "truncated"),
            (
                String::from_utf8_lossy(&good)
                    .replacen("ra-state 1", "ra-state 9", 1)
                    .into_bytes(),
                "version 9",
            ),
        ];
        for (bytes, why) in cases {
            let error = DurableState::decode(&bytes).expect_err(why);
            assert!(error.contains(why), "{why}: {error}");
        }
    }

    /// A file whose checksum is right but whose numbers are not (written by
    /// hand, or by a bug) is refused like a bad message.
    #[test]
    fn numbers_are_bounded_like_wire_input() {
        let reseal = |body: &str| {
            let mut header = format!("{MAGIC} {VERSION} {} ", body.len());
            for byte in Sha256::digest(body.as_bytes()) {
                let _ = write!(header, "{byte:02x}");
            }
            format!("{header}\n{body}\n").into_bytes()
        };
        let members = r#"["127.0.0.1:1~10"]"#;
        let bad = [
            // An epoch no fence can carry.
            format!(
                r#"{{"node":"127.0.0.1:1","cluster":"127.0.0.1:1~10","set_epoch":1,"max_active":3,"members":{members},"epoch":{},"fences":{{}}}}"#,
                MAX_FENCE_EPOCH + 1
            ),
            // The known epoch below the set's.
            format!(
                r#"{{"node":"127.0.0.1:1","cluster":"127.0.0.1:1~10","set_epoch":5,"max_active":3,"members":{members},"epoch":4,"fences":{{}}}}"#
            ),
            // A fence of another epoch.
            format!(
                r#"{{"node":"127.0.0.1:1","cluster":"127.0.0.1:1~10","set_epoch":1,"max_active":3,"members":{members},"epoch":1,"fences":{{"a":{}}}}}"#,
                (7u64 << 40) | 1
            ),
            // More members than seats.
            r#"{"node":"127.0.0.1:1","cluster":"127.0.0.1:1~10","set_epoch":1,"max_active":1,"members":["127.0.0.1:1~10","127.0.0.1:2~10"],"epoch":1,"fences":{}}"#.to_string(),
            // A lock name with a control character.
            format!(
                r#"{{"node":"127.0.0.1:1","cluster":"127.0.0.1:1~10","set_epoch":1,"max_active":3,"members":{members},"epoch":1,"fences":{{"a\nb":{}}}}}"#,
                (1u64 << 40) | 1
            ),
            // A field this version does not know.
            format!(
                r#"{{"node":"127.0.0.1:1","cluster":"127.0.0.1:1~10","set_epoch":1,"max_active":3,"members":{members},"epoch":1,"fences":{{}},"extra":1}}"#
            ),
        ];
        for body in bad {
            assert!(
                DurableState::decode(&reseal(&body)).is_err(),
                "accepted {body}"
            );
        }
        let fine = format!(
            r#"{{"node":"127.0.0.1:1","cluster":"127.0.0.1:1~10","set_epoch":1,"max_active":3,"members":{members},"epoch":1,"fences":{{"a":{}}}}}"#,
            (1u64 << 40) | 1
        );
        assert!(DurableState::decode(&reseal(&fine)).is_ok());
    }
}
