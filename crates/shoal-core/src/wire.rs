//! The tracker's HTTP API as Rust types, shared by the tracker (which serves them) and the
//! agent (which sends them), so both ends have one definition. Every body is JSON; every path
//! is under [`API_PREFIX`]. Ids and bitfields travel as hex text.
//!
//! The agent's protocol: `PUT /v1/agents/{id}` with [`RegisterRequest`] (its full holdings),
//! then [`AnnounceRequest`] deltas and [`HeartbeatRequest`]s before the lease in
//! [`LeaseGrant`] runs out. A `404` to a heartbeat or announce means the tracker forgot the
//! agent (its lease lapsed, or the tracker restarted): register again with the full list.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::bitfield::Bitfield;
use crate::content::ContentId;
use crate::hex;
use crate::layout::Layout;

pub const API_PREFIX: &str = "/v1";
/// The largest file size shoal handles, as [`Layout::new`] enforces.
pub const MAX_FILE_SIZE: u64 = 1 << 63;
pub const MAX_AGENT_ID_LEN: usize = 64;
pub const MAX_NAME_LEN: usize = 1024;
pub const MAX_URL_LEN: usize = 8192;
pub const MAX_VALIDATOR_LEN: usize = 1024;

/// An agent's id: 1 to 64 characters from `A-Z a-z 0-9 . _ -`, so it is safe in a URL path and a
/// log line without escaping; `.` and `..` are refused because URL clients resolve them as
/// path segments.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AgentId(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "an agent id is 1 to {MAX_AGENT_ID_LEN} characters from A-Z a-z 0-9 . _ -, other than . and .."
)]
pub struct AgentIdError;

impl AgentId {
    pub fn new(id: impl Into<String>) -> Result<Self, AgentIdError> {
        let id = id.into();
        let ok = (1..=MAX_AGENT_ID_LEN).contains(&id.len())
            && id != "."
            && id != ".."
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        ok.then_some(Self(id)).ok_or(AgentIdError)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for AgentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        AgentId::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// The bytes of a [`Bitfield`] (MSB first, one bit per piece) as hex text; its length is the
/// piece count of the content's [`Layout`], so it is not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedBits(Vec<u8>);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PackedBitsError {
    #[error("bitfield is {actual} bytes but {pieces} pieces take {expected}")]
    Length {
        pieces: u32,
        expected: usize,
        actual: usize,
    },
    #[error("bitfield sets bits past the last piece ({pieces} pieces)")]
    StrayBits { pieces: u32 },
}

impl PackedBits {
    pub fn of(field: &Bitfield) -> Self {
        Self(field.as_bytes().to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bitfield for a content of `pieces` pieces; the byte length must match exactly.
    pub fn to_bitfield(&self, pieces: u32) -> Result<Bitfield, PackedBitsError> {
        let expected = (pieces as usize).div_ceil(8);
        if self.0.len() != expected {
            return Err(PackedBitsError::Length {
                pieces,
                expected,
                actual: self.0.len(),
            });
        }
        Bitfield::from_bytes(pieces, self.0.clone()).ok_or(PackedBitsError::StrayBits { pieces })
    }
}

impl Serialize for PackedBits {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for PackedBits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        hex::decode(&text)
            .map(Self)
            .map_err(|e| serde::de::Error::custom(format!("bitfield: {e}")))
    }
}

/// One content an agent holds, whole or in part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holding {
    /// Also the manifest's root hash: the id is BLAKE3 of the manifest.
    pub content: ContentId,
    /// A name people search by, e.g. the file name.
    pub name: String,
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
    /// Upload capacity in bytes per second, 0 when unknown.
    #[serde(default)]
    pub upload_capacity: u64,
    #[serde(default)]
    pub holdings: Vec<Holding>,
}

/// The answer to register, heartbeat and announce: the lease now runs `lease_ms` from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    pub lease_ms: u64,
}

/// `POST /v1/agents/{id}/heartbeat`: renews the lease.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// Uploads in progress now; peers with less load are offered first.
    #[serde(default)]
    pub load: u32,
}

/// Newly verified pieces of a content the agent already announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PieceDelta {
    pub content: ContentId,
    pub have: Vec<u32>,
}

/// `POST /v1/agents/{id}/announce`: changes since the last register or announce. Also renews
/// the lease. Applied in order: `removed`, then `holdings` (added or replaced whole), then
/// `pieces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<ContentId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holdings: Vec<Holding>,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub id: AgentId,
    pub addr: SocketAddr,
    pub upload_capacity: u64,
    pub load: u32,
    pub complete: bool,
    /// Verified pieces of a partial holder; absent for complete holders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<PackedBits>,
}

/// Peers in order of preference: complete holders, then most pieces the asker lacks, then
/// least load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersResponse {
    pub content: ContentId,
    pub layout: Layout,
    pub peers: Vec<Peer>,
}

/// Query of `GET /v1/content`: search by name substring and/or id prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Hex prefix of the content id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentSummary {
    pub id: ContentId,
    pub name: String,
    pub layout: Layout,
    /// Whether the tracker has the manifest.
    pub manifest: bool,
    pub complete_holders: u32,
    pub partial_holders: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentList {
    pub contents: Vec<ContentSummary>,
}

/// Query of `GET /v1/agents`: pages in id order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsQuery {
    /// Only agents whose id sorts after this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<AgentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSummary {
    pub id: AgentId,
    pub addr: SocketAddr,
    pub upload_capacity: u64,
    pub load: u32,
    pub holdings: u32,
    pub complete_holdings: u32,
    pub lease_remaining_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentList {
    pub agents: Vec<AgentSummary>,
}

/// What identifies one version of a file at a URL: the normalized URL, its size and the
/// validators the origin sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlKey {
    pub url: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// `POST /v1/urls`: this URL version has this content (whose manifest must be published).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishUrlRequest {
    pub key: UrlKey,
    pub content: ContentId,
}

/// A URL version's content. The first publish wins; later ones get this mapping back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlMapping {
    /// `key.url` as the tracker normalized it.
    pub key: UrlKey,
    pub content: ContentId,
    /// The name of the token that published it.
    pub publisher: String,
    /// Unix time in seconds.
    pub published_at: u64,
}

/// The answer to `PUT /v1/content/{id}/manifest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPublished {
    pub content: ContentId,
    /// False when the tracker already had this manifest.
    pub created: bool,
}

/// The body of every error answer; `field` names the request field at fault, as a path such as
/// `holdings[2].pieces`, when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Request paths, so clients build them the way the tracker routes them.
pub mod path {
    use super::AgentId;
    use crate::content::ContentId;

    pub fn agent(id: &AgentId) -> String {
        format!("/v1/agents/{id}")
    }

    pub fn heartbeat(id: &AgentId) -> String {
        format!("/v1/agents/{id}/heartbeat")
    }

    pub fn announce(id: &AgentId) -> String {
        format!("/v1/agents/{id}/announce")
    }

    pub fn content(id: &ContentId) -> String {
        format!("/v1/content/{id}")
    }

    pub fn peers(id: &ContentId) -> String {
        format!("/v1/content/{id}/peers")
    }

    pub fn manifest(id: &ContentId) -> String {
        format!("/v1/content/{id}/manifest")
    }

    pub const AGENTS: &str = "/v1/agents";
    pub const CONTENT: &str = "/v1/content";
    pub const URLS: &str = "/v1/urls";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_are_validated() {
        assert!(AgentId::new("web-01.dc_2").is_ok());
        assert!(AgentId::new("").is_err());
        assert!(AgentId::new("a/b").is_err());
        assert!(AgentId::new("..").is_err() && AgentId::new(".").is_err());
        assert!(AgentId::new("...").is_ok());
        assert!(AgentId::new("x".repeat(65)).is_err());
        assert!(serde_json::from_str::<AgentId>("\"a b\"").is_err());
    }

    #[test]
    fn packed_bits_check_length_and_stray_bits() {
        let mut field = Bitfield::new(10);
        field.set(9);
        let packed = PackedBits::of(&field);
        assert_eq!(serde_json::to_string(&packed).unwrap(), "\"0040\"");
        assert_eq!(packed.to_bitfield(10).unwrap(), field);
        assert!(matches!(
            packed.to_bitfield(8),
            Err(PackedBitsError::Length { expected: 1, .. })
        ));
        let stray: PackedBits = serde_json::from_str("\"0020\"").unwrap();
        assert_eq!(
            stray.to_bitfield(10),
            Err(PackedBitsError::StrayBits { pieces: 10 })
        );
    }

    #[test]
    fn holding_json_shape() {
        let text = format!(
            r#"{{"content":"{}","name":"a.iso","layout":{{"size":10,"piece_size":4}},"pieces":"c0"}}"#,
            "ab".repeat(32)
        );
        let holding: Holding = serde_json::from_str(&text).unwrap();
        assert_eq!(holding.layout.piece_count(), 3);
        assert_eq!(serde_json::to_string(&holding).unwrap(), text);
    }
}
