//! A URL whose content's SHA-256 is known beforehand (a registry blob, named by its digest):
//! the fleet shares it under the digest instead of the URL, so the same bytes from two image
//! names or two registries are one swarm and one content; and a download whose bytes hash to
//! anything else fails before it is kept or published, so no agent ever offers it as that
//! digest's content.

use std::path::Path;

use sha2::{Digest, Sha256};
use shoal_core::wire::UrlKey;
use shoal_core::ContentId;
use shoal_engine::UrlVersion;
use tracing::warn;

use super::landing::Landing;
use super::sha256_follower::{self, Hashed};
use super::{AgentFetchError, Job};

/// The name the tracker knows a content of SHA-256 `digest` by: an `https` URL (the tracker
/// takes no other kind) under `.invalid`, which never resolves (RFC 2606), so no origin's URL
/// is ever the same.
pub(super) fn shared_url(digest: &[u8; 32]) -> String {
    format!("https://sha256.invalid/{}", shoal_core::hex::encode(digest))
}

impl Job<'_> {
    /// What the tracker is asked about a URL version: the URL without credentials (they are
    /// the user's, not the fleet's), its size and validators; for a content of known SHA-256,
    /// its digest's name and size only (validators differ from registry to registry; the
    /// digest alone names the bytes).
    pub(super) fn key(&self, version: &UrlVersion) -> UrlKey {
        match &self.sha256 {
            Some(digest) => UrlKey {
                url: shared_url(digest),
                size: version.size,
                etag: None,
                last_modified: None,
            },
            None => UrlKey {
                url: shoal_core::redact::without_credentials(&version.url).to_string(),
                size: version.size,
                etag: version.etag.clone(),
                last_modified: version.last_modified.clone(),
            },
        }
    }

    /// Checks the whole download at `path` (content `id`) against the SHA-256 the fetch was
    /// asked for, if any, and tells a reader that it passed. Most of the bytes were hashed as
    /// they landed (`sha256_follower`); the rest, or the whole file when it was not followed,
    /// is read now. A mismatch drops the content: its file and its catalog entries (`also`, a
    /// swarm's id it was served under while downloading), so it is neither kept, published
    /// nor served.
    pub(super) async fn check_sha256(
        &self,
        path: &Path,
        id: ContentId,
        also: Option<ContentId>,
    ) -> Result<(), AgentFetchError> {
        let Some(expected) = self.sha256 else {
            return Ok(());
        };
        let followed = match &self.sha256_follower {
            Some(follower) => follower.finish(path).await,
            None => None,
        };
        let hashed = path.to_path_buf();
        let actual = tokio::task::spawn_blocking(move || match followed {
            Some(followed) => finish_hash(&hashed, followed),
            None => hash_file(&hashed),
        })
        .await
        .expect("hashing does not panic")
        .map_err(|source| crate::objects::ObjectsError {
            path: path.to_path_buf(),
            op: "read back to check its SHA-256",
            source,
        })?;
        if actual == expected {
            self.tell(Landing::Trusted);
            return Ok(());
        }
        let (expected, actual) = (
            shoal_core::hex::encode(&expected),
            shoal_core::hex::encode(&actual),
        );
        warn!(
            content = %id,
            "the download hashes to sha256:{actual}, not sha256:{expected} as asked; dropping it"
        );
        for content in std::iter::once(id).chain(also) {
            self.f.catalog.remove(&content);
        }
        let _ = tokio::fs::remove_file(path).await;
        Err(AgentFetchError::Sha256 { expected, actual })
    }
}

/// The SHA-256 of the whole file at `path`, of which `followed` hashed a prefix. Blocking.
fn finish_hash(path: &Path, followed: Hashed) -> std::io::Result<[u8; 32]> {
    let Hashed {
        file,
        mut hasher,
        upto,
        ..
    } = followed;
    let file = match file {
        Some(file) => file,
        None => std::sync::Arc::new(std::fs::File::open(path)?),
    };
    let size = file.metadata()?.len();
    sha256_follower::hash_into(&file, upto, size, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// The SHA-256 of the file at `path`. Blocking.
fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    sha256_follower::hash_into(&file, 0, file.metadata()?.len(), &mut hasher)?;
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_shared_under_a_url_no_origin_has() {
        let digest = [0xab; 32];
        let url = shared_url(&digest);
        assert_eq!(url, format!("https://sha256.invalid/{}", "ab".repeat(32)));
        let parsed = url::Url::parse(&url).unwrap();
        assert_eq!(parsed.host_str(), Some("sha256.invalid"));
    }

    #[test]
    fn hash_file_is_the_sha256_of_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            shoal_core::hex::encode(&hash_file(&path).unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
