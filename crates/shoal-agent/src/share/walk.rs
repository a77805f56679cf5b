//! Finding the files to share: every regular file under the shared directory, with the size,
//! modification time and layout that decide whether its cached manifest still holds.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use shoal_core::Layout;
use tracing::{debug, warn};

use super::{ShareError, Symlinks};
use crate::piece_size;

/// A regular file found by the walk, before its manifest is known.
pub(super) struct Found {
    pub(super) path: PathBuf,
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) mtime_ns: u128,
    pub(super) layout: Layout,
}

/// The shared directory as an absolute path, or an error naming it as given on the command line.
pub(super) fn shared_dir(dir: &Path) -> Result<PathBuf, ShareError> {
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

/// Every regular file under `root` (canonical), skipping hidden names, symlinks to directories
/// (which could loop) and, unless `symlinks` says to follow them all, symlinks whose target is
/// outside `root`. A followed link is found at its target's path, so that what is read later
/// is what was checked, even if the link is changed. Only an unreadable `root` is an error;
/// anything deeper is logged and skipped.
pub(super) fn walk(root: &Path, symlinks: Symlinks) -> Result<Vec<Found>, ShareError> {
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
            let link = entry.path();
            let file_type = entry.file_type();
            if file_type.as_ref().is_ok_and(|t| t.is_dir()) {
                dirs.push(link);
                continue;
            }
            let path = if file_type.is_ok_and(|t| t.is_symlink()) {
                match fs::canonicalize(&link) {
                    Ok(target) if symlinks == Symlinks::Follow || target.starts_with(root) => {
                        target
                    }
                    Ok(target) => {
                        warn!(
                            path = %link.display(),
                            target = %target.display(),
                            "a symlink out of the shared directory; not shared (see --follow-symlinks)"
                        );
                        continue;
                    }
                    Err(e) => {
                        debug!(path = %link.display(), "a dangling symlink; not shared: {e}");
                        continue;
                    }
                }
            } else {
                link.clone()
            };
            // A link to a file is shared under the link's name; a link to a directory is not.
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    let name = relative_name(root, &link);
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

fn mtime_ns(meta: &fs::Metadata) -> u128 {
    // Times before the epoch (restored archives, rarely) all read as 0; the size still differs.
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

pub(super) fn stat(path: &Path) -> io::Result<(u64, u128)> {
    let meta = fs::metadata(path)?;
    Ok((meta.len(), mtime_ns(&meta)))
}
