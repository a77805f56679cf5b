//! Which registry requests the mirror serves through the swarm: `GET` of a blob named by its
//! SHA-256 digest. Everything else under `/v2/` (the `/v2/` ping, manifests, tags, blob `HEAD`s,
//! digests of other algorithms, uploads) passes through to the upstream as it is; a manifest's
//! `GET` is read on the way, for the layers it lists (see `read_ahead`).

use std::fmt;

use http::Method;

/// A blob's SHA-256 digest, `sha256:` and 64 lowercase hex digits: the only form the mirror
/// serves through the swarm, since only it can be checked as the bytes go out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BlobDigest {
    hex: String,
}

impl BlobDigest {
    /// The digest in `sha256:HEX` form; `None` for another algorithm or a malformed one.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("sha256:")?;
        let valid = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Self {
            hex: hex.to_string(),
        })
    }

    /// The 32 bytes of the digest.
    pub(crate) fn bytes(&self) -> [u8; 32] {
        shoal_core::hex::decode_array(&self.hex).expect("64 hex digits, checked when parsed")
    }
}

impl fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// What the mirror does with a request under `/v2/`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `GET /v2/<name>/blobs/sha256:<hex>`: the blob comes through the swarm, keyed by digest.
    Blob {
        /// The repository, e.g. `library/debian`.
        name: &'a str,
        /// The blob's digest.
        digest: BlobDigest,
    },
    /// `GET /v2/<name>/manifests/<reference>`: passed through, its layers noted on the way.
    Manifest {
        /// The repository.
        name: &'a str,
    },
    /// Anything else: passed through to the upstream unchanged.
    PassThrough,
}

/// The route of a request for `path` (without its query).
pub(crate) fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    if method != Method::GET {
        return Route::PassThrough;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Route::PassThrough;
    };
    if let Some((name, _)) = rest.rsplit_once("/manifests/") {
        if is_repository_name(name) {
            return Route::Manifest { name };
        }
        return Route::PassThrough;
    }
    let Some((name, reference)) = rest.rsplit_once("/blobs/") else {
        return Route::PassThrough;
    };
    match BlobDigest::parse(reference) {
        Some(digest) if is_repository_name(name) => Route::Blob { name, digest },
        _ => Route::PassThrough,
    }
}

/// Whether `name` is a repository name as the distribution spec has it: `/`-separated
/// components of lowercase letters and digits joined by `.`, `_`, `__` or runs of `-`.
fn is_repository_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|component| {
            let bytes = component.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
                return false;
            };
            alnum(first)
                && alnum(last)
                && bytes
                    .iter()
                    .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
                && !component.contains("..")
                && !component.contains("___")
                && !component.contains("._")
                && !component.contains("_.")
                && !component.contains(".-")
                && !component.contains("-.")
                && !component.contains("_-")
                && !component.contains("-_")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_blob_get_by_sha256_goes_through_the_swarm() {
        let path = format!("/v2/library/debian/blobs/sha256:{HEX}");
        let Route::Blob { name, digest } = route(&Method::GET, &path) else {
            panic!("not a blob route");
        };
        assert_eq!(name, "library/debian");
        assert_eq!(digest.to_string(), format!("sha256:{HEX}"));
        assert_eq!(digest.bytes()[..2], [0x9f, 0x86]);
    }

    #[test]
    fn names_with_separators_and_deep_paths_are_blobs_too() {
        for name in ["a", "team/app", "my-org/sub.group/app_1", "a__b/c--d"] {
            let path = format!("/v2/{name}/blobs/sha256:{HEX}");
            assert!(
                matches!(route(&Method::GET, &path), Route::Blob { name: n, .. } if n == name),
                "{path}"
            );
        }
    }

    #[test]
    fn a_manifest_get_is_read_for_its_layers() {
        for reference in ["latest", &format!("sha256:{HEX}")] {
            let path = format!("/v2/team/app/manifests/{reference}");
            assert_eq!(
                route(&Method::GET, &path),
                Route::Manifest { name: "team/app" }
            );
            assert_eq!(route(&Method::HEAD, &path), Route::PassThrough);
        }
        let path = "/v2/Team/app/manifests/latest";
        assert_eq!(route(&Method::GET, path), Route::PassThrough);
    }

    #[test]
    fn everything_but_blob_and_manifest_gets_passes_through() {
        let blob = format!("/v2/library/debian/blobs/sha256:{HEX}");
        let cases = [
            (Method::GET, "/v2/".to_string()),
            (Method::GET, "/v2/library/debian/tags/list".to_string()),
            (Method::HEAD, blob.clone()),
            (
                Method::POST,
                "/v2/library/debian/blobs/uploads/".to_string(),
            ),
            (
                Method::GET,
                "/v2/library/debian/blobs/uploads/abc".to_string(),
            ),
            (
                Method::GET,
                format!("/v2/library/debian/blobs/sha512:{HEX}{HEX}"),
            ),
            (
                Method::GET,
                format!("/v2/library/debian/blobs/sha256:{}", &HEX[1..]),
            ),
            (
                Method::GET,
                format!("/v2/library/debian/blobs/sha256:{}", HEX.to_uppercase()),
            ),
            (
                Method::GET,
                format!("/v2/Library/debian/blobs/sha256:{HEX}"),
            ),
            (Method::GET, format!("/v2//blobs/sha256:{HEX}")),
            (Method::GET, format!("/v2/a/../b/blobs/sha256:{HEX}")),
            (
                Method::GET,
                format!("/v3/library/debian/blobs/sha256:{HEX}"),
            ),
        ];
        for (method, path) in cases {
            assert_eq!(route(&method, &path), Route::PassThrough, "{method} {path}");
        }
    }

    #[test]
    fn digests_other_than_64_lowercase_hex_are_refused() {
        assert!(BlobDigest::parse(&format!("sha256:{HEX}")).is_some());
        assert!(BlobDigest::parse(HEX).is_none());
        assert!(BlobDigest::parse(&format!("sha256:{HEX}0")).is_none());
        assert!(BlobDigest::parse(&format!("sha256:{}g", &HEX[1..])).is_none());
    }
}
