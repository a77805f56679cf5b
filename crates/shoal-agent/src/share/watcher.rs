//! Noticing changes in the shared directory, so that it is scanned again soon after a burst
//! of changes ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::walk::shared_dir;
use super::ShareError;

/// How long the directory must be quiet after an event before [`Watcher::changed`] resolves,
/// so that a copy in progress or an unpacked archive costs one rescan, not thousands.
pub const QUIET: Duration = Duration::from_millis(300);

/// Watches the shared directory, recursively; see [`watch`].
pub struct Watcher {
    dir: PathBuf,
    events: mpsc::Receiver<()>,
    /// An event arrived and the quiet period has not passed yet; kept across calls so that a
    /// `changed()` dropped by `select!` midway does not lose it.
    burst: bool,
    // Dropping it stops the watch.
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching `dir`. Fails when the directory is missing or the OS refuses (e.g. the
/// inotify watch limit); callers then rely on periodic rescans alone, which they should run
/// anyway (every minute or so) because the OS may drop events under load.
pub fn watch(dir: &Path) -> Result<Watcher, ShareError> {
    let root = shared_dir(dir)?;
    // One slot is enough: a pending signal already means "rescan", more would say nothing new.
    let (tx, events) = mpsc::channel(1);
    let handler = move |event: notify::Result<notify::Event>| {
        // Errors count as changes: an overflowed queue means events were lost.
        if !event.is_ok_and(|e| is_read(&e.kind)) {
            let _ = tx.try_send(());
        }
    };
    let failed = |source| ShareError::Watch {
        dir: dir.to_path_buf(),
        source,
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(failed)?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(failed)?;
    Ok(Watcher {
        dir: dir.to_path_buf(),
        events,
        burst: false,
        _watcher: watcher,
    })
}

/// Opening and reading files, the scan's own included, changes nothing worth a rescan;
/// closing a file written to does.
fn is_read(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}

impl Watcher {
    /// Resolves once something changed in the directory and then [`QUIET`] passed without
    /// further events. Cancel-safe.
    pub async fn changed(&mut self) -> Result<(), ShareError> {
        let stopped = || ShareError::WatchStopped {
            dir: self.dir.clone(),
        };
        if !self.burst {
            self.events.recv().await.ok_or_else(stopped)?;
            self.burst = true;
        }
        loop {
            match tokio::time::timeout(QUIET, self.events.recv()).await {
                Ok(Some(())) => {}
                Ok(None) => return Err(stopped()),
                Err(_) => {
                    self.burst = false;
                    return Ok(());
                }
            }
        }
    }
}
