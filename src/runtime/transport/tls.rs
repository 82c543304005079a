//! Mutual TLS on the peer gRPC port (`--tls-cert`, `--tls-key`, `--tls-ca`):
//! the files read and checked once at start, the server's side of the
//! handshake, and the caller's settings.
//!
//! Names: peers dial each other by IP address, so each node's certificate
//! names its advertised IP address (an IP subjectAltName). A caller checks the
//! server's certificate against the address it dials; the server checks the
//! caller's against the address its Hello names. A certificate therefore
//! lets its holder be one address of the cluster, not any.
//!
//! The server's handshake runs here rather than inside tonic, which logs a
//! failed handshake only at debug level with no peer: a refused peer is logged
//! with its address and the reason, in one line.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::HANDSHAKE_TIMEOUT;
use crate::event::{DropReason, DroppedWhat, Event};
use crate::membership::seal::{KEY_BYTES, Key};
use crate::protocol::ids::ProcessId;
use crate::runtime::log;

/// The three files, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Everything both sides of a peer connection need, checked.
pub struct PeerTls {
    pub files: TlsFiles,
    server: Arc<rustls::ServerConfig>,
    client: ClientTlsConfig,
    /// The CA certificates, as DER: they name the cluster's datagram tag.
    ca_der: Vec<Vec<u8>>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("PeerTls")
            .field("files", &self.files)
            .finish()
    }
}

impl PartialEq for PeerTls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files && self.ca_der == other.ca_der
    }
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {flag} file {}", path.display()))
}

fn certificates(flag: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{flag} file {}: not PEM ({e})", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{flag} file {}: no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

/// Read and check the three files for a node that peers reach at `advertise`:
/// every error here is one line, at start, naming the file.
pub fn load(files: TlsFiles, advertise: IpAddr) -> Result<PeerTls> {
    let cert_pem = read("--tls-cert", &files.cert)?;
    let key_pem = read("--tls-key", &files.key)?;
    let ca_pem = read("--tls-ca", &files.ca)?;
    let chain = certificates("--tls-cert", &files.cert, &cert_pem)?;
    let cas = certificates("--tls-ca", &files.ca, &ca_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        anyhow!(
            "--tls-key file {}: no private key in it ({e}; expected PEM, -----BEGIN PRIVATE KEY-----)",
            files.key.display()
        )
    })?;
    let mut roots = RootCertStore::empty();
    for ca in &cas {
        roots
            .add(ca.clone())
            .map_err(|e| anyhow!("--tls-ca file {}: {e}", files.ca.display()))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| anyhow!("--tls-ca file {}: {e}", files.ca.display()))?;
    let server_verifier =
        WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| anyhow!("--tls-ca file {}: {e}", files.ca.display()))?;
    // The node's own certificate must pass what its peers will check, as a
    // server and as a caller: better refused here than by every peer.
    let (end, intermediates) = chain.split_first().context("no certificate")?;
    let name = ServerName::IpAddress(advertise.into());
    let now = UnixTime::now();
    server_verifier
        .verify_server_cert(end, intermediates, &name, &[], now)
        .and_then(|_| client_verifier.verify_client_cert(end, intermediates, now))
        .map_err(|e| {
            anyhow!(
                "--tls-cert file {}: peers would refuse it: {e} (it must be signed by the --tls-ca certificate and name this node's address {advertise} as an IP subjectAltName)",
                files.cert.display()
            )
        })?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS: {e}"))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            anyhow!(
                "--tls-cert {} and --tls-key {} do not go together: {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let client = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca_pem))
        .identity(Identity::from_pem(&cert_pem, &key_pem));
    Ok(PeerTls {
        files,
        server: Arc::new(server),
        client,
        ca_der: cas.iter().map(|c| c.as_ref().to_vec()).collect(),
    })
}

impl PeerTls {
    /// The caller's settings for a peer at `addr`: its certificate must name
    /// that IP address.
    pub fn client_for(&self, addr: SocketAddr) -> ClientTlsConfig {
        self.client.clone().domain_name(addr.ip().to_string())
    }

    /// The key that frames this cluster's datagrams when it has no cluster
    /// key: derived from the CA certificate, which is not secret. It keeps
    /// nodes of other CAs, and nodes without TLS, out of the membership with
    /// a clear reason; it authenticates nothing (`--cluster-key` does).
    pub fn datagram_key(&self) -> Key {
        let mut digest = Sha256::new().chain_update(b"ra tls ca");
        for ca in &self.ca_der {
            digest.update((ca.len() as u64).to_be_bytes());
            digest.update(ca);
        }
        let mut bytes = [0u8; KEY_BYTES];
        bytes.copy_from_slice(&digest.finalize()[..KEY_BYTES]);
        Key::new(bytes)
    }
}

/// Whether the caller's certificate names the IP address `caller` claims.
pub fn names(certs: &[CertificateDer<'static>], caller: IpAddr) -> bool {
    let Some(end) = certs.first() else {
        return false;
    };
    ParsedCertificate::try_from(end).is_ok_and(|parsed| {
        rustls::client::verify_server_name(&parsed, &ServerName::IpAddress(caller.into())).is_ok()
    })
}

/// What the server knows of a TLS connection: who called, and with which
/// certificates (checked against the CA by the handshake).
#[derive(Clone, Debug)]
pub struct TlsPeer {
    pub remote: Option<SocketAddr>,
    pub certs: Arc<Vec<CertificateDer<'static>>>,
}

/// One accepted connection, its handshake done.
pub struct TlsConn<T> {
    inner: tokio_rustls::server::TlsStream<T>,
    peer: TlsPeer,
}

impl<T> Connected for TlsConn<T> {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConn<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConn<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Why a handshake failed, in words an operator can act on; `None` for a
/// connection closed before it began (every caller's reachability probe
/// does that, see `transport::open`).
fn why_refused(error: &io::Error) -> Option<String> {
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    Some(match tls {
        Some(rustls::Error::InvalidMessage(_)) => {
            "it does not speak TLS (a node started without --tls-cert?)".to_string()
        }
        Some(rustls::Error::NoCertificatesPresented) => {
            "it presented no certificate (a node started without --tls-cert?)".to_string()
        }
        Some(rustls::Error::InvalidCertificate(why)) => format!(
            "its certificate is refused: {why:?} (is it signed by this cluster's --tls-ca?)"
        ),
        Some(other) => format!("TLS handshake failed: {other}"),
        None if matches!(
            error.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
        ) =>
        {
            return None;
        }
        None => format!("TLS handshake failed: {error}"),
    })
}

fn refused(me: ProcessId, remote: Option<SocketAddr>, detail: String) {
    log::emit(
        me,
        &Event::Dropped {
            what: DroppedWhat::Stream,
            from: remote.into(),
            why: DropReason::NotAuthenticated { detail },
        },
    );
}

/// Run the server's TLS handshake on every connection `incoming` yields,
/// several at once (a slow caller holds up no one), and yield those that
/// complete it. Ends when the consumer drops the stream.
pub fn accept<S, T>(
    incoming: S,
    tls: Arc<PeerTls>,
    me: ProcessId,
) -> impl Stream<Item = io::Result<TlsConn<T>>>
where
    S: Stream<Item = io::Result<T>> + Send + 'static,
    T: AsyncRead + AsyncWrite + Connected<ConnectInfo = TcpConnectInfo> + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<io::Result<TlsConn<T>>>(16);
    tokio::spawn(async move {
        let acceptor = TlsAcceptor::from(tls.server.clone());
        let mut incoming = Box::pin(incoming);
        loop {
            let next = tokio::select! {
                next = incoming.next() => next,
                () = tx.closed() => return,
            };
            let io = match next {
                None => return,
                Some(Err(e)) => {
                    // As tonic would have had it.
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Ok(io)) => io,
            };
            let remote = io.connect_info().remote_addr();
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                    Ok(Ok(inner)) => {
                        let certs = inner
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                            .unwrap_or_default();
                        let peer = TlsPeer {
                            remote,
                            certs: Arc::new(certs),
                        };
                        let _ = tx.send(Ok(TlsConn { inner, peer })).await;
                    }
                    Ok(Err(e)) => {
                        if let Some(why) = why_refused(&e) {
                            refused(me, remote, why);
                        }
                    }
                    Err(_) => refused(
                        me,
                        remote,
                        format!("no TLS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()),
                    ),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
