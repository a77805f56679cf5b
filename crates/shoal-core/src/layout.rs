//! How a file of known size is cut into equal pieces (the last one shorter).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::range::ByteRange;

/// Why a file size and piece size do not make a [`Layout`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    /// The piece size (in bytes, as given) is zero, not a power of two where one is required, or so
    /// small that the file would have more than `u32::MAX` pieces.
    #[error("piece size must be a power of two of at least 1 byte, got {0}")]
    PieceSize(u64),
    /// The file size (bytes, as given) is over 2^63.
    #[error("file size {0} is over the supported maximum of 2^63 bytes")]
    TooLarge(u64),
}

/// A file size and a piece size. Construct with [`Layout::new`], which validates both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawLayout", into = "RawLayout")]
pub struct Layout {
    size: u64,
    piece_size: u64,
}

#[derive(Serialize, Deserialize)]
struct RawLayout {
    size: u64,
    piece_size: u64,
}

impl TryFrom<RawLayout> for Layout {
    type Error = LayoutError;
    fn try_from(raw: RawLayout) -> Result<Self, Self::Error> {
        Layout::new(raw.size, raw.piece_size)
    }
}

impl From<Layout> for RawLayout {
    fn from(layout: Layout) -> Self {
        RawLayout {
            size: layout.size,
            piece_size: layout.piece_size,
        }
    }
}

/// The index of a piece that is known to exist in its [`Layout`]. Only [`Layout::piece`] and
/// [`Layout::pieces`] make one, so holding a `PieceIndex` means the bounds check was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PieceIndex(u32);

impl PieceIndex {
    /// The piece's position in the file, from 0.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for PieceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Sent as the plain number; read back only through a [`Layout`], never deserialized alone.
impl Serialize for PieceIndex {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl Layout {
    /// A layout of `size` bytes in pieces of `piece_size` bytes; the piece size must be a power of
    /// two (swarms and manifests agree on piece boundaries that way) and the file at most 2^63
    /// bytes with at most `u32::MAX` pieces.
    pub fn new(size: u64, piece_size: u64) -> Result<Self, LayoutError> {
        if !piece_size.is_power_of_two() {
            return Err(LayoutError::PieceSize(piece_size));
        }
        Self::for_hashes(size, piece_size)
    }

    /// Like [`Layout::new`] for pieces of any length, as a Metalink's piece hashes may have;
    /// swarms and manifests use [`Layout::new`]'s powers of two.
    pub fn for_hashes(size: u64, piece_size: u64) -> Result<Self, LayoutError> {
        if piece_size == 0 {
            return Err(LayoutError::PieceSize(piece_size));
        }
        if size > 1 << 63 {
            return Err(LayoutError::TooLarge(size));
        }
        // More than u32::MAX pieces cannot be indexed; such a piece size is rejected too.
        if size.div_ceil(piece_size) > u64::from(u32::MAX) {
            return Err(LayoutError::PieceSize(piece_size));
        }
        Ok(Self { size, piece_size })
    }

    /// The file's length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The length of every piece but the last, in bytes.
    pub fn piece_size(&self) -> u64 {
        self.piece_size
    }

    /// The number of pieces, the last one possibly shorter; 0 for an empty file.
    pub fn piece_count(&self) -> u32 {
        // Bounded by the check in `new`.
        self.size.div_ceil(self.piece_size) as u32
    }

    /// The piece with this index, or `None` when the file has no such piece.
    pub fn piece(&self, index: u32) -> Option<PieceIndex> {
        (index < self.piece_count()).then_some(PieceIndex(index))
    }

    /// Every piece of the file, first to last.
    pub fn pieces(&self) -> impl Iterator<Item = PieceIndex> {
        (0..self.piece_count()).map(PieceIndex)
    }

    /// The bytes `piece` covers: `piece_size` bytes, fewer for the last piece.
    pub fn range(&self, piece: PieceIndex) -> ByteRange {
        let start = u64::from(piece.0) * self.piece_size;
        let end = (start + self.piece_size).min(self.size);
        ByteRange::new(start, end).expect("piece start is within the file")
    }

    /// The piece holding byte `offset`, if the offset is inside the file.
    pub fn piece_at(&self, offset: u64) -> Option<PieceIndex> {
        (offset < self.size).then(|| PieceIndex((offset / self.piece_size) as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validates_piece_size() {
        assert_eq!(Layout::new(10, 3), Err(LayoutError::PieceSize(3)));
        assert_eq!(Layout::new(10, 0), Err(LayoutError::PieceSize(0)));
        assert!(Layout::new((1 << 63) + 1, 1 << 20).is_err());
    }

    #[test]
    fn last_piece_is_short() {
        let layout = Layout::new(10, 4).unwrap();
        assert_eq!(layout.piece_count(), 3);
        let last = layout.piece(2).unwrap();
        assert_eq!(layout.range(last), ByteRange::new(8, 10).unwrap());
        assert!(layout.piece(3).is_none());
    }

    #[test]
    fn deserializing_validates() {
        let bad: Result<Layout, _> = serde_json::from_str(r#"{"size":10,"piece_size":3}"#);
        assert!(bad.is_err());
    }

    proptest! {
        #[test]
        fn pieces_partition_the_file(size in 0u64..1 << 34, shift in 18u32..30) {
            let layout = Layout::new(size, 1 << shift).unwrap();
            let mut next = 0;
            for piece in layout.pieces() {
                let range = layout.range(piece);
                prop_assert_eq!(range.start(), next);
                prop_assert!(!range.is_empty());
                next = range.end();
            }
            prop_assert_eq!(next, size);
        }
    }
}
