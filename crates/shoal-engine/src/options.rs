//! What a caller asks of a download, validated once in types.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use shoal_core::manifest::PieceDigest;
use shoal_core::{Bitfield, Checksum, Layout, Manifest};
use tokio::sync::{watch, Notify};

use shoal_core::checksum::PieceHashes;

use crate::ca::ExtraRoots;
use crate::naming::Claims;
use crate::ratelimit::SharedRate;
use crate::stream::StreamSink;
use crate::tally::Tally;
use thiserror::Error;
use url::Url;

/// The largest file shoal downloads, 256 TiB: the resume state counts blocks of [`BLOCK`]
/// bytes in a `u32`. A server that says its file is larger is answered with an error.
pub const MAX_SIZE: u64 = u32::MAX as u64 * BLOCK;

/// Block size of the engine: segments start and end on multiples of this, and resume state
/// counts in blocks.
pub const BLOCK: u64 = 64 * 1024;

/// A download option out of its range; the message gives the range and the value given.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptionError {
    /// The connection count is 0 or over [`Connections::MAX`].
    #[error("connections must be between 1 and {max}, got {got}")]
    Connections {
        /// The count given.
        got: u64,
        /// The most allowed, [`Connections::MAX`].
        max: u32,
    },
    /// The minimum split (bytes, as given) is under 64 KiB or not a multiple of it.
    #[error("minimum split must be a multiple of 64 KiB and at least 64 KiB, got {0} bytes")]
    MinSplit(u64),
    /// The rate text (as given) is not a positive byte count such as `500K`.
    #[error("rate must be a positive number of bytes per second such as 500K or 20M, got {0:?}")]
    Rate(String),
}

/// The most connections one download may use: 1..=1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections(u32);

impl Connections {
    /// The most connections a download may be given.
    pub const MAX: u32 = 1024;

    /// `n` connections; an error when `n` is 0 or over [`Connections::MAX`]. The default is 16.
    pub fn new(n: u64) -> Result<Self, OptionError> {
        if (1..=u64::from(Self::MAX)).contains(&n) {
            Ok(Self(n as u32))
        } else {
            Err(OptionError::Connections {
                got: n,
                max: Self::MAX,
            })
        }
    }

    /// The number of connections, 1 to [`Connections::MAX`].
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for Connections {
    fn default() -> Self {
        Self(16)
    }
}

/// The smallest piece of work worth a connection of its own; a multiple of [`BLOCK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinSplit(u64);

impl MinSplit {
    /// `bytes` as the minimum split; an error unless it is a positive multiple of [`BLOCK`]. The
    /// default is 1 MiB.
    pub fn new(bytes: u64) -> Result<Self, OptionError> {
        if bytes >= BLOCK && bytes % BLOCK == 0 {
            Ok(Self(bytes))
        } else {
            Err(OptionError::MinSplit(bytes))
        }
    }

    /// The minimum split in bytes.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl Default for MinSplit {
    fn default() -> Self {
        Self(1024 * 1024)
    }
}

/// A transfer rate in bytes per second, parsed from `500K`, `20M`, `1.5G` or a plain number.
/// Suffixes are binary (K = 1024), as in curl and aria2c.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(NonZeroU64);

impl Rate {
    /// The rate in bytes per second, at least 1.
    pub fn bytes_per_sec(self) -> u64 {
        self.0.get()
    }

    /// The same, typed as never zero.
    pub fn per_second(self) -> NonZeroU64 {
        self.0
    }

    /// Parses `500K`, `20M`, `1.5G`, `2MB/s` or a plain byte count per second; zero is refused.
    pub fn parse(text: &str) -> Result<Self, OptionError> {
        let t = text.trim();
        let t = t.strip_suffix("/s").unwrap_or(t);
        parse_bytes(t)
            .and_then(NonZeroU64::new)
            .map(Self)
            .ok_or_else(|| OptionError::Rate(text.to_string()))
    }
}

/// Parses a byte count such as `64K`, `1M`, `1.5G`, `2MB` or `1000`. Suffixes are binary
/// (K = 1024), as in curl and aria2c.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches(['i']);
    let (number, scale) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let value: f64 = number.trim().parse().ok()?;
    let bytes = value * scale as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes <= u64::MAX as f64).then_some(bytes as u64)
}

/// Where the file goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Exactly this path (`-o`).
    File(PathBuf),
    /// This directory, with a name taken from the response (`-d`, or the current directory).
    Dir(PathBuf),
    /// In file order to the reader of a [`crate::stream::channel`] while the download runs,
    /// holding at most its window in memory (`-o -`). No part file and no resume: a failure
    /// leaves the reader with a prefix of the file. A whole-file checksum is checked over the
    /// bytes streamed; Metalink piece hashes and swarm downloads cannot be streamed.
    Stream(StreamSink),
}

/// What to do when the final path already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Stop with [`crate::DownloadError::OutputExists`] before touching anything.
    #[default]
    Refuse,
    /// Replace it once the new file is complete and verified.
    Overwrite,
}

/// Whether to continue from the state a previous run left in `NAME.part.shoal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resume {
    /// Continue when the state is intact and the server still has the same file; otherwise
    /// start over and say why.
    #[default]
    Auto,
    /// Always start over, discarding any previous `.part` and its state (`--no-resume`).
    Never,
}

/// Whether a slow tail is raced by a second connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Endgame {
    /// The last blocks of a slow connection are fetched again by another, and the first to
    /// finish wins: one slow connection never holds up the file.
    #[default]
    Race,
    /// Every byte is fetched once: for a source whose egress is what counts, such as the
    /// origin of a swarm.
    Never,
}

/// How every HTTP request is made.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Sent with every request (`-H`). May hold credentials: never logged. `Authorization`,
    /// `Cookie` and `Proxy-Authorization` go only to the origin of the URL they were given
    /// with, unless `location_trusted`.
    pub headers: HeaderMap,
    /// Send credentials to the other origins redirects name too (`--location-trusted`), except
    /// from `https` to plain `http`.
    pub location_trusted: bool,
    /// The `User-Agent` header of every request; `shoal/VERSION` by default.
    pub user_agent: String,
    /// Accept certificates that do not verify (`--insecure`).
    pub insecure: bool,
    /// CAs trusted besides the system's (`--ca`).
    pub ca: Option<ExtraRoots>,
    /// How long a TCP and TLS connect may take before it counts as a failed try; 15 s by default.
    pub connect_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            headers: HeaderMap::new(),
            location_trusted: false,
            user_agent: concat!("shoal/", env!("CARGO_PKG_VERSION")).to_string(),
            insecure: false,
            ca: None,
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// One download of one file.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// The URL to fetch; with [`DownloadOptions::swarm`], the origin the swarm may fall back to.
    pub url: Url,
    /// Where the file goes.
    pub output: Output,
    /// With [`Output::Dir`], the batch this download is part of: the name the response gives
    /// is claimed there, and numbered when another download of the batch took it first.
    pub names: Option<Claims>,
    /// What to do when the final path exists; refuse by default.
    pub existing: Existing,
    /// Whether to continue a previous run's `.part`; when it is intact, by default.
    pub resume: Resume,
    /// More URLs serving the same file, fetched from at the same time as `url`. One whose
    /// size differs from the others' is dropped with [`crate::Event::SourceDropped`].
    pub mirrors: Vec<Url>,
    /// The most connections to use; fewer are kept when more do not add throughput.
    pub connections: Connections,
    /// With mirrors, the most connections to any one of them (`--max-connections-per-server`).
    /// A single URL is bounded by `connections` alone.
    pub per_server: Connections,
    /// The smallest range worth its own connection; 1 MiB by default.
    pub min_split: MinSplit,
    /// A connection that delivers nothing for this long loses its work to others.
    pub stall_timeout: Duration,
    /// Attempts per segment before the download fails.
    pub max_tries: u32,
    /// Outlast outages of the server: with a value, a source failing as one that is down
    /// (refused, reset, cut short, stalled, answering 5xx) is not given up after `max_tries`
    /// but asked again with back-off (1 s doubling to 30 s), its work given to other sources
    /// meanwhile; the download fails only once no byte has arrived from any source for this
    /// long, with [`crate::DownloadError::Unserved`] naming what is missing. `None`: a source
    /// is given up after `max_tries`, and a swarm download waits 4 × `stall_timeout` for a
    /// source of its missing pieces.
    pub max_wait: Option<Duration>,
    /// The whole-file checksum the finished file must have; checked before the rename, and a
    /// mismatch keeps the bytes as `.part`.
    pub checksum: Option<Checksum>,
    /// Digests of consecutive pieces (from a Metalink): each piece is checked as soon as all
    /// its bytes are written; a mismatch is fetched again from another source, and the source
    /// that sent it is dropped.
    pub pieces: Option<PieceHashes>,
    /// The size the file must have (from a Metalink); sources serving another are dropped,
    /// and a stream of unknown length is stopped as soon as it sends more.
    pub expected_size: Option<u64>,
    /// The largest file to accept (`--max-filesize`): a larger announced size is refused
    /// before any byte is written, and a stream of unknown length is stopped as soon as it
    /// sends more.
    pub max_filesize: Option<u64>,
    /// Bytes per second for the whole download, over all its connections; `None` (the default) for
    /// no limit.
    pub limit_rate: Option<Rate>,
    /// A cap shared with other downloads (a daemon's overall limit), besides `limit_rate`.
    pub shared_rate: Option<Arc<SharedRate>>,
    /// Headers, TLS and timeouts of every request.
    pub http: HttpOptions,
    /// Whether a slow tail is fetched twice.
    pub endgame: Endgame,
    /// Hash every piece of this size as its bytes are written and report its BLAKE3 with
    /// [`crate::Event::PieceHashed`]: the download is the one a swarm learns the digests from.
    pub learn_pieces: Option<u64>,
    /// Fetch the file front to back, each connection asking for the next this many bytes (a
    /// multiple of [`BLOCK`]), instead of splitting it among the connections: pieces are then
    /// complete one after another at the full rate, from the start, which is what a URL
    /// swarm's leader needs, since its followers can only fetch complete pieces from it. Costs
    /// a round trip per request, so it suits a nearby origin better than a far one. In a swarm
    /// download it orders the origin's share (the pieces no peer holds) the same way.
    pub in_order: Option<u64>,
    /// Fetch a content of known manifest from peers (and `url` as a capped origin) instead of
    /// probing `url`; see [`SwarmOptions`].
    pub swarm: Option<SwarmOptions>,
    /// Totals this download adds to as it runs (a daemon's metrics); `None`: not counted.
    pub tally: Option<Arc<Tally>>,
}

/// A download of a content whose manifest is known, from the peers that hold its pieces.
/// Peers are sources of the same scheduler as mirrors: each connection asks a peer for a piece
/// it holds, the rarest first (random among equals), and every piece is checked against the
/// manifest before it counts; a peer whose piece does not match is dropped. No probe is sent:
/// the manifest gives the size.
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    /// This downloader's name as peers know it (its agent id): pieces are shared out among
    /// downloaders by name.
    pub me: String,
    /// The content's file size and piece size.
    pub layout: Layout,
    /// What each piece must hash to.
    pub digests: Digests,
    /// The peers as the caller knows them now; re-read while the download runs, so peers that
    /// appear, and pieces they verify, are used as they become known.
    pub peers: watch::Receiver<Vec<PeerSource>>,
    /// How requests to peers are made (their `Authorization` header, say).
    pub peer_http: HttpOptions,
    /// The most connections to one peer; a seed gets one.
    pub per_peer: Connections,
    /// How the download's `url` is used.
    pub origin: OriginUse,
}

/// What the pieces of a swarm download must hash to (BLAKE3).
#[derive(Debug, Clone)]
pub enum Digests {
    /// All known: the content's manifest.
    Manifest(Arc<Manifest>),
    /// Published by the swarm's leader while it fetches from the origin; `None` until known.
    /// A piece is accepted only once its digest is known and matches.
    Published(PublishedDigests),
}

/// Digests that arrive while a download runs.
#[derive(Debug, Clone)]
pub struct PublishedDigests {
    /// What is known now, one entry per piece.
    pub known: watch::Receiver<Vec<Option<PieceDigest>>>,
    /// Woken when a piece's bytes are all here but its digest is not: the caller should look
    /// for newer digests now rather than at its next routine refresh.
    pub wanted: Arc<Notify>,
}

/// A peer's piece server for this content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSource {
    /// The peer's name (its agent id), for logs and reports.
    pub name: String,
    /// Where its bytes of this content are fetched with range requests.
    pub url: Url,
    /// Its verified pieces; `None` when it holds every piece.
    pub have: Option<Bitfield>,
    /// Its upload is best kept for pieces no one else has yet (a URL swarm's leader, ahead of
    /// everyone). A peer holding every piece is treated so anyway.
    pub seed: bool,
}

/// Whether a swarm download may fetch from the origin URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginUse {
    /// Only peers: the content has no origin, or it must not be asked.
    Never,
    /// For pieces that no peer holds, and to race peers that are slow at the end, over at most
    /// `connections` connections. `validator` is sent as `If-Range`, so bytes of another
    /// version of the file are never mixed in.
    Fallback {
        /// The most connections to the origin.
        connections: Connections,
        /// The `If-Range` value (a strong `ETag` or `Last-Modified`) of the version the swarm
        /// fetches; `None` when the origin sent neither.
        validator: Option<String>,
    },
    /// As the swarm's leader (one that took over from a leader that died): for pieces that no
    /// peer holds, over at most `connections` connections, and its bytes are the file's. A
    /// piece it sent whole whose digest is not published is not waited for: its BLAKE3 is
    /// learned and reported with [`crate::Event::PieceHashed`] (before its
    /// [`crate::Event::PieceVerified`]), for the caller to publish. A piece with a published
    /// digest is checked against it, whoever sent it.
    Lead {
        /// The most connections to the origin.
        connections: Connections,
        /// The `If-Range` value of the version the swarm fetches, as for
        /// [`OriginUse::Fallback`].
        validator: Option<String>,
    },
}

impl DownloadOptions {
    /// The options of a download of `url` to `output`, everything else at its default: 16
    /// connections, at most 8 per mirror, 1 MiB minimum split, a 15 s stall timeout, 5 tries per
    /// segment, no checksum, no rate limit.
    pub fn new(url: Url, output: Output) -> Self {
        Self {
            url,
            output,
            names: None,
            max_filesize: None,
            existing: Existing::default(),
            resume: Resume::default(),
            mirrors: Vec::new(),
            connections: Connections::default(),
            per_server: Connections(8),
            min_split: MinSplit::default(),
            stall_timeout: Duration::from_secs(15),
            max_tries: 5,
            max_wait: None,
            checksum: None,
            pieces: None,
            expected_size: None,
            limit_rate: None,
            shared_rate: None,
            http: HttpOptions::default(),
            endgame: Endgame::default(),
            learn_pieces: None,
            in_order: None,
            swarm: None,
            tally: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(Rate::parse("500K").unwrap().bytes_per_sec(), 500 * 1024);
        assert_eq!(Rate::parse("20M").unwrap().bytes_per_sec(), 20 << 20);
        assert_eq!(Rate::parse("1.5g").unwrap().bytes_per_sec(), 3 << 29);
        assert_eq!(Rate::parse("1000").unwrap().bytes_per_sec(), 1000);
        assert_eq!(Rate::parse("2MB/s").unwrap().bytes_per_sec(), 2 << 20);
        assert_eq!(parse_bytes("64KiB"), Some(64 << 10));
        for bad in ["", "0", "-1M", "fast", "1T", "NaN"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connection_bounds() {
        assert!(Connections::new(0).is_err());
        assert_eq!(Connections::new(1024).unwrap().get(), 1024);
        assert!(Connections::new(1025).is_err());
    }

    #[test]
    fn min_split_alignment() {
        assert!(MinSplit::new(64 * 1024).is_ok());
        assert!(MinSplit::new(100_000).is_err());
        assert!(MinSplit::new(0).is_err());
    }
}
