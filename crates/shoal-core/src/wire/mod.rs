//! shoal's two HTTP protocols as Rust types, so that both ends of each share one definition:
//!
//! - [`tracker`]: agents and tools to the tracker (register, announce, peers, URL swarms).
//! - [`peer`]: an agent to another agent's piece server (piece bytes, bitfields).
//!
//! What both use lives here: agent ids ([`AgentId`]), how a piece server is spoken to
//! ([`Scheme`]), bitfields on the wire ([`PackedBits`]) and the body of every error answer
//! ([`ErrorBody`]). Every body is JSON; ids and bitfields travel
//! as hex text. The tracker's types are also named from here (`wire::RegisterRequest`, …), as
//! they were before the protocols had a module each.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::bitfield::Bitfield;
use crate::hex;

pub mod peer;
pub mod tracker;

pub use tracker::{
    leader_stall_limit, path, AgentList, AgentSummary, AgentsQuery, AnnounceRequest, ContentList,
    ContentQuery, ContentSummary, CreateSwarmRequest, DigestsQuery, HeartbeatRequest, Holding,
    LatestUrlQuery, LeaseGrant, ManifestPublished, Peer, PeersQuery, PeersResponse, PieceDelta,
    PieceDigestEntry, PublishDigestsRequest, PublishUrlRequest, RegisterRequest, ReportAccepted,
    ReportRequest, SwarmDigests, SwarmDigestsError, SwarmInfo, TakeOverRequest, UrlKey, UrlMapping,
    UrlReportAccepted, UrlReportRequest, LEADER_STALL_FLOOR, MAX_FILE_SIZE, MAX_NAME_LEN,
    MAX_REASON_LEN, MAX_SWARM_PIECES, MAX_URL_LEN, MAX_VALIDATOR_LEN, SLOWEST_LEADER_RATE,
    SWARM_ID_TAG,
};

/// Every path of both protocols is under this prefix.
pub const API_PREFIX: &str = "/v1";
/// The longest [`AgentId`], in bytes.
pub const MAX_AGENT_ID_LEN: usize = 64;

/// How an agent's piece server is spoken to: plain HTTP, or HTTPS when the agent serves with a
/// certificate (`shoal agent --tls-cert`). It travels beside every agent address; absent means
/// `http`, as agents from before TLS registered, and it is left out when `http` so that those
/// agents' trackers still take a plain agent's registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP: the bearer token crosses the network in clear text.
    #[default]
    Http,
    /// HTTPS only.
    Https,
}

impl Scheme {
    /// True for [`Scheme::Http`], which the wire leaves out.
    pub fn is_http(&self) -> bool {
        *self == Scheme::Http
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The base URL of a server at `addr`, e.g. `https://10.0.0.5:7701`.
    pub fn base(self, addr: SocketAddr) -> String {
        format!("{}://{addr}", self.as_str())
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An agent's id: 1 to 64 characters from `A-Z a-z 0-9 . _ -`, so it is safe in a URL path and a
/// log line without escaping; `.` and `..` are refused because URL clients resolve them as
/// path segments.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AgentId(String);

/// A text that is not a valid [`AgentId`].
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "an agent id is 1 to {MAX_AGENT_ID_LEN} characters from A-Z a-z 0-9 . _ -, other than . and .."
)]
pub struct AgentIdError;

impl AgentId {
    /// Checks `id` against the rules above.
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

    /// The id as text.
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
/// piece count of the content's [`Layout`](crate::Layout), so it is not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedBits(Vec<u8>);

/// [`PackedBits`] that do not fit a layout.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PackedBitsError {
    /// The byte length is not the one the layout's piece count takes.
    #[error("bitfield is {actual} bytes but {pieces} pieces take {expected}")]
    Length {
        /// The content's piece count.
        pieces: u32,
        /// Bytes that many pieces take, one bit each, rounded up.
        expected: usize,
        /// Bytes received.
        actual: usize,
    },
    /// A spare bit after the last piece is set, so the field has two spellings.
    #[error("bitfield sets bits past the last piece ({pieces} pieces)")]
    StrayBits {
        /// The content's piece count.
        pieces: u32,
    },
}

impl PackedBits {
    /// The bytes of `field`.
    pub fn of(field: &Bitfield) -> Self {
        Self(field.as_bytes().to_vec())
    }

    /// Bits packed as [`PackedBits::of`] packs them, not checked against a layout yet (see
    /// [`PackedBits::to_bitfield`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The packed bytes, as sent (before hex).
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

/// The body of every error answer; `field` names the request field at fault, as a path such as
/// `holdings[2].pieces`, when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and, where it helps, what to do about it.
    pub error: String,
    /// The request field at fault as a path (`holdings[2].pieces`); `None` when the error is
    /// not about one field (authentication, a missing content, a server fault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
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
}
