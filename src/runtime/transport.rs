//! gRPC between nodes: one long-lived client stream per peer for what this node
//! sends, and a server that feeds what arrives into the node's inbox.
//!
//! A stream that breaks is reconnected with backoff; what was queued meanwhile is
//! sent then, and the node hears `Reconnected` so it can resend what may have
//! been lost in flight (all of it is harmless to receive twice).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

use super::Inbound;
use crate::node::Input;
use crate::protocol::message::Envelope;
use crate::wire::{self, pb};

/// Messages waiting for one peer; beyond this the oldest news is dropped.
const PEER_QUEUE: usize = 4096;
/// Largest message accepted: a hostile peer cannot make us buffer more.
const MAX_MESSAGE: usize = 64 * 1024;

/// Ricart–Agrawala messages handed to the wire (requests and replies), for
/// `ra bench`: counted, not computed.
#[derive(Default, Debug)]
pub struct WireStats {
    mutex_messages: AtomicU64,
}

impl WireStats {
    fn count(&self, envelope: &Envelope) {
        if envelope.body.is_mutex_traffic() {
            self.mutex_messages.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn mutex_messages(&self) -> u64 {
        self.mutex_messages.load(Ordering::Relaxed)
    }
}

/// The sending side: one task per peer address.
pub struct Peers {
    queues: HashMap<SocketAddr, mpsc::Sender<pb::Envelope>>,
    inbox: mpsc::Sender<Inbound>,
    stats: Arc<WireStats>,
}

impl Peers {
    pub fn new(inbox: mpsc::Sender<Inbound>, stats: Arc<WireStats>) -> Self {
        Self {
            queues: HashMap::new(),
            inbox,
            stats,
        }
    }

    pub fn send(&mut self, envelope: &Envelope) {
        let addr = envelope.to.addr;
        let queue = self.queues.entry(addr).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            tokio::spawn(peer_stream(addr, rx, self.inbox.clone()));
            tx
        });
        match queue.try_send(wire::to_proto(envelope)) {
            Ok(()) => self.stats.count(envelope),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(target: "ra", peer = %addr, "dropped a {} for {addr}: its queue is full (the peer is unreachable)", envelope.body.kind());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queues.remove(&addr);
            }
        }
    }
}

fn endpoint(addr: SocketAddr) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(1))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

/// Keep a stream open to `addr` and pour the queue into it.
async fn peer_stream(
    addr: SocketAddr,
    mut queue: mpsc::Receiver<pb::Envelope>,
    inbox: mpsc::Sender<Inbound>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut had_stream = false;
    let mut failures: u32 = 0;
    loop {
        let channel: Channel = match endpoint(addr) {
            Ok(endpoint) => match endpoint.connect().await {
                Ok(channel) => channel,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::debug!(target: "ra", peer = %addr, "cannot connect to {addr}: {e}; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    if queue.is_closed() {
                        return;
                    }
                    continue;
                }
            },
            Err(e) => {
                tracing::error!(target: "ra", peer = %addr, "bad peer address {addr}: {e}");
                return;
            }
        };
        failures = 0;
        backoff = Duration::from_millis(50);
        let (tx, rx) = mpsc::channel::<pb::Envelope>(256);
        let mut client = pb::peer_client::PeerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut call = Box::pin(async move { client.exchange(ReceiverStream::new(rx)).await });
        if had_stream
            && inbox
                .send(Inbound::Input(Input::Reconnected { peer: addr }))
                .await
                .is_err()
        {
            return;
        }
        had_stream = true;
        loop {
            tokio::select! {
                next = queue.recv() => match next {
                    Some(message) => {
                        if tx.send(message).await.is_err() {
                            break;
                        }
                    }
                    None => return,
                },
                result = &mut call => {
                    if let Err(status) = result {
                        tracing::debug!(target: "ra", peer = %addr, "stream to {addr} closed: {}", status.message());
                    }
                    break;
                }
            }
        }
    }
}

/// The receiving side: every message of every stream goes to the node's inbox.
struct PeerService {
    inbox: mpsc::Sender<Inbound>,
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn exchange(
        &self,
        request: Request<Streaming<pb::Envelope>>,
    ) -> Result<Response<pb::StreamClosed>, Status> {
        let from = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let mut stream = request.into_inner();
        loop {
            match stream.message().await {
                Ok(Some(message)) => match wire::from_proto(message) {
                    Ok(envelope) => {
                        if self
                            .inbox
                            .send(Inbound::Input(Input::Message(envelope)))
                            .await
                            .is_err()
                        {
                            return Err(Status::unavailable("this node is shutting down"));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(target: "ra", event = "dropped", peer = %from, "dropped a malformed message from {from}: {e}");
                    }
                },
                Ok(None) => return Ok(Response::new(pb::StreamClosed {})),
                Err(status) => {
                    // A peer that exits or restarts cuts its stream: routine. Bytes
                    // that do not decode are not.
                    if status.message().contains("decode") {
                        tracing::warn!(target: "ra", event = "dropped", peer = %from, "dropped a stream from {from}: {}", status.message());
                    } else {
                        tracing::debug!(target: "ra", peer = %from, "stream from {from} ended: {}", status.message());
                    }
                    return Err(status);
                }
            }
        }
    }
}

/// Serve the peer protocol on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    inbox: mpsc::Sender<Inbound>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // Nagle's algorithm waiting on delayed ACKs costs ~40 ms per reply otherwise.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = pb::peer_server::PeerServer::new(PeerService { inbox })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
