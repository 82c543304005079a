//! Custom broadcasts piggybacked on SWIM: a process's intent to leave (so peers
//! log "left", not "failed") and decided active sets (so spectators learn them).

use std::collections::{BTreeSet, VecDeque};
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

/// Leave notices remembered, to spread each once: the oldest is forgotten
/// first, so forged notices cannot grow this (a forgotten one that comes back
/// is only spread once more).
pub const MAX_LEAVING_REMEMBERED: usize = 256;

/// Hands what arrives to the node, and decides what spreads further.
///
/// Active sets are never judged here: the handler cannot tell a decided set
/// from a forged one, and an epoch it remembered from a forgery made it drop
/// every later, lower one (the node never heard of its own cluster again). So
/// every set goes to the node, none is spread from here, and the node spreads
/// the sets it adopts (`Node::install` broadcasts them).
///
/// foca owns the handler and offers no way back to it, so new items leave
/// through a channel whose receiving end the node drains after each foca call.
pub struct GossipHandler {
    leaving: BTreeSet<ProcessId>,
    leaving_order: VecDeque<ProcessId>,
    inbox: Sender<Gossip>,
}

impl GossipHandler {
    pub fn new() -> (Self, Receiver<Gossip>) {
        let (inbox, received) = channel();
        let handler = Self {
            leaving: BTreeSet::new(),
            leaving_order: VecDeque::new(),
            inbox,
        };
        (handler, received)
    }

    /// Remember a leave notice; false if it was already known.
    fn remember_leaving(&mut self, process: ProcessId) -> bool {
        if !self.leaving.insert(process) {
            return false;
        }
        self.leaving_order.push_back(process);
        while self.leaving_order.len() > MAX_LEAVING_REMEMBERED {
            if let Some(oldest) = self.leaving_order.pop_front() {
                self.leaving.remove(&oldest);
            }
        }
        true
    }

    /// How many leave notices are remembered (for tests of the bound).
    pub fn leaving_remembered(&self) -> usize {
        self.leaving.len()
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
                if !self.remember_leaving(*process) && !local {
                    return Ok(None);
                }
                Some(GossipKey::Leaving(*process))
            }
            // Ours (from `Node::install`) spreads; another's goes to the node,
            // which spreads it if it adopts it.
            Gossip::ActiveSet(set) => local.then_some(GossipKey::ActiveSet {
                cluster: set.cluster,
                epoch: set.epoch,
            }),
        };
        if !local {
            // The node owns the receiver for as long as foca lives.
            let _ = self.inbox.send(item);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::BroadcastHandler;

    fn process(port: u16) -> ProcessId {
        ProcessId::new(format!("127.0.0.1:{port}").parse().expect("addr"), 1)
    }

    /// Regression: every forged leave notice was remembered for good.
    #[test]
    fn leave_notices_are_remembered_within_a_bound_and_spread_once() {
        let (mut handler, received) = GossipHandler::new();
        let sender = MemberId::new(process(9));
        for port in 10_000..12_000u16 {
            let item = Gossip::Leaving(process(port)).encode().expect("encodes");
            let spread = handler.receive_item(&item, Some(&sender)).expect("valid");
            assert!(spread.is_some(), "a new notice spreads");
        }
        assert!(handler.leaving_remembered() <= MAX_LEAVING_REMEMBERED);
        assert_eq!(
            received.try_iter().count(),
            2000,
            "the node hears every one"
        );
        // A recent notice heard again is not spread again.
        let again = Gossip::Leaving(process(11_999)).encode().expect("encodes");
        assert!(
            handler
                .receive_item(&again, Some(&sender))
                .expect("valid")
                .is_none()
        );
    }

    /// Another's active set goes to the node and is not spread from here, so
    /// nothing the node refused can shadow what comes later.
    #[test]
    fn active_sets_go_to_the_node_and_only_ours_spread() {
        let (mut handler, received) = GossipHandler::new();
        let set = |epoch| ActiveSet {
            cluster: process(1),
            epoch,
            max_active: 3,
            members: vec![process(1)],
        };
        let sender = MemberId::new(process(9));
        for epoch in [1_000, 2] {
            let item = Gossip::ActiveSet(set(epoch)).encode().expect("encodes");
            assert!(
                handler
                    .receive_item(&item, Some(&sender))
                    .expect("valid")
                    .is_none()
            );
        }
        let epochs: Vec<u64> = received
            .try_iter()
            .filter_map(|g| match g {
                Gossip::ActiveSet(s) => Some(s.epoch),
                Gossip::Leaving(_) => None,
            })
            .collect();
        assert_eq!(
            epochs,
            vec![1_000, 2],
            "the lower epoch after a higher one still arrives"
        );
        let ours = Gossip::ActiveSet(set(3)).encode().expect("encodes");
        assert!(handler.receive_item(&ours, None).expect("valid").is_some());
    }
}
