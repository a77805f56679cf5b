//! The fault-injecting origin: configuration, the request log, and the decision of what each
//! request gets. Wire handling lives in `http1`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderMap;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use crate::http1::{self, Body, Fault, RangeSpec, Request, Response};
use crate::peer_routes::PeerRoutes;
use crate::tls;

/// Where test servers listen: loopback, on a port the system picks.
pub(crate) const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// How an [`Origin`] behaves. `Default` is a well-behaved server for empty content; every fault
/// is off by default.
#[derive(Clone, Debug)]
pub struct OriginConfig {
    /// The file, served at every path.
    pub content: Bytes,
    /// Per-connection pacing of file bodies, in bytes per second (token bucket with ~50 ms of burst).
    pub rate_limit: Option<u64>,
    /// Honour `Range` (default true); false: always `200` with the whole body, no `Accept-Ranges`.
    pub ranges: bool,
    /// Send `Content-Length` (default true); false: chunked transfer encoding and no ranges.
    pub content_length: bool,
    /// Number of `302` hops: a request whose query lacks `hop=N` or has N below this is redirected
    /// to the same path with `hop=N+1` (absolute `Location`); only the last hop serves the file.
    pub redirects: u32,
    /// Every request is answered `302` to this absolute URL (another origin, say).
    pub redirect_to: Option<String>,
    /// The first this-many requests get `fail_status` with a short body.
    pub fail_first: u32,
    /// The status of the `fail_first` failures (default 503).
    pub fail_status: u16,
    /// `Retry-After: secs` on `fail_first` and `status` responses.
    pub retry_after: Option<u32>,
    /// Every request gets this status with a short body (no file).
    pub status: Option<u16>,
    /// File bodies longer than this are cut after this many bytes by an abortive close (RST).
    pub reset_after: Option<u64>,
    /// How many responses `reset_after` cuts (default 1); only bodies it actually cuts count.
    pub reset_count: u32,
    /// File bodies longer than this send this many bytes and then nothing, keeping the socket
    /// open until the client closes it or the origin stops.
    pub stall_after: Option<u64>,
    /// How many responses `stall_after` stalls (default 1); a body already cut by
    /// `reset_after` is not stalled, and only bodies it actually stalls count.
    pub stall_count: u32,
    /// Every `206` except one starting at byte 0 carries a `Content-Range` shifted by +65536
    /// (start and end, so its length still matches); the body is the range asked for.
    pub wrong_content_range: bool,
    /// After this many requests, requests with a `Range` get `200` and the whole body.
    pub full_on_ranges_after: Option<u32>,
    /// After this many requests the file becomes `content_after` (new `ETag`, `Last-Modified`).
    pub etag_changes_after: Option<u32>,
    /// The file that `etag_changes_after` switches to.
    pub content_after: Bytes,
    /// Wait before sending the response headers of every response.
    pub first_byte_delay: Duration,
    /// Requests whose `Range` is `bytes=A-B` of this many bytes or more (a piece, a segment;
    /// not a probe's `bytes=0-0` or `bytes=0-`) are logged when they come but answered only
    /// once [`Origin::release`] is called: a test can then see what a client does before it
    /// has those bytes.
    pub hold_ranges_of: Option<u64>,
    /// Raw `Content-Disposition` value to send with the file.
    pub content_disposition: Option<String>,
    /// Required `Authorization: Basic` credentials (user, password); otherwise `401` with
    /// `WWW-Authenticate: Basic realm="shoal-testkit"`.
    pub basic_auth: Option<(String, String)>,
    /// Required request header (name, exact value); otherwise `403`.
    pub required_header: Option<(String, String)>,
    /// Send a strong `ETag` derived from the content (default true).
    pub etag: bool,
    /// Send `Last-Modified` (default true); it changes, by at least a second, with the content.
    pub last_modified: bool,
    /// Serve HTTPS with a self-signed certificate for `127.0.0.1` and `localhost`.
    pub tls: bool,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            content: Bytes::new(),
            rate_limit: None,
            ranges: true,
            content_length: true,
            redirects: 0,
            redirect_to: None,
            fail_first: 0,
            fail_status: 503,
            retry_after: None,
            status: None,
            reset_after: None,
            reset_count: 1,
            stall_after: None,
            stall_count: 1,
            wrong_content_range: false,
            full_on_ranges_after: None,
            etag_changes_after: None,
            content_after: Bytes::new(),
            first_byte_delay: Duration::ZERO,
            hold_ranges_of: None,
            content_disposition: None,
            basic_auth: None,
            required_header: None,
            etag: true,
            last_modified: true,
            tls: false,
        }
    }
}

/// One request as the origin saw it, recorded before its response was sent.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// Index of the TCP connection it came on (0 for the first connection accepted).
    pub connection: u64,
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The request target: path and query.
    pub path: String,
    /// The raw `Range` header.
    pub range: Option<String>,
    /// `Range: bytes=a-b` as `(a, Some(b))`, `bytes=a-` as `(a, None)`; `None` for anything else.
    pub parsed_range: Option<(u64, Option<u64>)>,
    /// The raw `If-Range` header.
    pub if_range: Option<String>,
    /// All request headers.
    pub headers: HeaderMap,
    /// The status answered.
    pub status: u16,
    /// File body bytes written so far for this request (short error bodies are not counted).
    pub body_bytes: u64,
}

/// A running test origin; dropping it stops the server and closes every connection.
pub struct Origin {
    addr: SocketAddr,
    base: String,
    shared: Arc<Shared>,
    ca_cert_pem: Option<String>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// The accept loop while serving; `None` while down (see [`Origin::go_down`]).
    serving: Mutex<Option<Serving>>,
    runtime: Option<Runtime>,
}

/// The running accept loop, and word of its end: its listener and connections are closed
/// when the word comes.
struct Serving {
    task: tokio::task::JoinHandle<()>,
    ended: std::sync::mpsc::Receiver<()>,
}

/// Sends word when the accept loop (and with it the listener) is dropped.
struct EndWord(std::sync::mpsc::Sender<()>);

impl Drop for EndWord {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Origin {
    /// Starts serving on `127.0.0.1:0`. The server runs on its own runtime, so this may be
    /// awaited from any runtime (see [`Origin::start_blocking`] for synchronous tests).
    pub async fn start(config: OriginConfig) -> Origin {
        Origin::start_blocking(config)
    }

    /// Like [`Origin::start`], for tests without a runtime (e.g. ones that run the CLI binary).
    ///
    /// # Panics
    /// If the loopback socket or the runtime cannot be created: a test cannot go on without them.
    pub fn start_blocking(config: OriginConfig) -> Origin {
        Origin::start_with(config, None, LOOPBACK)
    }

    /// An origin that answers as a peer too (see [`crate::Peer`]), listening on `bind`.
    pub(crate) fn start_with(
        config: OriginConfig,
        peer: Option<PeerRoutes>,
        bind: SocketAddr,
    ) -> Origin {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shoal-testkit-origin")
            .enable_all()
            .build()
            .expect("origin runtime");
        let listener = std::net::TcpListener::bind(bind)
            .unwrap_or_else(|e| panic!("cannot listen on {bind}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("listener address");
        let tls = config.tls.then(tls::self_signed);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{addr}");
        let ca_cert_pem = tls.as_ref().map(|t| t.cert_pem.clone());
        let shared = Arc::new(Shared::new(config, peer, base.clone()));
        let acceptor = tls.map(|t| t.acceptor);
        let serving = serve_on(&runtime, listener, acceptor.clone(), shared.clone());
        Origin {
            addr,
            base,
            shared,
            ca_cert_pem,
            acceptor,
            serving: Mutex::new(Some(serving)),
            runtime: Some(runtime),
        }
    }

    /// Goes down as a server whose process died: the listening socket is closed, so new
    /// connections are refused, and every open connection is closed mid-response. Returns once
    /// the listener is closed. Does nothing when already down.
    ///
    /// # Panics
    /// If the accept loop does not end within 10 s.
    pub fn go_down(&self) {
        let serving = self
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(serving) = serving {
            serving.task.abort();
            serving
                .ended
                .recv_timeout(Duration::from_secs(10))
                .expect("the origin's accept loop ends when aborted");
        }
    }

    /// Serves again on the same address after [`Origin::go_down`], with the same file and
    /// request log. Does nothing when serving.
    ///
    /// # Panics
    /// If the address cannot be bound again.
    pub fn come_back(&self) {
        let mut serving = self.serving.lock().unwrap_or_else(|e| e.into_inner());
        if serving.is_some() {
            return;
        }
        let listener =
            std::net::TcpListener::bind(self.addr).expect("bind the origin's address again");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let runtime = self
            .runtime
            .as_ref()
            .expect("a running origin has its runtime");
        *serving = Some(serve_on(
            runtime,
            listener,
            self.acceptor.clone(),
            self.shared.clone(),
        ));
    }

    /// Whether it is serving (not [`Origin::go_down`]).
    pub fn is_up(&self) -> bool {
        self.serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// `http://127.0.0.1:PORT/path` (`https://` with TLS); a leading `/` in `path` is optional.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// The address the origin listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request seen so far, in arrival order, with `body_bytes` as of now.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .state()
            .log
            .iter()
            .map(|(record, sent)| RequestRecord {
                body_bytes: sent.load(Ordering::Relaxed),
                ..record.clone()
            })
            .collect()
    }

    /// Answers the requests [`OriginConfig::hold_ranges_of`] holds, and every later one at
    /// once.
    pub fn release(&self) {
        self.shared.released.send_replace(true);
    }

    /// File body bytes written to sockets in total.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_sent.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The most requests that were ever being answered at once, on any connections: a client
    /// that keeps one request open at a time sees 1 even if its pool opened a second connection.
    pub fn most_at_once(&self) -> u64 {
        self.shared.most_answering.load(Ordering::SeqCst)
    }

    /// Replaces the file; the `ETag` and `Last-Modified` change with it.
    pub fn set_content(&self, body: Bytes) {
        self.shared.state().replace_file(body);
    }

    /// The file currently served.
    pub fn content(&self) -> Bytes {
        self.shared.state().file.content.clone()
    }

    /// The `ETag` currently sent (quoted), `None` when `etag` is off.
    pub fn etag(&self) -> Option<String> {
        let state = self.shared.state();
        self.shared.config.etag.then(|| state.file.etag.clone())
    }

    /// The `Last-Modified` currently sent, `None` when `last_modified` is off.
    pub fn last_modified(&self) -> Option<String> {
        let state = self.shared.state();
        self.shared
            .config
            .last_modified
            .then(|| state.file.last_modified.clone())
    }

    /// The self-signed certificate (PEM) to trust, when serving TLS.
    pub fn ca_cert_pem(&self) -> Option<String> {
        self.ca_cert_pem.clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropping the runtime drops every task, closing the listener and all connections
            // (stalled ones included); `shutdown_background` is the variant allowed inside async code.
            runtime.shutdown_background();
        }
    }
}

/// Starts the accept loop for `listener` on `runtime`.
fn serve_on(
    runtime: &Runtime,
    listener: std::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) -> Serving {
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener).expect("tokio listener")
    };
    let (tx, ended) = std::sync::mpsc::channel();
    let task = runtime.spawn(accept_loop(listener, acceptor, shared, EndWord(tx)));
    Serving { task, ended }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    end: EndWord,
) {
    // Locals drop in reverse order: the connections, then the listener, then the word that
    // both are closed.
    let _end = end;
    let listener = listener;
    // The connections belong to this loop: aborting it (`Origin::go_down`) closes them all.
    let mut connections = tokio::task::JoinSet::new();
    // Ends when aborted, or when the runtime is shut down by `Origin::drop`.
    loop {
        // Finished connections are let go of, so a long test does not accumulate them.
        while connections.try_join_next().is_some() {}
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let connection = shared.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            // Small writes (chunk framing, paced chunks) must leave at once, not wait on Nagle.
            let _ = tcp.set_nodelay(true);
            match acceptor {
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, connection, &shared).await;
                    }
                }
                None => serve(tcp, connection, &shared).await,
            }
        });
    }
}

async fn serve<C: http1::Conn>(mut conn: C, connection: u64, shared: &Shared) {
    let mut buf = Vec::new();
    // One iteration per request; ends when the client closes or a response closes.
    loop {
        let request = match http1::read_request(&mut conn, &mut buf).await {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => return,
        };
        let _answering = Answering::start(shared);
        let (response, sent) = shared.respond(connection, &request);
        let held = match request.header("range").and_then(http1::parse_range) {
            Some(RangeSpec::From(start, Some(end))) => shared
                .config
                .hold_ranges_of
                .is_some_and(|least| end.saturating_sub(start) + 1 >= least),
            _ => false,
        };
        if held {
            let mut released = shared.released.subscribe();
            // The sender lives as long as `shared`.
            let _ = released.wait_for(|released| *released).await;
        }
        let counters = http1::Counters {
            request: &sent,
            total: &shared.bytes_sent,
        };
        match http1::write_response(&mut conn, &request, response, counters).await {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
    }
}

struct Shared {
    config: OriginConfig,
    peer: Option<PeerRoutes>,
    base: String,
    bytes_sent: AtomicU64,
    connections: AtomicU64,
    /// Requests read whose response is not written yet, and the most there ever were.
    answering: AtomicU64,
    most_answering: AtomicU64,
    /// Whether [`Origin::release`] was called.
    released: tokio::sync::watch::Sender<bool>,
    state: Mutex<State>,
}

/// One request being answered, from its head read to its response's last byte written.
struct Answering<'a>(&'a Shared);

impl<'a> Answering<'a> {
    fn start(shared: &'a Shared) -> Self {
        let now = shared.answering.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most_answering.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Everything a response decision reads or changes, under one lock so that the request log's
/// order is the order in which requests were counted.
struct State {
    file: FileState,
    log: Vec<(RequestRecord, Arc<AtomicU64>)>,
    resets: u32,
    stalls: u32,
    switched: bool,
}

struct FileState {
    content: Bytes,
    etag: String,
    last_modified: String,
    modified_secs: u64,
}

impl FileState {
    fn new(content: Bytes, previous_secs: Option<u64>) -> FileState {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // HTTP dates have one-second resolution: a replaced file must never look unmodified.
        let modified_secs = previous_secs.map_or(now, |p| now.max(p + 1));
        FileState {
            etag: format!("\"{}\"", &crate::sha256_hex(&content)[..32]),
            last_modified: http1::http_date(modified_secs),
            modified_secs,
            content,
        }
    }
}

impl State {
    fn replace_file(&mut self, content: Bytes) {
        self.file = FileState::new(content, Some(self.file.modified_secs));
    }
}

impl Shared {
    fn new(config: OriginConfig, peer: Option<PeerRoutes>, base: String) -> Shared {
        let file = FileState::new(config.content.clone(), None);
        Shared {
            config,
            peer,
            base,
            bytes_sent: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            answering: AtomicU64::new(0),
            most_answering: AtomicU64::new(0),
            released: tokio::sync::watch::Sender::new(false),
            state: Mutex::new(State {
                file,
                log: Vec::new(),
                resets: 0,
                stalls: 0,
                switched: false,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take the origin down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts and records `request` and decides its response.
    fn respond(&self, connection: u64, request: &Request) -> (Response, Arc<AtomicU64>) {
        let mut state = self.state();
        let number = state.log.len() as u64 + 1;
        if let Some(after) = self.config.etag_changes_after {
            if number > u64::from(after) && !state.switched {
                state.switched = true;
                state.replace_file(self.config.content_after.clone());
            }
        }
        let range = request.header("range").map(str::to_owned);
        let spec = range.as_deref().and_then(http1::parse_range);
        let response = self.decide(&mut state, number, request, spec);
        let record = RequestRecord {
            connection,
            method: request.method.clone(),
            path: request.target.clone(),
            parsed_range: match spec {
                Some(RangeSpec::From(start, end)) => Some((start, end)),
                Some(RangeSpec::Suffix(_)) | None => None,
            },
            range,
            if_range: request.header("if-range").map(str::to_owned),
            headers: request.headers.clone(),
            status: response.status,
            body_bytes: 0,
        };
        let sent = Arc::new(AtomicU64::new(0));
        state.log.push((record, sent.clone()));
        (response, sent)
    }

    fn decide(
        &self,
        state: &mut State,
        number: u64,
        request: &Request,
        spec: Option<RangeSpec>,
    ) -> Response {
        if let Some(answer) = self.peer.as_ref().and_then(|p| p.answer(request)) {
            return answer;
        }
        let config = &self.config;
        let mut response = match self.refusal(number, request) {
            Some(refusal) => refusal,
            None => self.serve_file(state, number, request, spec),
        };
        response.delay = config.first_byte_delay;
        response
    }

    /// Every response that is not the file: forced statuses, auth, redirects, bad methods.
    fn refusal(&self, number: u64, request: &Request) -> Option<Response> {
        let config = &self.config;
        let failing = config
            .status
            .or((number <= u64::from(config.fail_first)).then_some(config.fail_status));
        if let Some(status) = failing {
            let mut response = Response::short(status);
            if let Some(secs) = config.retry_after {
                response.header("Retry-After", secs.to_string());
            }
            return Some(response);
        }
        if let Some((user, password)) = &config.basic_auth {
            let expected = format!("Basic {}", http1::base64(&format!("{user}:{password}")));
            if request.header("authorization") != Some(expected.as_str()) {
                let mut response = Response::short(401);
                response.header("WWW-Authenticate", "Basic realm=\"shoal-testkit\"".into());
                return Some(response);
            }
        }
        if let Some((name, value)) = &config.required_header {
            let present = request
                .headers
                .get_all(name.as_str())
                .iter()
                .any(|v| v.as_bytes() == value.as_bytes());
            if !present {
                return Some(Response::short(403));
            }
        }
        if let Some(location) = &config.redirect_to {
            let mut response = Response::short(302);
            response.header("Location", location.clone());
            return Some(response);
        }
        let hop = http1::query_hop(&request.target);
        if hop < config.redirects {
            let mut response = Response::short(302);
            let location = format!("{}{}", self.base, http1::with_hop(&request.target, hop + 1));
            response.header("Location", location);
            return Some(response);
        }
        if request.method != "GET" && request.method != "HEAD" {
            let mut response = Response::short(405);
            response.header("Allow", "GET, HEAD".into());
            return Some(response);
        }
        None
    }

    fn serve_file(
        &self,
        state: &mut State,
        number: u64,
        request: &Request,
        spec: Option<RangeSpec>,
    ) -> Response {
        let config = &self.config;
        let file = &state.file;
        let size = file.content.len() as u64;
        let mut headers = vec![("Content-Type", "application/octet-stream".to_owned())];
        if config.etag {
            headers.push(("ETag", file.etag.clone()));
        }
        if config.last_modified {
            headers.push(("Last-Modified", file.last_modified.clone()));
        }
        if let Some(disposition) = &config.content_disposition {
            headers.push(("Content-Disposition", disposition.clone()));
        }
        let ranges = config.ranges && config.content_length;
        if ranges {
            headers.push(("Accept-Ranges", "bytes".to_owned()));
        }
        let full_now = config
            .full_on_ranges_after
            .is_some_and(|after| number > u64::from(after));
        let validator_ok = request.header("if-range").is_none_or(|v| {
            (config.etag && v == file.etag) || (config.last_modified && v == file.last_modified)
        });
        let wanted = if request.header("range").is_some() && ranges && !full_now && validator_ok {
            spec
        } else {
            None
        };
        let (status, data) = match wanted.map(|spec| spec.resolve(size)) {
            None => (200, file.content.clone()),
            Some(None) => {
                let mut response = Response::short(416);
                response.headers = headers;
                response.header("Content-Range", format!("bytes */{size}"));
                return response;
            }
            Some(Some((start, end))) => {
                let shift = if config.wrong_content_range && start != 0 {
                    65536
                } else {
                    0
                };
                headers.push((
                    "Content-Range",
                    format!("bytes {}-{}/{size}", start + shift, end + shift),
                ));
                (206, file.content.slice(start as usize..=end as usize))
            }
        };
        let fault = if request.method == "HEAD" {
            None
        } else {
            let len = data.len() as u64;
            claim(
                &mut state.resets,
                config.reset_count,
                config.reset_after,
                len,
            )
            .map(Fault::Reset)
            .or_else(|| {
                claim(
                    &mut state.stalls,
                    config.stall_count,
                    config.stall_after,
                    len,
                )
                .map(Fault::Stall)
            })
        };
        Response {
            status,
            headers,
            body: Body::File {
                data,
                chunked: !config.content_length,
                fault,
                rate: config.rate_limit,
            },
            delay: Duration::ZERO,
        }
    }
}

/// Takes one of `count` fault slots when a body of `len` bytes is long enough to be cut at `after`.
fn claim(used: &mut u32, count: u32, after: Option<u64>, len: u64) -> Option<u64> {
    let after = after.filter(|&after| len > after && *used < count)?;
    *used += 1;
    Some(after)
}

impl http1::Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl http1::Conn for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}
