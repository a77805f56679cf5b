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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_core::manifest::PieceDigest;
use shoal_core::wire::{
    AgentId, CreateSwarmRequest, PieceDigestEntry, PublishDigestsRequest, PublishUrlRequest,
    ReportRequest, SwarmInfo, UrlKey,
};
use shoal_core::{ContentId, Layout, Manifest, PieceIndex};
use shoal_engine::{
    download, CancellationToken, Connections, Digests, DownloadError, DownloadOptions, Endgame,
    Event, EventSender, Existing, HttpOptions, OriginUse, Output, PublishedDigests, Summary,
    SwarmOptions, UrlVersion, BLOCK,
};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use url::Url;

use crate::catalog::{Catalog, Entry, Provenance};
use crate::objects::{now, Objects, ObjectsError, Pin, Record};
use crate::peers;
use crate::piece_size;
use crate::tracker::{TrackerClient, TrackerError};

/// How often a leader tries again to publish digests the tracker did not take (a piece is only
/// offered once its digest is published), and the most often a follower asks for them.
const DIGESTS_EVERY: Duration = Duration::from_millis(100);
/// The least a leader's connection asks the origin for at once.
const IN_ORDER_MIN_CHUNK: u64 = 256 << 10;
/// How often a follower asks for digests without being short of one.
const DIGESTS_ROUTINE: Duration = Duration::from_secs(1);

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
        content: ContentId,
        actual: ContentId,
    },
    /// A fetch by content id (or of a swarm) in an agent started without a tracker.
    #[error("{0} needs a tracker to find its peers; start the agent with --tracker")]
    NoTracker(String),
}

/// What to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Url(Url),
    Content(ContentId),
}

/// A content the agent now holds whole, pinned against eviction while the caller uses it.
pub struct Fetched {
    pub content: ContentId,
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// How the download went; `None` when the agent held the content already.
    pub summary: Option<Summary>,
    pub pin: Pin,
}

/// How downloads through the agent are made.
#[derive(Clone)]
pub struct FetchOptions {
    /// Sent to peers as `Authorization: Bearer …`.
    pub peer_token: String,
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
            .finish_non_exhaustive()
    }
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            peer_token: String::new(),
            per_peer: Connections::new(2).expect("in range"),
            connections: Connections::new(32).expect("in range"),
            origin_connections: Connections::new(8).expect("in range"),
            origin_fallback: Connections::new(4).expect("in range"),
            http: HttpOptions::default(),
            stall_timeout: Duration::from_secs(15),
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
}

impl Fetcher {
    pub fn new(
        id: AgentId,
        catalog: Catalog,
        objects: Objects,
        tracker: Option<TrackerClient>,
        options: FetchOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                catalog,
                objects,
                tracker,
                options,
                busy: Mutex::default(),
            }),
        }
    }

    /// Fetches `want` (or finds it held already), sending the engine's events to `events`.
    pub async fn fetch(
        &self,
        want: Want,
        events: EventSender,
        cancel: CancellationToken,
    ) -> Result<Fetched, AgentFetchError> {
        let key = match &want {
            Want::Url(url) => url.to_string(),
            Want::Content(id) => id.to_string(),
        };
        let lock = self
            .inner
            .busy
            .lock()
            .expect("busy lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let result = {
            let _one_at_a_time = lock.lock().await;
            let job = Job {
                f: &self.inner,
                events,
                cancel,
            };
            match want {
                Want::Content(id) => job.content(id, None).await,
                Want::Url(url) => job.url(url).await,
            }
        };
        let mut busy = self.inner.busy.lock().expect("busy lock");
        // The map and this call hold it: nobody else waits for this key.
        if Arc::strong_count(&lock) == 2 {
            busy.remove(&key);
        }
        result
    }
}

struct Job<'a> {
    f: &'a Inner,
    events: EventSender,
    cancel: CancellationToken,
}

/// The origin of a content fetched by URL.
struct OriginUrl {
    url: Url,
    version: UrlVersion,
}

impl Job<'_> {
    fn tracker(&self, what: &str) -> Result<&TrackerClient, AgentFetchError> {
        self.f
            .tracker
            .as_ref()
            .ok_or_else(|| AgentFetchError::NoTracker(what.to_string()))
    }

    /// The content if held whole already.
    fn held(&self, id: &ContentId) -> Option<Fetched> {
        let entry = self.f.catalog.get(id)?;
        (entry.is_complete() && entry.manifest().is_some()).then(|| {
            self.f.objects.touch(id);
            Fetched {
                content: *id,
                name: entry.name.clone(),
                path: entry.path(),
                size: entry.size(),
                summary: None,
                pin: self.f.objects.pin(*id),
            }
        })
    }

    async fn content(
        &self,
        id: ContentId,
        origin: Option<OriginUrl>,
    ) -> Result<Fetched, AgentFetchError> {
        if let Some(held) = self.held(&id) {
            return Ok(held);
        }
        let tracker = self.tracker(&format!("content {id}"))?;
        let manifest = tracker.manifest(&id).await?;
        if manifest.id() != id {
            return Err(AgentFetchError::ForgedManifest {
                content: id,
                actual: manifest.id(),
            });
        }
        let name = match &origin {
            Some(o) => shoal_engine::naming::file_name(None, &o.url),
            None => tracker
                .content(&id)
                .await
                .map(|c| c.name)
                .unwrap_or_else(|_| id.to_string()),
        };
        let manifest = Arc::new(manifest);
        let pin = self.f.objects.pin(id);
        let path = self.f.objects.path(&id);
        let entry = Arc::new(Entry::new(
            manifest.clone(),
            name.clone(),
            Provenance::Fetched,
            part_path(&path),
        ));
        self.f.catalog.insert(entry.clone());
        let (url, origin_use) = match &origin {
            Some(o) => (
                o.url.clone(),
                OriginUse::Fallback {
                    connections: self.f.options.origin_fallback,
                    validator: o.version.validator.clone(),
                },
            ),
            None => (content_url(&id), OriginUse::Never),
        };
        let summary = self
            .swarm(
                id,
                url,
                manifest.layout(),
                Digests::Manifest(manifest.clone()),
                origin_use,
                None,
            )
            .await?;
        entry.set_path(path.clone());
        self.keep(&manifest, &name, origin.map(|o| key_of(&o.version)))?;
        Ok(Fetched {
            content: id,
            name,
            path,
            size: manifest.layout().size(),
            summary: Some(summary),
            pin,
        })
    }

    /// Runs one swarm download of `id` into the objects, with peers refreshed from the
    /// tracker, verified pieces marked in the catalog as they come, and bad peers reported.
    /// `leader` is a URL swarm's leader, whose upload is kept for first copies.
    async fn swarm(
        &self,
        id: ContentId,
        url: Url,
        layout: Layout,
        digests: Digests,
        origin: OriginUse,
        leader: Option<AgentId>,
    ) -> Result<Summary, AgentFetchError> {
        let stop = self.cancel.child_token();
        let (peers, refresher) = peers::follow(
            peers::Watch {
                tracker: self.f.tracker.clone(),
                me: self.f.id.clone(),
                content: id,
                layout,
                leader,
                token: self.f.options.peer_token.clone(),
            },
            stop.clone(),
        )
        .await;
        let mut options = DownloadOptions::new(url, Output::File(self.f.objects.path(&id)));
        options.existing = Existing::Overwrite;
        options.connections = self.f.options.connections;
        options.stall_timeout = self.f.options.stall_timeout;
        options.http = self.f.options.http.clone();
        let mut peer_http = HttpOptions {
            connect_timeout: Duration::from_secs(3),
            ..HttpOptions::default()
        };
        let bearer = format!("Bearer {}", self.f.options.peer_token);
        if let Ok(value) = bearer.parse() {
            peer_http.headers.insert(http::header::AUTHORIZATION, value);
        }
        options.swarm = Some(SwarmOptions {
            me: self.f.id.to_string(),
            layout,
            digests,
            peers,
            peer_http,
            per_peer: self.f.options.per_peer,
            origin,
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let run = download(options, tx, stop.clone());
        let forward = async {
            while let Some(event) = rx.recv().await {
                match &event {
                    Event::PieceVerified { index } => {
                        if let Some(piece) = layout.piece(*index) {
                            self.f.catalog.mark(&id, &[piece]);
                        }
                    }
                    Event::BadPiece {
                        index,
                        peer: Some(peer),
                        ..
                    } => {
                        if let Some(piece) = layout.piece(*index) {
                            self.report(id, peer, piece).await;
                        }
                    }
                    _ => {}
                }
                let _ = self.events.send(event);
            }
        };
        let (result, ()) = tokio::join!(run, forward);
        stop.cancel();
        let _ = refresher.await;
        Ok(result?)
    }

    async fn report(&self, content: ContentId, peer: &str, piece: PieceIndex) {
        let (Some(tracker), Ok(agent)) = (&self.f.tracker, AgentId::new(peer)) else {
            return;
        };
        let body = ReportRequest {
            agent,
            piece: piece.get(),
            reason: "the piece did not match its digest".to_string(),
        };
        match tracker.report(&content, &body).await {
            Ok(()) => {
                info!(%content, peer, piece = piece.get(), "reported a peer that sent a bad piece")
            }
            Err(e) => warn!(%content, peer, "could not report a bad piece: {e}"),
        }
    }

    /// Records a content held whole in the objects, and makes room for it.
    fn keep(
        &self,
        manifest: &Manifest,
        name: &str,
        url: Option<UrlKey>,
    ) -> Result<(), AgentFetchError> {
        self.f.objects.save(&Record {
            manifest: manifest.clone(),
            name: name.to_string(),
            url,
            last_used: now(),
        })?;
        self.f.objects.evict(&self.f.catalog, 0);
        Ok(())
    }

    async fn url(&self, url: Url) -> Result<Fetched, AgentFetchError> {
        let version = match shoal_engine::url_version(&url, &self.f.options.http).await {
            Ok(version) => version,
            Err(e) => return self.origin_down(url, e).await,
        };
        let key = key_of(&version);
        let origin = OriginUrl { url, version };
        let Some(tracker) = &self.f.tracker else {
            return self.alone(origin).await;
        };
        match tracker.lookup_url(&key).await {
            Ok(mapping) => return self.content(mapping.content, Some(origin)).await,
            Err(e) if e.is_not_found() => {}
            Err(e) if e.is_unreachable() => {
                warn!("{e}; fetching {} from the origin alone", key.url);
                return self.alone(origin).await;
            }
            Err(e) => return Err(e.into()),
        }
        let size = origin.version.size;
        let layout = Layout::new(size, piece_size::for_size(size)).expect("a valid piece size");
        if size == 0 {
            return self.alone(origin).await;
        }
        let request = CreateSwarmRequest {
            key,
            layout,
            agent: self.f.id.clone(),
        };
        let swarm = match tracker.create_swarm(&request).await {
            Ok(swarm) => swarm,
            Err(e) if e.is_unreachable() => {
                warn!("{e}; fetching {} from the origin alone", request.key.url);
                return self.alone(origin).await;
            }
            Err(e) => return Err(e.into()),
        };
        if swarm.leader == self.f.id {
            self.lead(origin, swarm).await
        } else {
            match self.follow(&origin, &swarm).await {
                Ok(fetched) => Ok(fetched),
                Err(AgentFetchError::Download(e))
                    if e.kind() != shoal_engine::ErrorKind::Cancelled =>
                {
                    warn!(
                        swarm = %swarm.id,
                        "the swarm for {} did not finish ({e}); fetching from the origin",
                        swarm.key.url
                    );
                    self.alone(origin).await
                }
                Err(e) => Err(e),
            }
        }
    }

    /// The origin did not say which version it serves: when it cannot be reached at all, the
    /// newest version the tracker knows for the URL is fetched from the swarm alone.
    async fn origin_down(
        &self,
        url: Url,
        error: DownloadError,
    ) -> Result<Fetched, AgentFetchError> {
        let down = matches!(&error, DownloadError::Network { .. })
            || matches!(&error, DownloadError::HttpStatus { status, .. } if *status >= 500);
        let (true, Some(tracker)) = (down, &self.f.tracker) else {
            return Err(error.into());
        };
        let mut bare = url.clone();
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        let mapping = match tracker.latest_url(bare.as_str()).await {
            Ok(mapping) => mapping,
            Err(e) => {
                debug!("no version of {bare} at the tracker either: {e}");
                return Err(error.into());
            }
        };
        warn!(
            "{error}; fetching the version of {} the swarm holds ({} bytes, published at unix time {}) from peers alone",
            mapping.key.url, mapping.key.size, mapping.published_at
        );
        self.content(mapping.content, None).await
    }

    /// Fetches from the origin, hashing pieces as they complete: without a tracker, or when
    /// the file is empty. The manifest is published if a tracker answers.
    async fn alone(&self, origin: OriginUrl) -> Result<Fetched, AgentFetchError> {
        let size = origin.version.size;
        let layout = Layout::new(size, piece_size::for_size(size)).expect("a valid piece size");
        let tmp = self.f.objects.dir().join(format!(
            "url-{}",
            &blake3::hash(origin.url.as_str().as_bytes()).to_hex()[..32]
        ));
        let (summary, digests) = self.fetch_origin(&origin, &tmp, layout, None).await?;
        self.finish(origin, tmp, layout, digests, summary, None)
            .await
    }

    /// Puts a URL swarm's content in the catalog, to be served piece by piece under the
    /// swarm's id while it downloads; returns where it lands and a pin for it.
    fn join(&self, origin: &OriginUrl, swarm: &SwarmInfo) -> (PathBuf, Pin) {
        let path = self.f.objects.path(&swarm.id);
        let name = shoal_engine::naming::file_name(None, &origin.url);
        self.f.catalog.insert(Arc::new(Entry::provisional(
            swarm.id,
            swarm.layout,
            name,
            part_path(&path),
        )));
        (path, self.f.objects.pin(swarm.id))
    }

    /// Leads a URL swarm: fetches from the origin, publishes each piece's digest, and only
    /// then marks the piece held so followers can check it.
    async fn lead(&self, origin: OriginUrl, swarm: SwarmInfo) -> Result<Fetched, AgentFetchError> {
        info!(swarm = %swarm.id, url = %swarm.key.url, "leading the swarm: fetching from the origin");
        let (path, _pin) = self.join(&origin, &swarm);
        let (summary, digests) = self
            .fetch_origin(&origin, &path, swarm.layout, Some(swarm.id))
            .await?;
        self.finish(origin, path, swarm.layout, digests, summary, Some(swarm.id))
            .await
    }

    /// Follows a URL swarm: pieces from the leader and the other followers, each checked
    /// against the digest the leader published.
    async fn follow(
        &self,
        origin: &OriginUrl,
        swarm: &SwarmInfo,
    ) -> Result<Fetched, AgentFetchError> {
        info!(swarm = %swarm.id, leader = %swarm.leader, url = %swarm.key.url, "following the swarm");
        let n = swarm.layout.piece_count();
        let known = swarm
            .digests
            .to_digests(n)
            .unwrap_or_else(|_| vec![None; n as usize]);
        let (digests_tx, digests) = watch::channel(known);
        let wanted = Arc::new(tokio::sync::Notify::new());
        let (path, _pin) = self.join(origin, swarm);
        let stop = self.cancel.child_token();
        let refresher = tokio::spawn(refresh_digests(
            self.tracker("a swarm")?.clone(),
            swarm.id,
            n,
            digests_tx,
            wanted.clone(),
            stop.clone(),
        ));
        let result = self
            .swarm(
                swarm.id,
                origin.url.clone(),
                swarm.layout,
                Digests::Published(PublishedDigests {
                    known: digests.clone(),
                    wanted,
                }),
                OriginUse::Never,
                Some(swarm.leader.clone()),
            )
            .await;
        stop.cancel();
        let _ = refresher.await;
        let summary = result?;
        let learned = digests.borrow().clone();
        self.finish(
            OriginUrl {
                url: origin.url.clone(),
                version: origin.version.clone(),
            },
            path,
            swarm.layout,
            learned,
            summary,
            Some(swarm.id),
        )
        .await
    }

    /// Downloads from the origin into `path`, learning every piece's digest; with a swarm,
    /// publishes them as they come and marks each piece held once published.
    async fn fetch_origin(
        &self,
        origin: &OriginUrl,
        path: &std::path::Path,
        layout: Layout,
        swarm: Option<ContentId>,
    ) -> Result<(Summary, Vec<Option<PieceDigest>>), AgentFetchError> {
        let mut options =
            DownloadOptions::new(origin.url.clone(), Output::File(path.to_path_buf()));
        options.existing = Existing::Overwrite;
        options.http = self.f.options.http.clone();
        options.stall_timeout = self.f.options.stall_timeout;
        options.connections = self.f.options.origin_connections;
        // Racing the tail would fetch it from the origin twice.
        options.endgame = Endgame::Never;
        options.learn_pieces = Some(layout.piece_size());
        if swarm.is_some() {
            // Followers can fetch only verified pieces from the leader: pieces must be complete
            // as early as they can be, so the connections share a piece or two at a time, in
            // file order, instead of each streaming its own part of the file.
            let chunk = (layout.piece_size() / u64::from(self.f.options.origin_connections.get()))
                .max(IN_ORDER_MIN_CHUNK)
                .min(layout.piece_size());
            options.in_order = Some((chunk / BLOCK * BLOCK).max(BLOCK));
        }
        options.expected_size = Some(layout.size());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stop = self.cancel.child_token();
        let run = download(options, tx, stop.clone());
        let digests = Mutex::new(vec![None; layout.piece_count() as usize]);
        let forward = async {
            let mut pending: Vec<(PieceIndex, PieceDigest)> = Vec::new();
            let take = |event: Event, pending: &mut Vec<(PieceIndex, PieceDigest)>| {
                if let Event::PieceHashed { index, digest } = &event {
                    if let Some(piece) = layout.piece(*index) {
                        digests.lock().expect("digests lock")[piece.get() as usize] = Some(*digest);
                        pending.push((piece, *digest));
                    }
                }
                if !matches!(
                    event,
                    Event::PieceHashed { .. } | Event::PieceVerified { .. }
                ) {
                    let _ = self.events.send(event);
                }
            };
            // Digests go out as soon as they are learned (those learned meanwhile together):
            // followers can take a piece only once it is published. After a failure, they
            // are tried again on the tick.
            let mut failed = false;
            let mut retry = tokio::time::interval(DIGESTS_EVERY);
            loop {
                tokio::select! {
                    event = rx.recv() => {
                        let Some(event) = event else { break };
                        take(event, &mut pending);
                        while let Ok(event) = rx.try_recv() {
                            take(event, &mut pending);
                        }
                        if !failed {
                            failed = !self.publish(swarm, &mut pending).await;
                        }
                    }
                    _ = retry.tick(), if failed => {
                        failed = !self.publish(swarm, &mut pending).await;
                    }
                }
            }
            self.publish(swarm, &mut pending).await;
        };
        let (result, ()) = tokio::join!(run, forward);
        stop.cancel();
        let summary = result?;
        Ok((summary, digests.into_inner().expect("digests lock")))
    }

    /// Publishes learned digests to the swarm and marks their pieces held; what the tracker
    /// did not take stays pending, and the answer is false.
    async fn publish(
        &self,
        swarm: Option<ContentId>,
        pending: &mut Vec<(PieceIndex, PieceDigest)>,
    ) -> bool {
        let (Some(id), Some(tracker), false) = (swarm, &self.f.tracker, pending.is_empty()) else {
            return true;
        };
        let body = PublishDigestsRequest {
            pieces: pending
                .iter()
                .map(|(i, d)| PieceDigestEntry::new(i.get(), d))
                .collect(),
        };
        match tracker.publish_digests(&id, &body).await {
            Ok(_) => {
                let pieces: Vec<PieceIndex> = pending.drain(..).map(|(i, _)| i).collect();
                self.f.catalog.mark(&id, &pieces);
                true
            }
            Err(e) => {
                debug!(swarm = %id, "publishing digests failed, retrying: {e}");
                false
            }
        }
    }

    /// Turns a finished download at `path` into a content: builds its manifest from the
    /// digests, moves the bytes to the content's place, seeds it (also under the swarm's id,
    /// for followers still fetching), and publishes the manifest and the URL mapping.
    async fn finish(
        &self,
        origin: OriginUrl,
        path: PathBuf,
        layout: Layout,
        digests: Vec<Option<PieceDigest>>,
        summary: Summary,
        swarm: Option<ContentId>,
    ) -> Result<Fetched, AgentFetchError> {
        let digests: Vec<PieceDigest> = digests
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                d.ok_or_else(|| {
                    AgentFetchError::Download(DownloadError::Network {
                        url: shoal_engine::redact::redacted(&origin.url),
                        detail: format!("piece {i} was never hashed"),
                        tries: 1,
                    })
                })
            })
            .collect::<Result<_, _>>()?;
        let manifest = Arc::new(Manifest::new(layout, digests).expect("one digest per piece"));
        let id = manifest.id();
        let name = shoal_engine::naming::file_name(None, &origin.url);
        let pin = self.f.objects.pin(id);
        let target = self.f.objects.path(&id);
        std::fs::rename(&path, &target).map_err(|source| ObjectsError {
            path: target.clone(),
            op: "move into place",
            source,
        })?;
        if let Some(alias) = swarm.and_then(|s| self.f.catalog.get(&s)) {
            alias.set_path(target.clone());
            self.f
                .catalog
                .mark(&alias.id(), &layout.pieces().collect::<Vec<_>>());
        }
        self.f.catalog.insert(Arc::new(Entry::complete(
            manifest.clone(),
            name.clone(),
            Provenance::Fetched,
            target.clone(),
        )));
        let key = key_of(&origin.version);
        self.keep(&manifest, &name, Some(key.clone()))?;
        if let Some(tracker) = &self.f.tracker {
            let published = async {
                tracker.put_manifest(&manifest).await?;
                tracker
                    .publish_url(&PublishUrlRequest {
                        key: key.clone(),
                        content: id,
                    })
                    .await
            };
            match published.await {
                Ok(mapping) if mapping.content != id => warn!(
                    "the tracker maps {} to {}, but its bytes here hash to {id}; \
                     the file may have changed on the origin",
                    key.url, mapping.content
                ),
                Ok(_) => info!(content = %id, url = %key.url, "published"),
                Err(e) => warn!(content = %id, "could not publish the manifest: {e}"),
            }
        }
        Ok(Fetched {
            content: id,
            name,
            path: target,
            size: layout.size(),
            summary: Some(summary),
            pin,
        })
    }
}

/// What the tracker is asked about a URL version: the URL without credentials (they are the
/// user's, not the fleet's), its size and validators.
fn key_of(version: &UrlVersion) -> UrlKey {
    let mut url = version.url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    UrlKey {
        url: url.to_string(),
        size: version.size,
        etag: version.etag.clone(),
        last_modified: version.last_modified.clone(),
    }
}

/// The name a swarm-only content goes by in events and resume state.
pub fn content_url(id: &ContentId) -> Url {
    Url::parse(&format!("shoal:blake3:{id}")).expect("a valid URL")
}

fn part_path(path: &std::path::Path) -> PathBuf {
    shoal_engine::storage::part_path(path)
}

/// Keeps `tx` holding the digests a swarm's leader published so far.
async fn refresh_digests(
    tracker: TrackerClient,
    id: ContentId,
    pieces: u32,
    tx: watch::Sender<Vec<Option<PieceDigest>>>,
    wanted: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    loop {
        match tracker
            .swarm(&id)
            .await
            .map(|s| s.digests.to_digests(pieces))
        {
            Ok(Ok(digests)) => {
                tx.send_if_modified(|known| {
                    let changed = *known != digests;
                    *known = digests;
                    changed
                });
            }
            Ok(Err(e)) => warn!(swarm = %id, "the tracker sent unusable digests: {e}"),
            Err(e) => debug!(swarm = %id, "cannot refresh the swarm's digests: {e}"),
        }
        // The leader publishes a digest before it offers the piece, so a follower rarely
        // lacks one: it asks when the engine says so, and now and then anyway.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wanted.notified() => {}
            _ = tokio::time::sleep(DIGESTS_ROUTINE) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(DIGESTS_EVERY) => {}
        }
    }
}
