//! The [`Store`] trait between the HTTP API and storage, and its backends.
//!
//! A store keeps two kinds of state. Durable state (manifests, the URL map, the content
//! catalog of ids, names and layouts) must survive a restart. Soft state (agent leases, what
//! each agent holds) is rebuilt by agents re-registering, so a backend may keep it in memory.
//! URL swarms ([`SwarmInfo`]) and reports of bad peers are soft state too, with lifetimes of
//! their own ([`SwarmLimits`], [`REPORT_HOLD`]).
//! Every operation is small enough to map to a few commands of a networked store: the Redis
//! backend keeps all of it in Redis, so that tracker replicas share it.

mod evidence;
mod memory;
pub mod redis;
mod served;
pub mod sqlite;
mod swarms;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::wire::{
    AgentId, AgentSummary, AnnounceRequest, ContentSummary, HeartbeatRequest, Holding, LeaseGrant,
    ManifestPublished, PeersResponse, Scheme, SwarmInfo, UrlKey, UrlMapping,
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
    /// The token's name; it owns the agents it registers and the swarms it creates.
    pub token: Arc<str>,
    /// True for an admin token, which may act on any agent and publish any swarm's digests.
    pub admin: bool,
}

/// A register request with the agent id from its path, validated by the handler.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The agent's id, from the request path.
    pub id: AgentId,
    /// Where peers reach the agent's piece server.
    pub addr: SocketAddr,
    /// Whether that server speaks HTTPS.
    pub scheme: Scheme,
    /// Upload capacity in bytes per second, 0 when unknown.
    pub upload_capacity: u64,
    /// Everything the agent holds; replaces what the store had.
    pub holdings: Vec<Holding>,
}

/// A peers question, bounded by the handler.
#[derive(Debug, Clone, Default)]
pub struct PeerQuery {
    /// At most this many peers (the handler's default 20, at most 200).
    pub k: usize,
    /// The asking agent: left out of the answer, and its bitfield decides which peers are useful;
    /// `None` for a reader.
    pub asker: Option<AgentId>,
}

/// A content search, bounded by the handler.
#[derive(Debug, Clone, Default)]
pub struct ContentSearch {
    /// Case-insensitive substring of the name.
    pub name: Option<String>,
    /// Lowercase hex prefix of the id.
    pub id_prefix: Option<String>,
    /// At most this many results (the handler's default 100, at most 1000).
    pub limit: usize,
}

/// One page of the agents listing, in id order.
#[derive(Debug, Clone, Default)]
pub struct AgentPage {
    /// Only agents whose id sorts after this one; `None` starts at the first.
    pub after: Option<AgentId>,
    /// At most this many agents (the handler's default 100, at most 1000).
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
/// What `/metrics` reports of a store: counts it keeps as things change, or reads in O(1)
/// (Redis' `ZCOUNT`, `HLEN`, `ZCARD`), never a walk over agents or contents.
pub struct StoreStats {
    /// Agents registered: with a live lease on Redis; until the sweep drops them in memory.
    pub agents: u64,
    /// Contents in the durable catalog (every id ever registered or announced, until removed).
    pub contents: u64,
    /// Manifests published.
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
    /// Contents (catalog entry, manifest, URL mappings) that no agent held for
    /// [`StoreOptions::retention`].
    pub contents: usize,
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
    /// The agent that fetches from the origin and publishes digests.
    pub leader: AgentId,
}

/// A running URL swarm without its digests, as [`Store::swarms`] lists it for the tracker's
/// page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmSummary {
    /// Its id, [`UrlKey::swarm_id`] of `key`; members hold it as a content.
    pub id: ContentId,
    /// The key as the tracker normalized it.
    pub key: UrlKey,
    /// The file size and piece size every member fetches by.
    pub layout: Layout,
    /// The agent that fetches from the origin and publishes the digests.
    pub leader: AgentId,
    /// Pieces whose digest the leader has published: each is a piece it fetched from the
    /// origin.
    pub published: u32,
}

/// The answer to [`Store::publish_digests`].
#[derive(Debug, Clone)]
pub struct DigestsPublished {
    /// The swarm after the publish, with every digest now known.
    pub swarm: SwarmInfo,
    /// Pieces whose published digest differed from the one already known, which stays.
    pub ignored: Vec<u32>,
}

/// A peer that served a piece of `content` that did not match its digest.
#[derive(Debug, Clone)]
pub struct PeerReport {
    /// The content (or swarm id) the piece belongs to.
    pub content: ContentId,
    /// The peer that sent the bad piece.
    pub agent: AgentId,
    /// The piece's index, from 0; the handler has checked it is inside the layout.
    pub piece: u32,
    /// Who says so.
    pub by: Reporter,
}

/// Who made a [`PeerReport`]. One agent's word is not evidence enough to hide a peer from the
/// fleet (the reporter may be the liar, or hold a stolen token), so an agent's report counts
/// only with another agent's for the same peer and content ([`REPORTS_TO_HIDE`]); an admin is
/// trusted alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reporter {
    /// An admin token: hides the peer at once.
    Admin,
    /// An agent, by its id (checked against a per-agent token's).
    Agent(AgentId),
}

/// Distinct agents whose reports, each within [`REPORT_HOLD`] of the latest, hide a peer or
/// withdraw a URL mapping.
pub const REPORTS_TO_HIDE: usize = 2;

/// A URL mapping whose content did not match the origin: the reporter fetched a piece of
/// `key` from the origin, and it did not hash to the manifest's digest for it.
#[derive(Debug, Clone)]
pub struct UrlReport {
    /// Normalized.
    pub key: UrlKey,
    /// The content the reporter was told `key` maps to.
    pub content: ContentId,
    /// Who says so.
    pub by: Reporter,
}

/// How a store keeps soft state: lease length, clock and per-agent holding cap. The default is a
/// 30-second lease on the system clock with at most [`MAX_HOLDINGS`] holdings per agent.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a lease lasts after each register, heartbeat or announce.
    pub lease: Duration,
    /// The clock of leases; replicas sharing one store need [`Clock::wall`].
    pub clock: Clock,
    /// Contents one agent may hold; a register or announce past it is refused
    /// ([`StoreError::TooManyHoldings`]), so no agent grows the tracker without bound.
    pub max_holdings: usize,
    /// How long a content that no agent holds is kept (its catalog entry, manifest and URL
    /// mappings) before a sweep removes it; `None`: for ever.
    pub retention: Option<Duration>,
}

/// The default of [`StoreOptions::max_holdings`].
pub const MAX_HOLDINGS: usize = 100_000;

/// The default of [`StoreOptions::retention`]: a week. Long enough that a fleet switched off
/// over a weekend or a holiday finds its catalog (and its URL mappings, so nothing is fetched
/// from the origin twice) when it comes back; short enough that a tracker fed new builds every
/// day keeps about a week of them.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            clock: Clock::system(),
            max_holdings: MAX_HOLDINGS,
            retention: Some(RETENTION),
        }
    }
}

/// Why a store refused or failed an operation; [`ApiError::status`](crate::ApiError::status) maps
/// each to an HTTP status, and the message says what to do.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The agent is not registered or its lease lapsed: it must register again (`404`).
    #[error("agent {0} is not registered (or its lease lapsed): register again")]
    UnknownAgent(AgentId),
    /// The agent was registered by another token, which alone (or an admin) may change it (`403`).
    #[error("agent {0} is registered by another token")]
    NotOwner(AgentId),
    /// Two agents claim one id: the live one keeps it until its lease lapses.
    #[error(
        "agent id {id} is held by a live agent at {held}, and this registration comes from \
         {asked}: give each agent its own id"
    )]
    IdInUse {
        /// The contested id.
        id: AgentId,
        /// The address the live agent registered from.
        held: SocketAddr,
        /// The address this registration comes from.
        asked: SocketAddr,
    },
    /// No agent ever registered or announced this content (`404`).
    #[error("content {0} is not known")]
    UnknownContent(ContentId),
    /// The content is known but its manifest was never published (`404`).
    #[error("no manifest is published for content {0}")]
    NoManifest(ContentId),
    /// No content is published for this URL version (`404`); the caller fetches from the origin.
    #[error("no content is published for this URL version")]
    UnknownUrl,
    /// An announce names pieces of a content the agent does not hold (`404`).
    #[error("agent does not hold content {content}: announce the holding first")]
    NotHeld {
        /// The request field at fault, e.g. `pieces[0].content`.
        field: String,
        /// The content the agent does not hold.
        content: ContentId,
    },
    /// The request is well-formed JSON but inconsistent with what the store holds (`400`).
    #[error("{message}")]
    Invalid {
        /// The request field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No swarm with this id runs: it lapsed or was never created (`404`).
    #[error("swarm {0} is not running (it lapsed, or was never created)")]
    UnknownSwarm(ContentId),
    /// A swarm runs for this URL version with another layout (`409`); the caller should join with
    /// that layout.
    #[error(
        "swarm {id} runs with size {} and piece size {}",
        layout.size(),
        layout.piece_size()
    )]
    SwarmLayout {
        /// The swarm's id.
        id: ContentId,
        /// The layout it runs with.
        layout: Layout,
    },
    /// The caller's token is not the one of the agent leading the swarm (its creator, or the
    /// last to take over), so may not publish its digests (`403`).
    #[error("only the token of the agent leading swarm {0} may publish its digests")]
    NotPublisher(ContentId),
    /// A takeover of a swarm whose leader is live and publishing (`409`).
    #[error(
        "swarm {id} is led by {leader}, which is live and published a digest within {}s; \
         keep following it",
        stall.as_secs_f32()
    )]
    LeaderLive {
        /// The swarm's id.
        id: ContentId,
        /// Its leader.
        leader: AgentId,
        /// How long it may publish nothing new before it counts as stalled.
        stall: Duration,
    },
    /// The tracker holds [`SwarmLimits::max`] swarms already (`503`).
    #[error("the tracker runs its maximum of {max} swarms; fetch from the origin, or retry later")]
    TooManySwarms {
        /// That maximum.
        max: usize,
    },
    /// A register or announce would give the agent more holdings than
    /// [`StoreOptions::max_holdings`] (`413`).
    #[error("agent {id} would hold {count} contents; the tracker keeps at most {max} per agent")]
    TooManyHoldings {
        /// The agent.
        id: AgentId,
        /// Holdings it would have.
        count: usize,
        /// The most it may have.
        max: usize,
    },
    /// The storage backend failed (a SQLite error, a corrupt row); `500`, the cause goes to the log
    /// only.
    #[error("storage failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A networked store did not answer; `store` is its address without credentials.
    #[error("the tracker's store ({store}) is unreachable; retrying")]
    Unavailable {
        /// The store's address, credentials removed.
        store: String,
        /// Why the connection failed.
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

    /// Renews the lease and records the agent's load; [`StoreError::UnknownAgent`] when the lease
    /// lapsed, so the agent registers again.
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

    /// Peers of a content (or swarm id) in order of preference (see `PeersResponse`), leaving out
    /// reported and lapsed agents; [`StoreError::UnknownContent`] when nobody holds it.
    fn peers(
        &self,
        content: ContentId,
        query: PeerQuery,
    ) -> impl Future<Output = Result<PeersResponse, StoreError>> + Send;

    /// One content's summary; [`StoreError::UnknownContent`] when it is not in the catalog.
    fn content(
        &self,
        id: ContentId,
    ) -> impl Future<Output = Result<ContentSummary, StoreError>> + Send;

    /// Contents matching the search, sorted by name then id.
    fn search(
        &self,
        search: ContentSearch,
    ) -> impl Future<Output = Result<Vec<ContentSummary>, StoreError>> + Send;

    /// One page of live agents in id order.
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

    /// The manifest published for `id`; [`StoreError::NoManifest`] when there is none.
    fn manifest(&self, id: ContentId) -> impl Future<Output = Result<Manifest, StoreError>> + Send;

    /// Maps a normalized URL version to a content whose manifest is published. The first
    /// mapping wins: the answer is the stored mapping and whether this call created it.
    fn publish_url(
        &self,
        key: UrlKey,
        content: ContentId,
        publisher: Arc<str>,
    ) -> impl Future<Output = Result<(UrlMapping, bool), StoreError>> + Send;

    /// The content published for this exact (normalized) URL version; [`StoreError::UnknownUrl`]
    /// when none is.
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

    /// The running swarm `id`; [`StoreError::UnknownSwarm`] when it lapsed or never ran.
    fn swarm(&self, id: ContentId) -> impl Future<Output = Result<SwarmInfo, StoreError>> + Send;

    /// At most `limit` running swarms, the most recently touched first.
    fn swarms(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<SwarmSummary>, StoreError>> + Send;

    /// Makes `agent` (live, and registered by the caller's token) the swarm's leader, and the
    /// caller's token its publisher, when its leader is gone (lease lapsed, deregistered) or
    /// stalled (no new digest for
    /// [`leader_stall_limit`](shoal_core::wire::leader_stall_limit) while some are missing); else
    /// [`StoreError::LeaderLive`]. One atomic step: of many callers, the first wins, and the
    /// others find a live leader. Touches the swarm, and its leader counts as publishing from
    /// then.
    fn take_over_swarm(
        &self,
        caller: Caller,
        id: ContentId,
        agent: AgentId,
    ) -> impl Future<Output = Result<SwarmInfo, StoreError>> + Send;

    /// Records piece digests of a swarm (the caller has checked the digests' text), the first
    /// per piece winning, and touches the swarm. Only the leader's token (the creator's, or
    /// the last to take over) or an admin may.
    fn publish_digests(
        &self,
        caller: Caller,
        id: ContentId,
        digests: Vec<(u32, PieceDigest)>,
    ) -> impl Future<Output = Result<DigestsPublished, StoreError>> + Send;

    /// Records a report for [`REPORT_HOLD`]. Once an admin, or [`REPORTS_TO_HIDE`] distinct
    /// agents within that time, reported the agent for the content, leaves it out of peers
    /// answers for the content for [`REPORT_HOLD`]; answers whether it is left out now. Only
    /// reports of agents that hold the content are kept (so reports take no space for agents
    /// or contents that do not exist).
    fn report(&self, report: PeerReport) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records a report that `report.key` is not `report.content`, for [`REPORT_HOLD`], while
    /// the key maps to that content. Once an admin, or [`REPORTS_TO_HIDE`] distinct agents
    /// within that time, reported it, the mapping is withdrawn (the next publish of the key
    /// wins); answers whether it was.
    fn report_url(
        &self,
        report: UrlReport,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Counts for `/metrics`, each read in O(1).
    fn stats(&self) -> impl Future<Output = Result<StoreStats, StoreError>> + Send;

    /// Drops agents whose lease lapsed and swarms nothing touched for their lifetime, to reclaim
    /// memory; answers already leave them out, so this only bounds how long they take space.
    /// Then removes contents that no agent held for [`StoreOptions::retention`] (counted from
    /// the first sweep that found them unheld): their catalog entry, manifest and URL mappings.
    fn sweep(&self) -> impl Future<Output = Result<Swept, StoreError>> + Send;
}
