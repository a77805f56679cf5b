//! A digest computed of bytes as they pass: a file read back (`verify`), or a stream's bytes
//! as its reader takes them (`stream`).

use sha2::Digest;
use shoal_core::ChecksumAlgo;

/// A digest being computed of bytes as they pass (a stream's, or a file's read back).
pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub(crate) fn new(algo: ChecksumAlgo) -> Self {
        match algo {
            ChecksumAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            ChecksumAlgo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            ChecksumAlgo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            ChecksumAlgo::Md5 => Hasher::Md5(md5::Md5::new()),
            ChecksumAlgo::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Blake3(h) => h.finalize().as_bytes().to_vec(),
        }
    }
}
