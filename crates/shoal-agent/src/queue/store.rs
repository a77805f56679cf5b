//! The queue on disk: `queue.json` in the data directory, every download in queue order with
//! its URIs, options and state, and the options changed at run time. Written whole on every
//! change, through a temporary file that is synced and renamed over the old one, so a crash or
//! a `kill -9` leaves the old queue or the new one, never a mix. Mode 0600: URIs may carry
//! credentials and headers tokens, which a restarted download needs.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Gid, Status};

/// The queue's file in the data directory.
pub(crate) const QUEUE_FILE: &str = "queue.json";

/// What `queue.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Saved {
    /// Options changed at run time with `changeGlobalOption`, as aria2 names them.
    #[serde(default)]
    pub global: Vec<(String, String)>,
    /// Every download: those not stopped in queue order, then the stopped ones in the order
    /// they stopped.
    #[serde(default)]
    pub downloads: Vec<SavedDownload>,
}

/// One download as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedDownload {
    pub gid: Gid,
    /// The URIs as given, mirrors of one file.
    pub uris: Vec<String>,
    /// Its options, as aria2 names them.
    #[serde(default)]
    pub options: Vec<(String, String)>,
    pub status: Status,
    /// The file's length, once known.
    #[serde(default)]
    pub total: Option<u64>,
    /// Bytes done when it was saved.
    #[serde(default)]
    pub done: u64,
    /// Where the file is (or will be).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// aria2's error code and the message, for a download that failed.
    #[serde(default)]
    pub error: Option<(u32, String)>,
}

/// Reads the queue at `path`; an absent file is an empty queue.
pub(crate) fn load(path: &Path) -> io::Result<Saved> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(e),
    }
}

/// Replaces the file at `path` with `bytes`, atomically and durably.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::durable::replace(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_survives_a_write_and_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(QUEUE_FILE);
        assert_eq!(load(&path).unwrap(), Saved::default());
        let saved = Saved {
            global: vec![("max-concurrent-downloads".into(), "2".into())],
            downloads: vec![SavedDownload {
                gid: "00000000000000ab".parse().unwrap(),
                uris: vec!["http://u:p@h/a".into()],
                options: vec![("out".into(), "a.bin".into())],
                status: Status::Paused,
                total: Some(10),
                done: 4,
                path: None,
                error: None,
            }],
        };
        write(&path, &serde_json::to_vec(&saved).unwrap()).unwrap();
        assert_eq!(load(&path).unwrap(), saved);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
