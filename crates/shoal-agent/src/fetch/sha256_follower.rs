//! The SHA-256 of a fetch's bytes, hashed in file order as their pieces land, so that checking
//! a content of known digest before it is kept hashes only what had not landed yet, instead
//! of reading the whole file again once it is whole; a reader that streams the content to a
//! client then need not hash it too (see [`crate::ordered`]).
//!
//! It follows what the fetch tells a reader ([`Landing`]): each download's file, and each
//! piece as it is known good. Bytes of a piece known good are never written again, so the
//! hash of the prefix stays the file's. A new download (a takeover continuing a `.part`, or
//! the origin's download starting a file over) starts the hash over.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use shoal_core::{Bitfield, Layout};
use shoal_engine::CancellationToken;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use super::landing::Landing;

/// The most hashed between two looks at the news (and at whether to stop).
const STEP: u64 = 16 << 20;
/// The most read from the file at once.
const READ: u64 = 1 << 20;

/// Hashes one fetch's bytes as they land; see the module's documentation. Stops when dropped.
pub(super) struct Sha256Follower {
    landings: mpsc::UnboundedSender<Landing>,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<Option<Hashed>>>>,
}

/// How far one download's file was hashed.
pub(super) struct Hashed {
    /// Where the download's file is once whole.
    pub(super) path: PathBuf,
    /// The file, open (it stays the same file once moved into place); `None` before the
    /// first byte was hashed.
    pub(super) file: Option<Arc<File>>,
    pub(super) hasher: Sha256,
    /// The bytes before this offset are hashed.
    pub(super) upto: u64,
}

/// The download followed now.
struct Run {
    hashed: Hashed,
    layout: Layout,
    ready: Bitfield,
}

impl Sha256Follower {
    /// Starts following the landings given to [`Sha256Follower::take`].
    pub(super) fn start() -> Self {
        let (landings, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(rx, stop.clone()));
        Self {
            landings,
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    /// Takes in what the fetch tells a reader.
    pub(super) fn take(&self, landing: &Landing) {
        if matches!(
            landing,
            Landing::Started { .. } | Landing::Piece(_) | Landing::Untrusted(_)
        ) {
            let _ = self.landings.send(landing.clone());
        }
    }

    /// Stops following once what landed so far is hashed, and says how far the file of the
    /// download whose file is `path` was hashed, if that is the download followed last;
    /// `None` otherwise, or once asked before.
    pub(super) async fn finish(&self, path: &Path) -> Option<Hashed> {
        self.stop.cancel();
        let task = self.task.lock().expect("task lock").take()?;
        let hashed = task.await.ok().flatten()?;
        if hashed.path == path {
            Some(hashed)
        } else {
            debug!(
                followed = %hashed.path.display(),
                checked = %path.display(),
                "the file checked is not the one hashed as it landed; hashing it whole"
            );
            None
        }
    }
}

impl Drop for Sha256Follower {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Follows `landings` until `stop`, hashing each download's known good prefix.
async fn follow(
    mut landings: mpsc::UnboundedReceiver<Landing>,
    stop: CancellationToken,
) -> Option<Hashed> {
    let mut run: Option<Run> = None;
    // Bounded by `stop`, which the fetch fires as it checks the content or ends.
    loop {
        if run.as_ref().is_some_and(|r| r.ready_end() > r.hashed.upto) {
            if stop.is_cancelled() {
                break;
            }
        } else {
            tokio::select! {
                () = stop.cancelled() => break,
                landing = landings.recv() => match landing {
                    Some(landing) => take(&mut run, landing),
                    None => break,
                },
            }
        }
        while let Ok(landing) = landings.try_recv() {
            take(&mut run, landing);
        }
        if let Some(current) = run.take() {
            run = advance(current).await;
        }
    }
    // What landed before the stop is hashed now: the check reads only the rest.
    while let Ok(landing) = landings.try_recv() {
        take(&mut run, landing);
    }
    while let Some(current) = run.take() {
        let before = current.hashed.upto;
        let done = current.ready_end() <= before;
        run = advance(current).await;
        if done || run.as_ref().is_some_and(|r| r.hashed.upto == before) {
            break;
        }
    }
    run.map(|r| r.hashed)
}

fn take(run: &mut Option<Run>, landing: Landing) {
    match landing {
        Landing::Started { path, layout } => {
            *run = Some(Run {
                hashed: Hashed {
                    path,
                    file: None,
                    hasher: Sha256::new(),
                    upto: 0,
                },
                layout,
                ready: Bitfield::new(layout.piece_count()),
            });
        }
        Landing::Piece(index) => {
            if let Some(run) = run.as_mut().filter(|r| index.get() < r.ready.len()) {
                run.ready.set(index.get());
            }
        }
        // What landed is not the content asked for: nothing of it counts.
        Landing::Untrusted(_) => *run = None,
        Landing::Checking | Landing::Trusted => {}
    }
}

impl Run {
    /// Where the pieces known good from the hashed prefix on end.
    fn ready_end(&self) -> u64 {
        let mut end = self.hashed.upto;
        let mut piece = self.layout.piece_at(end);
        while let Some(index) = piece.filter(|p| self.ready.get(p.get())) {
            end = self.layout.range(index).end();
            piece = self.layout.piece(index.get() + 1);
        }
        end
    }
}

/// Hashes up to [`STEP`] more of `run`'s known good prefix, off the runtime; `None` when its
/// file cannot be read (the check then reads it whole).
async fn advance(mut run: Run) -> Option<Run> {
    let end = run.ready_end().min(run.hashed.upto + STEP);
    if end <= run.hashed.upto {
        return Some(run);
    }
    tokio::task::spawn_blocking(move || {
        let file = match &run.hashed.file {
            Some(file) => file.clone(),
            None => Arc::new(open_part(&run.hashed.path)?),
        };
        hash_into(&file, run.hashed.upto, end, &mut run.hashed.hasher)
            .inspect_err(|e| debug!("cannot read a download's file to hash it: {e}"))
            .ok()?;
        run.hashed.file = Some(file);
        run.hashed.upto = end;
        Some(run)
    })
    .await
    .ok()
    .flatten()
}

/// The file a download writes to `path`: its `.part` while it runs, else the file.
fn open_part(path: &Path) -> Option<File> {
    File::open(shoal_engine::naming::part_path(path))
        .or_else(|_| File::open(path))
        .inspect_err(
            |e| debug!(path = %path.display(), "cannot open a download's file to hash it: {e}"),
        )
        .ok()
}

/// Hashes `file`'s bytes from `from` to `to` into `hasher`. Blocking.
pub(super) fn hash_into(
    file: &File,
    from: u64,
    to: u64,
    hasher: &mut Sha256,
) -> std::io::Result<()> {
    let mut at = from;
    while at < to {
        let len = (to - at).min(READ) as usize;
        hasher.update(&shoal_engine::storage::read_exact_at(file, at, len)?);
        at += len as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 + i / 253) as u8).collect()
    }

    #[tokio::test]
    async fn the_prefix_of_pieces_known_good_is_hashed_as_they_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obj");
        let bytes = data(5 * 1024 + 100);
        std::fs::write(shoal_engine::naming::part_path(&path), &bytes).unwrap();
        let layout = Layout::new(bytes.len() as u64, 1024).unwrap();
        let follower = Sha256Follower::start();
        // A download that was given up first: its pieces do not count.
        follower.take(&Landing::Started {
            path: dir.path().join("other"),
            layout,
        });
        follower.take(&Landing::Piece(layout.piece(0).unwrap()));
        follower.take(&Landing::Started {
            path: path.clone(),
            layout,
        });
        for i in [1, 0, 3] {
            follower.take(&Landing::Piece(layout.piece(i).unwrap()));
        }
        // Moved into place as the download ends.
        std::fs::rename(shoal_engine::naming::part_path(&path), &path).unwrap();
        let mut hashed = follower.finish(&path).await.expect("the download followed");
        assert_eq!(hashed.upto, 2 * 1024, "pieces 0 and 1, not 3 after the gap");
        let file = hashed.file.take().expect("opened");
        hash_into(&file, hashed.upto, bytes.len() as u64, &mut hashed.hasher).unwrap();
        assert_eq!(
            <[u8; 32]>::from(hashed.hasher.finalize()),
            <[u8; 32]>::from(Sha256::digest(&bytes))
        );
        assert!(follower.finish(&path).await.is_none(), "asked once");
    }

    #[tokio::test]
    async fn another_file_or_an_untrusted_download_is_not_taken_for_the_one_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obj");
        std::fs::write(shoal_engine::naming::part_path(&path), data(2048)).unwrap();
        let layout = Layout::new(2048, 1024).unwrap();
        let follower = Sha256Follower::start();
        follower.take(&Landing::Started {
            path: path.clone(),
            layout,
        });
        follower.take(&Landing::Piece(layout.piece(0).unwrap()));
        assert!(follower
            .finish(&dir.path().join("elsewhere"))
            .await
            .is_none());
        let follower = Sha256Follower::start();
        follower.take(&Landing::Started {
            path: path.clone(),
            layout,
        });
        follower.take(&Landing::Piece(layout.piece(0).unwrap()));
        follower.take(&Landing::Untrusted("not the URL's".into()));
        assert!(follower.finish(&path).await.is_none());
    }
}
