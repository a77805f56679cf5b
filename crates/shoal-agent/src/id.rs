//! The agent's default id: the host name and a random suffix, chosen on the first start and
//! kept in the data directory (`agent-id`), as Docker keeps its engine id in its data root.
//!
//! The host name alone is not unique where it matters most: cloned VMs, containers and network
//! namespaces share it, and so does `/etc/machine-id` on clones and namespaces, so neither can
//! tell such agents apart. A random suffix can; kept in the data directory it survives restarts,
//! so the tracker sees the same agent come back.

use std::io;
use std::path::{Path, PathBuf};

use rand::RngCore;
use shoal_core::wire::{AgentId, MAX_AGENT_ID_LEN};
use thiserror::Error;

/// The file in the data directory that keeps the default id.
pub const ID_FILE: &str = "agent-id";
/// Hex digits of the random suffix.
const SUFFIX_LEN: usize = 8;

/// Why no default id could be chosen (or kept).
#[derive(Debug, Error)]
pub enum IdError {
    /// The host name could not be read.
    #[error("cannot read the host name: {0}")]
    HostName(#[source] io::Error),
    /// The host name is empty, so no id can be made from it.
    #[error("the host name is empty")]
    NoHostName,
    /// The id file in the data directory does not hold a valid agent id.
    #[error("{} does not hold a valid agent id; remove it or give --id", path.display())]
    BadFile {
        /// The id file's path.
        path: PathBuf,
    },
    /// The id file could not be read or written.
    #[error("keeping the agent id in {}: {source}", path.display())]
    Io {
        /// The id file's path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// The id kept in `data`, or a new one (`HOST-xxxxxxxx`) written there.
pub fn default_id(data: &Path) -> Result<AgentId, IdError> {
    let path = data.join(ID_FILE);
    let io = |source| IdError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => return AgentId::new(text.trim()).map_err(|_| IdError::BadFile { path }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(IdError::HostName)?;
    let id = with_suffix(&host, rand::rng().next_u32()).ok_or(IdError::NoHostName)?;
    let tmp = data.join(format!(".{ID_FILE}.{}", std::process::id()));
    std::fs::write(&tmp, format!("{id}\n")).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(id)
}

/// `host` made safe for an id (other characters become `-`), shortened to leave room for the
/// suffix, then `-` and `suffix` in hex.
fn with_suffix(host: &str, suffix: u32) -> Option<AgentId> {
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(MAX_AGENT_ID_LEN - SUFFIX_LEN - 1)
        .collect();
    if host.is_empty() {
        return None;
    }
    AgentId::new(format!("{host}-{suffix:0width$x}", width = SUFFIX_LEN)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suffix_fits_any_host_name() {
        assert_eq!(
            with_suffix("web1\n", 0xab).unwrap().as_str(),
            "web1-000000ab"
        );
        assert_eq!(
            with_suffix("my host", 1).unwrap().as_str(),
            "my-host-00000001"
        );
        let long = with_suffix(&"h".repeat(200), u32::MAX).unwrap();
        assert_eq!(long.as_str().len(), MAX_AGENT_ID_LEN);
        assert!(with_suffix(" \n", 1).is_none());
    }

    #[test]
    fn the_id_is_kept_across_starts_and_differs_between_data_directories() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = default_id(a.path()).unwrap();
        assert_eq!(default_id(a.path()).unwrap(), first);
        assert_ne!(default_id(b.path()).unwrap(), first);
        std::fs::write(a.path().join(ID_FILE), "a/b\n").unwrap();
        assert!(matches!(default_id(a.path()), Err(IdError::BadFile { .. })));
    }
}
