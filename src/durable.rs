//! What a node keeps on disk with `--data-dir`, and its file format.
//!
//! The state is what a restarted node needs so that no fence it, or the cluster
//! it was in, hands out after a restart is below one handed out before: the
//! cluster's identity and the last active set this node installed, and the
//! highest epoch it has known. That is all the restart rule (`node::recovery`)
//! uses, and the state changes only when the set or that epoch does, not on
//! every entry.
//!
//! Why no lock's fence is kept: within an epoch, the next fence of a lock is
//! one above the highest sequence the processes of that epoch's set remember,
//! and every entry of the epoch waits for a reply from each of them (counted
//! per process, incarnation included). A node that restarts is a new process
//! (its incarnation is its start time): it is in no set decided before it
//! started, so nothing it remembers, or forgets, enters an old epoch's
//! sequence, and it is seated only by a new set, whose epoch starts above every
//! fence of the earlier ones. And when the whole cluster restarts, it starts
//! again at an epoch above every epoch its members report, so above every fence
//! (README, "Why the new fences are above the old ones"). Files written before
//! this hold each lock's highest fence of their epoch; they still load (the
//! fences are checked, then dropped), and files written now carry an empty
//! list, which those versions read too.
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
/// A state file larger than this is refused unread (a file of an earlier
/// version, with a million lock names of 200 bytes, fits well below it).
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// Most locks a state file of an earlier version may list.
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
    /// Lock name to fencing token (`epoch << 40 | seq`): written empty since
    /// fences are no longer kept, read from files of earlier versions.
    fences: BTreeMap<LockName, u64>,
}

impl DurableState {
    /// The state after installing `set`.
    pub fn new(node: SocketAddr, set: ActiveSet) -> Self {
        Self {
            node,
            epoch: set.epoch,
            set,
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

    /// Note a fence handed to a client of this node (a spectator learns epochs
    /// that way too); true if it raised the highest epoch known. Its sequence
    /// is not kept (see the module's comment).
    pub fn note_fence(&mut self, fence: Fence) -> bool {
        self.raise_epoch(fence.epoch)
    }

    fn raise_epoch(&mut self, epoch: u64) -> bool {
        let raised = epoch > self.epoch;
        self.epoch = self.epoch.max(epoch);
        raised
    }

    /// The file's bytes: a header line with the version, the body's length and
    /// its SHA-256, then the body.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let stored = Stored {
            node: self.node,
            cluster: self.set.cluster,
            set_epoch: self.set.epoch,
            max_active: self.set.max_active,
            members: self.set.members.clone(),
            epoch: self.epoch,
            fences: BTreeMap::new(),
        };
        // An error here would otherwise write an empty body: the caller stops.
        let body = serde_json::to_vec(&stored)?;
        let mut header = format!("{MAGIC} {VERSION} {} ", body.len());
        for byte in Sha256::digest(&body) {
            let _ = write!(header, "{byte:02x}");
        }
        header.push('\n');
        let mut bytes = header.into_bytes();
        bytes.extend_from_slice(&body);
        bytes.push(b'\n');
        Ok(bytes)
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
        // An earlier version's fences: checked like the rest, then dropped.
        for (name, token) in stored.fences {
            let fence = Fence::from_token(token);
            if fence.epoch != stored.epoch || fence.seq == 0 {
                return Err(format!(
                    "the fence {token} of lock {name} is not of its epoch {}",
                    stored.epoch
                ));
            }
        }
        Ok(Self {
            node: stored.node,
            set,
            epoch: stored.epoch,
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
        // Through a member, while a spectator: a newer epoch than its set's.
        assert!(s.note_fence(Fence { epoch: 6, seq: 1 }));
        s
    }

    /// A file's bytes around `body`, as `encode` seals them.
    fn reseal(body: &str) -> Vec<u8> {
        let mut header = format!("{MAGIC} {VERSION} {} ", body.len());
        for byte in Sha256::digest(body.as_bytes()) {
            let _ = write!(header, "{byte:02x}");
        }
        format!("{header}\n{body}\n").into_bytes()
    }

    #[test]
    fn a_state_reads_back_as_written() {
        let s = state();
        assert_eq!(s.epoch, 6);
        assert_eq!(DurableState::decode(&s.encode().expect("encode")), Ok(s));
    }

    /// An entry writes nothing: only a new set, or a fence of a newer epoch
    /// than any known, changes what is kept.
    #[test]
    fn only_a_new_set_or_a_newer_epoch_changes_the_state() {
        let mut s = state();
        let before = s.clone();
        for seq in 1..100 {
            assert!(!s.note_fence(Fence { epoch: 6, seq }), "an entry");
            assert!(!s.note_fence(Fence { epoch: 3, seq }), "an older epoch");
        }
        assert_eq!(s, before);
        let next = s.set.successor(vec![pid(1), pid(2)]).expect("room");
        assert!(s.note_set(&next));
        assert_eq!(s.epoch, 6, "a set below the epoch known keeps it");
        assert!(!s.note_set(&next), "the same set again changes nothing");
        assert!(s.note_fence(Fence { epoch: 7, seq: 3 }));
        assert_eq!(s.epoch, 7);
    }

    /// Files of earlier versions list each lock's highest fence: they still
    /// load (checked, then dropped), and what is written now lists none, which
    /// those versions read too.
    #[test]
    fn a_file_with_fences_from_an_earlier_version_still_loads() {
        let members = r#"["127.0.0.1:1~10","127.0.0.1:2~10"]"#;
        let old = format!(
            r#"{{"node":"127.0.0.1:1","cluster":"127.0.0.1:1~10","set_epoch":2,"max_active":3,"members":{members},"epoch":3,"fences":{{"jobs":{},"backup":{}}}}}"#,
            (3u64 << 40) | 41,
            (3u64 << 40) | 7
        );
        let s = DurableState::decode(&reseal(&old)).expect("an earlier version's file");
        assert_eq!((s.set.epoch, s.epoch), (2, 3));
        assert_eq!(s.set.members.len(), 2);
        let written = String::from_utf8(s.encode().expect("encode")).expect("text");
        assert!(written.contains(r#""fences":{}"#), "{written}");
        assert_eq!(DurableState::decode(written.as_bytes()), Ok(s));
    }

    #[test]
    fn every_damage_is_refused_with_a_reason() {
        let good = state().encode().expect("encode");
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
