//! The agent's page for people, at `/ui` on the RPC listener (`--rpc-listen`): its queue (add
//! a URL, pause, resume, remove, reorder), speeds, and its place in the fleet.
//!
//! The page drives the queue through the same aria2 JSON-RPC that aria2 clients use (one
//! `system.multicall` a second to `/jsonrpc`, the secret as aria2's `token:` parameter), so it
//! can do nothing a client cannot. What the RPC has no method for, the agent's fleet role
//! (its id, tracker, holdings, bytes served), comes from `/ui/fleet`, which wants the same
//! secret as a bearer token. The assets are built in and served by [`shoal_web`] with its
//! security headers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use shoal_core::bearer;
use shoal_core::wire::AgentId;
use shoal_web::Asset;

use crate::catalog::Catalog;
use crate::control::door;
use crate::serve::PieceServer;
use crate::tracker::TrackerClient;

const PAGE: Asset = Asset::html(include_str!("agent.html"));
const SCRIPT: Asset = Asset::js(include_str!("agent.js"));
const STYLE: Asset = Asset::css(include_str!("agent.css"));

/// What the page shows of the agent beyond its queue.
pub struct Fleet {
    /// The agent's id.
    pub id: AgentId,
    /// Where peers reach its piece server.
    pub advertise: SocketAddr,
    /// The tracker it reports to; `None` for a download daemon on its own.
    pub tracker: Option<TrackerClient>,
    /// What it holds and shares.
    pub catalog: Catalog,
    /// Its piece server: bytes served, uploads in progress.
    pub server: PieceServer,
    /// The RPC secret, which `/ui/fleet` wants as its bearer token.
    pub secret: String,
}

/// The page's routes, to merge beside the RPC's on its listener.
pub fn app(fleet: Fleet) -> Router {
    shoal_web::page_routes("agent", PAGE, SCRIPT, STYLE)
        .route("/ui/fleet", get(fleet_role))
        .with_state(Arc::new(fleet))
}

/// The answer of `/ui/fleet`.
#[derive(Debug, Serialize)]
struct FleetRole {
    id: AgentId,
    /// Where peers reach it.
    advertise: SocketAddr,
    /// The tracker's URL, credentials hidden; `None` on its own.
    tracker: Option<String>,
    /// Contents it holds, whole or in part.
    holdings: usize,
    /// Contents it holds whole.
    complete: usize,
    /// Bytes its piece server sent to peers since it started.
    served: u64,
    /// Uploads to peers in progress.
    uploads: u32,
}

async fn fleet_role(State(fleet): State<Arc<Fleet>>, headers: HeaderMap) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| bearer::parse(value.as_bytes()).ok());
    let mut response = match given {
        Some(given) if door::same_secret(given, &fleet.secret) => {
            let entries = fleet.catalog.entries();
            Json(FleetRole {
                id: fleet.id.clone(),
                advertise: fleet.advertise,
                tracker: fleet.tracker.as_ref().map(TrackerClient::base),
                holdings: entries.len(),
                complete: entries.iter().filter(|e| e.is_complete()).count(),
                served: fleet.server.bytes_served(),
                uploads: fleet.server.load(),
            })
            .into_response()
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "the agent's page needs its RPC secret (--rpc-secret-file) as a bearer token\n",
        )
            .into_response(),
    };
    shoal_web::secure(response.headers_mut());
    response
}
