//! Samples: one block of the file fetched again to check that two places hold the same version
//! of it, where nothing else can say so. A server that sends neither `ETag` nor
//! `Last-Modified` gives `If-Range` nothing to hold on to, and a size says little: a previous
//! run's `.part` is compared with the server before it is continued ([`compare_part`]), and
//! each mirror with the primary before it gets work ([`compare_mirrors`]).
//!
//! A sample is one block ([`BLOCK`], 64 KiB): one round trip and a few milliseconds of any
//! link, yet two versions of a file rarely agree on 64 KiB of it unless they agree on the
//! whole (a file that grew or shrank is caught by its size first).

use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};
use shoal_core::{Bitfield, ByteRange, SafeUrl};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::error::DownloadError;
use crate::events::{Event, EventSender};
use crate::http::{transport_error, FetchError, RangeSource};
use crate::options::{DownloadOptions, BLOCK};
use crate::retry::Backoff;
use crate::storage::PartFile;

/// What a comparison of a previous run's `.part` with the server found.
pub(crate) enum PartCheck {
    /// The sampled bytes on disk are the server's: the `.part` may be continued.
    Same,
    /// They differ: the file changed on the server. The reason names the file, the URL and
    /// the bytes compared.
    Changed { reason: String },
}

/// The block a resume samples: the last done block before the first missing one, which holds
/// the bytes the resumed download joins to (a file edited near the point where the previous
/// run stopped shows there first); else, when the first block is missing, the last done block.
/// `None` when nothing is done.
pub(crate) fn resume_block(done: &Bitfield) -> Option<u32> {
    let first_missing = (0..done.len())
        .find(|&b| !done.get(b))
        .unwrap_or(done.len());
    match first_missing.checked_sub(1) {
        Some(before) => Some(before),
        None => (0..done.len()).rev().find(|&b| done.get(b)),
    }
}

/// Compares block `block` of `part` (a file of `size` bytes) with what `server` sends for it.
pub(crate) async fn compare_part(
    part: &PartFile,
    size: u64,
    block: u32,
    server: &RangeSource,
    options: &DownloadOptions,
    cancel: &CancellationToken,
) -> Result<PartCheck, DownloadError> {
    let range = block_range(block, size);
    let served = fetch_with_retries(server, range, options, cancel).await?;
    let mut held = vec![0u8; range.len() as usize];
    part.file()
        .read_exact_at(&mut held, range.start())
        .map_err(|e| DownloadError::io(part.part(), "read back", e))?;
    if served[..] == held[..] {
        debug!(range = %range.http_header(), "the sample matches the part file");
        return Ok(PartCheck::Same);
    }
    Ok(PartCheck::Changed {
        reason: format!(
            "{}: {} sends other bytes at {} than the previous run wrote, and no ETag or \
             Last-Modified to tell versions apart, so the file changed on the server; \
             starting over",
            part.part().display(),
            server.shown_url(),
            shown(range)
        ),
    })
}

/// Compares one block, chosen at random, of each mirror with the same block of `primary`
/// (a file of `size` bytes), all at once. Answers the mirrors that send the same bytes, and
/// for each other one its URL and why it is not used; [`Event::SourceDropped`] says so.
///
/// The block is random so that a mirror cannot pass by serving the right bytes only where a
/// fixed sample would look. When the primary's block cannot be fetched, nothing can be
/// compared with it: every mirror is left out and the primary serves the file alone.
pub(crate) async fn compare_mirrors(
    primary: &RangeSource,
    mirrors: Vec<RangeSource>,
    size: u64,
    options: &DownloadOptions,
    events: &EventSender,
    cancel: &CancellationToken,
) -> Result<(Vec<RangeSource>, Vec<(SafeUrl, String)>), DownloadError> {
    let block = rand::random_range(0..size.div_ceil(BLOCK)) as u32;
    let range = block_range(block, size);
    let mut fetches = tokio::task::JoinSet::new();
    for (i, source) in std::iter::once(primary).chain(&mirrors).enumerate() {
        let (source, options, cancel) = (source.clone(), options.clone(), cancel.clone());
        fetches.spawn(async move {
            let r = fetch_with_retries(&source, range, &options, &cancel).await;
            (i, r)
        });
    }
    let mut samples: Vec<Option<Result<Bytes, DownloadError>>> =
        (0..=mirrors.len()).map(|_| None).collect();
    while let Some(joined) = fetches.join_next().await {
        let (i, r) = joined.expect("sample fetches do not panic");
        samples[i] = Some(r);
    }
    let mut samples = samples
        .into_iter()
        .map(|s| s.expect("every sample reported"));
    let reference = samples.next().expect("the primary's sample");
    if let Err(DownloadError::Cancelled) = reference {
        return Err(DownloadError::Cancelled);
    }
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (mirror, sample) in mirrors.into_iter().zip(samples) {
        let why = match (&reference, sample) {
            (_, Err(DownloadError::Cancelled)) => return Err(DownloadError::Cancelled),
            (Ok(reference), Ok(sample)) if *reference == sample => {
                kept.push(mirror);
                continue;
            }
            (Ok(_), Ok(_)) => format!(
                "sends other bytes at {} than {}: another file of the same size",
                shown(range),
                primary.shown_url()
            ),
            (Ok(_), Err(e)) => format!(
                "its bytes at {} could not be fetched to compare with {}: {e}",
                shown(range),
                primary.shown_url()
            ),
            (Err(e), _) => format!(
                "the bytes at {} of {} could not be fetched to compare it with: {e}",
                shown(range),
                primary.shown_url()
            ),
        };
        info!(url = %mirror.shown_url(), reason = %why, "mirror dropped");
        let _ = events.send(Event::SourceDropped {
            url: mirror.shown_url(),
            reason: why.clone(),
        });
        dropped.push((mirror.shown_url(), why));
    }
    Ok((kept, dropped))
}

/// `bytes 65536-131071`: a range as messages show it.
fn shown(range: ByteRange) -> String {
    format!("bytes {}-{}", range.start(), range.end() - 1)
}

/// Block `block` of a file of `size` bytes (the last one may be short).
fn block_range(block: u32, size: u64) -> ByteRange {
    let start = u64::from(block) * BLOCK;
    ByteRange::new(start, (start + BLOCK).min(size)).expect("a block of the file is not empty")
}

/// Fetches `range` whole from `source`, trying up to `--max-tries` times as the probe does.
async fn fetch_with_retries(
    source: &RangeSource,
    range: ByteRange,
    options: &DownloadOptions,
    cancel: &CancellationToken,
) -> Result<Bytes, DownloadError> {
    let mut backoff = Backoff::default();
    let mut tries = 0;
    loop {
        tries += 1;
        let result = tokio::select! {
            _ = cancel.cancelled() => return Err(DownloadError::Cancelled),
            r = fetch(source, range, options) => r,
        };
        let error = match result {
            Ok(bytes) => return Ok(bytes),
            Err(e) => e,
        };
        if error.is_fatal() || tries >= options.max_tries {
            return Err(DownloadError::fetch(source.url.as_url(), error, tries));
        }
        let wait = backoff.next(error.slow_down().flatten());
        debug!(tries, ?wait, error = %error.describe(), "sample failed, retrying");
        tokio::select! {
            _ = cancel.cancelled() => return Err(DownloadError::Cancelled),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One try: the range's bytes, each chunk arriving within the stall timeout.
async fn fetch(
    source: &RangeSource,
    range: ByteRange,
    options: &DownloadOptions,
) -> Result<Bytes, FetchError> {
    let mut response = source.fetch(range).await?;
    let mut bytes = BytesMut::with_capacity(range.len() as usize);
    while (bytes.len() as u64) < range.len() {
        let chunk = tokio::time::timeout(options.stall_timeout, response.chunk())
            .await
            .map_err(|_| FetchError::Stalled)?
            .map_err(transport_error)?;
        match chunk {
            Some(chunk) => bytes.extend_from_slice(&chunk),
            None => break,
        }
    }
    if bytes.len() as u64 != range.len() {
        return Err(FetchError::CutShort(format!(
            "sent {} bytes of the {} asked for ({})",
            bytes.len(),
            range.len(),
            range.http_header()
        )));
    }
    Ok(bytes.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(len: u32, set: &[u32]) -> Bitfield {
        let mut done = Bitfield::new(len);
        for &b in set {
            done.set(b);
        }
        done
    }

    #[test]
    fn a_resume_samples_the_block_it_joins_to() {
        assert_eq!(resume_block(&done(10, &[0, 1, 2, 5])), Some(2));
        assert_eq!(resume_block(&done(10, &[3, 4, 7])), Some(7));
        assert_eq!(resume_block(&done(10, &[])), None);
        assert_eq!(resume_block(&done(3, &[0, 1, 2])), Some(2));
    }

    #[test]
    fn the_last_block_may_be_short() {
        let range = block_range(2, 2 * BLOCK + 10);
        assert_eq!((range.start(), range.len()), (2 * BLOCK, 10));
    }
}
