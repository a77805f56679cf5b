//! How big a content's pieces are: a power of two from 1 MiB to 16 MiB, chosen by file size so
//! that a file has at most about 2048 pieces (bitfields and manifests stay small) and small
//! files still have several pieces to fetch from several peers.

/// The smallest piece size, 1 MiB, for files up to 2 GiB.
pub const MIN_PIECE: u64 = 1 << 20;
/// The largest piece size, 16 MiB; files over 32 GiB get more than 2048 pieces of it.
pub const MAX_PIECE: u64 = 16 << 20;
/// Above this many pieces the piece size doubles, up to [`MAX_PIECE`].
const TARGET_PIECES: u64 = 2048;

/// The piece size in bytes for a file of `size` bytes: the smallest power of two from [`MIN_PIECE`]
/// up to [`MAX_PIECE`] that cuts it into at most 2048 pieces.
pub fn for_size(size: u64) -> u64 {
    let mut piece = MIN_PIECE;
    while piece < MAX_PIECE && size.div_ceil(piece) > TARGET_PIECES {
        piece *= 2;
    }
    piece
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_the_file() {
        assert_eq!(for_size(0), MIN_PIECE);
        assert_eq!(for_size(100 << 20), MIN_PIECE);
        assert_eq!(for_size(2 << 30), MIN_PIECE);
        assert_eq!(for_size((2 << 30) + 1), 2 << 20);
        assert_eq!(for_size(1 << 40), MAX_PIECE);
        for size in [1u64, 1 << 30, 5 << 30, 1 << 36] {
            assert!(for_size(size).is_power_of_two());
        }
    }
}
