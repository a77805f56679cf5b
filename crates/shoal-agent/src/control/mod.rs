//! The agent's local control API, which `shoal get --agent` uses: `POST /v1/fetch` with a
//! [`FetchRequest`] answers a stream of [`ControlEvent`]s, one JSON object per line, ending
//! with `finished` (where the content now is in the agent's data directory) or `failed`.
//!
//! The API makes the agent fetch whatever it is asked, so it is served only through the doors
//! of [`door`]: the Unix socket `control.sock` in the data directory (mode 0600) and, if the
//! operator opens one, a TCP listener that requires a token; neither serves web pages. The
//! agent never writes outside its data directory; the CLI puts the content where its user
//! wants it with [`place`], with the user's own rights. [`client`] is the CLI's side.

pub mod client;
pub mod door;

use std::convert::Infallible;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures_util::stream;
use serde::{Deserialize, Serialize};
use shoal_core::ContentId;
use shoal_core::SafeUrl;
use shoal_engine::{CancellationToken, Event};
use tokio::sync::mpsc;
use url::Url;

use crate::fetch::{AgentFetchError, Fetcher, Want};
pub use client::{request, AgentLocation, ControlError};
use door::refuse;
pub use door::{Door, DoorError};

/// The one route: fetch and stream the progress.
pub const FETCH_PATH: &str = "/v1/fetch";

/// What to fetch: exactly one of a URL (`http`/`https`) or a content id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// The `http` or `https` URL to fetch (credentials allowed: the agent never shows them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The content id to fetch from peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentId>,
}

/// Where a finished content's bytes came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceLine {
    /// Travels redacted.
    pub url: SafeUrl,
    /// Bytes this source delivered.
    pub bytes: u64,
    /// Why the source stopped being used; `None` when it served to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
}

/// One line of the answer to `POST /v1/fetch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ControlEvent {
    /// The download started.
    Started {
        /// Travels redacted.
        url: SafeUrl,
        /// The file's length in bytes; `None` when the origin sent no length.
        size: Option<u64>,
    },
    /// A snapshot about ten times a second while bytes flow.
    Progress {
        /// Bytes on disk so far.
        done: u64,
        /// The file's length in bytes; `None` when unknown.
        total: Option<u64>,
        /// Bytes per second over the last second or so.
        speed: f64,
        /// Connections streaming now.
        connections: u32,
    },
    /// Something the user should know (a peer dropped, a bad piece, a restart).
    Notice {
        /// One line, credentials redacted.
        message: String,
    },
    /// The content is held whole; the last line of a successful answer.
    Finished {
        /// The content's id.
        content: ContentId,
        /// The name it is held under.
        name: String,
        /// The content in the agent's data directory (read-only).
        path: PathBuf,
        /// The content's length in bytes.
        size: u64,
        /// Milliseconds the download took; 0 when the agent held the content already.
        elapsed_ms: u64,
        /// Bytes received, which exceeds `size` when pieces were fetched twice.
        fetched: u64,
        /// The most connections that streamed at once.
        connections: u32,
        /// Where the bytes came from, one line per source; empty when nothing was downloaded.
        sources: Vec<SourceLine>,
    },
    /// The fetch failed; the last line of a failed answer.
    Failed {
        /// What went wrong and what to do, with every cause.
        message: String,
        /// `network`, `http`, `checksum`, `local_io`, `cancelled`, `tracker` or `usage`.
        kind: String,
    },
}

impl ControlEvent {
    /// The line a download event becomes, if any: retries and piece-by-piece news stay in the
    /// agent's log.
    fn of(event: Event) -> Option<Self> {
        Some(match event {
            Event::Started { url, size, .. } => ControlEvent::Started { url, size },
            Event::Progress(p) => ControlEvent::Progress {
                done: p.done,
                total: p.total,
                speed: p.speed,
                connections: p.connections,
            },
            Event::Resumed { done, total, .. } => ControlEvent::Notice {
                message: format!("resuming: {done} of {total} bytes are already here"),
            },
            Event::Restarted { reason } => ControlEvent::Notice { message: reason },
            Event::SourceDropped { url, reason } => ControlEvent::Notice {
                message: format!("not using {url} any more: {reason}"),
            },
            Event::BadPiece { index, url, .. } => ControlEvent::Notice {
                message: format!(
                    "piece {index} from {url} did not match its digest; fetching it elsewhere"
                ),
            },
            _ => return None,
        })
    }

    fn line(&self) -> Bytes {
        let mut text = serde_json::to_vec(self).expect("an event serializes");
        text.push(b'\n');
        Bytes::from(text)
    }
}

fn kind(error: &AgentFetchError) -> &'static str {
    use shoal_engine::ErrorKind;
    match error {
        AgentFetchError::Download(e) => match e.kind() {
            ErrorKind::Network => "network",
            ErrorKind::HttpStatus => "http",
            ErrorKind::Checksum => "checksum",
            ErrorKind::LocalIo | ErrorKind::OutputExists => "local_io",
            ErrorKind::Cancelled => "cancelled",
        },
        AgentFetchError::Objects(_) => "local_io",
        AgentFetchError::ForgedManifest { .. } | AgentFetchError::Sha256 { .. } => "checksum",
        AgentFetchError::Tracker(e) if e.is_not_found() => "http",
        AgentFetchError::Tracker(_) => "tracker",
        AgentFetchError::NoTracker(_) => "usage",
        AgentFetchError::Layout(_) => "network",
    }
}

#[derive(Clone)]
struct ControlState {
    fetcher: Fetcher,
    /// Fires when the agent stops: downloads in flight stop with it.
    stop: CancellationToken,
    door: Door,
}

/// The control API's routes, as served through `door`.
pub fn app(fetcher: Fetcher, stop: CancellationToken, door: Door) -> Router {
    Router::new()
        .route(FETCH_PATH, post(fetch))
        .with_state(ControlState {
            fetcher,
            stop,
            door,
        })
}

async fn fetch(State(state): State<ControlState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = state.door.refusal(&headers) {
        return refusal;
    }
    let request: FetchRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("not a fetch request: {e}")),
    };
    let url = match request.url.as_deref().map(Url::parse).transpose() {
        Ok(url) => url,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("url: {e}")),
    };
    let want = match (url, request.content) {
        (Some(url), None) if matches!(url.scheme(), "http" | "https") => Want::Url(url),
        (None, Some(id)) => Want::Content(id),
        (Some(url), None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "only http and https URLs can be fetched, not {}:",
                    url.scheme()
                ),
            )
        }
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "give exactly one of url and content".to_string(),
            )
        }
    };
    let (lines, rx) = mpsc::unbounded_channel::<ControlEvent>();
    // The download goes on if the client goes away: what it fetches is kept and seeded.
    tokio::spawn(async move {
        let (events, mut engine_events) = mpsc::unbounded_channel();
        let forward_lines = lines.clone();
        let forward = tokio::spawn(async move {
            while let Some(event) = engine_events.recv().await {
                if let Some(line) = ControlEvent::of(event) {
                    let _ = forward_lines.send(line);
                }
            }
        });
        let result = state
            .fetcher
            .fetch(want, events, state.stop.child_token())
            .await;
        let _ = forward.await;
        let last = match result {
            Ok(fetched) => {
                let summary = fetched.summary.as_ref();
                ControlEvent::Finished {
                    content: fetched.content,
                    name: fetched.name.clone(),
                    path: fetched.path.clone(),
                    size: fetched.size,
                    elapsed_ms: summary.map_or(0, |s| s.elapsed.as_millis() as u64),
                    fetched: summary.map_or(0, |s| s.fetched),
                    connections: summary.map_or(0, |s| s.max_connections),
                    sources: summary
                        .map(|s| {
                            s.sources
                                .iter()
                                .map(|u| SourceLine {
                                    url: u.url.clone(),
                                    bytes: u.bytes,
                                    dropped: u.dropped.clone(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            }
            Err(e) => ControlEvent::Failed {
                message: shoal_core::chain::chain(&e),
                kind: kind(&e).to_string(),
            },
        };
        let _ = lines.send(last);
    });
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event.line()), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Puts the agent's copy at `output`: a reflink (a copy-on-write clone, free and safe to
/// modify) where the filesystem can, else a hard link (read-only, shared with the agent's
/// store), else a copy. Through a temporary name beside `output`, so the final name only
/// ever holds the whole file.
pub fn place(held: &Path, output: &Path) -> io::Result<()> {
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.shoal-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let placed = reflink(held, &tmp)
        .or_else(|_| std::fs::hard_link(held, &tmp))
        .or_else(|_| std::fs::copy(held, &tmp).map(|_| ()));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, output).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn reflink(from: &Path, to: &Path) -> io::Result<()> {
    let src = File::open(from)?;
    let dst = File::create(to)?;
    // SAFETY: both descriptors are open files owned by this function for the whole call.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    drop(dst);
    let _ = std::fs::remove_file(to);
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placing_keeps_the_bytes_and_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let held = dir.path().join("held");
        std::fs::write(&held, b"swarm bytes").unwrap();
        let out = dir.path().join("sub/out.bin");
        place(&held, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"swarm bytes");
        assert_eq!(std::fs::read(&held).unwrap(), b"swarm bytes");
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }
}
