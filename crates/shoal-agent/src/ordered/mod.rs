//! One content from the swarm as an HTTP response body, in file order: what the HTTP proxy
//! and the registry mirror answer a client with.
//!
//! [`Ordered::open`] starts the agent's download of a URL into its data directory (the same
//! fetch `shoal get --agent` runs: peers, the URL swarm, the origin as a capped source), or
//! joins the one running for the same URL, and answers a body that streams the bytes in file
//! order as their pieces are known good (checked against their digests, or hashed as the
//! origin sent them). The first byte goes out as soon as the first piece is in; the download
//! fills the cache as a side effect and goes on if the client goes away, so the content is
//! kept and seeded. It never schedules bytes itself: it reads the file the fetch writes,
//! behind the frontier of verified pieces.
//!
//! When the fetch starts another download midway (a follower whose leader died takes the
//! lead and resumes its `.part`; a failed swarm falls back to the origin), the body follows
//! the new one. One that continues a `.part` starts with the pieces held in it (verified by
//! the download before, or restored when the agent started): they are told at once, before
//! the engine has checked them again, so the body goes on from them without waiting. One that
//! starts a file over (the origin's fallback) starts from nothing. Bytes already sent are the
//! same either way: every download of the fetch is of the one version the origin answered.
//!
//! A download that fails ends the body with an error: hyper then closes the connection
//! before the promised `Content-Length`, so the client sees a reset or a short read, never a
//! short body taken as complete. With [`ContentRequest::expected_sha256`], every byte of the
//! content is hashed before the last byte of the body goes out, and a mismatch ends the body
//! the same way: by the fetch, as the bytes land (its check fails the fetch before the
//! content is kept), or, for a content already whole, by the body's reader.
//!
//! A URL the tracker maps to a content is checked against the origin (one random piece)
//! while peers send the content, not before: the body streams the content's bytes as they
//! come, but its last bytes wait until the check has passed. When it fails, the fetch goes on
//! from the origin; a body that sent bytes of the content ends with an error (the same reset:
//! the bytes sent cannot be taken back), and one that sent none goes on with the origin's
//! download. Fetches without a check (the origin's own bytes) never wait.
//!
//! A door uses it so:
//!
//! ```ignore
//! let request = ContentRequest::new(url)          // http(s), credentials allowed
//!     .with_headers(headers_for_the_origin)       // e.g. the client's Authorization
//!     .with_range(client_headers.get(RANGE).cloned())
//!     .with_sha256(Some(digest));                 // a registry blob's digest
//! let (meta, body) = ordered.open(request).await?; // waits for the size only
//! // 200, or 206 with `meta.content_range()` when `meta.range` is Some;
//! // `Content-Length: meta.body_len()`; then `body`.
//! ```

mod reader;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::{HeaderMap, HeaderValue};
use shoal_core::{Bitfield, ByteRange, Layout, SafeUrl};
use shoal_engine::CancellationToken;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::debug;
use url::Url;

use crate::fetch::{Extras, Fetched, Fetcher, Landing, Want};
use crate::serve::error::ServeError;
use crate::serve::range::parse_range;

use self::reader::Reader;

/// One content asked for, by the URL it comes from.
#[derive(Debug, Clone)]
pub struct ContentRequest {
    /// The origin's `http` or `https` URL; its credentials go to the origin only and are
    /// never shown. Requests for the same URL share one download.
    pub url: Url,
    /// The content's SHA-256, when known (a registry blob's digest): every byte is checked
    /// before the last one goes out, and a mismatch ends the body with an error.
    pub expected_sha256: Option<[u8; 32]>,
    /// Sent to the origin with every request of the download, besides the agent's own
    /// headers (e.g. a registry client's `Authorization`). A download already running for the
    /// URL is joined as it is, asked with its own headers.
    pub upstream_headers: HeaderMap,
    /// The client's `Range` header, if any: one range is served (see [`ContentMeta::range`]);
    /// a malformed or multi-range header is ignored (the whole content is served, which RFC
    /// 9110 allows); one that starts past the end is [`OrderedError::Unsatisfiable`].
    pub range: Option<HeaderValue>,
}

impl ContentRequest {
    /// The whole content of `url`, asked with the agent's headers only, unchecked.
    pub fn new(url: Url) -> Self {
        Self {
            url,
            expected_sha256: None,
            upstream_headers: HeaderMap::new(),
            range: None,
        }
    }

    /// This request, with `headers` sent to the origin too.
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.upstream_headers = headers;
        self
    }

    /// This request, for the range the client's `Range` header `range` asks.
    pub fn with_range(mut self, range: Option<HeaderValue>) -> Self {
        self.range = range;
        self
    }

    /// This request, checked against `sha256`.
    pub fn with_sha256(mut self, sha256: Option<[u8; 32]>) -> Self {
        self.expected_sha256 = sha256;
        self
    }
}

/// What a body from [`Ordered::open`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentMeta {
    /// The whole content's length in bytes.
    pub size: u64,
    /// `Some`: the body holds only these bytes, the client's range (answer `206` with
    /// [`ContentMeta::content_range`]); `None`: the whole content (answer `200`).
    pub range: Option<ByteRange>,
}

impl ContentMeta {
    /// The body's length: the `Content-Length` to answer with.
    pub fn body_len(&self) -> u64 {
        self.range.map_or(self.size, |r| r.len())
    }

    /// The `Content-Range` of a `206` answer, when the body holds a range.
    pub fn content_range(&self) -> Option<String> {
        self.range
            .map(|r| format!("bytes {}-{}/{}", r.start(), r.end() - 1, self.size))
    }
}

/// Why a content could not be served, or its body ended early.
#[derive(Debug, Clone, Error)]
pub enum OrderedError {
    /// The download failed (the message has every cause, credentials redacted).
    #[error("downloading {url} through the swarm failed: {message}")]
    Failed {
        /// The content's URL, credentials redacted.
        url: SafeUrl,
        /// What went wrong, with every cause.
        message: String,
    },
    /// The client's range starts past the content's end (answer `416`).
    #[error("the range asked for is outside the content's {size} bytes")]
    Unsatisfiable {
        /// The content's length, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// The bytes do not hash to the SHA-256 asked for.
    #[error("{url} does not match its digest: expected sha256:{expected}, got sha256:{actual}")]
    Mismatch {
        /// The content's URL, credentials redacted.
        url: SafeUrl,
        /// The digest asked for, in hex.
        expected: String,
        /// What the bytes hash to, in hex.
        actual: String,
    },
    /// The file the download writes could not be read.
    #[error("reading {} for {url}: {message}", path.display())]
    Read {
        /// The content's URL, credentials redacted.
        url: SafeUrl,
        /// The file read.
        path: PathBuf,
        /// The operating system's error.
        message: String,
    },
    /// The content the swarm holds for the URL failed its check against the origin after
    /// some of its bytes went out: no rest of the body can make them right.
    #[error("{url} from the swarm did not match its origin after part of it was sent: {message}")]
    Untrusted {
        /// The content's URL, credentials redacted.
        url: SafeUrl,
        /// Why the content was found not to be the URL's.
        message: String,
    },
    /// The agent is stopping: the download ended without an outcome.
    #[error("the agent stopped while {url} was downloading")]
    Stopped {
        /// The content's URL, credentials redacted.
        url: SafeUrl,
    },
}

/// The contents being served in file order, one download per URL; cheap to clone.
#[derive(Clone)]
pub struct Ordered {
    inner: Arc<Inner>,
}

struct Inner {
    fetcher: Fetcher,
    /// Fires when the agent stops: downloads in flight stop with it.
    stop: CancellationToken,
    /// The downloads running, by URL, each followed through its [`Landed`].
    running: Mutex<HashMap<String, watch::Receiver<Landed>>>,
}

/// What a download has landed so far, as its readers see it.
struct Landed {
    /// Bumped at every download the fetch starts: a reader's open file is then stale.
    run: u64,
    /// The file the current download writes and how it is cut.
    file: Option<(PathBuf, Layout)>,
    /// The current download's pieces known good.
    ready: Bitfield,
    /// Whether they are the URL's.
    trust: Trust,
    /// How the fetch ended.
    end: Option<End>,
}

/// Whether what a fetch landed is the URL's, as far as it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trust {
    /// It is: the origin's bytes, or a content checked against it.
    Trusted,
    /// A content the tracker maps the URL to, being checked against the origin: a body's end
    /// waits for the check.
    Checking,
    /// The check failed, for the reason given: what landed while checking is not the URL's.
    Refused(String),
}

/// How a fetch ended.
enum End {
    /// The content is held whole (and pinned while a reader holds this).
    Whole(Arc<Fetched>),
    /// The fetch failed: the message, with every cause.
    Failed(String),
}

impl Default for Landed {
    fn default() -> Self {
        Self {
            run: 0,
            file: None,
            ready: Bitfield::new(0),
            trust: Trust::Trusted,
            end: None,
        }
    }
}

impl Landed {
    fn land(&mut self, landing: Landing) {
        match landing {
            Landing::Started { path, layout } => {
                self.run += 1;
                self.ready = Bitfield::new(layout.piece_count());
                self.file = Some((path, layout));
            }
            Landing::Piece(index) if index.get() < self.ready.len() => self.ready.set(index.get()),
            Landing::Piece(_) => {}
            Landing::Checking => self.trust = Trust::Checking,
            Landing::Trusted => self.trust = Trust::Trusted,
            Landing::Untrusted(why) => {
                self.trust = Trust::Refused(why);
                // Nothing more of that download is read: the next one starts afresh.
                self.file = None;
                self.ready = Bitfield::new(0);
            }
        }
    }

    /// The content's length, once known.
    fn size(&self) -> Option<u64> {
        match &self.end {
            Some(End::Whole(fetched)) => Some(fetched.size),
            _ => self.file.as_ref().map(|(_, layout)| layout.size()),
        }
    }
}

impl Ordered {
    /// Serves contents fetched by `fetcher`; downloads stop when `stop` fires.
    pub fn new(fetcher: Fetcher, stop: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                fetcher,
                stop,
                running: Mutex::default(),
            }),
        }
    }

    /// Starts (or joins) the download of `request.url` and answers, once the content's size
    /// is known, what the body holds and the body. See the module's documentation.
    pub async fn open(&self, request: ContentRequest) -> Result<(ContentMeta, Body), OrderedError> {
        let shown = SafeUrl::new(request.url.clone());
        let mut landed = self.start(&request);
        let size = loop {
            {
                let now = landed.borrow_and_update();
                if let Some(End::Failed(message)) = &now.end {
                    return Err(OrderedError::Failed {
                        url: shown,
                        message: message.clone(),
                    });
                }
                if let Some(size) = now.size() {
                    break size;
                }
            }
            if landed.changed().await.is_err() {
                return Err(OrderedError::Stopped { url: shown });
            }
        };
        let range = match request
            .range
            .as_ref()
            .map(|r| parse_range(r.as_bytes(), size))
        {
            Some(Ok(range)) => Some(range),
            Some(Err(ServeError::Unsatisfiable { size })) => {
                return Err(OrderedError::Unsatisfiable { size })
            }
            Some(Err(_)) | None => None,
        };
        let meta = ContentMeta { size, range };
        let span = range.map_or(0..size, |r| r.start()..r.end());
        let reader = Reader::new(landed, shown, size, span, request.expected_sha256);
        Ok((meta, Body::from_stream(reader.into_stream())))
    }

    /// Starts the download of `request.url` as [`Ordered::open`] does (or leaves the one
    /// running), for a client expected to ask for it soon, whose request then joins it.
    pub fn prefetch(&self, request: &ContentRequest) {
        self.start(request);
    }

    /// The running download of `request.url` (of its SHA-256, when given: the same bytes
    /// from another URL are the same download), started if there is none.
    fn start(&self, request: &ContentRequest) -> watch::Receiver<Landed> {
        let key = match &request.expected_sha256 {
            Some(digest) => format!("sha256:{}", shoal_core::hex::encode(digest)),
            None => request.url.to_string(),
        };
        let mut running = self.inner.running.lock().expect("running lock");
        if let Some(landed) = running.get(&key) {
            if landed.borrow().end.is_none() {
                return landed.clone();
            }
        }
        let (tx, rx) = watch::channel(Landed::default());
        running.insert(key.clone(), rx.clone());
        let (inner, url, headers, sha256) = (
            self.inner.clone(),
            request.url.clone(),
            request.upstream_headers.clone(),
            request.expected_sha256,
        );
        tokio::spawn(async move {
            drive(&inner, url, headers, sha256, &tx).await;
            let mut running = inner.running.lock().expect("running lock");
            if running
                .get(&key)
                .is_some_and(|landed| landed.same_channel(&tx.subscribe()))
            {
                running.remove(&key);
            }
        });
        rx
    }
}

/// Runs the fetch of `url` (shared under and checked against `sha256`, when given), telling
/// `landed` where its bytes land and how it ended.
async fn drive(
    inner: &Inner,
    url: Url,
    headers: HeaderMap,
    sha256: Option<[u8; 32]>,
    landed: &watch::Sender<Landed>,
) {
    let (tap, mut landings) = mpsc::unbounded_channel();
    // Nobody follows the progress: the engine's events are dropped.
    let (events, _) = mpsc::unbounded_channel();
    let shown = SafeUrl::new(url.clone());
    let fetch = inner.fetcher.fetch_with(
        Want::Url(url),
        events,
        inner.stop.child_token(),
        Extras {
            headers,
            tap: Some(tap),
            sha256,
            ..Extras::default()
        },
    );
    let follow = async {
        while let Some(landing) = landings.recv().await {
            landed.send_modify(|now| now.land(landing));
        }
    };
    let (result, ()) = tokio::join!(fetch, follow);
    let end = match result {
        Ok(fetched) => End::Whole(Arc::new(fetched)),
        Err(e) => {
            let message = shoal_core::chain::chain(&e);
            debug!(url = %shown, "a download served in file order failed: {message}");
            End::Failed(message)
        }
    };
    landed.send_modify(|now| now.end = Some(end));
}

#[cfg(test)]
mod tests;
