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
//! - URL swarms and reports of bad peers: see `swarms.rs`.
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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Pipeline, RedisError};
use shoal_core::clock::unix_now;
use shoal_core::wire::{
    AgentId, AgentSummary, AnnounceRequest, ContentSummary, HeartbeatRequest, LeaseGrant,
    ManifestPublished, PackedBits, Peer, PeersResponse, SwarmInfo, UrlKey, UrlMapping,
};
use shoal_core::{ContentId, Layout, Manifest, PieceDigest};

use super::memory::{check_have, check_holdings, fnv1a, useful_pieces, Checked, PeerKey, Pieces};
use super::{
    AgentPage, Caller, ContentSearch, DigestsPublished, NewSwarm, PeerQuery, PeerReport,
    Registration, Store, StoreError, StoreOptions, StoreStats, SwarmLimits, Swept,
};
use crate::clock::Clock;

mod codec;
mod swarms;

pub use codec::redact;
use codec::{
    content_of, damaged, decode_agent, decode_entry, decode_layout, decode_pieces, encode_agent,
    encode_layout, encode_pieces, held_key, holders_key, reported_key, url_field, AgentInfo,
};
use swarms::{SwarmScripts, SWARMS};

const CATALOG: &str = "shoal:catalog";
const MANIFESTS: &str = "shoal:manifests";
const URLS: &str = "shoal:urls";
/// URL (normalized) → the mapping of its most recently published version.
const URLS_LATEST: &str = "shoal:urls:latest";
const LEASES: &str = "shoal:leases";
const AGENTS: &str = "shoal:agents";
/// How long a command may take before the request fails (and the API answers 503).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Removes every agent whose lease lapsed by ARGV[1] (ms), with its holdings, in one atomic
/// step, so an agent that renewed meanwhile is never removed. Returns how many were removed.
const SWEEP: &str = r"
local lapsed = redis.call('ZRANGEBYSCORE', 'shoal:leases', '-inf', ARGV[1])
for _, id in ipairs(lapsed) do
  local held = 'shoal:held:' .. id
  for _, content in ipairs(redis.call('HKEYS', held)) do
    redis.call('HDEL', 'shoal:holders:' .. content, id)
  end
  redis.call('DEL', held)
  redis.call('HDEL', 'shoal:agents', id)
  redis.call('ZREM', 'shoal:leases', id)
end
return #lapsed
";

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// The store's URL without credentials, for messages.
    shown: Arc<str>,
    lease_ms: u64,
    clock: Clock,
    sweep: Arc<redis::Script>,
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

/// An agent's holdings as stored: content id → bits (empty when complete).
type Held = HashMap<Vec<u8>, Vec<u8>>;

/// A content's holders as stored: agent id → bits (empty when complete).
type Holders = HashMap<String, Vec<u8>>;

/// What an agent's record says, as read in one pipeline.
struct AgentRecord {
    deadline: Option<u64>,
    info: Option<AgentInfo>,
}

impl AgentRecord {
    fn read(deadline: Option<f64>, info: Option<String>) -> Result<Self, StoreError> {
        Ok(Self {
            deadline: deadline.map(|d| d as u64),
            info: info.as_deref().map(decode_agent).transpose()?,
        })
    }

    fn live(&self, now: u64) -> bool {
        self.deadline.is_some_and(|d| d > now)
    }

    fn owned_by(&self, caller: &Caller) -> bool {
        caller.admin
            || self
                .info
                .as_ref()
                .is_some_and(|info| info.owner == *caller.token)
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
            clock: options.clock,
            sweep: Arc::new(redis::Script::new(SWEEP)),
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

    /// Lease deadline and owner of `id`, plus its holdings (content id → stored bits).
    async fn agent_with_holdings(&self, id: &AgentId) -> Result<(AgentRecord, Held), StoreError> {
        let mut pipe = redis::pipe();
        pipe.zscore(LEASES, id.as_str())
            .hget(AGENTS, id.as_str())
            .hgetall(held_key(id));
        let (deadline, info, held): (Option<f64>, Option<String>, Held) = self.query(&pipe).await?;
        Ok((AgentRecord::read(deadline, info)?, held))
    }

    fn check_owner(
        caller: &Caller,
        id: &AgentId,
        record: &AgentRecord,
        now: u64,
    ) -> Result<(), StoreError> {
        if !record.live(now) {
            return Err(StoreError::UnknownAgent(id.clone()));
        }
        if !record.owned_by(caller) {
            return Err(StoreError::NotOwner(id.clone()));
        }
        Ok(())
    }

    /// Catalog entries (layout, name) of `ids`, in one round trip.
    async fn entries(
        &self,
        ids: &[ContentId],
    ) -> Result<HashMap<ContentId, (Layout, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(CATALOG, &id.as_bytes()[..]);
        }
        let values: Vec<Option<Vec<u8>>> = self.query(&pipe).await?;
        let mut out = HashMap::with_capacity(ids.len());
        for (id, value) in ids.iter().zip(values) {
            if let Some(value) = value {
                out.insert(*id, decode_entry(&value)?);
            }
        }
        Ok(out)
    }

    /// Queues the writes that record checked holdings of `id` (catalog rows included).
    fn queue_holdings(
        pipe: &mut Pipeline,
        id: &AgentId,
        checked: &[Checked],
        known: &HashMap<ContentId, (Layout, String)>,
    ) {
        for h in checked {
            let name_missing = known
                .get(&h.content)
                .is_none_or(|(_, name)| name.is_empty() && !h.name.is_empty());
            if name_missing {
                pipe.hset(
                    CATALOG,
                    &h.content.as_bytes()[..],
                    encode_layout(h.layout, h.name.as_bytes()),
                )
                .ignore();
            }
            let bits = encode_pieces(&h.pieces);
            pipe.hset(held_key(id), &h.content.as_bytes()[..], &bits)
                .ignore()
                .hset(holders_key(&h.content), id.as_str(), bits)
                .ignore();
        }
    }

    /// Live holders of each content: (complete, partial) counts, in two round trips.
    async fn summaries(
        &self,
        entries: Vec<(ContentId, Layout, String)>,
        now: u64,
    ) -> Result<Vec<ContentSummary>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, ..) in &entries {
            pipe.hexists(MANIFESTS, &id.as_bytes()[..])
                .hgetall(holders_key(id));
        }
        let rows: Vec<(bool, Holders)> = self.query(&pipe).await?;
        let (manifests, holders): (Vec<bool>, Vec<Holders>) = rows.into_iter().unzip();
        let mut pipe = redis::pipe();
        for agents in holders.iter().filter(|h| !h.is_empty()) {
            pipe.cmd("ZMSCORE")
                .arg(LEASES)
                .arg(agents.keys().collect::<Vec<_>>());
        }
        let leases: Vec<Vec<Option<f64>>> = if holders.iter().all(HashMap::is_empty) {
            Vec::new()
        } else {
            self.query(&pipe).await?
        };
        let mut leases = leases.into_iter();
        let mut out = Vec::with_capacity(entries.len());
        for (((id, layout, name), manifest), agents) in
            entries.into_iter().zip(manifests).zip(&holders)
        {
            let (mut complete, mut partial) = (0, 0);
            let deadlines = if agents.is_empty() {
                Vec::new()
            } else {
                leases.next().unwrap_or_default()
            };
            // keys() (the ZMSCORE arguments) and values() of one unchanged map agree in order.
            for (bits, deadline) in agents.values().zip(deadlines) {
                if deadline.is_some_and(|d| d as u64 > now) {
                    if bits.is_empty() {
                        complete += 1;
                    } else {
                        partial += 1;
                    }
                }
            }
            out.push(ContentSummary {
                id,
                name,
                layout,
                manifest,
                complete_holders: complete,
                partial_holders: partial,
            });
        }
        Ok(out)
    }
}

impl Store for RedisStore {
    async fn register(&self, caller: Caller, reg: Registration) -> Result<LeaseGrant, StoreError> {
        let now = self.now();
        let (record, old) = self.agent_with_holdings(&reg.id).await?;
        if record.live(now) && !record.owned_by(&caller) {
            return Err(StoreError::NotOwner(reg.id));
        }
        let ids: Vec<ContentId> = reg.holdings.iter().map(|h| h.content).collect();
        let known = self.entries(&ids).await?;
        let checked = check_holdings(reg.holdings, |id| known.get(id).map(|(l, _)| *l))?;

        let mut pipe = redis::pipe();
        pipe.atomic();
        for content in old.keys() {
            pipe.hdel(holders_key(&content_of(content)?), reg.id.as_str())
                .ignore();
        }
        let info = AgentInfo {
            addr: reg.addr,
            capacity: reg.upload_capacity,
            load: 0,
            owner: caller.token.to_string(),
        };
        pipe.del(held_key(&reg.id))
            .ignore()
            .hset(AGENTS, reg.id.as_str(), encode_agent(&info))
            .ignore()
            .zadd(LEASES, reg.id.as_str(), now + self.lease_ms)
            .ignore();
        Self::queue_holdings(&mut pipe, &reg.id, &checked, &known);
        self.query::<()>(&pipe).await?;
        Ok(self.grant())
    }

    async fn heartbeat(
        &self,
        caller: Caller,
        id: AgentId,
        beat: HeartbeatRequest,
    ) -> Result<LeaseGrant, StoreError> {
        let now = self.now();
        let mut pipe = redis::pipe();
        pipe.zscore(LEASES, id.as_str()).hget(AGENTS, id.as_str());
        let (deadline, info): (Option<f64>, Option<String>) = self.query(&pipe).await?;
        let record = AgentRecord::read(deadline, info)?;
        Self::check_owner(&caller, &id, &record, now)?;
        let mut info = record
            .info
            .ok_or_else(|| StoreError::UnknownAgent(id.clone()))?;
        info.load = beat.load;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(AGENTS, id.as_str(), encode_agent(&info))
            .ignore()
            .zadd(LEASES, id.as_str(), now + self.lease_ms)
            .ignore();
        self.query::<()>(&pipe).await?;
        Ok(self.grant())
    }

    async fn announce(
        &self,
        caller: Caller,
        id: AgentId,
        delta: AnnounceRequest,
    ) -> Result<LeaseGrant, StoreError> {
        let now = self.now();
        let (record, held) = self.agent_with_holdings(&id).await?;
        Self::check_owner(&caller, &id, &record, now)?;
        let removed: HashSet<ContentId> = delta.removed.iter().copied().collect();
        let mut ids: Vec<ContentId> = delta.holdings.iter().map(|h| h.content).collect();
        ids.extend(delta.pieces.iter().map(|d| d.content));
        let known = self.entries(&ids).await?;
        let checked = check_holdings(delta.holdings, |c| known.get(c).map(|(l, _)| *l))?;

        // Validate every delta before changing anything, so a bad one leaves no trace.
        let mut updated: HashMap<ContentId, Pieces> = HashMap::new();
        for (i, d) in delta.pieces.iter().enumerate() {
            let (layout, pieces) = match checked.iter().find(|c| c.content == d.content) {
                Some(c) => (c.layout, c.pieces.clone()),
                None => match (known.get(&d.content), held.get(&d.content.as_bytes()[..])) {
                    (Some((layout, _)), Some(bits)) if !removed.contains(&d.content) => {
                        (*layout, decode_pieces(bits.clone(), layout.piece_count())?)
                    }
                    _ => {
                        return Err(StoreError::NotHeld {
                            field: format!("pieces[{i}].content"),
                            content: d.content,
                        })
                    }
                },
            };
            check_have(i, &d.have, layout.piece_count())?;
            let pieces = updated.remove(&d.content).unwrap_or(pieces);
            let pieces = match pieces {
                Pieces::Complete => Pieces::Complete,
                Pieces::Partial(mut field) => {
                    for &p in &d.have {
                        field.set(p);
                    }
                    Pieces::from_bitfield(*field)
                }
            };
            updated.insert(d.content, pieces);
        }

        let mut pipe = redis::pipe();
        pipe.atomic();
        for content in &removed {
            pipe.hdel(held_key(&id), &content.as_bytes()[..])
                .ignore()
                .hdel(holders_key(content), id.as_str())
                .ignore();
        }
        Self::queue_holdings(&mut pipe, &id, &checked, &known);
        for (content, pieces) in &updated {
            let bits = encode_pieces(pieces);
            pipe.hset(held_key(&id), &content.as_bytes()[..], &bits)
                .ignore()
                .hset(holders_key(content), id.as_str(), bits)
                .ignore();
        }
        pipe.zadd(LEASES, id.as_str(), now + self.lease_ms).ignore();
        self.query::<()>(&pipe).await?;
        Ok(self.grant())
    }

    async fn deregister(&self, caller: Caller, id: AgentId) -> Result<(), StoreError> {
        let now = self.now();
        let (record, held) = self.agent_with_holdings(&id).await?;
        Self::check_owner(&caller, &id, &record, now)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for content in held.keys() {
            pipe.hdel(holders_key(&content_of(content)?), id.as_str())
                .ignore();
        }
        pipe.del(held_key(&id))
            .ignore()
            .hdel(AGENTS, id.as_str())
            .ignore()
            .zrem(LEASES, id.as_str())
            .ignore();
        self.query::<()>(&pipe).await
    }

    async fn peers(
        &self,
        content: ContentId,
        query: PeerQuery,
    ) -> Result<PeersResponse, StoreError> {
        let now = self.now();
        let field = &content.as_bytes()[..];
        // Round trip 1: the layout, every holder's pieces, the asker's lease and the agents
        // reported for this content.
        let asker = query.asker.as_ref().map(AgentId::as_str).unwrap_or("");
        let mut pipe = redis::pipe();
        pipe.hget(CATALOG, field)
            .hgetall(holders_key(&content))
            .zscore(LEASES, asker)
            .zrangebyscore(reported_key(&content), format!("({now}"), "+inf");
        let (entry, mut holders, asker_deadline, reported): (
            Option<Vec<u8>>,
            Holders,
            Option<f64>,
            Vec<String>,
        ) = self.query(&pipe).await?;
        let (layout, _) = decode_layout(&entry.ok_or(StoreError::UnknownContent(content))?)?;
        let count = layout.piece_count();
        let asker_bits = query
            .asker
            .as_ref()
            .and_then(|a| holders.remove(a.as_str()));
        let asker_has = match (asker_deadline, asker_bits) {
            (Some(d), Some(bits)) if d as u64 > now => Some(decode_pieces(bits, count)?),
            _ => None,
        };
        let asker_count = asker_has.as_ref().map_or(0, |p| p.count(count));
        for agent in &reported {
            holders.remove(agent);
        }
        let candidates: Vec<(String, Vec<u8>)> = holders.into_iter().collect();

        // Round trip 2: every candidate's lease and record, in two commands.
        let names: Vec<&str> = candidates.iter().map(|(a, _)| a.as_str()).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("ZMSCORE")
            .arg(LEASES)
            .arg(&names)
            .cmd("HMGET")
            .arg(AGENTS)
            .arg(&names);
        let (deadlines, infos): (Vec<Option<f64>>, Vec<Option<String>>) = if names.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.query(&pipe).await?
        };
        // Equal candidates are ordered by a hash of the asker, so that different askers spread
        // over different holders instead of all picking the same first few.
        let seed = query.asker.as_ref().map_or(0, |id| fnv1a(id.as_str()));
        let mut ranked: Vec<(PeerKey, Peer)> = Vec::with_capacity(candidates.len());
        for (((agent, bits), deadline), info) in candidates.into_iter().zip(deadlines).zip(infos) {
            let (Some(deadline), Some(info)) = (deadline, info) else {
                continue;
            };
            if deadline as u64 <= now {
                continue;
            }
            let info = decode_agent(&info)?;
            let pieces = decode_pieces(bits, count)?;
            let complete = matches!(pieces, Pieces::Complete);
            // Holders with nothing the asker lacks come too, last, unless the asker is
            // complete (see the memory store).
            let useful = useful_pieces(&pieces, asker_has.as_ref(), asker_count, count);
            if !complete && useful == 0 && asker_count == count {
                continue;
            }
            let id = AgentId::new(agent.as_str()).map_err(|e| damaged(e.to_string()))?;
            let peer = Peer {
                addr: info.addr,
                upload_capacity: info.capacity,
                load: info.load,
                complete,
                pieces: match &pieces {
                    Pieces::Complete => None,
                    Pieces::Partial(field) => Some(PackedBits::of(field)),
                },
                id,
            };
            let key = (
                std::cmp::Reverse(complete),
                std::cmp::Reverse(useful),
                peer.load,
                std::cmp::Reverse(peer.upload_capacity),
                (fnv1a(&agent) ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            ranked.push((key, peer));
        }
        if ranked.len() > query.k && query.k > 0 {
            ranked.select_nth_unstable_by(query.k - 1, |x, y| x.0.cmp(&y.0));
        }
        ranked.truncate(query.k);
        ranked.sort_unstable_by_key(|x| x.0);
        Ok(PeersResponse {
            content,
            layout,
            peers: ranked.into_iter().map(|(_, peer)| peer).collect(),
        })
    }

    async fn content(&self, id: ContentId) -> Result<ContentSummary, StoreError> {
        let mut conn = self.conn.clone();
        let entry: Option<Vec<u8>> = conn
            .hget(CATALOG, &id.as_bytes()[..])
            .await
            .map_err(|e| self.error(e))?;
        let (layout, name) = decode_entry(&entry.ok_or(StoreError::UnknownContent(id))?)?;
        let mut found = self.summaries(vec![(id, layout, name)], self.now()).await?;
        Ok(found.remove(0))
    }

    async fn search(&self, search: ContentSearch) -> Result<Vec<ContentSummary>, StoreError> {
        let mut conn = self.conn.clone();
        let all: HashMap<Vec<u8>, Vec<u8>> =
            conn.hgetall(CATALOG).await.map_err(|e| self.error(e))?;
        let name = search.name.as_ref().map(|n| n.to_lowercase());
        let mut found = Vec::new();
        for (id, value) in all {
            let id = content_of(&id)?;
            let (layout, entry_name) = decode_entry(&value)?;
            let keep = name
                .as_ref()
                .is_none_or(|n| entry_name.to_lowercase().contains(n.as_str()))
                && search
                    .id_prefix
                    .as_ref()
                    .is_none_or(|p| id.to_string().starts_with(p.as_str()));
            if keep {
                found.push((id, layout, entry_name));
            }
        }
        found.sort_unstable_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)));
        found.truncate(search.limit);
        self.summaries(found, self.now()).await
    }

    async fn agents(&self, page: AgentPage) -> Result<Vec<AgentSummary>, StoreError> {
        let now = self.now();
        let mut conn = self.conn.clone();
        let live: Vec<(String, f64)> = conn
            .zrangebyscore_withscores(LEASES, format!("({now}"), "+inf")
            .await
            .map_err(|e| self.error(e))?;
        let mut live: Vec<(AgentId, u64)> = live
            .into_iter()
            .filter_map(|(id, d)| Some((AgentId::new(id).ok()?, d as u64)))
            .filter(|(id, _)| page.after.as_ref().is_none_or(|after| id > after))
            .collect();
        live.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        live.truncate(page.limit);
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = live.iter().map(|(id, _)| id.as_str()).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(AGENTS).arg(&names);
        let (infos,): (Vec<Option<String>>,) = self.query(&pipe).await?;
        let mut pipe = redis::pipe();
        for (id, _) in &live {
            pipe.hvals(held_key(id));
        }
        let held: Vec<Vec<Vec<u8>>> = self.query(&pipe).await?;
        let mut out = Vec::with_capacity(live.len());
        for (((id, deadline), info), held) in live.into_iter().zip(infos).zip(held) {
            let Some(info) = info else {
                continue;
            };
            let info = decode_agent(&info)?;
            out.push(AgentSummary {
                addr: info.addr,
                upload_capacity: info.capacity,
                load: info.load,
                holdings: held.len() as u32,
                complete_holdings: held.iter().filter(|bits| bits.is_empty()).count() as u32,
                lease_remaining_ms: deadline - now,
                id,
            });
        }
        Ok(out)
    }

    async fn put_manifest(
        &self,
        manifest: Manifest,
        _publisher: Arc<str>,
    ) -> Result<ManifestPublished, StoreError> {
        let id = manifest.id();
        let layout = manifest.layout();
        let field = &id.as_bytes()[..];
        let mut pipe = redis::pipe();
        pipe.hset_nx(
            MANIFESTS,
            field,
            encode_layout(layout, manifest.digests().as_flattened()),
        )
        .hget(CATALOG, field)
        .hkeys(holders_key(&id));
        let (created, entry, holders): (bool, Option<Vec<u8>>, Vec<String>) =
            self.query(&pipe).await?;
        // The manifest's layout is authoritative: holdings announced with another one go.
        let (old_layout, name) = match entry {
            Some(entry) => {
                let (l, n) = decode_entry(&entry)?;
                (Some(l), n)
            }
            None => (None, String::new()),
        };
        if old_layout != Some(layout) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            if old_layout.is_some() {
                for agent in &holders {
                    pipe.hdel(format!("shoal:held:{agent}"), field).ignore();
                }
                pipe.del(holders_key(&id)).ignore();
            }
            pipe.hset(CATALOG, field, encode_layout(layout, name.as_bytes()))
                .ignore();
            self.query::<()>(&pipe).await?;
        }
        Ok(ManifestPublished {
            content: id,
            created,
        })
    }

    async fn manifest(&self, id: ContentId) -> Result<Manifest, StoreError> {
        let mut conn = self.conn.clone();
        let value: Option<Vec<u8>> = conn
            .hget(MANIFESTS, &id.as_bytes()[..])
            .await
            .map_err(|e| self.error(e))?;
        let value = value.ok_or(StoreError::NoManifest(id))?;
        let (layout, digests) = decode_layout(&value)?;
        let digests = digests
            .chunks_exact(32)
            .map(|c| c.try_into().expect("chunks are 32 bytes"))
            .collect();
        Manifest::new(layout, digests).map_err(|e| damaged(format!("stored manifest {id}: {e}")))
    }

    async fn publish_url(
        &self,
        key: UrlKey,
        content: ContentId,
        publisher: Arc<str>,
    ) -> Result<(UrlMapping, bool), StoreError> {
        let mut conn = self.conn.clone();
        let published: bool = conn
            .hexists(MANIFESTS, &content.as_bytes()[..])
            .await
            .map_err(|e| self.error(e))?;
        if !published {
            return Err(StoreError::NoManifest(content));
        }
        let field = url_field(&key);
        let mapping = UrlMapping {
            key,
            content,
            publisher: publisher.to_string(),
            published_at: unix_now(),
        };
        let json = serde_json::to_string(&mapping).map_err(|e| damaged(e.to_string()))?;
        let mut pipe = redis::pipe();
        pipe.hset_nx(URLS, &field, &json).hget(URLS, &field);
        let (created, stored): (bool, String) = self.query(&pipe).await?;
        let stored: UrlMapping =
            serde_json::from_str(&stored).map_err(|e| damaged(e.to_string()))?;
        if created {
            let mut latest = redis::pipe();
            latest.hset(URLS_LATEST, &stored.key.url, &json).ignore();
            self.query::<()>(&latest).await?;
        }
        Ok((stored, created))
    }

    async fn lookup_url(&self, key: UrlKey) -> Result<UrlMapping, StoreError> {
        let mut conn = self.conn.clone();
        let stored: Option<String> = conn
            .hget(URLS, url_field(&key))
            .await
            .map_err(|e| self.error(e))?;
        let stored = stored.ok_or(StoreError::UnknownUrl)?;
        serde_json::from_str(&stored).map_err(|e| damaged(e.to_string()))
    }

    async fn latest_url(&self, url: String) -> Result<UrlMapping, StoreError> {
        let mut conn = self.conn.clone();
        let stored: Option<String> = conn
            .hget(URLS_LATEST, &url)
            .await
            .map_err(|e| self.error(e))?;
        let stored = stored.ok_or(StoreError::UnknownUrl)?;
        serde_json::from_str(&stored).map_err(|e| damaged(e.to_string()))
    }

    async fn create_swarm(&self, caller: Caller, swarm: NewSwarm) -> Result<SwarmInfo, StoreError> {
        self.create_swarm_in_redis(caller, swarm).await
    }

    async fn swarm(&self, id: ContentId) -> Result<SwarmInfo, StoreError> {
        self.swarm_in_redis(id).await
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

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = self.now();
        let mut pipe = redis::pipe();
        pipe.zrangebyscore(LEASES, format!("({now}"), "+inf")
            .hlen(CATALOG)
            .hlen(MANIFESTS)
            .zcard(SWARMS);
        let (live, contents, manifests, swarms): (Vec<String>, u64, u64, u64) =
            self.query(&pipe).await?;
        let mut pipe = redis::pipe();
        for id in &live {
            pipe.hlen(format!("shoal:held:{id}"));
        }
        let holdings: Vec<u64> = if live.is_empty() {
            Vec::new()
        } else {
            self.query(&pipe).await?
        };
        Ok(StoreStats {
            agents: live.len() as u64,
            contents,
            manifests,
            holdings: holdings.iter().sum(),
            swarms,
        })
    }

    async fn sweep(&self) -> Result<Swept, StoreError> {
        let mut conn = self.conn.clone();
        let agents: usize = self
            .sweep
            .arg(self.now())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        let swarms = self.sweep_swarms().await?;
        Ok(Swept { agents, swarms })
    }
}
