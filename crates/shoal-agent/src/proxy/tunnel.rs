//! `CONNECT host:port`: a plain TCP tunnel, opened after the same checks as a forwarded
//! request, its connection to the origin bounded as a forwarded request's (an origin that
//! does not take it in time is a `504`). What flows inside (TLS, mostly) is not looked at: an
//! `https://` download through the proxy comes from its origin, never from the swarm, and
//! the upstream timeout, which watches answers, cannot apply. A tunnel counts against the
//! listener's connection caps while it lasts (`shoal_serve` keeps the connection's place with
//! its stream) and is closed once no byte crossed it for the listener's idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

use super::{refuse, upstream, Proxy};

/// Answers `200` and then joins the client's connection to the origin's.
pub(super) async fn open(proxy: &Proxy, request: Request) -> Response {
    let Some(authority) = request.uri().authority().cloned() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "CONNECT needs HOST:PORT as its target".to_string(),
        );
    };
    let Some(port) = authority.port_u16() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("CONNECT {authority}: the port is missing"),
        );
    };
    let origin = match upstream::connect(authority.host(), port, &proxy.inner.own).await {
        Ok(stream) => stream,
        Err(e) => return refuse(e.status(), e.to_string()),
    };
    let idle = proxy.inner.idle;
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let moved = Arc::new(AtomicU64::new(0));
                let mut origin = Counted {
                    stream: origin,
                    moved: moved.clone(),
                };
                let copy = tokio::io::copy_bidirectional(&mut client, &mut origin);
                if let Some(Err(e)) = until_idle(copy, &moved, idle).await {
                    debug!(%authority, "tunnel closed: {e}");
                }
            }
            Err(e) => debug!(%authority, "the client's connection did not become a tunnel: {e}"),
        }
    });
    StatusCode::OK.into_response()
}

/// Runs `copy` until it ends (`Some`), or until `moved` stood still for `idle` (`None`).
async fn until_idle<T>(
    copy: impl std::future::Future<Output = T>,
    moved: &AtomicU64,
    idle: Duration,
) -> Option<T> {
    tokio::pin!(copy);
    let mut seen = 0;
    loop {
        tokio::select! {
            done = &mut copy => return Some(done),
            () = tokio::time::sleep(idle) => {
                let now = moved.load(Ordering::Relaxed);
                if now == seen {
                    return None;
                }
                seen = now;
            }
        }
    }
}

/// The origin's side of a tunnel, counting the bytes that cross it either way.
struct Counted {
    stream: TcpStream,
    moved: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        this.moved.fetch_add(read, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tunnel_ends_with_its_copy_or_once_idle() {
        let moved = AtomicU64::new(0);
        let idle = Duration::from_millis(20);
        assert_eq!(until_idle(async { 7 }, &moved, idle).await, Some(7));
        let stuck = std::future::pending::<()>();
        assert_eq!(until_idle(stuck, &moved, idle).await, None);
    }
}
