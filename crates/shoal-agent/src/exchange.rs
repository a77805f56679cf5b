//! Asking a peer what the tracker would say, for when the tracker cannot: the members of a
//! swarm the peer knows, and the piece digests a URL swarm's leader learned. The requests and
//! answers are the peer protocol's exchange routes (`shoal_core::wire::peer`); answers are
//! read up to their size limit and no further.

use std::time::Duration;

use serde::de::DeserializeOwned;
use shoal_core::manifest::PieceDigest;
use shoal_core::wire::peer::{self, KnownPeer, PeerList, MAX_PEER_LIST_BYTES};
use shoal_core::wire::SwarmDigests;
use shoal_core::ContentId;
use shoal_engine::ca::{self, ExtraRoots};
use thiserror::Error;

/// Why a peer could not tell what it knows.
#[derive(Debug, Error)]
pub(crate) enum ExchangeError {
    /// The request failed, or the peer refused it.
    #[error("asking the peer at {at} for {what}: {detail}")]
    Failed {
        at: String,
        what: &'static str,
        detail: String,
    },
    /// The answer is longer than the route's limit.
    #[error("the peer at {at} sent more than {limit} bytes of {what}")]
    TooLarge {
        at: String,
        what: &'static str,
        limit: usize,
    },
    /// The answer does not parse, or does not fit the content.
    #[error("the peer at {at} sent unusable {what}: {detail}")]
    Unusable {
        at: String,
        what: &'static str,
        detail: String,
    },
}

/// Asks peers' exchange routes with the fleet token, over HTTPS to a peer that serves it;
/// cheap to clone.
#[derive(Clone)]
pub(crate) struct Exchange {
    http: reqwest::Client,
    token: String,
}

impl Exchange {
    /// An exchange sending `token`, trusting `roots` besides the system's CAs.
    pub(crate) fn new(token: String, roots: Option<&ExtraRoots>) -> Self {
        let http = ca::client_builder(roots)
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .expect("a client of certificates already parsed builds");
        Self { http, token }
    }

    /// The members of `content`'s swarm `known` knows.
    pub(crate) async fn peers(
        &self,
        known: &KnownPeer,
        content: &ContentId,
    ) -> Result<PeerList, ExchangeError> {
        self.get(
            known,
            &peer::path::peers(content),
            "peers",
            MAX_PEER_LIST_BYTES,
        )
        .await
    }

    /// The piece digests of a swarm of `pieces` pieces `known` learned.
    pub(crate) async fn digests(
        &self,
        known: &KnownPeer,
        content: &ContentId,
        pieces: u32,
    ) -> Result<Vec<Option<PieceDigest>>, ExchangeError> {
        let limit = peer::max_digests_bytes(pieces);
        let answer: SwarmDigests = self
            .get(known, &peer::path::digests(content), "digests", limit)
            .await?;
        answer
            .to_digests(pieces)
            .map_err(|e| ExchangeError::Unusable {
                at: known.scheme.base(known.addr),
                what: "digests",
                detail: e.to_string(),
            })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        known: &KnownPeer,
        path: &str,
        what: &'static str,
        limit: usize,
    ) -> Result<T, ExchangeError> {
        let at = known.scheme.base(known.addr);
        let failed = |detail: String| ExchangeError::Failed {
            at: at.clone(),
            what,
            detail,
        };
        let mut response = self
            .http
            .get(format!("{at}{path}"))
            .bearer_auth(&self.token)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| failed(shoal_core::chain::chain(&e)))?;
        let mut body = Vec::new();
        // Bounded by `limit`.
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failed(shoal_core::chain::chain(&e)))?
        {
            if body.len() + chunk.len() > limit {
                return Err(ExchangeError::TooLarge { at, what, limit });
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| ExchangeError::Unusable {
            at,
            what,
            detail: e.to_string(),
        })
    }
}
