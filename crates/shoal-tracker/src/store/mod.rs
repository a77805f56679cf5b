//! The [`Store`] trait between the HTTP API and storage, and its backends.
//!
//! A store keeps two kinds of state. Durable state (manifests, the URL map, the content
//! catalog of ids, names and layouts) must survive a restart. Soft state (agent leases, what
//! each agent holds) is rebuilt by agents re-registering, so a backend may keep it in memory.
//! URL swarms ([`SwarmInfo`]) and reports of bad peers are soft state too, with lifetimes of
//! their own ([`SwarmLimits`], [`REPORT_HOLD`]).
//! Every operation is small enough to map to a few commands of a networked store: the Redis
//! backend keeps all of it in Redis, so that tracker replicas share it.

mod memory;
pub mod redis;
pub mod sqlite;
mod swarms;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::wire::{
    AgentId, AgentSummary, AnnounceRequest, ContentSummary, HeartbeatRequest, Holding, LeaseGrant,
    ManifestPublished, PeersResponse, SwarmInfo, UrlKey, UrlMapping,
};
use shoal_core::{ContentId, Layout, Manifest, PieceDigest};
use thiserror::Error;

use crate::clock::Clock;

pub use redis::RedisStore;
pub use sqlite::{SqliteLocation, SqliteStore};

/// Who is asking: the token's name owns the agents it registers. An admin may act on any
/// agent.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: Arc<str>,
    pub admin: bool,
}

#[derive(Debug, Clone)]
pub struct Registration {
    pub id: AgentId,
    pub addr: SocketAddr,
    pub upload_capacity: u64,
    pub holdings: Vec<Holding>,
}

#[derive(Debug, Clone, Default)]
pub struct PeerQuery {
    pub k: usize,
    pub asker: Option<AgentId>,
}

#[derive(Debug, Clone, Default)]
pub struct ContentSearch {
    /// Case-insensitive substring of the name.
    pub name: Option<String>,
    /// Lowercase hex prefix of the id.
    pub id_prefix: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Clone, Default)]
pub struct AgentPage {
    pub after: Option<AgentId>,
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
/// What `/metrics` reports of a store: counts it keeps as things change, or reads in O(1)
/// (Redis' `ZCOUNT`, `HLEN`, `ZCARD`), never a walk over agents or contents.
pub struct StoreStats {
    /// Agents registered: with a live lease on Redis; until the sweep drops them in memory.
    pub agents: u64,
    pub contents: u64,
    pub manifests: u64,
    /// Holdings of those agents; `None` where the store keeps no count of them (Redis).
    pub holdings: Option<u64>,
    /// Swarms not yet swept, lapsed or not.
    pub swarms: u64,
}

/// What one [`Store::sweep`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Agents whose lease lapsed.
    pub agents: usize,
    /// Swarms that no create or publish touched for [`SwarmLimits::ttl`].
    pub swarms: usize,
}

/// How long a report keeps the reported agent out of peers answers for that content, counted
/// from the latest report: long enough for the reporter's download to finish from others, short
/// enough that an agent whose disk was fixed (or that was reported wrongly) comes back by itself.
pub const REPORT_HOLD: Duration = Duration::from_secs(10 * 60);

/// Limits of URL swarms. Not part of [`StoreOptions`], which callers build field by field;
/// give them to a store with `with_swarms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwarmLimits {
    /// A swarm that no create or publish touched for this long is gone.
    pub ttl: Duration,
    /// Creating more swarms than this fails with [`StoreError::TooManySwarms`], so that
    /// clients cannot grow the tracker's memory without bound. Lapsed swarms count until a
    /// sweep removes them.
    pub max: usize,
}

impl Default for SwarmLimits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60 * 60),
            max: 100_000,
        }
    }
}

/// A swarm to create unless one runs for the key already.
#[derive(Debug, Clone)]
pub struct NewSwarm {
    /// Normalized; the swarm id is its [`UrlKey::swarm_id`].
    pub key: UrlKey,
    /// Checked by the caller to match `key.size`.
    pub layout: Layout,
    pub leader: AgentId,
}

/// The answer to [`Store::publish_digests`].
#[derive(Debug, Clone)]
pub struct DigestsPublished {
    pub swarm: SwarmInfo,
    /// Pieces whose published digest differed from the one already known, which stays.
    pub ignored: Vec<u32>,
}

/// A peer that served a piece of `content` that did not match its digest.
#[derive(Debug, Clone)]
pub struct PeerReport {
    pub content: ContentId,
    pub agent: AgentId,
    pub piece: u32,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a lease lasts after each register, heartbeat or announce.
    pub lease: Duration,
    pub clock: Clock,
    /// Contents one agent may hold; a register or announce past it is refused
    /// ([`StoreError::TooManyHoldings`]), so no agent grows the tracker without bound.
    pub max_holdings: usize,
}

/// The default of [`StoreOptions::max_holdings`].
pub const MAX_HOLDINGS: usize = 100_000;

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            clock: Clock::system(),
            max_holdings: MAX_HOLDINGS,
        }
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("agent {0} is not registered (or its lease lapsed): register again")]
    UnknownAgent(AgentId),
    #[error("agent {0} is registered by another token")]
    NotOwner(AgentId),
    /// Two agents claim one id: the live one keeps it until its lease lapses.
    #[error(
        "agent id {id} is held by a live agent at {held}, and this registration comes from \
         {asked}: give each agent its own id"
    )]
    IdInUse {
        id: AgentId,
        held: SocketAddr,
        asked: SocketAddr,
    },
    #[error("content {0} is not known")]
    UnknownContent(ContentId),
    #[error("no manifest is published for content {0}")]
    NoManifest(ContentId),
    #[error("no content is published for this URL version")]
    UnknownUrl,
    #[error("agent does not hold content {content}: announce the holding first")]
    NotHeld { field: String, content: ContentId },
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("swarm {0} is not running (it lapsed, or was never created)")]
    UnknownSwarm(ContentId),
    #[error(
        "swarm {id} runs with size {} and piece size {}",
        layout.size(),
        layout.piece_size()
    )]
    SwarmLayout { id: ContentId, layout: Layout },
    #[error("only the token that created swarm {0} may publish its digests")]
    NotPublisher(ContentId),
    #[error("the tracker runs its maximum of {max} swarms; fetch from the origin, or retry later")]
    TooManySwarms { max: usize },
    #[error("agent {id} would hold {count} contents; the tracker keeps at most {max} per agent")]
    TooManyHoldings {
        id: AgentId,
        count: usize,
        max: usize,
    },
    #[error("storage failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A networked store did not answer; `store` is its address without credentials.
    #[error("the tracker's store ({store}) is unreachable; retrying")]
    Unavailable {
        store: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Storage for the tracker. Implementations are cheap to share (`Clone` behind an `Arc`
/// inside) and every method is one short transaction.
pub trait Store: Clone + Send + Sync + 'static {
    /// Registers or re-registers an agent with its full holdings, replacing older ones. An id
    /// that a live agent holds from another address is [`StoreError::IdInUse`]; from the same
    /// address (the agent restarted) it is taken back at once.
    fn register(
        &self,
        caller: Caller,
        reg: Registration,
    ) -> impl Future<Output = Result<LeaseGrant, StoreError>> + Send;

    fn heartbeat(
        &self,
        caller: Caller,
        id: AgentId,
        beat: HeartbeatRequest,
    ) -> impl Future<Output = Result<LeaseGrant, StoreError>> + Send;

    /// Applies an announce delta whole or not at all, and renews the lease.
    fn announce(
        &self,
        caller: Caller,
        id: AgentId,
        delta: AnnounceRequest,
    ) -> impl Future<Output = Result<LeaseGrant, StoreError>> + Send;

    /// Forgets an agent at once (an agent shutting down cleanly).
    fn deregister(
        &self,
        caller: Caller,
        id: AgentId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn peers(
        &self,
        content: ContentId,
        query: PeerQuery,
    ) -> impl Future<Output = Result<PeersResponse, StoreError>> + Send;

    fn content(
        &self,
        id: ContentId,
    ) -> impl Future<Output = Result<ContentSummary, StoreError>> + Send;

    fn search(
        &self,
        search: ContentSearch,
    ) -> impl Future<Output = Result<Vec<ContentSummary>, StoreError>> + Send;

    fn agents(
        &self,
        page: AgentPage,
    ) -> impl Future<Output = Result<Vec<AgentSummary>, StoreError>> + Send;

    /// Stores a manifest under its id (the caller has checked the id); `created` is false when
    /// it was already there.
    fn put_manifest(
        &self,
        manifest: Manifest,
        publisher: Arc<str>,
    ) -> impl Future<Output = Result<ManifestPublished, StoreError>> + Send;

    fn manifest(&self, id: ContentId) -> impl Future<Output = Result<Manifest, StoreError>> + Send;

    /// Maps a normalized URL version to a content whose manifest is published. The first
    /// mapping wins: the answer is the stored mapping and whether this call created it.
    fn publish_url(
        &self,
        key: UrlKey,
        content: ContentId,
        publisher: Arc<str>,
    ) -> impl Future<Output = Result<(UrlMapping, bool), StoreError>> + Send;

    fn lookup_url(
        &self,
        key: UrlKey,
    ) -> impl Future<Output = Result<UrlMapping, StoreError>> + Send;

    /// The most recently published version of the normalized `url`, whatever its size and
    /// validators.
    fn latest_url(
        &self,
        url: String,
    ) -> impl Future<Output = Result<UrlMapping, StoreError>> + Send;

    /// Creates the swarm of a URL version, led by `swarm.leader`, whose digests only the
    /// caller's token may publish; or answers the running one (`created` false) when its layout
    /// is the same, [`StoreError::SwarmLayout`] when not. Both touch the swarm.
    fn create_swarm(
        &self,
        caller: Caller,
        swarm: NewSwarm,
    ) -> impl Future<Output = Result<SwarmInfo, StoreError>> + Send;

    fn swarm(&self, id: ContentId) -> impl Future<Output = Result<SwarmInfo, StoreError>> + Send;

    /// Records piece digests of a swarm (the caller has checked the digests' text), the first
    /// per piece winning, and touches the swarm. Only the creator's token or an admin may.
    fn publish_digests(
        &self,
        caller: Caller,
        id: ContentId,
        digests: Vec<(u32, PieceDigest)>,
    ) -> impl Future<Output = Result<DigestsPublished, StoreError>> + Send;

    /// Leaves the reported agent out of peers answers for the content for [`REPORT_HOLD`];
    /// answers whether it did so, which it does only while the agent holds the content (so
    /// reports take no space for agents or contents that do not exist).
    fn report(&self, report: PeerReport) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn stats(&self) -> impl Future<Output = Result<StoreStats, StoreError>> + Send;

    /// Drops agents whose lease lapsed and swarms nothing touched for their lifetime, to reclaim
    /// memory; answers already leave them out, so this only bounds how long they take space.
    fn sweep(&self) -> impl Future<Output = Result<Swept, StoreError>> + Send;
}
