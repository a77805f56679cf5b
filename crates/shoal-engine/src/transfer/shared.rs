//! The state every task of a transfer shares, and the questions they ask of it: which source
//! a new connection should use, which range a connection gets next, which sources are still
//! used. See the lock order in [`super`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use shoal_core::{Bitfield, ByteRange, Layout};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::checkpoint::DoneBlocks;
use crate::error::DownloadError;
use crate::events::Event;
use crate::http::{FetchError, RangeSource};
use crate::options::{OriginUse, PeerSource, BLOCK};
use crate::pieces::PieceCheck;
use crate::ratelimit::RateLimiter;
use crate::segments::{Segments, WorkerId};
use crate::source::{Policy, Reach, Source};
use crate::stream::Ring;
use crate::swarm::{self, Asked, PeerState};
use shoal_core::redact::redacted;
use shoal_core::SafeUrl;

use super::Transfer;

pub(super) struct Shared {
    pub t: Transfer,
    pub size: u64,
    /// What checks the pieces, when anything does.
    pub pieces: Option<PieceCheck>,
    /// Sources only ever get added (peers as they become known), so an index names one source
    /// for the whole download.
    sources: RwLock<Vec<Arc<Source>>>,
    /// The pieces of a swarm download, which peers hold and the scheduler hands out.
    layout: Option<Layout>,
    /// How peers are asked, in a swarm download.
    peer_client: Option<crate::http::HttpClient>,
    segments: Mutex<Segments>,
    pub limiter: Option<RateLimiter>,
    /// Bytes received, counting work that was redone.
    pub fetched: AtomicU64,
    /// Connections worth running: raised by the controller, lowered by servers that say so.
    pub target: AtomicU32,
    /// Connections (workers) running.
    pub alive: AtomicU32,
    /// Connections receiving a response right now, and the most there ever were.
    pub streaming: AtomicU32,
    pub peak: AtomicU32,
    /// The first error that ends the download.
    failure: Mutex<Option<DownloadError>>,
    /// The latest failure of any connection, said when the download gives up waiting.
    last_failure: Mutex<Option<String>>,
    /// Woken when every byte is written, or the download failed.
    pub complete: Notify,
    /// Woken when a write completes a piece, which can be checked now.
    pub piece_written: Notify,
    /// Woken when there may be new work for connections that wait for it (to peers): peers'
    /// news, or work given back.
    pub work_changed: Notify,
    pub start: Instant,
}

/// What [`Shared::new`] needs beyond the transfer.
pub(super) struct Parts {
    pub size: u64,
    pub pieces: Option<PieceCheck>,
    pub sources: Vec<Source>,
    pub layout: Option<Layout>,
    pub peer_client: Option<crate::http::HttpClient>,
    pub segments: Segments,
}

impl Shared {
    pub(super) fn new(t: Transfer, parts: Parts) -> Self {
        Self {
            limiter: t
                .options
                .limit_rate
                .map(|r| RateLimiter::new(r.per_second())),
            size: parts.size,
            pieces: parts.pieces,
            sources: RwLock::new(parts.sources.into_iter().map(Arc::new).collect()),
            layout: parts.layout,
            peer_client: parts.peer_client,
            segments: Mutex::new(parts.segments),
            fetched: AtomicU64::new(0),
            target: AtomicU32::new(1),
            alive: AtomicU32::new(0),
            streaming: AtomicU32::new(0),
            peak: AtomicU32::new(0),
            failure: Mutex::new(None),
            last_failure: Mutex::new(None),
            complete: Notify::new(),
            piece_written: Notify::new(),
            work_changed: Notify::new(),
            start: Instant::now(),
            t,
        }
    }

    pub(super) fn segments(&self) -> MutexGuard<'_, Segments> {
        self.segments.lock().expect("segments lock")
    }

    pub(super) fn segments_lock(&self) -> &Mutex<Segments> {
        &self.segments
    }

    pub(super) fn fail(&self, error: DownloadError) {
        self.failure
            .lock()
            .expect("failure lock")
            .get_or_insert(error);
        self.complete.notify_one();
    }

    /// Notes a connection's failure, whatever it leads to.
    pub(super) fn failed(&self, source: &Source, error: &FetchError) {
        let said = format!("{}: {}", source.shown_url(), error.describe());
        *self.last_failure.lock().expect("last failure lock") = Some(said);
    }

    pub(super) fn last_failure(&self) -> Option<String> {
        self.last_failure.lock().expect("last failure lock").clone()
    }

    pub(super) fn take_failure(&self) -> Option<DownloadError> {
        self.failure.lock().expect("failure lock").take()
    }

    /// Stops using a source that keeps failing. Returns false, leaving it in use, when it is
    /// the last one: then its failure is the download's.
    pub(super) fn drop_source(&self, index: usize, reason: String) -> bool {
        let sources = self.all_sources();
        let others = sources
            .iter()
            .enumerate()
            .any(|(i, s)| i != index && !s.is_dropped());
        if !others {
            return false;
        }
        let source = &sources[index];
        if source.mark_dropped(&reason) {
            info!(url = %source.shown_url(), %reason, "mirror dropped");
            let _ = self.t.events.send(Event::SourceDropped {
                url: source.shown_url(),
                reason,
            });
        }
        true
    }

    pub(super) fn source(&self, index: usize) -> Arc<Source> {
        self.sources.read().expect("sources lock")[index].clone()
    }

    pub(super) fn all_sources(&self) -> Vec<Arc<Source>> {
        self.sources.read().expect("sources lock").clone()
    }

    /// The source a new connection should use: the live one with the fewest connections,
    /// under its cap, that has work a connection could take now.
    pub(super) fn pick_source(&self) -> Option<usize> {
        let sources = self.all_sources();
        sources
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_dropped())
            .map(|(i, s)| (i, s, s.connections.load(Ordering::SeqCst)))
            .filter(|&(_, s, n)| {
                // Peers' bitfields are read before the segments are locked (see the lock order).
                n < s.cap() && {
                    let allowed = self.allowed(s, &sources);
                    s.has_work(&self.segments(), &allowed)
                }
            })
            .min_by_key(|&(i, _, n)| (n, i))
            .map(|(i, _, _)| i)
    }

    /// The next range for worker `id` of `source`, taken for it in the segments.
    pub(super) fn assign(
        &self,
        id: WorkerId,
        source: &Source,
        speed: Option<f64>,
    ) -> Option<ByteRange> {
        let allowed = self.allowed(source, &self.all_sources());
        let range = source.take(
            &mut self.segments(),
            id,
            speed,
            &allowed,
            self.t.options.in_order,
        );
        if let (Some(range), Some(pieces), Some(_)) = (range, &self.pieces, source.peer()) {
            pieces.expect_digest(range.start());
        }
        range
    }

    /// The pieces `source` may be asked for, in the order to ask (see `swarm::order`); outside
    /// a swarm, the whole file.
    fn allowed(&self, source: &Source, sources: &[Arc<Source>]) -> Vec<ByteRange> {
        let (Some(layout), Some(swarm)) = (self.layout, &self.t.options.swarm) else {
            return vec![ByteRange::new(0, self.size).expect("size > 0")];
        };
        let peers: Vec<&PeerState> = sources
            .iter()
            .filter(|s| !s.is_dropped())
            .filter_map(|s| s.peer())
            .collect();
        let asked = match source.peer() {
            Some(peer) => Asked::Peer(peer),
            None => Asked::Origin,
        };
        let leads = matches!(swarm.origin, OriginUse::Lead { .. });
        if leads && source.peer().is_none() {
            let owes = self
                .pieces
                .as_ref()
                .is_some_and(|p| swarm::owes_first_copies(layout, &peers, &p.verified()));
            if owes {
                return Vec::new();
            }
        }
        let mut allowed = swarm::order(layout, &swarm.me, &peers, asked);
        // A piece with no published digest yet is asked only of the leader, which publishes
        // it before it offers the piece (or offers it while the tracker is down): any other
        // peer claiming it could not be checked before the digest is in, and a liar claiming
        // every piece would be sent for many pieces at once. A leader takes such pieces from
        // its trusted origin, whoever claims them.
        if let Some(unpublished) = self.pieces.as_ref().and_then(PieceCheck::unpublished) {
            let unknown = |r: &ByteRange| {
                let piece = layout.piece_at(r.start()).expect("a piece of the file");
                unpublished[piece.get() as usize]
            };
            match source.peer() {
                Some(peer) if !peer.is_leader() => {
                    // Asked for at once: followers poll only for digests they lack, and
                    // nothing else wants this one before the routine refresh.
                    let lacking = allowed.iter().find(|r| unknown(r)).map(ByteRange::start);
                    allowed.retain(|r| !unknown(r));
                    if let (Some(offset), Some(pieces)) = (lacking, &self.pieces) {
                        pieces.expect_digest(offset);
                    }
                }
                Some(_) => {}
                None if leads => {
                    let mut listed = vec![false; unpublished.len()];
                    for r in &allowed {
                        listed[layout.piece_at(r.start()).expect("a piece").get() as usize] = true;
                    }
                    let more: Vec<ByteRange> = layout
                        .pieces()
                        .filter(|p| unpublished[p.get() as usize] && !listed[p.get() as usize])
                        .map(|p| layout.range(p))
                        .collect();
                    allowed.extend(more);
                }
                None => {}
            }
        }
        allowed
    }

    /// Adds peers not seen before and takes in what known ones hold now.
    pub(super) fn refresh_peers(&self, peers: &[PeerSource]) {
        let swarm = self.t.options.swarm.as_ref().expect("peers only in swarms");
        let mut sources = self.sources.write().expect("sources lock");
        for peer in peers {
            let known = sources.iter().find_map(|s| {
                s.peer()
                    .filter(|state| state.name == peer.name && *s.range.url.as_url() == peer.url)
            });
            match known {
                Some(state) => state.update(peer),
                None => {
                    debug!(peer = %peer.name, url = %redacted(&peer.url), "new peer");
                    sources.push(Arc::new(Source::new(
                        RangeSource {
                            client: self
                                .peer_client
                                .as_ref()
                                .expect("a swarm has a peer client")
                                .owned_by(&peer.url),
                            url: peer.url.clone().into(),
                            size: self.size,
                            validator: None,
                        },
                        Reach::Held(PeerState::new(peer)),
                        Policy::peer(swarm.per_peer.get()),
                    )));
                }
            }
        }
    }

    /// Milliseconds since the transfer started.
    pub(super) fn millis(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A server asked for fewer connections. Returns whether this worker should stop: it does
    /// unless it is the last one.
    pub(super) fn lower_connections(&self, reason: &str) -> bool {
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

    /// Writes `data`, the bytes of `range` that `source` sent, into the part file, leaving out
    /// the pieces already verified: a source racing for the same range cannot change bytes
    /// that were checked (and may be served to others). Blocking: call from a blocking thread.
    pub(super) fn write(
        &self,
        range: ByteRange,
        data: &[u8],
        source: usize,
    ) -> Result<(), DownloadError> {
        let file = self
            .t
            .store
            .part()
            .expect("a stream is written by write_when_room");
        let Some(pieces) = &self.pieces else {
            return file.write_at(data, range.start());
        };
        let writing = pieces.writable(range);
        for &part in writing.parts() {
            let at = (part.start() - range.start()) as usize;
            let bytes = &data[at..at + part.len() as usize];
            file.write_at(bytes, part.start())?;
            writing.wrote(part, source);
        }
        Ok(())
    }

    /// Tells a stream's reader how far the file is written without a gap, from `segments`
    /// (locked by the caller: the ring's lock comes after it).
    pub(super) fn publish_frontier(&self, segments: &Segments) {
        let Some(ring) = self.t.store.stream() else {
            return;
        };
        let done = segments.done();
        let mut block = (ring.written() / BLOCK) as u32;
        while block < done.len() && done.get(block) {
            block += 1;
        }
        ring.written_to((u64::from(block) * BLOCK).min(self.size));
    }

    /// The error of a stream whose reader went away.
    pub(super) fn stream_closed(&self, ring: &Ring) -> DownloadError {
        DownloadError::StreamClosed {
            url: SafeUrl::new(self.t.options.url.clone()),
            sent: ring.sent(),
        }
    }

    /// Gives back what worker `id` owns, so others may take it now.
    pub(super) fn give_back(&self, id: WorkerId) {
        self.segments().release(id);
        self.work_changed.notify_waiters();
    }
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
