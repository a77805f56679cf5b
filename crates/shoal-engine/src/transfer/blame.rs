//! Who sent the bytes of a bad piece. A piece that does not match is blamed on its writer when
//! one source wrote all of it. With several writers (an endgame race, a range given back and
//! fetched again from another source, bytes of a previous run beside this run's), any of them
//! may be the liar, and blaming all would drop honest sources with it. So the piece is fetched
//! again from each writer alone, one at a time, into memory, and only a writer whose own bytes
//! do not match is blamed; one that cannot send the piece alone is not blamed for it.

use std::sync::Arc;
use std::time::Duration;

use shoal_core::{ByteRange, PieceIndex};
use tracing::{debug, info, warn};

use crate::error::DownloadError;
use crate::events::Event;
use crate::http::FetchError;
use crate::pieces::BadPiece;
use crate::source::Source;

use super::shared::Shared;

/// How long fetching a piece alone may take, in stall timeouts: a writer that trickles its
/// bytes cannot hold the download back for longer.
const ALONE_STALLS: u32 = 4;

/// Blames `source` for piece `index`: it is named and dropped. When it is the last source
/// left, its bad bytes are the download's failure.
pub(super) fn blame(
    shared: &Shared,
    index: PieceIndex,
    source_index: usize,
) -> Result<(), DownloadError> {
    let source = shared.source(source_index);
    let url = source.shown_url();
    let peer = source.peer().map(|p| p.name.clone());
    warn!(piece = %index, %url, ?peer, "piece does not match its digest");
    let _ = shared.t.events.send(Event::BadPiece {
        index,
        url: url.clone(),
        peer,
    });
    let reason = format!("sent bytes that do not match the hash of piece {index}");
    if shared.drop_source(source_index, reason) {
        Ok(())
    } else {
        Err(DownloadError::PieceMismatch {
            path: shared
                .t
                .store
                .part()
                .expect("a stream checks no pieces")
                .path()
                .to_path_buf(),
            index,
            url,
        })
    }
}

/// Fetches `piece` again from each of its writers alone and blames those whose bytes do not
/// match. A blame that leaves no source fails the download.
pub(super) async fn isolate(shared: Arc<Shared>, piece: BadPiece) {
    info!(
        piece = %piece.index,
        writers = piece.writers.sources.len(),
        earlier = piece.writers.earlier,
        "piece with several writers does not match; asking each writer alone"
    );
    for &index in &piece.writers.sources {
        let source = shared.source(index);
        if source.is_dropped() {
            continue;
        }
        let data = match fetch_alone(&shared, &source, piece.range).await {
            Ok(data) => data,
            Err(error) => {
                debug!(piece = %piece.index, url = %source.shown_url(), error = %error.describe(),
                    "could not fetch the piece alone; not blamed for it");
                continue;
            }
        };
        let owner = shared.clone();
        let at = piece.index;
        let matches = tokio::task::spawn_blocking(move || {
            owner.pieces.as_ref().and_then(|p| p.matches(at, &data))
        })
        .await
        .expect("hashing does not panic");
        if matches == Some(false) {
            if let Err(error) = blame(&shared, piece.index, index) {
                shared.fail(error);
                return;
            }
        }
    }
}

/// The bytes of `range` as `source` alone sends them.
async fn fetch_alone(
    shared: &Shared,
    source: &Source,
    range: ByteRange,
) -> Result<Vec<u8>, FetchError> {
    let stall = shared.t.options.stall_timeout;
    let limit: Duration = stall.saturating_mul(ALONE_STALLS);
    tokio::time::timeout(limit, async {
        let mut response = tokio::time::timeout(stall, source.range.fetch(range))
            .await
            .map_err(|_| FetchError::Stalled)??;
        let mut data = Vec::with_capacity(range.len() as usize);
        // Bounded: every chunk adds bytes, and no more than the range's are taken.
        loop {
            let chunk = match tokio::time::timeout(stall, response.chunk()).await {
                Err(_) => return Err(FetchError::Stalled),
                Ok(Err(e)) => return Err(crate::http::transport_error(e)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            if let Some(limiter) = &shared.limiter {
                limiter.acquire(chunk.len()).await;
            }
            if let Some(cap) = &shared.t.options.shared_rate {
                cap.acquire(chunk.len()).await;
            }
            shared
                .fetched
                .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if data.len() + chunk.len() > range.len() as usize {
                return Err(FetchError::Protocol(format!(
                    "sent more than the {} bytes of the range asked for",
                    range.len()
                )));
            }
            data.extend_from_slice(&chunk);
        }
        if data.len() as u64 != range.len() {
            return Err(FetchError::CutShort(format!(
                "connection closed after {} of the {} bytes asked for",
                data.len(),
                range.len()
            )));
        }
        Ok(data)
    })
    .await
    .map_err(|_| FetchError::Stalled)?
}
