//! Running one queued download: on the engine directly (an agent without a tracker, or a
//! download that needs what the swarm does not carry: mirrors, headers, a checksum), or through
//! the swarm with the [`Fetcher`] (the path `shoal get --agent` takes), then placed where the
//! download's `dir` and `out` say. Either way the download is held to its own
//! `max-download-limit` and the queue's overall cap. Progress goes into the download's
//! [`Live`].

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shoal_engine::urllist::{self, EntryOptions};
use shoal_engine::{
    CancellationToken, DownloadError, DownloadOptions, ErrorKind, Event, HttpOptions, Output,
    SharedRate, Tally,
};
use tokio::sync::mpsc;
use url::Url;

use super::item::Swarmed;
use super::Live;
use crate::control;
use crate::fetch::{AgentFetchError, Extras, FetchCaps, Fetcher, Want};
use crate::serve::PieceServer;

/// Where the queue's downloads go through.
#[derive(Clone)]
pub enum Via {
    /// The engine, straight from the origin and mirrors.
    Engine {
        /// How the origin is asked (user agent, TLS, timeouts).
        http: HttpOptions,
        /// What every download adds to, for the agent's metrics.
        tally: Arc<Tally>,
    },
    /// The agent's fetcher, through the swarm its tracker coordinates; downloads the swarm
    /// does not carry go to the engine as with [`Via::Engine`].
    Swarm {
        /// The fetcher `shoal get --agent` uses.
        fetcher: Fetcher,
        /// How the origin is asked by downloads on the engine.
        http: HttpOptions,
        /// What those add to.
        tally: Arc<Tally>,
    },
}

/// The overall download and upload caps, changed at run time with `changeGlobalOption`;
/// cheap to clone.
#[derive(Clone)]
pub struct Caps {
    download: Arc<SharedRate>,
    download_now: Arc<AtomicU64>,
    uploads: Option<PieceServer>,
    upload_now: Arc<AtomicU64>,
}

impl Caps {
    /// Caps of `download` and `upload` bytes a second (`None`: none); the upload cap paces
    /// `uploads`, the agent's piece server.
    pub fn new(download: Option<u64>, upload: Option<u64>, uploads: Option<PieceServer>) -> Self {
        let caps = Self {
            download: Arc::new(SharedRate::new(None)),
            download_now: Arc::default(),
            uploads,
            upload_now: Arc::default(),
        };
        caps.set_download(download);
        caps.set_upload(upload);
        caps
    }

    /// The download cap now, in bytes a second.
    pub fn download(&self) -> Option<u64> {
        Some(self.download_now.load(Ordering::Relaxed)).filter(|n| *n > 0)
    }

    /// The upload cap now, in bytes a second.
    pub fn upload(&self) -> Option<u64> {
        Some(self.upload_now.load(Ordering::Relaxed)).filter(|n| *n > 0)
    }

    /// The piece server the upload cap paces, which counts what is uploaded.
    pub(super) fn uploads(&self) -> Option<&PieceServer> {
        self.uploads.as_ref()
    }

    pub(super) fn set_download(&self, bytes_per_sec: Option<u64>) {
        self.download_now
            .store(bytes_per_sec.unwrap_or(0), Ordering::Relaxed);
        self.download.set(bytes_per_sec.and_then(NonZeroU64::new));
    }

    pub(super) fn set_upload(&self, bytes_per_sec: Option<u64>) {
        self.upload_now
            .store(bytes_per_sec.unwrap_or(0), Ordering::Relaxed);
        if let Some(server) = &self.uploads {
            server.set_upload_limit(bytes_per_sec);
        }
    }
}

/// What one run needs from its queued download.
pub(super) struct Job {
    pub uris: Vec<Url>,
    pub options: EntryOptions,
    /// The queue's directory, unless the options name one.
    pub dir: PathBuf,
}

/// Runs `job` until it is saved (its path) or fails (aria2's error code and the message).
pub(super) async fn run(
    via: &Via,
    caps: &Caps,
    job: Job,
    live: &Live,
    cancel: &CancellationToken,
) -> Result<PathBuf, (u32, String)> {
    let needs_engine =
        job.uris.len() > 1 || !job.options.headers.is_empty() || job.options.checksum.is_some();
    match via {
        Via::Swarm { fetcher, .. } if !needs_engine => {
            swarm(fetcher, caps, job, live, cancel).await
        }
        Via::Swarm { http, tally, .. } | Via::Engine { http, tally } => {
            engine(http.clone(), tally.clone(), caps, job, live, cancel).await
        }
    }
}

async fn engine(
    http: HttpOptions,
    tally: Arc<Tally>,
    caps: &Caps,
    job: Job,
    live: &Live,
    cancel: &CancellationToken,
) -> Result<PathBuf, (u32, String)> {
    let mut uris = job.uris.into_iter();
    let url = uris.next().expect("a queued download has a URI");
    let mut options = DownloadOptions::new(url, Output::Dir(job.dir));
    options.mirrors = uris.collect();
    options.http = http;
    options.tally = Some(tally);
    options.shared_rate = Some(caps.download.clone());
    job.options.apply(&mut options);
    let made = urllist::make_dir(&options.output);
    made.map_err(|e| (16, format!("creating the directory of its file: {e}")))?;
    let (events, received) = mpsc::unbounded_channel();
    let following = follow(received, live);
    let download = shoal_engine::download(options, events, cancel.clone());
    let (result, ()) = tokio::join!(download, following);
    result
        .map(|summary| summary.path)
        .map_err(|e| (error_code(&e), shoal_core::chain::chain(&e)))
}

async fn swarm(
    fetcher: &Fetcher,
    caps: &Caps,
    job: Job,
    live: &Live,
    cancel: &CancellationToken,
) -> Result<PathBuf, (u32, String)> {
    let url = job.uris[0].clone();
    let (events, received) = mpsc::unbounded_channel();
    let following = follow(received, live);
    let extras = Extras {
        caps: FetchCaps {
            limit_rate: job.options.max_download_limit,
            shared_rate: Some(caps.download.clone()),
        },
        ..Extras::default()
    };
    let fetch = fetcher.fetch_with(Want::Url(url), events, cancel.clone(), extras);
    let (result, ()) = tokio::join!(fetch, following);
    let fetched = result.map_err(|e| (fetch_error_code(&e), shoal_core::chain::chain(&e)))?;
    if let Some(layout) = fetcher.layout_of(&fetched.content) {
        // A content downloaded now was served by its entry only while this download ran, so
        // all of that is its own; one held already had served others before.
        let held_before = fetched.summary.is_none();
        let baseline = (caps.uploads().and_then(|s| s.uploaded(&fetched.content)))
            .filter(|_| held_before)
            .map_or(0, |u| u.0);
        *live.swarmed.lock().expect("live swarmed lock") = Some(Swarmed {
            content: fetched.content,
            layout,
            baseline,
        });
    }
    let dir = job.options.dir.unwrap_or(job.dir);
    let output = dir.join(
        job.options
            .out
            .unwrap_or_else(|| fetched.name.clone().into()),
    );
    let (held, placed) = (fetched.path.clone(), output.clone());
    tokio::task::spawn_blocking(move || control::place(&held, &placed))
        .await
        .expect("placing does not panic")
        .map_err(|e| (17, format!("placing {}: {e}", output.display())))?;
    *live.path.lock().expect("live path lock") = Some(output.clone());
    live.done.store(fetched.size, Ordering::Relaxed);
    live.total.store(fetched.size, Ordering::Relaxed);
    Ok(output)
}

/// Keeps `live` up to date from the engine's events until the download drops its sender.
async fn follow(mut events: mpsc::UnboundedReceiver<Event>, live: &Live) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Started { path, size, .. } => {
                *live.path.lock().expect("live path lock") = Some(path);
                live.total
                    .store(size.unwrap_or(u64::MAX), Ordering::Relaxed);
            }
            Event::Resumed { done, total, .. } => {
                live.done.store(done, Ordering::Relaxed);
                live.total.store(total, Ordering::Relaxed);
            }
            Event::Progress(p) => {
                live.done.store(p.done, Ordering::Relaxed);
                live.speed.store(p.speed as u64, Ordering::Relaxed);
                live.connections.store(p.connections, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    live.speed.store(0, Ordering::Relaxed);
    live.connections.store(0, Ordering::Relaxed);
}

/// aria2's exit status for a failure of this kind (aria2's `errorCode`).
fn error_code(error: &DownloadError) -> u32 {
    match error.kind() {
        ErrorKind::Network => 6,
        ErrorKind::HttpStatus => 22,
        ErrorKind::Checksum => 32,
        ErrorKind::LocalIo => 17,
        ErrorKind::OutputExists => 13,
        ErrorKind::Cancelled => 7,
    }
}

fn fetch_error_code(error: &AgentFetchError) -> u32 {
    match error {
        AgentFetchError::Download(e) => error_code(e),
        AgentFetchError::Objects(_) => 17,
        AgentFetchError::ForgedManifest { .. } | AgentFetchError::Sha256 { .. } => 32,
        AgentFetchError::Tracker(_) | AgentFetchError::NoTracker(_) => 1,
        AgentFetchError::Layout(_) => 6,
    }
}
