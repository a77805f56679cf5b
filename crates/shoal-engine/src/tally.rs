//! [`Tally`]: running totals that downloads add to as they go, for a daemon's metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Totals shared by every download given it ([`crate::DownloadOptions::tally`]): bytes by
/// where they came from, and pieces checked. Updated as a download runs (bytes at the end of
/// each chunk received, pieces as each is checked), not only when it ends, so a scrape
/// during a long download sees it move.
#[derive(Debug, Default)]
pub struct Tally {
    origin_bytes: AtomicU64,
    peer_bytes: AtomicU64,
    pieces_verified: AtomicU64,
    pieces_rejected: AtomicU64,
}

impl Tally {
    /// Body bytes received from origins and mirrors (servers of the whole file, a swarm's
    /// origin included), work redone included.
    pub fn origin_bytes(&self) -> u64 {
        self.origin_bytes.load(Ordering::Relaxed)
    }

    /// Body bytes received from peers (agents serving pieces they hold).
    pub fn peer_bytes(&self) -> u64 {
        self.peer_bytes.load(Ordering::Relaxed)
    }

    /// Pieces that matched their digest, or whose digest was learned from the origin's bytes.
    pub fn pieces_verified(&self) -> u64 {
        self.pieces_verified.load(Ordering::Relaxed)
    }

    /// Pieces that did not match their digest and were fetched again.
    pub fn pieces_rejected(&self) -> u64 {
        self.pieces_rejected.load(Ordering::Relaxed)
    }

    pub(crate) fn received(&self, from_peer: bool, bytes: u64) {
        let total = if from_peer {
            &self.peer_bytes
        } else {
            &self.origin_bytes
        };
        total.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn verified(&self) {
        self.pieces_verified.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self) {
        self.pieces_rejected.fetch_add(1, Ordering::Relaxed);
    }
}
