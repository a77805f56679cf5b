//! Whole-file checksums, computed by reading the finished `.part` back.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use shoal_core::{checksum::to_hex, ByteRange, ChecksumAlgo};

use crate::digest::Hasher;
use crate::error::DownloadError;

/// The hex digest of the file at `path`. Blocking: call from a blocking thread.
pub(crate) fn hash_file(path: &Path, algo: ChecksumAlgo) -> Result<String, DownloadError> {
    let mut file = File::open(path).map_err(|e| DownloadError::io(path, "open", e))?;
    let mut hasher = Hasher::new(algo);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| DownloadError::io(path, "read", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(to_hex(&hasher.finish()))
}

/// The digest of `range` of `file`, read with positional reads (no shared cursor).
/// Blocking: call from a blocking thread.
pub(crate) fn hash_range(file: &File, range: ByteRange, algo: ChecksumAlgo) -> io::Result<Vec<u8>> {
    let mut hasher = Hasher::new(algo);
    let mut pos = range.start();
    while pos < range.end() {
        let n = ((range.end() - pos) as usize).min(1 << 20);
        hasher.update(&crate::storage::read_exact_at(file, pos, n)?);
        pos += n as u64;
    }
    Ok(hasher.finish())
}

/// The digest of `data`. Blocking for large `data`: call from a blocking thread.
pub(crate) fn hash_bytes(data: &[u8], algo: ChecksumAlgo) -> Vec<u8> {
    let mut hasher = Hasher::new(algo);
    hasher.update(data);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        let cases = [
            (
                ChecksumAlgo::Sha256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                ChecksumAlgo::Sha1,
                "a9993e364706816aba3e25717850c26c9cd0d89d",
            ),
            (ChecksumAlgo::Md5, "900150983cd24fb0d6963f7d28e17f72"),
            (
                ChecksumAlgo::Blake3,
                "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
            ),
        ];
        for (algo, hex) in cases {
            assert_eq!(hash_file(&path, algo).unwrap(), hex, "{algo}");
        }
        assert!(hash_file(&path, ChecksumAlgo::Sha512)
            .unwrap()
            .starts_with("ddaf35a193617aba"));
    }
}
