//! Custom broadcasts piggybacked on SWIM: a process's intent to leave (so peers
//! log "left", not "failed") and decided active sets (so spectators learn them).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, Sender, channel};

use serde::{Deserialize, Serialize};

use crate::membership::identity::MemberId;
use crate::protocol::active_set::ActiveSet;
use crate::protocol::ids::ProcessId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gossip {
    Leaving(ProcessId),
    ActiveSet(ActiveSet),
}

impl Gossip {
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }
}

/// What foca uses to decide which broadcast replaces which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GossipKey {
    Leaving(ProcessId),
    ActiveSet { cluster: ProcessId, epoch: u64 },
}

impl foca::Invalidates for GossipKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (GossipKey::Leaving(a), GossipKey::Leaving(b)) => a == b,
            (
                GossipKey::ActiveSet { cluster, epoch },
                GossipKey::ActiveSet {
                    cluster: other_cluster,
                    epoch: other_epoch,
                },
            ) => cluster == other_cluster && epoch >= other_epoch,
            _ => false,
        }
    }
}

#[derive(Debug)]
pub struct MalformedGossip(String);

impl std::fmt::Display for MalformedGossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed gossip item: {}", self.0)
    }
}

impl std::error::Error for MalformedGossip {}

/// Keeps what is new and hands it to the node; stale items stop spreading.
///
/// foca owns the handler and offers no way back to it, so new items leave
/// through a channel whose receiving end the node drains after each foca call.
pub struct GossipHandler {
    newest_epoch: BTreeMap<ProcessId, u64>,
    leaving: BTreeSet<ProcessId>,
    inbox: Sender<Gossip>,
}

impl GossipHandler {
    pub fn new() -> (Self, Receiver<Gossip>) {
        let (inbox, received) = channel();
        let handler = Self {
            newest_epoch: BTreeMap::new(),
            leaving: BTreeSet::new(),
            inbox,
        };
        (handler, received)
    }
}

impl foca::BroadcastHandler<MemberId> for GossipHandler {
    type Key = GossipKey;
    type Error = MalformedGossip;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&MemberId>,
    ) -> Result<Option<GossipKey>, MalformedGossip> {
        let item: Gossip =
            postcard::from_bytes(data).map_err(|e| MalformedGossip(e.to_string()))?;
        // Checked like a set from the wire: one that no decision could have
        // made (say, epoch 2^64 - 1) must not reach the node.
        if let Gossip::ActiveSet(set) = &item {
            set.check().map_err(|why| {
                MalformedGossip(format!("active set of epoch {}: {why}", set.epoch))
            })?;
        }
        let local = sender.is_none();
        let key = match &item {
            Gossip::Leaving(process) => {
                if !self.leaving.insert(*process) && !local {
                    return Ok(None);
                }
                GossipKey::Leaving(*process)
            }
            Gossip::ActiveSet(set) => {
                let newest = self.newest_epoch.entry(set.cluster).or_insert(0);
                if set.epoch <= *newest && !local {
                    return Ok(None);
                }
                *newest = (*newest).max(set.epoch);
                GossipKey::ActiveSet {
                    cluster: set.cluster,
                    epoch: set.epoch,
                }
            }
        };
        if !local {
            // The node owns the receiver for as long as foca lives.
            let _ = self.inbox.send(item);
        }
        Ok(Some(key))
    }
}
