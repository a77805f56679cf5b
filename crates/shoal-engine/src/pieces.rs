//! Piece digests: every piece is checked as soon as all its bytes are on disk. A piece that
//! does not match is fetched again, and the sources that sent its bytes are not used any more:
//! with several mirrors or peers, one serving other bytes cannot spoil the file.
//!
//! The digests come from a Metalink or a manifest (all known up front), from a swarm's leader
//! (published while it fetches: a piece waits until its digest is known), or are learned: the
//! download is the one fetching from the origin, and reports each piece's BLAKE3 for others.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use shoal_core::checksum::PieceHashes;
use shoal_core::manifest::PieceDigest;
use shoal_core::{Bitfield, ByteRange, ChecksumAlgo, Layout, PieceIndex};

use crate::options::{PublishedDigests, BLOCK};
use crate::segments::Segments;
use crate::storage::PartFile;
use crate::verify;

/// Where the expected digest of each piece comes from.
pub enum Expected {
    /// All known up front.
    Known(PieceHashes),
    /// BLAKE3 digests published over time; `None` until known.
    Published(PublishedDigests),
    /// None: each piece's BLAKE3 is computed and reported, not checked.
    Learned,
}

/// Which pieces are verified, and which source wrote each block.
pub struct PieceCheck {
    expected: Expected,
    layout: Layout,
    verified: Mutex<Bitfield>,
    /// Source index per block, as last written.
    writers: Vec<AtomicU8>,
}

/// What one round of checking found.
#[derive(Default)]
pub struct Checked {
    /// Pieces that matched (or were hashed, when learning), newly, with their BLAKE3 when it
    /// was computed.
    pub verified: Vec<(PieceIndex, Option<PieceDigest>)>,
    pub bad: Vec<BadPiece>,
}

/// A piece whose bytes did not match.
pub struct BadPiece {
    pub index: PieceIndex,
    /// Sources that wrote some of its bytes.
    pub sources: BTreeSet<usize>,
}

impl PieceCheck {
    /// `None` when known digests do not describe a file of `size` bytes in pieces of
    /// `length`.
    pub fn new(expected: Expected, length: u64, size: u64) -> Option<Self> {
        let layout = Layout::for_hashes(size, length).ok()?;
        let count = layout.piece_count() as usize;
        let fits = match &expected {
            Expected::Known(hashes) => hashes.length == length && hashes.hashes.len() == count,
            Expected::Published(digests) => digests.known.borrow().len() == count,
            Expected::Learned => true,
        };
        fits.then(|| Self {
            verified: Mutex::new(Bitfield::new(layout.piece_count())),
            writers: (0..size.div_ceil(BLOCK))
                .map(|_| AtomicU8::new(0))
                .collect(),
            expected,
            layout,
        })
    }

    pub fn all_verified(&self) -> bool {
        self.verified.lock().expect("pieces lock").is_full()
    }

    /// Notes that `source` wrote `range`.
    pub fn wrote(&self, range: ByteRange, source: usize) {
        let source = u8::try_from(source).unwrap_or(u8::MAX);
        for block in range.start() / BLOCK..range.end().div_ceil(BLOCK) {
            if let Some(w) = self.writers.get(block as usize) {
                w.store(source, Ordering::Relaxed);
            }
        }
    }

    /// Says that the piece holding byte `offset` is being fetched: a published digest not
    /// known yet is asked for now, so that it is likely here when the bytes are.
    pub fn expect_digest(&self, offset: u64) {
        if let Expected::Published(d) = &self.expected {
            let Some(index) = self.layout.piece_at(offset) else {
                return;
            };
            if d.known.borrow()[index.get() as usize].is_none() {
                d.wanted.notify_one();
            }
        }
    }

    /// The piece that holds byte `offset`.
    pub fn piece_around(&self, offset: u64) -> ByteRange {
        let index = self
            .layout
            .piece_at(offset)
            .expect("a written byte is in the file");
        self.layout.range(index)
    }

    /// The digest piece `index` must have, as `algo` computes it; `None` when checking must
    /// wait, `Some(None)` when the digest is to be learned.
    fn expected(&self, index: PieceIndex) -> Option<(ChecksumAlgo, Option<Vec<u8>>)> {
        let i = index.get() as usize;
        match &self.expected {
            Expected::Known(h) => Some((h.algo, Some(h.hashes[i].clone()))),
            Expected::Published(d) => {
                let known = d.known.borrow()[i];
                if known.is_none() {
                    d.wanted.notify_one();
                }
                known.map(|digest| (ChecksumAlgo::Blake3, Some(digest.to_vec())))
            }
            Expected::Learned => Some((ChecksumAlgo::Blake3, None)),
        }
    }

    /// Checks every piece whose bytes are all written, that is not verified yet and whose
    /// digest is known. Bad pieces are forgotten in `segments`, so they are fetched again.
    /// Returns which pieces matched and which did not.
    pub async fn check(
        &self,
        part: &Arc<PartFile>,
        segments: &Mutex<Segments>,
    ) -> Result<Checked, std::io::Error> {
        let ready: Vec<PieceIndex> = {
            let seg = segments.lock().expect("segments lock");
            let verified = self.verified.lock().expect("pieces lock");
            self.layout
                .pieces()
                .filter(|&i| !verified.get(i.get()) && seg.is_done(self.layout.range(i)))
                .collect()
        };
        let mut checked = Checked::default();
        for index in ready {
            let Some((algo, expected)) = self.expected(index) else {
                continue;
            };
            let range = self.layout.range(index);
            let part = part.clone();
            let digest =
                tokio::task::spawn_blocking(move || verify::hash_range(part.file(), range, algo))
                    .await
                    .expect("hashing does not panic")?;
            if expected.is_none_or(|e| e == digest) {
                self.verified.lock().expect("pieces lock").set(index.get());
                let blake3 = (algo == ChecksumAlgo::Blake3)
                    .then(|| digest.as_slice().try_into().ok())
                    .flatten();
                checked.verified.push((index, blake3));
                continue;
            }
            segments.lock().expect("segments lock").invalidate(range);
            let sources = (range.start() / BLOCK..range.end().div_ceil(BLOCK))
                .map(|b| usize::from(self.writers[b as usize].load(Ordering::Relaxed)))
                .collect();
            checked.bad.push(BadPiece { index, sources });
        }
        Ok(checked)
    }
}
