//! Downloading through the agent: a content id, or a URL resolved to one at the tracker, is
//! fetched by the engine with the peers the tracker names (and the origin as a capped
//! fallback) as sources of one scheduler. Verified pieces go into the [`Catalog`] at once, so
//! the announcer tells the tracker and the piece server serves them while the download runs.
//!
//! A URL the tracker has no content for yet is fetched as a *URL swarm*: the first agent to
//! ask leads (it fetches from the origin and publishes each piece's digest as it completes);
//! agents asking meanwhile follow (they fetch from the leader and each other, checking every
//! piece against the leader's digest). When the last piece is in, each computes the manifest,
//! so all hold the same content id, and the leader publishes the manifest and the URL mapping.
//!
//! Here: what a fetch is asked and answers, and the [`Fetcher`] that runs one per content or
//! URL at a time. The parts of a fetch:
//!
//! - `role`: which part this agent plays for a URL, from the origin's and the tracker's
//!   answers (pure, unit-tested);
//! - `url_swarm`: each part played (lead, follow, alone, origin down) and the content a URL
//!   download becomes;
//! - `digests`: the leader's origin download, which learns and publishes piece digests, and a
//!   follower's view of them;
//! - `by_content`: a content fetched by id with its manifest from the tracker;
//! - `spot_check`: a URL's mapped content checked against a random piece from the origin
//!   while peers send the rest, and given out for the URL only once it agrees;
//! - `swarm`: the one swarm download both of those run, with peers followed and bad peers
//!   reported;
//! - `downloads`: the records of the downloads in progress in the data directory, and what a
//!   starting agent restores from them;
//! - `recording`: a running fetch's record, kept up to date;
//! - `landing`: what a fetch tells a reader of its bytes in file order ([`crate::ordered`]),
//!   and whether they are the URL's yet;
//! - `by_digest`: a URL whose content's SHA-256 is known, shared under its digest and checked
//!   against it before it is kept;
//! - `sha256_follower`: that SHA-256, hashed in file order as the pieces land.

mod by_content;
mod by_digest;
mod digests;
mod downloads;
mod landing;
mod recording;
mod role;
mod sha256_follower;
mod spot_check;
mod swarm;
mod url_swarm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_core::wire::{AgentId, UrlKey};
use shoal_core::{ContentId, Layout, Manifest};
use shoal_engine::{
    CancellationToken, Connections, DownloadError, EventSender, HttpOptions, Summary, Tally,
    UrlVersion,
};
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{info, warn};
use url::Url;

use self::downloads::Part;
pub(crate) use self::downloads::{Downloads, Unfinished};
pub(crate) use self::landing::{Extras, FetchCaps, Landing, LandingSender};
use self::recording::Recording;
use self::sha256_follower::Sha256Follower;
use crate::catalog::{Catalog, Entry};
use crate::objects::{Objects, ObjectsError, Pin, Record};
use crate::tracker::{TrackerClient, TrackerError};

/// Why a fetch through the agent failed (unlike the engine's `http::FetchError`, which is one
/// HTTP request's failure).
#[derive(Debug, Error)]
pub enum AgentFetchError {
    /// The engine's download failed.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// The tracker refused or did not answer, where the fetch could not do without it.
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    /// The content could not be kept in the data directory.
    #[error(transparent)]
    Objects(#[from] ObjectsError),
    /// The tracker's manifest is not the content's: its hash is another id.
    #[error("the tracker's manifest for {content} hashes to {actual}; not using it")]
    ForgedManifest {
        /// The content id asked for.
        content: ContentId,
        /// What the tracker's manifest hashes to.
        actual: ContentId,
    },
    /// The origin's file cannot be cut into pieces (it says it is larger than 2^63 bytes).
    #[error("the origin's file cannot be shared in pieces: {0}")]
    Layout(#[from] shoal_core::LayoutError),
    /// A fetch by content id (or of a swarm) in an agent started without a tracker.
    #[error("{0} needs a tracker to find its peers; start the agent with --tracker")]
    NoTracker(String),
    /// The bytes do not hash to the SHA-256 the fetch was asked for (see
    /// `Extras::sha256`); they were dropped.
    #[error("the download hashes to sha256:{actual}, not sha256:{expected}; it was dropped")]
    Sha256 {
        /// The digest asked for, in hex.
        expected: String,
        /// What the bytes hash to, in hex.
        actual: String,
    },
}

/// What to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// A URL, fetched through the fleet when others have it or fetch it too.
    Url(Url),
    /// A content by id, from its peers only.
    Content(ContentId),
}

impl Want {
    /// What names this fetch: one runs per key at a time, and its record is kept by key.
    pub(crate) fn key(&self) -> String {
        match self {
            Want::Url(url) => url.to_string(),
            Want::Content(id) => id.to_string(),
        }
    }
}

/// A content the agent now holds whole, pinned against eviction while the caller uses it.
pub struct Fetched {
    /// The content's id (for a URL, the id its manifest hashes to).
    pub content: ContentId,
    /// The name it is held under: the URL's file name, or the tracker's name for the content.
    pub name: String,
    /// Where its bytes are: the shared file, or the read-only object in the data directory.
    pub path: PathBuf,
    /// Its length in bytes.
    pub size: u64,
    /// How the download went; `None` when the agent held the content already.
    pub summary: Option<Summary>,
    /// Keeps the content from eviction until dropped.
    pub pin: Pin,
}

/// How long an agent waits for an origin that is down, by default: ten minutes, a restart of
/// the server or a failover of its load balancer, not a decommissioning.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(600);

/// How downloads through the agent are made.
#[derive(Clone)]
pub struct FetchOptions {
    /// Sent to peers as `Authorization: Bearer …`.
    pub peer_token: String,
    /// The most connections to one peer.
    pub per_peer: Connections,
    /// Connections of one download, to all its sources.
    pub connections: Connections,
    /// Connections to the origin when fetching from it alone (a URL swarm's leader): fewer
    /// than a plain download's, since every range a connection gives up costs the origin what
    /// was in flight, and the origin's egress is what a swarm saves.
    pub origin_connections: Connections,
    /// Connections to the origin when it is only the fallback of a swarm download.
    pub origin_fallback: Connections,
    /// How the origin is asked (headers, TLS, timeouts).
    pub http: HttpOptions,
    /// A download with no progress for this long from any source gives up.
    pub stall_timeout: Duration,
    /// How long a download whose bytes come from an origin (fetched by this agent, or by the
    /// swarm's leader) waits for that origin through an outage: no failure while some source
    /// made progress within this long (see [`shoal_engine::DownloadOptions::max_wait`]).
    pub max_wait: Duration,
}

impl std::fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the peer token.
        f.debug_struct("FetchOptions")
            .field("per_peer", &self.per_peer)
            .field("connections", &self.connections)
            .field("origin_connections", &self.origin_connections)
            .field("origin_fallback", &self.origin_fallback)
            .field("stall_timeout", &self.stall_timeout)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            peer_token: String::new(),
            per_peer: Connections::new(1).expect("in range"),
            connections: Connections::new(32).expect("in range"),
            origin_connections: Connections::new(8).expect("in range"),
            origin_fallback: Connections::new(4).expect("in range"),
            http: HttpOptions::default(),
            stall_timeout: Duration::from_secs(15),
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

/// Runs downloads for the control API; cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    id: AgentId,
    catalog: Catalog,
    objects: Objects,
    tracker: Option<TrackerClient>,
    options: FetchOptions,
    /// One download per content or URL at a time; others asking wait for it.
    busy: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// What every download adds to: bytes by source, pieces checked.
    tally: Arc<Tally>,
    /// Fetches running now (waiting for another's download included).
    active: AtomicU64,
    /// The records of the downloads in progress.
    downloads: Downloads,
    /// Entries put back in the catalog at start, with the part their download played: their
    /// pieces are carried into the resumed download's entry if it plays the same part.
    restored: Mutex<HashMap<ContentId, Part>>,
    /// URL versions caught mapped to another content (see `spot_check`).
    caught: spot_check::Caught,
}

impl Fetcher {
    /// A fetcher for agent `id` that adds what it fetches to `catalog` and keeps it in `objects`;
    /// `tracker` is `None` for an agent without a fleet (origin only); `downloads` records the
    /// downloads in progress, so that a restarted agent resumes them.
    pub(crate) fn new(
        id: AgentId,
        catalog: Catalog,
        objects: Objects,
        tracker: Option<TrackerClient>,
        options: FetchOptions,
        downloads: Downloads,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                catalog,
                objects,
                tracker,
                options,
                busy: Mutex::default(),
                tally: Arc::default(),
                active: AtomicU64::new(0),
                downloads,
                restored: Mutex::default(),
                caught: spot_check::Caught::default(),
            }),
        }
    }

    /// What the downloads made so far added up to: bytes from origins and peers, pieces
    /// verified and rejected.
    pub fn tally(&self) -> &Tally {
        &self.inner.tally
    }

    /// The same totals, shared, for downloads made beside the fetcher (the queue's, on the
    /// engine) to add to.
    pub(crate) fn tally_handle(&self) -> Arc<Tally> {
        self.inner.tally.clone()
    }

    /// The pieces of content `id`, while the catalog holds it (a [`Fetched`] pins it).
    pub(crate) fn layout_of(&self, id: &ContentId) -> Option<Layout> {
        self.inner.catalog.get(id).map(|entry| entry.layout())
    }

    /// Fetches running now, those waiting for another's download of the same content included.
    pub fn active(&self) -> u64 {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Takes the entries the unfinished downloads put back in the catalog at start, so that
    /// the download resuming each (by [`Fetcher::resume`], or by whoever asks for it again,
    /// such as the queue) carries their pieces on. Call before either starts.
    pub(crate) fn restored(&self, unfinished: &[Unfinished]) {
        let mut restored = self.inner.restored.lock().expect("restored lock");
        for (content, part) in unfinished.iter().filter_map(|d| d.restored) {
            restored.insert(content, part);
        }
    }

    /// Resumes the downloads an earlier run left unfinished (see [`Fetcher::restored`]), each
    /// in a task of its own: the client that asked may be gone, and one asking again joins
    /// the running download. They stop with `stop` (and are resumed at the next start).
    pub(crate) fn resume(&self, unfinished: Vec<Unfinished>, stop: &CancellationToken) {
        for download in unfinished {
            let (fetcher, cancel) = (self.clone(), stop.child_token());
            tokio::spawn(async move {
                let shown = downloads::shown(&download.want);
                info!(download = %shown, "resuming an unfinished download");
                // Nobody follows the progress: the events are dropped.
                let (events, _) = mpsc::unbounded_channel();
                // Asked as before: a registry blob is shared under its digest and checked.
                let extras = Extras {
                    sha256: download.sha256,
                    ..Extras::default()
                };
                // A failure is logged by `fetch_with`; the pieces restored stay served.
                let fetched = fetcher
                    .fetch_with(download.want, events, cancel, extras)
                    .await;
                if let Ok(fetched) = fetched {
                    info!(download = %shown, content = %fetched.content, "resumed download finished");
                    if let Some((content, _)) = download.restored {
                        fetcher.forget_restored(content);
                    }
                }
            });
        }
    }

    /// Drops the entry restored at start as `content` if its download did not take it over
    /// (it became another content: the URL was published meanwhile, or its origin changed),
    /// with its `.part` and resume state: nothing would ever finish it.
    fn forget_restored(&self, content: ContentId) {
        let unused = self
            .inner
            .restored
            .lock()
            .expect("restored lock")
            .remove(&content);
        if unused.is_some() && self.inner.discard(&content) {
            info!(%content, "dropping the pieces of an unfinished download that became another content");
        }
    }

    /// Fetches `want` (or finds it held already), sending the engine's events to `events`.
    pub async fn fetch(
        &self,
        want: Want,
        events: EventSender,
        cancel: CancellationToken,
    ) -> Result<Fetched, AgentFetchError> {
        self.fetch_with(want, events, cancel, Extras::default())
            .await
    }

    /// As [`Fetcher::fetch`], with the origin asked with `extras.headers` too and where the
    /// bytes land told to `extras.tap`.
    pub(crate) async fn fetch_with(
        &self,
        want: Want,
        events: EventSender,
        cancel: CancellationToken,
        extras: Extras,
    ) -> Result<Fetched, AgentFetchError> {
        // A content of known SHA-256 is one download whatever URL it is asked by.
        let key = extras
            .sha256
            .as_ref()
            .map_or_else(|| want.key(), by_digest::shared_url);
        let lock = self
            .inner
            .busy
            .lock()
            .expect("busy lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let result = {
            let _active = Active::count(&self.inner.active);
            let _one_at_a_time = lock.lock().await;
            let shown = downloads::shown(&want);
            let recording = Recording::begin(&self.inner.downloads, &want, extras.sha256).await;
            let mut http = self.inner.options.http.clone();
            http.headers.extend(extras.headers);
            let job = Job {
                f: &self.inner,
                events,
                cancel: cancel.clone(),
                recording: &recording,
                http,
                tap: extras.tap,
                sha256: extras.sha256,
                sha256_follower: extras.sha256.map(|_| Sha256Follower::start()),
                caps: extras.caps,
            };
            let result = match want {
                Want::Content(id) => job.content(id, None).await,
                Want::Url(url) => job.url(url).await,
            };
            // Only the agent stopping cancels a fetch: the next start resumes it.
            let keep = result.is_err() && cancel.is_cancelled();
            if let (Err(e), false) = (&result, keep) {
                let missing = recording
                    .missing()
                    .map_or_else(String::new, |(missing, of)| {
                        format!("; {missing} of its {of} pieces were missing")
                    });
                warn!(
                    download = %shown,
                    "the download cannot go on: {}{missing}; forgetting it",
                    shoal_core::chain::chain(e)
                );
            }
            recording.end(keep).await;
            result
        };
        let mut busy = self.inner.busy.lock().expect("busy lock");
        // The map and this call hold it: nobody else waits for this key.
        if Arc::strong_count(&lock) == 2 {
            busy.remove(&key);
        }
        result
    }
}

impl Inner {
    /// Drops content `id`, whole or in part, unless a fetch or a user holds it: its entry,
    /// its bytes (the `.part` with its resume state, or the object with its record). Whether
    /// it was dropped.
    fn discard(&self, id: &ContentId) -> bool {
        if self.objects.is_pinned(id) {
            return false;
        }
        let Some(entry) = self.catalog.remove(id) else {
            return false;
        };
        let path = self.objects.path(id);
        let _ = std::fs::remove_file(entry.path());
        let _ = shoal_engine::resume::remove(&shoal_engine::resume::state_path(&path));
        self.objects.remove(id);
        true
    }
}

/// One fetch counted in [`Fetcher::active`] while it lives.
struct Active<'a>(&'a AtomicU64);

impl<'a> Active<'a> {
    fn count(active: &'a AtomicU64) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        Self(active)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One fetch in progress: the fetcher's state, where the engine's events go, and what
/// cancels it. Its steps are methods spread over this module's parts.
struct Job<'a> {
    f: &'a Inner,
    events: EventSender,
    cancel: CancellationToken,
    recording: &'a Recording,
    /// How the origin is asked: the agent's options and the fetch's own headers.
    http: HttpOptions,
    /// Told where the bytes land, when a reader follows them in file order.
    tap: Option<LandingSender>,
    /// The content's SHA-256, when known: shared under it, and checked before it is kept.
    sha256: Option<[u8; 32]>,
    /// Hashes the bytes as they land, when the SHA-256 is known.
    sha256_follower: Option<Sha256Follower>,
    /// The rate caps every download of the fetch is held to.
    caps: FetchCaps,
}

/// The origin of a content fetched by URL.
#[derive(Clone)]
struct OriginUrl {
    url: Url,
    version: UrlVersion,
}

impl Job<'_> {
    /// The tracker, without which `what` cannot be fetched.
    fn tracker(&self, what: &str) -> Result<&TrackerClient, AgentFetchError> {
        self.f
            .tracker
            .as_ref()
            .ok_or_else(|| AgentFetchError::NoTracker(what.to_string()))
    }

    /// The content if held whole already.
    async fn held(&self, id: &ContentId) -> Option<Fetched> {
        let entry = self.f.catalog.get(id)?;
        if !(entry.is_complete() && entry.manifest().is_some()) {
            return None;
        }
        // Its record is read and written again: file I/O, on a blocking thread.
        let (objects, touched) = (self.f.objects.clone(), *id);
        tokio::task::spawn_blocking(move || objects.touch(&touched))
            .await
            .expect("touching does not panic");
        Some(Fetched {
            content: *id,
            name: entry.name.clone(),
            path: entry.path(),
            size: entry.size(),
            summary: None,
            pin: self.f.objects.pin(*id),
        })
    }

    /// Puts the entry of this fetch's download in the catalog, where it is served piece by
    /// piece, and keeps its verified pieces recorded. An entry restored at start for the same
    /// download played the same way passes its pieces on: the engine continues the same
    /// `.part`, so they stay valid.
    fn start_entry(&self, entry: Entry, part: Part) -> Arc<Entry> {
        let id = entry.id();
        let restored = self.f.restored.lock().expect("restored lock").remove(&id);
        if let Some(old) = self.f.catalog.get(&id) {
            if restored == Some(part) && old.layout() == entry.layout() {
                for piece in old.have().ones() {
                    entry.mark(entry.layout().piece(piece).expect("the same layout"));
                }
            }
        }
        let entry = Arc::new(entry);
        self.f.catalog.insert(entry.clone());
        self.recording.follow(entry.clone(), part);
        entry
    }

    /// Records a content held whole in the objects, and makes room for it. Writing the
    /// record and removing evicted contents (whole files) run on a blocking thread.
    async fn keep(
        &self,
        manifest: &Manifest,
        name: &str,
        url: Option<UrlKey>,
    ) -> Result<(), AgentFetchError> {
        let record = Record {
            manifest: manifest.clone(),
            name: name.to_string(),
            url,
            last_used: shoal_core::clock::unix_now(),
        };
        let (objects, catalog) = (self.f.objects.clone(), self.f.catalog.clone());
        tokio::task::spawn_blocking(move || {
            objects.save(&record)?;
            objects.evict(&catalog, 0);
            Ok(())
        })
        .await
        .expect("keeping does not panic")
    }
}

/// The name a swarm-only content goes by in events and resume state.
pub fn content_url(id: &ContentId) -> Url {
    Url::parse(&format!("shoal:blake3:{id}")).expect("a valid URL")
}

fn part_path(path: &Path) -> PathBuf {
    shoal_engine::naming::part_path(path)
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};
    use shoal_testkit::{Origin, OriginConfig};

    use super::downloads::{Record, Wanted};
    use super::*;

    fn blob() -> Vec<u8> {
        (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect()
    }

    /// Resumes, as a starting agent does, the download of [`blob`] recorded as asked with
    /// `sha256`; whether its content was kept.
    async fn resumed_with(sha256: [u8; 32]) -> bool {
        let origin = Origin::start(OriginConfig {
            content: blob().into(),
            ..OriginConfig::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new();
        let downloads = Downloads::open(dir.path()).unwrap();
        let fetcher = Fetcher::new(
            AgentId::new("resume-test").unwrap(),
            catalog.clone(),
            Objects::open(dir.path(), None).unwrap(),
            None,
            FetchOptions::default(),
            downloads.clone(),
        );
        let url = origin.url("/blob");
        let record = Record {
            want: Wanted::Url(url.clone()),
            sha256: Some(sha256),
            held: None,
        };
        downloads.save(&url, &record).unwrap();
        let stop = CancellationToken::new();
        fetcher.resume(downloads.restore(&fetcher.inner.objects, &catalog), &stop);
        // The record goes once the download has ended, kept or dropped.
        tokio::time::timeout(Duration::from_secs(30), async {
            while downloads.get(&url).is_some() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the resumed download ends within 30 s");
        stop.cancel();
        catalog.entries().iter().any(|entry| entry.is_complete())
    }

    /// What an origin configured by `config` (serving [`blob`]) sent for two fetches of its
    /// URL, one after the other, by an agent without a tracker: bytes for the first, for the
    /// second.
    async fn sent_for_two_fetches(config: OriginConfig) -> (u64, u64) {
        let origin = Origin::start(OriginConfig {
            content: blob().into(),
            ..config
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let fetcher = crate::testing::lone_fetcher("held-test", dir.path());
        let url = Url::parse(&origin.url("/blob")).unwrap();
        let mut sent = Vec::new();
        for _ in 0..2 {
            let before = origin.bytes_sent();
            let (events, _) = tokio::sync::mpsc::unbounded_channel();
            let fetched = fetcher
                .fetch(Want::Url(url.clone()), events, CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(std::fs::read(&fetched.path).unwrap(), blob());
            sent.push(origin.bytes_sent() - before);
        }
        (sent[0], sent[1])
    }

    #[tokio::test]
    async fn a_version_held_already_is_served_from_the_agents_copy_without_a_tracker() {
        let size = blob().len() as u64;
        let (first, second) = sent_for_two_fetches(OriginConfig::default()).await;
        assert!(first >= size, "the first fetch came from the origin");
        assert!(
            second < 1024,
            "the copy held was fetched again: {second} bytes"
        );
        // Without ETag or Last-Modified a URL and a size do not name the bytes.
        let unnamed = OriginConfig {
            etag: false,
            last_modified: false,
            ..OriginConfig::default()
        };
        let (_, second) = sent_for_two_fetches(unnamed).await;
        assert!(
            second >= size,
            "a version without validators is fetched again"
        );
    }

    #[tokio::test]
    async fn a_resumed_blob_is_checked_against_its_recorded_digest() {
        assert!(resumed_with(Sha256::digest(blob()).into()).await);
        assert!(
            !resumed_with([0xab; 32]).await,
            "bytes of another digest are dropped, not kept"
        );
    }
}
