//! Micro-benchmarks of the sans-IO core, so a slowdown shows:
//!
//! - `ricart_agrawala`: the algorithm alone (grant, defer, the replies that let
//!   a request in);
//! - `node`: a whole `Node::handle` of a Request and of a Reply, as the shell calls
//!   it, outputs drained;
//! - `membership`: choosing the next active set, a Paxos round that decides it,
//!   and a Request through the wire format and back.
//!
//! `cargo bench --bench core`; `cargo bench --bench core -- node` runs one group.

use std::net::SocketAddr;
use std::time::Duration;

use divan::{Bencher, black_box};
use ra::node::{Input, Node, NodeSettings};
use ra::protocol::active_set::ActiveSet;
use ra::protocol::ids::ProcessId;
use ra::protocol::lock::LockName;
use ra::protocol::message::{Body, Envelope, LockRequest};
use ra::protocol::paxos::{Acceptor, Ballot, Proposal, ProposalStep, Vote};
use ra::protocol::ricart_agrawala::{Decision, DeferredRequest, Grant, RicartAgrawala, State};

fn main() {
    divan::main();
}

/// Ports of the three members of the active set; B is the node under test.
const A: u16 = 7001;
const B: u16 = 7002;
const C: u16 = 7003;
const EPOCH: u64 = 7;

fn pid(port: u16) -> ProcessId {
    ProcessId::new(SocketAddr::from(([127, 0, 0, 1], port)), 1)
}

fn active_set(ports: &[u16]) -> ActiveSet {
    ActiveSet {
        cluster: pid(ports[0]),
        epoch: EPOCH,
        max_active: 3,
        members: ports.iter().map(|p| pid(*p)).collect(),
    }
}

fn envelope(from: u16, to: u16, clock: u64, body: Body) -> Envelope {
    Envelope {
        from: pid(from),
        to: pid(to),
        clock,
        body,
    }
}

fn request(from: u16, timestamp: u64) -> Envelope {
    envelope(
        from,
        B,
        timestamp,
        Body::Request(LockRequest {
            lock: LockName::default_lock(),
            request_id: 1,
            attempt: 0,
            timestamp,
            set: active_set(&[A, B, C]),
            try_only: false,
        }),
    )
}

fn reply(from: u16) -> Envelope {
    envelope(
        from,
        B,
        10,
        Body::Reply {
            lock: LockName::default_lock(),
            grant: Grant {
                request_id: 1,
                attempt: 0,
                epoch: EPOCH,
                fence_seq: 0,
                held: Duration::ZERO,
            },
        },
    )
}

mod ricart_agrawala {
    use super::*;

    fn incoming(timestamp: u64) -> DeferredRequest {
        DeferredRequest {
            request_id: 1,
            attempt: 0,
            timestamp,
            epoch: EPOCH,
            received_at: Duration::ZERO,
        }
    }

    fn grant() -> Grant {
        Grant {
            request_id: 1,
            attempt: 0,
            epoch: EPOCH,
            fence_seq: 0,
            held: Duration::ZERO,
        }
    }

    const LEASE: Option<Duration> = Some(Duration::from_millis(900));

    /// Idle: grant at once.
    #[divan::bench]
    fn on_request_grant(bencher: Bencher) {
        let mut ra = RicartAgrawala::new(pid(B));
        bencher.bench_local(|| ra.on_request(black_box(pid(A)), black_box(incoming(9)), 10));
        assert_eq!(ra.on_request(pid(A), incoming(9), 10), Decision::Grant);
    }

    /// Waiting with an older request of our own: defer (and remember it).
    #[divan::bench]
    fn on_request_defer(bencher: Bencher) {
        let mut ra = RicartAgrawala::new(pid(B));
        ra.issue(1, 3, &active_set(&[A, B, C]), Duration::ZERO);
        bencher.bench_local(|| ra.on_request(black_box(pid(A)), black_box(incoming(9)), 10));
        assert!(matches!(
            ra.on_request(pid(A), incoming(9), 10),
            Decision::Defer(_)
        ));
    }

    /// Both replies of a three-member set, then the entry they allow.
    #[divan::bench]
    fn on_reply_and_enter(bencher: Bencher) {
        let set = active_set(&[A, B, C]);
        bencher
            .with_inputs(|| {
                let mut ra = RicartAgrawala::new(pid(B));
                ra.issue(1, 3, &set, Duration::ZERO);
                ra
            })
            .bench_local_refs(|ra| {
                ra.on_reply(pid(A), grant(), Duration::ZERO, LEASE);
                ra.on_reply(pid(C), grant(), Duration::ZERO, LEASE);
                ra.enter(Duration::ZERO)
            });
    }
}

mod node {
    use super::*;

    /// Node B, seated in the active set {A, B, C} of epoch 7 (told so by A, as a
    /// member welcomes a newcomer), its start-up outputs drained.
    fn seated() -> Node {
        let mut node = Node::new(
            pid(B),
            Vec::new(),
            NodeSettings::default(),
            42,
            Duration::ZERO,
        );
        node.handle(
            Duration::from_millis(1),
            Input::Message(envelope(
                A,
                B,
                1,
                Body::Decided {
                    set: active_set(&[A, B, C]),
                },
            )),
        );
        assert_eq!(
            node.active_set().map(|v| v.epoch),
            Some(EPOCH),
            "B adopted the set"
        );
        node.drain_outputs().for_each(drop);
        node
    }

    /// Seated and waiting for the replies to its own request #1.
    fn waiting() -> Node {
        let mut node = seated();
        node.handle(
            Duration::from_millis(2),
            Input::Acquire {
                lock: LockName::default_lock(),
                ticket: 1,
                try_only: false,
            },
        );
        assert!(
            matches!(
                node.lock_state(&LockName::default_lock()),
                Some(State::Waiting(_))
            ),
            "B requested"
        );
        node.drain_outputs().for_each(drop);
        node
    }

    fn handle(node: &mut Node, envelope: Envelope) -> usize {
        node.handle(Duration::from_millis(3), Input::Message(envelope));
        node.drain_outputs().count()
    }

    /// A request B grants: epoch check, decision, reply out.
    #[divan::bench]
    fn request_granted(bencher: Bencher) {
        let mut node = seated();
        bencher
            .with_inputs(|| request(A, 20))
            .bench_local_values(|message| handle(&mut node, message));
    }

    /// A request B defers: its own request is older.
    #[divan::bench]
    fn request_deferred(bencher: Bencher) {
        let mut node = waiting();
        bencher
            .with_inputs(|| request(A, 1_000_000))
            .bench_local_values(|message| handle(&mut node, message));
        assert!(!matches!(
            node.lock_state(&LockName::default_lock()),
            Some(State::Idle)
        ));
    }

    /// The first of two replies: counted.
    #[divan::bench]
    fn reply_counted(bencher: Bencher) {
        bencher
            .with_inputs(|| (waiting(), reply(A)))
            .bench_local_refs(|(node, message)| handle(node, message.clone()));
    }

    /// The last reply: counted, and B enters (the grant goes to the client).
    #[divan::bench]
    fn reply_enters(bencher: Bencher) {
        bencher
            .with_inputs(|| {
                let mut node = waiting();
                handle(&mut node, reply(A));
                (node, reply(C))
            })
            .bench_local_refs(|(node, message)| {
                let outputs = handle(node, message.clone());
                debug_assert!(node.lock_state(&LockName::default_lock()) != Some(&State::Idle));
                outputs
            });
    }
}

mod membership {
    use super::*;

    /// Five processes, max 3 seats: one member is gone, two spectators wait.
    #[divan::bench]
    fn desired_members(bencher: Bencher) {
        let set = active_set(&[A, B, C]);
        let candidates = [pid(7004), pid(7005)];
        bencher.bench_local(|| {
            black_box(&set).desired_members(|p| *p != pid(B), black_box(&candidates))
        });
    }

    /// A whole single-decree round among three acceptors: prepare, promises,
    /// accept, accepted, decided.
    #[divan::bench]
    fn paxos_round(bencher: Bencher) {
        let base = active_set(&[A, B, C]);
        let wanted = vec![pid(A), pid(C), pid(7004)];
        bencher.bench_local(|| {
            let ballot = Ballot {
                round: 1,
                proposer: pid(A),
            };
            let mut proposal = Proposal::new(base.clone(), ballot, wanted.clone(), Duration::ZERO);
            let mut acceptors: Vec<(ProcessId, Acceptor)> = base
                .members
                .iter()
                .map(|m| (*m, Acceptor::new(EPOCH + 1)))
                .collect();
            let mut value = None;
            for (member, acceptor) in &mut acceptors {
                if let Vote::Promise { accepted } = acceptor.on_prepare(ballot)
                    && let ProposalStep::SendAccept { members, .. } =
                        proposal.on_promise(*member, ballot, accepted)
                {
                    value = Some(members);
                }
            }
            let value = value.expect("a quorum promised");
            let mut decided = None;
            for (member, acceptor) in &mut acceptors {
                if acceptor.on_accept(ballot, value.clone()) == Vote::Accepted
                    && let ProposalStep::Decided(set) = proposal.on_accepted(*member, ballot)
                {
                    decided = Some(set);
                }
            }
            decided.expect("a quorum accepted")
        });
    }

    /// A Request envelope (it carries the whole active set) encoded and decoded.
    #[divan::bench]
    fn wire_roundtrip_request(bencher: Bencher) {
        let message = request(A, 20);
        bencher.bench_local(|| ra::wire::roundtrip(black_box(&message)).expect("decodes"));
    }
}
