//! The default backend: SQLite (bundled, WAL mode) in the `--data` directory for durable
//! state, with soft state and a mirror of the catalog in memory ([`super::memory`]; URL
//! swarms in `swarms.rs`).
//!
//! SQLite calls block, so one dedicated thread owns the connection and runs jobs sent to it
//! through a bounded queue (a caller waits for room when it is full);
//! async callers await the answer and the runtime never blocks on disk.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rusqlite::{params, Connection, OptionalExtension};
use shoal_core::clock::unix_now;
use shoal_core::wire::{
    AgentId, AgentSummary, AnnounceRequest, ContentSummary, HeartbeatRequest, LeaseGrant,
    ManifestPublished, PeersResponse, SwarmInfo, UrlKey, UrlMapping,
};
use shoal_core::{ContentId, Layout, Manifest, PieceDigest};
use tokio::sync::{mpsc, oneshot};

use super::evidence::Evidence;
use super::memory::{CatalogRow, Memory};
use super::swarms::{Leader, SwarmTable};
use super::{
    AgentPage, Caller, ContentSearch, DigestsPublished, NewSwarm, PeerQuery, PeerReport,
    Registration, Store, StoreError, StoreOptions, StoreStats, SwarmLimits, SwarmSummary, Swept,
    UrlReport, REPORT_HOLD,
};
use crate::clock::Clock;

/// Where the database lives.
#[derive(Debug, Clone)]
pub enum SqliteLocation {
    /// `tracker.sqlite3` inside this directory, which is created if missing.
    Directory(PathBuf),
    /// A private in-memory database, gone when the store is dropped (tests).
    Memory,
}

/// The database's file name inside [`SqliteLocation::Directory`].
pub const DATABASE_FILE: &str = "tracker.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contents (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    piece_size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS manifests (
    id BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    piece_size INTEGER NOT NULL,
    digests BLOB NOT NULL,
    publisher TEXT NOT NULL,
    published_at INTEGER NOT NULL
);
-- Absent validators are stored as '' so that the primary key compares them (NULLs would not).
CREATE TABLE IF NOT EXISTS urls (
    url TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    content BLOB NOT NULL,
    publisher TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    PRIMARY KEY (url, size, etag, last_modified)
);
-- The sweep deletes the mappings of contents past their retention.
CREATE INDEX IF NOT EXISTS urls_by_content ON urls (content);
";

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Jobs waiting for the database thread at most; a caller beyond them waits for room, so a
/// flood of writes slows its senders down instead of growing the queue without bound.
const JOB_QUEUE: usize = 1024;

/// The handle to the database thread; the thread ends when the last handle is dropped.
#[derive(Debug)]
struct Db {
    jobs: mpsc::Sender<Job>,
}

impl Db {
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have gone away (request cancelled); the work is done regardless.
            let _ = tx.send(f(conn));
        });
        self.jobs.send(job).await.map_err(|_| db_gone())?;
        rx.await
            .map_err(|_| db_gone())?
            .map_err(|e| StoreError::Backend(Box::new(e)))
    }
}

fn db_gone() -> StoreError {
    StoreError::Backend("the database thread has stopped".into())
}

/// SQLite-backed [`Store`]. Clones share one database and one in-memory index.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    memory: RwLock<Memory>,
    /// Apart from `memory`, so that swarm traffic never waits for peer queries or announces.
    swarms: Mutex<SwarmTable>,
    /// Reports of URL mappings (canonical key bytes, content) not yet corroborated.
    url_reports: Mutex<Evidence<(Vec<u8>, ContentId)>>,
    clock: Clock,
}

fn open_connection(location: &SqliteLocation) -> rusqlite::Result<Connection> {
    let conn = match location {
        SqliteLocation::Directory(dir) => Connection::open(dir.join(DATABASE_FILE))?,
        SqliteLocation::Memory => Connection::open_in_memory()?,
    };
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // WAL with NORMAL survives process crashes; only an OS crash may lose the last commits,
    // which agents re-publish.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn load_catalog(conn: &Connection) -> rusqlite::Result<Vec<(CatalogRow, bool)>> {
    let mut stmt = conn.prepare(
        "SELECT c.id, c.name, c.size, c.piece_size, m.id IS NOT NULL
         FROM contents c LEFT JOIN manifests m ON m.id = c.id ORDER BY c.rowid",
    )?;
    let rows = stmt.query_map([], |row| {
        let id: Vec<u8> = row.get(0)?;
        let size: i64 = row.get(2)?;
        let piece_size: i64 = row.get(3)?;
        Ok((id, row.get::<_, String>(1)?, size, piece_size, row.get(4)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, size, piece_size, manifest) = row?;
        // Rows are only written from validated values, so a bad one means a damaged file.
        let damaged = || {
            rusqlite::Error::InvalidColumnType(0, "contents".into(), rusqlite::types::Type::Blob)
        };
        let id = ContentId::from_bytes(id.try_into().map_err(|_| damaged())?);
        let layout = Layout::new(size as u64, piece_size as u64).map_err(|_| damaged())?;
        out.push((CatalogRow { id, name, layout }, manifest));
    }
    Ok(out)
}

fn upsert_rows(conn: &mut Connection, rows: &[CatalogRow]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO contents (id, name, size, piece_size) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, size = excluded.size,
             piece_size = excluded.piece_size",
        )?;
        for row in rows {
            // Sizes up to 2^63 are stored bit for bit in SQLite's signed 64-bit integers.
            stmt.execute(params![
                &row.id.as_bytes()[..],
                row.name,
                row.layout.size() as i64,
                row.layout.piece_size() as i64
            ])?;
        }
    }
    tx.commit()
}

fn read_mapping(conn: &Connection, key: &UrlKey) -> rusqlite::Result<Option<UrlMapping>> {
    conn.prepare_cached(
        "SELECT content, publisher, published_at FROM urls
         WHERE url = ?1 AND size = ?2 AND etag = ?3 AND last_modified = ?4",
    )?
    .query_row(
        params![
            key.url,
            key.size as i64,
            key.etag.as_deref().unwrap_or(""),
            key.last_modified.as_deref().unwrap_or("")
        ],
        |row| {
            let id: Vec<u8> = row.get(0)?;
            let id: [u8; 32] = id.try_into().map_err(|_| {
                rusqlite::Error::InvalidColumnType(0, "content".into(), rusqlite::types::Type::Blob)
            })?;
            Ok(UrlMapping {
                key: key.clone(),
                content: ContentId::from_bytes(id),
                publisher: row.get(1)?,
                published_at: row.get::<_, i64>(2)? as u64,
            })
        },
    )
    .optional()
}

/// Deletes the durable rows of contents past their retention: catalog entry, manifest, and
/// every URL mapping to them.
fn delete_contents(conn: &mut Connection, ids: &[ContentId]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for id in ids {
        let id = &id.as_bytes()[..];
        tx.execute("DELETE FROM contents WHERE id = ?1", [id])?;
        tx.execute("DELETE FROM manifests WHERE id = ?1", [id])?;
        tx.execute("DELETE FROM urls WHERE content = ?1", [id])?;
    }
    tx.commit()
}

impl SqliteStore {
    /// Opens (creating if needed) the database and loads the catalog into memory.
    pub async fn open(location: SqliteLocation, options: StoreOptions) -> Result<Self, StoreError> {
        let backend = |e: rusqlite::Error| StoreError::Backend(Box::new(e));
        if let SqliteLocation::Directory(dir) = &location {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StoreError::Backend(Box::new(e)))?;
        }
        let (jobs, mut queue) = mpsc::channel::<Job>(JOB_QUEUE);
        let (ready_tx, ready_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("shoal-tracker-sqlite".into())
            .spawn(move || {
                let mut conn = match open_connection(&location).and_then(|conn| {
                    let catalog = load_catalog(&conn)?;
                    Ok((conn, catalog))
                }) {
                    Ok((conn, catalog)) => {
                        let _ = ready_tx.send(Ok(catalog));
                        conn
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Some(job) = queue.blocking_recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let catalog = ready_rx.await.map_err(|_| db_gone())?.map_err(backend)?;

        let mut memory = Memory::new(
            options.lease.as_millis() as u64,
            options.max_holdings,
            options.retention.map(|r| r.as_millis() as u64),
        );
        for (row, manifest) in catalog {
            memory.load(row, manifest);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                db: Db { jobs },
                memory: RwLock::new(memory),
                swarms: Mutex::new(SwarmTable::new(SwarmLimits::default())),
                url_reports: Mutex::default(),
                clock: options.clock,
            }),
        })
    }

    /// Sets the limits of URL swarms (the default is [`SwarmLimits::default`]); clones share
    /// them.
    pub fn with_swarms(self, limits: SwarmLimits) -> Self {
        self.swarms().set_limits(limits);
        self
    }

    fn swarms(&self) -> MutexGuard<'_, SwarmTable> {
        // Swarm updates validate before they mutate, as memory updates do.
        self.inner
            .swarms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> RwLockReadGuard<'_, Memory> {
        // Updates validate before they mutate, so a panic elsewhere leaves the index usable.
        self.inner
            .memory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Memory> {
        self.inner
            .memory
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    async fn persist(&self, rows: Vec<CatalogRow>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.inner
            .db
            .call(move |conn| upsert_rows(conn, &rows))
            .await
    }
}

impl Store for SqliteStore {
    async fn register(&self, caller: Caller, reg: Registration) -> Result<LeaseGrant, StoreError> {
        let now = self.now();
        let (grant, rows) = self.write().register(&caller, reg, now)?;
        self.persist(rows).await?;
        Ok(grant)
    }

    async fn heartbeat(
        &self,
        caller: Caller,
        id: AgentId,
        beat: HeartbeatRequest,
    ) -> Result<LeaseGrant, StoreError> {
        let now = self.now();
        self.write().heartbeat(&caller, &id, beat, now)
    }

    async fn announce(
        &self,
        caller: Caller,
        id: AgentId,
        delta: AnnounceRequest,
    ) -> Result<LeaseGrant, StoreError> {
        let now = self.now();
        let (grant, rows) = self.write().announce(&caller, &id, delta, now)?;
        self.persist(rows).await?;
        Ok(grant)
    }

    async fn deregister(&self, caller: Caller, id: AgentId) -> Result<(), StoreError> {
        let now = self.now();
        self.write().deregister(&caller, &id, now)
    }

    async fn peers(
        &self,
        content: ContentId,
        query: PeerQuery,
    ) -> Result<PeersResponse, StoreError> {
        self.read().peers(&content, &query, self.now())
    }

    async fn content(&self, id: ContentId) -> Result<ContentSummary, StoreError> {
        self.read().content(&id, self.now())
    }

    async fn search(&self, search: ContentSearch) -> Result<Vec<ContentSummary>, StoreError> {
        Ok(self.read().search(&search, self.now()))
    }

    async fn agents(&self, page: AgentPage) -> Result<Vec<AgentSummary>, StoreError> {
        Ok(self.read().agents(&page, self.now()))
    }

    async fn put_manifest(
        &self,
        manifest: Manifest,
        publisher: Arc<str>,
    ) -> Result<ManifestPublished, StoreError> {
        let id = manifest.id();
        let layout = manifest.layout();
        let created = self
            .inner
            .db
            .call(move |conn| {
                let tx = conn.transaction()?;
                let created = tx.execute(
                    "INSERT OR IGNORE INTO manifests
                     (id, size, piece_size, digests, publisher, published_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        &id.as_bytes()[..],
                        layout.size() as i64,
                        layout.piece_size() as i64,
                        manifest.digests().as_flattened(),
                        &*publisher,
                        unix_now() as i64
                    ],
                )? == 1;
                // The manifest's layout is authoritative for the catalog.
                tx.execute(
                    "INSERT INTO contents (id, name, size, piece_size) VALUES (?1, '', ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET size = excluded.size,
                     piece_size = excluded.piece_size",
                    params![
                        &id.as_bytes()[..],
                        layout.size() as i64,
                        layout.piece_size() as i64
                    ],
                )?;
                tx.commit()?;
                Ok(created)
            })
            .await?;
        self.write().manifest_published(id, layout);
        Ok(ManifestPublished {
            content: id,
            created,
        })
    }

    async fn manifest(&self, id: ContentId) -> Result<Manifest, StoreError> {
        let found = self
            .inner
            .db
            .call(move |conn| {
                conn.prepare_cached(
                    "SELECT size, piece_size, digests FROM manifests WHERE id = ?1",
                )?
                .query_row([&id.as_bytes()[..]], |row| {
                    Ok((
                        row.get::<_, i64>(0)? as u64,
                        row.get::<_, i64>(1)? as u64,
                        row.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .optional()
            })
            .await?;
        let (size, piece_size, digests) = found.ok_or(StoreError::NoManifest(id))?;
        let damaged =
            |what: String| StoreError::Backend(format!("stored manifest {id}: {what}").into());
        let layout = Layout::new(size, piece_size).map_err(|e| damaged(e.to_string()))?;
        let digests = digests
            .chunks_exact(32)
            .map(|c| c.try_into().expect("chunks are 32 bytes"))
            .collect();
        Manifest::new(layout, digests).map_err(|e| damaged(e.to_string()))
    }

    async fn publish_url(
        &self,
        key: UrlKey,
        content: ContentId,
        publisher: Arc<str>,
    ) -> Result<(UrlMapping, bool), StoreError> {
        if !self.read().has_manifest(&content) {
            return Err(StoreError::NoManifest(content));
        }
        self.inner
            .db
            .call(move |conn| {
                let created =
                    conn.prepare_cached(
                        "INSERT OR IGNORE INTO urls
                         (url, size, etag, last_modified, content, publisher, published_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        key.url,
                        key.size as i64,
                        key.etag.as_deref().unwrap_or(""),
                        key.last_modified.as_deref().unwrap_or(""),
                        &content.as_bytes()[..],
                        &*publisher,
                        unix_now() as i64
                    ])? == 1;
                let mapping =
                    read_mapping(conn, &key)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                Ok((mapping, created))
            })
            .await
    }

    async fn lookup_url(&self, key: UrlKey) -> Result<UrlMapping, StoreError> {
        self.inner
            .db
            .call(move |conn| read_mapping(conn, &key))
            .await?
            .ok_or(StoreError::UnknownUrl)
    }

    async fn latest_url(&self, url: String) -> Result<UrlMapping, StoreError> {
        self.inner
            .db
            .call(move |conn| {
                conn.prepare_cached(
                    "SELECT size, etag, last_modified FROM urls WHERE url = ?1
                     ORDER BY published_at DESC, rowid DESC LIMIT 1",
                )?
                .query_row(params![url], |row| {
                    let text = |i: usize| -> rusqlite::Result<Option<String>> {
                        let v: String = row.get(i)?;
                        Ok((!v.is_empty()).then_some(v))
                    };
                    Ok(UrlKey {
                        url: url.clone(),
                        size: row.get::<_, i64>(0)? as u64,
                        etag: text(1)?,
                        last_modified: text(2)?,
                    })
                })
                .optional()?
                .map_or(Ok(None), |key| read_mapping(conn, &key))
            })
            .await?
            .ok_or(StoreError::UnknownUrl)
    }

    async fn create_swarm(&self, caller: Caller, swarm: NewSwarm) -> Result<SwarmInfo, StoreError> {
        let now = self.now();
        self.swarms().create(&caller, swarm, now)
    }

    async fn swarm(&self, id: ContentId) -> Result<SwarmInfo, StoreError> {
        self.swarms().get(&id, self.now())
    }

    async fn swarms(&self, limit: usize) -> Result<Vec<SwarmSummary>, StoreError> {
        Ok(self.swarms().running(limit, self.now()))
    }

    async fn take_over_swarm(
        &self,
        caller: Caller,
        id: ContentId,
        agent: AgentId,
    ) -> Result<SwarmInfo, StoreError> {
        let now = self.now();
        let leader = self.swarms().leader(&id, now)?;
        // The agents and the swarms have separate locks, never held together: the swarm's
        // leader is checked again under the swarms' lock, so a takeover between the two
        // looks leaves the later caller refused.
        let live = {
            let memory = self.read();
            memory.acts_for(&caller, &agent, now)?;
            memory.is_live(&leader, now)
        };
        let seen = Leader { id: leader, live };
        self.swarms().take_over(&caller, &id, agent, seen, now)
    }

    async fn publish_digests(
        &self,
        caller: Caller,
        id: ContentId,
        digests: Vec<(u32, PieceDigest)>,
    ) -> Result<DigestsPublished, StoreError> {
        let now = self.now();
        self.swarms().publish(&caller, &id, digests, now)
    }

    async fn report(&self, report: PeerReport) -> Result<bool, StoreError> {
        let now = self.now();
        self.write().report(&report, now)
    }

    async fn report_url(&self, report: UrlReport) -> Result<bool, StoreError> {
        let now = self.now();
        match self.lookup_url(report.key.clone()).await {
            Ok(mapping) if mapping.content == report.content => {}
            Ok(_) | Err(StoreError::UnknownUrl) => return Ok(false),
            Err(e) => return Err(e),
        }
        let until = now + REPORT_HOLD.as_millis() as u64;
        let subject = (report.key.canonical_bytes(), report.content);
        {
            let mut reports = self
                .inner
                .url_reports
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !reports.record(subject.clone(), &report.by, until, now) {
                return Ok(false);
            }
            reports.forget(&subject);
        }
        let key = report.key;
        self.inner
            .db
            .call(move |conn| {
                conn.prepare_cached(
                    "DELETE FROM urls
                     WHERE url = ?1 AND size = ?2 AND etag = ?3 AND last_modified = ?4
                     AND content = ?5",
                )?
                .execute(params![
                    key.url,
                    key.size as i64,
                    key.etag.as_deref().unwrap_or(""),
                    key.last_modified.as_deref().unwrap_or(""),
                    &report.content.as_bytes()[..],
                ])
            })
            .await
            .map(|deleted| deleted > 0)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let swarms = self.swarms().len() as u64;
        Ok(StoreStats {
            swarms,
            ..self.read().stats()
        })
    }

    async fn sweep(&self) -> Result<Swept, StoreError> {
        let now = self.now();
        let (agents, expired) = {
            let mut memory = self.write();
            let agents = memory.sweep(now);
            (agents, memory.sweep_contents(now))
        };
        let swarms = self.swarms().sweep(now);
        self.inner
            .url_reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sweep(now);
        let contents = expired.len();
        if !expired.is_empty() {
            self.inner
                .db
                .call(move |conn| delete_contents(conn, &expired))
                .await?;
        }
        Ok(Swept {
            agents,
            swarms,
            contents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_job_queue_is_bounded() {
        let store = SqliteStore::open(SqliteLocation::Memory, StoreOptions::default())
            .await
            .unwrap();
        // Hold the database thread in one job until released.
        let (started, running) = std::sync::mpsc::channel();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let held = store.clone();
        let blocker = tokio::spawn(async move {
            held.inner
                .db
                .call(move |_| {
                    let _ = started.send(());
                    let _ = wait.recv();
                    Ok(())
                })
                .await
        });
        tokio::task::spawn_blocking(move || running.recv().unwrap())
            .await
            .unwrap();
        let jobs = &store.inner.db.jobs;
        for _ in 0..JOB_QUEUE {
            jobs.try_send(Box::new(|_: &mut Connection| {}))
                .map_err(|_| ())
                .unwrap();
        }
        // Full: a caller now waits for room instead of growing the queue.
        assert!(matches!(
            jobs.try_send(Box::new(|_: &mut Connection| {})),
            Err(mpsc::error::TrySendError::Full(_))
        ));
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        assert!(store.stats().await.is_ok());
    }

    /// The suite's retention case runs on an in-memory database and reads the catalog from the
    /// index; this one checks the rows themselves are gone, as a restart sees them.
    #[tokio::test]
    async fn contents_past_their_retention_are_gone_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::manual();
        let retention = Duration::from_secs(60);
        let open = || {
            SqliteStore::open(
                SqliteLocation::Directory(dir.path().to_path_buf()),
                StoreOptions {
                    clock: clock.clone(),
                    retention: Some(retention),
                    ..StoreOptions::default()
                },
            )
        };
        let store = open().await.unwrap();
        let manifest = Manifest::of_bytes(b"retained", 4).unwrap();
        let key = UrlKey {
            url: "https://example.com/f".into(),
            size: 8,
            etag: None,
            last_modified: None,
        };
        store
            .put_manifest(manifest.clone(), "t".into())
            .await
            .unwrap();
        store
            .publish_url(key.clone(), manifest.id(), "t".into())
            .await
            .unwrap();
        assert_eq!(store.sweep().await.unwrap().contents, 0);
        clock.advance(retention);
        assert_eq!(store.sweep().await.unwrap().contents, 1);
        drop(store);

        let store = open().await.unwrap();
        assert_eq!(store.stats().await.unwrap().contents, 0);
        assert!(matches!(
            store.manifest(manifest.id()).await,
            Err(StoreError::NoManifest(_))
        ));
        assert!(matches!(
            store.lookup_url(key).await,
            Err(StoreError::UnknownUrl)
        ));
    }
}
