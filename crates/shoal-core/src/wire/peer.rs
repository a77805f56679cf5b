//! The peer protocol: how an agent asks another agent's piece server for the pieces it holds.
//! The server (`shoal_agent::serve`) routes with [`path`]'s patterns and answers these types;
//! downloaders (`shoal_agent::peers`, and the engine through a peer's URL) build their requests
//! from the same definitions.
//!
//! - `GET` (or `HEAD`) [`path::pieces`] with one `Range`: bytes of verified pieces.
//! - `GET` [`path::have`] with a [`HaveQuery`]: which pieces are verified there ([`PeerHave`]),
//!   once more than `after` are or after [`HAVE_WAIT`], so that a downloader polling it fetches
//!   what the peer verifies within a round trip rather than after the tracker heard of it.
//!
//! - `GET` [`path::peers`]: the other agents this one knows in the content's swarm
//!   ([`PeerList`], at most [`MAX_PEERS`]), so that a swarm whose tracker is down still finds
//!   its members.
//! - `GET` [`path::digests`]: the piece digests this agent learned for a URL swarm
//!   ([`SwarmDigests`](super::SwarmDigests)); a follower asks its leader while the tracker is
//!   down.
//!
//! All take the fleet's bearer token (`Authorization: Bearer …`); refusals answer an
//! [`ErrorBody`](super::ErrorBody). The two exchange routes answer 429 past
//! [`EXCHANGE_RATE`] requests a second.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AgentId, PackedBits, PackedBitsError, Scheme};
use crate::bitfield::Bitfield;

/// The most peers a [`PeerList`] names.
pub const MAX_PEERS: usize = 50;
/// Requests a second one agent answers on the exchange routes (peers and digests), all peers
/// together; a swarm asks them about once a second per member while its tracker is down.
pub const EXCHANGE_RATE: u64 = 50;
/// The largest answer of the peers route: [`MAX_PEERS`] ids and addresses, with room to spare.
pub const MAX_PEER_LIST_BYTES: usize = 64 << 10;

/// The most a `have` request waits for news; a client's timeout must leave room for it.
pub const HAVE_WAIT: Duration = Duration::from_secs(1);

/// Query of `GET /v1/pieces/{id}/have`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaveQuery {
    /// Answer only once more than this many pieces are verified (or after [`HAVE_WAIT`]).
    #[serde(default)]
    pub after: Option<u32>,
}

/// What an agent holds of a content: its answer to `GET /v1/pieces/{id}/have`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHave {
    /// Verified pieces.
    pub count: u32,
    /// Which, while some are missing; absent once every piece is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<PackedBits>,
}

impl PeerHave {
    /// The answer of a holder of the verified pieces `have`.
    pub fn of(have: &Bitfield) -> Self {
        Self {
            count: have.count_ones(),
            pieces: (!have.is_full()).then(|| PackedBits::of(have)),
        }
    }

    /// The verified pieces of a content of `pieces` pieces; `None` when the peer holds them all.
    pub fn to_bitfield(&self, pieces: u32) -> Result<Option<Bitfield>, PackedBitsError> {
        self.pieces
            .as_ref()
            .map(|packed| packed.to_bitfield(pieces))
            .transpose()
    }
}

/// One member of a swarm, as another member knows it: `GET /v1/pieces/{id}/peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    /// The agent's id at the tracker.
    pub id: AgentId,
    /// Where its piece server listens.
    pub addr: SocketAddr,
    /// Whether its piece server speaks HTTPS; absent: plain HTTP.
    #[serde(default, skip_serializing_if = "Scheme::is_http")]
    pub scheme: Scheme,
}

/// The answer to `GET /v1/pieces/{id}/peers`: at most [`MAX_PEERS`] members of the swarm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    /// The members known, the answering agent not among them.
    pub peers: Vec<KnownPeer>,
}

/// The largest answer of the digests route for a content of `pieces` pieces: 64 hex digits a
/// digest, the bitfield, and room for the JSON around them.
pub fn max_digests_bytes(pieces: u32) -> usize {
    pieces as usize * 66 + 1024
}

/// Request paths and the server's route patterns, so both are spelled in one place.
pub mod path {
    use crate::content::ContentId;

    /// The route of a content's bytes; `{content_id}` is its id in hex.
    pub const PIECES_ROUTE: &str = "/v1/pieces/{content_id}";
    /// The route of a content's bitfield.
    pub const HAVE_ROUTE: &str = "/v1/pieces/{content_id}/have";

    /// The route of the peers an agent knows in a content's swarm.
    pub const PEERS_ROUTE: &str = "/v1/pieces/{content_id}/peers";
    /// The route of the piece digests an agent learned for a URL swarm.
    pub const DIGESTS_ROUTE: &str = "/v1/pieces/{content_id}/digests";

    /// The path of a content's bytes.
    pub fn pieces(id: &ContentId) -> String {
        format!("/v1/pieces/{id}")
    }

    /// The path of a content's bitfield.
    pub fn have(id: &ContentId) -> String {
        format!("/v1/pieces/{id}/have")
    }

    /// The path of the peers an agent knows in a content's swarm.
    pub fn peers(id: &ContentId) -> String {
        format!("/v1/pieces/{id}/peers")
    }

    /// The path of the piece digests an agent learned for a URL swarm.
    pub fn digests(id: &ContentId) -> String {
        format!("/v1/pieces/{id}/digests")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::ContentId;

    #[test]
    fn have_answers_keep_their_json_shape() {
        let mut some = Bitfield::new(10);
        some.set(0);
        some.set(9);
        let have = PeerHave::of(&some);
        let text = serde_json::to_string(&have).unwrap();
        assert_eq!(text, r#"{"count":2,"pieces":"8040"}"#);
        let back: PeerHave = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_bitfield(10), Ok(Some(some)));
        assert!(back.to_bitfield(8).is_err());

        let all = PeerHave::of(&Bitfield::full(3));
        assert_eq!(serde_json::to_string(&all).unwrap(), r#"{"count":3}"#);
        assert_eq!(all.to_bitfield(3), Ok(None));
    }

    #[test]
    fn have_queries_and_paths() {
        let query: HaveQuery = serde_json::from_str(r#"{"after":5}"#).unwrap();
        assert_eq!(query.after, Some(5));
        assert_eq!(serde_json::from_str::<HaveQuery>("{}").unwrap().after, None);
        assert!(serde_json::from_str::<HaveQuery>(r#"{"after":5,"x":1}"#).is_err());
        let id = ContentId::from_bytes([0xab; 32]);
        let hex = "ab".repeat(32);
        assert_eq!(path::pieces(&id), format!("/v1/pieces/{hex}"));
        assert_eq!(path::have(&id), format!("/v1/pieces/{hex}/have"));
        let route = |pattern: &str| pattern.replace("{content_id}", &hex);
        assert_eq!(route(path::PIECES_ROUTE), path::pieces(&id));
        assert_eq!(route(path::HAVE_ROUTE), path::have(&id));
        assert_eq!(route(path::PEERS_ROUTE), path::peers(&id));
        assert_eq!(route(path::DIGESTS_ROUTE), path::digests(&id));
    }

    #[test]
    fn peer_lists_keep_their_json_shape_and_fit_their_limit() {
        let list = PeerList {
            peers: vec![KnownPeer {
                id: AgentId::new("a1").unwrap(),
                addr: "127.0.0.1:7701".parse().unwrap(),
                scheme: Scheme::Http,
            }],
        };
        let text = serde_json::to_string(&list).unwrap();
        assert_eq!(text, r#"{"peers":[{"id":"a1","addr":"127.0.0.1:7701"}]}"#);
        assert_eq!(serde_json::from_str::<PeerList>(&text).unwrap(), list);
        let longest = KnownPeer {
            id: AgentId::new("x".repeat(super::super::MAX_AGENT_ID_LEN)).unwrap(),
            addr: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
                .parse()
                .unwrap(),
            scheme: Scheme::Https,
        };
        let full = PeerList {
            peers: vec![longest; MAX_PEERS],
        };
        assert!(serde_json::to_vec(&full).unwrap().len() <= MAX_PEER_LIST_BYTES);
    }
}
