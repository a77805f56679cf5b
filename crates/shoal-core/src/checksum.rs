//! Whole-file checksum specifications such as `sha256=9f86d0…`. Computing them is the engine's
//! job; this module only parses and compares.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A digest algorithm a whole-file checksum may use; `name` gives the spelling the command line and
/// Metalink use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgo {
    /// SHA-256, 32-byte digest.
    Sha256,
    /// SHA-512, 64-byte digest.
    Sha512,
    /// SHA-1, 20-byte digest.
    Sha1,
    /// MD5, 16-byte digest.
    Md5,
    /// BLAKE3, 32-byte digest.
    Blake3,
}

impl ChecksumAlgo {
    /// Every supported algorithm in the engine's order of preference: of several hashes of one
    /// file (a Metalink's), the first in this list is the one checked.
    pub const ALL: [ChecksumAlgo; 5] = [
        ChecksumAlgo::Sha256,
        ChecksumAlgo::Sha512,
        ChecksumAlgo::Sha1,
        ChecksumAlgo::Md5,
        ChecksumAlgo::Blake3,
    ];

    /// The lower-case name used in `ALGO=HEX` specifications (`sha256`, `blake3`, …).
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgo::Sha256 => "sha256",
            ChecksumAlgo::Sha512 => "sha512",
            ChecksumAlgo::Sha1 => "sha1",
            ChecksumAlgo::Md5 => "md5",
            ChecksumAlgo::Blake3 => "blake3",
        }
    }

    /// The digest length in bytes (not hex digits).
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumAlgo::Sha256 | ChecksumAlgo::Blake3 => 32,
            ChecksumAlgo::Sha512 => 64,
            ChecksumAlgo::Sha1 => 20,
            ChecksumAlgo::Md5 => 16,
        }
    }
}

impl fmt::Display for ChecksumAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an `ALGO=HEX` checksum specification was refused; the message says what form to use.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChecksumParseError {
    /// No `=` between algorithm and digest.
    #[error("expected ALGO=HEX, e.g. sha256=9f86d0…")]
    Shape,
    /// The algorithm name (as given) is not one shoal knows.
    #[error("unknown checksum algorithm {0:?}; use one of sha256, sha512, sha1, md5, blake3")]
    Algo(String),
    /// The digest has the wrong number of hex digits for its algorithm.
    #[error("{algo} digest must be {expected} hex digits, got {actual}")]
    Length {
        /// The algorithm named before the `=`.
        algo: ChecksumAlgo,
        /// Hex digits this algorithm needs (twice its digest length in bytes).
        expected: usize,
        /// Hex digits given, after trimming whitespace.
        actual: usize,
    },
    /// The digest has a character that is not a hex digit.
    #[error("digest is not hexadecimal")]
    Hex,
}

/// An expected digest of the whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    algo: ChecksumAlgo,
    digest: Vec<u8>,
}

impl Checksum {
    /// A checksum from a raw digest; `None` when `digest` is not `algo.digest_len()` bytes long.
    pub fn new(algo: ChecksumAlgo, digest: Vec<u8>) -> Option<Self> {
        (digest.len() == algo.digest_len()).then_some(Self { algo, digest })
    }

    /// The algorithm the digest was made with.
    pub fn algo(&self) -> ChecksumAlgo {
        self.algo
    }

    /// The raw digest bytes (`algo().digest_len()` of them).
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// The digest as lower-case hex, as users write it after `ALGO=`.
    pub fn hex(&self) -> String {
        to_hex(&self.digest)
    }
}

/// Lower-case hex of `bytes`, two digits per byte.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl FromStr for Checksum {
    type Err = ChecksumParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algo, hex) = s.split_once('=').ok_or(ChecksumParseError::Shape)?;
        let algo = match algo.trim().to_ascii_lowercase().replace('-', "").as_str() {
            "sha256" => ChecksumAlgo::Sha256,
            "sha512" => ChecksumAlgo::Sha512,
            "sha1" => ChecksumAlgo::Sha1,
            "md5" => ChecksumAlgo::Md5,
            "blake3" => ChecksumAlgo::Blake3,
            _ => return Err(ChecksumParseError::Algo(algo.to_string())),
        };
        let hex = hex.trim();
        if hex.len() != algo.digest_len() * 2 {
            return Err(ChecksumParseError::Length {
                algo,
                expected: algo.digest_len() * 2,
                actual: hex.len(),
            });
        }
        let digest = from_hex(hex).ok_or(ChecksumParseError::Hex)?;
        Ok(Self { algo, digest })
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.algo, self.hex())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// Digests of consecutive pieces of one file (a Metalink's `<pieces>`, a manifest's BLAKE3s).
pub struct PieceHashes {
    /// How each piece is hashed.
    pub algo: ChecksumAlgo,
    /// Bytes per piece; the last piece may be shorter.
    pub length: u64,
    /// One digest per piece, in file order, each `algo.digest_len()` bytes.
    pub hashes: Vec<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let text = format!("sha256={}", "ab".repeat(32));
        let sum: Checksum = text.parse().unwrap();
        assert_eq!(sum.algo(), ChecksumAlgo::Sha256);
        assert_eq!(sum.to_string(), text);
        let upper: Checksum = format!("SHA-256={}", "AB".repeat(32)).parse().unwrap();
        assert_eq!(upper, sum);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!("sha256".parse::<Checksum>(), Err(ChecksumParseError::Shape));
        assert!(matches!(
            "crc32=00".parse::<Checksum>(),
            Err(ChecksumParseError::Algo(_))
        ));
        assert!(matches!(
            "md5=00".parse::<Checksum>(),
            Err(ChecksumParseError::Length { .. })
        ));
        assert_eq!(
            format!("md5={}", "zz".repeat(16)).parse::<Checksum>(),
            Err(ChecksumParseError::Hex)
        );
    }
}
