//! Piece digests in a URL swarm. The leader learns them from the pieces its origin (trusted)
//! sends, offers each piece as soon as the engine verified it, and publishes its digest to the
//! tracker alongside (followers can check a piece only against a digest the leader learned);
//! an agent fetching alone learns them from its origin download, to build the manifest
//! ([`Publisher`]). Every member keeps a view of the digests and of who leads ([`Following`]),
//! asked of the tracker (only the digests from the first it lacks) when the engine lacks one (a
//! piece written, or held by a peer, whose digest is not in) and now and then anyway, and of the
//! leader when the tracker does not have a wanted one yet: the leader's offer does not wait
//! for the tracker's answer, which on a busy link is a round trip through full queues (a
//! tenth of a second and more at 200 Mbit), added to every piece's first hop. A follower takes
//! over the lead when the leader stalls, and a leader that was taken over from follows.
//!
//! Tracker outages: a leader also keeps every digest in its catalog entry, where its piece
//! server tells them to followers (`GET /v1/pieces/{id}/digests`). While the tracker is
//! unreachable the leader's digests stay pending (they are published once it answers again),
//! and followers ask the leader (the one they last heard of, so the one that took over after a
//! failover) instead of the tracker. A digest is taken only from the tracker or the leader,
//! never from another follower: the leader hashed the origin's bytes, and accepting what two
//! followers agree on would let two agents vouch for any bytes. A tracker that lost the swarm
//! (a restart: swarms are soft state) answers 404 to the leader's publication; the leader then
//! creates the swarm again and publishes every digest it learned.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::manifest::PieceDigest;
use shoal_core::wire::{
    leader_stall_limit, AgentId, CreateSwarmRequest, DigestsQuery, PieceDigestEntry,
    PublishDigestsRequest, SwarmInfo, TakeOverRequest,
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
use crate::catalog::Entry;
use crate::exchange::Exchange;
use crate::tracker::TrackerClient;

/// How often a leader tries again to publish digests the tracker did not take, and the most
/// often a follower asks for them.
pub(super) const DIGESTS_EVERY: Duration = Duration::from_millis(100);
/// The least a leader's connection asks the origin for at once.
const IN_ORDER_MIN_CHUNK: u64 = 256 << 10;
/// How often a follower asks for digests without being short of one.
const DIGESTS_ROUTINE: Duration = Duration::from_secs(1);

impl Job<'_> {
    /// Downloads from the origin into `path` without a swarm, learning every piece's digest,
    /// waiting through the origin's outages up to `max_wait`.
    pub(super) async fn fetch_origin(
        &self,
        origin: &OriginUrl,
        path: &Path,
        layout: Layout,
        max_wait: Option<Duration>,
    ) -> Result<(Summary, Vec<Option<PieceDigest>>), AgentFetchError> {
        let mut options =
            DownloadOptions::new(origin.url.clone(), Output::File(path.to_path_buf()));
        options.existing = Existing::Overwrite;
        options.http = self.http.clone();
        options.tally = Some(self.f.tally.clone());
        options.stall_timeout = self.f.options.stall_timeout;
        options.max_wait = max_wait;
        options.connections = self.f.options.origin_connections;
        // Racing the tail would fetch it from the origin twice.
        options.endgame = Endgame::Never;
        options.learn_pieces = Some(layout.piece_size());
        options.expected_size = Some(layout.size());
        self.caps.apply(&mut options);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stop = self.cancel.child_token();
        let run = download(options, tx, stop.clone());
        let forward = async {
            let mut publisher = Publisher::new(self, None, layout.piece_count());
            let mut retry = tokio::time::interval(DIGESTS_EVERY);
            let take = |event: Event, publisher: &mut Publisher| {
                // No entry holds this file's pieces: those of a `.part` continued are told as
                // the engine hashes them again.
                self.land(&event, layout, None);
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

    /// Publishes `publisher`'s pending digests to the swarm; what the tracker did not take
    /// stays pending, and the answer is false. A tracker that lost a swarm this agent leads
    /// gets it created again.
    async fn publish(&self, publisher: &mut Publisher) -> bool {
        let (Some(id), Some(tracker), false) = (
            publisher.swarm,
            &self.f.tracker,
            publisher.pending.is_empty(),
        ) else {
            return true;
        };
        let body = PublishDigestsRequest {
            pieces: publisher
                .pending
                .iter()
                .map(|(i, d)| PieceDigestEntry::new(i.get(), d))
                .collect(),
        };
        // The leader learned every digest itself: it wants none back.
        let none_back = DigestsQuery {
            digests_from: Some(publisher.learned.len() as u32),
        };
        match tracker.publish_digests(&id, &body, none_back).await {
            Ok(_) => {
                publisher.pending.clear();
                true
            }
            Err(e) if e.is_not_found() && publisher.led.is_some() => {
                self.create_again(tracker, publisher).await;
                false
            }
            Err(e) => {
                debug!(swarm = %id, "publishing digests failed, retrying: {e}");
                false
            }
        }
    }

    /// The tracker lost the swarm `publisher` publishes to: creates it again with this agent
    /// as its leader, and makes every digest learned so far pending, to be published on the
    /// next try.
    async fn create_again(&self, tracker: &TrackerClient, publisher: &mut Publisher) {
        let Some(swarm) = &publisher.led else {
            return;
        };
        let request = CreateSwarmRequest {
            key: swarm.key.clone(),
            layout: swarm.layout,
            agent: self.f.id.clone(),
        };
        match tracker.create_swarm(&request).await {
            Ok(created) if created.leader == self.f.id => {
                publisher.pending =
                    every_digest(swarm.layout, &publisher.learned, publisher.entry.as_deref());
                info!(
                    swarm = %swarm.id,
                    tracker = %tracker.base(),
                    digests = publisher.pending.len(),
                    "the tracker had lost the swarm: created it again, publishing every digest learned"
                );
            }
            Ok(created) => warn!(
                swarm = %swarm.id,
                leader = %created.leader,
                "the tracker had lost the swarm, and another agent leads it now"
            ),
            Err(e) => debug!(swarm = %swarm.id, "creating the lost swarm again failed: {e}"),
        }
    }
}

/// Every digest of a swarm known here: those `learned` from the origin, and those the entry
/// keeps (published by an earlier leader, and taken from the tracker or that leader), which
/// members hold pieces of and a tracker that lost the swarm must be told again.
fn every_digest(
    layout: Layout,
    learned: &[Option<PieceDigest>],
    entry: Option<&Entry>,
) -> Vec<(PieceIndex, PieceDigest)> {
    let n = layout.piece_count();
    let kept = entry
        .and_then(|e| e.digests().to_digests(n).ok())
        .unwrap_or_default();
    layout
        .pieces()
        .filter_map(|p| {
            let i = p.get() as usize;
            let digest = learned.get(i).copied().flatten();
            Some((p, digest.or_else(|| kept.get(i).copied().flatten())?))
        })
        .collect()
}

/// Digests the engine learned ([`Event::PieceHashed`]) on their way to the swarm: published as
/// soon as they are learned (those learned meanwhile together). After a failure, what is
/// pending is tried again when the caller's [`DIGESTS_EVERY`] tick comes. Every digest learned
/// is kept in the swarm's catalog entry first, so that followers asking this agent find the
/// digest of every piece it offers.
pub(super) struct Publisher {
    swarm: Option<ContentId>,
    /// The URL swarm this agent leads: created again at a tracker that lost it.
    led: Option<SwarmInfo>,
    entry: Option<Arc<Entry>>,
    pending: Vec<(PieceIndex, PieceDigest)>,
    learned: Vec<Option<PieceDigest>>,
    failed: bool,
}

impl Publisher {
    /// For a content of `pieces` pieces; with no `swarm`, digests are only collected.
    pub(super) fn new(job: &Job<'_>, swarm: Option<ContentId>, pieces: u32) -> Self {
        Self {
            swarm,
            led: None,
            entry: swarm.and_then(|id| job.f.catalog.get(&id)),
            pending: Vec::new(),
            learned: vec![None; pieces as usize],
            failed: false,
        }
    }

    /// Says that this agent leads the URL swarm `led` (if any), so that a tracker that lost it
    /// gets it created again.
    pub(super) fn leading(mut self, led: Option<&SwarmInfo>) -> Self {
        self.led = led.cloned();
        self
    }

    /// Takes in the digest an event carries, if it is [`Event::PieceHashed`]; says whether.
    pub(super) fn learn(&mut self, event: &Event) -> bool {
        let Event::PieceHashed { index, digest } = event else {
            return false;
        };
        self.learned[index.get() as usize] = Some(*digest);
        if let Some(entry) = &self.entry {
            entry.learn(index.get(), *digest);
        }
        self.pending.push((*index, *digest));
        true
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
        self.failed = !job.publish(self).await;
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
    /// Who leads, as this agent tells it when it took over (the tracker says so too, at the
    /// next refresh).
    lead: watch::Sender<AgentId>,
    /// How long the leader may publish nothing new before it counts as stalled.
    stall: Duration,
    /// Notified by the engine when it lacks a digest.
    wanted: Arc<Notify>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Following {
    /// Starts following `swarm`'s digests and leader at `tracker`, from those `swarm` came
    /// with, and asking the leader (found among the peers `ask`'s entry knows) for the digests
    /// when the tracker fails; stops with `cancel` at the latest.
    pub(super) fn start(
        tracker: TrackerClient,
        swarm: &SwarmInfo,
        ask: LeaderAsk,
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
            ask,
            swarm.id,
            n,
            (tx, leader_tx.clone()),
            wanted.clone(),
            stop.clone(),
        ));
        Self {
            id: swarm.id,
            known,
            leader,
            lead: leader_tx,
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

    /// Says that `me` leads the swarm now: it took over.
    pub(super) fn lead(&self, me: &AgentId) {
        self.lead.send_if_modified(|known| {
            let changed = known != me;
            *known = me.clone();
            changed
        });
    }

    /// Waits until the tracker names another leader than `me`, which leads: a member took over
    /// while this agent stalled (paused, cut off, its origin stuck). Answers the new leader;
    /// ends only when dropped.
    pub(super) async fn deposed(&self, me: &AgentId) -> AgentId {
        let mut leader = self.leader.clone();
        let deposed = leader
            .wait_for(|leader| leader != me)
            .await
            .map(|leader| leader.clone());
        match deposed {
            Ok(leader) => leader,
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops following and returns the digests learned.
    pub(super) async fn stop(self) -> Vec<Option<PieceDigest>> {
        self.stop.cancel();
        let _ = self.task.await;
        self.known.borrow().clone()
    }
}

/// Where a follower asks for digests when the tracker fails: the swarm's leader as last
/// heard of (after a takeover, the new one), at the address its catalog entry knows for it.
pub(super) struct LeaderAsk {
    /// The follower's entry for the swarm: the peers it knows, and the digests it learned
    /// (kept there for peers that ask).
    pub(super) entry: Arc<Entry>,
    pub(super) exchange: Exchange,
}

impl LeaderAsk {
    /// The digests `leader` learned, if it is known and answers.
    async fn digests(
        &self,
        leader: &AgentId,
        id: &ContentId,
        pieces: u32,
    ) -> Option<Vec<Option<PieceDigest>>> {
        let known = self.entry.peer(leader)?;
        match self.exchange.digests(&known, id, pieces).await {
            Ok(digests) => Some(digests),
            Err(e) => {
                debug!(swarm = %id, %leader, "{e}");
                None
            }
        }
    }
}

/// Keeps `tx` holding the digests a swarm's leader learned so far, asked of the tracker or,
/// while the tracker fails or has nothing new for a digest the engine wants, of the leader;
/// and `leader` holding who leads.
async fn refresh_digests(
    tracker: TrackerClient,
    ask: LeaderAsk,
    id: ContentId,
    pieces: u32,
    (tx, leader): (
        watch::Sender<Vec<Option<PieceDigest>>>,
        watch::Sender<AgentId>,
    ),
    wanted: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut wants = false;
    loop {
        // Only the news: every digest before the first missing one is known here already, and
        // an answer with every digest grows with the swarm's progress, polled this often by
        // every follower.
        let news_from = DigestsQuery {
            digests_from: Some(first_missing(&tx.borrow())),
        };
        let ask_leader = match tracker.swarm(&id, news_from).await {
            Ok(swarm) => {
                leader.send_if_modified(|known| {
                    let changed = *known != swarm.leader;
                    if changed {
                        info!(swarm = %id, leader = %swarm.leader, "the swarm has a new leader");
                        *known = swarm.leader.clone();
                    }
                    changed
                });
                let news = match swarm.digests.to_digests(pieces) {
                    Ok(digests) => take_digests(&tx, &ask.entry, digests),
                    Err(e) => {
                        warn!(swarm = %id, "the tracker sent unusable digests: {e}");
                        false
                    }
                };
                // The leader offers a piece before the tracker has its digest: a wanted
                // digest the tracker does not have yet is the leader's to tell.
                wants && !news
            }
            Err(e) => {
                debug!(swarm = %id, "cannot refresh the swarm's digests: {e}; asking its leader");
                true
            }
        };
        if ask_leader {
            let current = leader.borrow().clone();
            if let Some(fresh) = ask.digests(&current, &id, pieces).await {
                take_digests(&tx, &ask.entry, fresh);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wanted.notified() => wants = true,
            _ = tokio::time::sleep(DIGESTS_ROUTINE) => wants = false,
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(DIGESTS_EVERY) => {}
        }
    }
}

/// The index of the first piece whose digest is not known (the piece count when all are).
fn first_missing(known: &[Option<PieceDigest>]) -> u32 {
    known
        .iter()
        .position(Option::is_none)
        .unwrap_or(known.len()) as u32
}

/// Adds the digests in `fresh` to those known: a tracker that restarted (or the leader)
/// may know fewer than were seen, and a digest once known stays.
fn take_digests(
    tx: &watch::Sender<Vec<Option<PieceDigest>>>,
    entry: &Entry,
    fresh: Vec<Option<PieceDigest>>,
) -> bool {
    tx.send_if_modified(|known| {
        let mut changed = false;
        for (i, (old, new)) in known.iter_mut().zip(fresh).enumerate() {
            if let (None, Some(digest)) = (*old, new) {
                *old = Some(digest);
                entry.learn(i as u32, digest);
                changed = true;
            }
        }
        changed
    })
}

#[cfg(test)]
mod tests {
    use shoal_core::wire::peer::KnownPeer;
    use shoal_core::wire::{Scheme, SwarmDigests, UrlKey};

    use super::*;
    use crate::catalog::Catalog;
    use crate::testing::{self, TOKEN};

    fn swarm(layout: Layout) -> SwarmInfo {
        let key = UrlKey {
            url: "https://origin.example/big.iso".into(),
            size: layout.size(),
            etag: None,
            last_modified: None,
        };
        SwarmInfo {
            id: key.swarm_id(),
            key,
            layout,
            leader: AgentId::new("lead").unwrap(),
            created: false,
            digests: SwarmDigests::of(&vec![None; layout.piece_count() as usize]),
        }
    }

    #[test]
    fn digests_once_known_stay_when_a_tracker_knows_fewer() {
        let (tx, rx) = watch::channel(vec![Some([1; 32]), None, None]);
        let entry = Entry::provisional(
            ContentId::from_bytes([1; 32]),
            Layout::new(3 << 20, 1 << 20).unwrap(),
            "f".into(),
            "/nowhere".into(),
        );
        take_digests(&tx, &entry, vec![None, Some([2; 32]), None]);
        assert_eq!(*rx.borrow(), vec![Some([1; 32]), Some([2; 32]), None]);
        assert_eq!(
            entry.digests().to_digests(3).unwrap(),
            vec![None, Some([2; 32]), None],
            "the entry keeps what it learned here, for peers that ask"
        );
    }

    #[test]
    fn a_lost_swarm_is_told_every_digest_known_not_only_those_learned_here() {
        let layout = Layout::new(3 << 20, 1 << 20).unwrap();
        let entry = Entry::provisional(swarm(layout).id, layout, "f".into(), "/nowhere".into());
        // Piece 0's digest was published by the leader this agent took over from.
        entry.learn(0, [1; 32]);
        let learned = vec![None, None, Some([3; 32])];
        let told: Vec<(u32, PieceDigest)> = every_digest(layout, &learned, Some(&entry))
            .into_iter()
            .map(|(p, d)| (p.get(), d))
            .collect();
        assert_eq!(told, vec![(0, [1; 32]), (2, [3; 32])]);
    }

    /// A follower of a 3-piece swarm asking `tracker`, whose leader (serving on loopback
    /// until `cancel`) learned piece 1's digest, [7; 32], and nothing else.
    async fn follower(tracker: url::Url, cancel: &CancellationToken) -> Following {
        let layout = Layout::new(3 << 20, 1 << 20).unwrap();
        let swarm = swarm(layout);
        let leader_catalog = Catalog::new();
        let leader_entry = Entry::provisional(swarm.id, layout, "f".into(), "/nowhere".into());
        leader_entry.learn(1, [7; 32]);
        leader_catalog.insert(Arc::new(leader_entry));
        let leader_addr = testing::serve_pieces(leader_catalog, cancel).await;
        let entry = Arc::new(Entry::provisional(
            swarm.id,
            layout,
            "f".into(),
            "/nowhere".into(),
        ));
        entry.meet([KnownPeer {
            id: swarm.leader.clone(),
            addr: leader_addr,
            scheme: Scheme::Http,
        }]);
        Following::start(
            TrackerClient::new(tracker, TOKEN.into()),
            &swarm,
            LeaderAsk {
                entry,
                exchange: Exchange::new(TOKEN.into(), None),
            },
            cancel,
        )
    }

    /// Waits for piece 1's digest, then checks that only what the leader learned is known.
    async fn learns_the_leaders_digest(following: Following) {
        let mut known = following.known.clone();
        tokio::time::timeout(Duration::from_secs(30), known.wait_for(|d| d[1].is_some()))
            .await
            .expect("no digest from the leader within 30 s")
            .unwrap();
        assert_eq!(
            following.stop().await,
            vec![None, Some([7; 32]), None],
            "only what the leader learned"
        );
    }

    /// A follower asks the tracker only for the digests from its first missing one on, and
    /// keeps those it knew.
    #[tokio::test]
    async fn a_follower_asks_the_tracker_only_for_the_digests_it_lacks() {
        use axum::extract::Query;
        use std::sync::Mutex;

        let cancel = CancellationToken::new();
        let layout = Layout::new(3 << 20, 1 << 20).unwrap();
        let mut published = swarm(layout);
        published.digests = SwarmDigests::of(&[Some([1; 32]), Some([2; 32]), None]);
        let asked = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().fallback({
            let asked = asked.clone();
            move |Query(query): Query<DigestsQuery>| {
                asked.lock().unwrap().push(query.digests_from);
                let mut answer = published.clone();
                if let Some(from) = query.digests_from {
                    answer.digests = answer.digests.since(from);
                }
                async move { axum::Json(answer) }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tracker = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap()));
        let stop = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        // The swarm came with piece 0's digest when this agent joined.
        let mut joined = swarm(layout);
        joined.digests = SwarmDigests::of(&[Some([1; 32]), None, None]);
        let entry = Arc::new(Entry::provisional(
            joined.id,
            layout,
            "f".into(),
            "/nowhere".into(),
        ));
        let following = Following::start(
            TrackerClient::new(tracker.unwrap(), TOKEN.into()),
            &joined,
            LeaderAsk {
                entry,
                exchange: Exchange::new(TOKEN.into(), None),
            },
            &cancel,
        );
        let mut known = following.known.clone();
        tokio::time::timeout(Duration::from_secs(30), known.wait_for(|d| d[1].is_some()))
            .await
            .expect("no digest from the tracker within 30 s")
            .unwrap();
        // A second poll, asked once piece 1's digest is known.
        tokio::time::timeout(Duration::from_secs(30), async {
            while asked.lock().unwrap().len() < 2 {
                tokio::time::sleep(DIGESTS_EVERY).await;
            }
        })
        .await
        .expect("no second poll within 30 s");
        assert_eq!(
            following.stop().await,
            vec![Some([1; 32]), Some([2; 32]), None]
        );
        let asked = asked.lock().unwrap().clone();
        assert_eq!(
            asked[..2],
            [Some(1), Some(2)],
            "from the first digest it lacks"
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_follower_asks_its_leader_for_digests_while_the_tracker_is_down() {
        let cancel = CancellationToken::new();
        let following = follower(testing::refusing_url(), &cancel).await;
        learns_the_leaders_digest(following).await;
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_wanted_digest_the_tracker_does_not_have_yet_comes_from_the_leader() {
        let cancel = CancellationToken::new();
        // The leader offers piece 1 as soon as it verified it; its publication is still on
        // its way to the tracker, which answers without it.
        let tracker = testing::answering(swarm(Layout::new(3 << 20, 1 << 20).unwrap()), &cancel);
        let following = follower(tracker.await, &cancel).await;
        // Nobody wants a digest: the tracker's answer is taken as it is.
        tokio::time::sleep(DIGESTS_EVERY * 3).await;
        assert_eq!(*following.known.borrow(), vec![None, None, None]);
        // The engine lacks piece 1's digest.
        following.wanted.notify_one();
        learns_the_leaders_digest(following).await;
        cancel.cancel();
    }
}
