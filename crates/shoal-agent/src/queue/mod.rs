//! The agent's download queue, as an aria2 daemon keeps one: downloads added by the RPC (or an
//! input file) wait in order, up to `--max-concurrent-downloads` run at once, and each is
//! `active`, `waiting`, `paused`, or stopped as `complete`, `error` or `removed`.
//!
//! The queue is always persisted (`store`): every change is written to `queue.json` in the
//! data directory before the call that made it returns. A restarted agent (after a clean stop
//! or a `kill -9`) finds every download where it was: those that were active start again and
//! the engine continues their `.part` files; paused ones stay paused.
//!
//! A download runs through `run`: on the engine directly, or through the swarm when the agent
//! has a tracker. Its progress is kept in a [`Live`] the RPC reads without taking the queue's
//! lock for long; state changes go out as [`Notice`]s (aria2's WebSocket notifications).
//!
//! The parts: `gid` (aria2's ids), `states` (statuses and notices), `item` (one download, as
//! kept and as shown), `order` (the waiting list's paging and positions), `global` (the
//! options changed at run time), `store` (`queue.json`) and `run`.

mod gid;
mod global;
mod item;
mod order;
mod run;
mod states;
mod store;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use shoal_engine::urllist::{self, EntryOptions};
use thiserror::Error;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use url::Url;

pub use self::gid::{BadGid, Gid};
pub use self::global::check_global;
use self::global::{apply_global, global_pairs};
use self::item::{keep_progress, restored, shown, Item};
pub use self::item::{Download, Live};
use self::order::{waiting_gids, waiting_index, window};
pub use self::run::{Caps, Via};
pub use self::states::{Notice, NoticeKind, Status};
use self::store::{Saved, QUEUE_FILE};
use crate::serve::PieceServer;

tokio::task_local! {
    /// Set while the calls of one batch run: their changes are written once, at its end.
    static DEFERRED: ();
}

/// Why a queue operation was refused; the messages are aria2's where aria2 has one.
#[derive(Debug, Error)]
pub enum QueueError {
    /// No download has this gid.
    #[error("GID {0} is not found")]
    NotFound(Gid),
    /// The operation does not apply to the download's state (e.g. unpausing an active one).
    #[error("GID {gid} cannot be {action}: it is {status}")]
    State {
        /// The download.
        gid: Gid,
        /// What was asked, e.g. `paused`.
        action: &'static str,
        /// Its state, aria2's name.
        status: &'static str,
    },
    /// `queue.json` could not be read or written.
    #[error("{action} the queue {}: {source}; check the data directory", path.display())]
    Store {
        /// `reading` or `writing`.
        action: &'static str,
        /// The queue's file.
        path: PathBuf,
        /// The operating system's or the parser's error.
        #[source]
        source: std::io::Error,
    },
}

/// How the queue starts.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// The data directory: `queue.json` lives there.
    pub data: PathBuf,
    /// Where files go unless a download's `dir` says otherwise.
    pub dir: PathBuf,
    /// Downloads running at once (`--max-concurrent-downloads`).
    pub max_concurrent: usize,
}

/// Totals across the queue, for `getGlobalStat`.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Bytes per second over every active download.
    pub download_speed: u64,
    /// Bytes per second the agent's piece server sends to peers (0 without one).
    pub upload_speed: u64,
    /// Active downloads.
    pub active: usize,
    /// Waiting and paused downloads.
    pub waiting: usize,
    /// Stopped downloads still listed.
    pub stopped: usize,
}

/// Where `changePosition` counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whence {
    /// The start of the waiting list (`POS_SET`).
    Start,
    /// The download's own place (`POS_CUR`).
    Current,
    /// The end of the waiting list (`POS_END`).
    End,
}

struct State {
    /// Downloads not stopped, in queue order (active ones first, as they started).
    order: Vec<Gid>,
    /// Stopped downloads, in the order they stopped.
    stopped: Vec<Gid>,
    items: HashMap<Gid, Item>,
    max_concurrent: usize,
    dir: PathBuf,
    /// Bumped on every change; what the writer compares to skip stale snapshots.
    generation: u64,
}

/// The queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    path: PathBuf,
    /// The generation last written to disk.
    written: tokio::sync::Mutex<u64>,
    notices: broadcast::Sender<Notice>,
    via: Via,
    caps: Caps,
    /// Fires when the agent stops: running downloads stop (and resume at the next start).
    stop: CancellationToken,
}

impl Queue {
    /// Opens the queue kept in `options.data` and starts what it holds: downloads that were
    /// active start again from their `.part`, paused ones stay paused. Downloads run `via` the
    /// engine or the swarm, under `caps`, and stop when `stop` fires.
    pub async fn open(
        options: QueueOptions,
        via: Via,
        caps: Caps,
        stop: CancellationToken,
    ) -> Result<Self, QueueError> {
        let path = options.data.join(QUEUE_FILE);
        let saved = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                store::load(&path)
            })
            .await
            .expect("reading the queue does not panic")
        }
        .map_err(|source| QueueError::Store {
            action: "reading",
            path: path.clone(),
            source,
        })?;
        let mut state = State {
            order: Vec::new(),
            stopped: Vec::new(),
            items: HashMap::new(),
            max_concurrent: options.max_concurrent.max(1),
            dir: options.dir,
            generation: 1,
        };
        for (key, value) in &saved.global {
            apply_global(&mut state, &caps, key, value);
        }
        for download in saved.downloads {
            let Some(item) = restored(download) else {
                continue;
            };
            if item.status.stopped() {
                state.stopped.push(item.gid);
            } else {
                state.order.push(item.gid);
            }
            state.items.insert(item.gid, item);
        }
        let queue = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                path,
                written: tokio::sync::Mutex::new(0),
                notices: broadcast::channel(1024).0,
                via,
                caps,
                stop,
            }),
        };
        queue.schedule();
        queue.persist().await?;
        Ok(queue)
    }

    /// Receives every [`Notice`] from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.notices.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().expect("queue lock")
    }

    /// Adds a download of `uris` (mirrors of one file) at `position` in the waiting list (the
    /// end by default); paused if its options say `pause=true`.
    pub async fn add(
        &self,
        uris: Vec<Url>,
        options: EntryOptions,
        position: Option<usize>,
    ) -> Result<Gid, QueueError> {
        let gid = {
            let mut state = self.lock();
            let gid = loop {
                let gid = Gid::random();
                if !state.items.contains_key(&gid) {
                    break gid;
                }
            };
            let status = if options.pause {
                Status::Paused
            } else {
                Status::Waiting
            };
            let at = waiting_index(&state, position.unwrap_or(usize::MAX));
            state.order.insert(at, gid);
            state.items.insert(
                gid,
                Item {
                    gid,
                    uris,
                    options,
                    status,
                    total: None,
                    done: 0,
                    path: None,
                    error: None,
                    swarmed: None,
                    running: None,
                },
            );
            state.generation += 1;
            gid
        };
        self.schedule();
        self.persist().await?;
        Ok(gid)
    }

    /// Removes a download: a running one is stopped (its `.part` stays), and it is listed as
    /// `removed` among the stopped.
    pub async fn remove(&self, gid: Gid) -> Result<Gid, QueueError> {
        {
            let mut state = self.lock();
            let item = state.items.get_mut(&gid).ok_or(QueueError::NotFound(gid))?;
            if item.status.stopped() {
                return Err(refused(item, "removed"));
            }
            if let Some((cancel, _)) = &item.running {
                cancel.cancel();
            }
            keep_progress(item);
            item.status = Status::Removed;
            state.order.retain(|g| *g != gid);
            state.stopped.push(gid);
            state.generation += 1;
        }
        self.notify(gid, NoticeKind::Stop);
        self.schedule();
        self.persist().await?;
        Ok(gid)
    }

    /// Pauses a download: a running one stops (keeping its `.part`) and waits at the head of
    /// the queue, a waiting one is held.
    pub async fn pause(&self, gid: Gid) -> Result<Gid, QueueError> {
        {
            let mut state = self.lock();
            pause_one(&mut state, gid)?;
            state.generation += 1;
        }
        self.notify(gid, NoticeKind::Pause);
        self.schedule();
        self.persist().await?;
        Ok(gid)
    }

    /// Pauses every active and waiting download.
    pub async fn pause_all(&self) -> Result<(), QueueError> {
        let paused: Vec<Gid> = {
            let mut state = self.lock();
            let gids: Vec<Gid> = state.order.clone();
            let paused = gids
                .into_iter()
                .filter(|gid| pause_one(&mut state, *gid).is_ok())
                .collect();
            state.generation += 1;
            paused
        };
        for gid in paused {
            self.notify(gid, NoticeKind::Pause);
        }
        self.persist().await
    }

    /// Lets a paused download wait for a slot again.
    pub async fn unpause(&self, gid: Gid) -> Result<Gid, QueueError> {
        {
            let mut state = self.lock();
            let item = state.items.get_mut(&gid).ok_or(QueueError::NotFound(gid))?;
            if item.status != Status::Paused {
                return Err(refused(item, "unpaused"));
            }
            item.status = Status::Waiting;
            state.generation += 1;
        }
        self.schedule();
        self.persist().await?;
        Ok(gid)
    }

    /// Lets every paused download wait for a slot again.
    pub async fn unpause_all(&self) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            for item in state.items.values_mut() {
                if item.status == Status::Paused {
                    item.status = Status::Waiting;
                }
            }
            state.generation += 1;
        }
        self.schedule();
        self.persist().await
    }

    /// Moves a waiting (or paused) download within the waiting list; its new place, from 0.
    pub async fn change_position(
        &self,
        gid: Gid,
        pos: i64,
        from: Whence,
    ) -> Result<usize, QueueError> {
        let at = {
            let mut state = self.lock();
            let item = state.items.get(&gid).ok_or(QueueError::NotFound(gid))?;
            if !matches!(item.status, Status::Waiting | Status::Paused) {
                return Err(refused(item, "moved"));
            }
            let waiting: Vec<Gid> = waiting_gids(&state);
            let current = waiting.iter().position(|g| *g == gid).unwrap_or(0) as i64;
            let last = waiting.len() as i64 - 1;
            let target = match from {
                Whence::Start => pos,
                Whence::Current => current + pos,
                Whence::End => last + pos,
            }
            .clamp(0, last.max(0)) as usize;
            state.order.retain(|g| *g != gid);
            let index = waiting_index(&state, target);
            state.order.insert(index, gid);
            state.generation += 1;
            target
        };
        self.persist().await?;
        Ok(at)
    }

    /// Changes a download's options; they apply when it next starts.
    pub async fn change_options(&self, gid: Gid, options: EntryOptions) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            let item = state.items.get_mut(&gid).ok_or(QueueError::NotFound(gid))?;
            item.options = options;
            state.generation += 1;
        }
        self.persist().await
    }

    /// Sets a global option at run time (`max-concurrent-downloads`, `dir`,
    /// `max-overall-download-limit`, `max-overall-upload-limit`); `false` for one the queue
    /// does not have.
    pub async fn change_global(&self, pairs: &[(String, String)]) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            for (key, value) in pairs {
                apply_global(&mut state, &self.inner.caps, key, value);
            }
            state.generation += 1;
        }
        self.schedule();
        self.persist().await
    }

    /// The global options as aria2 names them, values as strings.
    pub fn global(&self) -> Vec<(&'static str, String)> {
        let state = self.lock();
        global_pairs(&state, &self.inner.caps)
    }

    /// Drops every stopped download from the lists.
    pub async fn purge(&self) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            let stopped = std::mem::take(&mut state.stopped);
            for gid in stopped {
                state.items.remove(&gid);
            }
            state.generation += 1;
        }
        self.persist().await
    }

    /// Drops one stopped download from the lists.
    pub async fn remove_result(&self, gid: Gid) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            let item = state.items.get(&gid).ok_or(QueueError::NotFound(gid))?;
            if !item.status.stopped() {
                return Err(refused(item, "forgotten while it is not stopped"));
            }
            state.items.remove(&gid);
            state.stopped.retain(|g| *g != gid);
            state.generation += 1;
        }
        self.persist().await
    }

    /// One download.
    pub fn get(&self, gid: Gid) -> Result<Download, QueueError> {
        let state = self.lock();
        let item = state.items.get(&gid).ok_or(QueueError::NotFound(gid))?;
        Ok(shown(&state.dir, item, self.inner.caps.uploads()))
    }

    /// The active downloads.
    pub fn active(&self) -> Vec<Download> {
        let state = self.lock();
        (state.order.iter())
            .filter_map(|gid| state.items.get(gid))
            .filter(|item| item.status == Status::Active)
            .map(|item| shown(&state.dir, item, self.inner.caps.uploads()))
            .collect()
    }

    /// Waiting and paused downloads, `num` from `offset` in queue order; a negative offset
    /// counts from the end and lists backwards, as aria2 does.
    pub fn waiting(&self, offset: i64, num: usize) -> Vec<Download> {
        let state = self.lock();
        let gids = waiting_gids(&state);
        window(&gids, offset, num)
            .into_iter()
            .filter_map(|gid| state.items.get(&gid))
            .map(|item| shown(&state.dir, item, self.inner.caps.uploads()))
            .collect()
    }

    /// Stopped downloads, `num` from `offset` in the order they stopped (negative as above).
    pub fn stopped(&self, offset: i64, num: usize) -> Vec<Download> {
        let state = self.lock();
        window(&state.stopped, offset, num)
            .into_iter()
            .filter_map(|gid| state.items.get(&gid))
            .map(|item| shown(&state.dir, item, self.inner.caps.uploads()))
            .collect()
    }

    /// Whether a download of the queue not stopped (active, waiting or paused) is of `url`.
    pub(crate) fn holds(&self, url: &Url) -> bool {
        let state = self.lock();
        (state.order.iter())
            .filter_map(|gid| state.items.get(gid))
            .any(|item| item.uris.first() == Some(url))
    }

    /// Totals for `getGlobalStat`.
    pub fn totals(&self) -> Totals {
        let state = self.lock();
        let mut totals = Totals {
            stopped: state.stopped.len(),
            upload_speed: (self.inner.caps.uploads()).map_or(0, PieceServer::upload_speed),
            ..Totals::default()
        };
        for item in state.order.iter().filter_map(|gid| state.items.get(gid)) {
            if item.status != Status::Active {
                totals.waiting += 1;
            } else if let Some((_, live)) = &item.running {
                totals.active += 1;
                totals.download_speed += live.speed.load(Ordering::Relaxed);
            }
        }
        totals
    }

    /// Every download not stopped, in queue order, in aria2's input-file format: what
    /// `aria2c -i` (or `shoal get -i`) reads back. URIs keep their credentials.
    pub fn export(&self) -> String {
        let state = self.lock();
        (state.order.iter())
            .filter_map(|gid| state.items.get(gid))
            .map(|item| urllist::write(&item.uris, &item.options))
            .collect()
    }

    fn notify(&self, gid: Gid, kind: NoticeKind) {
        // Nobody listening is fine.
        let _ = self.inner.notices.send(Notice { gid, kind });
    }

    /// Starts waiting downloads in queue order while fewer than the cap run.
    fn schedule(&self) {
        let started = {
            let mut state = self.lock();
            let running = state
                .items
                .values()
                .filter(|item| item.running.is_some())
                .count();
            let free = state.max_concurrent.saturating_sub(running);
            // A download paused and unpaused before its last run ended waits for that run.
            let next: Vec<Gid> = (state.order.iter())
                .filter(|gid| {
                    let item = &state.items[gid];
                    item.status == Status::Waiting && item.running.is_none()
                })
                .take(free)
                .copied()
                .collect();
            let dir = state.dir.clone();
            let mut started = Vec::new();
            for gid in next {
                let item = state.items.get_mut(&gid).expect("listed");
                let cancel = self.inner.stop.child_token();
                let live = Arc::new(Live::new());
                item.status = Status::Active;
                item.running = Some((cancel.clone(), live.clone()));
                let job = run::Job {
                    uris: item.uris.clone(),
                    options: item.options.clone(),
                    dir: dir.clone(),
                };
                started.push((gid, job, cancel, live));
            }
            if !started.is_empty() {
                state.generation += 1;
            }
            started
        };
        for (gid, job, cancel, live) in started {
            self.notify(gid, NoticeKind::Start);
            let queue = self.clone();
            tokio::spawn(async move {
                let result =
                    run::run(&queue.inner.via, &queue.inner.caps, job, &live, &cancel).await;
                queue.finished(gid, &live, &cancel, result).await;
            });
        }
    }

    /// Records how a run ended, unless the download was paused, removed or the agent is
    /// stopping meanwhile (its state already says what it is).
    async fn finished(
        &self,
        gid: Gid,
        live: &Arc<Live>,
        cancel: &CancellationToken,
        result: Result<PathBuf, (u32, String)>,
    ) {
        let kind = {
            let mut state = self.lock();
            let Some(item) = state.items.get_mut(&gid) else {
                return;
            };
            if !item
                .running
                .as_ref()
                .is_some_and(|(_, ours)| Arc::ptr_eq(ours, live))
            {
                return;
            }
            keep_progress(item);
            item.running = None;
            if cancel.is_cancelled() {
                if item.status == Status::Active {
                    // The agent is stopping: the download resumes at the next start.
                    return;
                }
                state.generation += 1;
                None
            } else {
                let kind = match result {
                    Ok(path) => {
                        item.status = Status::Complete;
                        item.path = Some(path);
                        item.done = item.total.unwrap_or(item.done);
                        NoticeKind::Complete
                    }
                    Err(error) => {
                        item.status = Status::Error;
                        item.error = Some(error);
                        NoticeKind::Error
                    }
                };
                state.order.retain(|g| *g != gid);
                state.stopped.push(gid);
                state.generation += 1;
                Some(kind)
            }
        };
        if let Some(kind) = kind {
            self.notify(gid, kind);
        }
        self.schedule();
        if let Err(e) = self.persist().await {
            warn!("{}", shoal_core::chain::chain(&e));
        }
    }

    /// Runs `calls` (the calls of one `system.multicall` or JSON-RPC batch) with the queue
    /// written once at their end rather than after each change: a thousand `addUri` in one
    /// message are one write, not a thousand. The answer still goes out only once it is
    /// written.
    pub async fn batched<F: Future>(&self, calls: F) -> Result<F::Output, QueueError> {
        let output = DEFERRED.scope((), calls).await;
        self.write().await?;
        Ok(output)
    }

    /// Writes the queue as it is now, unless the change is part of a batch (see
    /// [`Queue::batched`]).
    async fn persist(&self) -> Result<(), QueueError> {
        if DEFERRED.try_with(|_| ()).is_ok() {
            return Ok(());
        }
        self.write().await
    }

    /// Writes the queue as it is now, unless a newer snapshot was written already.
    async fn write(&self) -> Result<(), QueueError> {
        let mut written = self.inner.written.lock().await;
        let (generation, bytes) = {
            let state = self.lock();
            (state.generation, snapshot(&state, &self.inner.caps))
        };
        if generation <= *written {
            return Ok(());
        }
        let path = self.inner.path.clone();
        let result = tokio::task::spawn_blocking(move || store::write(&path, &bytes))
            .await
            .expect("writing the queue does not panic");
        result.map_err(|source| QueueError::Store {
            action: "writing",
            path: self.inner.path.clone(),
            source,
        })?;
        *written = generation;
        Ok(())
    }
}

fn refused(item: &Item, action: &'static str) -> QueueError {
    QueueError::State {
        gid: item.gid,
        action,
        status: item.status.name(),
    }
}

fn pause_one(state: &mut State, gid: Gid) -> Result<(), QueueError> {
    let item = state.items.get_mut(&gid).ok_or(QueueError::NotFound(gid))?;
    if !matches!(item.status, Status::Active | Status::Waiting) {
        return Err(refused(item, "paused"));
    }
    if let Some((cancel, _)) = &item.running {
        cancel.cancel();
    }
    keep_progress(item);
    item.status = Status::Paused;
    Ok(())
}

fn snapshot(state: &State, caps: &Caps) -> Vec<u8> {
    let downloads = (state.order.iter().chain(&state.stopped))
        .filter_map(|gid| state.items.get(gid))
        .map(Item::saved)
        .collect();
    let saved = Saved {
        global: global_pairs(state, caps)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        downloads,
    };
    serde_json::to_vec(&saved).expect("the queue serializes")
}
