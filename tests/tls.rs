//! Mutual TLS on the peer port (`--tls-cert`, `--tls-key`, `--tls-ca`), on
//! real processes on loopback. The test makes its own CAs and node
//! certificates (rcgen), so it needs no openssl binary.
//!
//! Covered: three TLS nodes form a cluster and serve `ra lock` with no lost
//! update; the first line says TLS; the port speaks only TLS (a raw plain
//! probe gets no HTTP/2 answer and is logged as such); a caller with a
//! certificate of another CA is refused and logged; a node without TLS, and a
//! node of another CA, never take part, and the cluster's log says why; and a
//! partial, unreadable, malformed or mismatched set of files stops a node at
//! start with one line.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use ra::event::{DropReason, DropSource, DroppedWhat, Event};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use support::{Node, Scratch, active_set, logged, wait_for};

const FORMED_WITHIN: Duration = Duration::from_secs(30);

/// A CA and the files of the node certificates it signs, in `dir`.
struct Pki {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("ra test CA {name}"));
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.join(format!("{name}-ca.pem")), cert.pem()).expect("write CA");
        Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            issuer: Issuer::new(params, key),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A node certificate naming `ip`, and its key: (cert, key) paths.
    fn node(&self, label: &str, ip: &str) -> (PathBuf, PathBuf) {
        let params = CertificateParams::new(vec![ip.to_string()]).expect("node params");
        let key = KeyPair::generate().expect("node key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("node certificate");
        let cert_path = self.dir.join(format!("{}-{label}.pem", self.name));
        let key_path = self.dir.join(format!("{}-{label}.key", self.name));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    /// The three flags for a node named `label`.
    fn flags(&self, label: &str) -> Vec<String> {
        let (cert, key) = self.node(label, "127.0.0.1");
        vec![
            "--tls-cert".into(),
            text(&cert),
            "--tls-key".into(),
            text(&key),
            "--tls-ca".into(),
            text(&self.ca()),
        ]
    }
}

fn text(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_string()
}

fn quick_config(scratch: &Scratch) -> String {
    let path = scratch.path("quick.toml");
    ra::tools::process::write_quick_config(&path, Duration::from_millis(200))
        .expect("write the settings file");
    text(&path)
}

/// Whether `node` logged a refused stream or datagram from `from` whose
/// reason contains `says`.
fn refused(node: &mut Node, what: DroppedWhat, from: Option<SocketAddr>, says: &str) -> bool {
    logged(node, |e| match e {
        Event::Dropped {
            what: w,
            from: f,
            why: DropReason::NotAuthenticated { detail },
        } => {
            *w == what
                && from.is_none_or(|addr| *f == DropSource::Address(addr))
                && detail.contains(says)
        }
        _ => false,
    })
}

/// A raw TLS caller with a certificate of `pki`, trusting `trusted`: the
/// handshake's outcome as the caller sees it once it has tried to talk.
fn tls_probe(addr: SocketAddr, pki: &Pki, trusted: &Pki) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let (cert, key) = pki.node("probe", "127.0.0.1");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .expect("cert")
        .map(|c| c.expect("cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(&key).expect("key");
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(trusted.ca()).expect("ca") {
        roots.add(ca.expect("ca")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        // TLS 1.3: the server judges our certificate after the caller's side
        // of the handshake is done; its verdict comes with the next read.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => Ok(()),
            Ok(Ok(_)) => Err("closed".to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer".to_string()),
        }
    })
}

#[test]
fn three_tls_nodes_serve_ra_lock_and_nothing_else_gets_in() {
    let scratch = Scratch::new("tls");
    let config = quick_config(&scratch);
    let pki = Pki::new(scratch.dir(), "a");
    let other = Pki::new(scratch.dir(), "b");
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3 {
        let api = scratch.path(&format!("n{i}.sock"));
        let mut args = vec![
            "--config".to_string(),
            config.clone(),
            "--api".into(),
            text(&api),
        ];
        args.extend(pki.flags(&format!("n{i}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = match nodes.first() {
            None => scratch.start(&format!("n{i}"), &args),
            Some(seed) => scratch.start_joining(&format!("n{i}"), seed, &args),
        };
        nodes.push(node);
    }
    wait_for("the TLS cluster to form", FORMED_WITHIN, || {
        nodes.iter_mut().all(|n| active_set(n).len() == 3)
    });
    for node in &mut nodes {
        assert!(
            logged(node, |e| matches!(
                e,
                Event::Listening {
                    tls: true,
                    authenticated: false,
                    ..
                }
            )),
            "{}'s first line says TLS",
            node.name
        );
        assert!(
            node.log_text()
                .lines()
                .next()
                .is_some_and(|l| l.contains("mutual TLS")),
            "{}'s first line: {:?}",
            node.name,
            node.log_text().lines().next()
        );
    }

    // `ra lock` through each node at once: a shared counter loses no update.
    let counter = scratch.path("counter");
    std::fs::write(&counter, "0").expect("counter");
    let script = format!(
        "for i in 1 2 3; do n=$(cat {c}); sleep 0.05; echo $((n+1)) > {c}; done",
        c = counter.display()
    );
    let clients: Vec<_> = (0..3)
        .map(|i| {
            support::ra()
                .arg("lock")
                .arg("--node")
                .arg(scratch.path(&format!("n{i}.sock")))
                .arg("counter")
                .arg("--")
                .args(["sh", "-c", &script])
                .env_remove("RA_NODE")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("ra lock")
        })
        .collect();
    for client in clients {
        let out = client.wait_with_output().expect("ra lock ends");
        assert!(
            out.status.success(),
            "ra lock: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let total = std::fs::read_to_string(&counter).expect("counter");
    assert_eq!(total.trim(), "9", "every increment under the lock is kept");

    let seed = nodes[0].addr();

    // A plain caller on the peer port gets no HTTP/2 answer (an HTTP/2
    // server's first frame is its SETTINGS, type 4), and is logged.
    let mut raw = TcpStream::connect(seed).expect("connect");
    let probe = raw.local_addr().expect("local addr");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .expect("write");
    let mut answer = [0u8; 16];
    let n = raw.read(&mut answer).unwrap_or(0);
    assert!(
        n < 9 || answer[3] != 4,
        "the peer port answered plain HTTP/2: {:?}",
        &answer[..n]
    );
    wait_for("the plain probe to be logged", FORMED_WITHIN, || {
        refused(
            &mut nodes[0],
            DroppedWhat::Stream,
            Some(probe),
            "does not speak TLS",
        )
    });

    // A caller whose certificate another CA signed is refused; one of ours is
    // answered (the same probe, so the refusal is the certificate's).
    assert!(
        tls_probe(seed, &pki, &pki).is_ok(),
        "a certificate of our CA is accepted"
    );
    assert!(
        tls_probe(seed, &other, &pki).is_err(),
        "another CA's certificate is refused"
    );
    wait_for(
        "the foreign certificate to be logged",
        FORMED_WITHIN,
        || refused(&mut nodes[0], DroppedWhat::Stream, None, "UnknownIssuer"),
    );

    // A node without TLS, and a node of another CA, join through the seed:
    // neither is ever seated, and the seed says why in one line each.
    let mut plain = scratch.start_joining("plain", &nodes[0], &["--config", &config]);
    let mut rogue_args = vec!["--config".to_string(), config.clone()];
    rogue_args.extend(other.flags("rogue"));
    let rogue_args: Vec<&str> = rogue_args.iter().map(String::as_str).collect();
    let mut rogue = scratch.start_joining("rogue", &nodes[0], &rogue_args);
    let (plain_addr, rogue_addr) = (plain.addr(), rogue.addr());
    wait_for("the seed to refuse both", FORMED_WITHIN, || {
        refused(
            &mut nodes[0],
            DroppedWhat::Datagram,
            Some(plain_addr),
            "not encrypted",
        ) && refused(
            &mut nodes[0],
            DroppedWhat::Datagram,
            Some(rogue_addr),
            "--tls-ca",
        )
    });
    // Long enough for a join to have gone through (the cluster formed within
    // a few seconds), then nothing of them anywhere.
    std::thread::sleep(Duration::from_secs(3));
    let ours: Vec<SocketAddr> = nodes.iter().map(|n| n.addr()).collect();
    for node in &mut nodes {
        let set = active_set(node);
        assert!(
            !set.contains(&plain_addr) && !set.contains(&rogue_addr),
            "{} seated an outsider: {set:?}",
            node.name
        );
    }
    for outsider in [&mut plain, &mut rogue] {
        let set = active_set(outsider);
        assert!(
            !set.iter().any(|a| ours.contains(a)),
            "{} got into the cluster: {set:?}",
            outsider.name
        );
    }
}

/// `ra` with these arguments, expected to stop at start: its stderr.
fn refused_at_start(args: &[&str]) -> String {
    let out = support::ra()
        .args(["--bind", "127.0.0.1:0", "--no-api"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ra");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} started: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn tls_files_are_all_or_nothing_and_checked_at_start() {
    let scratch = Scratch::new("tls-files");
    let pki = Pki::new(scratch.dir(), "a");
    let other = Pki::new(scratch.dir(), "b");
    let (cert, key) = pki.node("n", "127.0.0.1");
    let (foreign_cert, foreign_key) = other.node("n", "127.0.0.1");
    let (elsewhere_cert, elsewhere_key) = pki.node("far", "127.0.0.2");
    let garbage = scratch.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let (cert, key, ca) = (text(&cert), text(&key), text(&pki.ca()));
    let missing = text(&scratch.path("missing.pem"));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--tls-cert".into(), cert.clone()],
            "--tls-key and --tls-ca missing",
        ),
        (
            vec![
                "--tls-cert".into(),
                cert.clone(),
                "--tls-key".into(),
                key.clone(),
            ],
            "--tls-ca missing",
        ),
        (
            vec![
                "--tls-cert".into(),
                missing.clone(),
                "--tls-key".into(),
                key.clone(),
                "--tls-ca".into(),
                ca.clone(),
            ],
            "cannot read --tls-cert file",
        ),
        (
            vec![
                "--tls-cert".into(),
                cert.clone(),
                "--tls-key".into(),
                key.clone(),
                "--tls-ca".into(),
                text(&garbage),
            ],
            "no certificate in it",
        ),
        (
            vec![
                "--tls-cert".into(),
                cert.clone(),
                "--tls-key".into(),
                text(&garbage),
                "--tls-ca".into(),
                ca.clone(),
            ],
            "no private key in it",
        ),
        (
            vec![
                "--tls-cert".into(),
                text(&foreign_cert),
                "--tls-key".into(),
                text(&foreign_key),
                "--tls-ca".into(),
                ca.clone(),
            ],
            "UnknownIssuer",
        ),
        (
            vec![
                "--tls-cert".into(),
                text(&elsewhere_cert),
                "--tls-key".into(),
                text(&elsewhere_key),
                "--tls-ca".into(),
                ca.clone(),
            ],
            "not valid for name",
        ),
        (
            vec![
                "--tls-cert".into(),
                cert.clone(),
                "--tls-key".into(),
                text(&foreign_key),
                "--tls-ca".into(),
                ca.clone(),
            ],
            "do not go together",
        ),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = refused_at_start(&args);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // The config file's keys work like the flags, and mix with them.
    let file = scratch.path("tls.toml");
    std::fs::write(
        &file,
        format!("[node]\ntls_cert = {cert:?}\ntls_ca = {ca:?}\n"),
    )
    .expect("write");
    let stderr = refused_at_start(&["--config", &text(&file)]);
    assert!(stderr.contains("--tls-key missing"), "{stderr}");
    let mut node =
        Node::start(
            scratch
                .spawn("filed")
                .args(["--config", &text(&file), "--tls-key", &key]),
        )
        .expect("a node with its TLS files from the config file and a flag");
    assert!(logged(&mut node, |e| matches!(
        e,
        Event::Listening { tls: true, .. }
    )));
}
