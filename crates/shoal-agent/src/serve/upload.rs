//! Streaming a range to a peer: the body is read in chunks with positional reads off the
//! runtime, paced by one token bucket shared by all uploads, and cut short with an error when
//! the file cannot be read to the end or the server stops.

use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use shoal_core::{ContentId, TokenBucket};
use tokio::time::Instant;

use super::{PieceServer, Slot};
use crate::catalog::Entry;

/// A body in progress: the rest of one range of one file.
pub(super) struct Upload {
    pub(super) server: PieceServer,
    pub(super) id: ContentId,
    /// The content's entry, whose meter counts what this upload sends.
    pub(super) entry: Arc<Entry>,
    pub(super) path: PathBuf,
    pub(super) file: Arc<File>,
    pub(super) at: u64,
    pub(super) end: u64,
    /// Given back as soon as the last chunk is out, so `load` does not wait for the
    /// connection to drop the body.
    pub(super) slot: Option<Slot>,
}

impl Upload {
    pub(super) fn into_body(self) -> Body {
        let chunks = futures_util::stream::unfold(Some(self), |upload| async move {
            let mut upload = upload?;
            if upload.at >= upload.end {
                return None;
            }
            match upload.next_chunk().await {
                Ok(chunk) => Some((Ok(chunk), Some(upload))),
                Err(error) if upload.server.inner.stop.is_cancelled() => {
                    tracing::debug!(content = %upload.id, "upload cut short by shutdown");
                    Some((Err(error), None))
                }
                Err(error) => {
                    tracing::warn!(
                        content = %upload.id,
                        path = %upload.path.display(),
                        offset = upload.at,
                        %error,
                        "upload ended early: reading the file failed"
                    );
                    Some((Err(error), None))
                }
            }
        });
        Body::from_stream(chunks)
    }

    async fn next_chunk(&mut self) -> io::Result<Bytes> {
        let inner = &self.server.inner;
        let len = (self.end - self.at).min(inner.chunk as u64) as usize;
        let file = self.file.clone();
        let at = self.at;
        let read = tokio::task::spawn_blocking(move || read_chunk(&file, at, len));
        let chunk = tokio::select! {
            joined = read => joined.map_err(io::Error::other)??,
            () = inner.stop.cancelled() => return Err(stopped()),
        };
        tokio::select! {
            () = inner.bucket.take(chunk.len()) => {}
            () = inner.stop.cancelled() => return Err(stopped()),
        }
        self.at += chunk.len() as u64;
        inner.served.add(chunk.len() as u64);
        self.entry.uploaded().add(chunk.len() as u64);
        if self.at >= self.end {
            self.slot = None;
        }
        Ok(chunk)
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "the piece server is stopping")
}

/// Up to `len` bytes at `at`; fewer only at the end of the file, and an error when there is
/// nothing left to read (the file shrank under the upload).
fn read_chunk(file: &File, at: u64, len: usize) -> io::Result<Bytes> {
    let buf = shoal_engine::storage::read_at_most(file, at, len)?;
    if buf.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the file ends before offset {at}, inside the range being sent"),
        ));
    }
    Ok(Bytes::from(buf))
}

/// One token bucket for every upload, so the limit holds however many peers fetch at once;
/// the limit can be changed or lifted while uploads run (`None`: no limit).
pub(super) struct Bucket {
    /// The time the bucket counts from.
    origin: Instant,
    bucket: Mutex<Option<TokenBucket>>,
}

impl Bucket {
    pub(super) fn new(bytes_per_sec: Option<NonZeroU64>) -> Self {
        Self {
            origin: Instant::now(),
            bucket: Mutex::new(bytes_per_sec.map(|r| TokenBucket::for_bytes(r, Duration::ZERO))),
        }
    }

    /// Changes the limit from now on.
    pub(super) fn set(&self, bytes_per_sec: Option<NonZeroU64>) {
        let since = Instant::now().saturating_duration_since(self.origin);
        *self.bucket.lock().expect("upload bucket lock") =
            bytes_per_sec.map(|r| TokenBucket::for_bytes(r, since));
    }

    /// Takes `bytes`, waiting as long as the rate requires.
    async fn take(&self, bytes: usize) {
        let wait = self.reserve(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes `bytes` at `now` and says how long the taker must wait (see [`TokenBucket::take`]).
    fn reserve(&self, bytes: usize, now: Instant) -> Duration {
        let since = now.saturating_duration_since(self.origin);
        (self.bucket.lock().expect("upload bucket lock").as_mut())
            .map_or(Duration::ZERO, |b| b.take(bytes as u64, since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bucket_paces_every_upload() {
        let bucket = Bucket::new(NonZeroU64::new(1_000_000));
        let t0 = bucket.origin;
        // 200 chunks of 10 kB at once, from any number of uploads: 2 s of debt.
        let mut wait = Duration::ZERO;
        for _ in 0..200 {
            wait = bucket.reserve(10_000, t0);
        }
        assert!((1.99..=2.0).contains(&wait.as_secs_f64()), "{wait:?}");
        // Once the debt is waited out, an idle spell saves up only the burst.
        let later = t0 + Duration::from_secs(12);
        assert_eq!(bucket.reserve(100_000, later), Duration::ZERO);
        assert!(bucket.reserve(1_000, later) >= Duration::from_millis(1));
    }

    #[test]
    fn the_limit_changes_and_lifts_while_uploads_run() {
        let bucket = Bucket::new(None);
        let t0 = bucket.origin;
        assert_eq!(bucket.reserve(100_000_000, t0), Duration::ZERO);
        // changeGlobalOption max-overall-upload-limit=1M, as the RPC sets it.
        bucket.set(NonZeroU64::new(1_000_000));
        let now = Instant::now();
        let wait = bucket.reserve(2_000_000, now);
        assert!((1.9..=2.0).contains(&wait.as_secs_f64()), "{wait:?}");
        bucket.set(None);
        assert_eq!(bucket.reserve(100_000_000, now), Duration::ZERO);
    }
}
