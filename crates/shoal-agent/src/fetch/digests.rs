//! Piece digests in a URL swarm. The leader learns them from its origin download and
//! publishes each as soon as it is learned, marking the piece held only once it is published
//! (followers can check a piece only against a published digest); an agent fetching alone
//! learns them the same way, to build the manifest; so does a member that took over the lead,
//! for the pieces it fetches from the origin ([`Publisher`]). A follower keeps a view of the
//! published digests and of who leads, asked for when the engine lacks a digest and now and
//! then anyway, and takes over the lead when the leader stalls.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::manifest::PieceDigest;
use shoal_core::wire::{
    leader_stall_limit, AgentId, PieceDigestEntry, PublishDigestsRequest, SwarmInfo,
    TakeOverRequest,
};
use shoal_core::{ContentId, Layout, PieceIndex};
use shoal_engine::{
    download, CancellationToken, Digests, DownloadOptions, Endgame, Event, Existing, Output,
    PublishedDigests, Summary, BLOCK,
};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::role::{self, AfterTakeOver};
use super::{AgentFetchError, Job, OriginUrl};
use crate::tracker::TrackerClient;

/// How often a leader tries again to publish digests the tracker did not take (a piece is only
/// offered once its digest is published), and the most often a follower asks for them.
pub(super) const DIGESTS_EVERY: Duration = Duration::from_millis(100);
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
            options.in_order = Some(self.in_order_chunk(layout));
        }
        options.expected_size = Some(layout.size());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stop = self.cancel.child_token();
        let run = download(options, tx, stop.clone());
        let forward = async {
            let mut publisher = Publisher::new(swarm, layout.piece_count());
            let mut retry = tokio::time::interval(DIGESTS_EVERY);
            let take = |event: Event, publisher: &mut Publisher| {
                if !publisher.learn(&event) && !matches!(event, Event::PieceVerified { .. }) {
                    let _ = self.events.send(event);
                }
            };
            loop {
                tokio::select! {
                    event = rx.recv() => {
                        let Some(event) = event else { break };
                        take(event, &mut publisher);
                        while let Ok(event) = rx.try_recv() {
                            take(event, &mut publisher);
                        }
                        publisher.flush(self).await;
                    }
                    _ = retry.tick(), if publisher.failed() => publisher.retry(self).await,
                }
            }
            publisher.finish(self).await
        };
        let (result, digests) = tokio::join!(run, forward);
        stop.cancel();
        let summary = result?;
        Ok((summary, digests))
    }

    /// What a leader's origin connection asks for at once. Followers can fetch only verified
    /// pieces from the leader: pieces must be complete as early as they can be, so the
    /// connections share a piece or two at a time, in file order, instead of each streaming
    /// its own part of the file.
    pub(super) fn in_order_chunk(&self, layout: Layout) -> u64 {
        let chunk = (layout.piece_size() / u64::from(self.f.options.origin_connections.get()))
            .max(IN_ORDER_MIN_CHUNK)
            .min(layout.piece_size());
        (chunk / BLOCK * BLOCK).max(BLOCK)
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

/// Digests the engine learned ([`Event::PieceHashed`]) on their way to the swarm: published as
/// soon as they are learned (those learned meanwhile together), each piece marked held only
/// once its digest is published, since followers can take a piece only then. After a failure,
/// what is pending is tried again when the caller's [`DIGESTS_EVERY`] tick comes.
pub(super) struct Publisher {
    swarm: Option<ContentId>,
    pending: Vec<(PieceIndex, PieceDigest)>,
    learned: Vec<Option<PieceDigest>>,
    failed: bool,
}

impl Publisher {
    /// For a content of `pieces` pieces; with no `swarm`, digests are only collected.
    pub(super) fn new(swarm: Option<ContentId>, pieces: u32) -> Self {
        Self {
            swarm,
            pending: Vec::new(),
            learned: vec![None; pieces as usize],
            failed: false,
        }
    }

    /// Takes in the digest an event carries, if it is [`Event::PieceHashed`]; says whether.
    pub(super) fn learn(&mut self, event: &Event) -> bool {
        let Event::PieceHashed { index, digest } = event else {
            return false;
        };
        self.learned[index.get() as usize] = Some(*digest);
        self.pending.push((*index, *digest));
        true
    }

    /// Whether piece `index`'s digest was learned here: the piece is marked held once the
    /// digest is published, not when the engine verified it.
    pub(super) fn learned(&self, index: PieceIndex) -> bool {
        self.learned[index.get() as usize].is_some()
    }

    /// The last publish failed: [`Publisher::retry`] on the next tick.
    pub(super) fn failed(&self) -> bool {
        self.failed
    }

    /// Publishes what is pending, unless the last try failed (the tick retries then).
    pub(super) async fn flush(&mut self, job: &Job<'_>) {
        if !self.failed {
            self.retry(job).await;
        }
    }

    /// Publishes what is pending.
    pub(super) async fn retry(&mut self, job: &Job<'_>) {
        self.failed = !job.publish(self.swarm, &mut self.pending).await;
    }

    /// Publishes what is left, one last try, and answers every digest learned.
    pub(super) async fn finish(mut self, job: &Job<'_>) -> Vec<Option<PieceDigest>> {
        self.retry(job).await;
        self.learned
    }
}

/// A follower's view of its swarm: the digests published so far, and who leads, kept fresh by
/// a task until [`Following::stop`].
pub(super) struct Following {
    id: ContentId,
    known: watch::Receiver<Vec<Option<PieceDigest>>>,
    leader: watch::Receiver<AgentId>,
    /// How long the leader may publish nothing new before it counts as stalled.
    stall: Duration,
    /// Notified by the engine when it lacks a digest.
    wanted: Arc<Notify>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Following {
    /// Starts following `swarm`'s digests and leader at `tracker`, from those `swarm` came
    /// with; stops with `cancel` at the latest.
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
        let (leader_tx, leader) = watch::channel(swarm.leader.clone());
        let wanted = Arc::new(Notify::new());
        let stop = cancel.child_token();
        let task = tokio::spawn(refresh_digests(
            tracker,
            swarm.id,
            n,
            (tx, leader_tx),
            wanted.clone(),
            stop.clone(),
        ));
        Self {
            id: swarm.id,
            known,
            leader,
            stall: leader_stall_limit(swarm.layout),
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

    /// The swarm's leader as the tracker names it now.
    pub(super) fn leader(&self) -> watch::Receiver<AgentId> {
        self.leader.clone()
    }

    /// Waits until the leader has published nothing new, and not changed, for the swarm's
    /// [`leader_stall_limit`], then asks the tracker to make `me` the leader; answers the swarm
    /// once it did. A refusal (the leader is live, or another member won) starts the wait
    /// over. Ends only when dropped.
    pub(super) async fn take_over_when_stalled(
        &self,
        tracker: &TrackerClient,
        me: &AgentId,
    ) -> SwarmInfo {
        let (mut known, mut leader) = (self.known.clone(), self.leader.clone());
        let mut since = Instant::now();
        loop {
            if let Some(wait) = role::wait_before_take_over(since.elapsed(), self.stall) {
                tokio::select! {
                    Ok(()) = known.changed() => since = Instant::now(),
                    Ok(()) = leader.changed() => since = Instant::now(),
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            let answer = tracker
                .take_over(&self.id, &TakeOverRequest { agent: me.clone() })
                .await;
            match role::after_take_over(answer, me) {
                AfterTakeOver::Lead(swarm) => return swarm,
                AfterTakeOver::Follow(why) => {
                    debug!(swarm = %self.id, "not taking over the swarm's lead: {why}");
                    since = Instant::now();
                }
            }
        }
    }

    /// Stops following and returns the digests learned.
    pub(super) async fn stop(self) -> Vec<Option<PieceDigest>> {
        self.stop.cancel();
        let _ = self.task.await;
        self.known.borrow().clone()
    }
}

/// Keeps `tx` holding the digests a swarm's leader published so far, and who leads.
async fn refresh_digests(
    tracker: TrackerClient,
    id: ContentId,
    pieces: u32,
    (tx, leader): (
        watch::Sender<Vec<Option<PieceDigest>>>,
        watch::Sender<AgentId>,
    ),
    wanted: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        match tracker.swarm(&id).await {
            Ok(swarm) => {
                leader.send_if_modified(|known| {
                    let changed = *known != swarm.leader;
                    if changed {
                        info!(swarm = %id, leader = %swarm.leader, "the swarm has a new leader");
                        *known = swarm.leader.clone();
                    }
                    changed
                });
                match swarm.digests.to_digests(pieces) {
                    Ok(digests) => {
                        tx.send_if_modified(|known| {
                            let changed = *known != digests;
                            *known = digests;
                            changed
                        });
                    }
                    Err(e) => warn!(swarm = %id, "the tracker sent unusable digests: {e}"),
                }
            }
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
