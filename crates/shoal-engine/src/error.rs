//! Why a download failed, typed so the binary can map each kind to its exit code.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

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
    /// Reading or writing a local file failed (disk full, permission denied, …).
    LocalIo,
    /// The output path exists and overwriting was not asked for.
    OutputExists,
    /// The caller cancelled the download.
    Cancelled,
}

#[derive(Debug, Error)]
pub enum DownloadError {
    #[error("{url}: server answered {status}")]
    HttpStatus { url: String, status: u16 },

    #[error("{url}: {detail} (after {tries} tries)")]
    Network {
        url: String,
        detail: String,
        tries: u32,
    },

    #[error(
        "{path}: checksum mismatch: expected {algo}={expected}, got {algo}={actual}; \
         the download is kept as {part}"
    )]
    ChecksumMismatch {
        path: PathBuf,
        part: PathBuf,
        algo: String,
        expected: String,
        actual: String,
    },

    #[error("{path}: {op}: {source}{hint}", hint = io_hint(source))]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("{path} already exists; choose another name with -o or replace it with --overwrite")]
    OutputExists { path: PathBuf },

    #[error("download cancelled")]
    Cancelled,
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
    pub fn kind(&self) -> ErrorKind {
        match self {
            DownloadError::HttpStatus { .. } => ErrorKind::HttpStatus,
            DownloadError::Network { .. } => ErrorKind::Network,
            DownloadError::ChecksumMismatch { .. } => ErrorKind::Checksum,
            DownloadError::Io { .. } => ErrorKind::LocalIo,
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
}
