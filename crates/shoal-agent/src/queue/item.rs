//! One queued download: what is kept of it ([`Item`], saved in `queue.json`), its progress
//! while it runs ([`Live`]), and the copy the RPC shows ([`Download`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shoal_core::{ContentId, Layout};
use shoal_engine::urllist::EntryOptions;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use url::Url;

use super::store::SavedDownload;
use super::{Gid, Status};
use crate::serve::PieceServer;

/// A running download's progress, updated from the engine's events.
#[derive(Debug, Default)]
pub struct Live {
    pub(super) done: AtomicU64,
    /// `u64::MAX` while unknown.
    pub(super) total: AtomicU64,
    pub(super) speed: AtomicU64,
    pub(super) connections: AtomicU32,
    pub(super) path: Mutex<Option<PathBuf>>,
    /// The content the swarm fetched, once the fetch has it.
    pub(super) swarmed: Mutex<Option<Swarmed>>,
}

/// What a download through the swarm learns of its content: its id (what the piece server
/// counts uploads by), its pieces, and what had been uploaded of it before.
#[derive(Debug, Clone, Copy)]
pub(super) struct Swarmed {
    pub(super) content: ContentId,
    pub(super) layout: Layout,
    /// The content's upload count before the download: for a content the agent held already,
    /// what it had served when the download learned its id.
    pub(super) baseline: u64,
}

impl Live {
    pub(super) fn new() -> Self {
        Self {
            total: AtomicU64::new(u64::MAX),
            ..Self::default()
        }
    }
}

/// A download as the RPC shows it: a copy, taken under the queue's lock.
#[derive(Debug, Clone)]
pub struct Download {
    /// Its id.
    pub gid: Gid,
    /// Its state.
    pub status: Status,
    /// The URIs, mirrors of one file, as given.
    pub uris: Vec<String>,
    /// Its options.
    pub options: EntryOptions,
    /// The directory its file goes to.
    pub dir: PathBuf,
    /// Where its file is (or will be), once known.
    pub path: Option<PathBuf>,
    /// The file's length, once known.
    pub total: Option<u64>,
    /// Bytes done.
    pub done: u64,
    /// Bytes per second now.
    pub speed: u64,
    /// Connections streaming now.
    pub connections: u32,
    /// Bytes of its content served to peers since it was added (through the swarm only).
    pub upload_length: u64,
    /// Bytes a second of its content served to peers now, smoothed.
    pub upload_speed: u64,
    /// The swarm's pieces of its content, when it went through the swarm.
    pub layout: Option<Layout>,
    /// aria2's error code and the message, for a download that failed.
    pub error: Option<(u32, String)>,
}

pub(super) struct Item {
    pub(super) gid: Gid,
    pub(super) uris: Vec<Url>,
    pub(super) options: EntryOptions,
    pub(super) status: Status,
    pub(super) total: Option<u64>,
    pub(super) done: u64,
    pub(super) path: Option<PathBuf>,
    pub(super) error: Option<(u32, String)>,
    /// Its content, once a run through the swarm learned it (not kept in `queue.json`).
    pub(super) swarmed: Option<Swarmed>,
    /// While running: what stops it and its progress.
    pub(super) running: Option<(CancellationToken, Arc<Live>)>,
}

impl Item {
    pub(super) fn saved(&self) -> SavedDownload {
        let (total, done, path) = self.progress();
        SavedDownload {
            gid: self.gid,
            uris: self.uris.iter().map(Url::to_string).collect(),
            options: (self.options.pairs().into_iter())
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            status: self.status,
            total,
            done,
            path,
            error: self.error.clone(),
        }
    }

    /// Total, done and path: the running download's if it runs.
    pub(super) fn progress(&self) -> (Option<u64>, u64, Option<PathBuf>) {
        match &self.running {
            Some((_, live)) => {
                let total = live.total.load(Ordering::Relaxed);
                let path = live.path.lock().expect("live path lock").clone();
                (
                    (total != u64::MAX).then_some(total).or(self.total),
                    live.done.load(Ordering::Relaxed).max(self.done),
                    path.or_else(|| self.path.clone()),
                )
            }
            None => (self.total, self.done, self.path.clone()),
        }
    }

    /// Its content: the running download's if it has learned it.
    fn swarmed(&self) -> Option<Swarmed> {
        let live = (self.running.as_ref())
            .and_then(|(_, live)| *live.swarmed.lock().expect("live swarmed lock"));
        live.or(self.swarmed)
    }
}

/// Copies a running download's progress into its item, which outlives the run.
pub(super) fn keep_progress(item: &mut Item) {
    let (total, done, path) = item.progress();
    item.total = total;
    item.done = done;
    item.path = path;
    item.swarmed = item.swarmed();
}

/// `item` as the RPC shows it; its uploads as `uploads`, the agent's piece server, counts them.
pub(super) fn shown(dir: &Path, item: &Item, uploads: Option<&PieceServer>) -> Download {
    let (total, done, path) = item.progress();
    let swarmed = item.swarmed();
    let (upload_length, upload_speed) = swarmed
        .zip(uploads)
        .and_then(|(s, server)| {
            let (sent, speed) = server.uploaded(&s.content)?;
            Some((sent.saturating_sub(s.baseline), speed))
        })
        .unwrap_or((0, 0));
    let (speed, connections) = match &item.running {
        Some((_, live)) => (
            live.speed.load(Ordering::Relaxed),
            live.connections.load(Ordering::Relaxed),
        ),
        None => (0, 0),
    };
    Download {
        gid: item.gid,
        status: item.status,
        uris: item.uris.iter().map(Url::to_string).collect(),
        options: item.options.clone(),
        dir: item
            .options
            .dir
            .clone()
            .unwrap_or_else(|| dir.to_path_buf()),
        path,
        total,
        done,
        speed,
        connections,
        upload_length,
        upload_speed,
        layout: swarmed.map(|s| s.layout),
        error: item.error.clone(),
    }
}

/// A saved download back as an item; a download that was active waits to start again.
pub(super) fn restored(saved: SavedDownload) -> Option<Item> {
    let uris: Vec<Url> = saved
        .uris
        .iter()
        .filter_map(|u| Url::parse(u).ok())
        .collect();
    if uris.is_empty() {
        warn!(gid = %saved.gid, "dropping a saved download without a valid URI");
        return None;
    }
    let mut options = EntryOptions::default();
    for (key, value) in &saved.options {
        if let Err(e) = options.set(key, value) {
            warn!(gid = %saved.gid, "ignoring its saved option {e}");
        }
    }
    let status = match saved.status {
        Status::Active => Status::Waiting,
        other => other,
    };
    Some(Item {
        gid: saved.gid,
        uris,
        options,
        status,
        total: saved.total,
        done: saved.done,
        path: saved.path,
        error: saved.error,
        swarmed: None,
        running: None,
    })
}
