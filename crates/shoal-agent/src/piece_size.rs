//! How big a content's pieces are: a power of two from 256 KiB to 16 MiB, chosen by file size so
//! that a file has at most about 2048 pieces (bitfields and manifests stay small) and small
//! files still have many pieces to fetch from several peers.
//!
//! A swarm passes a piece on only once it is whole and verified, so every hop from the leader
//! costs one piece's time at the share of a link each stream gets (a fifth to a tenth of it):
//! 256 KiB pieces cut that store-and-forward delay to a quarter of 1 MiB pieces' (measured in
//! bench/RESULTS.md, 2026-12-02 night: N = 6 and N = 12 swarms 0.05–0.08 x the bound faster).

/// The smallest piece size, 256 KiB, for files up to 512 MiB.
pub const MIN_PIECE: u64 = 256 << 10;
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
        assert_eq!(for_size(512 << 20), MIN_PIECE);
        assert_eq!(for_size((512 << 20) + 1), 512 << 10);
        assert_eq!(for_size(2 << 30), 1 << 20);
        assert_eq!(for_size(8 << 30), 4 << 20);
        assert_eq!(for_size(1 << 40), MAX_PIECE);
        for size in [1u64, 1 << 30, 5 << 30, 1 << 36] {
            assert!(for_size(size).is_power_of_two());
        }
    }
}
