//! The piece server: peers fetch the bytes of contents this agent holds with
//! `GET /v1/pieces/{content_id}` (or `HEAD`) and a single `Range`.
//!
//! Only contents in the [`Catalog`] are served, named by content id; the only file ever opened
//! is a catalog entry's own path, so nothing in a request path reaches the filesystem. A range is
//! served only when every piece it touches is verified. Peers authenticate with a bearer token
//! that is checked before anything about the content is revealed.
//!
//! | status | when |
//! |---|---|
//! | 200 | no `Range`, and the agent holds every piece |
//! | 206 | one satisfiable range over verified pieces |
//! | 400 | the content id is not 64 hex digits, or the `Range` header is malformed |
//! | 401 | no bearer token (`WWW-Authenticate: Bearer`) |
//! | 403 | a bearer token that is not accepted |
//! | 404 | a content this agent does not hold; any other path (axum's empty 404) |
//! | 429 | more than [`EXCHANGE_RATE`](peer::EXCHANGE_RATE) peer exchange requests a second (`Retry-After: 1`) |
//! | 405 | another method on the piece route (axum's default) |
//! | 416 | a range outside the file, several ranges, a range over unverified pieces, or no `Range` while only some pieces are held; always with `Content-Range: bytes */size` |
//! | 500 | the entry's file cannot be opened or is shorter than the range |
//! | 503 | every upload slot is busy, or the server is stopping (`Retry-After: 1`) |
//!
//! `GET /v1/pieces/{content_id}/have?after=N` answers which pieces are verified here
//! ([`PeerHave`]), once more than `N` are (or after [`HAVE_WAIT`]): downloaders poll it to
//! fetch what this agent verifies as soon as it has it. It takes the same token.
//!
//! The peer exchange routes, `GET /v1/pieces/{content_id}/peers` and `…/digests`, answer the
//! members of the content's swarm this agent knows and the piece digests it learned (see
//! `exchange`). The requests and answers of every route are defined in
//! [`shoal_core::wire::peer`].
//!
//! Several ranges in one request are refused (416) rather than served as multipart: the
//! engine asks for one range per request, and multipart would be a second body format to
//! parse and verify. Bodies are streamed in chunks read with positional reads, paced by one
//! token bucket shared by all uploads. A body that cannot be finished (the file shrank, a read
//! failed, the server stops) ends with an error, so the peer sees a truncated answer instead of
//! wrong bytes.

pub(crate) mod error;
mod exchange;
pub(crate) mod range;
mod upload;

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use shoal_core::bearer::{self, BearerError};
use shoal_core::wire::peer::{self, HaveQuery, PeerHave, HAVE_WAIT};
use shoal_core::{ByteRange, ContentId, PieceIndex};
use shoal_serve::ServeLimits;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::error::ServeError;
use self::exchange::ExchangeLimit;
use self::range::parse_range;
use self::upload::{Bucket, Upload};
use crate::catalog::{Catalog, Entry};
use crate::meter::Meter;

/// Bytes read (and sent) at a time when uploads are not rate limited.
const CHUNK: usize = 256 * 1024;
/// The smallest chunk under a low rate limit: smaller chunks pace more smoothly, but below
/// this the per-chunk overhead of a blocking read dominates.
const MIN_CHUNK: usize = 16 * 1024;

/// Piece server settings.
#[derive(Clone)]
pub struct ServeOptions {
    /// Bearer secrets peers may send. An empty list refuses every request.
    pub tokens: Vec<String>,
    /// Bytes per second shared by all uploads; `None` (or `Some(0)`, as with curl's
    /// `--limit-rate 0`) is unlimited.
    pub upload_limit: Option<u64>,
    /// Uploads at once; a request beyond this gets 503 at once rather than waiting.
    pub max_connections: usize,
    /// Header and idle timeouts and connection caps of the listener.
    pub limits: ServeLimits,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            upload_limit: None,
            max_connections: 64,
            limits: ServeLimits::default(),
        }
    }
}

impl fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach a log, not even through a debug print of the options.
        f.debug_struct("ServeOptions")
            .field("tokens", &format_args!("<{} secrets>", self.tokens.len()))
            .field("upload_limit", &self.upload_limit)
            .field("max_connections", &self.max_connections)
            .field("limits", &self.limits)
            .finish()
    }
}

/// The piece server's state: the catalog it serves from, its settings, and counters the agent
/// reports to the tracker. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct PieceServer {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Catalog,
    /// BLAKE3 of each accepted secret: a lookup by hash says nothing useful about a secret
    /// through its timing, and the secrets themselves are not kept.
    tokens: HashSet<[u8; 32]>,
    bucket: Bucket,
    chunk: usize,
    max_uploads: usize,
    limits: ServeLimits,
    uploads: AtomicUsize,
    served: Meter,
    stop: CancellationToken,
    exchange: ExchangeLimit,
}

impl PieceServer {
    /// A piece server for the contents of `catalog`, accepting the peer tokens of `options`; serve
    /// it with [`app`] and [`run`].
    pub fn new(catalog: Catalog, options: ServeOptions) -> Self {
        let limit = options.upload_limit.and_then(NonZeroU64::new);
        let chunk = limit.map_or(CHUNK, |rate| {
            // About a quarter second of the rate per chunk.
            usize::try_from(rate.get() / 4).map_or(CHUNK, |c| c.clamp(MIN_CHUNK, CHUNK))
        });
        Self {
            inner: Arc::new(Inner {
                catalog,
                tokens: options.tokens.iter().map(|s| hash(s.as_bytes())).collect(),
                bucket: Bucket::new(limit),
                chunk,
                max_uploads: options.max_connections,
                limits: options.limits,
                uploads: AtomicUsize::new(0),
                served: Meter::default(),
                stop: CancellationToken::new(),
                exchange: ExchangeLimit::new(),
            }),
        }
    }

    /// Uploads in progress now.
    pub fn load(&self) -> u32 {
        u32::try_from(self.inner.uploads.load(Ordering::Relaxed)).unwrap_or(u32::MAX)
    }

    /// Changes the total upload limit while uploads run (`None` lifts it).
    pub fn set_upload_limit(&self, bytes_per_sec: Option<u64>) {
        self.inner
            .bucket
            .set(bytes_per_sec.and_then(NonZeroU64::new));
    }

    /// Body bytes handed to peers since the server was made.
    pub fn bytes_served(&self) -> u64 {
        self.inner.served.total()
    }

    /// Body bytes a second handed to peers now, smoothed over about a second.
    pub fn upload_speed(&self) -> u64 {
        self.inner.served.rate()
    }

    /// Body bytes of content `id` handed to peers (since it entered the catalog) and their
    /// rate now; `None` while the catalog does not hold it.
    pub fn uploaded(&self, id: &ContentId) -> Option<(u64, u64)> {
        let entry = self.inner.catalog.get(id)?;
        Some((entry.uploaded().total(), entry.uploaded().rate()))
    }

    /// Ends every upload in progress with an error and refuses later ones with 503. [`run`]
    /// calls this when its shutdown future completes, so that a slow, rate-limited upload does
    /// not hold the graceful shutdown open; callers that serve [`app`] themselves call it too.
    pub fn stop_uploads(&self) {
        self.inner.stop.cancel();
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ServeError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(ServeError::NoToken)?;
        let secret = bearer::parse(value.as_bytes()).map_err(|e| match e {
            BearerError::NotBearer => ServeError::NoToken,
            BearerError::Malformed => ServeError::BadToken,
        })?;
        if self.inner.tokens.contains(&hash(secret.as_bytes())) {
            Ok(())
        } else {
            Err(ServeError::BadToken)
        }
    }

    fn slot(&self) -> Result<Slot, ServeError> {
        if self.inner.stop.is_cancelled() {
            return Err(ServeError::Stopping);
        }
        let max = self.inner.max_uploads;
        self.inner
            .uploads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| ServeError::Busy { limit: max })?;
        Ok(Slot(self.inner.clone()))
    }
}

fn hash(secret: &[u8]) -> [u8; 32] {
    *blake3::hash(secret).as_bytes()
}

/// One upload counted in [`PieceServer::load`]; released when dropped.
struct Slot(Arc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.uploads.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The piece server's routes, with state, ready to serve or to merge next to other routes.
/// It sets no fallback, since axum refuses to merge two routers that both have one: unmatched
/// paths get axum's empty 404 unless the merged router sets its own fallback.
pub fn app(server: PieceServer) -> Router {
    Router::new()
        .route(peer::path::PIECES_ROUTE, get(piece))
        .route(peer::path::HAVE_ROUTE, get(have))
        .route(peer::path::PEERS_ROUTE, get(exchange::peers))
        .route(peer::path::DIGESTS_ROUTE, get(exchange::digests))
        .with_state(server)
}

/// Serves `listener` within [`ServeOptions::limits`] until `shutdown` completes, then ends
/// uploads in progress (see [`PieceServer::stop_uploads`]) and returns once every connection
/// is closed.
pub async fn run(
    listener: TcpListener,
    server: PieceServer,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "piece server listening");
    }
    let stopping = server.clone();
    let limits = server.inner.limits.clone();
    let served = shoal_serve::serve(listener, app(server), limits, async move {
        shutdown.await;
        stopping.stop_uploads();
    })
    .await;
    tracing::info!("piece server stopped");
    served
}

async fn piece(
    State(server): State<PieceServer>,
    method: Method,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ServeError> {
    server.authorize(&headers)?;
    let Path(id) = id.map_err(|_| ServeError::PathEncoding)?;
    let id: ContentId = id.parse()?;
    let entry = server
        .inner
        .catalog
        .get(&id)
        .ok_or(ServeError::Unknown(id))?;
    let size = entry.size();
    let asked = match headers.get(header::RANGE) {
        None if entry.is_complete() => None,
        None => return Err(ServeError::Incomplete { size }),
        Some(value) => Some(parse_range(value.as_bytes(), size)?),
    };
    let range = match asked {
        Some(range) if !entry.holds(range) => {
            return Err(ServeError::NotHeld {
                size,
                pieces: unverified(&entry, range),
            })
        }
        Some(range) => range,
        None => ByteRange::new(0, size).expect("0 <= size"),
    };

    let mut response = Response::builder()
        .header(header::CONTENT_LENGTH, range.len())
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{id}\""));
    if asked.is_some() {
        let (first, last) = (range.start(), range.end() - 1);
        response = response.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {first}-{last}/{size}"),
        );
    }
    if method == Method::HEAD {
        return Ok(response
            .body(Body::empty())
            .expect("piece headers are valid"));
    }

    let slot = server.slot()?;
    let path = entry.path();
    let file = open(entry.clone(), range.end())
        .await
        .map_err(|source| ServeError::Unreadable {
            id,
            path: path.clone(),
            source,
        })?;
    tracing::debug!(content = %id, %range, "upload starts");
    let upload = Upload {
        server,
        id,
        entry,
        path,
        file,
        at: range.start(),
        end: range.end(),
        slot: Some(slot),
    };
    Ok(response
        .body(upload.into_body())
        .expect("piece headers are valid"))
}

async fn have(
    State(server): State<PieceServer>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<HaveQuery>, QueryRejection>,
) -> Result<Json<PeerHave>, ServeError> {
    server.authorize(&headers)?;
    let Path(id) = id.map_err(|_| ServeError::PathEncoding)?;
    let id: ContentId = id.parse()?;
    let Query(query) = query.map_err(|_| ServeError::BadQuery)?;
    let entry = server
        .inner
        .catalog
        .get(&id)
        .ok_or(ServeError::Unknown(id))?;
    if let Some(after) = query.after {
        let mut count = entry.watch_count();
        let _ = tokio::time::timeout(HAVE_WAIT, count.wait_for(|&n| n > after)).await;
    }
    Ok(Json(PeerHave::of(&entry.have())))
}

/// Names the pieces of `range` that are not verified, for the error answer.
fn unverified(entry: &Entry, range: ByteRange) -> String {
    let (layout, have) = (entry.layout(), entry.have());
    let touched = (
        layout.piece_at(range.start()),
        layout.piece_at(range.end() - 1),
    );
    let missing: Vec<PieceIndex> = match touched {
        (Some(first), Some(last)) => (first.get()..=last.get())
            .filter_map(|i| layout.piece(i))
            .filter(|p| !have.get(p.get()))
            .collect(),
        _ => Vec::new(),
    };
    match missing.as_slice() {
        // Verified since `holds` looked.
        [] => "some pieces".into(),
        [one] => format!("piece {}", one.get()),
        [first, rest @ ..] => format!("pieces {} and {} more", first.get(), rest.len()),
    }
}

/// Opens the entry's file and checks that it reaches `end`, so that a file that is plainly too
/// short is refused before any header is sent.
async fn open(entry: Arc<Entry>, end: u64) -> io::Result<Arc<File>> {
    tokio::task::spawn_blocking(move || {
        let file = entry.file()?;
        let len = file.metadata()?.len();
        if len < end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file has {len} bytes but the range ends at {end}"),
            ));
        }
        Ok(file)
    })
    .await
    .map_err(io::Error::other)?
}
