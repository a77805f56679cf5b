//! Piece digests: every piece is checked as soon as all its bytes are on disk and no write into
//! it is in flight. A piece that does not match is fetched again, and the source that sent its
//! bytes is not used any more; when several did, each is asked for the piece alone and only
//! those whose bytes are wrong are dropped (`transfer::blame`). With several mirrors or peers,
//! one serving other bytes cannot spoil the file, nor get an honest one dropped with it.
//!
//! The digests come from a Metalink or a manifest (all known up front), from a swarm's leader
//! (published while it fetches: a piece waits until its digest is known, unless a trusted
//! source, the origin of a member that took over the lead, wrote it whole: then it is learned;
//! a leader fetches again from its origin a piece a previous run wrote whose digest is not
//! published, since nobody else will publish it), or are learned: the download is the one
//! fetching from the origin, and reports each piece's BLAKE3 for others.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Which pieces are verified, and which sources wrote each piece.
///
/// A verified piece is never written again: [`PieceCheck::writable`] leaves it out of every
/// write. Writes and checks race (two connections may hold the same range at the end, or a
/// range given back is fetched again by another source), so each piece counts the writes
/// begun into it and the writes ended: a piece is hashed only while no write into it is in
/// flight, and the check counts only if no write began by the time the piece is marked
/// verified. So the digest is always that of the bytes on disk after the piece's last write,
/// whoever wrote them; otherwise the piece is checked again once the write is done.
pub(crate) struct PieceCheck {
    expected: Expected,
    layout: Layout,
    verified: Mutex<Bitfield>,
    /// Who wrote each piece since its bytes were last found bad (or this run started). A
    /// leaf lock, taken alone.
    writers: Mutex<Vec<Writers>>,
    /// Writes begun per piece.
    begun: Vec<AtomicU64>,
    /// Writes ended per piece; equal to `begun` while none is in flight.
    ended: Vec<AtomicU64>,
    /// This download leads its swarm: nobody else will publish a digest it did not learn,
    /// so bytes of a previous run whose digest is not published are fetched again from its
    /// trusted origin instead of waiting for one.
    leads: bool,
}

/// Who wrote a piece's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Writers {
    /// Sources (by index) that wrote some of its bytes in this run.
    pub sources: BTreeSet<usize>,
    /// Some of its bytes were written by a previous run, before a resume, by sources not
    /// known now.
    pub earlier: bool,
}

impl Writers {
    /// The one source that wrote every byte, when there is one: it alone can be blamed for
    /// bytes that do not match. With several, any one of them may be the liar.
    pub(crate) fn sole(&self) -> Option<usize> {
        match (self.earlier, self.sources.len()) {
            (false, 1) => self.sources.first().copied(),
            _ => None,
        }
    }
}

/// A write in progress into the pieces a range touches (see [`PieceCheck::writable`]): until
/// it is dropped, none of them is checked.
pub(crate) struct Writing<'a> {
    check: &'a PieceCheck,
    pieces: std::ops::RangeInclusive<u32>,
    parts: Vec<ByteRange>,
}

impl Writing<'_> {
    /// The parts of the range that may be written: all of it but the pieces already verified.
    pub(crate) fn parts(&self) -> &[ByteRange] {
        &self.parts
    }

    /// Notes that `source` wrote `part`, one of [`Writing::parts`].
    pub(crate) fn wrote(&self, part: ByteRange, source: usize) {
        let first = self.check.piece_index(part.start());
        let last = self.check.piece_index(part.end() - 1);
        let mut writers = self.check.writers.lock().expect("writers lock");
        for i in first..=last {
            writers[i as usize].sources.insert(source);
        }
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        for i in self.pieces.clone() {
            self.check.ended[i as usize].fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// What one round of checking found.
#[derive(Default)]
pub(crate) struct Checked {
    /// Pieces that matched (or were hashed, when learning), newly, with their BLAKE3 when it
    /// was learned rather than checked.
    pub verified: Vec<(PieceIndex, Option<PieceDigest>)>,
    pub bad: Vec<BadPiece>,
    /// Pieces a previous run wrote that a leader fetches again, their digests unpublished.
    pub unvouched: Vec<PieceIndex>,
}

/// A piece whose bytes did not match.
pub(crate) struct BadPiece {
    pub index: PieceIndex,
    /// Its bytes in the file.
    pub range: ByteRange,
    /// Who wrote the bytes that did not match.
    pub writers: Writers,
}

impl PieceCheck {
    /// `None` when known digests do not describe a file of `size` bytes in pieces of
    /// `length`. `done` names the blocks a previous run wrote, whose writers are not known;
    /// `leads`: the download leads its swarm (see [`PieceCheck`]'s field).
    pub(crate) fn new(
        expected: Expected,
        length: u64,
        size: u64,
        done: &Bitfield,
        leads: bool,
    ) -> Option<Self> {
        let layout = Layout::for_hashes(size, length).ok()?;
        let count = layout.piece_count() as usize;
        let fits = match &expected {
            Expected::Known(hashes) => hashes.length == length && hashes.hashes.len() == count,
            Expected::Published(digests) => digests.known.borrow().len() == count,
            Expected::Learned => true,
        };
        let mut writers = vec![Writers::default(); count];
        for block in (0..done.len()).filter(|&b| done.get(b)) {
            let piece = layout.piece_at(u64::from(block) * BLOCK)?;
            writers[piece.get() as usize].earlier = true;
        }
        fits.then(|| Self {
            verified: Mutex::new(Bitfield::new(layout.piece_count())),
            writers: Mutex::new(writers),
            begun: (0..count).map(|_| AtomicU64::new(0)).collect(),
            ended: (0..count).map(|_| AtomicU64::new(0)).collect(),
            leads,
            expected,
            layout,
        })
    }

    /// The size of every piece but the last.
    pub(crate) fn piece_size(&self) -> u64 {
        self.layout.piece_size()
    }

    /// Which pieces are verified now.
    pub(crate) fn verified(&self) -> Bitfield {
        self.verified.lock().expect("pieces lock").clone()
    }

    pub(crate) fn all_verified(&self) -> bool {
        self.verified.lock().expect("pieces lock").is_full()
    }

    fn piece_index(&self, offset: u64) -> u32 {
        self.layout
            .piece_at(offset)
            .expect("a write inside the file")
            .get()
    }

    /// Begins a write of `range`: counts it begun on every piece it touches first, so that a
    /// check racing it does not count (see [`PieceCheck`]), then leaves out the pieces already
    /// verified. The write ends when the returned [`Writing`] is dropped.
    pub(crate) fn writable(&self, range: ByteRange) -> Writing<'_> {
        let first = self.piece_index(range.start());
        let last = self.piece_index(range.end() - 1);
        for i in first..=last {
            self.begun[i as usize].fetch_add(1, Ordering::SeqCst);
        }
        let mut writing = Writing {
            check: self,
            pieces: first..=last,
            parts: Vec::new(),
        };
        let verified = self.verified.lock().expect("pieces lock");
        for i in first..=last {
            if verified.get(i) {
                continue;
            }
            let piece = self
                .layout
                .range(self.layout.piece(i).expect("in the layout"));
            let start = piece.start().max(range.start());
            let end = piece.end().min(range.end());
            match writing.parts.last_mut() {
                Some(prev) if prev.end() == start => {
                    *prev = ByteRange::new(prev.start(), end).expect("start < end");
                }
                _ => writing
                    .parts
                    .push(ByteRange::new(start, end).expect("start < end")),
            }
        }
        writing
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

    /// Which pieces have no published digest yet, by index, in a swarm still learning them;
    /// `None` when every digest is known up front.
    pub(crate) fn unpublished(&self) -> Option<Vec<bool>> {
        match &self.expected {
            Expected::Published(d) => Some(d.known.borrow().iter().map(Option::is_none).collect()),
            Expected::Known(_) | Expected::Learned => None,
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
    /// wait, `Some(None)` when the digest is to be learned. `trusted`: whether trusted sources
    /// alone wrote the piece, in this run.
    fn expected(
        &self,
        index: PieceIndex,
        trusted: bool,
    ) -> Option<(ChecksumAlgo, Option<Vec<u8>>)> {
        let i = index.get() as usize;
        match &self.expected {
            Expected::Known(h) => Some((h.algo, Some(h.hashes[i].clone()))),
            Expected::Published(d) => match d.known.borrow()[i] {
                Some(digest) => Some((ChecksumAlgo::Blake3, Some(digest.to_vec()))),
                None if trusted => Some((ChecksumAlgo::Blake3, None)),
                None => {
                    d.wanted.notify_one();
                    None
                }
            },
            Expected::Learned => Some((ChecksumAlgo::Blake3, None)),
        }
    }

    /// Forgets piece `index`'s bytes, so they are fetched again, when a previous run wrote
    /// some of them and no write into it is in flight: a leader's piece whose digest was
    /// never published (its run stopped between writing the bytes and learning their
    /// digest) can be vouched for by no one else. Whether it did.
    fn refetch_unvouched(&self, index: PieceIndex, segments: &Mutex<Segments>) -> bool {
        let i = index.get() as usize;
        let mut writers = self.writers.lock().expect("writers lock");
        let idle = self.ended[i].load(Ordering::SeqCst) == self.begun[i].load(Ordering::SeqCst);
        if !(writers[i].earlier && idle) {
            return false;
        }
        writers[i] = Writers::default();
        drop(writers);
        segments
            .lock()
            .expect("segments lock")
            .invalidate(self.layout.range(index));
        true
    }

    /// Whether sources that `trusted` says are trusted wrote every byte of piece `index` in
    /// this run (bytes of a previous run count as untrusted).
    fn written_by_trusted(
        &self,
        index: PieceIndex,
        trusted: &(dyn Fn(usize) -> bool + Sync),
    ) -> bool {
        // Copied out: `trusted` looks at the sources, and the writers lock is a leaf.
        let piece = self.writers.lock().expect("writers lock")[index.get() as usize].clone();
        !piece.earlier && !piece.sources.is_empty() && piece.sources.iter().all(|&s| trusted(s))
    }

    /// Whether `data` are the bytes piece `index` must have; `None` when its digest is not
    /// known (not published yet, or learned). Blocking: hashes a whole piece.
    pub(crate) fn matches(&self, index: PieceIndex, data: &[u8]) -> Option<bool> {
        let (algo, expected) = self.expected(index, false)?;
        Some(verify::hash_bytes(data, algo) == expected?)
    }

    /// Checks every piece whose bytes are all written, that is not verified yet, that no
    /// write is in flight into, and whose digest is known (or, with published digests, that
    /// sources `trusted` says are trusted wrote whole: its digest is learned). Bad pieces are
    /// forgotten in `segments`, so they are fetched again, and so are their writers. Returns
    /// which pieces matched and which did not.
    pub(crate) async fn check(
        &self,
        part: &Arc<PartFile>,
        segments: &Mutex<Segments>,
        trusted: &(dyn Fn(usize) -> bool + Sync),
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
            let from_trusted = self.written_by_trusted(index, trusted);
            let range = self.layout.range(index);
            let i = index.get() as usize;
            let Some((algo, expected)) = self.expected(index, from_trusted) else {
                if self.leads && self.refetch_unvouched(index, segments) {
                    checked.unvouched.push(index);
                }
                continue;
            };
            // Ended before begun: equal, no write was in flight when `ended` was read, and
            // none began before `begun` was (see [`PieceCheck`]).
            let ended = self.ended[i].load(Ordering::SeqCst);
            let before = self.begun[i].load(Ordering::SeqCst);
            if ended != before {
                // Checked once that write is done, and woken by it.
                continue;
            }
            let part = part.clone();
            let digest =
                tokio::task::spawn_blocking(move || verify::hash_range(part.file(), range, algo))
                    .await
                    .expect("hashing does not panic")?;
            if self.begun[i].load(Ordering::SeqCst) != before {
                // Written while hashed: the digest says nothing of what is there now.
                continue;
            }
            let learned = expected.is_none();
            if expected.is_none_or(|e| e == digest) {
                {
                    let mut verified = self.verified.lock().expect("pieces lock");
                    verified.set(index.get());
                    // A write that began before it was marked is not seen by `writable`
                    // as verified: the piece is checked again once that write is done.
                    if self.begun[i].load(Ordering::SeqCst) != before {
                        verified.clear(index.get());
                        continue;
                    }
                }
                let blake3 = learned.then(|| digest.as_slice().try_into().ok()).flatten();
                checked.verified.push((index, blake3));
                continue;
            }
            segments.lock().expect("segments lock").invalidate(range);
            let writers = std::mem::take(&mut self.writers.lock().expect("writers lock")[i]);
            checked.bad.push(BadPiece {
                index,
                range,
                writers,
            });
        }
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECE: u64 = 4 * BLOCK;

    /// A check of `content`'s pieces; `resumed` names the blocks a previous run wrote.
    fn known_resumed(content: &[u8], resumed: &[u32]) -> PieceCheck {
        let hashes = content
            .chunks(PIECE as usize)
            .map(|c| blake3::hash(c).as_bytes().to_vec())
            .collect();
        let hashes = PieceHashes {
            algo: ChecksumAlgo::Blake3,
            length: PIECE,
            hashes,
        };
        let size = content.len() as u64;
        let mut done = Bitfield::new(size.div_ceil(BLOCK) as u32);
        resumed.iter().for_each(|&b| done.set(b));
        PieceCheck::new(Expected::Known(hashes), PIECE, size, &done, false).unwrap()
    }

    fn known(content: &[u8]) -> PieceCheck {
        known_resumed(content, &[])
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
        let checked = check.check(&part, &segments, &|_| false).await.unwrap();
        assert_eq!(checked.verified.len(), 3);
        // A write over pieces 0..3 touches none of them now.
        assert!(check.writable(range(0, 3 * PIECE)).parts().is_empty());
        let fresh = known(&content);
        fresh.verified.lock().unwrap().set(1);
        assert_eq!(
            fresh.writable(range(PIECE / 2, 3 * PIECE)).parts(),
            [range(PIECE / 2, PIECE), range(2 * PIECE, 3 * PIECE)]
        );
    }

    /// Bytes that land after a piece was hashed must not ride on its verdict: while a write
    /// into a piece is in flight (begun before the check, ended after it), the piece is not
    /// checked; once it ends, it is hashed as it is then.
    #[tokio::test]
    async fn a_piece_is_checked_only_after_its_last_write() {
        let content: Vec<u8> = (0..2 * PIECE).map(|i| (i % 13) as u8).collect();
        let check = known(&content);
        let dir = tempfile::tempdir().unwrap();
        let (part, segments) = written(dir.path(), &content);
        // A twin's write into piece 0 has begun: its bytes are not on disk yet.
        let writing = check.writable(range(BLOCK, 2 * BLOCK));
        let checked = check.check(&part, &segments, &|_| false).await.unwrap();
        let verified: Vec<u32> = checked.verified.iter().map(|(i, _)| i.get()).collect();
        assert_eq!(verified, [1], "piece 0 must wait for the write in flight");
        // The write lands wrong bytes; only now is piece 0 hashed, and found bad.
        part.write_at(&[0xee; BLOCK as usize], BLOCK).unwrap();
        writing.wrote(range(BLOCK, 2 * BLOCK), 4);
        drop(writing);
        let checked = check.check(&part, &segments, &|_| false).await.unwrap();
        assert!(checked.verified.is_empty());
        let bad: Vec<u32> = checked.bad.iter().map(|b| b.index.get()).collect();
        assert_eq!(bad, [0]);
        assert_eq!(checked.bad[0].writers.sole(), Some(4));
    }

    #[tokio::test]
    async fn writers_are_named_past_255_sources_and_after_a_resume() {
        let content: Vec<u8> = (0..4 * PIECE).map(|i| (i % 7) as u8).collect();
        let blocks_of = |piece: u32| (piece * 4..piece * 4 + 4).collect::<Vec<u32>>();
        // Pieces 1 and 3 hold bytes of a previous run.
        let resumed: Vec<u32> = [blocks_of(1), vec![blocks_of(3)[2]]].concat();
        let check = known_resumed(&content, &resumed);
        let dir = tempfile::tempdir().unwrap();
        let mut bad = content.clone();
        for piece in 0..4 {
            bad[(piece * PIECE + 10) as usize] ^= 1;
        }
        let (part, segments) = written(dir.path(), &bad);
        let write = |at: ByteRange, source: usize| {
            let writing = check.writable(at);
            writing.wrote(at, source);
        };
        // Piece 0: two writers of this run (an endgame race, a range given back).
        write(range(0, BLOCK), 300);
        write(range(BLOCK / 2, PIECE), 7);
        // Piece 2: one writer only, number 70000.
        write(range(2 * PIECE, 3 * PIECE), 70_000);
        // Piece 3: a writer of this run beside a block of the previous run.
        write(range(3 * PIECE, 3 * PIECE + BLOCK), 5);
        let checked = check.check(&part, &segments, &|_| false).await.unwrap();
        let blamed: Vec<(u32, Vec<usize>, bool, Option<usize>)> = checked
            .bad
            .iter()
            .map(|b| {
                let w = &b.writers;
                let sources = w.sources.iter().copied().collect();
                (b.index.get(), sources, w.earlier, w.sole())
            })
            .collect();
        assert_eq!(
            blamed,
            vec![
                (0, vec![7, 300], false, None),
                (1, vec![], true, None),
                (2, vec![70_000], false, Some(70_000)),
                (3, vec![5], true, None),
            ]
        );
        // Found bad, the pieces are fetched again: their writers are forgotten with them.
        write(range(3 * PIECE, 4 * PIECE), 9);
        let w = check.writers.lock().unwrap()[3].clone();
        assert_eq!(w.sole(), Some(9));
    }
}
