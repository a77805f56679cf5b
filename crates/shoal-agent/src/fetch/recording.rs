//! A running fetch's record in the data directory (see `downloads`): written when the
//! fetch begins, kept up to date with the pieces its entry verifies, and removed when it ends,
//! unless it ends because the agent stops, so that the next start resumes it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_core::wire::PackedBits;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::downloads::{Downloads, Held, Part, Record, Wanted};
use super::Want;
use crate::catalog::Entry;

/// The most often the verified pieces are recorded: each time costs a sync of the `.part`
/// (as the engine's own resume state does, at about the same pace). Pieces verified since
/// the last record are checked again after a crash, not lost.
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// The record of one running fetch.
pub(super) struct Recording {
    downloads: Downloads,
    key: String,
    record: Arc<Mutex<Record>>,
    /// The task keeping the verified pieces recorded, once the fetch has an entry.
    follower: Mutex<Option<Follower>>,
}

struct Follower {
    entry: Arc<Entry>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Recording {
    /// Records that `want` is being fetched (checked against `sha256`, when given); a record
    /// already there (a download resumed at start) is kept as it is until the fetch has its
    /// entry again.
    pub(super) async fn begin(
        downloads: &Downloads,
        want: &Want,
        sha256: Option<[u8; 32]>,
    ) -> Self {
        let key = want.key();
        let wanted = Wanted::of(want);
        let (store, name) = (downloads.clone(), key.clone());
        let record = tokio::task::spawn_blocking(move || match store.get(&name) {
            Some(record) if record.want == wanted && record.sha256 == sha256 => record,
            _ => {
                let record = Record {
                    want: wanted,
                    sha256,
                    held: None,
                };
                if let Err(e) = store.save(&name, &record) {
                    warn!("{e}; this download will not be resumed if the agent restarts");
                }
                record
            }
        })
        .await
        .expect("recording does not panic");
        Self {
            downloads: downloads.clone(),
            key,
            record: Arc::new(Mutex::new(record)),
            follower: Mutex::new(None),
        }
    }

    /// Keeps the pieces `entry` verifies recorded, as the entry of this fetch playing `part`.
    pub(super) fn follow(&self, entry: Arc<Entry>, part: Part) {
        self.record.lock().expect("record lock").held = Some(Held {
            content: entry.id(),
            layout: entry.layout(),
            name: entry.name.clone(),
            part,
            verified: PackedBits::of(&entry.have()),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_recorded(
            self.downloads.clone(),
            self.key.clone(),
            self.record.clone(),
            entry.clone(),
            stop.clone(),
        ));
        let previous = self
            .follower
            .lock()
            .expect("follower lock")
            .replace(Follower { entry, stop, task });
        if let Some(previous) = previous {
            previous.stop.cancel();
        }
    }

    /// The pieces the fetch's entry lacks, and how many it has in all, once it has one.
    pub(super) fn missing(&self) -> Option<(u32, u32)> {
        let follower = self.follower.lock().expect("follower lock");
        let entry = &follower.as_ref()?.entry;
        let have = entry.have();
        Some((have.len() - have.count_ones(), have.len()))
    }

    /// Ends the record: kept (with the pieces verified by now) when `keep`, else removed.
    pub(super) async fn end(self, keep: bool) {
        let follower = self.follower.lock().expect("follower lock").take();
        if let Some(follower) = follower {
            follower.stop.cancel();
            let _ = follower.task.await;
            if keep {
                save_verified(&self.downloads, &self.key, &self.record, &follower.entry).await;
            }
        }
        if !keep {
            let downloads = self.downloads.clone();
            let key = self.key.clone();
            let _ = tokio::task::spawn_blocking(move || downloads.remove(&key)).await;
        }
    }
}

/// Records the pieces `entry` verifies as they come, at most every [`RECORD_EVERY`], until
/// `stop`.
async fn keep_recorded(
    downloads: Downloads,
    key: String,
    record: Arc<Mutex<Record>>,
    entry: Arc<Entry>,
    stop: CancellationToken,
) {
    let mut count = entry.watch_count();
    // Bounded by `stop`, which the fetch fires when it ends.
    loop {
        save_verified(&downloads, &key, &record, &entry).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RECORD_EVERY) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = count.changed() => if changed.is_err() { return },
        }
    }
}

/// Syncs `entry`'s file, then records the pieces verified before the sync: a piece the
/// record names is on disk (a verified piece is never written again). A failure is logged:
/// the pieces are checked again after a restart.
async fn save_verified(
    downloads: &Downloads,
    key: &str,
    record: &Mutex<Record>,
    entry: &Arc<Entry>,
) {
    match try_save_verified(downloads, key, record, entry).await {
        Ok(Saved::Recorded) => {}
        Ok(Saved::Ended) => debug!(
            path = %entry.path().display(),
            "not recording the verified pieces: the download's file is gone, it ended"
        ),
        Err(e) => {
            warn!("{e}; pieces verified since the last record are checked again after a restart");
        }
    }
}

/// What [`try_save_verified`] did.
#[derive(Debug, PartialEq, Eq)]
enum Saved {
    /// The record names the pieces verified.
    Recorded,
    /// Nothing: the download's `.part` is gone (moved into place or dropped as the download
    /// ended, which the fetch's end records), or the fetch follows another entry now.
    Ended,
}

async fn try_save_verified(
    downloads: &Downloads,
    key: &str,
    record: &Mutex<Record>,
    entry: &Arc<Entry>,
) -> Result<Saved, String> {
    let verified = entry.have();
    let snapshot = {
        let mut record = record.lock().expect("record lock");
        match &mut record.held {
            Some(held) if held.content == entry.id() => held.verified = PackedBits::of(&verified),
            _ => return Ok(Saved::Ended),
        }
        record.clone()
    };
    let (downloads, key, path) = (downloads.clone(), key.to_string(), entry.path());
    tokio::task::spawn_blocking(move || {
        // The bytes first: the record must never name a piece whose bytes are not durable.
        // (Before the first piece, the engine may not have made the file yet.)
        if verified.count_ones() > 0 {
            match std::fs::File::open(&path).and_then(|file| file.sync_data()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::Ended),
                Err(e) => return Err(format!("cannot sync {}: {e}", path.display())),
            }
        }
        downloads.save(&key, &snapshot).map_err(|e| e.to_string())?;
        Ok(Saved::Recorded)
    })
    .await
    .expect("recording does not panic")
}

#[cfg(test)]
mod tests {
    use shoal_core::{ContentId, Layout};
    use url::Url;

    use super::*;

    fn entry(dir: &std::path::Path) -> Arc<Entry> {
        let part = dir.join("x.part");
        std::fs::write(&part, [0u8; 10]).unwrap();
        let layout = Layout::new(10, 4).unwrap();
        Arc::new(Entry::provisional(
            ContentId::from_bytes([3; 32]),
            layout,
            "x".into(),
            part,
        ))
    }

    #[tokio::test]
    async fn a_part_gone_as_its_download_ends_leaves_the_record_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let downloads = Downloads::open(dir.path()).unwrap();
        let want = Want::Url(Url::parse("http://origin.example/x").unwrap());
        let recording = Recording::begin(&downloads, &want, None).await;
        let entry = entry(dir.path());
        recording.follow(entry.clone(), Part::Follow);
        let record = recording.record.clone();
        recording.end(true).await;
        let before = downloads.get(&want.key()).expect("recorded");
        entry.mark(entry.layout().piece(0).unwrap());
        std::fs::remove_file(entry.path()).unwrap();
        let saved = try_save_verified(&downloads, &want.key(), &record, &entry).await;
        assert_eq!(saved, Ok(Saved::Ended));
        assert_eq!(downloads.get(&want.key()), Some(before));
    }

    #[tokio::test]
    async fn verified_pieces_are_recorded_and_kept_only_when_the_agent_stops() {
        let dir = tempfile::tempdir().unwrap();
        let downloads = Downloads::open(dir.path()).unwrap();
        let want = Want::Url(Url::parse("http://origin.example/x").unwrap());
        for keep in [true, false] {
            let recording = Recording::begin(&downloads, &want, None).await;
            let record = downloads.get(&want.key()).expect("recorded at once");
            assert_eq!(record.want, Wanted::of(&want));
            let entry = entry(dir.path());
            recording.follow(entry.clone(), Part::Follow);
            entry.mark(entry.layout().piece(2).unwrap());
            assert_eq!(recording.missing(), Some((2, 3)));
            recording.end(keep).await;
            let kept = downloads.get(&want.key());
            if keep {
                let held = kept.expect("kept").held.expect("with its entry");
                assert_eq!(held.part, Part::Follow);
                assert_eq!(
                    held.verified
                        .to_bitfield(3)
                        .unwrap()
                        .ones()
                        .collect::<Vec<_>>(),
                    vec![2]
                );
            } else {
                assert_eq!(kept, None);
            }
        }
    }
}
