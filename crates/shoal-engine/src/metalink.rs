//! Metalink documents: for each of one or more files, its mirrors, its whole-file hashes and
//! its piece hashes. Both formats in use are read:
//!
//! - v4, RFC 5854 (`.meta4`), namespace `urn:ietf:params:xml:ns:metalink`;
//! - v3 (`.metalink`), namespace `http://www.metalinker.org/`.
//!
//! [`parse`] is pure (text in, checked [`Metalink`] out) and uses a real XML parser
//! (`roxmltree`), which refuses DTDs, so no entity expansion happens. Fetching from the mirrors
//! is the scheduler's job.
//!
//! What is kept and how it is normalized:
//!
//! - **Names** go through [`shoal_core::naming::sanitize_file_name`]: `../../etc/passwd` becomes `passwd`, and
//!   two files that end up with the same name are an error rather than one overwriting the other.
//! - **Mirrors**: only `http` and `https` URLs. Others (ftp, magnet, a v4 `<metaurl>` or v3
//!   `type="bittorrent"` torrent, text that is not a URL) are listed in
//!   [`MetalinkFile::skipped_urls`], redacted. [`MirrorUrl::priority`] always has the v4 meaning,
//!   **lower is preferred** (1 is the best); a v3 `preference` (0–100, higher is preferred)
//!   becomes `101 − preference`, so preference 100 is priority 1 and preference 0 is 101. URLs
//!   are sorted by priority, those without one last, ties in document order.
//! - **Hashes**: whole-file sha-256, sha-512, sha-1 and md5 (spelled `sha-256` as in the IANA
//!   registry v4 uses, or `sha256` as v3 does), sorted in the engine's order of preference,
//!   that of [`ChecksumAlgo::ALL`] (sha-256, sha-512, sha-1, md5), so `hashes[0]` is the one to
//!   verify. Other types are not an error; their names are listed in
//!   [`MetalinkFile::skipped_hashes`].
//! - **Pieces**: of several `<pieces>` sets of known types, the preferred one by the same
//!   order; every set's count must match the size when the size is known.

use roxmltree::{Document, Node};
pub use shoal_core::checksum::PieceHashes;
use shoal_core::{hex, Checksum, ChecksumAlgo};
use thiserror::Error;
use url::Url;

use crate::urllist::{shown_unparsed, shown_url};
use shoal_core::naming::sanitize_file_name;

/// The XML namespace of Metalink v4 (RFC 5854).
pub const NS_V4: &str = "urn:ietf:params:xml:ns:metalink";
/// The XML namespace of Metalink v3.
pub const NS_V3: &str = "http://www.metalinker.org/";

/// Lowest priority value RFC 5854 allows; also what a v3 preference of 100 becomes.
const BEST_PRIORITY: u32 = 1;
/// Highest priority value RFC 5854 allows.
const WORST_PRIORITY: u32 = 999_999;

/// Which Metalink format a document was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Metalink v3 (`.metalink`, namespace [`NS_V3`]).
    V3,
    /// Metalink v4, RFC 5854 (`.meta4`, namespace [`NS_V4`]).
    V4,
}

/// A parsed, checked Metalink document, as [`parse`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metalink {
    /// The format the document was written in; fields read the same either way.
    pub version: Version,
    /// At least one file, in document order, with distinct names.
    pub files: Vec<MetalinkFile>,
}

/// One file a Metalink describes: where to fetch it and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetalinkFile {
    /// Sanitized: one path component, safe to join to the output directory.
    pub name: String,
    /// The file's length in bytes from `<size>`; `None` when the document gives none.
    pub size: Option<u64>,
    /// At least one, `http`/`https` only, best first (see the module doc), no duplicates.
    pub urls: Vec<MirrorUrl>,
    /// Whole-file hashes of known types, preferred first, one per type.
    pub hashes: Vec<Checksum>,
    /// Hashes of equal-length pieces (the preferred known type, when several are given); `None`
    /// when there are none.
    pub pieces: Option<PieceHashes>,
    /// Hash types (whole-file or pieces) present but not understood, as spelled, once each.
    pub skipped_hashes: Vec<String>,
    /// Sources present but not usable by an HTTP downloader.
    pub skipped_urls: Vec<SkippedUrl>,
}

/// One HTTP(S) mirror of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorUrl {
    /// The mirror's URL, credentials and all as written (redact before showing it).
    pub url: Url,
    /// 1 (best) to 999999 with the v4 meaning, lower is preferred; `None` ranks last.
    pub priority: Option<u32>,
    /// Where the mirror is, as the document says (v4: an ISO 3166-1 country code).
    pub location: Option<String>,
}

/// A source of a file that an HTTP downloader cannot use, listed so the user can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedUrl {
    /// The URL with credentials redacted (or only the part safe to show, if it is not a URL).
    pub url: String,
    /// Why it is not used.
    pub reason: SkipReason,
}

/// Why a Metalink source was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Not http or https: the scheme (`ftp`, `magnet`, …, or a v3 `type` attribute).
    Scheme(String),
    /// Describes the file rather than serving it: a v4 `<metaurl>` (with its media type, e.g.
    /// `torrent`) or a v3 `type="bittorrent"` URL.
    Metadata(String),
    /// Not a URL.
    Unparseable,
}

/// Why a Metalink document was refused; every message gives the line, and the file where it
/// applies.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MetalinkError {
    /// The text is not well-formed XML (or has a DTD, which the parser refuses).
    #[error("malformed XML at line {line}, column {column}: {detail}")]
    Xml {
        /// The 1-based line of the fault.
        line: u32,
        /// The 1-based column of the fault.
        column: u32,
        /// The XML parser's message.
        detail: String,
    },

    /// The root element is not `<metalink>` in the v3 or v4 namespace.
    #[error(
        "not a Metalink document: the root element is {found}; expected <metalink> in \
         namespace {NS_V4} (v4, .meta4) or {NS_V3} (v3, .metalink)"
    )]
    NotMetalink {
        /// The root element's name, with its namespace when it has one.
        found: String,
    },

    /// No `<file>` element.
    #[error("the Metalink document describes no file")]
    NoFiles,

    /// A `<file>` has no `name` attribute, or an empty one.
    #[error("line {line}: a <file> without a name")]
    MissingName {
        /// The 1-based line of the `<file>`.
        line: u32,
    },

    /// A file name that sanitizing reduces to nothing (`..`, `/`).
    #[error("line {line}: file name {name:?} leaves nothing to save under")]
    BadName {
        /// The 1-based line of the `<file>`.
        line: u32,
        /// The name as written.
        name: String,
    },

    /// Two files' names are the same after sanitizing.
    #[error(
        "line {line}: a second file named {name:?} (names are reduced to their last component)"
    )]
    DuplicateName {
        /// The 1-based line of the second `<file>`.
        line: u32,
        /// The name as written.
        name: String,
    },

    /// A file has no `http` or `https` URL to fetch from.
    #[error("{file} (line {line}): no http or https URL ({skipped} other sources skipped)")]
    NoUsableUrl {
        /// The file's sanitized name.
        file: String,
        /// The 1-based line of the `<file>`.
        line: u32,
        /// How many other sources (ftp, torrents, …) were skipped.
        skipped: usize,
    },

    /// A `<size>` is not a whole number of bytes.
    #[error("{file} (line {line}): size {text:?} is not a number of bytes")]
    BadSize {
        /// The file's sanitized name.
        file: String,
        /// The 1-based line of the `<size>`.
        line: u32,
        /// The size text as written.
        text: String,
    },

    /// A hash of a known type has the wrong length or is not hex.
    #[error("{file} (line {line}): {algo} hash is not {} hex digits: {text:?}", algo.digest_len() * 2)]
    BadHash {
        /// The file's sanitized name.
        file: String,
        /// The 1-based line of the `<hash>`.
        line: u32,
        /// The hash's algorithm.
        algo: ChecksumAlgo,
        /// The hash text as written.
        text: String,
    },

    /// Two hashes of one type disagree.
    #[error("{file} (line {line}): two different {algo} hashes")]
    ConflictingHash {
        /// The file's sanitized name.
        file: String,
        /// The 1-based line of the second `<hash>`.
        line: u32,
        /// The algorithm of both.
        algo: ChecksumAlgo,
    },

    /// A `<pieces>` `length` is not a positive number of bytes.
    #[error("{file} (line {line}): piece length {text:?} is not a positive number of bytes")]
    BadPieceLength {
        /// The file's sanitized name.
        file: String,
        /// The 1-based line of the `<pieces>`.
        line: u32,
        /// The length text as written.
        text: String,
    },

    /// A `<pieces>` set has a different number of hashes than the size and piece length make.
    #[error(
        "{file} (line {line}): {actual} piece hashes, but {size} bytes in pieces of {length} \
         make {expected}"
    )]
    PieceCount {
        /// The file's sanitized name.
        file: String,
        /// The 1-based line of the `<pieces>`.
        line: u32,
        /// The file's length in bytes.
        size: u64,
        /// The piece length in bytes.
        length: u64,
        /// Hashes needed: `size` over `length`, rounded up.
        expected: u64,
        /// Hashes given.
        actual: usize,
    },

    /// v3 `<hash piece="N">` numbers do not name the pieces 0 to n-1 each once.
    #[error("{file} (line {line}): piece numbers are not 0, 1, 2, … each once")]
    PieceIndex {
        /// The file's sanitized name.
        file: String,
        /// The 1-based line of the `<pieces>`.
        line: u32,
    },
}

/// Parses a Metalink v4 or v3 document (see the module doc for what is kept).
pub fn parse(xml: &str) -> Result<Metalink, MetalinkError> {
    let doc = Document::parse(xml).map_err(xml_error)?;
    let root = doc.root_element();
    let version = match (root.tag_name().namespace(), root.tag_name().name()) {
        (Some(NS_V4), "metalink") => Version::V4,
        (Some(NS_V3), "metalink") => Version::V3,
        (ns, name) => {
            return Err(MetalinkError::NotMetalink {
                found: match ns {
                    Some(ns) => format!("<{name}> in namespace {ns}"),
                    None => format!("<{name}> without a namespace"),
                },
            })
        }
    };
    let reader = Reader {
        doc: &doc,
        ns: match version {
            Version::V4 => NS_V4,
            Version::V3 => NS_V3,
        },
        version,
    };
    let file_nodes: Vec<Node> = match version {
        Version::V4 => reader.children(root, "file").collect(),
        Version::V3 => reader
            .children(root, "files")
            .flat_map(|files| reader.children(files, "file"))
            .collect(),
    };
    let mut files: Vec<MetalinkFile> = Vec::with_capacity(file_nodes.len());
    for node in file_nodes {
        let file = reader.file(node)?;
        if files.iter().any(|f| f.name == file.name) {
            return Err(MetalinkError::DuplicateName {
                line: reader.line(node),
                name: file.name,
            });
        }
        files.push(file);
    }
    if files.is_empty() {
        return Err(MetalinkError::NoFiles);
    }
    Ok(Metalink { version, files })
}

fn xml_error(error: roxmltree::Error) -> MetalinkError {
    let pos = error.pos();
    let detail = error.to_string();
    // roxmltree ends most messages with " at ROW:COL"; the fields say that already.
    let detail = detail
        .strip_suffix(&format!(" at {pos}"))
        .map_or_else(|| detail.clone(), str::to_string);
    MetalinkError::Xml {
        line: pos.row,
        column: pos.col,
        detail,
    }
}

/// Reads the elements of one dialect.
struct Reader<'d, 'i> {
    doc: &'d Document<'i>,
    ns: &'static str,
    version: Version,
}

impl<'d, 'i> Reader<'d, 'i> {
    fn line(&self, node: Node) -> u32 {
        self.doc.text_pos_at(node.range().start).row
    }

    fn children<'n>(
        &self,
        node: Node<'n, 'i>,
        name: &'static str,
    ) -> impl Iterator<Item = Node<'n, 'i>> + 'n {
        let ns = self.ns;
        node.children().filter(move |c| {
            c.is_element() && c.tag_name().namespace() == Some(ns) && c.tag_name().name() == name
        })
    }

    fn child<'n>(&self, node: Node<'n, 'i>, name: &'static str) -> Option<Node<'n, 'i>> {
        self.children(node, name).next()
    }

    /// Where the hashes and pieces are: `<file>` in v4, `<file><verification>` in v3.
    fn verification_nodes<'n>(&self, file: Node<'n, 'i>) -> Vec<Node<'n, 'i>> {
        match self.version {
            Version::V4 => vec![file],
            Version::V3 => self.children(file, "verification").collect(),
        }
    }

    fn file(&self, node: Node) -> Result<MetalinkFile, MetalinkError> {
        // Line numbers cost a scan from the start: only errors compute them.
        let line = || self.line(node);
        let raw_name = node
            .attribute("name")
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| MetalinkError::MissingName { line: line() })?;
        let name = sanitize_file_name(raw_name).ok_or_else(|| MetalinkError::BadName {
            line: line(),
            name: raw_name.to_string(),
        })?;

        let size = match self.child(node, "size") {
            None => None,
            Some(size) => {
                let text = text(size);
                Some(text.parse::<u64>().map_err(|_| MetalinkError::BadSize {
                    file: name.clone(),
                    line: self.line(size),
                    text: text.to_string(),
                })?)
            }
        };

        let mut skipped_hashes = Vec::new();
        let mut skip_hash = |kind: &str| {
            let kind = if kind.is_empty() { "(no type)" } else { kind };
            if !skipped_hashes.iter().any(|s: &String| s == kind) {
                skipped_hashes.push(kind.to_string());
            }
        };

        let mut hashes: Vec<Checksum> = Vec::new();
        let mut pieces: Option<PieceHashes> = None;
        for place in self.verification_nodes(node) {
            for hash in self.children(place, "hash") {
                let kind = hash.attribute("type").unwrap_or("").trim();
                let Some(algo) = algo_named(kind) else {
                    skip_hash(kind);
                    continue;
                };
                let sum = self.digest(hash, algo, &name)?;
                match hashes.iter().find(|h| h.algo() == algo) {
                    Some(known) if known.digest() == sum.as_slice() => {}
                    Some(_) => {
                        return Err(MetalinkError::ConflictingHash {
                            file: name.clone(),
                            line: self.line(hash),
                            algo,
                        })
                    }
                    None => hashes.push(Checksum::new(algo, sum).expect("length checked")),
                }
            }
            for set in self.children(place, "pieces") {
                let kind = set.attribute("type").unwrap_or("").trim();
                let Some(algo) = algo_named(kind) else {
                    skip_hash(kind);
                    continue;
                };
                let found = self.pieces(set, algo, size, &name)?;
                if pieces
                    .as_ref()
                    .is_none_or(|p| strength(found.algo) < strength(p.algo))
                {
                    pieces = Some(found);
                }
            }
        }
        hashes.sort_by_key(|h| strength(h.algo()));

        let (urls, skipped_urls) = self.urls(node);
        if urls.is_empty() {
            return Err(MetalinkError::NoUsableUrl {
                file: name,
                line: line(),
                skipped: skipped_urls.len(),
            });
        }
        Ok(MetalinkFile {
            name,
            size,
            urls,
            hashes,
            pieces,
            skipped_hashes,
            skipped_urls,
        })
    }

    fn digest(&self, hash: Node, algo: ChecksumAlgo, file: &str) -> Result<Vec<u8>, MetalinkError> {
        let text = text(hash);
        hex::decode(text)
            .ok()
            .filter(|d| d.len() == algo.digest_len())
            .ok_or_else(|| MetalinkError::BadHash {
                file: file.to_string(),
                line: self.line(hash),
                algo,
                text: text.chars().take(160).collect(),
            })
    }

    fn pieces(
        &self,
        set: Node,
        algo: ChecksumAlgo,
        size: Option<u64>,
        file: &str,
    ) -> Result<PieceHashes, MetalinkError> {
        let line = || self.line(set);
        let length_text = set.attribute("length").unwrap_or("").trim();
        let length = length_text
            .parse::<u64>()
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| MetalinkError::BadPieceLength {
                file: file.to_string(),
                line: line(),
                text: length_text.to_string(),
            })?;
        let mut numbered: Vec<(Option<&str>, Vec<u8>)> = Vec::new();
        for hash in self.children(set, "hash") {
            numbered.push((hash.attribute("piece"), self.digest(hash, algo, file)?));
        }
        // v3 numbers its pieces; when any number is given, they must be 0..n, each once.
        let hashes = if numbered.iter().any(|(n, _)| n.is_some()) {
            let count = numbered.len();
            let mut slots: Vec<Option<Vec<u8>>> = vec![None; count];
            for (number, digest) in numbered {
                let slot = number
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .and_then(|i| slots.get_mut(i))
                    .filter(|s| s.is_none())
                    .ok_or_else(|| MetalinkError::PieceIndex {
                        file: file.to_string(),
                        line: line(),
                    })?;
                *slot = Some(digest);
            }
            slots
                .into_iter()
                .map(|s| s.expect("n slots filled by n distinct numbers"))
                .collect()
        } else {
            numbered.into_iter().map(|(_, d)| d).collect::<Vec<_>>()
        };
        if let Some(size) = size {
            let expected = size.div_ceil(length);
            if hashes.len() as u64 != expected {
                return Err(MetalinkError::PieceCount {
                    file: file.to_string(),
                    line: line(),
                    size,
                    length,
                    expected,
                    actual: hashes.len(),
                });
            }
        }
        Ok(PieceHashes {
            algo,
            length,
            hashes,
        })
    }

    fn urls(&self, file: Node) -> (Vec<MirrorUrl>, Vec<SkippedUrl>) {
        let mut urls: Vec<MirrorUrl> = Vec::new();
        let mut skipped = Vec::new();
        let candidates: Vec<Node> = match self.version {
            Version::V4 => {
                for meta in self.children(file, "metaurl") {
                    let media = meta.attribute("mediatype").unwrap_or("").trim();
                    skipped.push(SkippedUrl {
                        url: shown(text(meta)),
                        reason: SkipReason::Metadata(media.to_string()),
                    });
                }
                self.children(file, "url").collect()
            }
            Version::V3 => self
                .children(file, "resources")
                .flat_map(|r| self.children(r, "url"))
                .collect(),
        };
        for node in candidates {
            let raw = text(node);
            if self.version == Version::V3 {
                let kind = node
                    .attribute("type")
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if !matches!(kind.as_str(), "" | "http" | "https") {
                    skipped.push(SkippedUrl {
                        url: shown(raw),
                        reason: if kind == "bittorrent" {
                            SkipReason::Metadata(kind)
                        } else {
                            SkipReason::Scheme(kind)
                        },
                    });
                    continue;
                }
            }
            let url = match Url::parse(raw) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => url,
                Ok(url) => {
                    skipped.push(SkippedUrl {
                        url: shown_url(&url),
                        reason: SkipReason::Scheme(url.scheme().to_string()),
                    });
                    continue;
                }
                Err(_) => {
                    skipped.push(SkippedUrl {
                        url: shown_unparsed(raw),
                        reason: SkipReason::Unparseable,
                    });
                    continue;
                }
            };
            if urls.iter().any(|u| u.url == url) {
                continue;
            }
            let priority = match self.version {
                Version::V4 => node
                    .attribute("priority")
                    .and_then(|p| p.trim().parse::<u32>().ok())
                    .filter(|p| (BEST_PRIORITY..=WORST_PRIORITY).contains(p)),
                Version::V3 => node
                    .attribute("preference")
                    .and_then(|p| p.trim().parse::<u32>().ok())
                    .map(|p| 101 - p.min(100)),
            };
            let location = node
                .attribute("location")
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string);
            urls.push(MirrorUrl {
                url,
                priority,
                location,
            });
        }
        // Stable: equal priorities keep document order.
        urls.sort_by_key(|u| u.priority.unwrap_or(u32::MAX));
        (urls, skipped)
    }
}

/// The text content of an element, trimmed.
fn text<'a>(node: Node<'a, '_>) -> &'a str {
    node.text().unwrap_or("").trim()
}

/// A source's text made safe to print.
fn shown(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(url) => shown_url(&url),
        Err(_) => shown_unparsed(raw),
    }
}

/// `sha-256` (IANA, v4) and `sha256` (v3) alike, any case.
fn algo_named(name: &str) -> Option<ChecksumAlgo> {
    match name.to_ascii_lowercase().replace('-', "").as_str() {
        "sha256" => Some(ChecksumAlgo::Sha256),
        "sha512" => Some(ChecksumAlgo::Sha512),
        "sha1" => Some(ChecksumAlgo::Sha1),
        "md5" => Some(ChecksumAlgo::Md5),
        _ => None,
    }
}

/// Position in [`ChecksumAlgo::ALL`]: lower is preferred.
fn strength(algo: ChecksumAlgo) -> usize {
    ChecksumAlgo::ALL
        .iter()
        .position(|&a| a == algo)
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests;
