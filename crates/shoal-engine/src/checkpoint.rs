//! Recording a segmented download's progress in its resume state while it runs, so that a
//! crash, `kill -9` or power loss costs only the last moments of work.
//!
//! The invariant that makes the state trustworthy is kept in [`Checkpoint::start`]: a block is
//! named done in the state file only after its bytes are durable in `.part`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::warn;

use crate::error::DownloadError;
use crate::options::BLOCK;
use crate::resume::{self, State};
use crate::segments::Segments;
use crate::storage::PartFile;

/// The state is saved at least this often while blocks finish.
const EVERY: Duration = Duration::from_secs(1);
/// Saved sooner once this many blocks per connection finished since the last save: what a
/// crash costs stays near a block or two per connection, however fast the link.
const BLOCKS_PER_CONNECTION: u64 = 1;
/// Data a worker has buffered is written at least this often, so buffers do not hold back
/// blocks from the next checkpoint on slow connections.
pub const FLUSH_AGE: Duration = Duration::from_millis(100);

pub struct Checkpoint {
    part: Arc<PartFile>,
    path: PathBuf,
    /// What every save records; its `done` is replaced by the snapshot of the moment.
    record: State,
    running: Option<JoinHandle<Result<(), DownloadError>>>,
    started_at: Instant,
    /// Done bytes in the last snapshot taken.
    saved_bytes: u64,
}

impl Checkpoint {
    pub fn new(part: Arc<PartFile>, path: PathBuf, record: State) -> Self {
        let saved_bytes = record.done.count_ones() as u64 * BLOCK;
        Self {
            part,
            path,
            record,
            running: None,
            started_at: Instant::now(),
            saved_bytes,
        }
    }

    /// Called on every controller tick: collects a finished save (whose failure ends the
    /// download) and starts the next one when it is due. Never waits for the disk.
    pub async fn tick(
        &mut self,
        segments: &Mutex<Segments>,
        connections: u32,
    ) -> Result<(), DownloadError> {
        if let Some(running) = &self.running {
            if !running.is_finished() {
                return Ok(());
            }
            self.collect().await?;
        }
        let done = segments.lock().expect("segments lock").done_bytes();
        let unsaved = done.saturating_sub(self.saved_bytes);
        let soon = BLOCKS_PER_CONNECTION * BLOCK * u64::from(connections.max(1));
        if unsaved > 0 && (unsaved >= soon || self.started_at.elapsed() >= EVERY) {
            self.start(segments);
        }
        Ok(())
    }

    /// At exit (complete, failed or cancelled, after every worker has written what it holds):
    /// waits for a running save, then saves the final state.
    pub async fn finish(mut self, segments: &Mutex<Segments>) -> Result<(), DownloadError> {
        let earlier = self.collect().await;
        self.start(segments);
        let last = self.collect().await;
        earlier.and(last)
    }

    /// Starts one save on a blocking thread, so connections keep streaming meanwhile.
    fn start(&mut self, segments: &Mutex<Segments>) {
        // Durability order. The snapshot of done blocks is taken BEFORE the part file is
        // synced: every block in it was marked done by `Segments::advance` after its
        // `write_at` returned, so its bytes are in the file before `sync_data` begins and are
        // durable once it returns. Only then is the state naming them written (itself
        // atomically, see `resume::save`). Blocks finished after the snapshot wait for the
        // next save. Syncing first and snapshotting after would name blocks whose bytes
        // may still be only in the page cache.
        let (snapshot, done_bytes) = {
            let segments = segments.lock().expect("segments lock");
            (segments.done().clone(), segments.done_bytes())
        };
        let part = self.part.clone();
        let path = self.path.clone();
        let mut record = self.record.clone();
        record.done = snapshot;
        self.saved_bytes = done_bytes;
        self.started_at = Instant::now();
        self.running = Some(tokio::task::spawn_blocking(move || {
            part.sync()?;
            resume::save(&path, &record).map_err(|e| {
                // The state itself needs a few KiB, and the part whatever is not reserved yet.
                let needed = part.unallocated() + 4096;
                DownloadError::io_space(&path, "save the resume state", e, needed)
            })
        }));
    }

    async fn collect(&mut self) -> Result<(), DownloadError> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        match running.await {
            Ok(result) => result,
            Err(e) => {
                // The previous state file is intact; only this save is lost.
                warn!("saving the resume state panicked: {e}");
                Ok(())
            }
        }
    }
}
