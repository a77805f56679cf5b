//! Moving the bytes: the connections (workers) and the loop that steers them.
//!
//! Every worker owns a range from [`Segments`], streams it into the part file with positional
//! writes, and asks for more when done. The controller ticks ten times a second: it measures
//! each connection, retires stalled or far-too-slow ones, decides how many connections are worth
//! keeping, starts new ones while there is work, and reports progress.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bytes::Bytes;
use reqwest::Response;
use shoal_core::{Bitfield, ByteRange, ChecksumAlgo, Layout};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::checkpoint::{Checkpoint, DoneBlocks, FLUSH_AGE};
use crate::download::network;
use crate::error::{DownloadError, ErrorKind};
use crate::events::{Event, EventSender, Progress, SourceUsage};
use crate::http::{transport_error, FetchError, RangeSource};
use crate::metalink::PieceHashes;
use crate::options::Digests;
use crate::options::{DownloadOptions, PeerSource};
use crate::pieces::{Expected, PieceCheck};
use crate::ratelimit::RateLimiter;
use crate::redact::redacted;
use crate::retry::Backoff;
use crate::segments::{Next, Segments, WorkerId};
use crate::storage::PartFile;
use crate::swarm::{self, Asked, PeerState};

/// Bytes gathered before one positional write: large writes keep syscalls few.
pub(crate) const BUF: usize = 256 * 1024;
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// All connections stream this long before their worth is judged: slow start and servers
/// that burst a second's worth of data at first (nginx `limit_rate`) make earlier numbers lie.
const WARMUP: Duration = Duration::from_millis(1500);
/// How long a trial with half the connections paused runs before its throughput is compared.
const TRIAL: Duration = Duration::from_millis(1500);
/// Trials compare exact averages over these windows: the second before a trial, and the end
/// of the trial, once the connections still reading have taken up the paused ones' share.
const BASELINE_WINDOW: Duration = Duration::from_secs(1);
const TRIAL_WINDOW: Duration = Duration::from_millis(1200);
/// How often a paused connection looks whether it may read again.
const PAUSE_POLL: Duration = Duration::from_millis(20);
/// Trials only run when the download has at least this long to go, so one that costs
/// throughput costs at most a few percent of the time.
const TRIAL_MIN_ETA: Duration = Duration::from_secs(8);
/// Fewer connections are enough if they reach this share of what all of them did (measuring
/// over about a second is noisy by several percent, so this is not closer to 1).
const HALF_IS_ENOUGH: f64 = 0.85;
/// A connection this many times slower than the median (after `SLOW_GRACE` of streaming)
/// loses its work.
const SLOW_FACTOR: f64 = 10.0;
const SLOW_GRACE: Duration = Duration::from_secs(2);
/// ... and only once it has been that slow for this long: servers that pace in bursts (nginx
/// sends a second's worth at the start of every request) make connections look slow for a
/// moment, and closing one throws away what it has in flight.
const SLOW_FOR: Duration = Duration::from_secs(3);
/// An attempt that wrote at least this much resets the try counter: `--max-tries` bounds
/// consecutive failures, not the failures of a long download.
const PROGRESS_RESETS_TRIES: u64 = 1 << 20;

/// How long a connection to a peer waits for work before it closes.
const PEER_IDLE: Duration = Duration::from_secs(2);
/// Consecutive failures after which a peer is not asked any more.
const PEER_TRIES: u32 = 2;
/// Connections to a seed (a peer holding everything, or a URL swarm's leader): each
/// downloader takes only first copies from it, whole pieces, and a piece is passed on only once
/// complete, so fewer pieces in flight at once from its uplink means each arrives sooner.
const SEED_CONNECTIONS: u32 = 1;
/// Connections to a swarm's origin: it is the fallback, not the main source.
const SWARM_ORIGIN_CONNECTIONS: u32 = 4;

fn origin_cap(options: &DownloadOptions) -> u32 {
    match options.swarm.as_ref().map(|s| &s.origin) {
        Some(crate::options::OriginUse::Fallback { connections, .. }) => connections.get(),
        _ => SWARM_ORIGIN_CONNECTIONS,
    }
}

/// What every transfer needs from the download.
#[derive(Clone)]
pub struct Transfer {
    pub options: Arc<DownloadOptions>,
    pub part: Arc<PartFile>,
    pub events: EventSender,
    pub cancel: CancellationToken,
}

pub struct Outcome {
    pub size: u64,
    pub max_connections: u32,
    pub fetched: u64,
    pub sources: Vec<SourceUsage>,
}

/// What a source can serve, and so how its connections are given work.
enum Kind {
    /// A server of the whole file (the URL asked for, a mirror): it takes pending work and
    /// steals from others.
    Whole,
    /// A peer: only the pieces it has verified, in the order `swarm::order` gives.
    Peer(PeerState),
    /// The origin of a swarm download: pieces no peer holds, and racing slow peers at the end.
    SwarmOrigin,
}

/// One server of the file and how it is doing.
struct Source {
    range: RangeSource,
    kind: Kind,
    /// The most connections to it.
    cap: u32,
    /// Connections to it right now.
    connections: AtomicU32,
    bytes: AtomicU64,
    /// Bytes per second per connection, as an `f64`'s bits; 0 until measured.
    speed: AtomicU64,
    /// Why it is no longer used, once it is not.
    dropped: Mutex<Option<String>>,
}

impl Source {
    fn new(range: RangeSource, kind: Kind, cap: u32) -> Self {
        Self {
            range,
            kind,
            cap,
            connections: AtomicU32::new(0),
            bytes: AtomicU64::new(0),
            speed: AtomicU64::new(0),
            dropped: Mutex::new(None),
        }
    }

    /// The most connections to it now: a seed gets fewer (see [`SEED_CONNECTIONS`]).
    fn cap(&self) -> u32 {
        match &self.kind {
            Kind::Peer(peer) if peer.is_seed() => self.cap.min(SEED_CONNECTIONS),
            _ => self.cap,
        }
    }

    fn is_peer(&self) -> bool {
        matches!(self.kind, Kind::Peer(_))
    }

    fn is_dropped(&self) -> bool {
        self.dropped.lock().expect("source lock").is_some()
    }
}

struct Shared {
    t: Transfer,
    size: u64,
    pieces: Option<PieceCheck>,
    /// Sources only ever get added (peers as they become known), so an index names one source
    /// for the whole download.
    sources: RwLock<Vec<Arc<Source>>>,
    /// The pieces of a swarm download, which peers hold and the scheduler hands out.
    layout: Option<Layout>,
    /// How peers are asked, in a swarm download.
    peer_client: Option<reqwest::Client>,
    segments: Mutex<Segments>,
    limiter: Option<RateLimiter>,
    fetched: AtomicU64,
    /// Connections worth running: raised by the controller, lowered by servers that say so.
    target: AtomicU32,
    alive: AtomicU32,
    /// Connections receiving a response right now, and the most there ever were.
    streaming: AtomicU32,
    peak: AtomicU32,
    failure: Mutex<Option<DownloadError>>,
    complete: Notify,
    /// Woken when a write completes a piece, which can be checked now.
    piece_written: Notify,
    /// Woken when there may be new work for connections to peers: peers' news, or work given
    /// back.
    work_changed: Notify,
    start: Instant,
}

impl DoneBlocks for Shared {
    fn snapshot(&self) -> (Bitfield, u64) {
        let segments = self.segments();
        (segments.done().clone(), segments.done_bytes())
    }

    fn done_bytes(&self) -> u64 {
        self.segments().done_bytes()
    }

    fn connections(&self) -> u32 {
        self.streaming.load(Ordering::SeqCst)
    }

    fn fail(&self, error: DownloadError) {
        Shared::fail(self, error);
    }
}

impl Shared {
    fn segments(&self) -> MutexGuard<'_, Segments> {
        self.segments.lock().expect("segments lock")
    }

    fn fail(&self, error: DownloadError) {
        self.failure
            .lock()
            .expect("failure lock")
            .get_or_insert(error);
        self.complete.notify_one();
    }

    /// Stops using a source that keeps failing. Returns false, leaving it in use, when it is
    /// the last one: then its failure is the download's.
    fn drop_source(&self, index: usize, reason: String) -> bool {
        let sources = self.all_sources();
        let others = sources
            .iter()
            .enumerate()
            .any(|(i, s)| i != index && !s.is_dropped());
        if !others {
            return false;
        }
        let source = &sources[index];
        let mut dropped = source.dropped.lock().expect("source lock");
        if dropped.is_none() {
            info!(url = %source.range.shown_url(), %reason, "mirror dropped");
            let _ = self.t.events.send(Event::SourceDropped {
                url: source.range.shown_url(),
                reason: reason.clone(),
            });
            *dropped = Some(reason);
        }
        true
    }

    fn source(&self, index: usize) -> Arc<Source> {
        self.sources.read().expect("sources lock")[index].clone()
    }

    fn all_sources(&self) -> Vec<Arc<Source>> {
        self.sources.read().expect("sources lock").clone()
    }

    /// The source a new connection should use: the live one with the fewest connections,
    /// under its cap, that has work a connection could take now.
    fn pick_source(&self) -> Option<usize> {
        let sources = self.all_sources();
        sources
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_dropped())
            .map(|(i, s)| (i, s, s.connections.load(Ordering::SeqCst)))
            .filter(|&(_, s, n)| n < s.cap() && self.has_work_for(s))
            .min_by_key(|&(i, _, n)| (n, i))
            .map(|(i, _, _)| i)
    }

    fn has_work_for(&self, source: &Source) -> bool {
        match &source.kind {
            Kind::Whole => self.segments().has_work(),
            Kind::Peer(_) | Kind::SwarmOrigin => {
                let allowed = self.allowed(source);
                self.segments().has_work_within(&allowed)
            }
        }
    }

    /// The next range for worker `id` of `source`, taken for it in the segments.
    fn assign(&self, id: WorkerId, source: &Source, speed: Option<f64>) -> Option<ByteRange> {
        match &source.kind {
            Kind::Whole => {
                let mut seg = self.segments();
                match (seg.owned_by(id), self.t.options.in_order) {
                    (Some(r), _) if !r.is_empty() => Some(r),
                    (_, Some(chunk)) => seg.assign_front(id, chunk),
                    (_, None) => seg.assign_at(id, speed),
                }
            }
            // Whole pieces, not shares of one: a piece that does not match is blamed on whoever
            // wrote it, and with two writers an honest peer would be blamed with a lying one.
            Kind::Peer(_) => {
                let allowed = self.allowed(source);
                let mut seg = self.segments();
                let range = match seg.owned_by(id) {
                    Some(r) if !r.is_empty() => Some(r),
                    _ => seg.assign_within(id, &allowed),
                };
                drop(seg);
                if let (Some(range), Some(pieces)) = (range, &self.pieces) {
                    pieces.expect_digest(range.start());
                }
                range
            }
            Kind::SwarmOrigin => {
                let allowed = self.allowed(source);
                let whole = [ByteRange::new(0, self.size).expect("a swarm file is not empty")];
                let mut seg = self.segments();
                match seg.owned_by(id) {
                    Some(r) if !r.is_empty() => Some(r),
                    _ => seg
                        .assign_within(id, &allowed)
                        .or_else(|| seg.race_within(id, &whole)),
                }
            }
        }
    }

    /// The pieces `source` may be asked for, in the order to ask (see `swarm::order`); a
    /// server of the whole file may be asked for anything.
    fn allowed(&self, source: &Source) -> Vec<ByteRange> {
        let (Some(layout), Some(swarm)) = (self.layout, &self.t.options.swarm) else {
            return vec![ByteRange::new(0, self.size).expect("size > 0")];
        };
        let sources = self.all_sources();
        let peers: Vec<&PeerState> = sources
            .iter()
            .filter(|s| !s.is_dropped())
            .filter_map(|s| match &s.kind {
                Kind::Peer(peer) => Some(peer),
                _ => None,
            })
            .collect();
        let asked = match &source.kind {
            Kind::Peer(peer) => Asked::Peer(peer),
            Kind::SwarmOrigin | Kind::Whole => Asked::Origin,
        };
        swarm::order(layout, &swarm.me, &peers, asked)
    }

    /// Adds peers not seen before and takes in what known ones hold now.
    fn refresh_peers(&self, peers: &[PeerSource]) {
        let mut sources = self.sources.write().expect("sources lock");
        for peer in peers {
            let known = sources.iter().find_map(|s| match &s.kind {
                Kind::Peer(state) if state.name == peer.name && s.range.url == peer.url => {
                    Some(state)
                }
                _ => None,
            });
            match known {
                Some(state) => state.update(peer),
                None => {
                    debug!(peer = %peer.name, url = %redacted(&peer.url), "new peer");
                    let swarm = self.t.options.swarm.as_ref().expect("peers only in swarms");
                    sources.push(Arc::new(Source::new(
                        RangeSource {
                            client: self.peer_client.clone().expect("a swarm has a peer client"),
                            url: peer.url.clone(),
                            size: self.size,
                            validator: None,
                        },
                        Kind::Peer(PeerState::new(peer)),
                        swarm.per_peer.get(),
                    )));
                }
            }
        }
    }

    fn millis(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A server asked for fewer connections. Returns whether this worker should stop: it does
    /// unless it is the last one.
    fn lower_connections(&self, reason: &str) -> bool {
        let alive = self.alive.load(Ordering::SeqCst);
        if alive <= 1 {
            return false;
        }
        let to = alive - 1;
        let before = self.target.fetch_min(to, Ordering::SeqCst);
        if before > to {
            let _ = self.t.events.send(Event::ConnectionsLowered {
                to,
                reason: reason.to_string(),
            });
        }
        true
    }
}

#[derive(Default)]
struct Stats {
    /// The source this connection fetches from.
    source: usize,
    bytes: AtomicU64,
    /// This connection's measured bytes per second, as an `f64`'s bits; 0 until measured.
    speed: AtomicU64,
    /// Set during a trial: the connection stops reading (its data waits in the socket, not
    /// lost) while the others show what they achieve without it.
    paused: AtomicBool,
    /// Milliseconds since the transfer started; `u64::MAX` until the first byte.
    first_byte: AtomicU64,
    /// A response is streaming (a connection to a peer may wait for work between pieces).
    streaming: AtomicBool,
}

struct Slot {
    source: usize,
    token: CancellationToken,
    stats: Arc<Stats>,
    handle: JoinHandle<()>,
    seen: u64,
    speed: f64,
    /// Since when (milliseconds into the transfer) it has been far below the median.
    slow_since: Option<u64>,
}

enum Phase {
    /// Every connection streams; nothing is judged yet.
    Warmup {
        until: Instant,
    },
    /// The `paused` connections stop reading; `baseline` is what all achieved before.
    Trial {
        baseline: f64,
        paused: Vec<WorkerId>,
        until: Instant,
    },
    Settled,
}

/// How a source given at the start is used.
pub enum Role {
    /// It serves the whole file: the URL asked for, or a mirror.
    Whole,
    /// The origin of a swarm download, used for pieces no peer holds and to race slow peers.
    SwarmOrigin,
}

/// Downloads the blocks not in `done` of a file of `size` bytes over many connections to
/// `sources` and, in a swarm download, to the peers `options.swarm` names as they become
/// known. `first` (the probe's response and the offset it streams from) is used when the first
/// missing block starts there. `checkpoint` records progress durably while this runs and once
/// more when it stops, however it stops.
pub async fn segmented(
    t: Transfer,
    size: u64,
    sources: Vec<(RangeSource, Role)>,
    first: Option<(Response, u64)>,
    done: Bitfield,
    checkpoint: Checkpoint,
) -> Result<Outcome, DownloadError> {
    let options = t.options.clone();
    let pieces = match piece_check(&options, size) {
        Ok(pieces) => pieces,
        Err(detail) => {
            return Err(DownloadError::Network {
                url: redacted(&options.url),
                detail,
                tries: 1,
            })
        }
    };
    let mut segments = Segments::resume(size, options.min_split.get(), done);
    segments.set_endgame(options.endgame);
    let first = match (first, segments.owned_by(0)) {
        (Some((response, start)), None) => match first_range(&mut segments, options.in_order) {
            Some(range) if range.start() == start => Some(response),
            _ => {
                // Not where the work starts. Dropped now, not when this function returns:
                // dropping closes its connection, which would otherwise keep the server
                // sending what nobody reads.
                segments.release(0);
                drop(response);
                None
            }
        },
        _ => None,
    };
    let many = sources.len() > 1;
    let sources: Vec<Arc<Source>> = sources
        .into_iter()
        .map(|(range, role)| {
            let (kind, cap) = match role {
                Role::Whole if many => (Kind::Whole, options.per_server.get()),
                Role::Whole => (Kind::Whole, u32::MAX),
                Role::SwarmOrigin => (Kind::SwarmOrigin, origin_cap(&options)),
            };
            Arc::new(Source::new(range, kind, cap))
        })
        .collect();
    let swarm = options.swarm.clone();
    let peer_client = match &swarm {
        Some(swarm) => {
            Some(crate::http::client(&swarm.peer_http).map_err(|e| network(&options.url, &e, 1))?)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        limiter: options
            .limit_rate
            .map(|r| RateLimiter::new(r.bytes_per_sec())),
        size,
        pieces,
        sources: RwLock::new(sources),
        layout: swarm.as_ref().map(|s| s.layout),
        peer_client,
        segments: Mutex::new(segments),
        fetched: AtomicU64::new(0),
        target: AtomicU32::new(1),
        alive: AtomicU32::new(0),
        streaming: AtomicU32::new(0),
        peak: AtomicU32::new(0),
        failure: Mutex::new(None),
        complete: Notify::new(),
        piece_written: Notify::new(),
        work_changed: Notify::new(),
        start: Instant::now(),
        t,
    });
    // Peers' news is taken in as it comes, not at the next tick: a piece a peer just verified
    // is work for a connection waiting on that peer.
    let in_swarm = swarm.is_some();
    let peer_news = swarm.map(|s| {
        let mut peers = s.peers;
        shared.refresh_peers(&peers.borrow_and_update());
        let shared = shared.clone();
        tokio::spawn(async move {
            while peers.changed().await.is_ok() {
                shared.refresh_peers(&peers.borrow_and_update());
                shared.work_changed.notify_waiters();
            }
        })
    });
    let checkpoint = checkpoint.start(shared.clone());
    let mut slots: HashMap<WorkerId, Slot> = HashMap::new();
    let mut next_id: WorkerId = 0;
    if first.is_some() {
        slots.insert(0, spawn(&shared, 0, 0, first));
        next_id += 1;
    }
    shared
        .target
        .store(options.connections.get(), Ordering::SeqCst);
    // Trials judge one server's link; a swarm's connections go to many.
    let mut phase = if in_swarm {
        Phase::Settled
    } else {
        Phase::Warmup {
            until: Instant::now() + WARMUP,
        }
    };
    let mut ticker = tokio::time::interval(TICK);
    let mut last_fetched = 0u64;
    let mut speed = 0.0f64;
    let mut history = History::default();
    // A swarm download waits this long for a source of its missing pieces (peers that are
    // still fetching them, or ones the tracker has yet to name) before it gives up.
    let swarm_idle_limit = 4 * shared.t.options.stall_timeout;
    let mut idle = (0u64, Instant::now());

    // Digests that arrive while a piece waits for one.
    let mut published = match shared.t.options.swarm.as_ref().map(|s| &s.digests) {
        Some(Digests::Published(d)) => Some(d.known.clone()),
        _ => None,
    };

    let result = loop {
        // A piece is checked as soon as its bytes or its digest are in, not at the next tick:
        // in a swarm, a piece is passed on only once verified, and each hop adds this wait.
        let tick = tokio::select! {
            _ = shared.t.cancel.cancelled() => break Err(DownloadError::Cancelled),
            _ = shared.complete.notified() => true,
            _ = ticker.tick() => true,
            _ = shared.piece_written.notified() => false,
            Ok(()) = async {
                match published.as_mut() {
                    Some(known) => known.changed().await,
                    None => std::future::pending().await,
                }
            } => false,
        };
        if let Some(error) = shared.failure.lock().expect("failure lock").take() {
            break Err(error);
        }
        if let Err(error) = check_pieces(&shared).await {
            break Err(error);
        }
        let verified = shared.pieces.as_ref().is_none_or(|p| p.all_verified());
        if shared.segments().is_complete() && verified {
            break Ok(());
        }
        if !tick {
            continue;
        }
        slots.retain(|_, slot| !slot.handle.is_finished());

        let now_ms = shared.millis();
        let tick = TICK.as_secs_f64();
        for slot in slots.values_mut() {
            let bytes = slot.stats.bytes.load(Ordering::Relaxed);
            let inst = (bytes - slot.seen) as f64 / tick;
            slot.seen = bytes;
            if slot.stats.paused.load(Ordering::Relaxed) {
                // A paused connection keeps the speed it had: otherwise thieves would take
                // its range for a slow one, and what the server already sent it would be lost.
                continue;
            }
            slot.speed = 0.8 * slot.speed + 0.2 * inst;
            if streamed_for(&slot.stats, now_ms) >= Duration::from_secs(1) {
                slot.stats
                    .speed
                    .store(slot.speed.to_bits(), Ordering::Relaxed);
            }
        }
        for (i, source) in shared.all_sources().iter().enumerate() {
            let measured: Vec<f64> = slots
                .values()
                .filter(|s| s.source == i && s.stats.speed.load(Ordering::Relaxed) != 0)
                .map(|s| s.speed)
                .collect();
            if !measured.is_empty() {
                let mean = measured.iter().sum::<f64>() / measured.len() as f64;
                source.speed.store(mean.to_bits(), Ordering::Relaxed);
            }
        }
        {
            let mut seg = shared.segments();
            for (&id, slot) in &slots {
                if streamed_for(&slot.stats, now_ms) >= Duration::from_secs(1) {
                    seg.set_speed(id, slot.speed);
                }
            }
            for id in seg.redundant() {
                if let Some(slot) = slots.get(&id) {
                    slot.token.cancel();
                }
            }
        }
        retire_slow(&shared, &mut slots, now_ms);

        let fetched = shared.fetched.load(Ordering::Relaxed);
        speed = 0.8 * speed + 0.2 * (fetched - last_fetched) as f64 / tick;
        last_fetched = fetched;
        history.record(fetched);
        phase = steer(&shared, phase, &slots, &history);
        let target = shared.target.load(Ordering::SeqCst) as usize;
        let mut surplus: Vec<WorkerId> = slots
            .iter()
            .filter(|(_, s)| !s.token.is_cancelled())
            .map(|(&id, _)| id)
            .collect();
        if surplus.len() > target {
            surplus.sort_unstable();
            for id in &surplus[target..] {
                slots[id].token.cancel();
            }
        }
        while slots.len() < target && shared.segments().has_work() {
            let Some(source) = shared.pick_source() else {
                break;
            };
            slots.insert(next_id, spawn(&shared, next_id, source, None));
            next_id += 1;
        }

        if fetched != idle.0 {
            idle = (fetched, Instant::now());
        } else if in_swarm && slots.is_empty() && idle.1.elapsed() >= swarm_idle_limit {
            let secs = swarm_idle_limit.as_secs();
            let detail = if shared.segments().is_complete() {
                format!("every byte is here, but the digests of some pieces were not published within {secs}s")
            } else {
                format!("no peer (and no origin) could serve the missing pieces for {secs}s")
            };
            break Err(DownloadError::Network {
                url: redacted(&shared.t.options.url),
                detail,
                tries: 1,
            });
        }
        let streaming = shared.streaming.load(Ordering::SeqCst);
        let _ = shared.t.events.send(Event::Progress(Progress {
            done: shared.segments().done_bytes(),
            total: Some(shared.size),
            speed,
            connections: streaming,
        }));
    };

    for slot in slots.values() {
        slot.token.cancel();
    }
    for (_, slot) in slots.drain() {
        let _ = slot.handle.await;
    }
    // Every worker has written what it held: the last state names all of it.
    if let Some(task) = peer_news {
        task.abort();
    }
    let saved = checkpoint.finish(shared.as_ref()).await;
    if let (Err(failed), Err(unsaved)) = (&result, &saved) {
        // Two local failures are the same full or broken disk, said once by the error itself.
        if failed.kind() != ErrorKind::LocalIo {
            warn!("{failed}; the resume state could not be updated either: {unsaved}");
        }
    }
    result?;
    saved?;
    // A worker may have failed after the last byte was written; the file is complete anyway.
    Ok(Outcome {
        size: shared.size,
        max_connections: shared.peak.load(Ordering::SeqCst).max(1),
        fetched: shared.fetched.load(Ordering::Relaxed),
        sources: shared
            .all_sources()
            .iter()
            .map(|s| SourceUsage {
                url: s.range.shown_url(),
                bytes: s.bytes.load(Ordering::Relaxed),
                dropped: s.dropped.lock().expect("source lock").clone(),
            })
            .collect(),
    })
}

/// The first range of a download, which the probe's response streams.
fn first_range(segments: &mut Segments, in_order: Option<u64>) -> Option<ByteRange> {
    match in_order {
        Some(chunk) => segments.assign_front(0, chunk),
        None => segments.assign(0),
    }
}

/// What checks the pieces, if anything does: piece hashes (a Metalink), the swarm's digests,
/// or learning them.
fn piece_check(options: &DownloadOptions, size: u64) -> Result<Option<PieceCheck>, String> {
    let (expected, length) = match (&options.swarm, &options.pieces, options.learn_pieces) {
        (Some(swarm), _, _) => {
            let expected = match &swarm.digests {
                Digests::Manifest(m) => Expected::Known(PieceHashes {
                    algo: ChecksumAlgo::Blake3,
                    length: m.layout().piece_size(),
                    hashes: m.digests().iter().map(|d| d.to_vec()).collect(),
                }),
                Digests::Published(d) => Expected::Published(d.clone()),
            };
            (expected, swarm.layout.piece_size())
        }
        (None, Some(hashes), _) => (Expected::Known(hashes.clone()), hashes.length),
        (None, None, Some(length)) => (Expected::Learned, length),
        (None, None, None) => return Ok(None),
    };
    PieceCheck::new(expected, length, size)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "the piece digests do not describe a file of {size} bytes, which the server has"
            )
        })
}

/// Verifies the pieces whose bytes are all written. A bad piece is fetched again, and its
/// sources are dropped; when no other source is left, the download fails.
async fn check_pieces(shared: &Shared) -> Result<(), DownloadError> {
    let Some(pieces) = &shared.pieces else {
        return Ok(());
    };
    let part = &shared.t.part;
    let checked = pieces
        .check(part, &shared.segments)
        .await
        .map_err(|e| DownloadError::io(part.part(), "read back", e))?;
    for &(index, digest) in &checked.verified {
        let _ = shared.t.events.send(Event::PieceVerified { index });
        if let (Some(digest), true) = (digest, shared.t.options.learn_pieces.is_some()) {
            let _ = shared.t.events.send(Event::PieceHashed { index, digest });
        }
    }
    if !checked.bad.is_empty() {
        shared.work_changed.notify_waiters();
    }
    for piece in checked.bad {
        for &source in &piece.sources {
            let source_ref = shared.source(source);
            let url = source_ref.range.url.clone();
            let reason = format!(
                "sent bytes that do not match the hash of piece {}",
                piece.index
            );
            let peer = match &source_ref.kind {
                Kind::Peer(peer) => Some(peer.name.clone()),
                _ => None,
            };
            warn!(piece = piece.index, url = %redacted(&url), ?peer, "piece does not match its digest");
            let _ = shared.t.events.send(Event::BadPiece {
                index: piece.index,
                url: redacted(&url),
                peer,
            });
            if !shared.drop_source(source, reason) {
                return Err(DownloadError::PieceMismatch {
                    path: part.path().to_path_buf(),
                    index: piece.index,
                    url: redacted(&url),
                });
            }
        }
    }
    Ok(())
}

fn streamed_for(stats: &Stats, now_ms: u64) -> Duration {
    let first = stats.first_byte.load(Ordering::Relaxed);
    Duration::from_millis(now_ms.saturating_sub(first))
}

/// The connection-count policy: open every connection at once (the common case is servers
/// that cap each connection), then, on downloads long enough for a trial to be cheap, pause
/// half the connections and see whether throughput drops. If it does, the paused ones read on
/// and nothing was lost. If it does not, the link is full and the extra connections only cost
/// CPU and fairness: they are closed, and the remaining half is tried the same way.
fn steer(
    shared: &Shared,
    phase: Phase,
    slots: &HashMap<WorkerId, Slot>,
    history: &History,
) -> Phase {
    let now = Instant::now();
    let worth_a_trial = |speed: f64| {
        let left = shared.size - shared.segments().done_bytes();
        speed > 0.0 && Duration::from_secs_f64(left as f64 / speed) > TRIAL_MIN_ETA
    };
    let pause_half = |active: &[WorkerId], baseline: f64| {
        let paused = active[active.len().div_ceil(2)..].to_vec();
        debug!(
            speed = baseline,
            active = active.len(),
            paused = paused.len(),
            "trial"
        );
        for id in &paused {
            slots[id].stats.paused.store(true, Ordering::Relaxed);
        }
        Phase::Trial {
            baseline,
            paused,
            until: now + TRIAL,
        }
    };
    match phase {
        Phase::Warmup { until } if now < until => phase,
        Phase::Trial { until, .. } if now < until => phase,
        Phase::Warmup { .. } => {
            let speed = history.rate(BASELINE_WINDOW);
            let mut active: Vec<WorkerId> = slots
                .iter()
                .filter(|(_, s)| !s.token.is_cancelled())
                .map(|(&id, _)| id)
                .collect();
            active.sort_unstable();
            if active.len() < 2 || !worth_a_trial(speed) {
                return Phase::Settled;
            }
            pause_half(&active, speed)
        }
        Phase::Trial {
            baseline, paused, ..
        } => {
            let speed = history.rate(TRIAL_WINDOW);
            if speed < HALF_IS_ENOUGH * baseline {
                debug!(
                    speed,
                    baseline, "half the connections were slower; resuming the rest"
                );
                for id in &paused {
                    if let Some(slot) = slots.get(id) {
                        // Its measured speed fell to nothing while paused: judge it afresh, or
                        // it would be retired as far too slow and lose what it has in flight.
                        slot.stats
                            .first_byte
                            .store(shared.millis(), Ordering::Relaxed);
                        slot.stats.paused.store(false, Ordering::Relaxed);
                    }
                }
                let kept = slots.len() as u32;
                if kept < shared.t.options.connections.get() {
                    announce_lowered(shared, kept);
                }
                return Phase::Settled;
            }
            for id in &paused {
                if let Some(slot) = slots.get(id) {
                    slot.token.cancel();
                }
            }
            let mut active: Vec<WorkerId> = slots
                .iter()
                .filter(|(_, s)| !s.token.is_cancelled())
                .map(|(&id, _)| id)
                .collect();
            active.sort_unstable();
            shared
                .target
                .fetch_min(active.len().max(1) as u32, Ordering::SeqCst);
            if active.len() >= 2 && worth_a_trial(speed) {
                // Every trial is measured against all connections, so small losses do not add up.
                return pause_half(&active, baseline);
            }
            announce_lowered(shared, active.len().max(1) as u32);
            Phase::Settled
        }
        Phase::Settled => Phase::Settled,
    }
}

/// Bytes fetched over the last seconds, sampled every tick.
#[derive(Default)]
struct History {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl History {
    fn record(&mut self, fetched: u64) {
        let now = Instant::now();
        self.samples.push_back((now, fetched));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > 2 * BASELINE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over about the last `window`; 0 without two samples.
    fn rate(&self, window: Duration) -> f64 {
        let Some(&(now, last)) = self.samples.back() else {
            return 0.0;
        };
        let Some(&(then, first)) = self
            .samples
            .iter()
            .find(|(at, _)| now.duration_since(*at) <= window)
        else {
            return 0.0;
        };
        let secs = now.duration_since(then).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        (last - first) as f64 / secs
    }
}

fn announce_lowered(shared: &Shared, to: u32) {
    info!(to, "more connections did not add throughput");
    let _ = shared.t.events.send(Event::ConnectionsLowered {
        to,
        reason: "more connections did not add throughput".to_string(),
    });
}

/// A connection far below the median speed loses its work (it is restarted on a fresh
/// connection), so one bad route cannot hold up the file.
fn retire_slow(shared: &Shared, slots: &mut HashMap<WorkerId, Slot>, now_ms: u64) {
    if shared.limiter.is_some() {
        // Under `--limit-rate` the shared budget, not the route, decides each connection's
        // speed: a slow one is not a bad one.
        return;
    }
    let judged = |s: &Slot| {
        streamed_for(&s.stats, now_ms) >= SLOW_GRACE
            && !s.stats.paused.load(Ordering::Relaxed)
            && s.stats.streaming.load(Ordering::Relaxed)
    };
    let mut speeds: Vec<f64> = slots
        .values()
        .filter(|s| judged(s))
        .map(|s| s.speed)
        .collect();
    if speeds.len() < 3 {
        return;
    }
    speeds.sort_by(f64::total_cmp);
    let median = speeds[speeds.len() / 2];
    for (&id, slot) in slots.iter_mut() {
        if !(judged(slot) && slot.speed * SLOW_FACTOR < median) {
            slot.slow_since = None;
            continue;
        }
        let since = *slot.slow_since.get_or_insert(now_ms);
        if now_ms - since >= SLOW_FOR.as_millis() as u64 && !slot.token.is_cancelled() {
            info!(
                connection = id,
                speed = slot.speed,
                median,
                "connection far below the median; reassigning its work"
            );
            let _ = shared.t.events.send(Event::Stalled { connection: id });
            slot.token.cancel();
        }
    }
}

fn spawn(shared: &Arc<Shared>, id: WorkerId, source: usize, first: Option<Response>) -> Slot {
    let token = shared.t.cancel.child_token();
    let stats = Arc::new(Stats {
        source,
        first_byte: AtomicU64::new(u64::MAX),
        ..Stats::default()
    });
    shared.alive.fetch_add(1, Ordering::SeqCst);
    shared
        .source(source)
        .connections
        .fetch_add(1, Ordering::SeqCst);
    let handle = tokio::spawn(worker(
        shared.clone(),
        id,
        source,
        first,
        token.clone(),
        stats.clone(),
    ));
    Slot {
        source,
        token,
        stats,
        handle,
        seen: 0,
        speed: 0.0,
        slow_since: None,
    }
}

enum Streamed {
    /// The range is done; ask for more work.
    Finished,
    /// The worker was told to stop.
    Cancelled,
}

pub(crate) enum StreamError {
    Fetch(FetchError),
    Local(DownloadError),
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    shared: Arc<Shared>,
    id: WorkerId,
    source_index: usize,
    mut first: Option<Response>,
    token: CancellationToken,
    stats: Arc<Stats>,
) {
    let options = shared.t.options.clone();
    let source = shared.source(source_index);
    let mut tries = 0u32;
    let mut backoff = Backoff::default();
    let mut buf = Vec::with_capacity(BUF);
    loop {
        if source.is_dropped() {
            break;
        }
        let speed = [&stats.speed, &source.speed]
            .iter()
            .map(|bits| f64::from_bits(bits.load(Ordering::Relaxed)))
            .find(|&s| s > 0.0);
        // Registered before looking, so news that comes in between is not missed.
        let news = shared.work_changed.notified();
        tokio::pin!(news);
        news.as_mut().enable();
        let Some(range) = shared.assign(id, &source, speed) else {
            if !source.is_peer() || shared.segments().is_complete() {
                break;
            }
            // A peer's connection waits for the peer to verify more (or a piece to be given
            // back) instead of closing: opening it again would cost a tick and a handshake.
            tokio::select! {
                _ = token.cancelled() => break,
                _ = &mut news => continue,
                _ = tokio::time::sleep(PEER_IDLE) => break,
            }
        };
        let response = match first.take() {
            Some(response) => Ok(response),
            None => tokio::select! {
                _ = token.cancelled() => break,
                r = source.range.fetch(range) => r,
            },
        };
        let mut written = 0;
        let result = match response {
            Ok(response) => {
                stats.streaming.store(true, Ordering::Relaxed);
                let now = shared.streaming.fetch_add(1, Ordering::SeqCst) + 1;
                shared.peak.fetch_max(now, Ordering::SeqCst);
                let received = stats.bytes.load(Ordering::Relaxed);
                let r = stream(
                    &shared,
                    id,
                    response,
                    range.start(),
                    &token,
                    &stats,
                    &mut buf,
                    &mut written,
                )
                .await;
                shared.streaming.fetch_sub(1, Ordering::SeqCst);
                stats.streaming.store(false, Ordering::Relaxed);
                source.bytes.fetch_add(
                    stats.bytes.load(Ordering::Relaxed) - received,
                    Ordering::Relaxed,
                );
                r
            }
            Err(e) => Err(StreamError::Fetch(e)),
        };
        let error = match result {
            Ok(Streamed::Finished) => {
                tries = 0;
                backoff.reset();
                continue;
            }
            Ok(Streamed::Cancelled) => break,
            Err(StreamError::Local(e)) => {
                shared.fail(e);
                break;
            }
            Err(StreamError::Fetch(e)) => e,
        };
        if written >= PROGRESS_RESETS_TRIES {
            tries = 0;
            backoff.reset();
        }
        tries += 1;
        if source.is_peer() {
            // Another peer or the origin can take the piece at once; a peer that fails twice
            // in a row is gone or broken, and one that is busy is asked again later.
            shared.segments().release(id);
            shared.work_changed.notify_waiters();
            if error.slow_down().is_some() {
                debug!(connection = id, url = %source.range.shown_url(), "peer is busy");
                break;
            }
        }
        let max_tries = if source.is_peer() {
            PEER_TRIES
        } else {
            options.max_tries
        };
        // A peer that cannot be reached has gone away (its agent stopped): no use waiting.
        let gone = source.is_peer() && matches!(error, FetchError::Connect(_));
        if error.is_fatal() || gone || tries >= max_tries {
            let failure = network(&source.range.url, &error, tries);
            if !shared.drop_source(source_index, failure.to_string()) {
                shared.fail(failure);
            }
            break;
        }
        let hint = error.slow_down();
        if hint.is_some() && shared.lower_connections(&error.describe()) {
            debug!(connection = id, "server asked for fewer connections");
            break;
        }
        if matches!(error, FetchError::Stalled) {
            // Let a faster connection take the remainder while this one starts over.
            shared.segments().release(id);
            shared.work_changed.notify_waiters();
            let _ = shared.t.events.send(Event::Stalled { connection: id });
        }
        let wait = backoff.next(hint.flatten());
        debug!(connection = id, tries, ?wait, error = %error.describe(), url = %source.range.shown_url(), "retrying");
        let _ = shared.t.events.send(Event::Retry {
            attempt: tries,
            reason: error.describe(),
            after: wait,
        });
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    shared.segments().release(id);
    shared.work_changed.notify_waiters();
    source.connections.fetch_sub(1, Ordering::SeqCst);
    shared.alive.fetch_sub(1, Ordering::SeqCst);
}

/// Streams one response into the part file from `start`, stopping at the worker's current end.
#[allow(clippy::too_many_arguments)]
async fn stream(
    shared: &Shared,
    id: WorkerId,
    mut response: Response,
    start: u64,
    token: &CancellationToken,
    stats: &Stats,
    buf: &mut Vec<u8>,
    written: &mut u64,
) -> Result<Streamed, StreamError> {
    let mut pos = start;
    let Some(mut end) = shared.segments().end_of(id) else {
        return Ok(Streamed::Finished);
    };
    buf.clear();
    let mut buffered_since = Instant::now();
    let stall = shared.t.options.stall_timeout;
    loop {
        if stats.paused.load(Ordering::Relaxed) {
            // What is buffered counts now, not after the pause.
            match flush(shared, id, stats, &mut pos, buf).map_err(StreamError::Local)? {
                Next::Finished => {
                    *written = pos - start;
                    return Ok(Streamed::Finished);
                }
                Next::Continue { end: e } => end = e,
            }
            while stats.paused.load(Ordering::Relaxed) {
                tokio::select! {
                    _ = token.cancelled() => return Ok(Streamed::Cancelled),
                    _ = tokio::time::sleep(PAUSE_POLL) => {}
                }
            }
        }
        let chunk = tokio::select! {
            biased;
            _ = token.cancelled() => {
                flush(shared, id, stats, &mut pos, buf).map_err(StreamError::Local)?;
                return Ok(Streamed::Cancelled);
            }
            chunk = tokio::time::timeout(stall, response.chunk()) => chunk,
        };
        let chunk: Bytes = match chunk {
            Ok(Ok(Some(chunk))) => chunk,
            other => {
                let next = flush(shared, id, stats, &mut pos, buf).map_err(StreamError::Local)?;
                *written = pos - start;
                if next == Next::Finished {
                    return Ok(Streamed::Finished);
                }
                return Err(StreamError::Fetch(match other {
                    Err(_) => FetchError::Stalled,
                    Ok(Err(e)) => transport_error(&e),
                    _ => FetchError::Transport(format!(
                        "connection closed at byte {pos}, before the end of its range at {end}"
                    )),
                }));
            }
        };
        // Bytes count once the rate limit let them through, so measured speeds (and the
        // trials that compare them) see the limited rate, not the burst of the first reads.
        if let Some(limiter) = &shared.limiter {
            limiter.acquire(chunk.len()).await;
        }
        let len = chunk.len() as u64;
        shared.fetched.fetch_add(len, Ordering::Relaxed);
        stats.bytes.fetch_add(len, Ordering::Relaxed);
        let now = shared.millis();
        let _ =
            stats
                .first_byte
                .compare_exchange(u64::MAX, now, Ordering::Relaxed, Ordering::Relaxed);
        if buf.is_empty() {
            buffered_since = Instant::now();
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= BUF
            || pos + buf.len() as u64 >= end
            || buffered_since.elapsed() >= FLUSH_AGE
        {
            match flush(shared, id, stats, &mut pos, buf).map_err(StreamError::Local)? {
                Next::Finished => {
                    *written = pos - start;
                    return Ok(Streamed::Finished);
                }
                Next::Continue { end: e } => end = e,
            }
        }
    }
}

/// Writes what `buf` holds at `pos`, never past the worker's current end, then records it.
fn flush(
    shared: &Shared,
    id: WorkerId,
    stats: &Stats,
    pos: &mut u64,
    buf: &mut Vec<u8>,
) -> Result<Next, DownloadError> {
    let Some(end) = shared.segments().end_of(id) else {
        buf.clear();
        return Ok(Next::Finished);
    };
    let n = (buf.len() as u64).min(end.saturating_sub(*pos)) as usize;
    if n > 0 {
        shared.t.part.write_at(&buf[..n], *pos)?;
        if let Some(pieces) = &shared.pieces {
            let written = ByteRange::new(*pos, *pos + n as u64).expect("n > 0");
            pieces.wrote(written, stats.source);
        }
    }
    *pos += n as u64;
    buf.clear();
    let mut seg = shared.segments();
    let next = seg.advance(id, *pos);
    if seg.is_complete() {
        shared.complete.notify_one();
    } else if let (Some(pieces), true) = (&shared.pieces, n > 0) {
        if seg.is_done(pieces.piece_around(*pos - 1)) {
            shared.piece_written.notify_one();
        }
    }
    Ok(next)
}
