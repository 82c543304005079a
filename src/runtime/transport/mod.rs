//! gRPC between nodes: one long-lived stream per peer for what this node sends
//! ([`Peers`]), and a server that feeds what arrives into the node's inbox
//! ([`server`]). Every stream opens with a handshake ([`handshake`]) that names
//! both processes and, with a cluster key, proves both hold it. Envelopes that
//! wait for the same peer together leave as one `Batch` frame.
//!
//! About 700 lines with the tests of batching and idle closing at the end; the
//! code is the sending side's one job (connect, prove, reconnect, pour the
//! queue, close it when idle).
//!
//! A stream that breaks is reconnected at once: what was queued meanwhile is
//! sent then, and the node hears `Reconnected` so it can resend what may have
//! been lost in flight (all of it is harmless to receive twice). The reconnect
//! is also evidence: a refused connection means nothing listens at the address
//! any more (the process is gone), and a Welcome from a new incarnation means
//! it restarted. Either is proof, not suspicion, and the node hears it at once
//! (`Input::PeerGone`). A paused process still accepts connections, and a
//! network cut refuses nothing: neither is ever taken for a death.

pub mod handshake;
pub mod server;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::Inbound;
use crate::event::GoneEvidence;
use crate::membership::seal::Sealer;
use crate::node::Input;
use crate::protocol::ids::ProcessId;
use crate::protocol::message::Envelope;
use crate::wire::{self, pb};

pub use server::serve;

/// Messages waiting for one peer; beyond this the oldest news is dropped.
const PEER_QUEUE: usize = 4096;
/// Largest message accepted: a hostile peer cannot make us buffer more.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// How long either side waits for the other's part of the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

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

/// Who the node expects at each address (the process its messages name), so a
/// reconnect can tell that process is gone.
type Expected = Arc<Mutex<HashMap<SocketAddr, ProcessId>>>;

/// What every outgoing stream needs.
#[derive(Clone)]
struct Context {
    me: ProcessId,
    inbox: mpsc::Sender<Inbound>,
    sealer: Arc<RwLock<Sealer>>,
    expected: Expected,
    /// Mutual TLS, when the node has it: every stream goes over it.
    tls: Option<Arc<tls::PeerTls>>,
}

/// How many housekeeping rounds (a second each) a stream may go with nothing
/// sent before it is closed, unless the node watches its process. Without
/// this, every stream a node ever opened stayed, and one to a process gone
/// for good retried its connect every 2 s for ever. Watched streams stay
/// open: their break is the proof of a death. A stream closed is opened
/// again by the next message.
pub const IDLE_ROUNDS: u32 = 30;

/// One peer's queue, and the housekeeping rounds since anything went in it.
struct Queue {
    tx: mpsc::Sender<Box<pb::Envelope>>,
    used: bool,
    idle_rounds: u32,
    link: Arc<AtomicU8>,
}

/// How a peer's stream stands, as its task last found it.
const LINK_CONNECTING: u8 = 0;
const LINK_UP: u8 = 1;
/// The last connect was refused: the process there is gone.
const LINK_REFUSED: u8 = 2;

impl Queue {
    /// Whether closing loses nothing the node would want sent: everything
    /// queued went out on a live stream, or the process it was for is gone.
    /// (A stream that broke and has not come back may have lost what was in
    /// flight; the node resends that on `Reconnected`, so it stays open.)
    fn nothing_pending(&self) -> bool {
        let drained = self.tx.capacity() == self.tx.max_capacity();
        match self.link.load(Ordering::Relaxed) {
            LINK_UP => drained,
            LINK_REFUSED => true,
            _ => false,
        }
    }
}

/// The sending side: one task per peer address.
pub struct Peers {
    queues: HashMap<SocketAddr, Queue>,
    /// The addresses of the processes the node last asked to watch.
    watched: HashSet<SocketAddr>,
    stats: Arc<WireStats>,
    context: Context,
}

impl Peers {
    pub fn new(
        me: ProcessId,
        inbox: mpsc::Sender<Inbound>,
        stats: Arc<WireStats>,
        sealer: Arc<RwLock<Sealer>>,
        tls: Option<Arc<tls::PeerTls>>,
    ) -> Self {
        Self {
            queues: HashMap::new(),
            watched: HashSet::new(),
            stats,
            context: Context {
                me,
                inbox,
                sealer,
                expected: Arc::new(Mutex::new(HashMap::new())),
                tls,
            },
        }
    }

    fn expect(&self, process: ProcessId) {
        if let Ok(mut expected) = self.context.expected.lock() {
            let slot = expected.entry(process.addr).or_insert(process);
            if slot.incarnation < process.incarnation {
                *slot = process;
            }
        }
    }

    fn queue(&mut self, addr: SocketAddr) -> &mut Queue {
        self.queues.entry(addr).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let link = Arc::new(AtomicU8::new(LINK_CONNECTING));
            tokio::spawn(peer_stream(addr, rx, self.context.clone(), link.clone()));
            Queue {
                tx,
                used: false,
                idle_rounds: 0,
                link,
            }
        })
    }

    pub fn send(&mut self, envelope: &Envelope) {
        let addr = envelope.to.addr;
        self.expect(envelope.to);
        let queue = self.queue(addr);
        queue.used = true;
        match queue.tx.try_send(Box::new(wire::to_proto(envelope))) {
            Ok(()) => self.stats.count(envelope),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(target: "ra::transport", "dropped a {} for {addr}: its queue is full (the peer is unreachable)", envelope.body.kind());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queues.remove(&addr);
            }
        }
    }

    /// Keep a stream open to each of these processes even while nothing is
    /// sent to them, so their death is noticed the moment it happens.
    pub fn watch(&mut self, processes: &[ProcessId]) {
        self.watched.clear();
        for process in processes {
            if *process != self.context.me {
                self.expect(*process);
                self.queue(process.addr);
                self.watched.insert(process.addr);
            }
        }
    }

    /// One housekeeping round: close the streams that were idle for
    /// [`IDLE_ROUNDS`] rounds, are not watched, and have nothing pending
    /// (their tasks end with the queue, and the connection with them).
    pub fn close_idle(&mut self) {
        let watched = &self.watched;
        self.queues.retain(|addr, queue| {
            if std::mem::take(&mut queue.used) || watched.contains(addr) {
                queue.idle_rounds = 0;
                return true;
            }
            queue.idle_rounds = queue.idle_rounds.saturating_add(1);
            queue.idle_rounds < IDLE_ROUNDS || !queue.nothing_pending()
        });
    }
}

fn endpoint(
    addr: SocketAddr,
    tls: Option<&tls::PeerTls>,
) -> Result<Endpoint, tonic::transport::Error> {
    let endpoint = match tls {
        Some(tls) => {
            Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.client_for(addr))?
        }
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    };
    Ok(endpoint
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(1))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

/// Why a connection attempt did not give a stream.
enum Failure {
    /// Nothing listens at the address: the process there is gone.
    Refused,
    /// Anything else (unreachable, timed out, the handshake failed): no
    /// conclusion about the process.
    Other(String),
    /// The TLS handshake failed: a misconfiguration (or an impostor) the
    /// operator must hear of, not a routine retry.
    Tls(String),
}

/// An error and its causes, in one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Whether a failure to connect is the TLS handshake's (a rustls error
/// somewhere in its causes, or, with TLS on, the peer closing the connection
/// mid-way).
fn is_tls_failure(error: &(dyn std::error::Error + 'static), tls: bool) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<tokio_rustls::rustls::Error>().is_some()
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                io.get_ref().is_some_and(|inner| {
                    inner
                        .downcast_ref::<tokio_rustls::rustls::Error>()
                        .is_some()
                })
            })
            // tokio-rustls reports a close mid-handshake as a bare
            // UnexpectedEof; nothing else in a connect reads to an end.
            || (tls
                && e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof))
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn connect_failure(error: &(dyn std::error::Error + 'static), tls: bool) -> Failure {
    if is_tls_failure(error, tls) {
        Failure::Tls(chain(error))
    } else {
        Failure::Other(chain(error))
    }
}

/// One established stream: where to put frames, and the answers' half (which
/// ends when the stream does).
struct Stream {
    tx: mpsc::Sender<Box<pb::PeerFrame>>,
    responses: tonic::Streaming<pb::PeerFrame>,
    peer: ProcessId,
}

async fn open(addr: SocketAddr, context: &Context) -> Result<Stream, Failure> {
    // A bare connect first: its error says plainly whether anything listens.
    match tokio::net::TcpStream::connect(addr).await {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Failure::Refused);
        }
        Err(e) => return Err(Failure::Other(e.to_string())),
        Ok(_) => {}
    }
    let endpoint = endpoint(addr, context.tls.as_deref()).map_err(|e| Failure::Other(chain(&e)))?;
    let channel: Channel = endpoint
        .connect()
        .await
        .map_err(|e| connect_failure(&e, context.tls.is_some()))?;
    let mut client = pb::peer_client::PeerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let nonce = handshake::nonce().ok_or_else(|| Failure::Other("no randomness".into()))?;
    let key = match context.sealer.read() {
        Ok(sealer) => match &*sealer {
            Sealer::Keyed(ring) => ring.primary().cloned(),
            Sealer::Plain => None,
        },
        Err(_) => None,
    };
    let (tx, rx) = mpsc::channel::<Box<pb::PeerFrame>>(256);
    let hello = pb::PeerFrame {
        kind: Some(pb::peer_frame::Kind::Hello(pb::Hello {
            from: Some(wire::process_to(&context.me)),
            nonce: nonce.to_vec(),
            key_id: key.as_ref().map(|k| k.id()).unwrap_or_default(),
        })),
    };
    tx.try_send(Box::new(hello))
        .map_err(|_| Failure::Other("cannot queue the hello".into()))?;
    let mut responses = client
        .exchange(ReceiverStream::new(rx).map(|frame| *frame))
        .await
        .map_err(
            |status| match connect_failure(&status, context.tls.is_some()) {
                // A server that refuses our certificate says so only once the
                // stream is tried (TLS 1.3 checks the caller's after its own).
                Failure::Tls(why) => Failure::Tls(why),
                _ => Failure::Other(format!("refused the stream: {}", status.message())),
            },
        )?
        .into_inner();
    let welcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, responses.message()).await {
        Ok(Ok(Some(pb::PeerFrame {
            kind: Some(pb::peer_frame::Kind::Welcome(welcome)),
        }))) => welcome,
        Ok(Err(status)) => return Err(Failure::Other(status.message().to_string())),
        Ok(_) => return Err(Failure::Other("answered without a Welcome".into())),
        Err(_) => return Err(Failure::Other("no Welcome in time".into())),
    };
    let peer =
        wire::process_from(welcome.me, "welcome.me").map_err(|e| Failure::Other(e.to_string()))?;
    if let Some(key) = &key {
        if !handshake::verify(
            key,
            handshake::Side::Welcome,
            &nonce,
            &welcome.nonce,
            &context.me,
            &peer,
            &welcome.mac,
        ) {
            return Err(Failure::Other(
                "its Welcome does not prove the cluster key".into(),
            ));
        }
        let proof = handshake::mac(
            key,
            handshake::Side::Hello,
            &nonce,
            &welcome.nonce,
            &context.me,
            &peer,
        );
        tx.try_send(Box::new(pb::PeerFrame {
            kind: Some(pb::peer_frame::Kind::Proof(pb::Proof { mac: proof })),
        }))
        .map_err(|_| Failure::Other("cannot queue the proof".into()))?;
    }
    Ok(Stream {
        tx,
        responses,
        peer,
    })
}

/// Tell the node a process is gone, if it is the one the node expects there.
async fn report_gone(addr: SocketAddr, evidence: GoneEvidence, context: &Context) -> bool {
    let expected = context
        .expected
        .lock()
        .ok()
        .and_then(|e| e.get(&addr).copied());
    let Some(process) = expected else {
        return true;
    };
    let gone = match evidence {
        GoneEvidence::Restarted { now } if now.incarnation <= process.incarnation => return true,
        _ => process,
    };
    context
        .inbox
        .send(Input::PeerGone {
            process: gone,
            evidence,
        })
        .await
        .is_ok()
}

/// The most a batch of several envelopes may take, encoded, with room left
/// for the frame around it: a peer refuses messages over [`MAX_MESSAGE`].
const BATCH_BYTES: usize = MAX_MESSAGE - 1024;

/// `first` and the envelopes queued behind it, as one frame: under load, one
/// message and one write for all that waited instead of one each. An envelope
/// that would take the batch over [`BATCH_BYTES`] is handed back, to start
/// the next frame.
fn with_waiting(
    first: Box<pb::Envelope>,
    queue: &mut mpsc::Receiver<Box<pb::Envelope>>,
) -> (pb::PeerFrame, Option<Box<pb::Envelope>>) {
    use prost::Message;
    // An envelope in a batch costs its length, the length's varint and a tag.
    let cost = |e: &pb::Envelope| {
        let len = e.encoded_len();
        len + prost::length_delimiter_len(len) + 1
    };
    let mut size = cost(&first);
    let mut envelopes = vec![*first];
    let mut left_over = None;
    while let Ok(next) = queue.try_recv() {
        size += cost(&next);
        if size > BATCH_BYTES {
            left_over = Some(next);
            break;
        }
        envelopes.push(*next);
    }
    let kind = match <[pb::Envelope; 1]>::try_from(envelopes) {
        Ok([only]) => pb::peer_frame::Kind::Envelope(only),
        Err(envelopes) => pb::peer_frame::Kind::Batch(pb::Batch { envelopes }),
    };
    (pb::PeerFrame { kind: Some(kind) }, left_over)
}

/// Keep a stream open to `addr` and pour the queue into it.
async fn peer_stream(
    addr: SocketAddr,
    mut queue: mpsc::Receiver<Box<pb::Envelope>>,
    context: Context,
    link: Arc<AtomicU8>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut had_stream = false;
    let mut failures: u32 = 0;
    // An envelope that did not fit the last frame: the next one starts with it.
    let mut left_over = None;
    loop {
        let stream = match open(addr, &context).await {
            Ok(stream) => stream,
            Err(failure) => {
                failures += 1;
                let refused = matches!(failure, Failure::Refused);
                let state = if refused {
                    LINK_REFUSED
                } else {
                    LINK_CONNECTING
                };
                link.store(state, Ordering::Relaxed);
                if refused && !report_gone(addr, GoneEvidence::ConnectionRefused, &context).await {
                    return;
                }
                let say = failures == 1 || failures.is_multiple_of(30);
                match failure {
                    Failure::Other(why) if say => {
                        tracing::debug!(target: "ra::transport", "no stream to {addr}: {why}; retrying");
                    }
                    Failure::Tls(why) if say => {
                        tracing::warn!(target: "ra::transport", "no TLS stream to {addr}: {why}; retrying");
                    }
                    _ => {}
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                if queue.is_closed() {
                    return;
                }
                continue;
            }
        };
        let Stream {
            tx,
            mut responses,
            peer,
        } = stream;
        failures = 0;
        backoff = Duration::from_millis(50);
        if !report_gone(addr, GoneEvidence::Restarted { now: peer }, &context).await {
            return;
        }
        if let Ok(mut expected) = context.expected.lock() {
            expected.insert(addr, peer);
        }
        if had_stream
            && context
                .inbox
                .send(Input::Reconnected { peer: addr })
                .await
                .is_err()
        {
            return;
        }
        had_stream = true;
        link.store(LINK_UP, Ordering::Relaxed);
        loop {
            let first = match left_over.take() {
                Some(envelope) => envelope,
                None => tokio::select! {
                    next = queue.recv() => match next {
                        Some(envelope) => envelope,
                        None => return,
                    },
                    answer = responses.message() => match answer {
                        // The callee sends nothing after its Welcome; any end
                        // of this half is the end of the stream.
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(target: "ra::transport", "stream to {addr} closed: {}", status.message());
                            break;
                        }
                    },
                },
            };
            // Let the tasks already woken run first: what they send this peer
            // then goes in the same frame.
            tokio::task::yield_now().await;
            let (frame, rest) = with_waiting(first, &mut queue);
            left_over = rest;
            if tx.send(Box::new(frame)).await.is_err() {
                break;
            }
        }
        // Reconnect at once: a refused connection now says the process died.
        link.store(LINK_CONNECTING, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(inbox: mpsc::Sender<Inbound>) -> Peers {
        let me = ProcessId::new("127.0.0.1:1".parse().expect("addr"), 1);
        Peers::new(
            me,
            inbox,
            Arc::default(),
            Arc::new(RwLock::new(Sealer::Plain)),
            None,
        )
    }

    /// A loopback address where nothing listens (a port just freed).
    fn nothing_listens() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("its address")
    }

    /// The addresses with a stream kept open (or being opened).
    fn open_to(peers: &Peers) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = peers.queues.keys().copied().collect();
        addrs.sort();
        addrs
    }

    async fn link_of(peers: &Peers, addr: SocketAddr, wanted: u8) {
        for _ in 0..200 {
            if peers.queues[&addr].link.load(Ordering::Relaxed) == wanted {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the stream to {addr} never reached link state {wanted}");
    }

    /// A stream nothing was sent on is closed after `IDLE_ROUNDS` rounds,
    /// unless it is watched, or what was queued may not have gone out (it
    /// never came up). A message resets the count.
    #[tokio::test]
    async fn idle_unwatched_streams_close_and_nothing_pending_is_lost() {
        let (inbox, _arrived) = mpsc::channel(1024);
        let mut peers = peers(inbox);
        let gone = nothing_listens();
        // Accepts TCP in the kernel's backlog but never answers: never up.
        let silent_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let silent = silent_listener.local_addr().expect("its address");
        let watched = nothing_listens();
        let process = |addr| ProcessId::new(addr, 7);
        peers.watch(&[process(gone), process(silent), process(watched)]);
        peers.watch(&[process(watched)]);
        link_of(&peers, gone, LINK_REFUSED).await;
        for _ in 1..IDLE_ROUNDS {
            peers.close_idle();
        }
        assert_eq!(open_to(&peers).len(), 3, "not idle long enough yet");
        let hello = Envelope {
            from: process("127.0.0.1:1".parse().expect("addr")),
            to: process(gone),
            clock: 1,
            body: crate::protocol::message::Body::WhichSet,
        };
        peers.send(&hello);
        peers.close_idle();
        assert_eq!(open_to(&peers).len(), 3, "a message starts the count again");
        for _ in 0..IDLE_ROUNDS {
            peers.close_idle();
        }
        let mut kept = vec![silent, watched];
        kept.sort();
        assert_eq!(
            open_to(&peers),
            kept,
            "the stream to a process gone closes; one never up and a watched one stay"
        );
    }

    fn envelope(clock: u64, padding: usize) -> pb::Envelope {
        pb::Envelope {
            from: Some(pb::Process {
                addr: "x".repeat(padding),
                incarnation: 1,
            }),
            to: None,
            clock,
            body: None,
        }
    }

    fn clocks(frame: &pb::PeerFrame) -> Vec<u64> {
        match &frame.kind {
            Some(pb::peer_frame::Kind::Envelope(one)) => vec![one.clock],
            Some(pb::peer_frame::Kind::Batch(batch)) => {
                batch.envelopes.iter().map(|e| e.clock).collect()
            }
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn a_lone_envelope_goes_as_itself() {
        let (_tx, mut queue) = mpsc::channel(8);
        let (frame, rest) = with_waiting(Box::new(envelope(1, 0)), &mut queue);
        assert!(matches!(
            frame.kind,
            Some(pb::peer_frame::Kind::Envelope(_))
        ));
        assert!(rest.is_none());
    }

    #[test]
    fn waiting_envelopes_go_in_few_frames_in_order_and_within_the_bound() {
        let (tx, mut queue) = mpsc::channel(PEER_QUEUE);
        // About 1 kB each, and two near the bound on their own: the bound cuts
        // the queue into several frames, and a big one starts a frame.
        for clock in 2..=100 {
            let padding = if clock % 40 == 0 {
                BATCH_BYTES - 100
            } else {
                1000
            };
            tx.try_send(Box::new(envelope(clock, padding)))
                .expect("room in the queue");
        }
        let mut seen = Vec::new();
        let mut frames = 0;
        let mut next = Some(Box::new(envelope(1, 1000)));
        while let Some(first) = next.take().or_else(|| queue.try_recv().ok()) {
            let (frame, rest) = with_waiting(first, &mut queue);
            let size = prost::Message::encoded_len(&frame);
            assert!(
                size <= MAX_MESSAGE,
                "a frame of {size} bytes, which a peer refuses"
            );
            seen.extend(clocks(&frame));
            frames += 1;
            next = rest;
        }
        assert_eq!(seen, (1..=100).collect::<Vec<_>>(), "lost or reordered");
        assert!(
            (4..10).contains(&frames),
            "{frames} frames for about 160 kB"
        );
    }
}
