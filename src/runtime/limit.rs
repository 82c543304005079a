//! A cap on concurrent connections to a server: each accepted connection holds
//! a permit for as long as it is open, and accepting waits while none is free
//! (further clients wait in the kernel's backlog rather than in our memory).
//! Optionally, a connection that sends nothing for a while is closed.
//!
//! After a flood has come and gone (most of the connections open at the
//! peak are closed again), the allocator is asked to hand its free memory back
//! to the system: glibc keeps freed connection buffers in its arenas
//! otherwise, and the node's RSS would stay at the flood's level.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    load: Arc<Load>,
}

/// Connections open now and at the peak since memory was last given back.
#[derive(Default)]
struct Load {
    open: AtomicUsize,
    peak: AtomicUsize,
    trim_pending: AtomicBool,
}

/// A peak below this is ordinary traffic, not worth a trim.
const FLOOD: usize = 32;
/// Trim once this long after the flood ebbed, when its buffers are freed.
const TRIM_AFTER: Duration = Duration::from_secs(1);

impl<T> Drop for Limited<T> {
    fn drop(&mut self) {
        let load = &self.load;
        let open = load.open.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        let peak = load.peak.load(Ordering::Relaxed);
        // Ebbed: three quarters of the peak's connections are gone.
        if peak < FLOOD || open.saturating_mul(4) > peak {
            return;
        }
        if load.trim_pending.swap(true, Ordering::Relaxed) {
            return;
        }
        load.peak.store(open, Ordering::Relaxed);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            load.trim_pending.store(false, Ordering::Relaxed);
            return;
        };
        let load = self.load.clone();
        runtime.spawn(async move {
            tokio::time::sleep(TRIM_AFTER).await;
            give_back_free_memory();
            load.trim_pending.store(false, Ordering::Relaxed);
        });
    }
}

/// Return the allocator's free pages to the system (glibc only; elsewhere the
/// allocator decides for itself).
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
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
    let load = Arc::new(Load::default());
    // Take a free permit, then pair it with the next accepted connection.
    incoming.then(move |accepted| {
        let permits = permits.clone();
        let load = load.clone();
        async move {
            let io = accepted?;
            // Nothing closes the semaphore, so this only fails in theory.
            let permit = permits
                .acquire_owned()
                .await
                .map_err(std::io::Error::other)?;
            let open = load.open.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            load.peak.fetch_max(open, Ordering::Relaxed);
            Ok(Limited {
                io,
                _permit: permit,
                idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
                load,
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
