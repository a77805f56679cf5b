//! The shared directory (`shoal agent --share DIR`): [`Share`] walks it, hashes every file into
//! a [`Manifest`] (reusing a cache persisted in the data directory, so unchanged files are
//! never hashed twice), [`apply`] mirrors the result into the [`Catalog`], and [`watch`] tells
//! the agent when to scan again.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use serde::{Deserialize, Serialize};
use shoal_core::manifest::digest_piece;
use shoal_core::{ContentId, Layout, Manifest, PieceDigest, PieceIndex};
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::catalog::{Catalog, Entry, Provenance};
use crate::piece_size;

pub const DEFAULT_HASH_THREADS: usize = 2;

/// How long the directory must be quiet after an event before [`Watcher::changed`] resolves,
/// so that a copy in progress or an unpacked archive costs one rescan, not thousands.
pub const QUIET: Duration = Duration::from_millis(300);

/// Hashing threads run at this nice value so that serving pieces wins the CPU over hashing.
const HASH_NICE: i32 = 10;

#[derive(Debug, Clone)]
pub struct ShareOptions {
    /// The directory whose files are shared.
    pub dir: PathBuf,
    /// The manifest cache, a file in the data directory (e.g. `DATA/manifests.json`).
    pub cache: PathBuf,
    /// OS threads that hash in parallel; pieces of one big file are spread over all of them.
    pub hash_threads: usize,
}

impl ShareOptions {
    pub fn new(dir: impl Into<PathBuf>, cache: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            cache: cache.into(),
            hash_threads: DEFAULT_HASH_THREADS,
        }
    }
}

#[derive(Debug, Error)]
pub enum ShareError {
    #[error("the shared directory {} does not exist; create it or fix --share", dir.display())]
    MissingDir { dir: PathBuf },
    #[error("the shared directory {} is not a directory; fix --share", dir.display())]
    NotADir { dir: PathBuf },
    #[error("{}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot watch {} for changes: {source} (on Linux, raising fs.inotify.max_user_watches \
         may help); the directory is rescanned periodically instead",
        dir.display()
    )]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("the watcher of {} stopped; the directory is rescanned periodically instead", dir.display())]
    WatchStopped { dir: PathBuf },
}

/// A file of the shared directory, hashed.
#[derive(Debug, Clone)]
pub struct SharedFile {
    /// Absolute path, where the piece server reads the bytes.
    pub path: PathBuf,
    /// The path relative to the shared directory, with `/` between components.
    pub name: String,
    pub size: u64,
    pub mtime_ns: u128,
    pub manifest: Arc<Manifest>,
}

/// What [`Share::scan`] found.
#[derive(Debug)]
pub struct ScanReport {
    /// Every shared file as it is now, sorted by name.
    pub files: Vec<SharedFile>,
    pub hashed: usize,
    pub reused: usize,
    /// Files left out this time (changed while hashed, or unreadable); see the logs.
    pub skipped: usize,
}

/// The shared directory and its manifest cache.
pub struct Share {
    options: ShareOptions,
    cache: BTreeMap<String, Cached>,
    /// The in-memory cache differs from the file (a save failed, or the load found damage).
    unsaved: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cached {
    size: u64,
    mtime_ns: u128,
    #[serde(with = "arc_manifest")]
    manifest: Arc<Manifest>,
}

/// The cache's JSON: `{"files": {NAME: {"size", "mtime_ns", "manifest"}}}`. Generic so that
/// saving can borrow the map that loading owns.
#[derive(Serialize, Deserialize)]
struct CacheFile<M> {
    files: M,
}

/// serde's `rc` feature is not enabled in the workspace; a manifest is (de)serialized by value.
mod arc_manifest {
    use super::*;

    pub fn serialize<S: serde::Serializer>(m: &Arc<Manifest>, s: S) -> Result<S::Ok, S::Error> {
        m.as_ref().serialize(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<Manifest>, D::Error> {
        Manifest::deserialize(d).map(Arc::new)
    }
}

/// A regular file found by the walk, before its manifest is known.
struct Found {
    path: PathBuf,
    name: String,
    size: u64,
    mtime_ns: u128,
    layout: Layout,
}

impl Share {
    /// Loads the cache. Does not look at the directory: the first [`Share::scan`] reports a
    /// missing one. Blocking; small.
    pub fn new(options: ShareOptions) -> Self {
        let (cache, unsaved) = load_cache(&options.cache);
        Self {
            options,
            cache,
            unsaved,
        }
    }

    /// Walks the directory, hashes what is new or changed, and saves the cache. Blocking and
    /// CPU-heavy: call it through `tokio::task::spawn_blocking`. Cheap when nothing changed,
    /// so callers rescan on every [`Watcher::changed`] and also every minute or so, in case the
    /// watcher missed events.
    pub fn scan(&mut self) -> Result<ScanReport, ShareError> {
        let root = shared_dir(&self.options.dir)?;
        let mut next = BTreeMap::new();
        let mut files = Vec::new();
        let mut pending = Vec::new();
        for found in walk(&root)? {
            match self.cache.get(&found.name) {
                Some(c)
                    if c.size == found.size
                        && c.mtime_ns == found.mtime_ns
                        && c.manifest.layout() == found.layout =>
                {
                    files.push(shared_file(&found, c.manifest.clone()));
                    next.insert(found.name, c.clone());
                }
                _ => pending.push(found),
            }
        }
        let reused = files.len();
        if !pending.is_empty() {
            let bytes: u64 = pending.iter().map(|f| f.size).sum();
            info!(files = pending.len(), bytes, "hashing shared files");
        }
        let mut skipped = 0;
        let results = hash_files(&pending, self.options.hash_threads);
        for (found, result) in pending.iter().zip(results) {
            let unchanged = stat(&found.path)
                .is_ok_and(|(size, mtime_ns)| size == found.size && mtime_ns == found.mtime_ns);
            match (result, unchanged) {
                (Ok(manifest), true) => {
                    let manifest = Arc::new(manifest);
                    files.push(shared_file(found, manifest.clone()));
                    let cached = Cached {
                        size: found.size,
                        mtime_ns: found.mtime_ns,
                        manifest,
                    };
                    next.insert(found.name.clone(), cached);
                    continue;
                }
                (_, false) => {
                    debug!(path = %found.path.display(), "changed while hashed; next scan");
                }
                (Err(e), true) => {
                    warn!(path = %found.path.display(), "cannot read shared file: {e}");
                }
            }
            skipped += 1;
        }
        let hashed = files.len() - reused;
        files.sort_by(|a, b| a.name.cmp(&b.name));

        self.unsaved |= next != self.cache;
        self.cache = next;
        if self.unsaved {
            match save_cache(&self.options.cache, &self.cache) {
                Ok(()) => self.unsaved = false,
                // Sharing goes on without it; the cost is rehashing after a restart.
                Err(e) => {
                    warn!(path = %self.options.cache.display(), "cannot save the manifest cache: {e}")
                }
            }
        }
        debug!(
            files = files.len(),
            hashed, reused, skipped, "scanned shared directory"
        );
        Ok(ScanReport {
            files,
            hashed,
            reused,
            skipped,
        })
    }
}

/// Makes the catalog's [`Provenance::Shared`] entries match `files` exactly, leaving
/// [`Provenance::Fetched`] entries alone. Files with identical bytes share one content id and so
/// one entry, which stays while any of them remains.
pub fn apply(catalog: &Catalog, files: &[SharedFile]) {
    let mut wanted: HashMap<ContentId, Vec<&SharedFile>> = HashMap::new();
    for file in files {
        wanted.entry(file.manifest.id()).or_default().push(file);
    }
    for entry in catalog.entries() {
        if entry.provenance == Provenance::Shared && !wanted.contains_key(&entry.id()) {
            catalog.remove(&entry.id());
        }
    }
    for (id, same) in wanted {
        let current = catalog.get(&id);
        // A held entry stays as long as it reads from one of the files with these bytes; one
        // whose file was renamed or deleted is replaced so path and name are right again.
        let keep = current.is_some_and(|e| {
            e.provenance == Provenance::Fetched || same.iter().any(|f| f.path == e.path())
        });
        if !keep {
            let file = same[0];
            catalog.insert(Arc::new(Entry::complete(
                file.manifest.clone(),
                file.name.clone(),
                Provenance::Shared,
                file.path.clone(),
            )));
        }
    }
}

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

/// The shared directory as an absolute path, or an error naming it as given on the command line.
fn shared_dir(dir: &Path) -> Result<PathBuf, ShareError> {
    let root = fs::canonicalize(dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ShareError::MissingDir {
            dir: dir.to_path_buf(),
        },
        _ => ShareError::Io {
            path: dir.to_path_buf(),
            op: "open the shared directory",
            source,
        },
    })?;
    if !root.is_dir() {
        return Err(ShareError::NotADir {
            dir: dir.to_path_buf(),
        });
    }
    Ok(root)
}

/// Every regular file under `root`, skipping hidden names and symlinks to directories (which
/// could loop). Only an unreadable `root` is an error; anything deeper is logged and skipped.
fn walk(root: &Path) -> Result<Vec<Found>, ShareError> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(source) if dir == root => {
                return Err(ShareError::Io {
                    path: dir,
                    op: "read the shared directory",
                    source,
                })
            }
            Err(e) => {
                warn!(path = %dir.display(), "cannot read shared subdirectory: {e}");
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    warn!(path = %dir.display(), "cannot list shared subdirectory: {e}");
                    continue;
                }
            };
            if entry.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path);
                continue;
            }
            // Follows symlinks: a link to a file is shared, a link to a directory is not.
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    let name = relative_name(root, &path);
                    let size = meta.len();
                    match Layout::new(size, piece_size::for_size(size)) {
                        Ok(layout) => found.push(Found {
                            mtime_ns: mtime_ns(&meta),
                            path,
                            name,
                            size,
                            layout,
                        }),
                        Err(e) => warn!(path = %path.display(), "cannot share: {e}"),
                    }
                }
                Ok(_) => debug!(path = %path.display(), "not a regular file; not shared"),
                Err(e) => debug!(path = %path.display(), "cannot stat; not shared: {e}"),
            }
        }
    }
    Ok(found)
}

fn relative_name(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<_> = relative.iter().map(|c| c.to_string_lossy()).collect();
    parts.join("/")
}

fn shared_file(found: &Found, manifest: Arc<Manifest>) -> SharedFile {
    SharedFile {
        path: found.path.clone(),
        name: found.name.clone(),
        size: found.size,
        mtime_ns: found.mtime_ns,
        manifest,
    }
}

fn mtime_ns(meta: &fs::Metadata) -> u128 {
    // Times before the epoch (restored archives, rarely) all read as 0; the size still differs.
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

fn stat(path: &Path) -> io::Result<(u64, u128)> {
    let meta = fs::metadata(path)?;
    Ok((meta.len(), mtime_ns(&meta)))
}

/// Hashes the files on `threads` OS threads at low priority. The work queue holds pieces, not
/// files, so one big file keeps every thread busy. One result per file, in order.
fn hash_files(files: &[Found], threads: usize) -> Vec<io::Result<Manifest>> {
    let jobs: Vec<(&Found, PieceIndex)> = files
        .iter()
        .flat_map(|f| f.layout.pieces().map(move |p| (f, p)))
        .collect();
    let slots: Vec<OnceLock<io::Result<PieceDigest>>> =
        jobs.iter().map(|_| OnceLock::new()).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, jobs.len().max(1)) {
            std::thread::Builder::new()
                .name("shoal-hash".into())
                .spawn_scoped(scope, || hash_pieces(&jobs, &slots, &next))
                .expect("cannot start a hashing thread");
        }
    });
    let mut slots = slots
        .into_iter()
        .map(|s| s.into_inner().expect("every piece was hashed"));
    files
        .iter()
        .map(|f| {
            // Taken whole before checking, so a failed piece leaves the next file's in place.
            let piece_results: Vec<_> = slots
                .by_ref()
                .take(f.layout.piece_count() as usize)
                .collect();
            let digests = piece_results.into_iter().collect::<io::Result<Vec<_>>>()?;
            Ok(Manifest::new(f.layout, digests).expect("one digest per piece of the layout"))
        })
        .collect()
}

fn hash_pieces(
    jobs: &[(&Found, PieceIndex)],
    slots: &[OnceLock<io::Result<PieceDigest>>],
    next: &AtomicUsize,
) {
    lower_priority();
    let mut buf = Vec::new();
    // Consecutive pieces mostly belong to one file: open it once per thread, not per piece.
    let mut open: Option<(&Path, File)> = None;
    loop {
        let job = next.fetch_add(1, Ordering::Relaxed);
        let Some(&(found, piece)) = jobs.get(job) else {
            return;
        };
        let range = found.layout.range(piece);
        buf.resize(range.len() as usize, 0);
        let result = (|| {
            let file = match &open {
                Some((path, file)) if *path == found.path => file,
                _ => &open.insert((&found.path, File::open(&found.path)?)).1,
            };
            file.read_exact_at(&mut buf, range.start())?;
            Ok(digest_piece(&buf))
        })();
        let _ = slots[job].set(result);
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: both calls only read and set the calling thread's scheduling attributes. On
    // Linux the nice value is per thread, so this leaves the runtime's threads untouched.
    let rc =
        unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, HASH_NICE) };
    if rc != 0 {
        debug!(
            "cannot lower the hashing thread's priority: {}",
            io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// Loads the cache; a missing file is a first start, a damaged one is logged and ignored.
/// Returns whether the file should be rewritten.
fn load_cache(path: &Path) -> (BTreeMap<String, Cached>, bool) {
    let loaded = fs::read(path).and_then(|text| {
        serde_json::from_slice::<CacheFile<BTreeMap<String, Cached>>>(&text)
            .map_err(io::Error::other)
    });
    match loaded {
        Ok(cache) => (cache.files, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (BTreeMap::new(), false),
        Err(e) => {
            warn!(path = %path.display(), "ignoring the manifest cache, rehashing: {e}");
            (BTreeMap::new(), true)
        }
    }
}

/// Writes the cache so that a crash leaves either the old file or the new one, never half.
fn save_cache(path: &Path, files: &BTreeMap<String, Cached>) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // The pid keeps two agents sharing a data directory by mistake from writing one temp file.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let text = serde_json::to_vec(&CacheFile { files }).map_err(io::Error::other)?;
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Makes the rename itself durable.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Change;

    /// Deterministic bytes that differ per seed.
    fn bytes(seed: &str, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        let mut hasher = blake3::Hasher::new();
        hasher.update(seed.as_bytes()).finalize_xof().fill(&mut out);
        out
    }

    /// A shared directory and a cache path in a data directory that does not exist yet.
    fn setup() -> (tempfile::TempDir, ShareOptions) {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("share")).unwrap();
        let options = ShareOptions::new(tmp.path().join("share"), tmp.path().join("data/m.json"));
        (tmp, options)
    }

    fn write(options: &ShareOptions, name: &str, data: &[u8]) -> PathBuf {
        let path = options.dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::canonicalize(path).unwrap()
    }

    fn scan(share: &mut Share) -> (Vec<String>, usize, usize) {
        let report = share.scan().unwrap();
        let names = report.files.into_iter().map(|f| f.name).collect();
        (names, report.hashed, report.reused)
    }

    fn file<'a>(report: &'a ScanReport, name: &str) -> &'a SharedFile {
        report.files.iter().find(|f| f.name == name).unwrap()
    }

    #[test]
    fn multi_piece_file_hashes_like_of_bytes() {
        let (_tmp, options) = setup();
        let data = bytes("big", 7 << 19);
        let path = write(&options, "big.bin", &data);
        write(&options, "empty", b"");
        let report = Share::new(options).scan().unwrap();
        let big = file(&report, "big.bin");
        assert_eq!((big.path.clone(), big.size), (path, data.len() as u64));
        assert_eq!(big.manifest.layout().piece_count(), 4);
        assert_eq!(*big.manifest, Manifest::of_bytes(&data, 1 << 20).unwrap());
        assert_eq!(file(&report, "empty").manifest.layout().piece_count(), 0);
        assert_eq!((report.hashed, report.reused, report.skipped), (2, 0, 0));
    }

    #[test]
    fn pieces_of_one_file_are_spread_over_threads() {
        let (_tmp, options) = setup();
        let data = bytes("small pieces", 300 * 1024 + 7);
        let path = write(&options, "f", &data);
        let found = |piece| Found {
            path: path.clone(),
            name: "f".into(),
            size: data.len() as u64,
            mtime_ns: 0,
            layout: Layout::new(data.len() as u64, piece).unwrap(),
        };
        let manifests = hash_files(&[found(4096), found(1 << 16)], 4);
        for (manifest, piece) in manifests.into_iter().zip([4096, 1 << 16]) {
            assert_eq!(manifest.unwrap(), Manifest::of_bytes(&data, piece).unwrap());
        }
    }

    #[test]
    fn only_new_or_touched_files_are_hashed_even_after_a_restart() {
        let (_tmp, options) = setup();
        write(&options, "keep", &bytes("keep", 1000));
        let edit = write(&options, "sub/edit", &bytes("before", 2000));
        let mut share = Share::new(options.clone());
        let names = vec!["keep".to_string(), "sub/edit".to_string()];
        assert_eq!(scan(&mut share), (names.clone(), 2, 0));
        assert_eq!(scan(&mut share), (names.clone(), 0, 2));
        let mut share = Share::new(options.clone());
        assert_eq!(scan(&mut share), (names.clone(), 0, 2));

        let after = bytes("after", 3000);
        fs::write(&edit, &after).unwrap();
        let later = std::time::SystemTime::now() + Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&edit)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let report = share.scan().unwrap();
        assert_eq!((report.hashed, report.reused), (1, 1));
        let manifest = &file(&report, "sub/edit").manifest;
        assert_eq!(**manifest, Manifest::of_bytes(&after, 1 << 20).unwrap());
    }

    #[test]
    fn a_damaged_cache_is_ignored_and_replaced() {
        let (_tmp, options) = setup();
        write(&options, "a", b"bytes");
        fs::create_dir_all(options.cache.parent().unwrap()).unwrap();
        fs::write(&options.cache, b"{\"files\": {\"a\": tru").unwrap();
        assert_eq!(
            scan(&mut Share::new(options.clone())),
            (vec!["a".into()], 1, 0)
        );
        assert_eq!(scan(&mut Share::new(options)), (vec!["a".into()], 0, 1));
    }

    #[test]
    fn walks_nested_directories_and_skips_hidden_names_and_directory_links() {
        let (_tmp, options) = setup();
        for name in ["top", "a/b/c.bin", ".hidden", ".git/config", "a/.swap"] {
            write(&options, name, name.as_bytes());
        }
        std::os::unix::fs::symlink(&options.dir, options.dir.join("a/loop")).unwrap();
        std::os::unix::fs::symlink(options.dir.join("top"), options.dir.join("link")).unwrap();
        let (names, ..) = scan(&mut Share::new(options));
        assert_eq!(names, ["a/b/c.bin", "link", "top"]);
    }

    #[test]
    fn apply_follows_additions_changes_and_removals() {
        let (_tmp, options) = setup();
        let catalog = Catalog::new();
        let fetched = Arc::new(Entry::new(
            Arc::new(Manifest::of_bytes(b"fetched", 4).unwrap()),
            "fetched".into(),
            Provenance::Fetched,
            PathBuf::from("/data/fetched"),
        ));
        catalog.insert(fetched.clone());
        let gone = write(&options, "gone", b"will be removed");
        let edit = write(&options, "edit", b"old bytes");
        let mut share = Share::new(options);
        let report = share.scan().unwrap();
        apply(&catalog, &report.files);
        let gone_id = file(&report, "gone").manifest.id();
        let old_id = file(&report, "edit").manifest.id();
        assert_eq!(catalog.entries().len(), 3);
        let entry = catalog.get(&gone_id).unwrap();
        assert!(
            entry.is_complete() && entry.provenance == Provenance::Shared && entry.name == "gone"
        );
        catalog.take_changes();

        fs::remove_file(&gone).unwrap();
        fs::write(&edit, b"new bytes, longer").unwrap();
        let report = share.scan().unwrap();
        apply(&catalog, &report.files);
        let new_id = file(&report, "edit").manifest.id();
        let changes = catalog.take_changes();
        assert_eq!(changes.len(), 3, "{changes:?}");
        for change in [
            Change::Removed(gone_id),
            Change::Removed(old_id),
            Change::Added(new_id),
        ] {
            assert!(changes.contains(&change), "{changes:?}");
        }
        assert!(catalog.get(&gone_id).is_none() && catalog.get(&old_id).is_none());
        assert_eq!(catalog.get(&new_id).unwrap().path(), edit);
        assert!(Arc::ptr_eq(&catalog.get(&fetched.id()).unwrap(), &fetched));
        apply(&catalog, &report.files);
        assert!(
            catalog.take_changes().is_empty(),
            "applying twice changes nothing"
        );
    }

    #[test]
    fn identical_files_share_one_entry_until_both_are_gone() {
        let (_tmp, options) = setup();
        let catalog = Catalog::new();
        let paths = [
            write(&options, "one", b"same"),
            write(&options, "two", b"same"),
        ];
        let mut share = Share::new(options);
        let report = share.scan().unwrap();
        apply(&catalog, &report.files);
        let id = report.files[0].manifest.id();
        assert_eq!(catalog.entries().len(), 1);

        let held = catalog.get(&id).unwrap().path();
        let other = paths.iter().find(|p| **p != held).unwrap();
        fs::remove_file(&held).unwrap();
        apply(&catalog, &share.scan().unwrap().files);
        assert_eq!(catalog.get(&id).expect("a copy remains").path(), *other);

        fs::remove_file(other).unwrap();
        catalog.take_changes();
        apply(&catalog, &share.scan().unwrap().files);
        assert_eq!(catalog.take_changes(), [Change::Removed(id)]);
    }

    #[test]
    fn a_missing_directory_is_named_in_the_error() {
        let (_tmp, mut options) = setup();
        options.dir.push("nope");
        let text = Share::new(options.clone()).scan().unwrap_err().to_string();
        assert!(text.contains(&*options.dir.to_string_lossy()), "{text}");
        assert!(text.contains("--share"), "{text}");
        assert!(matches!(
            watch(&options.dir),
            Err(ShareError::MissingDir { .. })
        ));
    }

    #[tokio::test]
    async fn the_watcher_signals_each_burst_of_changes() {
        let (_tmp, options) = setup();
        let mut watcher = watch(&options.dir).unwrap();
        for name in ["sub/new", "sub/other"] {
            write(&options, name, b"hello");
            tokio::time::timeout(Duration::from_secs(10), watcher.changed())
                .await
                .expect("no change signalled within 10 s")
                .unwrap();
        }
    }
}
