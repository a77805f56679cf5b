//! A tracker on 127.0.0.1:0 with a manual clock, and a client for it.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shoal_core::Manifest;
use shoal_tracker::{
    AppState, Clock, RateLimit, RedisStore, Role, SqliteLocation, SqliteStore, Store, StoreOptions,
    SwarmLimits, Tokens, TrackerOptions,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) const AGENT: &str = "agent-secret-aaaaaaaaaaaa";
pub(crate) const AGENT2: &str = "agent-secret-bbbbbbbbbbbb";
pub(crate) const READER: &str = "reader-secret-cccccccccccc";
pub(crate) const ADMIN: &str = "admin-secret-dddddddddddd";
/// The per-agent token of agent `web1`.
pub(crate) const WEB1: &str = "web1-secret-eeeeeeeeeeeee";
/// The per-agent token of agent `web2`.
pub(crate) const WEB2: &str = "web2-secret-fffffffffffff";

pub(crate) const LEASE: Duration = Duration::from_secs(10);

pub(crate) fn tokens() -> Tokens {
    Tokens::from_entries([
        ("fleet", AGENT, Role::Agent),
        ("fleet2", AGENT2, Role::Agent),
        ("dashboard", READER, Role::Reader),
        ("ops", ADMIN, Role::Admin),
        ("agent:web1", WEB1, Role::Agent),
        ("agent:web2", WEB2, Role::Agent),
    ])
    .unwrap()
}

pub(crate) struct Setup {
    pub data: Option<PathBuf>,
    pub rate_limit: RateLimit,
    pub body_limit: usize,
    pub clock: Clock,
    pub swarms: SwarmLimits,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            data: None,
            rate_limit: RateLimit {
                per_second: 0,
                burst: 0,
            },
            body_limit: 64 * 1024,
            clock: Clock::manual(),
            swarms: SwarmLimits::default(),
        }
    }
}

pub(crate) struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Clock,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

pub(crate) async fn start(setup: Setup) -> Server {
    let location = match setup.data.clone() {
        Some(dir) => SqliteLocation::Directory(dir),
        None => SqliteLocation::Memory,
    };
    let store = SqliteStore::open(
        location,
        StoreOptions {
            lease: LEASE,
            clock: setup.clock.clone(),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap()
    .with_swarms(setup.swarms);
    serve(store, setup).await
}

/// A tracker replica on the Redis at `url` (`setup.data` is unused).
pub(crate) async fn start_redis(url: &str, setup: Setup) -> Server {
    let store = RedisStore::open(
        url,
        StoreOptions {
            lease: LEASE,
            clock: setup.clock.clone(),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap()
    .with_swarms(setup.swarms);
    serve(store, setup).await
}

async fn serve<S: Store>(store: S, setup: Setup) -> Server {
    let state = AppState::new(
        store,
        tokens(),
        TrackerOptions {
            body_limit: setup.body_limit,
            manifest_body_limit: 4 * setup.body_limit,
            rate_limit: setup.rate_limit,
            clock: setup.clock.clone(),
            ..TrackerOptions::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(shoal_tracker::run(listener, state, async {
        let _ = rx.await;
    }));
    // reqwest is built without a default TLS provider; plain http still wants one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Server {
        base,
        client: reqwest::Client::new(),
        clock: setup.clock,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl Server {
    pub(crate) fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a request with an optional JSON body; answers the status and the JSON body
    /// (`null` when empty).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut builder = self.request(method, path, token);
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder.send().await.unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("non-JSON body: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub(crate) async fn register(&self, token: &str, id: &str, body: Value) -> (StatusCode, Value) {
        self.call(
            Method::PUT,
            &format!("/v1/agents/{id}"),
            Some(token),
            Some(body),
        )
        .await
    }

    pub(crate) async fn announce(&self, token: &str, id: &str, body: Value) -> (StatusCode, Value) {
        let path = format!("/v1/agents/{id}/announce");
        self.call(Method::POST, &path, Some(token), Some(body))
            .await
    }

    pub(crate) async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub(crate) async fn heartbeat(&self, token: &str, id: &str) -> (StatusCode, Value) {
        let path = format!("/v1/agents/{id}/heartbeat");
        self.call(Method::POST, &path, Some(token), Some(json!({"load": 0})))
            .await
    }

    /// Stops the server gracefully and waits for it.
    pub(crate) async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap().unwrap();
    }
}

/// A content of `size` bytes in 4-byte pieces, its manifest and id.
pub(crate) fn content(seed: u8, size: usize) -> (Manifest, String) {
    let data: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(seed)).collect();
    let manifest = Manifest::of_bytes(&data, 4).unwrap();
    let id = manifest.id().to_string();
    (manifest, id)
}

pub(crate) fn holding(id: &str, name: &str, size: u64, pieces: Option<&str>) -> Value {
    let mut h = json!({"content": id, "name": name, "layout": {"size": size, "piece_size": 4}});
    if let Some(bits) = pieces {
        h["pieces"] = json!(bits);
    }
    h
}

pub(crate) fn error(message: &str, field: Option<&str>) -> Value {
    match field {
        Some(field) => json!({"error": message, "field": field}),
        None => json!({"error": message}),
    }
}
