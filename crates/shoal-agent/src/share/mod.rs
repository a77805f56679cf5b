//! The shared directory (`shoal agent --share DIR`): [`Share`] walks it, hashes every file into
//! a [`Manifest`] (reusing a cache persisted in the data directory, so unchanged files are
//! never hashed twice), [`apply`] mirrors the result into the [`Catalog`], and [`watch`] tells
//! the agent when to scan again.
//!
//! The parts: `walk` finds the files, `hash` hashes them on low-priority threads, `cache`
//! keeps their manifests between runs, and `watcher` notices changes.

mod cache;
mod hash;
mod walk;
mod watcher;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use shoal_core::{ContentId, Manifest};
use thiserror::Error;
use tracing::{debug, info, warn};

use self::cache::{load_cache, save_cache, Cached};
use self::hash::hash_files;
use self::walk::{shared_dir, stat, walk, Found};
pub use self::watcher::{watch, Watcher, QUIET};
use crate::catalog::{Catalog, Entry, Provenance};

/// Hashing threads unless [`ShareOptions::hash_threads`] says otherwise.
pub const DEFAULT_HASH_THREADS: usize = 2;

/// Which directory is shared, where its manifests are cached, and how it is hashed.
#[derive(Debug, Clone)]
pub struct ShareOptions {
    /// The directory whose files are shared.
    pub dir: PathBuf,
    /// The manifest cache, a file in the data directory (e.g. `DATA/manifests.json`).
    pub cache: PathBuf,
    /// OS threads that hash in parallel; pieces of one big file are spread over all of them.
    pub hash_threads: usize,
    /// Which symlinks are followed.
    pub symlinks: Symlinks,
}

/// Which symlinks in the shared directory are followed (to a file; never to a directory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Symlinks {
    /// Only those whose target is inside the shared directory, so that a link cannot share
    /// what its owner did not mean to (`/etc/shadow`, another user's files).
    #[default]
    Inside,
    /// All of them (`--follow-symlinks`).
    Follow,
}

impl ShareOptions {
    /// Shares `dir`, caching manifests in the file `cache`, hashing on
    /// [`DEFAULT_HASH_THREADS`].
    pub fn new(dir: impl Into<PathBuf>, cache: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            cache: cache.into(),
            hash_threads: DEFAULT_HASH_THREADS,
            symlinks: Symlinks::Inside,
        }
    }
}

/// Why the shared directory cannot be scanned or watched.
#[derive(Debug, Error)]
pub enum ShareError {
    /// The shared directory does not exist.
    #[error("the shared directory {} does not exist; create it or fix --share", dir.display())]
    MissingDir {
        /// The directory as given (`--share`).
        dir: PathBuf,
    },
    /// The shared path exists but is not a directory.
    #[error("the shared directory {} is not a directory; fix --share", dir.display())]
    NotADir {
        /// The path as given (`--share`).
        dir: PathBuf,
    },
    /// Opening or reading a directory of the share failed.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// The directory at fault.
        path: PathBuf,
        /// What was being done, e.g. `read the shared directory`.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The directory cannot be watched; it is rescanned every `AgentOptions::rescan_every` instead.
    #[error(
        "cannot watch {} for changes: {source} (on Linux, raising fs.inotify.max_user_watches \
         may help); the directory is rescanned periodically instead",
        dir.display()
    )]
    Watch {
        /// The shared directory.
        dir: PathBuf,
        /// The watcher's error (e.g. out of inotify watches).
        #[source]
        source: notify::Error,
    },
    /// The watcher ended; the directory is rescanned periodically instead.
    #[error("the watcher of {} stopped; the directory is rescanned periodically instead", dir.display())]
    WatchStopped {
        /// The shared directory.
        dir: PathBuf,
    },
}

/// A file of the shared directory, hashed.
#[derive(Debug, Clone)]
pub struct SharedFile {
    /// Absolute path, where the piece server reads the bytes.
    pub path: PathBuf,
    /// The path relative to the shared directory, with `/` between components.
    pub name: String,
    /// The file's length in bytes when hashed.
    pub size: u64,
    /// Its modification time in nanoseconds since the Unix epoch when hashed; with `size`, what
    /// tells a later scan it has not changed.
    pub mtime_ns: u128,
    /// Its manifest (BLAKE3 of every piece).
    pub manifest: Arc<Manifest>,
}

/// What [`Share::scan`] found.
#[derive(Debug)]
pub struct ScanReport {
    /// Every shared file as it is now, sorted by name.
    pub files: Vec<SharedFile>,
    /// Files hashed this time (new or changed).
    pub hashed: usize,
    /// Files whose cached manifest still held (same size and modification time).
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
        for found in walk(&root, self.options.symlinks)? {
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

fn shared_file(found: &Found, manifest: Arc<Manifest>) -> SharedFile {
    SharedFile {
        path: found.path.clone(),
        name: found.name.clone(),
        size: found.size,
        mtime_ns: found.mtime_ns,
        manifest,
    }
}

#[cfg(test)]
mod tests;
