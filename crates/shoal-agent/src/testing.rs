//! What the agent's unit tests share: a piece server on loopback, a tracker address that
//! refuses every connection, a tracker that gives one answer to everything, and a fetcher of
//! an agent without a tracker.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use url::Url;

use crate::catalog::Catalog;
use crate::fetch::{Downloads, FetchOptions, Fetcher};
use crate::objects::Objects;
use crate::serve::{self, PieceServer, ServeOptions};
use shoal_core::wire::AgentId;

/// The fleet token the tests' piece servers take.
pub(crate) const TOKEN: &str = "fleet-token-for-tests";

/// Serves `catalog`'s pieces on a loopback port, taking [`TOKEN`], until `stop` fires; its
/// address.
pub(crate) async fn serve_pieces(catalog: Catalog, stop: &CancellationToken) -> SocketAddr {
    let server = PieceServer::new(
        catalog,
        ServeOptions {
            tokens: vec![TOKEN.into()],
            ..ServeOptions::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = stop.clone();
    tokio::spawn(serve::run(listener, server, async move {
        stop.cancelled().await
    }));
    addr
}

/// The fetcher of agent `id` without a tracker, its data in `data`, options at their
/// defaults: what it fetches comes from origins alone.
pub(crate) fn lone_fetcher(id: &str, data: &std::path::Path) -> Fetcher {
    Fetcher::new(
        AgentId::new(id).unwrap(),
        Catalog::new(),
        Objects::open(data, None).unwrap(),
        None,
        FetchOptions::default(),
        Downloads::open(data).unwrap(),
    )
}

/// An address on loopback that nothing listens on: a port bound, learned and closed again.
pub(crate) fn refusing_url() -> Url {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    Url::parse(&format!("http://{addr}/")).unwrap()
}

/// A server on loopback answering every request with `answer` as JSON until `stop` fires (a
/// tracker whose answer the test sets); its base URL.
pub(crate) async fn answering<T>(answer: T, stop: &CancellationToken) -> Url
where
    T: serde::Serialize + Clone + Send + Sync + 'static,
{
    let app = axum::Router::new().fallback(move || {
        let answer = answer.clone();
        async move { axum::Json(answer) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    Url::parse(&format!("http://{addr}/")).unwrap()
}
