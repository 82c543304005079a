//! The floor: a bare tonic echo over loopback TCP on the benchmark's own
//! runtime, timed one round trip at a time on one long-lived stream. An
//! uncontended acquire sends a request to each other member and waits for both
//! replies, each on a long-lived stream like this one, so it cannot beat this
//! figure; its ratio to it (`acquire_vs_floor`) is what the code adds, and it
//! moves much less with the machine's load than either figure alone.

use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

use super::footprint::micros;
use crate::wire::floor_pb::Ping;
use crate::wire::floor_pb::floor_client::FloorClient;
use crate::wire::floor_pb::floor_server::{Floor, FloorServer};

struct Echo;

#[tonic::async_trait]
impl Floor for Echo {
    type EchoStream = Pin<Box<dyn Stream<Item = Result<Ping, Status>> + Send>>;

    async fn echo(
        &self,
        request: Request<Streaming<Ping>>,
    ) -> Result<Response<Self::EchoStream>, Status> {
        Ok(Response::new(Box::pin(request.into_inner())))
    }
}

/// Round trips on one stream, `warmup` untimed then `timed` timed, in µs.
pub async fn round_trips(warmup: u64, timed: u64) -> Result<Vec<f64>> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .context("cannot bind the floor's echo server")?;
    let addr = listener
        .local_addr()
        .context("the floor's echo server has no address")?;
    // As the nodes' own server and client: no Nagle delay on either side.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(
        Server::builder()
            .add_service(FloorServer::new(Echo))
            .serve_with_incoming(incoming),
    );
    let result = async {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .context("the floor's address")?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .context("cannot reach the floor's echo server")?;
        let (pings, rx) = mpsc::channel(1);
        let mut pongs = FloorClient::new(channel)
            .echo(ReceiverStream::new(rx))
            .await
            .context("the echo server refused the stream")?
            .into_inner();
        let mut samples = Vec::with_capacity(usize::try_from(timed).unwrap_or(0));
        for seq in 0..warmup.saturating_add(timed) {
            let started = Instant::now();
            pings
                .send(Ping { seq })
                .await
                .context("the echo stream closed")?;
            let pong = tokio::time::timeout(Duration::from_secs(10), pongs.next())
                .await
                .context("gave up waiting for an echo")?
                .context("the echo stream ended")?
                .context("the echo stream failed")?;
            anyhow::ensure!(pong.seq == seq, "echo {} for ping {seq}", pong.seq);
            if seq >= warmup {
                samples.push(micros(started.elapsed()));
            }
        }
        anyhow::Ok(samples)
    }
    .await;
    server.abort();
    result
}
