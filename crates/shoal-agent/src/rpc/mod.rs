//! The aria2-compatible JSON-RPC door (`--rpc-listen`): what aria2 clients (aria2p, AriaNg,
//! webui-aria2, the *arr plug-ins) send to `aria2c --enable-rpc`, served at `/jsonrpc` over
//! HTTP POST and over a WebSocket on the same path, and answered from the agent's persistent
//! [`Queue`]. Like every door of the agent it parses its protocol and hands the queue a
//! request; the queue's downloads run through the engine (or the swarm, with a tracker).
//!
//! Every `aria2.*` call carries the secret as aria2 clients send it, `"token:SECRET"` as the
//! first parameter, compared in constant time; the secret lives in `--rpc-secret-file` (made,
//! mode 0600, in the data directory when not given). The WebSocket also carries aria2's
//! notifications (`aria2.onDownloadStart`, …), which name only a gid.
//!
//! The parts: `jsonrpc` (the JSON-RPC 2.0 envelope and aria2's errors), `methods` (each aria2
//! method on the queue), `status` (the structs `tellStatus` answers, with `keys`) and `ws` (the
//! WebSocket). Other pages on this listener (the agent's `/ui`) are routes merged beside
//! [`app`]'s by the caller, and reach the queue through this same RPC.

mod jsonrpc;
mod methods;
mod origins;
mod status;
mod ws;

pub use origins::{AllowedOrigins, OriginError};

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::control::door;
use crate::queue::Queue;

/// The path aria2 serves its RPC at, over POST and WebSocket.
pub const RPC_PATH: &str = "/jsonrpc";
/// The secret's default file in the data directory.
pub const SECRET_FILE: &str = "rpc.secret";

/// What the RPC serves from: the queue and the secret; cheap to clone.
#[derive(Clone)]
pub struct Rpc {
    inner: Arc<Inner>,
    origins: Arc<AllowedOrigins>,
}

struct Inner {
    queue: Queue,
    secret: String,
    /// Fires when the agent stops: open WebSockets close.
    stop: CancellationToken,
}

impl Rpc {
    /// An RPC over `queue` that requires `secret`; its WebSockets close when `stop` fires.
    pub fn new(queue: Queue, secret: String, stop: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                queue,
                secret,
                stop,
            }),
            origins: Arc::new(AllowedOrigins::OwnOnly),
        }
    }

    /// The same RPC, also serving the web pages of `origins` (`--rpc-allow-origin`).
    pub fn allowing(mut self, origins: AllowedOrigins) -> Self {
        self.origins = Arc::new(origins);
        self
    }

    /// The queue the RPC drives.
    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// Whether `given` is the secret, compared through their hashes in constant time.
    fn authorized(&self, given: &str) -> bool {
        door::same_secret(given, &self.inner.secret)
    }

    /// Answers one JSON-RPC message (a call or a batch); `None` for a batch of notifications.
    pub async fn answer(&self, body: &[u8]) -> Option<serde_json::Value> {
        jsonrpc::answer(self, body).await
    }
}

/// The RPC's route: `/jsonrpc`, POST for calls and GET for the WebSocket.
pub fn app(rpc: Rpc) -> Router {
    Router::new()
        .route(
            RPC_PATH,
            post(http_call).get(ws::upgrade).options(preflight),
        )
        .with_state(rpc)
}

/// A page on another site may POST here too (a form's `text/plain` body); every method that
/// does anything needs the secret, which such a page does not have, and the browser lets it
/// read the answer only when its origin is allowed (`Access-Control-Allow-Origin`). Bodies are
/// capped by axum's default limit (2 MiB).
async fn http_call(State(rpc): State<Rpc>, headers: HeaderMap, body: Bytes) -> Response {
    let mut response = match rpc.answer(&body).await {
        Some(answer) => (
            [(header::CONTENT_TYPE, "application/json-rpc")],
            answer.to_string(),
        )
            .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    if let Some(origin) = rpc.origins.cors(&headers) {
        let answer = response.headers_mut();
        answer.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        answer.insert(
            header::VARY,
            header::ORIGIN.as_str().parse().expect("a header value"),
        );
    }
    response
}

/// A browser's question before a page of another origin POSTs JSON: answered yes only for an
/// allowed origin.
async fn preflight(State(rpc): State<Rpc>, headers: HeaderMap) -> Response {
    match rpc.origins.cors(&headers) {
        Some(origin) => (
            StatusCode::NO_CONTENT,
            [
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
                (
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    "POST, GET, OPTIONS".parse().expect("a header value"),
                ),
                (
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    "Content-Type".parse().expect("a header value"),
                ),
                (
                    header::ACCESS_CONTROL_MAX_AGE,
                    "600".parse().expect("a header value"),
                ),
                (
                    header::VARY,
                    header::ORIGIN.as_str().parse().expect("a header value"),
                ),
            ],
        )
            .into_response(),
        None => (
            StatusCode::FORBIDDEN,
            "pages of this origin may not call the RPC: allow them with --rpc-allow-origin",
        )
            .into_response(),
    }
}
