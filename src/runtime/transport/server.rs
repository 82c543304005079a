//! The receiving side of the peer protocol: every stream opens with a
//! handshake, then its envelopes go to the node's inbox, each checked to come
//! from the process the stream was opened by.
//!
//! Bounded so a flood cannot exhaust the node: at most `max_connections`
//! connections at once (more wait in the kernel's backlog), small HTTP/2
//! windows and frames, one stream per connection, a handshake that must finish
//! within [`HANDSHAKE_TIMEOUT`], and connections that send nothing for
//! `idle_timeout` are closed (a live peer's stream sends HTTP/2 pings every
//! 5 s).

use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use super::handshake::{self, Side};
use super::tls::{self, PeerTls, TlsPeer};
use super::{HANDSHAKE_TIMEOUT, Inbound, MAX_MESSAGE};
use crate::event::{DropReason, DropSource, DroppedWhat, Event};
use crate::membership::seal::Sealer;
use crate::node::Input;
use crate::protocol::ids::ProcessId;
use crate::runtime::limit;
use crate::runtime::log;
use crate::wire::{self, pb};

/// Bounds of the peer server (see `config/ra.toml`, `[limits]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// HTTP/2 flow-control window of a connection, and so its buffering.
    pub window_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            idle_timeout: Duration::from_secs(30),
            window_bytes: 256 * 1024,
        }
    }
}

struct PeerService {
    inbox: mpsc::Sender<Inbound>,
    me: ProcessId,
    sealer: Arc<RwLock<Sealer>>,
    /// With TLS: each caller's certificate must name the address it claims.
    tls: bool,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::PeerFrame, Status>> + Send>>;

fn drop_stream(me: ProcessId, from: DropSource, why: DropReason) {
    log::emit(
        me,
        &Event::Dropped {
            what: DroppedWhat::Stream,
            from,
            why,
        },
    );
}

/// Log a stream that failed authentication, and the status that ends it.
fn refuse_unauthenticated(me: ProcessId, from: DropSource, detail: String) -> Status {
    let status = Status::unauthenticated(detail.clone());
    drop_stream(me, from, DropReason::NotAuthenticated { detail });
    status
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    type ExchangeStream = FrameStream;

    async fn exchange(
        &self,
        request: Request<Streaming<pb::PeerFrame>>,
    ) -> Result<Response<FrameStream>, Status> {
        let tls_peer = request.extensions().get::<TlsPeer>().cloned();
        let remote = DropSource::from(
            request
                .remote_addr()
                .or_else(|| tls_peer.as_ref().and_then(|p| p.remote)),
        );
        let mut incoming = request.into_inner();
        let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming.message()).await {
            Ok(Ok(Some(pb::PeerFrame {
                kind: Some(pb::peer_frame::Kind::Hello(hello)),
            }))) => hello,
            _ => {
                drop_stream(
                    self.me,
                    remote,
                    DropReason::Malformed {
                        detail: "no Hello to open the stream".into(),
                    },
                );
                return Err(Status::invalid_argument("a stream opens with a Hello"));
            }
        };
        let caller = wire::process_from(hello.from, "hello.from").map_err(|e| {
            drop_stream(
                self.me,
                remote,
                DropReason::Malformed {
                    detail: e.0.clone(),
                },
            );
            Status::invalid_argument(e.0)
        })?;
        if self.tls {
            // The handshake proved the certificate is the CA's; it must also
            // be this caller's, or one node's certificate would speak for all.
            let certs = tls_peer.map(|p| p.certs).unwrap_or_default();
            if !tls::names(&certs, caller.addr.ip()) {
                let detail = format!(
                    "its certificate does not name {}, the address its Hello claims",
                    caller.addr.ip()
                );
                return Err(refuse_unauthenticated(self.me, remote, detail));
            }
        }
        let key = {
            let sealer = self
                .sealer
                .read()
                .map_err(|_| Status::internal("keyring unavailable"))?;
            match (&*sealer, hello.key_id.is_empty()) {
                (Sealer::Plain, true) => None,
                (Sealer::Plain, false) => {
                    let detail =
                        "the caller proves a cluster key, and this node has none (--cluster-key)";
                    return Err(refuse_unauthenticated(self.me, remote, detail.into()));
                }
                (Sealer::Keyed(_), true) => {
                    let detail = "the caller has no cluster key, and this cluster requires it";
                    return Err(refuse_unauthenticated(self.me, remote, detail.into()));
                }
                (Sealer::Keyed(ring), false) => match handshake::key_named(ring, &hello.key_id) {
                    Some(key) => Some(key.clone()),
                    None => {
                        let detail = format!(
                            "the caller uses key {}, which this node does not have",
                            hello.key_id.chars().take(16).collect::<String>()
                        );
                        return Err(refuse_unauthenticated(self.me, remote, detail));
                    }
                },
            }
        };
        let nonce = handshake::nonce().ok_or_else(|| Status::internal("no randomness"))?;
        let mac = key
            .as_ref()
            .map(|k| handshake::mac(k, Side::Welcome, &hello.nonce, &nonce, &caller, &self.me))
            .unwrap_or_default();
        // Boxed: a channel's first block holds 32 of what it carries, and
        // there is one such channel per inbound stream.
        let (tx, rx) = mpsc::channel::<Answer>(2);
        let welcome = pb::PeerFrame {
            kind: Some(pb::peer_frame::Kind::Welcome(pb::Welcome {
                me: Some(wire::process_to(&self.me)),
                nonce: nonce.to_vec(),
                mac,
            })),
        };
        tx.try_send(Box::new(Ok(welcome)))
            .map_err(|_| Status::internal("cannot queue the welcome"))?;
        let session = Session {
            incoming,
            tx,
            inbox: self.inbox.clone(),
            me: self.me,
            remote,
            caller,
            proof: key.map(|k| (k, hello.nonce, nonce.to_vec())),
        };
        tokio::spawn(session.run());
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|answer| *answer),
        )))
    }
}

/// What the callee sends back on a stream: its Welcome, or why it refuses.
type Answer = Box<Result<pb::PeerFrame, Status>>;

/// One caller's stream, after the Welcome.
struct Session {
    incoming: Streaming<pb::PeerFrame>,
    /// Held for as long as the stream lives: dropping it ends the answers.
    tx: mpsc::Sender<Answer>,
    inbox: mpsc::Sender<Inbound>,
    me: ProcessId,
    /// The caller's socket address, if the transport gave it: where its
    /// refused input is logged as coming from.
    remote: DropSource,
    caller: ProcessId,
    /// With a cluster key: the key and both nonces, to check the Proof.
    proof: Option<(crate::membership::seal::Key, Vec<u8>, Vec<u8>)>,
}

impl Session {
    async fn run(mut self) {
        if let Some((key, caller_nonce, callee_nonce)) = self.proof.take() {
            let proved =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.incoming.message()).await {
                    Ok(Ok(Some(pb::PeerFrame {
                        kind: Some(pb::peer_frame::Kind::Proof(proof)),
                    }))) => handshake::verify(
                        &key,
                        Side::Hello,
                        &caller_nonce,
                        &callee_nonce,
                        &self.caller,
                        &self.me,
                        &proof.mac,
                    ),
                    _ => false,
                };
            if !proved {
                drop_stream(
                    self.me,
                    self.remote,
                    DropReason::NotAuthenticated {
                        detail: "no valid proof of the cluster key".into(),
                    },
                );
                let _ = self
                    .tx
                    .send(Box::new(Err(Status::unauthenticated(
                        "no valid proof of the cluster key",
                    ))))
                    .await;
                return;
            }
        }
        loop {
            let envelopes = match self.incoming.message().await {
                Ok(Some(pb::PeerFrame {
                    kind: Some(pb::peer_frame::Kind::Envelope(message)),
                })) => vec![message],
                Ok(Some(pb::PeerFrame {
                    kind: Some(pb::peer_frame::Kind::Batch(batch)),
                })) => batch.envelopes,
                Ok(Some(_)) => {
                    drop_stream(
                        self.me,
                        self.remote,
                        DropReason::Malformed {
                            detail: "a handshake frame after the handshake".into(),
                        },
                    );
                    continue;
                }
                Ok(None) => return,
                Err(status) => {
                    // A peer that exits or restarts cuts its stream: routine.
                    // Bytes that do not decode are not.
                    if status.code() == tonic::Code::Internal {
                        drop_stream(
                            self.me,
                            self.remote,
                            DropReason::Malformed {
                                detail: status.message().to_string(),
                            },
                        );
                    }
                    return;
                }
            };
            for message in envelopes {
                if !self.deliver(message).await {
                    return;
                }
            }
        }
    }

    /// Check one envelope and hand it to the node; false once the node is gone.
    async fn deliver(&self, message: pb::Envelope) -> bool {
        match wire::from_proto(message) {
            Ok(envelope) if envelope.from != self.caller => drop_stream(
                self.me,
                self.remote,
                DropReason::ForgedSender { peer: self.caller },
            ),
            Ok(envelope) => return self.inbox.send(Input::Message(envelope)).await.is_ok(),
            Err(e) => log::emit(
                self.me,
                &Event::Dropped {
                    what: DroppedWhat::Message,
                    from: self.remote,
                    why: DropReason::Malformed { detail: e.0 },
                },
            ),
        }
        true
    }
}

/// Serve the peer protocol on `listener` until `shutdown` resolves, over
/// mutual TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    inbox: mpsc::Sender<Inbound>,
    me: ProcessId,
    sealer: Arc<RwLock<Sealer>>,
    limits: Limits,
    tls: Option<Arc<PeerTls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // Nagle's algorithm waiting on delayed ACKs costs ~40 ms per reply otherwise.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let incoming = limit::limit(incoming, limits.max_connections, Some(limits.idle_timeout));
    let service = pb::peer_server::PeerServer::new(PeerService {
        inbox,
        me,
        sealer,
        tls: tls.is_some(),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let mut builder = Server::builder()
        .max_concurrent_streams(Some(4))
        .initial_connection_window_size(Some(limits.window_bytes))
        .initial_stream_window_size(Some(limits.window_bytes))
        .max_frame_size(Some(16 * 1024))
        .http2_max_header_list_size(Some(16 * 1024))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    match tls {
        // The handshake runs in `tls::accept` (within the connection limit),
        // so tonic is handed connections already encrypted.
        Some(tls) => {
            let incoming = tls::accept(incoming, tls, me);
            builder
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        None => {
            builder
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
}
