//! Test images: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) of random
//! layers written to a directory, and its push to a registry with `skopeo copy`.
//!
//! Each layer is an uncompressed tar holding one file of random bytes, so that clients which
//! unpack layers (containerd) accept it; its diff id is its digest.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::registry::{Credentials, Registry};
use crate::{random_bytes, sha256_hex};

/// Where Debian's `skopeo` package puts the binary.
const SKOPEO: &str = "/usr/bin/skopeo";
/// The media type of an uncompressed OCI layer.
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// The media type of an OCI image manifest.
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of an OCI image config.
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// A tar block.
const BLOCK: usize = 512;

/// A blob of an image: its digest's hex (without `sha256:`) and its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Lowercase hex SHA-256 of the blob.
    pub hex: String,
    /// Its length in bytes.
    pub size: u64,
}

impl Blob {
    /// `sha256:HEX`, as manifests and registries name it.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.hex)
    }
}

/// An OCI image layout on disk, tagged `tag`.
#[derive(Clone, Debug)]
pub struct OciImage {
    /// The layout's directory.
    pub dir: PathBuf,
    /// The tag in `index.json` (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// The layers, in the manifest's order.
    pub layers: Vec<Blob>,
    /// The image config.
    pub config: Blob,
    /// The image manifest.
    pub manifest: Blob,
}

impl OciImage {
    /// Writes an image of one layer per entry of `layer_sizes` (each holding a file of that
    /// many random bytes, from `seed` on) to `dir`, tagged `tag`.
    ///
    /// # Errors
    /// When `dir` cannot be written.
    pub fn build(dir: &Path, tag: &str, layer_sizes: &[usize], seed: u64) -> io::Result<OciImage> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs)?;
        let put = |data: &[u8]| -> io::Result<Blob> {
            let blob = Blob {
                hex: sha256_hex(data),
                size: data.len() as u64,
            };
            fs::write(blobs.join(&blob.hex), data)?;
            Ok(blob)
        };
        let layers = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let file = random_bytes(size, seed.wrapping_add(i as u64));
                put(&tar_of(&format!("layer-{i}.bin"), &file))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(Blob::digest).collect::<Vec<_>>(),
            },
        });
        let config = put(&serde_json::to_vec(&config).expect("JSON"))?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": config.digest(), "size": config.size},
            "layers": layers
                .iter()
                .map(|l| json!({"mediaType": LAYER_TYPE, "digest": l.digest(), "size": l.size}))
                .collect::<Vec<_>>(),
        });
        let manifest = put(&serde_json::to_vec(&manifest).expect("JSON"))?;
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": MANIFEST_TYPE,
                "digest": manifest.digest(),
                "size": manifest.size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        });
        fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&index).expect("JSON"),
        )?;
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(OciImage {
            dir: dir.to_path_buf(),
            tag: tag.to_string(),
            layers,
            config,
            manifest,
        })
    }

    /// The bytes of every blob (layers and config): what a pull of the image fetches as blobs.
    pub fn blobs_size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum::<u64>() + self.config.size
    }

    /// The blob `hex` as stored in the layout.
    ///
    /// # Errors
    /// When it cannot be read.
    pub fn blob(&self, hex: &str) -> io::Result<Vec<u8>> {
        fs::read(self.dir.join("blobs/sha256").join(hex))
    }

    /// Pushes the image to `registry` as `name:TAG` with `skopeo copy` (plain HTTP), with
    /// `credentials` when the registry wants them.
    ///
    /// # Errors
    /// When skopeo is missing or fails; the error carries its output.
    pub fn push(
        &self,
        registry: &Registry,
        name: &str,
        credentials: Option<&Credentials>,
    ) -> io::Result<()> {
        let mut skopeo = Command::new(SKOPEO);
        // Without --preserve-digests skopeo gzips the uncompressed layers on the way, and the
        // registry would hold other digests than the layout's.
        skopeo.args([
            "--insecure-policy",
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if let Some(credentials) = credentials {
            skopeo.arg("--dest-creds").arg(credentials.joined());
        }
        let output = skopeo
            .arg(format!("oci:{}:{}", self.dir.display(), self.tag))
            .arg(format!("docker://{}/{name}:{}", registry.host(), self.tag))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("{SKOPEO}: {e} (apt-get install skopeo)"))
            })?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "skopeo copy to {} failed ({}): {}",
                registry.host(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }
}

/// An uncompressed ustar archive holding `data` as the regular file `name`.
fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; BLOCK];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let mut field = |at: usize, width: usize, value: u64| {
        let text = format!("{value:0w$o}\0", w = width - 1);
        header[at..at + width].copy_from_slice(text.as_bytes());
    };
    field(100, 8, 0o644); // mode
    field(108, 8, 0); // uid
    field(116, 8, 0); // gid
    field(124, 12, data.len() as u64); // size
    field(136, 12, 0); // mtime
    header[156] = b'0'; // a regular file
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = Vec::with_capacity(BLOCK + data.len().next_multiple_of(BLOCK) + 2 * BLOCK);
    tar.extend_from_slice(&header);
    tar.extend_from_slice(data);
    tar.resize(BLOCK + data.len().next_multiple_of(BLOCK) + 2 * BLOCK, 0);
    tar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_of_is_read_back_by_tar() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(3000, 7);
        fs::write(dir.path().join("a.tar"), tar_of("layer-0.bin", &data)).unwrap();
        let listed = Command::new("tar")
            .arg("-xf")
            .arg(dir.path().join("a.tar"))
            .arg("-C")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(listed.success());
        assert_eq!(fs::read(dir.path().join("layer-0.bin")).unwrap(), data);
    }

    #[test]
    fn build_writes_blobs_named_by_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let image = OciImage::build(dir.path(), "v1", &[1000, 2000], 3).unwrap();
        assert_eq!(image.layers.len(), 2);
        for blob in image.layers.iter().chain([&image.config, &image.manifest]) {
            let bytes = image.blob(&blob.hex).unwrap();
            assert_eq!(sha256_hex(&bytes), blob.hex);
            assert_eq!(bytes.len() as u64, blob.size);
        }
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], image.manifest.digest());
    }
}
