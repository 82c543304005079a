//! Keyed mode with real processes on loopback (issue "Trust", its done-means):
//! the four forgeries that broke the plain cluster, replayed against a cluster
//! started with `--cluster-key`, are dropped with a log line and change nothing;
//! a node with another key or none cannot join and both sides say why; keys
//! rotate without a member being declared failed; and the clock forgery against
//! a plain cluster is dropped instead of wrapping the clock.
//!
//! Just over 500 lines: four scenarios, each with its own cluster and its own
//! forged streams, sharing one keyed start.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ra::event::{DropReason, DropSource, DroppedWhat, Event};
use ra::protocol::ids::ProcessId;
use ra::wire::pb;
use support::{Node, Scratch, active_set, assert_mutual_exclusion, exits, logged, ra, wait_for};

/// A fresh key from `ra keygen`, as an operator makes one.
fn keygen() -> String {
    let out = ra().arg("keygen").output().expect("run ra keygen");
    assert!(out.status.success(), "ra keygen failed");
    String::from_utf8(out.stdout)
        .expect("utf-8 key")
        .trim()
        .to_string()
}

fn write_keys(path: &Path, keys: &[&str]) {
    std::fs::write(path, keys.join("\n") + "\n").expect("write the key file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

fn key_id(key: &str) -> String {
    ra::membership::keyfile::parse(key)
        .expect("a key ra keygen made parses")
        .primary()
        .expect("one key")
        .id()
}

fn process(p: &ProcessId) -> pb::Process {
    pb::Process {
        addr: p.addr.to_string(),
        incarnation: p.incarnation,
    }
}

fn frame(kind: pb::peer_frame::Kind) -> pb::PeerFrame {
    pb::PeerFrame { kind: Some(kind) }
}

fn envelope(from: &ProcessId, to: &ProcessId, body: pb::envelope::Body) -> pb::PeerFrame {
    frame(pb::peer_frame::Kind::Envelope(pb::Envelope {
        from: Some(process(from)),
        to: Some(process(to)),
        clock: u64::MAX,
        body: Some(body),
    }))
}

/// The four forgeries of the issue, each sent as `from` to `to`: a request with
/// the clock at 2^64-1, a reply "from" a member, a leave of a live member, and a
/// decided set of epoch 99 with one member that does not exist.
fn forgeries(
    from: &ProcessId,
    to: &ProcessId,
    cluster: &ProcessId,
    epoch: u64,
    members: &[ProcessId],
) -> Vec<pb::PeerFrame> {
    use pb::envelope::Body;
    let current = pb::ActiveSet {
        cluster: Some(process(cluster)),
        epoch,
        max_active: 3,
        members: members.iter().map(process).collect(),
    };
    vec![
        envelope(
            from,
            to,
            Body::Request(pb::Request {
                lock: "default".into(),
                request_id: 1,
                timestamp: u64::MAX,
                active_set: Some(current),
                attempt: 1,
                try_only: false,
            }),
        ),
        envelope(
            from,
            to,
            Body::Reply(pb::Reply {
                lock: "default".into(),
                request_id: 1,
                epoch,
                fence_seq: 0,
                held_us: 0,
                attempt: 1,
            }),
        ),
        envelope(from, to, Body::Leaving(pb::Leaving {})),
        envelope(
            from,
            to,
            Body::Decided(pb::Decided {
                active_set: Some(pb::ActiveSet {
                    cluster: Some(process(cluster)),
                    epoch: 99,
                    max_active: 3,
                    members: vec![pb::Process {
                        addr: "127.0.0.1:9".into(),
                        incarnation: 1,
                    }],
                }),
            }),
        ),
    ]
}

/// Open a peer stream to `target` as `caller` and send `frames`; drain what
/// comes back. Whatever the node answers, nothing here may panic it.
fn send_frames(target: std::net::SocketAddr, frames: Vec<pb::PeerFrame>) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let mut client = pb::peer_client::PeerClient::connect(format!("http://{target}"))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let answers = client
            .exchange(tokio_stream::iter(frames))
            .await
            .map_err(|status| status.message().to_string())?;
        let mut answers = answers.into_inner();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), answers.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(status)) => return Err(status.message().to_string()),
                Err(_) => return Err("no end of stream within 5 s".into()),
            }
        }
    })
}

fn hello(from: &ProcessId, key_id: &str) -> pb::PeerFrame {
    frame(pb::peer_frame::Kind::Hello(pb::Hello {
        from: Some(process(from)),
        nonce: vec![7; 32],
        key_id: key_id.into(),
    }))
}

fn not_authenticated(node: &mut Node) -> usize {
    support::read(node).count(|e| {
        matches!(
            e,
            Event::Dropped {
                why: DropReason::NotAuthenticated { .. },
                ..
            }
        )
    })
}

fn epoch_of(node: &mut Node) -> u64 {
    support::read(node)
        .records_read()
        .iter()
        .filter_map(|r| match &r.event {
            Event::ActiveSetInstalled { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// The quick start's three nodes with these arguments, once all three are seated.
fn three_seated(scratch: &Scratch, args: &[&str]) -> (Node, Node, Node) {
    let mut a = scratch.start("a", args);
    let mut b = scratch.start_joining("b", &a, args);
    let mut c = scratch.start_joining("c", &b, args);
    wait_for("an active set of three", Duration::from_secs(15), || {
        [&mut a, &mut b, &mut c]
            .into_iter()
            .all(|n| active_set(n).len() == 3)
    });
    (a, b, c)
}

/// Three nodes seated under a key file holding `keys`, each entry held
/// `hold_ms`, all writing one shared file: the key file, the shared file and
/// the nodes.
fn keyed_three(
    scratch: &Scratch,
    keys: &[&str],
    hold_ms: u32,
) -> (PathBuf, PathBuf, (Node, Node, Node)) {
    let key_file = scratch.path("cluster.key");
    write_keys(&key_file, keys);
    let key_arg = key_file.to_str().expect("utf-8 path").to_string();
    let cs = scratch.path("cs.jsonl");
    let cs_arg = cs.to_str().expect("utf-8 path").to_string();
    let hold = hold_ms.to_string();
    let common = [
        "--cluster-key",
        key_arg.as_str(),
        "--hold-ms",
        hold.as_str(),
        "--cs-file",
        cs_arg.as_str(),
    ];
    let nodes = three_seated(scratch, &common);
    (key_file, cs, nodes)
}

#[test]
fn forgeries_against_a_keyed_cluster_are_dropped_and_it_keeps_serving() {
    let scratch = Scratch::new("keyed-forged");
    let key = keygen();
    let (_, cs, (mut a, mut b, mut c)) = keyed_three(&scratch, &[&key], 20);
    let epoch = epoch_of(&mut a);
    let members_before = active_set(&mut a);
    assert!(
        support::read(&mut a)
            .records_read()
            .iter()
            .any(|r| matches!(
                r.event,
                Event::Listening {
                    authenticated: true,
                    ..
                }
            )),
        "the first line says the node is keyed"
    );

    // Each forgery claims to come from b (and the leave, from c), in three ways
    // of skipping the proof: no key named, the right key's id with no proof, and
    // the right key's id with a made-up proof.
    let id = key_id(&key);
    let (me_a, me_b, me_c) = (a.me, b.me, c.me);
    let set = support::read(&mut a).active_set().expect("a set").to_vec();
    let mut attempts = 0;
    for claimed in [me_b, me_c] {
        for (key_named, proof) in [("", false), (id.as_str(), false), (id.as_str(), true)] {
            let mut frames = vec![hello(&claimed, key_named)];
            if proof {
                frames.push(frame(pb::peer_frame::Kind::Proof(pb::Proof {
                    mac: vec![0x5a; 32],
                })));
            }
            frames.extend(forgeries(&claimed, &me_a, &me_a, epoch, &set));
            let answer = send_frames(a.addr(), frames);
            assert!(
                answer.is_err(),
                "a stream without a valid proof of the key was served: {answer:?}"
            );
            attempts += 1;
        }
    }
    // The first few drops of a kind are logged in full, the rest counted.
    wait_for(
        "a log line for the forged streams",
        Duration::from_secs(5),
        || not_authenticated(&mut a) >= attempts.min(5),
    );

    // Datagrams that are not sealed are dropped before foca sees them (a plain
    // node's real ones are the next test's).
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    for junk in [&b"\x01\x02\x03"[..], &[0u8; 200]] {
        udp.send_to(junk, a.addr()).expect("send a datagram");
    }
    wait_for("the datagrams' drop lines", Duration::from_secs(5), || {
        support::read(&mut a).count(|e| {
            matches!(
                e,
                Event::Dropped {
                    what: DroppedWhat::Datagram,
                    ..
                }
            )
        }) >= 2
    });

    // Nothing changed: the same set, no member declared gone, no epoch 99.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(active_set(&mut a), members_before, "the active set changed");
    for node in [&mut a, &mut b, &mut c] {
        assert!(
            !logged(node, |e| matches!(
                e,
                Event::MemberFailed { .. } | Event::MemberLeft { .. } | Event::PeerLeaving { .. }
            )),
            "{} believed a forged leave or failure",
            node.addr()
        );
        assert!(epoch_of(node) < 99, "{} installed epoch 99", node.addr());
    }

    // And it keeps serving, one holder at a time.
    for node in [&mut a, &mut b, &mut c] {
        node.request(3).expect("press Enter");
    }
    wait_for("9 entries", Duration::from_secs(20), || exits(&cs) == 9);
    assert_mutual_exclusion(&cs);

    // Every forged stream is accounted for: shown in full or in the summary.
    wait_for(
        "every forged stream logged",
        Duration::from_secs(15),
        || {
            let summarised: u64 = support::read(&mut a)
                .records_read()
                .iter()
                .filter_map(|r| match &r.event {
                    Event::DropsSummarised {
                        what: DroppedWhat::Stream,
                        count,
                        ..
                    } => Some(*count),
                    _ => None,
                })
                .sum();
            let shown = support::read(&mut a).count(|e| {
                matches!(
                    e,
                    Event::Dropped {
                        what: DroppedWhat::Stream,
                        why: DropReason::NotAuthenticated { .. },
                        ..
                    }
                )
            });
            shown as u64 + summarised >= attempts as u64
        },
    );
}

#[test]
fn a_node_with_another_key_or_none_cannot_join_and_both_sides_say_why() {
    let scratch = Scratch::new("keyed-refused");
    let (key, other) = (keygen(), keygen());
    assert_ne!(key, other, "ra keygen gave the same key twice");
    let key_file = scratch.path("cluster.key");
    let other_file = scratch.path("other.key");
    write_keys(&key_file, &[&key]);
    write_keys(&other_file, &[&other]);
    let key_arg = key_file.to_str().expect("utf-8 path").to_string();
    let other_arg = other_file.to_str().expect("utf-8 path").to_string();
    let mut a = scratch.start("a", &["--cluster-key", &key_arg]);
    let mut b = scratch.start_joining("b", &a, &["--cluster-key", &key_arg]);
    wait_for("two in the active set", Duration::from_secs(15), || {
        active_set(&mut a).len() == 2 && active_set(&mut b).len() == 2
    });

    let mut wrong = scratch.start_joining("wrong", &a, &["--cluster-key", &other_arg]);
    let mut none = scratch.start_joining("none", &a, &[]);
    for outsider in [&mut wrong, &mut none] {
        let addr = outsider.addr();
        wait_for("the outsider to say why", Duration::from_secs(10), || {
            logged(outsider, |e| matches!(e, Event::RefusedByPeer { .. }))
        });
        wait_for(
            "the cluster to log the outsider's datagrams",
            Duration::from_secs(10),
            || {
                logged(&mut a, |e| match e {
                    Event::Dropped {
                        from,
                        why: DropReason::NotAuthenticated { .. },
                        ..
                    } => *from == DropSource::Address(addr),
                    _ => false,
                })
            },
        );
    }
    // Give them time to try, then check nobody let them in.
    std::thread::sleep(Duration::from_secs(2));
    for node in [&mut a, &mut b] {
        let joined = |e: &Event, who: std::net::SocketAddr| matches!(e, Event::MemberJoined { member } if member.addr == who);
        let (w, n) = (wrong.addr(), none.addr());
        assert!(
            !logged(node, |e| joined(e, w) || joined(e, n)),
            "{} let an outsider join",
            node.addr()
        );
        assert_eq!(active_set(node).len(), 2);
    }
    for outsider in [&mut wrong, &mut none] {
        assert!(
            !logged(outsider, |e| matches!(e, Event::MemberJoined { .. })),
            "{} joined a cluster whose key it lacks",
            outsider.addr()
        );
    }
}

#[test]
fn keys_rotate_without_a_member_declared_failed() {
    let scratch = Scratch::new("keyed-rotate");
    let (old, new) = (keygen(), keygen());
    let (key_file, cs, (mut a, mut b, mut c)) = keyed_three(&scratch, &[&old], 5);

    // Serf's three steps, one shared file, SIGHUP to each node, a lock taken
    // by every node between the steps.
    let (old_id, new_id) = (key_id(&old), key_id(&new));
    let steps: [(&[&str], &str); 3] = [
        (&[&old, &new], &old_id),
        (&[&new, &old], &new_id),
        (&[&new], &new_id),
    ];
    let mut entries = 0;
    for (step, (keys, sealing)) in steps.iter().enumerate() {
        write_keys(&key_file, keys);
        let mut nodes = [&mut a, &mut b, &mut c];
        for node in nodes.iter_mut() {
            let reloads = support::read(node)
                .count(|e| matches!(e, Event::KeysReloaded { sealing: s, .. } if s == sealing));
            node.signal(libc::SIGHUP);
            wait_for("the key file re-read", Duration::from_secs(5), || {
                support::read(node)
                    .count(|e| matches!(e, Event::KeysReloaded { sealing: s, .. } if s == sealing))
                    > reloads
            });
        }
        for node in nodes.iter_mut() {
            node.request(1).expect("press Enter");
        }
        entries += 3;
        wait_for(
            &format!("every node served after step {}", step + 1),
            Duration::from_secs(10),
            || exits(&cs) == entries,
        );
    }
    assert_mutual_exclusion(&cs);
    for node in [&mut a, &mut b, &mut c] {
        assert!(
            !logged(node, |e| matches!(e, Event::MemberFailed { .. })),
            "{} declared a member failed during the rotation",
            node.addr()
        );
        assert_eq!(active_set(node).len(), 3);
    }
    // A node that only ever had the new key joins the rotated cluster.
    let new_only = scratch.path("new.key");
    write_keys(&new_only, &[&new]);
    let new_arg = new_only.to_str().expect("utf-8 path").to_string();
    let mut d = scratch.start_joining("d", &a, &["--cluster-key", &new_arg]);
    let d_addr = d.addr();
    wait_for("the new-key node to join", Duration::from_secs(15), || {
        logged(
            &mut a,
            |e| matches!(e, Event::MemberJoined { member } if member.addr == d_addr),
        ) && logged(&mut d, |e| matches!(e, Event::MemberJoined { .. }))
    });
}

/// The first forgery against the card's plain cluster: a well-formed
/// message with the clock at 2^64-1 to an idle member is dropped, not merged,
/// and the cluster goes on with one holder at a time. It comes in a batch with
/// a message whose sender is not the stream's, which is dropped too.
#[test]
fn the_clock_forgery_against_a_plain_cluster_is_dropped() {
    let scratch = Scratch::new("plain-clock");
    let cs = scratch.path("cs.jsonl");
    let cs_arg = cs.to_str().expect("utf-8 path").to_string();
    let common = ["--hold-ms", "20", "--cs-file", cs_arg.as_str()];
    let (mut a, mut b, mut c) = three_seated(&scratch, &common);
    let epoch = epoch_of(&mut b);
    let set = support::read(&mut b).active_set().expect("a set").to_vec();
    // A stranger's stream to b, then a request at the end of the clock.
    let stranger = ProcessId {
        addr: "127.0.0.1:9".parse().expect("an address"),
        incarnation: 1,
    };
    // It travels in one batch behind an envelope that claims to come from a,
    // which the stream's opener is not: each is judged on its own.
    let envelopes = [&a.me, &stranger]
        .into_iter()
        .flat_map(|from| {
            forgeries(from, &b.me, &a.me, epoch, &set)
                .into_iter()
                .take(1)
        })
        .filter_map(|frame| match frame.kind {
            Some(pb::peer_frame::Kind::Envelope(envelope)) => Some(envelope),
            _ => None,
        })
        .collect();
    let frames = vec![
        hello(&stranger, ""),
        frame(pb::peer_frame::Kind::Batch(pb::Batch { envelopes })),
    ];
    let _ = send_frames(b.addr(), frames);
    for (what, clock) in [("forged sender", false), ("clock forgery", true)] {
        wait_for(
            &format!("the {what}'s drop line"),
            Duration::from_secs(5),
            || {
                logged(&mut b, |e| match e {
                    Event::Dropped { why, .. } => {
                        matches!(why, DropReason::ClockTooFarAhead { .. }) == clock
                            && matches!(
                                why,
                                DropReason::ClockTooFarAhead { .. }
                                    | DropReason::ForgedSender { .. }
                            )
                    }
                    _ => false,
                })
            },
        );
    }
    // Everyone contends afterwards: one holder at a time, and b's requests
    // carry timestamps that did not wrap.
    for node in [&mut a, &mut b, &mut c] {
        node.request(3).expect("press Enter");
    }
    wait_for("9 entries", Duration::from_secs(20), || exits(&cs) == 9);
    assert_mutual_exclusion(&cs);
    let stamps: Vec<u64> = support::read(&mut b)
        .records_read()
        .iter()
        .filter_map(|r| match &r.event {
            Event::RequestIssued { timestamp, .. } => Some(*timestamp),
            _ => None,
        })
        .collect();
    assert!(!stamps.is_empty(), "b asked");
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]) && stamps.iter().all(|t| *t < 1 << 48),
        "b's request timestamps wrapped or jumped: {stamps:?}"
    );
}
