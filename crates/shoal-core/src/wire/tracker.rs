//! The tracker's HTTP API: the tracker serves these types and agents (and `shoal ls`) send
//! them. Every path is under [`API_PREFIX`](super::API_PREFIX); [`path`] builds them.
//!
//! The agent's protocol: `PUT /v1/agents/{id}` with [`RegisterRequest`] (its full holdings),
//! then [`AnnounceRequest`] deltas and [`HeartbeatRequest`]s before the lease in
//! [`LeaseGrant`] runs out. A `404` to a heartbeat or announce means the tracker forgot the
//! agent (its lease lapsed, or the tracker restarted): register again with the full list.
//!
//! A URL that several agents want before anyone knows its manifest is fetched as a *URL swarm*
//! ([`CreateSwarmRequest`]): the first agent leads, fetching from the origin and publishing
//! each piece's digest ([`PublishDigestsRequest`]); the others fetch pieces from the leader
//! and each other, checking each against those digests. The swarm id ([`UrlKey::swarm_id`])
//! stands for the content id in register, announce and peers. A leader that dies or stalls is
//! replaced by the first member to take over ([`TakeOverRequest`]). A peer that sent a piece
//! that did not match its digest is reported ([`ReportRequest`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{AgentId, PackedBits, PackedBitsError, Scheme};
use crate::bitfield::Bitfield;
use crate::content::ContentId;
use crate::hex;
use crate::layout::Layout;
use crate::manifest::PieceDigest;

/// The largest file size shoal handles, as [`Layout::new`] enforces.
pub const MAX_FILE_SIZE: u64 = 1 << 63;
/// The longest name of a holding, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// The longest URL of a [`UrlKey`], in bytes.
pub const MAX_URL_LEN: usize = 8192;
/// The longest validator (`etag`, `last_modified`) of a [`UrlKey`], in bytes.
pub const MAX_VALIDATOR_LEN: usize = 1024;
/// The most pieces a URL swarm may have, so that its digests stay a few MiB on the wire; a
/// larger file needs a larger piece size.
pub const MAX_SWARM_PIECES: u32 = 1 << 20;
/// The longest `reason` of a [`ReportRequest`], in bytes.
pub const MAX_REASON_LEN: usize = 1024;
/// What a swarm id hashes before the [canonical bytes](UrlKey::canonical_bytes) of its key.
pub const SWARM_ID_TAG: &[u8] = b"shoal url swarm v1\0";

/// One content an agent holds, whole or in part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holding {
    /// Also the manifest's root hash: the id is BLAKE3 of the manifest.
    pub content: ContentId,
    /// A name people search by, e.g. the file name.
    pub name: String,
    /// The file's size and piece size; `pieces` (when present) has one bit per piece of it.
    pub layout: Layout,
    /// The verified pieces of a partial holding; absent when the agent holds every piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<PackedBits>,
}

/// `PUT /v1/agents/{id}`: register (or re-register) with the full list of holdings, which
/// replaces whatever the tracker had for this agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Where peers reach this agent's piece server.
    pub addr: SocketAddr,
    /// Whether this agent's piece server speaks HTTPS; absent: plain HTTP.
    #[serde(default, skip_serializing_if = "Scheme::is_http")]
    pub scheme: Scheme,
    /// Upload capacity in bytes per second, 0 when unknown.
    #[serde(default)]
    pub upload_capacity: u64,
    /// Everything the agent holds now; replaces what the tracker had. Empty registers an agent that
    /// holds nothing yet.
    #[serde(default)]
    pub holdings: Vec<Holding>,
}

/// The answer to register, heartbeat and announce: the lease now runs `lease_ms` from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// Milliseconds from the answer until the tracker forgets the agent unless it heartbeats or
    /// announces again.
    pub lease_ms: u64,
    /// The tracker reads [`HeartbeatRequest::served`]; an agent sends it only then, since an
    /// older tracker (whose grant lacks this field) refuses a heartbeat with unknown fields.
    #[serde(default)]
    pub reads_served: bool,
}

/// `POST /v1/agents/{id}/heartbeat`: renews the lease.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// Uploads in progress now; peers with less load are offered first.
    #[serde(default)]
    pub load: u32,
    /// Bytes the agent's piece server sent to peers since it started, for the tracker's page:
    /// the tracker derives the upload rate from two heartbeats. Sent only when the tracker's
    /// [`LeaseGrant::reads_served`] says it reads it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub served: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Newly verified pieces of a content the agent already announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PieceDelta {
    /// The content the pieces belong to; the agent must hold it (registered, or added by this
    /// announce's `holdings`), else the announce is refused whole.
    pub content: ContentId,
    /// Indices (from 0) of the pieces verified since the last announce.
    pub have: Vec<u32>,
}

/// `POST /v1/agents/{id}/announce`: changes since the last register or announce. Also renews
/// the lease. Applied in order: `removed`, then `holdings` (added or replaced whole), then
/// `pieces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceRequest {
    /// Contents the agent no longer holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<ContentId>,
    /// Contents added, or replaced whole (name, layout, bitfield).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holdings: Vec<Holding>,
    /// Pieces newly verified in contents already held.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<PieceDelta>,
}

/// Query of `GET /v1/content/{id}/peers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersQuery {
    /// At most this many peers (default 20, at most 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u32>,
    /// The asking agent: never returned, and its own bitfield decides which peers are useful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
}

/// One agent that holds a content, in a [`PeersResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The peer's agent id.
    pub id: AgentId,
    /// Where the peer's piece server listens.
    pub addr: SocketAddr,
    /// Whether its piece server speaks HTTPS; absent: plain HTTP.
    #[serde(default, skip_serializing_if = "Scheme::is_http")]
    pub scheme: Scheme,
    /// The peer's upload capacity in bytes per second as it registered, 0 when unknown.
    pub upload_capacity: u64,
    /// Uploads the peer had in progress at its last heartbeat.
    pub load: u32,
    /// True when the peer holds every piece; `pieces` is then absent.
    pub complete: bool,
    /// Verified pieces of a partial holder; absent for complete holders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<PackedBits>,
}

/// Peers in order of preference: complete holders, then most pieces the asker lacks (holders
/// with none come last: they are fetching it too), then least load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersResponse {
    /// The content asked about.
    pub content: ContentId,
    /// Its file size and piece size, so `pieces` bitfields can be read.
    pub layout: Layout,
    /// At most `k` peers, best first; never the asking agent.
    pub peers: Vec<Peer>,
}

/// Query of `GET /v1/content`: search by name substring and/or id prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentQuery {
    /// Case-insensitive substring of the holding's name; `None` matches every name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Hex prefix of the content id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// At most this many results (default 100, at most 1000); results sort by name, then id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One content in a [`ContentList`] or the answer to `GET /v1/content/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentSummary {
    /// The content id.
    pub id: ContentId,
    /// The name the holder announced it under.
    pub name: String,
    /// Its file size and piece size.
    pub layout: Layout,
    /// Whether the tracker has the manifest.
    pub manifest: bool,
    /// Live agents holding every piece.
    pub complete_holders: u32,
    /// Live agents holding some pieces but not all.
    pub partial_holders: u32,
}

/// The answer to `GET /v1/content`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentList {
    /// Matching contents sorted by name, then id; at most the query's `limit`.
    pub contents: Vec<ContentSummary>,
}

/// Query of `GET /v1/agents`: pages in id order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsQuery {
    /// Only agents whose id sorts after this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<AgentId>,
    /// At most this many agents (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One agent in an [`AgentList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSummary {
    /// The agent's id (its token's name where tokens are per agent).
    pub id: AgentId,
    /// Where its piece server listens.
    pub addr: SocketAddr,
    /// Whether its piece server speaks HTTPS; absent: plain HTTP.
    #[serde(default, skip_serializing_if = "Scheme::is_http")]
    pub scheme: Scheme,
    /// Its upload capacity in bytes per second as it registered, 0 when unknown.
    pub upload_capacity: u64,
    /// Uploads in progress at its last heartbeat.
    pub load: u32,
    /// Contents it holds, whole or in part.
    pub holdings: u32,
    /// Contents it holds whole.
    pub complete_holdings: u32,
    /// Milliseconds until its lease runs out unless it heartbeats or announces.
    pub lease_remaining_ms: u64,
    /// Milliseconds since its last register, heartbeat or announce.
    #[serde(default)]
    pub last_seen_ms: u64,
    /// Bytes it sent to peers since it started, as of its last heartbeat; 0 from an agent
    /// that does not report it.
    #[serde(default)]
    pub served: u64,
    /// Bytes per second it sent to peers between its last two heartbeats.
    #[serde(default)]
    pub upload_rate: u64,
}

/// The answer to `GET /v1/agents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentList {
    /// Live agents in id order, after the query's `after`; at most its `limit`. An empty page ends
    /// the listing.
    pub agents: Vec<AgentSummary>,
}

/// What identifies one version of a file at a URL: the normalized URL, its size and the
/// validators the origin sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlKey {
    /// The file's URL; the tracker normalizes it (lowercase scheme and host, no default port,
    /// fragment or credentials) and refuses one over [`MAX_URL_LEN`] bytes.
    pub url: String,
    /// The file's length in bytes, as the origin said.
    pub size: u64,
    /// The origin's `ETag`, as sent (quotes included); `None` when it sent none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The origin's `Last-Modified`, as sent; `None` when it sent none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

impl UrlKey {
    /// The bytes a swarm id hashes, each length and number big-endian:
    ///
    /// ```text
    /// url.len()  u64, then the URL's UTF-8 bytes
    /// size       u64
    /// etag       0x00 when absent; 0x01, u64 length, the bytes when present
    /// last_modified  the same
    /// ```
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.url.len());
        out.extend_from_slice(&(self.url.len() as u64).to_be_bytes());
        out.extend_from_slice(self.url.as_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        for validator in [&self.etag, &self.last_modified] {
            match validator {
                None => out.push(0),
                Some(text) => {
                    out.push(1);
                    out.extend_from_slice(&(text.len() as u64).to_be_bytes());
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        out
    }

    /// The id of this URL version's swarm: BLAKE3 of [`SWARM_ID_TAG`] and the
    /// [canonical bytes](UrlKey::canonical_bytes). The tracker hashes the key as it normalized
    /// it (the `key` of [`SwarmInfo`]), so a client that computes the id itself must hash that
    /// key, not its own spelling of the URL.
    pub fn swarm_id(&self) -> ContentId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(SWARM_ID_TAG);
        hasher.update(&self.canonical_bytes());
        ContentId::from_bytes(*hasher.finalize().as_bytes())
    }
}

/// Query of `GET /v1/urls/latest`: the newest published version of a URL, whatever its size
/// and validators, for when its origin cannot be asked which version it serves now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatestUrlQuery {
    /// The URL, normalized as in [`UrlKey::url`] before it is looked up.
    pub url: String,
}

/// `POST /v1/urls`: this URL version has this content (whose manifest must be published).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishUrlRequest {
    /// The URL version; the tracker normalizes it before storing.
    pub key: UrlKey,
    /// The content that version's bytes hash to; its manifest must be on the tracker already.
    pub content: ContentId,
}

/// A URL version's content. The first publish wins; later ones get this mapping back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlMapping {
    /// `key.url` as the tracker normalized it.
    pub key: UrlKey,
    /// The content id those bytes have.
    pub content: ContentId,
    /// The name of the token that published it.
    pub publisher: String,
    /// Unix time in seconds.
    pub published_at: u64,
}

/// The answer to `PUT /v1/content/{id}/manifest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPublished {
    /// The content id the manifest hashes to.
    pub content: ContentId,
    /// False when the tracker already had this manifest.
    pub created: bool,
}

/// `POST /v1/swarms`: fetch this URL version together with whoever else wants it. The tracker
/// normalizes the key and creates the swarm [`UrlKey::swarm_id`] unless it runs already: then
/// `agent` leads and only the caller's token may publish digests. Answers `201` with a new
/// swarm, `200` with the running one, `409` (field `layout`) when it runs with another layout.
/// `layout.size` must equal `key.size`, and the layout may have at most [`MAX_SWARM_PIECES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSwarmRequest {
    /// The URL version to fetch; the tracker normalizes it.
    pub key: UrlKey,
    /// The file size and piece size to fetch by; a running swarm with another layout answers
    /// `409`.
    pub layout: Layout,
    /// The agent that leads if this request creates the swarm.
    pub agent: AgentId,
}

/// A URL swarm as the tracker knows it: the answer to create, publish and
/// `GET /v1/swarms/{id}`. A swarm lapses when no create or publish touched it for the
/// tracker's swarm lifetime (an hour by default); then `GET` answers `404`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmInfo {
    /// [`UrlKey::swarm_id`] of `key`; use it as the content id in register, announce, peers.
    pub id: ContentId,
    /// The key as the tracker normalized it.
    pub key: UrlKey,
    /// The file size and piece size every member fetches by.
    pub layout: Layout,
    /// The agent that fetches from the origin and publishes the digests: the creator's, or the
    /// last to take over ([`TakeOverRequest`]).
    pub leader: AgentId,
    /// True only in the answer to the create that made the swarm.
    pub created: bool,
    /// The piece digests the leader has published so far.
    pub digests: SwarmDigests,
}

/// The piece digests a swarm's leader has published so far. JSON:
/// `{"known": "<hex bitfield of the pieces with a digest>", "digests": "<hex of the known
/// digests concatenated, in piece order>"}`; the bitfield is a [`PackedBits`] of the layout's
/// piece count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSwarmDigests", into = "RawSwarmDigests")]
pub struct SwarmDigests {
    known: PackedBits,
    /// 32 bytes per set bit of `known`, in piece order.
    digests: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct RawSwarmDigests {
    known: PackedBits,
    digests: String,
}

/// [`SwarmDigests`] that do not fit a layout, or do not decode.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SwarmDigestsError {
    /// The `known` bitfield does not fit the layout.
    #[error("known: {0}")]
    Known(#[from] PackedBitsError),
    /// The `digests` text is not hex.
    #[error("digests: {0}")]
    Hex(#[from] crate::hex::HexError),
    /// The decoded `digests` (this many bytes) are not a whole number of 32-byte digests.
    #[error("digests is {0} bytes, not a whole number of 32-byte digests")]
    Partial(usize),
    /// The number of digests differs from the number of bits set in `known`.
    #[error("known marks {known} pieces but there are {actual} digests")]
    Count {
        /// Pieces `known` marks.
        known: u32,
        /// Whole 32-byte digests given.
        actual: usize,
    },
}

impl TryFrom<RawSwarmDigests> for SwarmDigests {
    type Error = SwarmDigestsError;
    fn try_from(raw: RawSwarmDigests) -> Result<Self, Self::Error> {
        let digests = hex::decode(&raw.digests)?;
        if digests.len() % 32 != 0 {
            return Err(SwarmDigestsError::Partial(digests.len()));
        }
        Ok(Self {
            known: raw.known,
            digests,
        })
    }
}

impl From<SwarmDigests> for RawSwarmDigests {
    fn from(d: SwarmDigests) -> Self {
        RawSwarmDigests {
            known: d.known,
            digests: hex::encode(&d.digests),
        }
    }
}

impl SwarmDigests {
    /// One entry per piece of the layout, `None` where no digest is known yet.
    pub fn of(pieces: &[Option<PieceDigest>]) -> Self {
        let mut known = Bitfield::new(pieces.len() as u32);
        let mut digests = Vec::new();
        for (i, digest) in pieces.iter().enumerate() {
            if let Some(digest) = digest {
                known.set(i as u32);
                digests.extend_from_slice(digest);
            }
        }
        Self {
            known: PackedBits::of(&known),
            digests,
        }
    }

    /// The digests known of a content of `pieces` pieces, by piece index; entries at or past
    /// `pieces` are left out.
    pub fn from_known(pieces: u32, known: &BTreeMap<u32, PieceDigest>) -> Self {
        let mut field = Bitfield::new(pieces);
        let mut digests = Vec::with_capacity(32 * known.len());
        for (&i, digest) in known.range(..pieces) {
            field.set(i);
            digests.extend_from_slice(digest);
        }
        Self {
            known: PackedBits::of(&field),
            digests,
        }
    }

    /// The same digests less those of pieces before `from`: what a member that knows every
    /// digest before its first missing one still needs. The answer stays small however far
    /// the swarm has got, so polling it costs the tracker's uplink (in a bench, the origin's)
    /// only the news.
    pub fn since(&self, from: u32) -> Self {
        let mut known = self.known.as_bytes().to_vec();
        let mut dropped = 0usize;
        for i in 0..from.min(known.len() as u32 * 8) {
            let (byte, mask) = ((i / 8) as usize, 0x80u8 >> (i % 8));
            if known[byte] & mask != 0 {
                known[byte] &= !mask;
                dropped += 1;
            }
        }
        let kept = self.digests.get(32 * dropped..).unwrap_or_default();
        Self {
            known: PackedBits::from_bytes(known),
            digests: kept.to_vec(),
        }
    }

    /// One entry per piece of a layout of `pieces` pieces, checking that the bitfield fits the
    /// layout and that there is a digest for every set bit.
    pub fn to_digests(&self, pieces: u32) -> Result<Vec<Option<PieceDigest>>, SwarmDigestsError> {
        let known = self.known.to_bitfield(pieces)?;
        let count = known.count_ones();
        if self.digests.len() != 32 * count as usize {
            return Err(SwarmDigestsError::Count {
                known: count,
                actual: self.digests.len() / 32,
            });
        }
        let mut digests = self
            .digests
            .chunks_exact(32)
            .map(|c| PieceDigest::try_from(c).expect("chunks are 32 bytes"));
        Ok((0..pieces)
            .map(|i| if known.get(i) { digests.next() } else { None })
            .collect())
    }
}

/// Query of `GET /v1/swarms/{id}` and of `POST /v1/swarms/{id}/digests`: which digests the
/// answer carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestsQuery {
    /// Leave out the digests of pieces before this index (see [`SwarmDigests::since`]); the
    /// piece count leaves them all out. Absent: every digest known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digests_from: Option<u32>,
}

/// One piece's digest in a [`PublishDigestsRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PieceDigestEntry {
    /// The piece's index, from 0; past the last piece is refused.
    pub index: u32,
    /// BLAKE3 of the piece, 64 hex digits.
    pub digest: String,
}

impl PieceDigestEntry {
    /// The entry of piece `index`, its digest as hex.
    pub fn new(index: u32, digest: &PieceDigest) -> Self {
        Self {
            index,
            digest: hex::encode(digest),
        }
    }
}

/// `POST /v1/swarms/{id}/leader`: take over leading a URL swarm whose leader is gone (its lease
/// lapsed, or it deregistered) or stalled (it published no new digest for
/// [`leader_stall_limit`] while digests are missing). The first caller wins: `agent` leads
/// from then on, and only the caller's token may publish digests; those published already
/// stay. `agent` must be live and registered by the caller's token (`403`, `404` otherwise).
/// Answers `200` with the swarm, led by `agent` (also when it led already); `409` (field
/// `leader`) while the leader is live and publishing; `404` when the swarm is not running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TakeOverRequest {
    /// The agent that leads if the takeover succeeds.
    pub agent: AgentId,
}

/// The least time a URL swarm's leader may publish no new digest, while some are missing,
/// before another member may take over: long enough for the follower's view of the digests to
/// lag (it polls every second), a publish to be retried, and the tracker to hiccup.
pub const LEADER_STALL_FLOOR: Duration = Duration::from_secs(5);
/// The slowest origin link a leader is expected to keep up on without being taken over: 16
/// Mbit/s (2 MiB/s).
pub const SLOWEST_LEADER_RATE: u64 = 2 << 20;

/// How long a URL swarm's leader of `layout` may publish no new digest, while some are
/// missing, before it counts as stalled ([`TakeOverRequest`]). A leader fetches the file in
/// order, a piece or two at a time, and publishes each piece's digest within ~100 ms of
/// hashing it, so a live one publishes about every piece-size / rate: [`LEADER_STALL_FLOOR`]
/// plus one piece at [`SLOWEST_LEADER_RATE`] (5.5 s for 1 MiB pieces, 13 s for 16 MiB). A
/// slower leader may be taken over while it still fetches; that costs the origin what it
/// still sends it, at most one extra copy.
pub fn leader_stall_limit(layout: Layout) -> Duration {
    LEADER_STALL_FLOOR
        + Duration::from_millis(layout.piece_size().saturating_mul(1000) / SLOWEST_LEADER_RATE)
}

/// `POST /v1/swarms/{id}/digests`: digests of pieces the leader fetched. Only the token of the
/// agent that leads now (the creator's, or the one that took over; or an admin) may publish
/// (`403` otherwise). The first digest of a piece
/// wins: a different one later is ignored (and logged). Answers the swarm's [`SwarmInfo`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishDigestsRequest {
    /// The digests, in any order. A piece's first published digest stays: a different one
    /// later is ignored.
    pub pieces: Vec<PieceDigestEntry>,
}

/// `POST /v1/content/{id}/reports`: a peer served a piece of this content that did not match
/// its digest. Once two distinct agents (or one admin token) reported it within ten minutes,
/// the tracker leaves the reported agent out of peers answers for that content, to everyone,
/// for ten minutes after the latest report. Answers `202` with [`ReportAccepted`], also when
/// the agent does not hold the content (the report then changes nothing); `404` when the
/// tracker does not know the content, `400` when `piece` is past its last piece.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// The peer that sent the bad piece.
    pub agent: AgentId,
    /// Index (from 0) of the piece that did not match its digest.
    pub piece: u32,
    /// The reporting agent: required with a fleet token, implied by a per-agent token (and
    /// then, if given, must be its agent), unused with an admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporter: Option<AgentId>,
    /// For the tracker's log; at most [`MAX_REASON_LEN`] bytes.
    pub reason: String,
}

/// The answer to a report: `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAccepted {}

/// `POST /v1/urls/reports`: the origin of `key` answered a range request for `piece` with
/// bytes that do not hash to the digest the manifest of `content` (which the tracker maps `key`
/// to) has for it, so the mapping is not the origin's file. Once two distinct agents (or one
/// admin token) reported the mapping within ten minutes, the tracker withdraws it and the next
/// publish of the URL version wins. Answers `202` with [`UrlReportAccepted`], also when `key`
/// no longer maps to `content` (the report then changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlReportRequest {
    /// The URL version, as the reporter probed it.
    pub key: UrlKey,
    /// The content the tracker maps `key` to.
    pub content: ContentId,
    /// The piece the origin disagreed on.
    pub piece: u32,
    /// The reporting agent, as in [`ReportRequest::reporter`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporter: Option<AgentId>,
    /// For the tracker's log; at most [`MAX_REASON_LEN`] bytes.
    pub reason: String,
}

/// The answer to a [`UrlReportRequest`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlReportAccepted {
    /// Whether this report withdrew the mapping.
    pub withdrawn: bool,
}

/// Request paths, so clients build them the way the tracker routes them.
pub mod path {
    use super::AgentId;
    use crate::content::ContentId;

    /// `/v1/agents/{id}`: register (`PUT`).
    pub fn agent(id: &AgentId) -> String {
        format!("/v1/agents/{id}")
    }

    /// `/v1/agents/{id}/heartbeat`: renew the lease (`POST`).
    pub fn heartbeat(id: &AgentId) -> String {
        format!("/v1/agents/{id}/heartbeat")
    }

    /// `/v1/agents/{id}/announce`: holdings changes (`POST`).
    pub fn announce(id: &AgentId) -> String {
        format!("/v1/agents/{id}/announce")
    }

    /// `/v1/content/{id}`: one content's summary (`GET`).
    pub fn content(id: &ContentId) -> String {
        format!("/v1/content/{id}")
    }

    /// `/v1/content/{id}/peers`: who holds it (`GET`, [`PeersQuery`](super::PeersQuery)).
    pub fn peers(id: &ContentId) -> String {
        format!("/v1/content/{id}/peers")
    }

    /// `/v1/content/{id}/manifest`: its manifest (`GET`, `PUT`).
    pub fn manifest(id: &ContentId) -> String {
        format!("/v1/content/{id}/manifest")
    }

    /// `/v1/content/{id}/reports`: report a peer's bad piece (`POST`).
    pub fn reports(id: &ContentId) -> String {
        format!("/v1/content/{id}/reports")
    }

    /// `/v1/swarms/{id}`: a URL swarm's state (`GET`).
    pub fn swarm(id: &ContentId) -> String {
        format!("/v1/swarms/{id}")
    }

    /// `/v1/swarms/{id}/digests`: publish piece digests (`POST`).
    pub fn swarm_digests(id: &ContentId) -> String {
        format!("/v1/swarms/{id}/digests")
    }

    /// `/v1/swarms/{id}/leader`: take over leading a URL swarm (`POST`,
    /// [`TakeOverRequest`](super::TakeOverRequest)).
    pub fn swarm_leader(id: &ContentId) -> String {
        format!("/v1/swarms/{id}/leader")
    }

    /// List agents (`GET`, [`AgentsQuery`](super::AgentsQuery)).
    pub const AGENTS: &str = "/v1/agents";
    /// Search contents (`GET`, [`ContentQuery`](super::ContentQuery)).
    pub const CONTENT: &str = "/v1/content";
    /// Publish a URL version's content (`POST`).
    pub const URLS: &str = "/v1/urls";
    /// The newest published version of a URL (`GET`, [`LatestUrlQuery`](super::LatestUrlQuery)).
    pub const URLS_LATEST: &str = "/v1/urls/latest";
    /// Report a URL mapping the origin disagrees with (`POST`, [`UrlReportRequest`](super::UrlReportRequest)).
    pub const URL_REPORTS: &str = "/v1/urls/reports";
    /// Create or join a URL swarm (`POST`).
    pub const SWARMS: &str = "/v1/swarms";
}

#[cfg(test)]
mod tests;
