//! The command line as a user meets it: bad input is one clear line and a
//! non-zero exit, never a panic; hostile traffic is logged and dropped.

mod support;

use std::net::UdpSocket;
use std::process::Stdio;
use std::time::Duration;

use ra::event::Event;
use support::{Scratch, active_set, logged, ra, read, wait_for};

/// Run `ra` with `args`; it must fail with exactly one line on stderr.
fn fails_with(args: &[&str], expected: &str) {
    let output = ra()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ra");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} succeeded");
    assert!(
        stderr.contains(expected),
        "{args:?}: expected {expected:?} in {stderr:?}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: more than one line: {stderr:?}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
}

#[test]
fn bad_addresses_are_one_clear_line() {
    fails_with(&["--bind", "7000"], "bad --bind address \"7000\"");
    fails_with(&["--bind", ":99999"], "bad --bind address");
    fails_with(
        &["--bind", ":7000", "--join", "nowhere"],
        "bad --join address \"nowhere\"",
    );
    fails_with(
        &["--bind", ":7000", "--advertise", ":x"],
        "bad --advertise address",
    );
    fails_with(&[], "--bind is required");
}

#[test]
fn a_port_in_use_is_one_clear_line() {
    let scratch = Scratch::new("port-in-use");
    let first = scratch.start("first", &[]);
    let port = first.addr().port();
    fails_with(&["--bind", &format!(":{port}")], "Address already in use");
}

#[test]
fn config_file_problems_are_one_clear_line() {
    let scratch = Scratch::new("config");
    fails_with(
        &["--bind", ":7000", "--config", "/nonexistent/ra.toml"],
        "cannot read config file",
    );
    let bad = scratch.path("bad.toml");
    std::fs::write(&bad, "[swim]\nprobe_period_ms = \"fast\"\n").expect("write");
    fails_with(
        &["--bind", ":7000", "--config", bad.to_str().expect("utf-8")],
        "line 2",
    );
    let nonsense = scratch.path("nonsense.toml");
    std::fs::write(
        &nonsense,
        "[swim]\nprobe_period_ms = 100\nprobe_rtt_ms = 200\n",
    )
    .expect("write");
    fails_with(
        &[
            "--bind",
            ":7000",
            "--config",
            nonsense.to_str().expect("utf-8"),
        ],
        "probe_rtt_ms must be smaller",
    );
}

#[test]
fn hostile_traffic_is_logged_and_dropped() {
    let scratch = Scratch::new("hostile");
    let mut a = scratch.start("a", &["--hold-ms", "10"]);
    let _b = scratch.start_joining("b", &a, &["--hold-ms", "10"]);
    let p0 = a.addr().port();
    wait_for("two in the active set", Duration::from_secs(15), || {
        active_set(&mut a).len() == 2
    });

    // Garbage datagrams on the SWIM port.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    for junk in [&b"\x00"[..], b"hello", &[0xff; 1300], &[7; 5000]] {
        udp.send_to(junk, ("127.0.0.1", p0)).expect("send");
    }
    // A gRPC stream with a well-formed but hostile message: an address that is
    // not one, and a thousand-member active set.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        use ra::wire::pb;
        let mut client = pb::peer_client::PeerClient::connect(format!("http://127.0.0.1:{p0}"))
            .await
            .expect("connect");
        let frame = |kind| pb::PeerFrame { kind: Some(kind) };
        // A stream whose Hello names no address: refused before anything else.
        let bad_hello = pb::Hello {
            from: Some(pb::Process {
                addr: "not an address".into(),
                incarnation: 1,
            }),
            nonce: vec![0; 32],
            key_id: String::new(),
        };
        let opened = client
            .exchange(tokio_stream::iter(vec![frame(
                pb::peer_frame::Kind::Hello(bad_hello),
            )]))
            .await;
        assert!(opened.is_err(), "a Hello without an address was accepted");
        // A stream with a proper Hello, then an envelope claiming a thousand-member set.
        let me = pb::Process {
            addr: "127.0.0.1:1".into(),
            incarnation: 1,
        };
        let hello = pb::Hello {
            from: Some(me.clone()),
            nonce: vec![0; 32],
            key_id: String::new(),
        };
        let huge = pb::Envelope {
            from: Some(me),
            to: Some(pb::Process {
                addr: format!("127.0.0.1:{p0}"),
                incarnation: 1,
            }),
            clock: u64::MAX,
            body: Some(pb::envelope::Body::Decided(pb::Decided {
                active_set: Some(pb::ActiveSet {
                    cluster: None,
                    epoch: 1,
                    max_active: 3,
                    members: (0..1000)
                        .map(|i| pb::Process {
                            addr: format!("127.0.0.1:{i}"),
                            incarnation: 1,
                        })
                        .collect(),
                }),
            })),
        };
        let frames = vec![
            frame(pb::peer_frame::Kind::Hello(hello)),
            frame(pb::peer_frame::Kind::Envelope(huge)),
        ];
        if let Ok(answers) = client.exchange(tokio_stream::iter(frames)).await {
            // Drain the Welcome and the end of the stream.
            let mut answers = answers.into_inner();
            while let Ok(Some(_)) = answers.message().await {}
        }
    });
    wait_for("the drops to be logged", Duration::from_secs(5), || {
        read(&mut a).count(|e| matches!(e, Event::Dropped { .. })) >= 3
    });
    // Still alive and serving.
    a.request(1).expect("press Enter");
    wait_for(
        "the node to still enter the critical section",
        Duration::from_secs(10),
        || logged(&mut a, |e| matches!(e, Event::Enter { .. })),
    );
    assert!(!a.exited(), "the node died");
    assert!(!a.log_text().contains("panicked"));
}

#[test]
fn end_of_stdin_does_not_stop_the_node_and_status_answers() {
    let scratch = Scratch::new("stdin");
    let mut node = scratch.start("node", &["--hold-ms", "10"]);
    node.type_line("status").expect("type status");
    wait_for("the status answer", Duration::from_secs(5), || {
        node.stdout_text().contains("Lamport clock")
    });
    // Close stdin: the node goes on (it would keep serving its peers).
    node.close_stdin();
    std::thread::sleep(Duration::from_secs(1));
    assert!(!node.exited(), "the node stopped at end of input");
    node.kill();
}
