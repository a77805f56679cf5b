//! The shoal tracker: the service that knows which agent holds which pieces of which content.
//!
//! Agents register with their holdings and keep a lease alive with heartbeats; they announce
//! pieces as they verify them; an agent that needs a content asks for peers. The tracker also
//! keeps manifests (piece digests, checked against the content id), maps URL versions to
//! contents, runs URL swarms (agents fetching one URL together before its manifest exists, the
//! leader publishing piece digests as it goes) and hears reports of peers that sent bad pieces. The HTTP API is JSON under `/v1` (see [`openapi`] and `shoal_core::wire`), with
//! bearer tokens by role ([`auth`]) and per-token rate limits ([`ratelimit`]). Storage sits
//! behind the [`store::Store`] trait; the default backend is SQLite plus in-memory soft state.
//!
//! The page for people, `/ui`, is in [`ui`].
//!
//! A server is [`app`] (a router) and [`run`] (serve a listener until a shutdown future
//! completes), so tests bind `127.0.0.1:0` and drive the real thing.

pub mod api;
pub mod auth;
pub mod clock;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod store;
pub mod ui;
pub mod urlkey;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use shoal_serve::ServeLimits;
use tokio::net::TcpListener;

pub use auth::{Role, Tokens, TokensError};
pub use clock::Clock;
pub use error::ApiError;
pub use ratelimit::RateLimit;
pub use shoal_serve::ServerTls;
pub use store::{
    RedisStore, SqliteLocation, SqliteStore, Store, StoreError, StoreOptions, SwarmLimits,
    RETENTION,
};

use crate::metrics::Metrics;
use crate::ratelimit::RequestLimiter;

/// Server settings other than storage and tokens.
#[derive(Debug, Clone)]
pub struct TrackerOptions {
    /// Largest request body, except bodies of piece digests.
    pub body_limit: usize,
    /// Largest body of piece digests, a manifest (64 hex digits per piece plus a little) or a
    /// swarm's digests (about 90 bytes per piece, so the 16 MiB default takes 2^16 pieces in
    /// one publish with room to spare).
    pub manifest_body_limit: usize,
    /// Requests per token per second, and burst; refused beyond with `429`.
    pub rate_limit: RateLimit,
    /// How often agents whose lease lapsed, and lapsed swarms, are dropped from memory.
    pub sweep_every: Duration,
    /// The clock of rate limits (give the store the same one, unless it is shared by replicas:
    /// then the store's is [`Clock::wall`]).
    pub clock: Clock,
    /// Header and idle timeouts and connection caps.
    pub limits: ServeLimits,
    /// Serve TLS with this certificate and key instead of plain HTTP.
    pub tls: Option<ServerTls>,
}

impl Default for TrackerOptions {
    fn default() -> Self {
        Self {
            body_limit: 1 << 20,
            manifest_body_limit: 16 << 20,
            rate_limit: RateLimit::default(),
            sweep_every: Duration::from_secs(5),
            clock: Clock::system(),
            limits: ServeLimits::default(),
            tls: None,
        }
    }
}

/// Everything a handler needs; cheap to clone.
pub struct AppState<S> {
    shared: Arc<Shared<S>>,
}

struct Shared<S> {
    store: S,
    tokens: Tokens,
    options: TrackerOptions,
    limiter: RequestLimiter,
    metrics: Metrics,
    /// Changes once [`run`]'s shutdown completes, so that the page's endless event streams end
    /// and the server's graceful shutdown does not wait for them.
    closing: tokio::sync::watch::Sender<()>,
}

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S: Store> AppState<S> {
    /// The state of a tracker over `store`, accepting `tokens`; rate limits read `options.clock`.
    pub fn new(store: S, tokens: Tokens, options: TrackerOptions) -> Self {
        Self {
            shared: Arc::new(Shared {
                limiter: RequestLimiter::new(options.rate_limit, options.clock.clone()),
                store,
                tokens,
                options,
                metrics: Metrics::default(),
                closing: tokio::sync::watch::Sender::new(()),
            }),
        }
    }

    /// The store the handlers read and write, for an embedder that inspects it directly.
    pub fn store(&self) -> &S {
        &self.shared.store
    }
}

/// The tracker's router, ready to serve.
pub fn app<S: Store>(state: AppState<S>) -> Router {
    api::router::<S>()
        .merge(ui::router::<S>())
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track::<S>,
        ))
        .with_state(state)
}

/// Serves `listener` within [`TrackerOptions::limits`] (over TLS with
/// [`TrackerOptions::tls`]) until `shutdown` completes, then lets
/// requests in flight finish.
pub async fn run<S: Store>(
    listener: TcpListener,
    state: AppState<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let store = state.shared.store.clone();
    let every = state.shared.options.sweep_every;
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.sweep().await {
                Ok(swept) if swept == store::Swept::default() => {}
                Ok(swept) => tracing::debug!(
                    agents = swept.agents,
                    swarms = swept.swarms,
                    contents = swept.contents,
                    "dropped lapsed agents and swarms, and contents past their retention"
                ),
                Err(e) => tracing::warn!(error = ?e, "sweeping the tracker's state failed"),
            }
        }
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "tracker listening");
    }
    let limits = state.shared.options.limits.clone();
    let tls = state.shared.options.tls.clone();
    let closing = state.shared.closing.clone();
    let shutdown = async move {
        shutdown.await;
        closing.send_replace(());
    };
    let served = shoal_serve::serve_tls(listener, app(state), limits, tls, shutdown).await;
    sweeper.abort();
    tracing::info!("tracker stopped");
    served
}
