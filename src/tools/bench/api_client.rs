//! Acquire and release through a node's API socket, as `ra lock` does: one Hold
//! stream per entry on a connection kept for the run. Used on the benchmark's
//! own cluster and, with `ra bench --node`, on a node running as its own process.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::footprint::micros;
use crate::wire::pb;
use crate::wire::pb::lock_client::LockClient;

/// Longest wait for one grant or one stream's end.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The timed entries through the API, in µs from opening each stream.
pub struct ApiTimes {
    /// To the grant: what a program waits before it may act.
    pub granted: Vec<f64>,
    /// To the stream's end after the release (the node ends it once the
    /// release is done): the whole round.
    pub released: Vec<f64>,
}

/// Take `lock` and give it back `warmup + timed` times, timing the last `timed`.
pub async fn round_trips(
    client: &mut LockClient<Channel>,
    lock: &str,
    warmup: u64,
    timed: u64,
) -> Result<ApiTimes> {
    let capacity = usize::try_from(timed).unwrap_or(0);
    let mut times = ApiTimes {
        granted: Vec::with_capacity(capacity),
        released: Vec::with_capacity(capacity),
    };
    for i in 0..warmup.saturating_add(timed) {
        let started = Instant::now();
        let granted = hold_once(client, lock).await?;
        if i >= warmup {
            times.granted.push(micros(granted - started));
            times.released.push(micros(started.elapsed()));
        }
    }
    Ok(times)
}

/// One acquire and release; when the grant arrived.
async fn hold_once(client: &mut LockClient<Channel>, lock: &str) -> Result<Instant> {
    let (requests, rx) = mpsc::channel(2);
    let acquire = pb::HoldRequest {
        kind: Some(pb::hold_request::Kind::Acquire(pb::Acquire {
            lock: lock.into(),
            r#try: false,
            client: "ra bench".into(),
        })),
    };
    requests
        .send(acquire)
        .await
        .context("the Hold stream closed at once")?;
    let mut events = client
        .hold(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .context("the node refused the Hold stream")?
        .into_inner();
    let granted = loop {
        let event = tokio::time::timeout(STEP_TIMEOUT, events.message())
            .await
            .context("gave up waiting for an uncontended grant")?
            .context("the Hold stream failed")?;
        match event.and_then(|e| e.kind) {
            Some(pb::hold_event::Kind::Granted(_)) => break Instant::now(),
            Some(pb::hold_event::Kind::Queued(_) | pb::hold_event::Kind::Progress(_)) => {}
            other => bail!("an uncontended Hold ended with {other:?}"),
        }
    };
    let release = pb::HoldRequest {
        kind: Some(pb::hold_request::Kind::Release(pb::Release {})),
    };
    requests
        .send(release)
        .await
        .context("the Hold stream closed before the release")?;
    // Close our side and read the stream to its end, as a client that keeps
    // its connection should: dropping a stream the node is still ending makes
    // frames arrive on a reset stream, and h2 ends a connection that sees too
    // many of those ("too_many_internal_resets").
    drop(requests);
    let ended = async {
        while events.message().await?.is_some() {}
        anyhow::Ok(())
    };
    tokio::time::timeout(STEP_TIMEOUT, ended)
        .await
        .context("gave up waiting for a Hold stream to end")?
        .context("a Hold stream ended badly")?;
    Ok(granted)
}
