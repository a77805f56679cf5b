//! Recording a segmented download's progress in its resume state while it runs, so that a
//! crash, `kill -9` or power loss costs only the last moments of work.
//!
//! The invariant that makes the state trustworthy is kept in `Checkpoint::save`: a block is
//! named done in the state file only after its bytes are durable in `.part`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::Bitfield;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::DownloadError;
use crate::options::BLOCK;
use crate::resume::{self, State};
use crate::storage::PartFile;

/// The state is saved at least this often while blocks finish.
const EVERY: Duration = Duration::from_secs(1);
/// Saved sooner once this many blocks per connection finished since the last save: what a
/// crash costs stays near a block or two per connection, however fast the link.
const BLOCKS_PER_CONNECTION: u64 = 1;
/// How often progress is looked at. Servers that pace with bursts (nginx `limit_rate` sends
/// up to a second's worth at once) finish many blocks at a time; a short look-up interval
/// records them before a crash can lose them. A look is a lock and a count: cheap.
const LOOK: Duration = Duration::from_millis(20);
/// Data a worker has buffered is written at least this often, so buffers do not hold back
/// blocks from the next checkpoint on slow connections.
pub(crate) const FLUSH_AGE: Duration = Duration::from_millis(50);

/// What a checkpoint needs from the running transfer.
pub(crate) trait DoneBlocks: Send + Sync + 'static {
    /// The done blocks and their bytes, taken together.
    fn snapshot(&self) -> (Bitfield, u64);
    fn done_bytes(&self) -> u64;
    /// Connections streaming now.
    fn connections(&self) -> u32;
    /// A save failed: the download must stop.
    fn fail(&self, error: DownloadError);
}

pub(crate) struct Checkpoint {
    part: Arc<PartFile>,
    path: PathBuf,
    /// What every save records; its `done` is replaced by the snapshot of the moment.
    record: State,
    saved_at: Instant,
    /// Done bytes in the last snapshot saved.
    saved_bytes: u64,
}

/// A checkpoint saving in the background while the transfer runs.
pub(crate) struct Running {
    stop: CancellationToken,
    task: JoinHandle<Checkpoint>,
}

impl Checkpoint {
    pub(crate) fn new(part: Arc<PartFile>, path: PathBuf, record: State) -> Self {
        let saved_bytes = u64::from(record.done.count_ones()) * BLOCK;
        Self {
            part,
            path,
            record,
            saved_at: Instant::now(),
            saved_bytes,
        }
    }

    /// Saves whenever enough is done, on a task of its own so that neither the connections
    /// nor the controller ever wait for the disk. A failed save stops the download.
    pub(crate) fn start(mut self, transfer: Arc<dyn DoneBlocks>) -> Running {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            // Bounded by the transfer: `Running::finish` stops it.
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => break,
                    _ = tokio::time::sleep(LOOK) => {}
                }
                let unsaved = transfer.done_bytes().saturating_sub(self.saved_bytes);
                let soon = BLOCKS_PER_CONNECTION * BLOCK * u64::from(transfer.connections().max(1));
                if unsaved > 0 && (unsaved >= soon || self.saved_at.elapsed() >= EVERY) {
                    if let Err(error) = self.save(transfer.as_ref()).await {
                        transfer.fail(error);
                        break;
                    }
                }
            }
            self
        });
        Running { stop, task }
    }

    /// Saves the state naming what `transfer` has done, and returns once it is on disk.
    async fn save(&mut self, transfer: &dyn DoneBlocks) -> Result<(), DownloadError> {
        // Durability order. The snapshot of done blocks is taken BEFORE the part file is
        // synced: every block in it was marked done by `Segments::advance` after its
        // `write_at` returned, so its bytes are in the file before `sync_data` begins and are
        // durable once it returns. Only then is the state naming them written (itself
        // atomically, see `resume::save`). Blocks finished after the snapshot wait for the
        // next save. Syncing first and snapshotting after would name blocks whose bytes
        // may still be only in the page cache.
        let (snapshot, done_bytes) = transfer.snapshot();
        let part = self.part.clone();
        let path = self.path.clone();
        let mut record = self.record.clone();
        record.done = snapshot;
        self.saved_at = Instant::now();
        let saved = tokio::task::spawn_blocking(move || {
            part.sync()?;
            resume::save(&path, &record).map_err(|e| {
                // The state itself needs a few KiB, and the part whatever is not reserved yet.
                let needed = part.unallocated() + 4096;
                DownloadError::io_space(&path, "save the resume state", e, needed)
            })
        })
        .await;
        match saved {
            Ok(Ok(())) => {
                self.saved_bytes = done_bytes;
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(panicked) => {
                // The previous state file is intact; only this save is lost.
                warn!("saving the resume state panicked: {panicked}");
                Ok(())
            }
        }
    }
}

impl Running {
    /// At exit (complete, failed or cancelled, after every worker has written what it holds):
    /// stops the background saves and saves the final state.
    pub(crate) async fn finish(self, transfer: &dyn DoneBlocks) -> Result<(), DownloadError> {
        self.stop.cancel();
        let mut checkpoint = match self.task.await {
            Ok(checkpoint) => checkpoint,
            Err(e) => {
                warn!("the resume state task failed: {e}");
                return Ok(());
            }
        };
        checkpoint.save(transfer).await
    }
}
