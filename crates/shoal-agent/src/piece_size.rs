//! How big a content's pieces are: 256 KiB for files up to 128 MiB, else a power of two from
//! 1 MiB to 16 MiB, chosen so that a file has at most about 2048 pieces (bitfields and
//! manifests stay small).
//!
//! A swarm passes a piece on only once it is whole and verified, so every hop from the leader
//! costs one piece's time at the share of a link each stream gets, a delay that weighs most on
//! a short transfer; while every piece costs a request to a peer and a digest in every
//! answer of the tracker, which a long transfer pays over and over. Measured in
//! bench/RESULTS.md (2026-12-02, night), 6 hosts at 200 Mbit: 128 MiB in 1.17 x the bound
//! with 256 KiB pieces against 1.20-1.21 x with 1 MiB ones; 256 MiB in 1.17 x against
//! 1.14-1.16 x.

/// The piece size of files up to [`SMALL_FILE`].
pub const MIN_PIECE: u64 = 256 << 10;
/// Files up to this size are cut into [`MIN_PIECE`]s: at most 512 of them.
const SMALL_FILE: u64 = 512 * MIN_PIECE;
/// The smallest piece size of larger files.
const USUAL_PIECE: u64 = 1 << 20;
/// The largest piece size, 16 MiB; files over 32 GiB get more than 2048 pieces of it.
pub const MAX_PIECE: u64 = 16 << 20;
/// Above this many pieces the piece size doubles, up to [`MAX_PIECE`].
const TARGET_PIECES: u64 = 2048;

/// The piece size in bytes for a file of `size` bytes: [`MIN_PIECE`] up to [`SMALL_FILE`],
/// else the smallest power of two from 1 MiB up to [`MAX_PIECE`] that cuts it into at most
/// 2048 pieces.
pub fn for_size(size: u64) -> u64 {
    if size <= SMALL_FILE {
        return MIN_PIECE;
    }
    let mut piece = USUAL_PIECE;
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
        assert_eq!(for_size(128 << 20), MIN_PIECE);
        assert_eq!(for_size((128 << 20) + 1), 1 << 20);
        assert_eq!(for_size(2 << 30), 1 << 20);
        assert_eq!(for_size((2 << 30) + 1), 2 << 20);
        assert_eq!(for_size(8 << 30), 4 << 20);
        assert_eq!(for_size(1 << 40), MAX_PIECE);
        for size in [1u64, 1 << 30, 5 << 30, 1 << 36] {
            assert!(for_size(size).is_power_of_two());
        }
    }
}
