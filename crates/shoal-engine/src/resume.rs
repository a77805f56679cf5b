//! The resume state of a download, `NAME.part.shoal` beside `NAME.part`: which blocks of which
//! version of which file are on disk.
//!
//! A small binary record, checksummed as a whole, so that a truncated, overwritten or foreign
//! file is recognized and never trusted:
//!
//! ```text
//! magic "SHOALST\n" | version u32 | body length u32 | body | BLAKE3 of everything before
//! body: URL hash [32] | size u64 | block size u64 | ETag | Last-Modified | blocks u32 | bitfield
//! text fields: present u8 (0 or 1) | length u16 | UTF-8 bytes
//! ```
//!
//! Integers are little-endian. The URL is kept only as the BLAKE3 hash of its redacted form, so
//! the file never holds credentials or even the URL in clear. [`save`] replaces the file
//! atomically (temporary file, fsync, rename, directory fsync): a crash at any moment leaves
//! either the old record or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use shoal_core::Bitfield;
use thiserror::Error;
use url::Url;

use shoal_core::redact::redacted;

const MAGIC: &[u8; 8] = b"SHOALST\n";
/// The state file format this build writes and reads; a file with another is started over.
pub const VERSION: u32 = 1;
const HEADER: usize = MAGIC.len() + 4 + 4;
const CHECKSUM: usize = 32;
/// Longer than any `ETag` or date a server sends; longer ones are not recorded, so resume then
/// falls back to starting over.
const MAX_TEXT: usize = u16::MAX as usize;

/// `big.iso` → `big.iso.part.shoal`.
pub fn state_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part.shoal");
    path.with_file_name(name)
}

/// The identity of a download's URL as stored: BLAKE3 of the redacted URL.
pub fn url_hash(url: &Url) -> [u8; 32] {
    *blake3::hash(redacted(url).as_bytes()).as_bytes()
}

/// What a state file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// BLAKE3 of the download's redacted URL ([`url_hash`]); another URL's state is not used.
    pub url_hash: [u8; 32],
    /// The file's length in bytes as the server said when the `.part` was made.
    pub size: u64,
    /// The block size the bitfield counts in.
    pub block: u64,
    /// The server's `ETag` then, as sent; `None` when it sent none.
    pub etag: Option<String>,
    /// The server's `Last-Modified` then, as sent; `None` when it sent none.
    pub last_modified: Option<String>,
    /// One bit per block; a set bit means the block's bytes were durable in `.part` before
    /// this record was written.
    pub done: Bitfield,
}

/// Why a state file cannot be trusted. Each reads as the end of "the resume state ...".
#[derive(Debug, Error)]
pub enum Damaged {
    /// The file exists but reading it failed.
    #[error("cannot be read: {0}")]
    Unreadable(#[source] io::Error),
    /// The file is shorter than a header and checksum, or than the body it announces.
    #[error("is truncated ({len} bytes)")]
    Truncated {
        /// The file's length in bytes, shorter than its header and checksum.
        len: usize,
    },
    /// The magic bytes are wrong: another program's file.
    #[error("is not a shoal state file")]
    NotAState,
    /// The file is of another format version (the one given) than [`VERSION`].
    #[error("has format version {0}; this shoal reads version {VERSION}")]
    Version(u32),
    /// The BLAKE3 at the end does not match: a torn or edited file.
    #[error("fails its checksum")]
    Checksum,
    /// The fields contradict each other (the message says which), e.g. a bitfield of the wrong
    /// length.
    #[error("is inconsistent: {0}")]
    Invalid(&'static str),
}

/// Reads the state at `path`: `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<State>, Damaged> {
    match fs::read(path) {
        Ok(bytes) => decode(&bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Damaged::Unreadable(e)),
    }
}

/// Replaces the state at `path` atomically: written to `path.tmp`, synced, renamed over
/// `path`, and the directory synced so the rename itself survives a power loss.
pub fn save(path: &Path, state: &State) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(&encode(state))?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        // A half-written temporary file is useless; the previous state is untouched.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(path);
    Ok(())
}

/// Removes the state at `path`, if any.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a rename or removal in `path`'s directory durable. Best effort: some file systems
/// cannot sync a directory, and the data itself is already synced.
pub fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn encode(state: &State) -> Vec<u8> {
    let mut body = Vec::with_capacity(96 + state.done.as_bytes().len());
    body.extend_from_slice(&state.url_hash);
    body.extend_from_slice(&state.size.to_le_bytes());
    body.extend_from_slice(&state.block.to_le_bytes());
    for text in [&state.etag, &state.last_modified] {
        match text.as_deref().filter(|t| t.len() <= MAX_TEXT) {
            Some(t) => {
                body.push(1);
                body.extend_from_slice(&(t.len() as u16).to_le_bytes());
                body.extend_from_slice(t.as_bytes());
            }
            None => body.extend_from_slice(&[0, 0, 0]),
        }
    }
    body.extend_from_slice(&state.done.len().to_le_bytes());
    body.extend_from_slice(state.done.as_bytes());

    let mut out = Vec::with_capacity(HEADER + body.len() + CHECKSUM);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<State, Damaged> {
    let truncated = Damaged::Truncated { len: bytes.len() };
    if bytes.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(bytes) {
            truncated
        } else {
            Damaged::NotAState
        });
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(Damaged::NotAState);
    }
    if bytes.len() < HEADER {
        return Err(truncated);
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(Damaged::Version(version));
    }
    let body_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let total = HEADER + body_len + CHECKSUM;
    if bytes.len() < total {
        return Err(truncated);
    }
    if bytes.len() > total {
        return Err(Damaged::Invalid("bytes after the checksum"));
    }
    let (record, sum) = bytes.split_at(HEADER + body_len);
    if blake3::hash(record).as_bytes() != sum {
        return Err(Damaged::Checksum);
    }
    // The checksum holds, so what follows only fails for a record that shoal never writes.
    let mut body = Reader(&record[HEADER..]);
    let url_hash = body.array::<32>()?;
    let size = u64::from_le_bytes(body.array()?);
    let block = u64::from_le_bytes(body.array()?);
    let etag = body.text()?;
    let last_modified = body.text()?;
    let blocks = u32::from_le_bytes(body.array()?);
    if block == 0 || size.div_ceil(block) != u64::from(blocks) {
        return Err(Damaged::Invalid("block count does not fit the size"));
    }
    let done = Bitfield::from_bytes(blocks, body.take(blocks.div_ceil(8) as usize)?.to_vec())
        .ok_or(Damaged::Invalid("bitfield has stray bits"))?;
    if !body.0.is_empty() {
        return Err(Damaged::Invalid("bytes after the bitfield"));
    }
    Ok(State {
        url_hash,
        size,
        block,
        etag,
        last_modified,
        done,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Damaged> {
        if self.0.len() < n {
            return Err(Damaged::Invalid("record ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Damaged> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn text(&mut self) -> Result<Option<String>, Damaged> {
        let present = self.array::<1>()?[0];
        let len = u16::from_le_bytes(self.array()?) as usize;
        let bytes = self.take(len)?;
        match present {
            0 if len == 0 => Ok(None),
            1 => String::from_utf8(bytes.to_vec())
                .map(Some)
                .map_err(|_| Damaged::Invalid("text field is not UTF-8")),
            _ => Err(Damaged::Invalid("bad text field")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut done = Bitfield::new(19);
        for i in [0, 1, 2, 7, 18] {
            done.set(i);
        }
        State {
            url_hash: url_hash(&Url::parse("http://u:secret@h/f.iso").unwrap()),
            size: 18 * 65536 + 5,
            block: 65536,
            etag: Some("\"abc\"".to_string()),
            last_modified: None,
            done,
        }
    }

    fn saved(state: &State) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir.path().join("f.iso"));
        save(&path, state).unwrap();
        (dir, path)
    }

    #[test]
    fn round_trip_and_names() {
        let state = sample();
        let (dir, path) = saved(&state);
        assert!(path.ends_with("f.iso.part.shoal"));
        assert_eq!(load(&path).unwrap(), Some(state));
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert!(load(&path).unwrap().is_none());
    }

    #[test]
    fn url_is_never_stored_in_clear() {
        let (_dir, path) = saved(&sample());
        let bytes = fs::read(&path).unwrap();
        for needle in [&b"secret"[..], b"f.iso", b"http"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
        let a = url_hash(&Url::parse("http://u:one@h/f").unwrap());
        let b = url_hash(&Url::parse("http://u:two@h/f").unwrap());
        assert_eq!(a, b, "the password is redacted before hashing");
        assert_ne!(a, url_hash(&Url::parse("http://h/g").unwrap()));
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            let err = decode(&bytes[..len]).unwrap_err();
            assert!(matches!(err, Damaged::Truncated { .. }), "{len}: {err}");
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = encode(&sample());
        for i in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[i / 8] ^= 1 << (i % 8);
            assert!(decode(&damaged).is_err(), "bit {i}");
        }
    }

    #[test]
    fn random_bytes_and_foreign_files() {
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert!(matches!(decode(&noise), Err(Damaged::NotAState)));
        assert!(matches!(decode(b"{\"json\": 1}"), Err(Damaged::NotAState)));
        let mut bytes = encode(&sample());
        bytes.push(0);
        assert!(matches!(decode(&bytes), Err(Damaged::Invalid(_))));
    }

    #[test]
    fn wrong_version_is_named() {
        let mut bytes = encode(&sample());
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(err, Damaged::Version(2)));
        assert_eq!(
            err.to_string(),
            "has format version 2; this shoal reads version 1"
        );
    }

    #[test]
    fn checksum_covers_the_body() {
        let mut bytes = encode(&sample());
        let last_body_byte = bytes.len() - CHECKSUM - 1;
        bytes[last_body_byte] ^= 0x01;
        assert!(matches!(decode(&bytes), Err(Damaged::Checksum)));
    }

    #[test]
    fn inconsistent_records_with_valid_checksums_are_rejected() {
        let mut state = sample();
        state.size = 100 * 65536;
        assert!(matches!(decode(&encode(&state)), Err(Damaged::Invalid(_))));
        let mut state = sample();
        state.block = 0;
        assert!(matches!(decode(&encode(&state)), Err(Damaged::Invalid(_))));
    }

    #[test]
    fn unreadable_is_not_absent() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading it fails with something other than
        // "not found".
        let path = dir.path().join("x.part.shoal");
        fs::create_dir(&path).unwrap();
        assert!(matches!(load(&path), Err(Damaged::Unreadable(_))));
    }

    #[test]
    fn failed_save_keeps_the_old_state() {
        let state = sample();
        let (_dir, path) = saved(&state);
        // The temporary name is taken by a directory, so the next save cannot create it.
        let mut tmp = path.as_os_str().to_os_string();
        tmp.push(".tmp");
        fs::create_dir(&tmp).unwrap();
        let mut newer = state.clone();
        newer.done.set(3);
        assert!(save(&path, &newer).is_err());
        assert_eq!(load(&path).unwrap(), Some(state));
    }
}
