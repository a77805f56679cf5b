//! One connection: it asks its source for a range, streams the answer into the part file with
//! positional writes, and asks for more, until there is no work, it is told to stop, or its
//! source is given up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Response;
use shoal_core::ByteRange;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::checkpoint::FLUSH_AGE;
use crate::error::DownloadError;
use crate::events::Event;
use crate::http::FetchError;
use crate::retry::Backoff;
use crate::segments::{Next, WorkerId};
use crate::source::Verdict;

use super::shared::Shared;

/// Bytes gathered before one positional write: large writes keep syscalls few.
pub(crate) const BUF: usize = 256 * 1024;
/// How often progress is measured and reported.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// How often a paused connection looks whether it may read again.
const PAUSE_POLL: Duration = Duration::from_millis(20);
/// An attempt that wrote at least this much resets the try counter: `--max-tries` bounds
/// consecutive failures, not the failures of a long download.
const PROGRESS_RESETS_TRIES: u64 = 1 << 20;

/// What the loop and a connection share about that connection.
#[derive(Default)]
pub(super) struct Stats {
    /// The source this connection fetches from.
    pub source: usize,
    pub bytes: AtomicU64,
    /// This connection's measured bytes per second, as an `f64`'s bits; 0 until measured.
    pub speed: AtomicU64,
    /// Set during a trial: the connection stops reading (its data waits in the socket, not
    /// lost) while the others show what they achieve without it.
    pub paused: AtomicBool,
    /// Milliseconds since the transfer started; `u64::MAX` until the first byte.
    pub first_byte: AtomicU64,
    /// A response is streaming (a connection to a peer may wait for work between pieces).
    pub streaming: AtomicBool,
    /// Waiting for the reader of a stream to make room: like `paused`, its data waits in the
    /// socket and its speed says nothing about the server.
    pub waiting: AtomicBool,
}

impl Stats {
    /// How long it has streamed, `now_ms` into the transfer.
    pub(super) fn streamed_for(&self, now_ms: u64) -> Duration {
        let first = self.first_byte.load(Ordering::Relaxed);
        Duration::from_millis(now_ms.saturating_sub(first))
    }
}

/// A running connection as the loop holds it.
pub(super) struct Slot {
    pub source: usize,
    pub token: CancellationToken,
    pub stats: Arc<Stats>,
    pub handle: JoinHandle<()>,
    /// Bytes counted at the last tick.
    pub seen: u64,
    /// Bytes per second, smoothed over ticks.
    pub speed: f64,
}

/// Starts connection `id` to source `source`; `first` is the probe's response when this
/// connection continues it.
pub(super) fn spawn(
    shared: &Arc<Shared>,
    id: WorkerId,
    source: usize,
    first: Option<Response>,
) -> Slot {
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
    }
}

/// Says that try `tries` failed with `error` and waits `wait` before the next; false when the
/// connection was cancelled meanwhile.
async fn pause(
    shared: &Shared,
    token: &CancellationToken,
    tries: u32,
    error: &FetchError,
    wait: Duration,
) -> bool {
    let _ = shared.t.events.send(Event::Retry {
        attempt: tries,
        reason: error.describe(),
        after: wait,
    });
    tokio::select! {
        _ = token.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

enum Streamed {
    /// The range is done; ask for more work.
    Finished,
    /// The worker was told to stop.
    Cancelled,
}

/// Why a stream stopped short: the source's fault, or ours.
pub(crate) enum StreamError {
    Fetch(FetchError),
    Local(DownloadError),
}

async fn worker(
    shared: Arc<Shared>,
    id: WorkerId,
    mut first: Option<Response>,
    token: CancellationToken,
    stats: Arc<Stats>,
) {
    let source_index = stats.source;
    let source = shared.source(source_index);
    let mut tries = 0u32;
    let mut backoff = Backoff::default();
    let mut outage = Backoff::outage();
    let mut buf = Vec::with_capacity(BUF);
    loop {
        if source.is_dropped() {
            break;
        }
        let speed = Some(f64::from_bits(stats.speed.load(Ordering::Relaxed)))
            .filter(|&s| s > 0.0)
            .or_else(|| source.measured_speed());
        // Registered before looking, so news that comes in between is not missed.
        let news = shared.work_changed.notified();
        tokio::pin!(news);
        news.as_mut().enable();
        let Some(range) = shared.assign(id, &source, speed) else {
            let Some(idle) = source.policy.idle else {
                break;
            };
            if shared.segments().is_complete() {
                break;
            }
            // Wait for the source to have more (or for work given back) instead of closing:
            // opening the connection again would cost a tick and a handshake.
            tokio::select! {
                _ = token.cancelled() => break,
                _ = &mut news => continue,
                _ = tokio::time::sleep(idle) => break,
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
                let mut stream = Stream {
                    shared: &shared,
                    id,
                    stats: &stats,
                    token: &token,
                    buf: &mut buf,
                    from_peer: source.peer().is_some(),
                };
                let r = stream.run(response, range.start(), &mut written).await;
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
                outage.reset();
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
            outage.reset();
        }
        tries += 1;
        shared.failed(&source, &error);
        if source.policy.gives_back {
            shared.give_back(id);
        }
        match source.judge(&error, tries) {
            Verdict::Busy => {
                debug!(connection = id, url = %source.shown_url(), "source is busy");
                break;
            }
            Verdict::Drop => {
                let failure = DownloadError::fetch(source.range.url.as_url(), error, tries);
                if !shared.drop_source(source_index, failure.to_string()) {
                    shared.fail(failure);
                }
                break;
            }
            Verdict::Wait => {
                // Its work goes to sources that may be up (peers holding those pieces) while
                // this one is asked again now and then.
                shared.give_back(id);
                let wait = outage.next(error.slow_down().flatten());
                debug!(connection = id, tries, ?wait, error = %error.describe(), url = %source.shown_url(), "source down; waiting for it");
                if !pause(&shared, &token, tries, &error, wait).await {
                    break;
                }
                continue;
            }
            Verdict::Retry => {}
        }
        let hint = error.slow_down();
        if hint.is_some() && shared.lower_connections(&error.describe()) {
            debug!(connection = id, "server asked for fewer connections");
            break;
        }
        if matches!(error, FetchError::Stalled) {
            // Let a faster connection take the remainder while this one starts over.
            shared.give_back(id);
            let _ = shared.t.events.send(Event::Stalled { connection: id });
        }
        let wait = backoff.next(hint.flatten());
        debug!(connection = id, tries, ?wait, error = %error.describe(), url = %source.shown_url(), "retrying");
        if !pause(&shared, &token, tries, &error, wait).await {
            break;
        }
    }
    shared.give_back(id);
    source.connections.fetch_sub(1, Ordering::SeqCst);
    shared.alive.fetch_sub(1, Ordering::SeqCst);
}

/// One response being streamed into the part file by worker `id`.
struct Stream<'a> {
    shared: &'a Arc<Shared>,
    id: WorkerId,
    stats: &'a Stats,
    token: &'a CancellationToken,
    buf: &'a mut Vec<u8>,
    /// The source is a peer, for the download's [`crate::Tally`].
    from_peer: bool,
}

impl Stream<'_> {
    /// Streams `response` into the part file from `start`, stopping at the worker's current
    /// end; `written` gets the bytes written.
    async fn run(
        &mut self,
        mut response: Response,
        start: u64,
        written: &mut u64,
    ) -> Result<Streamed, StreamError> {
        let mut pos = start;
        let Some(mut end) = self.shared.segments().end_of(self.id) else {
            return Ok(Streamed::Finished);
        };
        self.buf.clear();
        let mut buffered_since = Instant::now();
        let stall = self.shared.t.options.stall_timeout;
        loop {
            if self.stats.paused.load(Ordering::Relaxed) {
                // What is buffered counts now, not after the pause.
                match self.flush(&mut pos).await.map_err(StreamError::Local)? {
                    Next::Finished => {
                        *written = pos - start;
                        return Ok(Streamed::Finished);
                    }
                    Next::Continue { end: e } => end = e,
                }
                while self.stats.paused.load(Ordering::Relaxed) {
                    tokio::select! {
                        _ = self.token.cancelled() => return Ok(Streamed::Cancelled),
                        _ = tokio::time::sleep(PAUSE_POLL) => {}
                    }
                }
            }
            let chunk = tokio::select! {
                biased;
                _ = self.token.cancelled() => {
                    self.flush(&mut pos).await.map_err(StreamError::Local)?;
                    return Ok(Streamed::Cancelled);
                }
                chunk = tokio::time::timeout(stall, response.chunk()) => chunk,
            };
            let chunk: Bytes = match chunk {
                Ok(Ok(Some(chunk))) => chunk,
                other => {
                    let next = self.flush(&mut pos).await.map_err(StreamError::Local)?;
                    *written = pos - start;
                    if next == Next::Finished {
                        return Ok(Streamed::Finished);
                    }
                    return Err(StreamError::Fetch(match other {
                        Err(_) => FetchError::Stalled,
                        Ok(Err(e)) => crate::http::transport_error(e),
                        _ => FetchError::CutShort(format!(
                            "connection closed at byte {pos}, before the end of its range at {end}"
                        )),
                    }));
                }
            };
            // Bytes count once the rate limit let them through, so measured speeds (and the
            // trials that compare them) see the limited rate, not the burst of the first reads.
            if let Some(limiter) = &self.shared.limiter {
                limiter.acquire(chunk.len()).await;
            }
            if let Some(shared) = &self.shared.t.options.shared_rate {
                shared.acquire(chunk.len()).await;
            }
            let len = chunk.len() as u64;
            self.shared.fetched.fetch_add(len, Ordering::Relaxed);
            self.stats.bytes.fetch_add(len, Ordering::Relaxed);
            if let Some(tally) = &self.shared.t.options.tally {
                tally.received(self.from_peer, len);
            }
            let now = self.shared.millis();
            let _ = self.stats.first_byte.compare_exchange(
                u64::MAX,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if self.buf.is_empty() {
                buffered_since = Instant::now();
            }
            self.buf.extend_from_slice(&chunk);
            if self.buf.len() >= BUF
                || pos + self.buf.len() as u64 >= end
                || buffered_since.elapsed() >= FLUSH_AGE
            {
                match self.flush(&mut pos).await.map_err(StreamError::Local)? {
                    Next::Finished => {
                        *written = pos - start;
                        return Ok(Streamed::Finished);
                    }
                    Next::Continue { end: e } => end = e,
                }
            }
        }
    }

    /// Writes what the buffer holds at `pos`, never past the worker's current end, then
    /// records it.
    async fn flush(&mut self, pos: &mut u64) -> Result<Next, DownloadError> {
        let shared = self.shared;
        let Some(end) = shared.segments().end_of(self.id) else {
            self.buf.clear();
            return Ok(Next::Finished);
        };
        let mut n = (self.buf.len() as u64).min(end.saturating_sub(*pos)) as usize;
        if let (Some(ring), true) = (shared.t.store.stream(), n > 0) {
            self.stats.waiting.store(true, Ordering::Relaxed);
            let written = ring.write_when_room(&self.buf[..n], *pos, self.token).await;
            self.stats.waiting.store(false, Ordering::Relaxed);
            n = written.map_err(|_| shared.stream_closed(ring))?;
        } else if n > 0 {
            let range = ByteRange::new(*pos, *pos + n as u64).expect("n > 0");
            let data = std::mem::take(self.buf);
            let owner = Arc::clone(shared);
            let source = self.stats.source;
            // A write may block (dirty page cache, a slow disk): it runs on a blocking thread,
            // not on the runtime's, which the other connections need.
            let (data, written) = tokio::task::spawn_blocking(move || {
                let written = owner.write(range, &data[..n], source);
                (data, written)
            })
            .await
            .expect("writing does not panic");
            *self.buf = data;
            written?;
        }
        *pos += n as u64;
        self.buf.clear();
        let mut seg = shared.segments();
        let next = seg.advance(self.id, *pos);
        shared.publish_frontier(&seg);
        if seg.is_complete() {
            shared.complete.notify_one();
        } else if let (Some(pieces), true) = (&shared.pieces, n > 0) {
            if seg.is_done(pieces.piece_around(*pos - 1)) {
                shared.piece_written.notify_one();
            }
        }
        Ok(next)
    }
}
