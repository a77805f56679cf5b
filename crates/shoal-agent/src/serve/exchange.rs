//! The peer exchange routes: the members of a content's swarm this agent knows, and the piece
//! digests it learned for a URL swarm. Downloaders ask them while the tracker is down; they
//! answer from the catalog entry alone, immediately, within [`EXCHANGE_RATE`] requests a
//! second for all peers together (429 beyond).

use std::num::NonZeroU64;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use shoal_core::wire::peer::{PeerList, EXCHANGE_RATE};
use shoal_core::wire::SwarmDigests;
use shoal_core::{ContentId, TokenBucket};

use super::error::ServeError;
use super::PieceServer;
use crate::catalog::Entry;

/// The exchange routes' shared rate limit.
pub(super) struct ExchangeLimit {
    bucket: Mutex<TokenBucket>,
    since: Instant,
}

impl ExchangeLimit {
    pub(super) fn new() -> Self {
        let rate = NonZeroU64::new(EXCHANGE_RATE).expect("a positive rate");
        Self {
            // A second's worth at once: a swarm whose tracker just went away asks together.
            bucket: Mutex::new(TokenBucket::full(
                rate,
                EXCHANGE_RATE as f64,
                Default::default(),
            )),
            since: Instant::now(),
        }
    }

    fn take(&self) -> Result<(), ServeError> {
        let now = self.since.elapsed();
        self.bucket
            .lock()
            .expect("exchange bucket lock")
            .try_take(1, now)
            .map_err(|_| ServeError::TooManyRequests {
                rate: EXCHANGE_RATE,
            })
    }
}

/// `GET /v1/pieces/{content_id}/peers`.
pub(super) async fn peers(
    State(server): State<PieceServer>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<PeerList>, ServeError> {
    let entry = asked(&server, &headers, id)?;
    Ok(Json(PeerList {
        peers: entry.peers(),
    }))
}

/// `GET /v1/pieces/{content_id}/digests`.
pub(super) async fn digests(
    State(server): State<PieceServer>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<SwarmDigests>, ServeError> {
    let entry = asked(&server, &headers, id)?;
    Ok(Json(entry.digests()))
}

/// The entry an exchange request asks about, once the token and the rate allow it.
fn asked(
    server: &PieceServer,
    headers: &HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<std::sync::Arc<Entry>, ServeError> {
    server.authorize(headers)?;
    server.inner.exchange.take()?;
    let Path(id) = id.map_err(|_| ServeError::PathEncoding)?;
    let id: ContentId = id.parse()?;
    server.inner.catalog.get(&id).ok_or(ServeError::Unknown(id))
}
