//! The command line as a user meets it: bad input is one clear line and a
//! non-zero exit, never a panic; hostile traffic is logged and dropped.

mod support;

use std::net::UdpSocket;
use std::process::Stdio;
use std::time::Duration;

use support::{Node, Scratch, event_is, free_port, last_active_set, ra, wait_for};

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
    let port = free_port();
    let _first = Node::start(&scratch, port, &[]);
    std::thread::sleep(Duration::from_millis(300));
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
    let (p0, p1) = (free_port(), free_port());
    let mut a = Node::start(&scratch, p0, &["--hold-ms", "10"]);
    let _b = Node::start(
        &scratch,
        p1,
        &["--join", &format!(":{p0}"), "--hold-ms", "10"],
    );
    wait_for("two in the active set", Duration::from_secs(15), || {
        last_active_set(&a).len() == 2
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
        let bad_from = pb::Envelope {
            from: Some(pb::Process {
                addr: "not an address".into(),
                incarnation: 1,
            }),
            ..pb::Envelope::default()
        };
        let huge = pb::Envelope {
            from: Some(pb::Process {
                addr: "127.0.0.1:1".into(),
                incarnation: 1,
            }),
            to: Some(pb::Process {
                addr: format!("127.0.0.1:{p0}"),
                incarnation: 1,
            }),
            clock: u64::MAX,
            body: Some(pb::envelope::Body::Decided(pb::Decided {
                view: Some(pb::ActiveSet {
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
        let stream = tokio_stream::iter(vec![bad_from, huge]);
        let _ = client.exchange(stream).await;
    });
    wait_for("the drops to be logged", Duration::from_secs(5), || {
        a.events().iter().filter(|e| event_is(e, "dropped")).count() >= 3
    });
    // Still alive and serving.
    a.request(1);
    wait_for(
        "the node to still enter the critical section",
        Duration::from_secs(10),
        || a.has_event(|e| event_is(e, "enter")),
    );
    assert!(
        a.child.try_wait().expect("try_wait").is_none(),
        "the node died"
    );
    assert!(!a.log_text().contains("panicked"));
}

#[test]
fn end_of_stdin_does_not_stop_the_node_and_status_answers() {
    let scratch = Scratch::new("stdin");
    let port = free_port();
    let mut node = Node::start(&scratch, port, &["--hold-ms", "10"]);
    node.type_line("status");
    let out = scratch.path(&format!("node-{port}.out"));
    wait_for("the status answer", Duration::from_secs(5), || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("Lamport clock")
    });
    // Close stdin: the node goes on (it would keep serving its peers).
    node.close_stdin();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        node.child.try_wait().expect("try_wait").is_none(),
        "the node stopped at end of input"
    );
    node.kill();
}
