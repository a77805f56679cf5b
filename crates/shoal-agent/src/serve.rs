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
//! | 405 | another method on the piece route (axum's default) |
//! | 416 | a range outside the file, several ranges, a range over unverified pieces, or no `Range` while only some pieces are held; always with `Content-Range: bytes */size` |
//! | 500 | the entry's file cannot be opened or is shorter than the range |
//! | 503 | every upload slot is busy, or the server is stopping (`Retry-After: 1`) |
//!
//! `GET /v1/pieces/{content_id}/have?after=N` answers which pieces are verified here
//! ([`PeerHave`]), once more than `N` are (or after [`HAVE_WAIT`]): downloaders poll it to
//! fetch what this agent verifies as soon as it has it. It takes the same token. The requests
//! and answers of both routes are defined in [`shoal_core::wire::peer`].
//!
//! Several ranges in one request are refused (416) rather than served as multipart: the
//! engine asks for one range per request, and multipart would be a second body format to
//! parse and verify. Bodies are streamed in chunks read with positional reads, paced by one
//! token bucket shared by all uploads. A body that cannot be finished (the file shrank, a read
//! failed, the server stops) ends with an error, so the peer sees a truncated answer instead of
//! wrong bytes.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use shoal_core::content::ContentIdError;
use shoal_core::wire::peer::{self, HaveQuery, PeerHave, HAVE_WAIT};
use shoal_core::wire::ErrorBody;
use shoal_core::{ByteRange, ContentId, PieceIndex};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, Entry};

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
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            upload_limit: None,
            max_connections: 64,
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
    bucket: Option<Bucket>,
    chunk: usize,
    max_uploads: usize,
    uploads: AtomicUsize,
    served: AtomicU64,
    stop: CancellationToken,
}

impl PieceServer {
    pub fn new(catalog: Catalog, options: ServeOptions) -> Self {
        let limit = options.upload_limit.filter(|&rate| rate > 0);
        let chunk = limit.map_or(CHUNK, |rate| {
            // About a quarter second of the rate per chunk.
            usize::try_from(rate / 4).map_or(CHUNK, |c| c.clamp(MIN_CHUNK, CHUNK))
        });
        Self {
            inner: Arc::new(Inner {
                catalog,
                tokens: options.tokens.iter().map(|s| hash(s.as_bytes())).collect(),
                bucket: limit.map(Bucket::new),
                chunk,
                max_uploads: options.max_connections,
                uploads: AtomicUsize::new(0),
                served: AtomicU64::new(0),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// Uploads in progress now.
    pub fn load(&self) -> u32 {
        u32::try_from(self.inner.uploads.load(Ordering::Relaxed)).unwrap_or(u32::MAX)
    }

    /// Body bytes handed to peers since the server was made.
    pub fn bytes_served(&self) -> u64 {
        self.inner.served.load(Ordering::Relaxed)
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
            .ok_or(ServeError::NoToken)?
            .as_bytes();
        let space = value
            .iter()
            .position(|&b| b == b' ')
            .ok_or(ServeError::NoToken)?;
        let (scheme, secret) = (&value[..space], value[space..].trim_ascii());
        if !scheme.eq_ignore_ascii_case(b"bearer") || secret.is_empty() {
            return Err(ServeError::NoToken);
        }
        if self.inner.tokens.contains(&hash(secret)) {
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
        .with_state(server)
}

/// Serves `listener` until `shutdown` completes, then ends uploads in progress (see
/// [`PieceServer::stop_uploads`]) and returns once every connection is closed.
pub async fn run(
    listener: TcpListener,
    server: PieceServer,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "piece server listening");
    }
    let stopping = server.clone();
    let served = axum::serve(listener, app(server))
        .with_graceful_shutdown(async move {
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

/// A body in progress: the rest of one range of one file.
struct Upload {
    server: PieceServer,
    id: ContentId,
    path: PathBuf,
    file: Arc<File>,
    at: u64,
    end: u64,
    /// Given back as soon as the last chunk is out, so `load` does not wait for the
    /// connection to drop the body.
    slot: Option<Slot>,
}

impl Upload {
    fn into_body(self) -> Body {
        let chunks = futures_util::stream::unfold(Some(self), |upload| async move {
            let mut upload = upload?;
            if upload.at >= upload.end {
                return None;
            }
            match upload.next_chunk().await {
                Ok(chunk) => Some((Ok(chunk), Some(upload))),
                Err(error) if upload.server.inner.stop.is_cancelled() => {
                    tracing::debug!(content = %upload.id, "upload cut short by shutdown");
                    Some((Err(error), None))
                }
                Err(error) => {
                    tracing::warn!(
                        content = %upload.id,
                        path = %upload.path.display(),
                        offset = upload.at,
                        %error,
                        "upload ended early: reading the file failed"
                    );
                    Some((Err(error), None))
                }
            }
        });
        Body::from_stream(chunks)
    }

    async fn next_chunk(&mut self) -> io::Result<Bytes> {
        let inner = &self.server.inner;
        let len = (self.end - self.at).min(inner.chunk as u64) as usize;
        let file = self.file.clone();
        let at = self.at;
        let read = tokio::task::spawn_blocking(move || read_chunk(&file, at, len));
        let chunk = tokio::select! {
            joined = read => joined.map_err(io::Error::other)??,
            () = inner.stop.cancelled() => return Err(stopped()),
        };
        if let Some(bucket) = &inner.bucket {
            tokio::select! {
                () = bucket.take(chunk.len()) => {}
                () = inner.stop.cancelled() => return Err(stopped()),
            }
        }
        self.at += chunk.len() as u64;
        inner
            .served
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if self.at >= self.end {
            self.slot = None;
        }
        Ok(chunk)
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "the piece server is stopping")
}

/// Up to `len` bytes at `at`; fewer only at the end of the file, and an error when there is
/// nothing left to read (the file shrank under the upload).
fn read_chunk(file: &File, at: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if filled == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the file ends before offset {at}, inside the range being sent"),
        ));
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

/// One token bucket for every upload, so the limit holds however many peers fetch at once.
struct Bucket {
    rate: f64,
    /// Up to this many bytes may pass at once after an idle spell.
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec as f64;
        Self {
            rate,
            burst: (rate / 10.0).max(MIN_CHUNK as f64),
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Takes `bytes`, waiting as long as the rate requires.
    async fn take(&self, bytes: usize) {
        let wait = self.reserve(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes `bytes` at `now` and says how long the taker must wait. Tokens may go negative (a
    /// debt the next taker waits out too), so each chunk costs one sleep however many uploads
    /// share the bucket.
    fn reserve(&self, bytes: usize, now: Instant) -> Duration {
        let mut state = self.state.lock().expect("upload bucket lock");
        let (tokens, at) = &mut *state;
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst) - bytes as f64;
        *at = now.max(*at);
        Duration::from_secs_f64((-*tokens).max(0.0) / self.rate)
    }
}

/// The one byte range a `Range` header asks for in a file of `size` bytes (RFC 9110 §14.1.2):
/// `bytes=a-b` (`b` past the end is cut to the end), `bytes=a-`, or `bytes=-n` (the last `n`
/// bytes). Never empty.
fn parse_range(value: &[u8], size: u64) -> Result<ByteRange, ServeError> {
    use ServeError::{BadRange, MultipleRanges, Unsatisfiable};
    let value = std::str::from_utf8(value).map_err(|_| BadRange)?;
    let (unit, set) = value.trim().split_once('=').ok_or(BadRange)?;
    if !unit.trim_end().eq_ignore_ascii_case("bytes") {
        return Err(BadRange);
    }
    if set.contains(',') {
        return Err(MultipleRanges { size });
    }
    let (first, last) = set.trim().split_once('-').ok_or(BadRange)?;
    let number = |text: &str| {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadRange);
        }
        // Only overflow is left, and a position past u64 is simply past the end.
        Ok(text.parse::<u64>().unwrap_or(u64::MAX))
    };
    let (start, end) = if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 || size == 0 {
            return Err(Unsatisfiable { size });
        }
        (size - suffix.min(size), size)
    } else {
        let start = number(first)?;
        let last = if last.is_empty() {
            u64::MAX
        } else {
            number(last)?
        };
        if start > last {
            return Err(BadRange);
        }
        if start >= size {
            return Err(Unsatisfiable { size });
        }
        (start, last.saturating_add(1).min(size))
    };
    ByteRange::new(start, end).ok_or(BadRange)
}

/// Every way a piece request fails, and its answer (see the table in the module docs).
#[derive(Debug, Error)]
enum ServeError {
    #[error("missing bearer token: send `Authorization: Bearer <secret>`")]
    NoToken,
    #[error("unknown token")]
    BadToken,
    #[error(transparent)]
    ContentId(#[from] ContentIdError),
    #[error("the content id in the path is not valid percent-encoded UTF-8")]
    PathEncoding,
    #[error("content {0} is not held here")]
    Unknown(ContentId),
    #[error("malformed query: `after` is a number of pieces")]
    BadQuery,
    #[error(
        "malformed Range header: send one of `bytes=first-last`, `bytes=first-` or \
         `bytes=-suffix`"
    )]
    BadRange,
    #[error("the range is outside the content's {size} bytes")]
    Unsatisfiable { size: u64 },
    #[error("only one range per request is served: send each range as its own request")]
    MultipleRanges { size: u64 },
    #[error("the range touches {pieces} not verified here yet: ask for announced pieces only")]
    NotHeld { size: u64, pieces: String },
    #[error("only some pieces of this content are held here: ask for a range of announced pieces")]
    Incomplete { size: u64 },
    #[error("all {limit} upload slots are busy: retry shortly or ask another peer")]
    Busy { limit: usize },
    #[error("the piece server is stopping")]
    Stopping,
    #[error("content {id} cannot be read here")]
    Unreadable {
        id: ContentId,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        use ServeError::*;
        let (status, field) = match &self {
            NoToken => (StatusCode::UNAUTHORIZED, None),
            BadToken => (StatusCode::FORBIDDEN, None),
            ContentId(_) | PathEncoding => (StatusCode::BAD_REQUEST, Some("content_id")),
            Unknown(_) => (StatusCode::NOT_FOUND, Some("content_id")),
            BadRange => (StatusCode::BAD_REQUEST, Some("range")),
            BadQuery => (StatusCode::BAD_REQUEST, Some("after")),
            Unsatisfiable { .. } | MultipleRanges { .. } | NotHeld { .. } | Incomplete { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, Some("range"))
            }
            Busy { .. } | Stopping => (StatusCode::SERVICE_UNAVAILABLE, None),
            Unreadable { .. } => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        if let Unreadable { id, path, source } = &self {
            // The path and cause go to the log only: peers learn nothing of the file system.
            tracing::warn!(
                content = %id,
                path = %path.display(),
                error = %source,
                "cannot read a content's file"
            );
        }
        let body = ErrorBody {
            error: self.to_string(),
            field: field.map(String::from),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            NoToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Unsatisfiable { size }
            | MultipleRanges { size }
            | NotHeld { size, .. }
            | Incomplete { size } => {
                let value = HeaderValue::try_from(format!("bytes */{size}"))
                    .expect("digits are a valid header value");
                headers.insert(header::CONTENT_RANGE, value);
            }
            Busy { .. } | Stopping => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<(u64, u64)> {
        parse_range(text.as_bytes(), 100)
            .ok()
            .map(|r| (r.start(), r.end()))
    }

    #[test]
    fn parses_single_ranges() {
        assert_eq!(parse("bytes=0-9"), Some((0, 10)));
        assert_eq!(parse("bytes=90-"), Some((90, 100)));
        assert_eq!(parse("bytes=95-200"), Some((95, 100)));
        assert_eq!(parse("bytes=-10"), Some((90, 100)));
        assert_eq!(parse("bytes=-1000"), Some((0, 100)));
        assert_eq!(parse(" Bytes = 5-5 "), Some((5, 6)));
        assert_eq!(parse("bytes=0-99999999999999999999999"), Some((0, 100)));
    }

    #[test]
    fn refuses_what_cannot_be_served() {
        let refusal = |value: &[u8], size| parse_range(value, size).unwrap_err();
        for (value, size) in [
            (&b"bytes=100-"[..], 100),
            (b"bytes=-0", 100),
            (b"bytes=0-", 0),
        ] {
            assert!(matches!(
                refusal(value, size),
                ServeError::Unsatisfiable { .. }
            ));
        }
        let multiple = refusal(b"bytes=0-1,5-6", 100);
        assert!(matches!(multiple, ServeError::MultipleRanges { size: 100 }));
        let malformed = [
            "bytes=5-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "items=0-1",
            "0-1",
        ];
        for bad in malformed
            .iter()
            .map(|s| s.as_bytes())
            .chain([&b"bytes=\xff-1"[..]])
        {
            assert!(matches!(refusal(bad, 100), ServeError::BadRange), "{bad:?}");
        }
    }

    #[test]
    fn one_bucket_paces_every_upload() {
        let bucket = Bucket::new(1_000_000);
        let t0 = Instant::now();
        // 200 chunks of 10 kB at once, from any number of uploads: 2 s of debt.
        let mut wait = Duration::ZERO;
        for _ in 0..200 {
            wait = bucket.reserve(10_000, t0);
        }
        assert!((1.99..=2.0).contains(&wait.as_secs_f64()), "{wait:?}");
        // Once the debt is waited out, an idle spell saves up only the burst.
        let later = t0 + Duration::from_secs(12);
        assert_eq!(bucket.reserve(100_000, later), Duration::ZERO);
        assert!(bucket.reserve(1_000, later) >= Duration::from_millis(1));
    }
}
