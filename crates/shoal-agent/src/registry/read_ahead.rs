//! Layers fetched before the client asks for them.
//!
//! A client pulling an image asks for its layers one after another (skopeo) or a few at a time
//! (containerd), and each layer through the swarm starts with a round of its own: the
//! tracker asked, a leader chosen, the first pieces passed on; and its followers finish a
//! little after its leader. Pulled one after another, an image pays that for every layer, and
//! the link idles while the client reads a layer and asks for the next. So when a client asks
//! for a layer of a manifest the mirror passed to it, the layers after it in that manifest
//! (`--registry-read-ahead`, one by default) start downloading at once too, shared under their
//! digests as the client's own requests are, which then join them. Measured with
//! `bench/registry.sh 6 200mbit 256M` (skopeo, five layers), one layer ahead took 1.48 × the
//! bound against 1.76 × for none; two ahead 1.54 ×, all at once 1.95 ×; starting each layer
//! only once the one before was whole at the agent 1.68 ×, since the followers then start
//! every layer after its leader (bench/RESULTS.md).
//!
//! Only a layer asked for starts this: a manifest alone (`skopeo inspect`) fetches nothing,
//! and a client that already holds the next layers skips at most that many. The client's
//! request for a layer fetched ahead is still checked against the upstream before a byte of
//! it goes out, and the download ahead uses the credentials of the request that started it,
//! so an upstream that refuses them gets nothing fetched.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Deserialize;

use super::route::BlobDigest;

/// How many manifests' layer lists are kept: the last ones passed through.
const MANIFESTS: usize = 64;
/// The largest manifest read for its layers, as the distribution spec's 4 MiB limit.
pub(super) const MAX_MANIFEST: u64 = 4 << 20;

/// The layer lists of the manifests passed through lately, and how far ahead to fetch.
pub(super) struct ReadAhead {
    depth: usize,
    manifests: Mutex<VecDeque<Layers>>,
}

/// One manifest's layers, in the order it lists them.
struct Layers {
    name: String,
    digests: Vec<BlobDigest>,
}

/// What the mirror reads of an image manifest (OCI or Docker schema 2); an index has no
/// `layers`, and its platforms' manifests are read when the client asks for them.
#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

impl ReadAhead {
    /// Fetches `depth` layers ahead of the one a client asks for; 0 fetches none.
    pub(super) fn new(depth: usize) -> Self {
        Self {
            depth,
            manifests: Mutex::default(),
        }
    }

    /// Notes the layers of `body`, a manifest of repository `name`; anything else (an index, a
    /// body that is not a manifest) is no news.
    pub(super) fn learn(&self, name: &str, body: &[u8]) {
        if self.depth == 0 {
            return;
        }
        let Ok(manifest) = serde_json::from_slice::<Manifest>(body) else {
            return;
        };
        let digests: Vec<BlobDigest> = manifest
            .layers
            .iter()
            .filter_map(|layer| BlobDigest::parse(&layer.digest))
            .collect();
        if digests.len() < 2 {
            return;
        }
        let mut manifests = self.manifests.lock().expect("read-ahead lock");
        manifests.retain(|m| !(m.name == name && m.digests == digests));
        if manifests.len() == MANIFESTS {
            manifests.pop_front();
        }
        manifests.push_back(Layers {
            name: name.to_string(),
            digests,
        });
    }

    /// The layers to fetch now that a client asks for `digest` of repository `name`: the ones
    /// after it in the newest manifest listing it, as many as the depth.
    pub(super) fn after(&self, name: &str, digest: &BlobDigest) -> Vec<BlobDigest> {
        let manifests = self.manifests.lock().expect("read-ahead lock");
        manifests
            .iter()
            .rev()
            .filter(|m| m.name == name)
            .find_map(|m| {
                let at = m.digests.iter().position(|d| d == digest)?;
                Some(
                    m.digests
                        .iter()
                        .skip(at + 1)
                        .take(self.depth)
                        .cloned()
                        .collect(),
                )
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> BlobDigest {
        BlobDigest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    fn manifest(layers: &[u8]) -> Vec<u8> {
        let layers: Vec<_> = layers
            .iter()
            .map(|&n| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(n).to_string(),
                    "size": 1024
                })
            })
            .collect();
        serde_json::json!({
            "schemaVersion": 2,
            "config": {"digest": digest(99).to_string(), "size": 10},
            "layers": layers
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_layer_asked_for_names_the_ones_after_it_in_its_manifest() {
        let ahead = ReadAhead::new(2);
        ahead.learn("team/app", &manifest(&[1, 2, 3, 4]));
        assert_eq!(ahead.after("team/app", &digest(1)), [digest(2), digest(3)]);
        assert_eq!(ahead.after("team/app", &digest(3)), [digest(4)]);
        assert!(ahead.after("team/app", &digest(4)).is_empty());
        assert!(
            ahead.after("team/app", &digest(99)).is_empty(),
            "the config"
        );
        assert!(ahead.after("other/app", &digest(1)).is_empty());
    }

    #[test]
    fn the_newest_manifest_listing_a_layer_decides() {
        let ahead = ReadAhead::new(1);
        ahead.learn("team/app", &manifest(&[1, 2, 3]));
        ahead.learn("team/app", &manifest(&[1, 5]));
        assert_eq!(ahead.after("team/app", &digest(1)), [digest(5)]);
        assert_eq!(ahead.after("team/app", &digest(2)), [digest(3)]);
    }

    #[test]
    fn indexes_bodies_that_are_not_manifests_and_depth_zero_name_nothing() {
        let ahead = ReadAhead::new(1);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"digest": digest(1).to_string(), "size": 500}]
        });
        ahead.learn("team/app", index.to_string().as_bytes());
        ahead.learn("team/app", b"not json");
        assert!(ahead.after("team/app", &digest(1)).is_empty());
        let none = ReadAhead::new(0);
        none.learn("team/app", &manifest(&[1, 2]));
        assert!(none.after("team/app", &digest(1)).is_empty());
    }

    #[test]
    fn only_the_last_manifests_are_kept() {
        let ahead = ReadAhead::new(1);
        ahead.learn("first/app", &manifest(&[1, 2]));
        for n in 0..MANIFESTS {
            ahead.learn(&format!("app/n{n}"), &manifest(&[3, 4]));
        }
        assert!(ahead.after("first/app", &digest(1)).is_empty());
        assert_eq!(ahead.after("app/n0", &digest(3)), [digest(4)]);
    }
}
