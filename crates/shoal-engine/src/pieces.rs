//! Piece digests: every piece is checked as soon as all its bytes are on disk. A piece that
//! does not match is fetched again, and the sources that sent its bytes are not used any more:
//! with several mirrors or peers, one serving other bytes cannot spoil the file.
//!
//! The digests come from a Metalink or a manifest (all known up front), from a swarm's leader
//! (published while it fetches: a piece waits until its digest is known), or are learned: the
//! download is the one fetching from the origin, and reports each piece's BLAKE3 for others.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shoal_core::checksum::PieceHashes;
use shoal_core::manifest::PieceDigest;
use shoal_core::{Bitfield, ByteRange, ChecksumAlgo, Layout, PieceIndex};

use crate::options::{PublishedDigests, BLOCK};
use crate::segments::Segments;
use crate::storage::PartFile;
use crate::verify;

/// Where the expected digest of each piece comes from.
pub(crate) enum Expected {
    /// All known up front.
    Known(PieceHashes),
    /// BLAKE3 digests published over time; `None` until known.
    Published(PublishedDigests),
    /// None: each piece's BLAKE3 is computed and reported, not checked.
    Learned,
}

/// A block's writer is not known: it was written by a previous run, before a resume.
const UNKNOWN_WRITER: u32 = u32::MAX;

/// Which pieces are verified, and which source wrote each block.
///
/// A verified piece is never written again: [`PieceCheck::writable`] leaves it out of every
/// write. Writes and checks race (two connections may hold the same range at the end), so
/// each piece counts its writes: a check whose piece was written to while it was hashed, or
/// by the time it would be marked verified, does not count, and the piece is checked again.
pub(crate) struct PieceCheck {
    expected: Expected,
    layout: Layout,
    verified: Mutex<Bitfield>,
    /// Source index per block, as last written; [`UNKNOWN_WRITER`] when not written this run.
    writers: Vec<AtomicU32>,
    /// Writes begun per piece.
    writes: Vec<AtomicU64>,
}

/// What one round of checking found.
#[derive(Default)]
pub(crate) struct Checked {
    /// Pieces that matched (or were hashed, when learning), newly, with their BLAKE3 when it
    /// was computed.
    pub verified: Vec<(PieceIndex, Option<PieceDigest>)>,
    pub bad: Vec<BadPiece>,
}

/// A piece whose bytes did not match.
pub(crate) struct BadPiece {
    pub index: PieceIndex,
    /// Sources that wrote some of its bytes in this run (bytes from a previous run name none).
    pub sources: BTreeSet<usize>,
}

impl PieceCheck {
    /// `None` when known digests do not describe a file of `size` bytes in pieces of
    /// `length`.
    pub(crate) fn new(expected: Expected, length: u64, size: u64) -> Option<Self> {
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
                .map(|_| AtomicU32::new(UNKNOWN_WRITER))
                .collect(),
            writes: (0..count).map(|_| AtomicU64::new(0)).collect(),
            expected,
            layout,
        })
    }

    /// The size of every piece but the last.
    pub(crate) fn piece_size(&self) -> u64 {
        self.layout.piece_size()
    }

    pub(crate) fn all_verified(&self) -> bool {
        self.verified.lock().expect("pieces lock").is_full()
    }

    /// The parts of `range` that may be written now: all of it but the pieces already
    /// verified. Counts a write begun on every piece `range` touches first, so a check racing
    /// this write does not count (see [`PieceCheck`]).
    pub(crate) fn writable(&self, range: ByteRange) -> Vec<ByteRange> {
        let first = self
            .layout
            .piece_at(range.start())
            .expect("a write inside the file");
        let last = self
            .layout
            .piece_at(range.end() - 1)
            .expect("a write inside the file");
        for i in first.get()..=last.get() {
            self.writes[i as usize].fetch_add(1, Ordering::SeqCst);
        }
        let verified = self.verified.lock().expect("pieces lock");
        let mut parts: Vec<ByteRange> = Vec::new();
        for i in first.get()..=last.get() {
            if verified.get(i) {
                continue;
            }
            let piece = self
                .layout
                .range(self.layout.piece(i).expect("in the layout"));
            let start = piece.start().max(range.start());
            let end = piece.end().min(range.end());
            match parts.last_mut() {
                Some(prev) if prev.end() == start => {
                    *prev = ByteRange::new(prev.start(), end).expect("start < end");
                }
                _ => parts.push(ByteRange::new(start, end).expect("start < end")),
            }
        }
        parts
    }

    /// Notes that `source` wrote `range`.
    pub(crate) fn wrote(&self, range: ByteRange, source: usize) {
        let source = u32::try_from(source).unwrap_or(UNKNOWN_WRITER - 1);
        for block in range.start() / BLOCK..range.end().div_ceil(BLOCK) {
            if let Some(w) = self.writers.get(block as usize) {
                w.store(source, Ordering::Relaxed);
            }
        }
    }

    /// Says that the piece holding byte `offset` is being fetched: a published digest not
    /// known yet is asked for now, so that it is likely here when the bytes are.
    pub(crate) fn expect_digest(&self, offset: u64) {
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
    pub(crate) fn piece_around(&self, offset: u64) -> ByteRange {
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
    pub(crate) async fn check(
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
            let writes = &self.writes[index.get() as usize];
            let before = writes.load(Ordering::SeqCst);
            let part = part.clone();
            let digest =
                tokio::task::spawn_blocking(move || verify::hash_range(part.file(), range, algo))
                    .await
                    .expect("hashing does not panic")?;
            if writes.load(Ordering::SeqCst) != before {
                // Written while hashed: the digest says nothing of what is there now.
                continue;
            }
            if expected.is_none_or(|e| e == digest) {
                {
                    let mut verified = self.verified.lock().expect("pieces lock");
                    verified.set(index.get());
                    // A write that began before it was marked is not seen by `writable`
                    // as verified: the piece is checked again once that write is done.
                    if writes.load(Ordering::SeqCst) != before {
                        verified.clear(index.get());
                        continue;
                    }
                }
                let blake3 = (algo == ChecksumAlgo::Blake3)
                    .then(|| digest.as_slice().try_into().ok())
                    .flatten();
                checked.verified.push((index, blake3));
                continue;
            }
            segments.lock().expect("segments lock").invalidate(range);
            let sources = (range.start() / BLOCK..range.end().div_ceil(BLOCK))
                .map(|b| self.writers[b as usize].load(Ordering::Relaxed))
                .filter(|&w| w != UNKNOWN_WRITER)
                .map(|w| w as usize)
                .collect();
            checked.bad.push(BadPiece { index, sources });
        }
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECE: u64 = 4 * BLOCK;

    fn known(content: &[u8]) -> PieceCheck {
        let hashes = content
            .chunks(PIECE as usize)
            .map(|c| blake3::hash(c).as_bytes().to_vec())
            .collect();
        let hashes = PieceHashes {
            algo: ChecksumAlgo::Blake3,
            length: PIECE,
            hashes,
        };
        PieceCheck::new(Expected::Known(hashes), PIECE, content.len() as u64).unwrap()
    }

    fn range(start: u64, end: u64) -> ByteRange {
        ByteRange::new(start, end).unwrap()
    }

    /// A part file holding `content`, every block marked done.
    fn written(dir: &std::path::Path, content: &[u8]) -> (Arc<PartFile>, Mutex<Segments>) {
        let part = PartFile::create(
            &crate::storage::PartLock::acquire(&dir.join("f")).unwrap(),
            Some(content.len() as u64),
        )
        .unwrap();
        part.write_at(content, 0).unwrap();
        let size = content.len() as u64;
        let blocks = size.div_ceil(BLOCK) as u32;
        let mut done = Bitfield::new(blocks);
        (0..blocks).for_each(|b| done.set(b));
        (
            Arc::new(part),
            Mutex::new(Segments::resume(size, BLOCK, done)),
        )
    }

    #[tokio::test]
    async fn verified_pieces_are_left_out_of_every_write() {
        let content: Vec<u8> = (0..3 * PIECE).map(|i| (i % 251) as u8).collect();
        let check = known(&content);
        let dir = tempfile::tempdir().unwrap();
        let (part, segments) = written(dir.path(), &content);
        let checked = check.check(&part, &segments).await.unwrap();
        assert_eq!(checked.verified.len(), 3);
        // A write over pieces 0..3 touches none of them now.
        assert!(check.writable(range(0, 3 * PIECE)).is_empty());
        let fresh = known(&content);
        fresh.verified.lock().unwrap().set(1);
        assert_eq!(
            fresh.writable(range(PIECE / 2, 3 * PIECE)),
            vec![range(PIECE / 2, PIECE), range(2 * PIECE, 3 * PIECE)]
        );
    }

    #[tokio::test]
    async fn blame_names_writers_past_255_and_never_a_previous_run() {
        let content: Vec<u8> = (0..2 * PIECE).map(|i| (i % 7) as u8).collect();
        let check = known(&content);
        let dir = tempfile::tempdir().unwrap();
        let mut bad = content.clone();
        bad[10] ^= 1;
        bad[(PIECE + 10) as usize] ^= 1;
        let (part, segments) = written(dir.path(), &bad);
        // Piece 0 was written by source 300 and a resumed run; piece 1 only by the resumed run.
        check.wrote(range(0, BLOCK), 300);
        let checked = check.check(&part, &segments).await.unwrap();
        let blamed: Vec<(u32, Vec<usize>)> = checked
            .bad
            .iter()
            .map(|b| (b.index.get(), b.sources.iter().copied().collect()))
            .collect();
        assert_eq!(blamed, vec![(0, vec![300]), (1, vec![])]);
    }
}
