//! [`Manifest`]: the piece digests of a content, and the canonical encoding that its
//! [`ContentId`] is the hash of.
//!
//! # Canonical encoding
//!
//! ```text
//! b"SHOALMF1"                 8 bytes, format tag and version
//! size                        u64, big-endian, file size in bytes
//! piece_size                  u64, big-endian, a power of two
//! digest[0] .. digest[n-1]    32 bytes each: BLAKE3 of every piece, in order,
//!                             n = ceil(size / piece_size)
//! ```
//!
//! Nothing else is hashed, so two manifests with the same id agree on every byte of the file.
//! On the JSON wire a manifest is `{"size": …, "piece_size": …, "digests": "<hex of all digests
//! concatenated>"}`.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::content::ContentId;
use crate::hex;
use crate::layout::{Layout, LayoutError, PieceIndex};

/// The first 8 bytes of a manifest's canonical encoding: format tag and version, so a future
/// encoding cannot hash to the same id.
pub const MANIFEST_TAG: &[u8; 8] = b"SHOALMF1";

/// BLAKE3 of one piece.
pub type PieceDigest = [u8; 32];

/// Why piece digests and a layout do not make a [`Manifest`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ManifestError {
    /// The size and piece size do not make a layout (piece size not a power of two, file too
    /// large).
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The number of digests does not match the layout's piece count.
    #[error("the layout has {expected} pieces but {actual} digests were given")]
    DigestCount {
        /// Pieces the layout has.
        expected: u64,
        /// Digests given (for the wire form, the hex text's length over 64).
        actual: u64,
    },
    /// The wire's `digests` text is not hex (the decoder's message).
    #[error("digests must be hex of 32 bytes per piece: {0}")]
    DigestText(String),
}

/// A piece did not hash to the digest the manifest holds for it.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "piece {index} has BLAKE3 {} but the manifest says {}",
    hex::encode(actual),
    hex::encode(expected)
)]
pub struct PieceMismatch {
    /// The piece's position in the file, from 0.
    pub index: u32,
    /// The BLAKE3 digest the manifest holds for the piece.
    pub expected: PieceDigest,
    /// The BLAKE3 digest of the bytes received.
    pub actual: PieceDigest,
}

/// The layout of a content and the BLAKE3 digest of each of its pieces. Only
/// [`Manifest::new`] (or deserializing, which calls it) builds one, so the digest count always
/// matches the layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawManifest", into = "RawManifest")]
pub struct Manifest {
    layout: Layout,
    digests: Vec<PieceDigest>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    size: u64,
    piece_size: u64,
    digests: String,
}

impl TryFrom<RawManifest> for Manifest {
    type Error = ManifestError;
    fn try_from(raw: RawManifest) -> Result<Self, Self::Error> {
        let layout = Layout::new(raw.size, raw.piece_size)?;
        let expected = u64::from(layout.piece_count());
        // Checked before decoding so a huge bogus string costs no allocation.
        if raw.digests.len() as u64 != expected * 64 {
            return Err(ManifestError::DigestCount {
                expected,
                actual: raw.digests.len() as u64 / 64,
            });
        }
        let bytes =
            hex::decode(&raw.digests).map_err(|e| ManifestError::DigestText(e.to_string()))?;
        let digests = bytes
            .chunks_exact(32)
            .map(|c| c.try_into().expect("chunks are 32 bytes"))
            .collect();
        Manifest::new(layout, digests)
    }
}

impl From<Manifest> for RawManifest {
    fn from(m: Manifest) -> Self {
        RawManifest {
            size: m.layout.size(),
            piece_size: m.layout.piece_size(),
            digests: hex::encode(m.digests.as_flattened()),
        }
    }
}

impl Manifest {
    /// A manifest of `layout` with one digest per piece, in order; an error when the count differs
    /// from `layout.piece_count()`.
    pub fn new(layout: Layout, digests: Vec<PieceDigest>) -> Result<Self, ManifestError> {
        let expected = u64::from(layout.piece_count());
        if digests.len() as u64 != expected {
            return Err(ManifestError::DigestCount {
                expected,
                actual: digests.len() as u64,
            });
        }
        Ok(Self { layout, digests })
    }

    /// Builds the manifest of bytes held in memory (tests, small files; the agent hashes files
    /// piece by piece with [`digest_piece`] instead).
    pub fn of_bytes(data: &[u8], piece_size: u64) -> Result<Self, ManifestError> {
        let layout = Layout::new(data.len() as u64, piece_size)?;
        let digests = layout
            .pieces()
            .map(|p| {
                let r = layout.range(p);
                digest_piece(&data[r.start() as usize..r.end() as usize])
            })
            .collect();
        Self::new(layout, digests)
    }

    /// The file size and piece size the digests are for.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// One BLAKE3 digest per piece, in piece order.
    pub fn digests(&self) -> &[PieceDigest] {
        &self.digests
    }

    /// The digest the manifest holds for `piece`.
    pub fn digest(&self, piece: PieceIndex) -> &PieceDigest {
        // A PieceIndex of this layout is below piece_count, which equals digests.len().
        &self.digests[piece.get() as usize]
    }

    /// The bytes that [`ContentId`] hashes; see the module documentation.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + 32 * self.digests.len());
        out.extend_from_slice(MANIFEST_TAG);
        out.extend_from_slice(&self.layout.size().to_be_bytes());
        out.extend_from_slice(&self.layout.piece_size().to_be_bytes());
        out.extend_from_slice(self.digests.as_flattened());
        out
    }

    /// The content id naming this manifest: BLAKE3 of [`Manifest::canonical_bytes`].
    pub fn id(&self) -> ContentId {
        ContentId::of_canonical(&self.canonical_bytes())
    }

    /// Checks a piece received from a peer before it is written as done.
    pub fn verify_piece(&self, piece: PieceIndex, data: &[u8]) -> Result<(), PieceMismatch> {
        let expected = *self.digest(piece);
        let actual = digest_piece(data);
        if actual == expected {
            Ok(())
        } else {
            Err(PieceMismatch {
                index: piece.get(),
                expected,
                actual,
            })
        }
    }
}

/// BLAKE3 of one piece's bytes, as a manifest holds it.
pub fn digest_piece(data: &[u8]) -> PieceDigest {
    *blake3::hash(data).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_encoding_is_as_documented() {
        let m = Manifest::of_bytes(b"hello world", 8).unwrap();
        let bytes = m.canonical_bytes();
        assert_eq!(&bytes[..8], b"SHOALMF1");
        assert_eq!(&bytes[8..16], &11u64.to_be_bytes());
        assert_eq!(&bytes[16..24], &8u64.to_be_bytes());
        assert_eq!(&bytes[24..56], blake3::hash(b"hello wo").as_bytes());
        assert_eq!(&bytes[56..], blake3::hash(b"rld").as_bytes());
        assert_eq!(
            m.id(),
            ContentId::from_bytes(*blake3::hash(&bytes).as_bytes())
        );
    }

    #[test]
    fn json_round_trip_and_validation() {
        let m = Manifest::of_bytes(&[7u8; 100], 32).unwrap();
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
        let short = r#"{"size":100,"piece_size":32,"digests":"00"}"#;
        assert!(serde_json::from_str::<Manifest>(short)
            .unwrap_err()
            .to_string()
            .contains("4 pieces but 0 digests"));
        let bad_layout = r#"{"size":100,"piece_size":3,"digests":""}"#;
        assert!(serde_json::from_str::<Manifest>(bad_layout).is_err());
    }

    #[test]
    fn verify_piece_reports_mismatch() {
        let m = Manifest::of_bytes(b"abcdefgh", 4).unwrap();
        let p = m.layout().piece(1).unwrap();
        assert!(m.verify_piece(p, b"efgh").is_ok());
        let err = m.verify_piece(p, b"efgX").unwrap_err();
        assert_eq!(err.index, 1);
    }
}
