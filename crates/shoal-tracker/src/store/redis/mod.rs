//! The Redis backend: every piece of state, durable and soft, lives in one Redis so that any
//! number of tracker replicas behind a load balancer answer any request alike.
//!
//! Keys (all under `shoal:`):
//! - `catalog` hash: content id (32 bytes) → layout (size, piece size as 2 × u64 LE) + name;
//! - `manifests` hash: content id → layout + the piece digests; `urls` hash: URL version →
//!   JSON mapping (`HSETNX`, so the first mapping wins across replicas);
//! - `leases` sorted set: agent id scored by the deadline of its lease;
//! - `agents` hash: agent id → `addr capacity load owner`;
//! - `held:{id}` hash: content id → the agent's bitfield as a binary string, empty when complete;
//! - `holders:{content id bytes}` hash: agent id → the same bitfield, so that a peer query reads
//!   every holder's pieces with one command, and their leases and records with two more;
//! - URL swarms: see `swarms.rs`; reports of bad peers: see `reports.rs`;
//! - `unheld` sorted set: content ids no agent holds, scored by when a sweep first found them
//!   so; see `retention.rs`.
//!
//! The code follows what it keeps: agents (leases, records, holdings) in `agents.rs`; contents
//! (catalog, manifests, peers answers) in `content.rs`; the URL map in `urls.rs`; URL swarms in
//! `swarms.rs`; reports in `reports.rs`; key names and value encodings in `codec.rs`.
//!
//! Leases are a sorted set scored by the tracker's [`Clock`], not Redis key expiry: the lease
//! then lapses at the same instant for every replica and for the store test suite, whose manual
//! clock moves time without sleeping, and a lapsed agent's holdings stay consistent with its
//! lease until a sweep removes both together (keys expiring one by one would leave holder sets
//! naming agents that are gone). The clock must be shared by the replicas, so the binary uses
//! [`Clock::wall`]. Answers leave lapsed agents out by comparing scores with now, so a lease is
//! never served as live after its deadline even if no sweep ran.
//!
//! Every operation takes a bounded number of round trips (pipelines, one Lua script for the
//! sweep) whatever the number of agents; nothing scans the key space. A write reads what it
//! validates against, then applies everything in one `MULTI`/`EXEC`, so a rejected request
//! leaves no trace; two replicas changing the same agent at the same instant (an agent talks to
//! one tracker at a time) is the one race, and the later write wins.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Pipeline, RedisError};
use shoal_core::wire::{
    AgentId, AgentSummary, AnnounceRequest, ContentSummary, HeartbeatRequest, LeaseGrant,
    ManifestPublished, PeersResponse, SwarmInfo, UrlKey, UrlMapping,
};
use shoal_core::{ContentId, Manifest, PieceDigest};

use super::{
    AgentPage, Caller, ContentSearch, DigestsPublished, NewSwarm, PeerQuery, PeerReport,
    Registration, Store, StoreError, StoreOptions, StoreStats, SwarmLimits, SwarmSummary, Swept,
    UrlReport,
};
use crate::clock::Clock;

mod agents;
mod codec;
mod content;
mod reports;
mod retention;
mod swarms;
mod urls;

pub use codec::redact;
use codec::{CATALOG, LEASES, MANIFESTS, SWARMS};
use swarms::SwarmScripts;

/// How long a command may take before the request fails (and the API answers 503).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// A [`Store`] that keeps all state in one Redis, so tracker replicas share it; cheap
/// to clone (one multiplexed connection that reconnects by itself).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// The store's URL without credentials, for messages.
    shown: Arc<str>,
    lease_ms: u64,
    max_holdings: usize,
    clock: Clock,
    /// Removes agents whose lease lapsed ([`agents::SWEEP`]).
    agent_sweep: Arc<redis::Script>,
    /// How long a content no agent holds is kept; `None`: for ever.
    retention_ms: Option<u64>,
    /// Removes contents past their retention ([`retention::SWEEP`]).
    content_sweep: Arc<redis::Script>,
    swarm_limits: SwarmLimits,
    swarm_scripts: Arc<SwarmScripts>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Opens the store on the Redis at `url` (`redis://[user:password@]host:port/db`). Only a
    /// malformed URL fails: when Redis does not answer yet, this logs a warning and requests fail
    /// with [`StoreError::Unavailable`] until it does. The connection reconnects by itself
    /// after Redis goes away.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let shown: Arc<str> = redact(url).into();
        let unavailable = |source: RedisError| StoreError::Unavailable {
            store: shown.to_string(),
            source: Box::new(source),
        };
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        let store = Self {
            conn,
            shown,
            lease_ms: options.lease.as_millis() as u64,
            max_holdings: options.max_holdings,
            clock: options.clock,
            agent_sweep: Arc::new(redis::Script::new(agents::SWEEP)),
            retention_ms: options.retention.map(|r| r.as_millis() as u64),
            content_sweep: Arc::new(redis::Script::new(retention::SWEEP)),
            swarm_limits: SwarmLimits::default(),
            swarm_scripts: Arc::new(SwarmScripts::new()),
        };
        let mut conn = store.conn.clone();
        if let Err(e) = redis::cmd("PING").query_async::<()>(&mut conn).await {
            tracing::warn!(store = %store.shown, error = %e, "Redis does not answer yet; answering 503 until it does");
        }
        Ok(store)
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn grant(&self) -> LeaseGrant {
        LeaseGrant {
            lease_ms: self.lease_ms,
            reads_served: true,
        }
    }

    fn error(&self, source: RedisError) -> StoreError {
        StoreError::Unavailable {
            store: self.shown.to_string(),
            source: Box::new(source),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await.map_err(|e| self.error(e))
    }
}

impl Store for RedisStore {
    async fn register(&self, caller: Caller, reg: Registration) -> Result<LeaseGrant, StoreError> {
        self.register_in_redis(caller, reg).await
    }

    async fn heartbeat(
        &self,
        caller: Caller,
        id: AgentId,
        beat: HeartbeatRequest,
    ) -> Result<LeaseGrant, StoreError> {
        self.heartbeat_in_redis(caller, id, beat).await
    }

    async fn announce(
        &self,
        caller: Caller,
        id: AgentId,
        delta: AnnounceRequest,
    ) -> Result<LeaseGrant, StoreError> {
        self.announce_in_redis(caller, id, delta).await
    }

    async fn deregister(&self, caller: Caller, id: AgentId) -> Result<(), StoreError> {
        self.deregister_in_redis(caller, id).await
    }

    async fn peers(
        &self,
        content: ContentId,
        query: PeerQuery,
    ) -> Result<PeersResponse, StoreError> {
        self.peers_in_redis(content, query).await
    }

    async fn content(&self, id: ContentId) -> Result<ContentSummary, StoreError> {
        self.content_in_redis(id).await
    }

    async fn search(&self, search: ContentSearch) -> Result<Vec<ContentSummary>, StoreError> {
        self.search_in_redis(search).await
    }

    async fn agents(&self, page: AgentPage) -> Result<Vec<AgentSummary>, StoreError> {
        self.agents_in_redis(page).await
    }

    async fn put_manifest(
        &self,
        manifest: Manifest,
        _publisher: Arc<str>,
    ) -> Result<ManifestPublished, StoreError> {
        self.put_manifest_in_redis(manifest).await
    }

    async fn manifest(&self, id: ContentId) -> Result<Manifest, StoreError> {
        self.manifest_in_redis(id).await
    }

    async fn publish_url(
        &self,
        key: UrlKey,
        content: ContentId,
        publisher: Arc<str>,
    ) -> Result<(UrlMapping, bool), StoreError> {
        self.publish_url_in_redis(key, content, publisher).await
    }

    async fn lookup_url(&self, key: UrlKey) -> Result<UrlMapping, StoreError> {
        self.lookup_url_in_redis(key).await
    }

    async fn latest_url(&self, url: String) -> Result<UrlMapping, StoreError> {
        self.latest_url_in_redis(url).await
    }

    async fn create_swarm(&self, caller: Caller, swarm: NewSwarm) -> Result<SwarmInfo, StoreError> {
        self.create_swarm_in_redis(caller, swarm).await
    }

    async fn swarm(&self, id: ContentId) -> Result<SwarmInfo, StoreError> {
        self.swarm_in_redis(id).await
    }

    async fn swarms(&self, limit: usize) -> Result<Vec<SwarmSummary>, StoreError> {
        self.swarms_in_redis(limit).await
    }

    async fn take_over_swarm(
        &self,
        caller: Caller,
        id: ContentId,
        agent: AgentId,
    ) -> Result<SwarmInfo, StoreError> {
        self.take_over_swarm_in_redis(caller, id, agent).await
    }

    async fn publish_digests(
        &self,
        caller: Caller,
        id: ContentId,
        digests: Vec<(u32, PieceDigest)>,
    ) -> Result<DigestsPublished, StoreError> {
        self.publish_digests_in_redis(caller, id, digests).await
    }

    async fn report(&self, report: PeerReport) -> Result<bool, StoreError> {
        self.report_in_redis(report).await
    }

    async fn report_url(&self, report: UrlReport) -> Result<bool, StoreError> {
        self.report_url_in_redis(report).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = self.now();
        let mut pipe = redis::pipe();
        pipe.zcount(LEASES, format!("({now}"), "+inf")
            .hlen(CATALOG)
            .hlen(MANIFESTS)
            .zcard(SWARMS);
        let (agents, contents, manifests, swarms): (u64, u64, u64, u64) = self.query(&pipe).await?;
        Ok(StoreStats {
            agents,
            contents,
            manifests,
            holdings: None,
            swarms,
        })
    }

    async fn sweep(&self) -> Result<Swept, StoreError> {
        let agents = self.sweep_agents().await?;
        let swarms = self.sweep_swarms().await?;
        let contents = self.sweep_contents().await?;
        Ok(Swept {
            agents,
            swarms,
            contents,
        })
    }
}
