//! A cap on concurrent connections to a server: each accepted connection holds
//! a permit for as long as it is open, and accepting waits while none is free
//! (further clients wait in the kernel's backlog rather than in our memory).
//! Optionally, a connection that sends nothing for a while is closed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// A connection that gives its permit back when it closes.
pub struct Limited<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
    /// Closed after this long without receiving a byte.
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
}

/// Accept from `incoming` at most `max` connections at a time, each closed
/// after `idle` without a byte received.
pub fn limit<S, T>(
    incoming: S,
    max: usize,
    idle: Option<Duration>,
) -> impl Stream<Item = std::io::Result<Limited<T>>>
where
    S: Stream<Item = std::io::Result<T>>,
{
    let permits = Arc::new(Semaphore::new(max.max(1)));
    // Take a free permit, then pair it with the next accepted connection.
    incoming.then(move |accepted| {
        let permits = permits.clone();
        async move {
            let io = accepted?;
            // Nothing closes the semaphore, so this only fails in theory.
            let permit = permits
                .acquire_owned()
                .await
                .map_err(std::io::Error::other)?;
            Ok(Limited {
                io,
                _permit: permit,
                idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            })
        }
    })
}

impl<T: Connected> Connected for Limited<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before
                    && let Some((limit, sleep)) = this.idle.as_mut()
                {
                    sleep.as_mut().reset(Instant::now() + *limit);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = match this.idle.as_mut() {
                    Some((_, sleep)) => sleep.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if expired {
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "idle connection closed",
                    )))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
