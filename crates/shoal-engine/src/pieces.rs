//! Piece hashes (from a Metalink): every piece is checked as soon as all its bytes are on disk.
//! A piece that does not match is fetched again, and the sources that sent its bytes are not
//! used any more: with several mirrors, one serving other bytes cannot spoil the file.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use shoal_core::{Bitfield, ByteRange};

use crate::metalink::PieceHashes;
use crate::options::BLOCK;
use crate::segments::Segments;
use crate::storage::PartFile;
use crate::verify;

/// Which pieces are verified, and which source wrote each block.
pub struct PieceCheck {
    hashes: PieceHashes,
    size: u64,
    verified: Mutex<Bitfield>,
    /// Source index per block, as last written.
    writers: Vec<AtomicU8>,
}

/// What one round of checking found.
#[derive(Default)]
pub struct Checked {
    /// Pieces that matched, newly.
    pub verified: Vec<u32>,
    pub bad: Vec<BadPiece>,
}

/// A piece whose bytes did not match.
pub struct BadPiece {
    pub index: u32,
    /// Sources that wrote some of its bytes.
    pub sources: BTreeSet<usize>,
}

impl PieceCheck {
    /// `None` when the hashes do not describe a file of `size` bytes.
    pub fn new(hashes: PieceHashes, size: u64) -> Option<Self> {
        let count = size.div_ceil(hashes.length.max(1));
        if hashes.length == 0 || hashes.hashes.len() as u64 != count {
            return None;
        }
        Some(Self {
            verified: Mutex::new(Bitfield::new(count as u32)),
            writers: (0..size.div_ceil(BLOCK))
                .map(|_| AtomicU8::new(0))
                .collect(),
            hashes,
            size,
        })
    }

    pub fn piece_count(&self) -> usize {
        self.hashes.hashes.len()
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

    fn range(&self, index: u32) -> ByteRange {
        let start = u64::from(index) * self.hashes.length;
        ByteRange::new(start, (start + self.hashes.length).min(self.size)).expect("in the file")
    }

    /// Checks every piece whose bytes are all written and that is not verified yet. Bad
    /// pieces are forgotten in `segments`, so they are fetched again. Returns which pieces
    /// matched and which did not.
    pub async fn check(
        &self,
        part: &Arc<PartFile>,
        segments: &Mutex<Segments>,
    ) -> Result<Checked, std::io::Error> {
        let ready: Vec<u32> = {
            let seg = segments.lock().expect("segments lock");
            let verified = self.verified.lock().expect("pieces lock");
            (0..self.piece_count() as u32)
                .filter(|&i| !verified.get(i) && seg.is_done(self.range(i)))
                .collect()
        };
        let mut checked = Checked::default();
        for index in ready {
            let range = self.range(index);
            let (part, algo) = (part.clone(), self.hashes.algo);
            let digest =
                tokio::task::spawn_blocking(move || verify::hash_range(part.file(), range, algo))
                    .await
                    .expect("hashing does not panic")?;
            if digest == self.hashes.hashes[index as usize] {
                self.verified.lock().expect("pieces lock").set(index);
                checked.verified.push(index);
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
