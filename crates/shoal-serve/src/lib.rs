//! The accept loop shoal's servers share (the tracker, the agent's piece server and control
//! API), so that a slow or idle client costs a bounded, short-lived descriptor.
//!
//! [`serve`] takes an axum [`Router`] and a [`TcpListener`], as `axum::serve` does, and adds
//! the limits nginx and hyper apply by default but `axum::serve` does not, set by
//! [`ServeLimits`]:
//!
//! - a **header timeout**: a client that has not sent a whole request head within it is
//!   disconnected (hyper's `header_read_timeout`; its clock also runs while a keep-alive
//!   connection waits for its next request);
//! - an **idle timeout**: a connection on which no byte moved for that long is closed once no
//!   request is in flight on it;
//! - a **total connection cap** and a **per-address cap**: a connection beyond either is
//!   closed as soon as it is accepted, as nginx closes connections beyond
//!   `worker_connections`; the total is kept below the process's descriptor limit, whose soft
//!   value [`raise_nofile_limit`] lifts to the hard one.
//!
//! With a [`ServerTls`] ([`serve_tls`]), every connection is TLS: its handshake must finish
//! within the header timeout.
//!
//! Handlers see the client's address as axum's `ConnectInfo<SocketAddr>`, and the listener's
//! idle timeout as an [`IdleTimeout`]. A connection taken over by an upgrade (a proxy's
//! `CONNECT` tunnel, a WebSocket) keeps its place under the caps until it closes; the idle
//! timeout no longer watches it, so a handler that holds one open closes it when idle itself.

mod gate;
mod idle;
mod tls;

pub use tls::{ServerTls, TlsError};

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_service::Service;

use self::gate::{Gate, Ticket};
use self::idle::{Activity, Tracked};

/// The listener's idle timeout, in every request's extensions: a handler that takes its
/// connection over (a WebSocket) closes it after this long without use, as [`serve`] closes
/// an idle HTTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleTimeout(pub Duration);

/// How long a slow or idle client may hold a connection, and how many connections are held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeLimits {
    /// A client must send a whole request head within this long of the server starting to
    /// read one. 30 s: hyper's default, half nginx's `client_header_timeout`.
    pub header_timeout: Duration,
    /// A connection with no request in flight and no byte moved for this long is closed.
    /// 30 s, under nginx's `keepalive_timeout` of 75 s: an agent reconnects cheaply.
    pub idle_timeout: Duration,
    /// Connections held at once; more are closed at once. Lowered at start to three quarters
    /// of the descriptor limit, leaving the rest for files, stores and outgoing connections.
    pub max_connections: usize,
    /// Connections held at once from one IP address; more from it are closed at once.
    pub max_per_address: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_connections: 8192,
            max_per_address: 256,
        }
    }
}

impl ServeLimits {
    /// These limits with the connection caps lowered to fit `descriptors` open files.
    pub fn within_descriptors(mut self, descriptors: u64) -> Self {
        let fit = usize::try_from(descriptors / 4 * 3)
            .unwrap_or(usize::MAX)
            .max(1);
        self.max_connections = self.max_connections.min(fit);
        self.max_per_address = self.max_per_address.min(self.max_connections);
        self
    }
}

/// Raises the soft limit on open descriptors (`RLIMIT_NOFILE`) to the hard limit and returns
/// the soft limit now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to the hard one needs
        // no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, lets requests in flight finish, and returns once every connection is closed.
///
/// Raises the descriptor limit first ([`raise_nofile_limit`]) and fits the connection caps
/// under it ([`ServeLimits::within_descriptors`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_tls(listener, router, limits, None, shutdown).await
}

/// As [`serve`], and with `tls`, every connection speaks TLS (HTTP/1.1 inside).
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = match raise_nofile_limit() {
        Ok(descriptors) => limits.within_descriptors(descriptors),
        Err(error) => {
            tracing::warn!(%error, "reading the descriptor limit failed; connection caps as set");
            limits
        }
    };
    let gate = Gate::new(limits.max_connections, limits.max_per_address);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let (closing, _) = watch::channel(());
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_per_connection(&error) => continue,
            Err(error) => {
                // Out of descriptors, most likely: wait for some to be given back, as
                // `axum::serve` and hyper's examples do.
                tracing::error!(%error, "accepting a connection failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let Some(ticket) = gate.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection closed: over the connection caps");
            continue;
        };
        let connection = Connection {
            stream,
            ticket,
            tls: tls.clone(),
            handshake_timeout: limits.header_timeout,
            http: HttpConnection {
                peer,
                router: router.clone(),
                http: http.clone(),
                idle_timeout: limits.idle_timeout,
                closing: closing.subscribe(),
            },
        };
        tokio::spawn(connection.run());
    }
    drop(listener);
    closing.send_replace(());
    closing.closed().await;
    Ok(())
}

/// Accept errors about one connection that went away before it was accepted.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection, before its TLS handshake if any.
struct Connection {
    stream: TcpStream,
    /// Counts the connection against the caps until its stream is dropped: when it closes,
    /// or, for a connection upgraded to a tunnel (a proxy's `CONNECT`), when the tunnel ends.
    ticket: Ticket,
    tls: Option<ServerTls>,
    /// How long a TLS handshake may take: the header timeout, since it comes before the head.
    handshake_timeout: Duration,
    http: HttpConnection,
}

impl Connection {
    async fn run(self) {
        let activity = Activity::new();
        let stream = Tracked::new(self.stream, activity.clone(), self.ticket);
        let Some(tls) = self.tls else {
            return self.http.serve(TokioIo::new(stream), activity).await;
        };
        let peer = self.http.peer;
        match tokio::time::timeout(self.handshake_timeout, tls.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.http.serve(TokioIo::new(stream), activity).await,
            Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    }
}

/// What an accepted connection needs to serve HTTP until it closes.
struct HttpConnection {
    peer: SocketAddr,
    router: Router,
    http: http1::Builder,
    idle_timeout: Duration,
    /// Changes when the server stops; dropped when the connection closes.
    closing: watch::Receiver<()>,
}

impl HttpConnection {
    async fn serve<I>(mut self, io: TokioIo<I>, activity: Activity)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (peer, router, idle) = (self.peer, self.router, IdleTimeout(self.idle_timeout));
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(idle);
            let mut router = router.clone();
            async move { Ok::<_, Infallible>(router.call(request).await.unwrap_or_else(|e| match e {})) }
        });
        // With upgrades: a proxy's `CONNECT` tunnel or the agent RPC's WebSocket takes the
        // connection over.
        let connection = self.http.serve_connection(io, service).with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let mut closing = false;
        loop {
            let idle_at = activity.last() + self.idle_timeout;
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep_until(idle_at), if !closing => {
                    if activity.last() + self.idle_timeout <= tokio::time::Instant::now() {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
                _ = self.closing.changed(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
