//! Piece digests in a URL swarm. The leader learns them from its origin download and
//! publishes each as soon as it is learned, marking the piece held only once it is published
//! (followers can check a piece only against a published digest); an agent fetching alone
//! learns them the same way, to build the manifest. A follower keeps a view of the published
//! digests, asked for when the engine lacks one and now and then anyway.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_core::manifest::PieceDigest;
use shoal_core::wire::{PieceDigestEntry, PublishDigestsRequest, SwarmInfo};
use shoal_core::{ContentId, Layout, PieceIndex};
use shoal_engine::{
    download, CancellationToken, Digests, DownloadOptions, Endgame, Event, Existing, Output,
    PublishedDigests, Summary, BLOCK,
};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::{AgentFetchError, Job, OriginUrl};
use crate::tracker::TrackerClient;

/// How often a leader tries again to publish digests the tracker did not take (a piece is only
/// offered once its digest is published), and the most often a follower asks for them.
const DIGESTS_EVERY: Duration = Duration::from_millis(100);
/// The least a leader's connection asks the origin for at once.
const IN_ORDER_MIN_CHUNK: u64 = 256 << 10;
/// How often a follower asks for digests without being short of one.
const DIGESTS_ROUTINE: Duration = Duration::from_secs(1);

impl Job<'_> {
    /// Downloads from the origin into `path`, learning every piece's digest; with a swarm,
    /// publishes them as they come and marks each piece held once published.
    pub(super) async fn fetch_origin(
        &self,
        origin: &OriginUrl,
        path: &Path,
        layout: Layout,
        swarm: Option<ContentId>,
    ) -> Result<(Summary, Vec<Option<PieceDigest>>), AgentFetchError> {
        let mut options =
            DownloadOptions::new(origin.url.clone(), Output::File(path.to_path_buf()));
        options.existing = Existing::Overwrite;
        options.http = self.f.options.http.clone();
        options.tally = Some(self.f.tally.clone());
        options.stall_timeout = self.f.options.stall_timeout;
        options.max_wait = Some(self.f.options.max_wait);
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
                    digests.lock().expect("digests lock")[index.get() as usize] = Some(*digest);
                    pending.push((*index, *digest));
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
}

/// A follower's view of the digests its swarm's leader published, kept fresh by a task until
/// [`Following::stop`].
pub(super) struct Following {
    known: watch::Receiver<Vec<Option<PieceDigest>>>,
    /// Notified by the engine when it lacks a digest.
    wanted: Arc<Notify>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Following {
    /// Starts following `swarm`'s digests at `tracker`, from those `swarm` came with; stops
    /// with `cancel` at the latest.
    pub(super) fn start(
        tracker: TrackerClient,
        swarm: &SwarmInfo,
        cancel: &CancellationToken,
    ) -> Self {
        let n = swarm.layout.piece_count();
        let known = swarm
            .digests
            .to_digests(n)
            .unwrap_or_else(|_| vec![None; n as usize]);
        let (tx, known) = watch::channel(known);
        let wanted = Arc::new(Notify::new());
        let stop = cancel.child_token();
        let task = tokio::spawn(refresh_digests(
            tracker,
            swarm.id,
            n,
            tx,
            wanted.clone(),
            stop.clone(),
        ));
        Self {
            known,
            wanted,
            stop,
            task,
        }
    }

    /// The digests as the engine checks pieces against them.
    pub(super) fn digests(&self) -> Digests {
        Digests::Published(PublishedDigests {
            known: self.known.clone(),
            wanted: self.wanted.clone(),
        })
    }

    /// Stops following and returns the digests learned.
    pub(super) async fn stop(self) -> Vec<Option<PieceDigest>> {
        self.stop.cancel();
        let _ = self.task.await;
        self.known.borrow().clone()
    }
}

/// Keeps `tx` holding the digests a swarm's leader published so far.
async fn refresh_digests(
    tracker: TrackerClient,
    id: ContentId,
    pieces: u32,
    tx: watch::Sender<Vec<Option<PieceDigest>>>,
    wanted: Arc<Notify>,
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
