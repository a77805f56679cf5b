//! Why a download failed, typed so the binary can map each kind to its exit code.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_core::{Bitfield, ByteRange, PieceIndex, SafeUrl};
use thiserror::Error;
use url::Url;

use crate::http::FetchError;

/// What went wrong, at the granularity a user or script acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connections failed (refused, reset, timed out) more often than `--max-tries` allows, or
    /// the server broke the protocol.
    Network,
    /// The server answered with an error status such as 404.
    HttpStatus,
    /// The file does not hash to the expected checksum.
    Checksum,
    /// Reading or writing a local file failed (disk full, permission denied, another download
    /// holds the file, …), the file is larger than the space it may take (`--max-filesize`),
    /// or the output cannot take the stream (its reader went away, or it cannot be streamed).
    LocalIo,
    /// The output path exists and overwriting was not asked for.
    OutputExists,
    /// The caller cancelled the download.
    Cancelled,
}

/// Why a download failed. Every message names the file or URL (credentials redacted) and what to do
/// next; [`DownloadError::kind`] groups the variants for exit codes.
#[derive(Debug, Error)]
pub enum DownloadError {
    /// The server answered an error status: a `4xx` at once, a `5xx`, `408` or `429` once the
    /// tries ran out.
    #[error("{url}: server answered {status}")]
    HttpStatus {
        /// The URL asked, credentials redacted.
        url: SafeUrl,
        /// The HTTP status code, e.g. 404.
        status: u16,
    },

    /// Requests to a URL failed (connect, TLS, reset, stall, a protocol break) as many times as the
    /// tries allow.
    #[error("{url}: {cause} (after {tries} {noun})", noun = if *tries == 1 { "try" } else { "tries" })]
    Network {
        /// The URL asked, credentials redacted.
        url: SafeUrl,
        /// The last failure; its own source chain keeps the transport's cause.
        #[source]
        cause: FetchError,
        /// Requests made before giving up, the last one included.
        tries: u32,
    },

    /// The finished file does not hash to the expected checksum; the bytes stay in the `.part`
    /// file.
    #[error(
        "{path}: checksum mismatch: expected {algo}={expected}, got {algo}={actual}; \
         the download is kept as {part}{served}",
        part = crate::naming::part_path(path).display(),
        served = served_by(sources)
    )]
    ChecksumMismatch {
        /// The output path the file was to take.
        path: PathBuf,
        /// The algorithm's name (`sha256`, …).
        algo: String,
        /// The expected digest, lower-case hex.
        expected: String,
        /// The digest of the bytes received, lower-case hex.
        actual: String,
        /// The URLs (redacted) that sent bytes of the file, when there were several: one of
        /// them served other bytes.
        sources: Box<[SafeUrl]>,
    },

    /// A piece failed its hash and no other source is left to fetch it from; the bytes stay in the
    /// `.part` file.
    #[error(
        "{path}: piece {index} does not match its hash, and {url}, the only source left, \
         sent it; the download is kept as {part}",
        part = crate::naming::part_path(path).display()
    )]
    PieceMismatch {
        /// The output path the file was to take.
        path: PathBuf,
        /// The piece that did not match.
        index: PieceIndex,
        /// The last source that sent it, credentials redacted.
        url: SafeUrl,
    },

    /// A local file operation failed; the message adds a hint for a full disk or a permission
    /// error.
    #[error("{path}: {op}: {source}{hint}", hint = io_hint(source))]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// What was being done, e.g. `create`, `write`, `rename`, `reserve space`.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The file system has no room for the rest of the file (`ENOSPC` or `EDQUOT`); freeing space
    /// and running the same command again continues.
    #[error(
        "{path}: the disk is full: {needed} more needed{free}; free space and run the same \
         command again to continue",
        needed = human(*needed),
        free = available.map(|a| format!(" ({} free)", human(a))).unwrap_or_default()
    )]
    DiskFull {
        /// The file whose write or reservation failed.
        path: PathBuf,
        /// Bytes that must be freed (at least) for the download to go on.
        needed: u64,
        /// Bytes free to unprivileged users on that file system, when known.
        available: Option<u64>,
    },

    /// The file is, or grew, larger than `--max-filesize`; the download stopped.
    #[error(
        "{url}: {what} more than --max-filesize allows ({limit} bytes); stopped",
        what = size.map_or("sent".to_string(), |s| format!("serves {s} bytes,"))
    )]
    TooLarge {
        /// The URL, credentials redacted.
        url: SafeUrl,
        /// The limit (`--max-filesize`), in bytes.
        limit: u64,
        /// The size the server announced, when it did; else it sent more than `limit`.
        size: Option<u64>,
    },

    /// Another shoal process holds the `.part` file's lock.
    #[error(
        "another shoal is writing {part}; wait for it or choose another name with -o",
        part = part.display()
    )]
    Busy {
        /// The `.part` file another download holds locked.
        part: PathBuf,
    },

    /// The output path exists and `--overwrite` was not given.
    #[error("{path} already exists; choose another name with -o or replace it with --overwrite")]
    OutputExists {
        /// The existing file.
        path: PathBuf,
    },

    /// The file changed on the server (`If-Range` failed) while downloading, and again after the
    /// one restart from zero (a swarm download does not restart).
    #[error(
        "{url}: the file changed on the server again while downloading; run the same command \
         later, when it has settled"
    )]
    Changed {
        /// The URL, credentials redacted.
        url: SafeUrl,
    },

    /// No source sent anything for `--max-wait` (or a swarm's idle limit): what is missing is
    /// named, and what arrived is kept for the next run to resume.
    #[error(
        "{url}: no source sent anything for {secs}s, and {missing} still missing{last}; what \
         arrived is kept: run the same command again to resume, or allow a longer --max-wait",
        secs = waited.as_secs(),
        last = last_failure.as_ref().map(|f| format!(" (last failure: {f})")).unwrap_or_default()
    )]
    Unserved {
        /// The file's URL (its origin, in a swarm).
        url: SafeUrl,
        /// What the download lacks.
        missing: Missing,
        /// How long no byte arrived before it gave up (`--max-wait`).
        waited: Duration,
        /// The latest failure of a connection, with its URL, when there was one.
        last_failure: Option<String>,
    },

    /// The caller's cancel token fired; the `.part` and its state stay for a resume.
    #[error("download cancelled")]
    Cancelled,

    /// The reader of a streamed download ([`crate::Output::Stream`]) went away (a closed
    /// pipe, say) before the end; the download stopped.
    #[error(
        "the reader of the stream of {url} went away after {sent} bytes; the download stopped"
    )]
    StreamClosed {
        /// The URL, credentials redacted.
        url: SafeUrl,
        /// Bytes the reader had taken.
        sent: u64,
    },

    /// The bytes of a streamed download do not hash to the expected checksum. They were
    /// already handed to the reader, so the output is wrong and nothing of it is kept.
    #[error(
        "{url}: checksum mismatch: expected {algo}={expected}, got {algo}={actual}; the {sent} \
         bytes already streamed to the output are NOT the expected file: discard them{served}",
        served = served_by(sources)
    )]
    StreamMismatch {
        /// The URL, credentials redacted.
        url: SafeUrl,
        /// The algorithm's name (`sha256`, …).
        algo: String,
        /// The expected digest, lower-case hex.
        expected: String,
        /// The digest of the bytes streamed, lower-case hex.
        actual: String,
        /// Bytes streamed, all of the file.
        sent: u64,
        /// The URLs (redacted) that sent bytes of the file, when there were several.
        sources: Box<[SafeUrl]>,
    },

    /// The download cannot be streamed as asked ([`crate::Output::Stream`]).
    #[error("{url}: {what} cannot be streamed; save it to a file instead (-o PATH)")]
    Unstreamable {
        /// The URL, credentials redacted.
        url: SafeUrl,
        /// What stands in the way, e.g. `a download checked piece by piece`.
        what: &'static str,
    },
}

/// What a download still lacks when it gives up waiting for a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Bytes not written yet.
    pub bytes: u64,
    /// The file's size.
    pub total: u64,
    /// The byte ranges not written yet, in file order.
    pub ranges: Vec<ByteRange>,
    /// The file's piece size when it is fetched in pieces (a swarm): the pieces are named then.
    pub piece_size: Option<u64>,
}

/// How many runs of missing bytes or pieces a message names before it says how many more.
const SHOWN_RUNS: usize = 4;

impl Missing {
    /// What `done` (one bit per [`crate::BLOCK`]) lacks of a file of `size` bytes.
    pub(crate) fn of(done: &Bitfield, size: u64, piece_size: Option<u64>) -> Self {
        let mut ranges: Vec<ByteRange> = Vec::new();
        for block in (0..done.len()).filter(|&b| !done.get(b)) {
            let start = u64::from(block) * crate::BLOCK;
            let end = (start + crate::BLOCK).min(size);
            match ranges.last_mut() {
                Some(last) if last.end() == start => {
                    *last = ByteRange::new(last.start(), end).expect("non-empty");
                }
                _ => ranges.extend(ByteRange::new(start, end)),
            }
        }
        Self {
            bytes: ranges.iter().map(|r| r.len()).sum(),
            total: size,
            ranges,
            piece_size,
        }
    }

    /// The missing pieces as runs of indices, first to last inclusive.
    pub fn pieces(&self) -> Vec<(u64, u64)> {
        let Some(piece) = self.piece_size.filter(|&p| p > 0) else {
            return Vec::new();
        };
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for range in &self.ranges {
            let (first, last) = (range.start() / piece, (range.end() - 1) / piece);
            match runs.last_mut() {
                Some(run) if run.1 + 1 >= first => run.1 = run.1.max(last),
                _ => runs.push((first, last)),
            }
        }
        runs
    }
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let runs: Vec<(u64, u64)> = match self.piece_size {
            Some(_) => self.pieces(),
            None => self
                .ranges
                .iter()
                .map(|r| (r.start(), r.end() - 1))
                .collect(),
        };
        let shown: Vec<String> = runs
            .iter()
            .take(SHOWN_RUNS)
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        let more = match runs.len().saturating_sub(SHOWN_RUNS) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        let what = match self.piece_size {
            Some(piece) => {
                let count: u64 = runs.iter().map(|(a, b)| b - a + 1).sum();
                let pieces = self.total.div_ceil(piece.max(1));
                format!("{count} of {pieces} pieces: ")
            }
            None => "bytes ".to_string(),
        };
        write!(
            f,
            "{} of {} ({what}{}{more})",
            human(self.bytes),
            human(self.total),
            shown.join(", ")
        )
    }
}

fn served_by(sources: &[SafeUrl]) -> String {
    if sources.len() < 2 {
        return String::new();
    }
    format!(
        "; its bytes came from {}, one of which serves a different file",
        sources
            .iter()
            .map(SafeUrl::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn io_hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::ENOSPC) => " (the disk is full: free space and run the same command again)",
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (permission denied: choose a writable place with -o or -d)"
        }
        _ => "",
    }
}

impl DownloadError {
    /// The group this error belongs to, which the binary maps to an exit code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DownloadError::HttpStatus { .. } => ErrorKind::HttpStatus,
            DownloadError::Network { .. }
            | DownloadError::Changed { .. }
            | DownloadError::Unserved { .. } => ErrorKind::Network,
            DownloadError::ChecksumMismatch { .. }
            | DownloadError::PieceMismatch { .. }
            | DownloadError::StreamMismatch { .. } => ErrorKind::Checksum,
            DownloadError::Io { .. }
            | DownloadError::DiskFull { .. }
            | DownloadError::Busy { .. }
            | DownloadError::TooLarge { .. }
            | DownloadError::StreamClosed { .. }
            | DownloadError::Unstreamable { .. } => ErrorKind::LocalIo,
            DownloadError::OutputExists { .. } => ErrorKind::OutputExists,
            DownloadError::Cancelled => ErrorKind::Cancelled,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        DownloadError::Io {
            path: path.into(),
            op,
            source,
        }
    }

    /// Like [`DownloadError::io`], but a full disk (or quota) becomes [`DownloadError::DiskFull`]
    /// saying how much space is `needed`.
    pub(crate) fn io_space(
        path: impl Into<PathBuf>,
        op: &'static str,
        source: io::Error,
        needed: u64,
    ) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => DownloadError::DiskFull {
                available: available_space(&path),
                path,
                needed,
            },
            _ => DownloadError::io(path, op, source),
        }
    }
}

impl DownloadError {
    /// The error a user sees for a request to `url` that failed for good after `tries`.
    pub fn fetch(url: &Url, error: FetchError, tries: u32) -> Self {
        let url = SafeUrl::new(url.clone());
        match error {
            FetchError::Changed => DownloadError::Changed { url },
            FetchError::Status { status, .. } => DownloadError::HttpStatus {
                url,
                status: status.as_u16(),
            },
            cause => DownloadError::Network { url, cause, tries },
        }
    }
}

/// Bytes free to unprivileged users on the file system holding `path` (or its directory).
fn available_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a pointer to writable memory of the right type.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::useless_conversion)] // The field types differ between platforms.
    Some(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

/// `1536` → `1.5 KiB`, for messages.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_names_the_path_and_the_space() {
        let err = DownloadError::io_space(
            "/mnt/x/big.iso.part",
            "reserve space",
            io::Error::from_raw_os_error(libc::ENOSPC),
            3 << 29,
        );
        assert_eq!(err.kind(), ErrorKind::LocalIo);
        let text = err.to_string();
        assert!(
            text.starts_with("/mnt/x/big.iso.part: the disk is full: 1.5 GiB more needed"),
            "{text}"
        );
        assert!(
            text.ends_with("run the same command again to continue"),
            "{text}"
        );
        let other = DownloadError::io_space("x", "write", io::Error::other("boom"), 1);
        assert!(matches!(other, DownloadError::Io { .. }));
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(10), "10 bytes");
    }

    #[test]
    fn what_is_missing_is_named_in_pieces_or_bytes() {
        // 10 blocks, the last one short; blocks 2, 3 and 9 missing.
        let size = 9 * crate::BLOCK + 100;
        let mut done = Bitfield::new(10);
        for b in [0, 1, 4, 5, 6, 7, 8] {
            done.set(b);
        }
        let bytes = Missing::of(&done, size, None);
        assert_eq!(bytes.bytes, 2 * crate::BLOCK + 100);
        assert_eq!(
            bytes.to_string(),
            "128.1 KiB of 576.1 KiB (bytes 131072-262143, 589824-589923)"
        );
        // Pieces of two blocks: pieces 1 and 4 lack bytes.
        let pieces = Missing::of(&done, size, Some(2 * crate::BLOCK));
        assert_eq!(pieces.pieces(), vec![(1, 1), (4, 4)]);
        assert_eq!(
            pieces.to_string(),
            "128.1 KiB of 576.1 KiB (2 of 5 pieces: 1, 4)"
        );
        let err = DownloadError::Unserved {
            url: SafeUrl::new(Url::parse("http://user:secret@127.0.0.1:1/f").unwrap()),
            missing: pieces,
            waited: Duration::from_secs(600),
            last_failure: Some("could not connect".into()),
        };
        assert_eq!(err.kind(), ErrorKind::Network);
        let text = err.to_string();
        assert!(!text.contains("secret"), "{text}");
        assert!(
            text.ends_with(
                "no source sent anything for 600s, and 128.1 KiB of 576.1 KiB (2 of 5 pieces: \
                 1, 4) still missing (last failure: could not connect); what arrived is kept: \
                 run the same command again to resume, or allow a longer --max-wait"
            ),
            "{text}"
        );
    }
}
