//! Moving the bytes: the one loop that keeps every connection to every source busy.
//!
//! # Tasks
//! - **The loop** ([`run`]): ticks ten times a second. It measures each connection, asks the
//!   [`control::Controller`] which connections to pause, resume, close or retire and how many
//!   are worth keeping, starts new connections while there is work (each on the source
//!   [`shared::Shared::pick_source`] names), checks pieces as soon as their bytes or digests
//!   are in, and reports progress.
//! - **Workers** ([`worker`]), one per connection: ask their source for a range, stream it into
//!   the part file with positional writes (on blocking threads), ask for more.
//! - **Blame** ([`blame`]), one per bad piece that had several writers: fetches it from each
//!   writer alone to find which one lied.
//! - **Peer news** (swarm downloads): takes in the peers the caller names as they change.
//! - **The checkpoint** ([`crate::checkpoint`]): saves the done blocks durably in the
//!   background.
//!
//! # Shared state ([`shared::Shared`])
//! The sources (a `RwLock`ed list that only grows), the segments (a `Mutex`: who fetches
//! what, what is done), the piece check, counters (atomics), the first failure, and three
//! `Notify`s: `complete` (every byte written, or failed), `piece_written` (a piece may be
//! checkable), `work_changed` (work given back or a peer's news, for connections waiting).
//!
//! # Lock order
//! `sources` → a peer's bitfield (`PeerState`) → `segments` → the piece check's `verified`;
//! a stream's ring comes after `segments` (its written frontier is read from them).
//! A task never takes an earlier lock while holding a later one; in particular a source's
//! allowed ranges (which read peers' bitfields) are computed before `segments` is locked.
//! `failure` and a source's `dropped` are leaves, taken alone. No lock is held across an
//! `.await`.

mod blame;
mod control;
mod shared;
pub(crate) mod single;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use reqwest::Response;
use shoal_core::checksum::PieceHashes;
use shoal_core::{Bitfield, ByteRange, ChecksumAlgo, SafeUrl};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::checkpoint::Checkpoint;
use crate::error::{DownloadError, ErrorKind, Missing};
use crate::events::{Event, EventSender, Progress, SourceUsage};
use crate::http::FetchError;
use crate::options::{Digests, DownloadOptions};
use crate::pieces::{Expected, PieceCheck};
use crate::segments::{Segments, WorkerId};
use crate::source::Source;

use control::{Controller, Decisions, Sample, Tick};
use shared::{Parts, Shared};
use worker::{Slot, TICK};

/// What every transfer needs from the download.
#[derive(Clone)]
pub(crate) struct Transfer {
    pub options: Arc<DownloadOptions>,
    pub store: crate::storage::Store,
    pub events: EventSender,
    pub cancel: CancellationToken,
}

/// How a transfer went.
pub(crate) struct Outcome {
    pub size: u64,
    /// The most connections streaming at once.
    pub max_connections: u32,
    /// Bytes received, more than `size` when work was redone.
    pub fetched: u64,
    pub sources: Vec<SourceUsage>,
}

impl Outcome {
    /// Nothing to fetch: an empty file.
    pub(crate) fn empty(max_connections: u32) -> Self {
        Self {
            size: 0,
            max_connections,
            fetched: 0,
            sources: Vec::new(),
        }
    }
}

/// Downloads the blocks not in `done` of a file of `size` bytes over many connections to
/// `sources` and, in a swarm download, to the peers `options.swarm` names as they become
/// known. `first` (the probe's response and the offset it streams from) is used when the first
/// missing block starts there. `checkpoint` (none for a stream) records progress durably while
/// this runs and once more when it stops, however it stops.
pub(crate) async fn run(
    t: Transfer,
    size: u64,
    sources: Vec<Source>,
    first: Option<(Response, u64)>,
    done: Bitfield,
    checkpoint: Option<Checkpoint>,
) -> Result<Outcome, DownloadError> {
    let options = t.options.clone();
    let pieces = piece_check(&options, size, &done).map_err(|detail| DownloadError::Network {
        url: SafeUrl::new(options.url.clone()),
        cause: FetchError::Protocol(detail),
        tries: 1,
    })?;
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
    let swarm = options.swarm.clone();
    let peer_client = match &swarm {
        Some(swarm) => Some(
            crate::http::client(&swarm.peer_http)
                .map_err(|e| DownloadError::fetch(&options.url, e, 1))?,
        ),
        None => None,
    };
    let shared = Arc::new(Shared::new(
        t,
        Parts {
            size,
            pieces,
            sources,
            layout: swarm.as_ref().map(|s| s.layout),
            peer_client,
            segments,
        },
    ));
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
    let checkpoint = checkpoint.map(|c| c.start(shared.clone()));
    let mut slots: HashMap<WorkerId, Slot> = HashMap::new();
    let mut next_id: WorkerId = 0;
    if first.is_some() {
        slots.insert(0, worker::spawn(&shared, 0, 0, first));
        next_id += 1;
    }
    shared
        .target
        .store(options.connections.get(), Ordering::SeqCst);
    // Trials measure what fewer connections achieve: a stream's reader sets the pace, so they
    // would measure the reader.
    let trials = !in_swarm && shared.t.store.stream().is_none();
    let mut controller = Controller::new(Instant::now(), trials, shared.limiter.is_some());
    let mut last_fetched = 0u64;
    let mut speed = 0.0f64;
    let mut ticker = tokio::time::interval(TICK);
    let mut measured_at = Instant::now();
    // A swarm download waits this long for a source of its missing pieces (peers that are
    // still fetching them, or ones the tracker has yet to name) before it gives up; with
    // `max_wait`, any download waits that long for a source that is down to come back.
    let idle_limit = options.max_wait.unwrap_or(4 * options.stall_timeout);
    let mut idle = (0u64, Instant::now());
    // Digests that arrive while a piece waits for one.
    let mut published = match options.swarm.as_ref().map(|s| &s.digests) {
        Some(Digests::Published(d)) => Some(d.known.clone()),
        _ => None,
    };

    // Bad pieces whose writers are being asked alone (see `blame`).
    let mut isolating = JoinSet::new();
    let result = loop {
        // A piece is checked as soon as its bytes or its digest are in, not at the next tick:
        // in a swarm, a piece is passed on only once verified, and each hop adds this wait.
        let (tick, digests_in) = tokio::select! {
            _ = shared.t.cancel.cancelled() => break Err(DownloadError::Cancelled),
            _ = shared.complete.notified() => (true, false),
            _ = ticker.tick() => (true, false),
            _ = shared.piece_written.notified() => (false, false),
            Ok(()) = async {
                match published.as_mut() {
                    Some(known) => known.changed().await,
                    None => std::future::pending().await,
                }
            } => (false, true),
            Some(_) = isolating.join_next(), if !isolating.is_empty() => (false, false),
        };
        if let Some(error) = shared.take_failure() {
            break Err(error);
        }
        if let Err(error) = check_pieces(&shared, &mut isolating).await {
            break Err(error);
        }
        if digests_in {
            // Pieces peers hold whose digests were missing may be asked for now; no news of
            // a peer's bitfield says so.
            shared.work_changed.notify_waiters();
        }
        let verified = shared.pieces.as_ref().is_none_or(|p| p.all_verified());
        // A liar being looked for is found before the download ends, so that it is named.
        if shared.segments().is_complete() && verified && isolating.is_empty() {
            break Ok(());
        }
        if !tick {
            continue;
        }
        slots.retain(|_, slot| !slot.handle.is_finished());
        measured_at = measure(&shared, &mut slots, measured_at);

        let fetched = shared.fetched.load(Ordering::Relaxed);
        speed = 0.8 * speed + 0.2 * (fetched - last_fetched) as f64 / TICK.as_secs_f64();
        last_fetched = fetched;
        let now_ms = shared.millis();
        let samples: Vec<Sample> = slots
            .iter()
            .map(|(&id, slot)| Sample {
                id,
                speed: slot.speed,
                streamed_for: slot.stats.streamed_for(now_ms),
                paused: slot.stats.paused.load(Ordering::Relaxed)
                    || slot.stats.waiting.load(Ordering::Relaxed),
                cancelled: slot.token.is_cancelled(),
                streaming: slot.stats.streaming.load(Ordering::Relaxed),
            })
            .collect();
        let tick = Tick {
            now: Instant::now(),
            fetched,
            left: size - shared.segments().done_bytes(),
            allowed: options.connections.get(),
        };
        let decisions = controller.tick(tick, &samples);
        apply(&shared, &slots, decisions);
        let target = shared.target.load(Ordering::SeqCst) as usize;
        let mut running: Vec<WorkerId> = slots
            .iter()
            .filter(|(_, s)| !s.token.is_cancelled())
            .map(|(&id, _)| id)
            .collect();
        if running.len() > target {
            running.sort_unstable();
            for id in &running[target..] {
                slots[id].token.cancel();
            }
        }
        while slots.len() < target && shared.segments().has_work() {
            let Some(source) = shared.pick_source() else {
                break;
            };
            slots.insert(next_id, worker::spawn(&shared, next_id, source, None));
            next_id += 1;
        }

        if fetched != idle.0 {
            idle = (fetched, Instant::now());
        } else if (options.max_wait.is_some() || (in_swarm && slots.is_empty()))
            && idle.1.elapsed() >= idle_limit
        {
            break Err(unserved(&shared, idle_limit));
        }
        let _ = shared.t.events.send(Event::Progress(Progress {
            done: shared.segments().done_bytes(),
            total: Some(size),
            speed,
            connections: shared.streaming.load(Ordering::SeqCst),
        }));
    };

    for slot in slots.values() {
        slot.token.cancel();
    }
    for (_, slot) in slots.drain() {
        let _ = slot.handle.await;
    }
    // They hold the shared state too (see below).
    isolating.abort_all();
    while isolating.join_next().await.is_some() {}
    // Every worker has written what it held: the last state names all of it.
    if let Some(task) = peer_news {
        // Awaited, not only aborted: it holds the shared state, part file included, which
        // the commit must be the last to hold.
        task.abort();
        let _ = task.await;
    }
    let saved = match checkpoint {
        Some(checkpoint) => checkpoint.finish(shared.as_ref()).await,
        None => Ok(()),
    };
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
        size,
        max_connections: shared.peak.load(Ordering::SeqCst).max(1),
        fetched: shared.fetched.load(Ordering::Relaxed),
        sources: shared
            .all_sources()
            .iter()
            .map(|s| SourceUsage {
                url: s.shown_url(),
                bytes: s.bytes.load(Ordering::Relaxed),
                dropped: s.drop_reason(),
            })
            .collect(),
    })
}

/// Updates each connection's and each source's measured speed, tells the segments (thieves
/// cut remainders by speed), closes connections whose work a twin finished, and wakes
/// connections waiting for work when a peer stopped progressing since `before`; answers
/// when it measured.
fn measure(shared: &Shared, slots: &mut HashMap<WorkerId, Slot>, before: Instant) -> Instant {
    let now_ms = shared.millis();
    let tick = TICK.as_secs_f64();
    for slot in slots.values_mut() {
        let bytes = slot.stats.bytes.load(Ordering::Relaxed);
        let inst = (bytes - slot.seen) as f64 / tick;
        slot.seen = bytes;
        if slot.stats.paused.load(Ordering::Relaxed)
            || slot.stats.waiting.load(Ordering::Relaxed)
            || !slot.stats.streaming.load(Ordering::Relaxed)
        {
            // A paused connection (or one waiting for a stream's reader) keeps the speed it
            // had: otherwise thieves would take its range for a slow one, and what the server
            // already sent it would be lost. So does one between responses (a peer's
            // connection waiting for the peer to verify its next piece): idle time says
            // nothing of the server, and counting it judged busy peers of a healthy swarm
            // far slower than the rest.
            continue;
        }
        slot.speed = 0.8 * slot.speed + 0.2 * inst;
        if slot.stats.streamed_for(now_ms) >= std::time::Duration::from_secs(1) {
            slot.stats
                .speed
                .store(slot.speed.to_bits(), Ordering::Relaxed);
        }
    }
    let sources = shared.all_sources();
    for (i, source) in sources.iter().enumerate() {
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
    let peers: Vec<_> = sources
        .iter()
        .filter(|s| !s.is_dropped())
        .filter_map(|s| Some((s.peer()?, s.measured_speed())))
        .collect();
    for peer in crate::swarm::judge_speeds(&peers) {
        info!(peer = %peer.name, "peer far slower than the others; its pieces are fetched from faster holders");
        // Connections waiting on faster peers may take its pieces now.
        shared.work_changed.notify_waiters();
    }
    // A downloader that stopped progressing is designated no more first copies: the pieces
    // it was designated are another's from now on, a change no peer's news announces, so
    // connections waiting for work are told here (else they wait out their idle time).
    let now = Instant::now();
    if peers
        .iter()
        .any(|(peer, _)| peer.stopped_progressing(before, now))
    {
        shared.work_changed.notify_waiters();
    }
    let mut seg = shared.segments();
    for (&id, slot) in slots.iter() {
        if slot.stats.streamed_for(now_ms) >= std::time::Duration::from_secs(1) {
            seg.set_speed(id, slot.speed);
        }
    }
    for id in seg.redundant() {
        if let Some(slot) = slots.get(&id) {
            slot.token.cancel();
        }
    }
    now
}

/// The error of a download that no source served for `waited`: what is missing, or that the
/// digests of pieces whose bytes are all here never came.
fn unserved(shared: &Shared, waited: std::time::Duration) -> DownloadError {
    let url = SafeUrl::new(shared.t.options.url.clone());
    let segments = shared.segments();
    if segments.is_complete() {
        let secs = waited.as_secs();
        return DownloadError::Network {
            url,
            cause: FetchError::Unserved(format!(
                "every byte is here, but the digests of some pieces were not published within {secs}s"
            )),
            tries: 1,
        };
    }
    let piece_size = shared.pieces.as_ref().map(PieceCheck::piece_size);
    DownloadError::Unserved {
        url,
        missing: Missing::of(segments.done(), shared.size, piece_size),
        waited,
        last_failure: shared.last_failure(),
    }
}

/// Carries out what the controller decided.
fn apply(shared: &Shared, slots: &HashMap<WorkerId, Slot>, decisions: Decisions) {
    for id in &decisions.retire {
        info!(
            connection = id,
            speed = slots[id].speed,
            "connection far below the median; reassigning its work"
        );
        let _ = shared.t.events.send(Event::Stalled { connection: *id });
        slots[id].token.cancel();
    }
    for id in &decisions.pause {
        slots[id].stats.paused.store(true, Ordering::Relaxed);
    }
    for id in &decisions.resume {
        let stats = &slots[id].stats;
        // Its measured speed fell to nothing while paused: judge it afresh, or it would be
        // retired as far too slow and lose what it has in flight.
        stats.first_byte.store(shared.millis(), Ordering::Relaxed);
        stats.paused.store(false, Ordering::Relaxed);
    }
    for id in &decisions.close {
        slots[id].token.cancel();
    }
    if let Some(target) = decisions.target {
        shared.target.fetch_min(target, Ordering::SeqCst);
    }
    if let Some(to) = decisions.lowered {
        info!(to, "more connections did not add throughput");
        let _ = shared.t.events.send(Event::ConnectionsLowered {
            to,
            reason: "more connections did not add throughput".to_string(),
        });
    }
}

/// The first range of a download, which the probe's response streams.
fn first_range(segments: &mut Segments, in_order: Option<u64>) -> Option<ByteRange> {
    match in_order {
        Some(chunk) => segments.assign_front(0, chunk, None),
        None => segments.assign(0),
    }
}

/// What checks the pieces, if anything does: piece hashes (a Metalink), the swarm's digests,
/// or learning them.
fn piece_check(
    options: &DownloadOptions,
    size: u64,
    done: &Bitfield,
) -> Result<Option<PieceCheck>, String> {
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
    let leads = options
        .swarm
        .as_ref()
        .is_some_and(|swarm| matches!(swarm.origin, crate::OriginUse::Lead { .. }));
    PieceCheck::new(expected, length, size, done, leads)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "the piece digests do not describe a file of {size} bytes, which the server has"
            )
        })
}

/// Verifies the pieces whose bytes are all written. A bad piece is fetched again; its writer
/// is dropped when it had one, and with several, each is asked for the piece alone by a task
/// in `isolating` (see [`blame`]). When no other source is left, the download fails.
async fn check_pieces(
    shared: &Arc<Shared>,
    isolating: &mut JoinSet<()>,
) -> Result<(), DownloadError> {
    let Some(pieces) = &shared.pieces else {
        return Ok(());
    };
    let part = shared.t.store.part().expect("a stream checks no pieces");
    let trusted = |source: usize| shared.source(source).policy.trusted;
    let checked = pieces
        .check(part, shared.segments_lock(), &trusted)
        .await
        .map_err(|e| DownloadError::io(part.part(), "read back", e))?;
    let tally = shared.t.options.tally.as_deref();
    for &(index, digest) in &checked.verified {
        if let Some(tally) = tally {
            tally.verified();
        }
        // A learned digest first: a swarm's leader holds the piece back until it is published.
        if let Some(digest) = digest {
            let _ = shared.t.events.send(Event::PieceHashed { index, digest });
        }
        let _ = shared.t.events.send(Event::PieceVerified { index });
    }
    if !checked.bad.is_empty() || !checked.unvouched.is_empty() {
        shared.work_changed.notify_waiters();
    }
    if !checked.unvouched.is_empty() {
        info!(
            pieces = ?checked.unvouched,
            "pieces written before a resume have no published digest; fetching them again from the origin"
        );
    }
    for piece in checked.bad {
        if let Some(tally) = tally {
            tally.rejected();
        }
        match piece.writers.sole() {
            Some(source) => blame::blame(shared, piece.index, source)?,
            // Only bytes of a previous run: nobody to blame.
            None if piece.writers.sources.is_empty() => {
                warn!(piece = %piece.index, "piece written before a resume does not match its digest; fetching it again");
            }
            None => {
                isolating.spawn(blame::isolate(shared.clone(), piece));
            }
        }
    }
    Ok(())
}
