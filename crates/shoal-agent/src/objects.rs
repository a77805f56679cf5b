//! The data directory's store of fetched contents: `objects/ID` holds the bytes (read-only, so
//! a hard link handed to a user cannot be written through by accident), `objects/ID.json`
//! what the agent knows of it (manifest, name, URL, last use). Contents are kept and seeded
//! until the store is over `--cache-size`, then the least recently used go first.

use shoal_core::clock::unix_now;
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use shoal_core::wire::UrlKey;
use shoal_core::{ContentId, Manifest};
use thiserror::Error;
use tracing::{info, warn};

use crate::catalog::{Catalog, Entry, Provenance};

/// A file of the store of fetched contents (`DATA/objects`) could not be read or written; the
/// message names the file.
#[derive(Debug, Error)]
#[error("cannot {op} {}: {source}", path.display())]
pub struct ObjectsError {
    /// The file or directory at fault.
    pub path: PathBuf,
    /// What was being done, e.g. `create`, `write`, `rename`, `make read-only`.
    pub op: &'static str,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

fn err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> ObjectsError + 'a {
    move |source| ObjectsError {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// What `ID.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The content's manifest; its id names the record and the bytes.
    pub manifest: Manifest,
    /// The name the content was fetched under, announced to the tracker.
    pub name: String,
    /// The URL version it was fetched from; `None` for a fetch by content id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlKey>,
    /// Unix seconds.
    pub last_used: u64,
}

/// The store; cheap to clone.
#[derive(Clone)]
pub struct Objects {
    dir: PathBuf,
    cache_size: Option<u64>,
    /// Contents being fetched or handed out right now: never evicted.
    pinned: Arc<Mutex<HashSet<ContentId>>>,
    /// Contents evicted since the store was opened.
    evictions: Arc<AtomicU64>,
    /// The contents recorded, by the URL version each was fetched from.
    by_url: Arc<Mutex<HashMap<UrlKey, ContentId>>>,
}

/// Keeps a content from eviction while it lives.
pub struct Pin {
    objects: Objects,
    id: ContentId,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.objects
            .pinned
            .lock()
            .expect("pins lock")
            .remove(&self.id);
    }
}

impl Objects {
    /// Opens (creating it if missing) the store in `data/objects`; `cache_size` is the most bytes
    /// of contents it keeps, `None` for no limit.
    pub fn open(data: &Path, cache_size: Option<u64>) -> Result<Self, ObjectsError> {
        let dir = data.join("objects");
        std::fs::create_dir_all(&dir).map_err(err(&dir, "create"))?;
        Ok(Self {
            dir,
            cache_size,
            pinned: Arc::default(),
            evictions: Arc::default(),
            by_url: Arc::default(),
        })
    }

    /// Contents evicted to stay within `--cache-size` since the store was opened.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The store's directory, `DATA/objects`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a content's bytes live once complete.
    pub fn path(&self, id: &ContentId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn record_path(&self, id: &ContentId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Keeps `id` from eviction until the returned [`Pin`] is dropped.
    pub fn pin(&self, id: ContentId) -> Pin {
        self.pinned.lock().expect("pins lock").insert(id);
        Pin {
            objects: self.clone(),
            id,
        }
    }

    /// Whether a fetch or a user holds `id` now.
    pub(crate) fn is_pinned(&self, id: &ContentId) -> bool {
        self.pinned.lock().expect("pins lock").contains(id)
    }

    /// Puts every complete content of the store into the catalog, to be seeded again; a
    /// record without its bytes (or with bytes of another size) is dropped.
    pub fn load(&self, catalog: &Catalog) -> Result<usize, ObjectsError> {
        let mut loaded = 0;
        for item in std::fs::read_dir(&self.dir).map_err(err(&self.dir, "read"))? {
            let item = item.map_err(err(&self.dir, "read"))?;
            let name = item.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<ContentId>().ok())
            else {
                continue;
            };
            let Some(record) = self.record(&id) else {
                continue;
            };
            let path = self.path(&id);
            let intact = record.manifest.id() == id
                && std::fs::metadata(&path)
                    .is_ok_and(|m| m.len() == record.manifest.layout().size());
            if !intact {
                warn!(content = %id, "{} is missing or damaged; forgetting it", path.display());
                self.remove(&id);
                continue;
            }
            if let Some(key) = record.url {
                self.by_url.lock().expect("by-url lock").insert(key, id);
            }
            catalog.insert(Arc::new(Entry::complete(
                Arc::new(record.manifest),
                record.name,
                Provenance::Fetched,
                path,
            )));
            loaded += 1;
        }
        Ok(loaded)
    }

    /// The record of `id`; `None` when there is none, or it is damaged (logged).
    pub fn record(&self, id: &ContentId) -> Option<Record> {
        let path = self.record_path(id);
        let text = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&text) {
            Ok(record) => Some(record),
            Err(e) => {
                warn!("{} is damaged ({e}); forgetting it", path.display());
                None
            }
        }
    }

    /// Records a complete content whose bytes are at [`Objects::path`], and makes them
    /// read-only.
    pub fn save(&self, record: &Record) -> Result<(), ObjectsError> {
        let id = record.manifest.id();
        let bytes = self.path(&id);
        std::fs::set_permissions(&bytes, std::fs::Permissions::from_mode(0o444))
            .map_err(err(&bytes, "make read-only"))?;
        let path = self.record_path(&id);
        let tmp = self.dir.join(format!(".{id}.json.tmp"));
        let text = serde_json::to_vec(record).expect("a record serializes");
        std::fs::write(&tmp, text).map_err(err(&tmp, "write"))?;
        std::fs::rename(&tmp, &path).map_err(err(&path, "rename"))?;
        if let Some(key) = &record.url {
            let mut by_url = self.by_url.lock().expect("by-url lock");
            by_url.insert(key.clone(), id);
        }
        Ok(())
    }

    /// The content recorded as fetched from URL version `key` (the newest, if several were),
    /// if its record is still here; whether its bytes are is the catalog's to say.
    pub(crate) fn fetched_from(&self, key: &UrlKey) -> Option<ContentId> {
        self.by_url.lock().expect("by-url lock").get(key).copied()
    }

    /// Notes that a content was used now.
    pub fn touch(&self, id: &ContentId) {
        if let Some(mut record) = self.record(id) {
            record.last_used = unix_now();
            if let Err(e) = self.save(&record) {
                warn!("{e}");
            }
        }
    }

    /// Removes a content's bytes and record, if there are any.
    pub(crate) fn remove(&self, id: &ContentId) {
        self.by_url
            .lock()
            .expect("by-url lock")
            .retain(|_, content| content != id);
        let _ = std::fs::remove_file(self.record_path(id));
        let _ = std::fs::remove_file(self.path(id));
    }

    /// Removes the least recently used contents, not pinned, until the store fits
    /// `--cache-size` with `room` bytes to spare. Returns what was removed.
    pub fn evict(&self, catalog: &Catalog, room: u64) -> Vec<ContentId> {
        let Some(limit) = self.cache_size else {
            return Vec::new();
        };
        let pinned = self.pinned.lock().expect("pins lock").clone();
        let mut held: Vec<(u64, u64, ContentId)> = catalog
            .entries()
            .iter()
            .filter(|e| e.provenance == Provenance::Fetched && e.manifest().is_some())
            .filter_map(|e| {
                let record = self.record(&e.id())?;
                Some((record.last_used, e.size(), e.id()))
            })
            .collect();
        let mut used: u64 = held.iter().map(|h| h.1).sum();
        held.sort();
        let mut removed = Vec::new();
        for (_, size, id) in held {
            if used.saturating_add(room) <= limit {
                break;
            }
            if pinned.contains(&id) {
                continue;
            }
            catalog.remove(&id);
            // A URL swarm's id names the same bytes while followers finish.
            let path = self.path(&id);
            while let Some(alias) = catalog.by_path(&path) {
                catalog.remove(&alias.id());
            }
            self.remove(&id);
            info!(content = %id, size, "evicted to stay within --cache-size");
            self.evictions.fetch_add(1, Ordering::Relaxed);
            used -= size;
            removed.push(id);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(objects: &Objects, catalog: &Catalog, seed: u8, last_used: u64) -> ContentId {
        let data = vec![seed; 1000];
        let manifest = Manifest::of_bytes(&data, 1 << 20).unwrap();
        let id = manifest.id();
        std::fs::write(objects.path(&id), &data).unwrap();
        objects
            .save(&Record {
                manifest: manifest.clone(),
                name: format!("f{seed}"),
                url: None,
                last_used,
            })
            .unwrap();
        catalog.insert(Arc::new(Entry::complete(
            Arc::new(manifest),
            "f".into(),
            Provenance::Fetched,
            objects.path(&id),
        )));
        id
    }

    #[test]
    fn least_recently_used_go_first_and_pins_stay() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::open(dir.path(), Some(2500)).unwrap();
        let catalog = Catalog::new();
        let old = put(&objects, &catalog, 1, 10);
        let pinned = put(&objects, &catalog, 2, 5);
        let new = put(&objects, &catalog, 3, 20);
        let _pin = objects.pin(pinned);
        assert_eq!(objects.evict(&catalog, 0), vec![old]);
        assert!(catalog.get(&old).is_none() && !objects.path(&old).exists());
        assert!(catalog.get(&new).is_some() && catalog.get(&pinned).is_some());
        assert_eq!(objects.evict(&catalog, 1000), vec![new]);
        assert_eq!(objects.evictions(), 2);
    }

    #[test]
    fn load_seeds_complete_contents_and_forgets_damaged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::open(dir.path(), None).unwrap();
        let catalog = Catalog::new();
        let good = put(&objects, &catalog, 1, 1);
        let cut = put(&objects, &catalog, 2, 1);
        std::fs::remove_file(objects.path(&cut)).unwrap();
        let fresh = Catalog::new();
        assert_eq!(objects.load(&fresh).unwrap(), 1);
        assert!(fresh.get(&good).unwrap().is_complete());
        assert!(fresh.get(&cut).is_none());
        assert!(objects.record(&cut).is_none());
    }
}
