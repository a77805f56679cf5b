//! The manifest cache, a JSON file in the data directory, so that unchanged files are never
//! hashed twice, not even across restarts.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_core::Manifest;
use tracing::warn;

/// What the cache knows of one shared file: its manifest, valid while size and mtime match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Cached {
    pub(super) size: u64,
    pub(super) mtime_ns: u128,
    #[serde(with = "arc_manifest")]
    pub(super) manifest: Arc<Manifest>,
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

    pub(super) fn serialize<S: serde::Serializer>(
        m: &Arc<Manifest>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        m.as_ref().serialize(s)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Arc<Manifest>, D::Error> {
        Manifest::deserialize(d).map(Arc::new)
    }
}

/// Loads the cache; a missing file is a first start, a damaged one is logged and ignored.
/// Returns whether the file should be rewritten.
pub(super) fn load_cache(path: &Path) -> (BTreeMap<String, Cached>, bool) {
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
pub(super) fn save_cache(path: &Path, files: &BTreeMap<String, Cached>) -> io::Result<()> {
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
