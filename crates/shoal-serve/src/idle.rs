//! When a byte last moved on a connection: [`Tracked`] wraps a stream and stamps each read
//! and write into an [`Activity`], which the idle timeout reads.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::gate::Ticket;

/// The time of the latest read or write, shared between a stream and its watchdog.
#[derive(Clone)]
pub(crate) struct Activity {
    inner: Arc<(Instant, AtomicU64)>,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new((Instant::now(), AtomicU64::new(0))),
        }
    }

    /// When a byte last moved (the connection's start if none has).
    pub(crate) fn last(&self) -> Instant {
        let (start, nanos) = &*self.inner;
        *start + Duration::from_nanos(nanos.load(Ordering::Relaxed))
    }

    fn stamp(&self) {
        let (start, nanos) = &*self.inner;
        let since = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        nanos.fetch_max(since, Ordering::Relaxed);
    }
}

/// A stream whose reads and writes of at least one byte stamp an [`Activity`].
pub(crate) struct Tracked<S> {
    stream: S,
    activity: Activity,
    /// The connection's place under the caps, given back when the stream is dropped.
    _ticket: Ticket,
}

impl<S> Tracked<S> {
    pub(crate) fn new(stream: S, activity: Activity, ticket: Ticket) -> Self {
        Self {
            stream,
            activity,
            _ticket: ticket,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.stamp();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.stamp();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.stamp();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
