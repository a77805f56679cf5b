//! The Redis backend: every piece of state, durable and soft, lives in one Redis so that any
//! number of tracker replicas behind a load balancer answer any request alike.
//!
//! Keys (all under `shoal:`):
//! - `catalog` hash: content id (32 bytes) → layout (size, piece size as 2 × u64 LE) + name;
//! - `manifests` hash: content id → layout + the piece digests; `urls` hash: URL version →
//!   JSON mapping (`HSETNX`, so the first mapping wins across replicas);
//! - `leases` sorted set: agent id scored by the deadline of its lease;
//! - `agent:{id}` hash: owner, addr, upload capacity, load;
//! - `held:{id}` hash: content id → the agent's bitfield as a binary string, empty when complete;
//! - `holders:{content id bytes}` set: the agents holding that content.
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
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Pipeline, RedisError};
use shoal_core::wire::{
    AgentId, AgentSummary, AnnounceRequest, ContentSummary, HeartbeatRequest, LeaseGrant,
    ManifestPublished, PackedBits, Peer, PeersResponse, UrlKey, UrlMapping,
};
use shoal_core::{ContentId, Layout, Manifest};

use super::memory::{check_holdings, fnv1a, useful_pieces, Checked, PeerKey, Pieces};
use super::{
    AgentPage, Caller, ContentSearch, PeerQuery, Registration, Store, StoreError, StoreOptions,
    StoreStats,
};
use crate::clock::Clock;

mod codec;

pub use codec::redact;
use codec::{
    agent_key, content_of, damaged, decode_entry, decode_layout, decode_pieces, encode_layout,
    encode_pieces, held_key, holders_key, unix_now, url_field,
};

const CATALOG: &str = "shoal:catalog";
const MANIFESTS: &str = "shoal:manifests";
const URLS: &str = "shoal:urls";
const LEASES: &str = "shoal:leases";
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
    redis.call('SREM', 'shoal:holders:' .. content, id)
  end
  redis.call('DEL', held, 'shoal:agent:' .. id)
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

/// The first round trip of a peer query: catalog entry, holders, the asker's lease and bits.
type PeersHead = (Option<Vec<u8>>, Vec<String>, Option<f64>, Option<Vec<u8>>);

/// What an agent's record says, as read in one pipeline.
struct AgentRecord {
    deadline: Option<u64>,
    owner: Option<String>,
}

impl AgentRecord {
    fn live(&self, now: u64) -> bool {
        self.deadline.is_some_and(|d| d > now)
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
            .hget(agent_key(id), "owner")
            .hgetall(held_key(id));
        let (deadline, owner, held): (Option<f64>, Option<String>, Held) =
            self.query(&pipe).await?;
        Ok((
            AgentRecord {
                deadline: deadline.map(|d| d as u64),
                owner,
            },
            held,
        ))
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
        if !caller.admin && record.owner.as_deref() != Some(&*caller.token) {
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
            pipe.hset(
                held_key(id),
                &h.content.as_bytes()[..],
                encode_pieces(&h.pieces),
            )
            .ignore()
            .sadd(holders_key(&h.content), id.as_str())
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
                .smembers(holders_key(id));
        }
        let rows: Vec<(bool, Vec<String>)> = self.query(&pipe).await?;
        let (manifests, holders): (Vec<bool>, Vec<Vec<String>>) = rows.into_iter().unzip();
        let mut pipe = redis::pipe();
        for ((id, ..), agents) in entries.iter().zip(&holders) {
            for agent in agents {
                pipe.zscore(LEASES, agent)
                    .cmd("HSTRLEN")
                    .arg(format!("shoal:held:{agent}"))
                    .arg(&id.as_bytes()[..]);
            }
        }
        let flat: Vec<(Option<f64>, u64)> = if holders.iter().all(Vec::is_empty) {
            Vec::new()
        } else {
            self.query(&pipe).await?
        };
        let mut flat = flat.into_iter();
        let mut out = Vec::with_capacity(entries.len());
        for (((id, layout, name), manifest), agents) in
            entries.into_iter().zip(manifests).zip(&holders)
        {
            let (mut complete, mut partial) = (0, 0);
            for (deadline, len) in flat.by_ref().take(agents.len()) {
                if deadline.is_some_and(|d| d as u64 > now) {
                    if len == 0 {
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
        if record.live(now) && !caller.admin && record.owner.as_deref() != Some(&*caller.token) {
            return Err(StoreError::NotOwner(reg.id));
        }
        let ids: Vec<ContentId> = reg.holdings.iter().map(|h| h.content).collect();
        let known = self.entries(&ids).await?;
        let checked = check_holdings(reg.holdings, |id| known.get(id).map(|(l, _)| *l))?;

        let mut pipe = redis::pipe();
        pipe.atomic();
        for content in old.keys() {
            pipe.srem(holders_key(&content_of(content)?), reg.id.as_str())
                .ignore();
        }
        pipe.del(held_key(&reg.id))
            .ignore()
            .del(agent_key(&reg.id))
            .ignore()
            .hset_multiple(
                agent_key(&reg.id),
                &[
                    ("owner", caller.token.to_string()),
                    ("addr", reg.addr.to_string()),
                    ("capacity", reg.upload_capacity.to_string()),
                    ("load", "0".to_string()),
                ],
            )
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
        pipe.zscore(LEASES, id.as_str())
            .hget(agent_key(&id), "owner");
        let (deadline, owner): (Option<f64>, Option<String>) = self.query(&pipe).await?;
        let record = AgentRecord {
            deadline: deadline.map(|d| d as u64),
            owner,
        };
        Self::check_owner(&caller, &id, &record, now)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(agent_key(&id), "load", beat.load)
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
            let count = layout.piece_count();
            if let Some(j) = d.have.iter().position(|&p| p >= count) {
                return Err(StoreError::invalid(
                    format!("pieces[{i}].have[{j}]"),
                    format!(
                        "piece {} is out of range: the content has {count} pieces",
                        d.have[j]
                    ),
                ));
            }
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
                .srem(holders_key(content), id.as_str())
                .ignore();
        }
        Self::queue_holdings(&mut pipe, &id, &checked, &known);
        for (content, pieces) in &updated {
            pipe.hset(
                held_key(&id),
                &content.as_bytes()[..],
                encode_pieces(pieces),
            )
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
            pipe.srem(holders_key(&content_of(content)?), id.as_str())
                .ignore();
        }
        pipe.del(held_key(&id))
            .ignore()
            .del(agent_key(&id))
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
        // Round trip 1: the layout, the holders and what the asker has.
        let asker = query.asker.as_ref().map(AgentId::as_str).unwrap_or("");
        let mut pipe = redis::pipe();
        pipe.hget(CATALOG, field)
            .smembers(holders_key(&content))
            .zscore(LEASES, asker)
            .hget(format!("shoal:held:{asker}"), field);
        let (entry, holders, asker_deadline, asker_bits): PeersHead = self.query(&pipe).await?;
        let (layout, _) = decode_layout(&entry.ok_or(StoreError::UnknownContent(content))?)?;
        let count = layout.piece_count();
        let asker_has = match (query.asker.is_some(), asker_deadline, asker_bits) {
            (true, Some(d), Some(bits)) if d as u64 > now => Some(decode_pieces(bits, count)?),
            _ => None,
        };
        let asker_count = asker_has.as_ref().map_or(0, |p| p.count(count));
        let candidates: Vec<&String> = holders
            .iter()
            .filter(|h| {
                query
                    .asker
                    .as_ref()
                    .is_none_or(|a| a.as_str() != h.as_str())
            })
            .collect();

        // Round trip 2: every candidate's lease, record and pieces.
        let mut pipe = redis::pipe();
        for agent in &candidates {
            pipe.zscore(LEASES, agent.as_str())
                .hmget(
                    format!("shoal:agent:{agent}"),
                    &["addr", "capacity", "load"][..],
                )
                .hget(format!("shoal:held:{agent}"), field);
        }
        type Row = (Option<f64>, Vec<Option<String>>, Option<Vec<u8>>);
        let rows: Vec<Row> = if candidates.is_empty() {
            Vec::new()
        } else {
            self.query(&pipe).await?
        };
        // Equal candidates are ordered by a hash of the asker, so that different askers spread
        // over different holders instead of all picking the same first few.
        let seed = query.asker.as_ref().map_or(0, |id| fnv1a(id.as_str()));
        let mut ranked: Vec<(PeerKey, Peer)> = Vec::with_capacity(rows.len());
        for (agent, (deadline, record, bits)) in candidates.into_iter().zip(rows) {
            let (Some(deadline), Some(bits)) = (deadline, bits) else {
                continue;
            };
            if deadline as u64 <= now {
                continue;
            }
            let [Some(addr), Some(capacity), Some(load)] = <[Option<String>; 3]>::try_from(record)
                .map_err(|_| damaged("an agent record is incomplete"))?
            else {
                continue;
            };
            let pieces = decode_pieces(bits, count)?;
            let complete = matches!(pieces, Pieces::Complete);
            let useful = useful_pieces(&pieces, asker_has.as_ref(), asker_count, count);
            if !complete && useful == 0 {
                continue;
            }
            let id = AgentId::new(agent.as_str()).map_err(|e| damaged(e.to_string()))?;
            let parse_err = |_| damaged(format!("agent {agent}'s record is damaged"));
            let peer = Peer {
                addr: addr
                    .parse::<SocketAddr>()
                    .map_err(|_| damaged(format!("agent {agent}'s address is damaged")))?,
                upload_capacity: capacity.parse().map_err(parse_err)?,
                load: load.parse().map_err(parse_err)?,
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
                (fnv1a(agent) ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15),
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
        let mut pipe = redis::pipe();
        for (id, _) in &live {
            pipe.hmget(agent_key(id), &["addr", "capacity", "load"][..])
                .hvals(held_key(id));
        }
        // Per agent: addr, capacity, load; the bits of every holding.
        type Row = (Vec<Option<String>>, Vec<Vec<u8>>);
        let rows: Vec<Row> = self.query(&pipe).await?;
        let mut out = Vec::with_capacity(live.len());
        for ((id, deadline), (record, held)) in live.into_iter().zip(rows) {
            let [Some(addr), Some(capacity), Some(load)] = <[Option<String>; 3]>::try_from(record)
                .map_err(|_| damaged("an agent record is incomplete"))?
            else {
                continue;
            };
            let parse_err = |_| damaged(format!("agent {id}'s record is damaged"));
            out.push(AgentSummary {
                addr: addr
                    .parse::<SocketAddr>()
                    .map_err(|_| damaged(format!("agent {id}'s address is damaged")))?,
                upload_capacity: capacity.parse().map_err(parse_err)?,
                load: load.parse().map_err(parse_err)?,
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
        .smembers(holders_key(&id));
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
        pipe.hset_nx(URLS, &field, json).hget(URLS, &field);
        let (created, stored): (bool, String) = self.query(&pipe).await?;
        let stored = serde_json::from_str(&stored).map_err(|e| damaged(e.to_string()))?;
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

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = self.now();
        let mut pipe = redis::pipe();
        pipe.zrangebyscore(LEASES, format!("({now}"), "+inf")
            .hlen(CATALOG)
            .hlen(MANIFESTS);
        let (live, contents, manifests): (Vec<String>, u64, u64) = self.query(&pipe).await?;
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
        })
    }

    async fn sweep(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let removed: usize = self
            .sweep
            .arg(self.now())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(removed)
    }
}
