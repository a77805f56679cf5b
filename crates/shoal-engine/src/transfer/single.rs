//! One stream from byte 0 to the end: for servers that do not do ranges, or do not say how
//! long the file is. Nothing can be resumed mid-way, so a failure starts the stream over.

use reqwest::Response;
use shoal_core::SafeUrl;
use tokio::time::Instant;
use url::Url;

use crate::error::DownloadError;
use crate::events::{Event, Progress};
use crate::http::{identity, transport_error, FetchError, Probe};
use crate::ratelimit::RateLimiter;
use crate::retry::Backoff;
use crate::storage::Store;

use super::worker::{StreamError, BUF, TICK};
use super::{Outcome, Transfer};

/// One stream from the start: the server does not do ranges, or the size is unknown. A
/// failure restarts from byte 0, since there is no way to ask for the rest.
pub(crate) async fn run(t: Transfer, probe: Probe) -> Result<Outcome, DownloadError> {
    let options = t.options.clone();
    let limiter = options.limit_rate.map(|r| RateLimiter::new(r.per_second()));
    let expected = probe.size;
    let url = probe.url.clone();
    let client = probe.client.clone();
    let mut response = Ok(probe.response);
    let mut tries = 1;
    let mut backoff = Backoff::default();
    let mut fetched = 0;
    loop {
        let result = match response {
            Ok(r) => stream_whole(&t, &url, r, expected, limiter.as_ref(), &mut fetched).await,
            Err(e) => Err(StreamError::Fetch(e)),
        };
        let error = match result {
            Ok(size) => {
                return Ok(Outcome {
                    size,
                    max_connections: 1,
                    fetched,
                    sources: Vec::new(),
                })
            }
            Err(StreamError::Local(e)) => return Err(e),
            Err(StreamError::Fetch(e)) => e,
        };
        tries += 1;
        if error.is_fatal() || tries > options.max_tries {
            return Err(DownloadError::fetch(&url, error, tries - 1));
        }
        let wait = backoff.next(error.slow_down().flatten());
        let _ = t.events.send(Event::Retry {
            attempt: tries - 1,
            reason: error.describe(),
            after: wait,
        });
        tokio::select! {
            _ = t.cancel.cancelled() => return Err(DownloadError::Cancelled),
            _ = tokio::time::sleep(wait) => {}
        }
        response = tokio::select! {
            _ = t.cancel.cancelled() => return Err(DownloadError::Cancelled),
            r = client.get(&url, identity()) => {
                r.and_then(|r| if r.status().is_success() {
                    Ok(r)
                } else {
                    Err(FetchError::Status { status: r.status(), retry_after: None })
                })
            }
        };
    }
}

/// Stops a stream that has sent more than `--max-filesize` or the Metalink's size allow,
/// before those bytes are written.
fn over_limit(t: &Transfer, url: &Url, received: u64) -> Result<(), DownloadError> {
    let options = &t.options;
    if let Some(limit) = options.max_filesize.filter(|&limit| received > limit) {
        return Err(DownloadError::TooLarge {
            url: SafeUrl::new(url.clone()),
            limit,
            size: None,
        });
    }
    if let Some(size) = options.expected_size.filter(|&size| received > size) {
        let detail = format!("sent more than the {size} bytes its Metalink gives");
        return Err(DownloadError::fetch(url, FetchError::Protocol(detail), 1));
    }
    Ok(())
}

/// Writes `buf`, the bytes at `pos`, where the download's bytes go; a stream's reader is told
/// they are there. `buf` comes back as it went, for reuse.
async fn write(t: &Transfer, buf: &mut Vec<u8>, pos: u64) -> Result<(), DownloadError> {
    match &t.store {
        Store::Stream(ring) => {
            let written = ring.write_when_room(buf, pos, &t.cancel).await;
            let closed = || DownloadError::StreamClosed {
                url: SafeUrl::new(t.options.url.clone()),
                sent: ring.sent(),
            };
            if written.map_err(|_| closed())? < buf.len() {
                return Err(DownloadError::Cancelled);
            }
            ring.written_to(pos + buf.len() as u64);
            Ok(())
        }
        Store::Part(part) => {
            // A write may block (dirty page cache, a slow disk): on a blocking thread.
            let part = part.clone();
            let data = std::mem::take(buf);
            let (data, written) = tokio::task::spawn_blocking(move || {
                let written = part.write_at(&data, pos);
                (data, written)
            })
            .await
            .expect("writing does not panic");
            *buf = data;
            written
        }
    }
}

async fn stream_whole(
    t: &Transfer,
    url: &Url,
    mut response: Response,
    expected: Option<u64>,
    limiter: Option<&RateLimiter>,
    fetched: &mut u64,
) -> Result<u64, StreamError> {
    let mut pos = 0u64;
    let mut buf = Vec::with_capacity(BUF);
    let mut last_report = Instant::now();
    let mut last_fetched = *fetched;
    let mut speed = 0.0f64;
    let stall = t.options.stall_timeout;
    loop {
        let chunk = tokio::select! {
            biased;
            _ = t.cancel.cancelled() => return Err(StreamError::Local(DownloadError::Cancelled)),
            chunk = tokio::time::timeout(stall, response.chunk()) => chunk,
        };
        let chunk = match chunk {
            Ok(Ok(Some(chunk))) => Some(chunk),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => return Err(StreamError::Fetch(transport_error(e))),
            Err(_) => return Err(StreamError::Fetch(FetchError::Stalled)),
        };
        if let Some(chunk) = &chunk {
            if let Some(limiter) = limiter {
                limiter.acquire(chunk.len()).await;
            }
            if let Some(shared) = &t.options.shared_rate {
                shared.acquire(chunk.len()).await;
            }
            *fetched += chunk.len() as u64;
            if let Some(tally) = &t.options.tally {
                tally.received(false, chunk.len() as u64);
            }
            buf.extend_from_slice(chunk);
            over_limit(t, url, pos + buf.len() as u64).map_err(StreamError::Local)?;
        }
        if buf.len() >= BUF || (chunk.is_none() && !buf.is_empty()) {
            if expected.is_some_and(|size| pos + buf.len() as u64 > size) {
                return Err(StreamError::Fetch(FetchError::Protocol(
                    "server sent more bytes than its Content-Length".to_string(),
                )));
            }
            write(t, &mut buf, pos).await.map_err(StreamError::Local)?;
            pos += buf.len() as u64;
            buf.clear();
        }
        if last_report.elapsed() >= TICK || chunk.is_none() {
            // Bytes received, not written: writes come in 256 KiB steps, which would make a
            // slow stream's speed flicker between zero and a burst.
            let now =
                (*fetched - last_fetched) as f64 / last_report.elapsed().as_secs_f64().max(1e-3);
            speed = if speed == 0.0 {
                now
            } else {
                0.8 * speed + 0.2 * now
            };
            last_report = Instant::now();
            last_fetched = *fetched;
            let _ = t.events.send(Event::Progress(Progress {
                done: pos,
                total: expected,
                speed,
                connections: 1,
            }));
        }
        if chunk.is_none() {
            return match expected {
                Some(size) if pos < size => Err(StreamError::Fetch(FetchError::CutShort(format!(
                    "connection closed after {pos} of {size} bytes"
                )))),
                _ => Ok(pos),
            };
        }
    }
}
