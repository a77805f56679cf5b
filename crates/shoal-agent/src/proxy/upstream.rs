//! Reaching an origin for the proxy: the host named by the client resolved, the agent's own
//! listeners refused, and a TCP connection to an address that was checked (not a second
//! resolution, which could answer otherwise), made within [`CONNECT_TIMEOUT`] (else `504`,
//! for a forwarded request and a `CONNECT` tunnel alike).
//!
//! And how long an origin may keep the proxy waiting once connected, as nginx's
//! `proxy_read_timeout`: the head of its answer must come within the timeout of the request's
//! last byte ([`Sending`], [`answer_within`]), and its body may not pause for longer between
//! two reads ([`Watched`]). Without it, an origin that accepts and never answers holds the
//! client, and the listener's connection slot, forever. The clock runs only while the proxy
//! waits on the origin: a large upload, or a client slow to take the body, is not the
//! origin's silence.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use shoal_core::SafeUrl;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tracing::warn;

/// How long connecting to an origin may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an origin could not be reached.
#[derive(Debug, Error)]
pub(super) enum UpstreamError {
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
    #[error(
        "{host}:{port} is this agent's own listener ({addr}); the proxy never forwards to \
         the agent itself"
    )]
    Own {
        host: String,
        port: u16,
        addr: SocketAddr,
    },
    #[error("connecting to {addr} ({host}) failed: {message}")]
    Connect {
        host: String,
        addr: SocketAddr,
        message: String,
    },
    #[error("connecting to {addr} ({host}): no answer within {}", seconds(*after))]
    ConnectTimeout {
        host: String,
        addr: SocketAddr,
        after: Duration,
    },
}

impl UpstreamError {
    /// The status a client is answered with: the agent's own listener is refused (`403`);
    /// an origin that does not take the connection in time is a gateway's timeout (`504`);
    /// any other failure, a bad gateway (`502`).
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Self::Own { .. } => StatusCode::FORBIDDEN,
            Self::ConnectTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Resolve { .. } | Self::Connect { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Connects to `host`:`port`, unless it is one of `own`.
pub(super) async fn connect(
    host: &str,
    port: u16,
    own: &[SocketAddr],
) -> Result<TcpStream, UpstreamError> {
    let addrs = resolve_not_own(host, port, own).await?;
    let Some(&addr) = addrs.first() else {
        return Err(UpstreamError::Resolve {
            host: host.to_string(),
            message: "no address".to_string(),
        });
    };
    within(CONNECT_TIMEOUT, host, addr, TcpStream::connect(addr)).await
}

/// The connection `connecting` makes to `addr` (of `host`), unless it takes longer than
/// `limit`.
async fn within(
    limit: Duration,
    host: &str,
    addr: SocketAddr,
    connecting: impl Future<Output = io::Result<TcpStream>>,
) -> Result<TcpStream, UpstreamError> {
    match tokio::time::timeout(limit, connecting).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(UpstreamError::Connect {
            host: host.to_string(),
            addr,
            message: e.to_string(),
        }),
        Err(_) => Err(UpstreamError::ConnectTimeout {
            host: host.to_string(),
            addr,
            after: limit,
        }),
    }
}

/// A request body that tells when it has all gone to the origin: the head of the answer is
/// waited for from then on.
pub(super) struct Sending {
    body: Body,
    sent: watch::Sender<bool>,
}

impl Sending {
    /// `body`, and what turns `true` once its last byte went out (or closes when the body is
    /// dropped, which hyper does once it is done with it).
    pub(super) fn new(body: Body) -> (Self, watch::Receiver<bool>) {
        let (sent, watch) = watch::channel(false);
        (Self { body, sent }, watch)
    }
}

impl HttpBody for Sending {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            self.sent.send_replace(true);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        // hyper asks this instead of reading a body known to be empty (a GET's).
        let end = self.body.is_end_stream();
        if end {
            self.sent.send_replace(true);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// `answer` (the origin's head), or `None` when it did not come within `timeout` of the
/// request's last byte going out (`sent`, from [`Sending::new`]).
pub(super) async fn answer_within<F: Future>(
    answer: F,
    mut sent: watch::Receiver<bool>,
    timeout: Duration,
) -> Option<F::Output> {
    let silence = async {
        // A closed channel: the body was dropped, so it is not being sent any more either.
        let _ = sent.wait_for(|sent| *sent).await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        biased;
        answer = answer => Some(answer),
        () = silence => None,
    }
}

/// Why an origin's body passed through did not end as it should.
#[derive(Debug, Error)]
pub(super) enum BodyError {
    #[error("{url} sent nothing for {}s in the middle of its answer", .after.as_secs_f64())]
    Silent { url: SafeUrl, after: Duration },
    #[error(transparent)]
    Origin(#[from] hyper::Error),
}

/// The body of an origin's answer as it passes through, ended with [`BodyError::Silent`] when
/// the origin pauses for longer than the timeout: hyper then closes the client's connection
/// before the body's end (short of its `Content-Length`, or without the last chunk), so the
/// client never takes what came as the whole body.
pub(super) struct Watched {
    body: Incoming,
    url: SafeUrl,
    timeout: Duration,
    /// When the origin's silence runs out; armed by the first read that finds nothing.
    silence: Pin<Box<Sleep>>,
    /// Whether `silence` is armed: the proxy is waiting on the origin.
    waiting: bool,
    /// The origin connection's task, which reads the body: ended with it.
    connection: JoinHandle<Result<(), hyper::Error>>,
}

impl Watched {
    /// `body` of the answer from `url`, read on `connection`, pausing for at most `timeout`.
    pub(super) fn new(
        body: Incoming,
        url: SafeUrl,
        timeout: Duration,
        connection: JoinHandle<Result<(), hyper::Error>>,
    ) -> Self {
        Self {
            body,
            url,
            timeout,
            silence: Box::pin(tokio::time::sleep(timeout)),
            waiting: false,
            connection,
        }
    }
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            self.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::from)));
        }
        let timeout = self.timeout;
        if !self.waiting {
            self.waiting = true;
            self.silence.as_mut().reset(Instant::now() + timeout);
        }
        ready!(self.silence.as_mut().poll(cx));
        let url = self.url.clone();
        warn!(%url, "the origin sent nothing for {}; cutting the client's answer short", seconds(timeout));
        self.connection.abort();
        Poll::Ready(Some(Err(BodyError::Silent {
            url,
            after: timeout,
        })))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // The client is gone or the body is over: nothing more to read from the origin.
        self.connection.abort();
    }
}

/// A timeout as people write it: `60s`, `1.5s`.
pub(super) fn seconds(timeout: Duration) -> String {
    format!("{}s", timeout.as_secs_f64())
}

/// The addresses of `host`:`port`, unless one of them is one of `own`.
pub(super) async fn resolve_not_own(
    host: &str,
    port: u16,
    own: &[SocketAddr],
) -> Result<Vec<SocketAddr>, UpstreamError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| UpstreamError::Resolve {
            host: host.to_string(),
            message: e.to_string(),
        })?
        .collect();
    match addrs.iter().find(|a| is_own(**a, own)) {
        Some(&addr) => Err(UpstreamError::Own {
            host: host.to_string(),
            port,
            addr,
        }),
        None => Ok(addrs),
    }
}

/// Whether connecting to `target` would reach one of the listeners bound to `own`: the same
/// port on the same address, or on any address of this machine for a listener bound to all
/// of them.
fn is_own(target: SocketAddr, own: &[SocketAddr]) -> bool {
    let ip = target.ip().to_canonical();
    own.iter().filter(|o| o.port() == target.port()).any(|o| {
        let bound = o.ip().to_canonical();
        bound == ip || ip.is_unspecified() || (bound.is_unspecified() && is_local(ip))
    })
}

/// Whether `ip` is an address of this machine: only those can be bound.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn an_origin_that_does_not_take_the_connection_in_time_is_a_504() {
        let addr = addr("127.0.0.1:9");
        // A connection never made, however long it is waited for.
        let never = std::future::pending();
        let e = within(Duration::from_millis(10), "origin.test", addr, never)
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            e.to_string(),
            "connecting to 127.0.0.1:9 (origin.test): no answer within 0.01s"
        );
        let refused = crate::testing::refusing_url();
        let addr = refused.socket_addrs(|| None).unwrap()[0];
        let e = within(CONNECT_TIMEOUT, "127.0.0.1", addr, TcpStream::connect(addr))
            .await
            .unwrap_err();
        assert!(
            matches!(e, UpstreamError::Connect { .. }),
            "a refused connection: {e}"
        );
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn the_agents_own_listeners_are_recognised() {
        let own = [addr("127.0.0.1:7702"), addr("0.0.0.0:7701")];
        assert!(is_own(addr("127.0.0.1:7702"), &own));
        assert!(is_own(addr("0.0.0.0:7702"), &own));
        assert!(is_own(addr("127.0.0.1:7701"), &own));
        assert!(is_own(addr("127.3.2.1:7701"), &own));
        assert!(is_own(addr("[::ffff:127.0.0.1]:7701"), &own));
        assert!(!is_own(addr("127.0.0.2:7702"), &own));
        assert!(!is_own(addr("127.0.0.1:8080"), &own));
        // TEST-NET-1 is no address of this machine.
        assert!(!is_own(addr("192.0.2.1:7701"), &own));
    }
}
