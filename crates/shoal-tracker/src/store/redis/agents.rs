//! Agents in Redis: leases, records and holdings.
//!
//! Keys: `leases` (sorted set of agent ids by lease deadline), `agents` (hash of records),
//! `held:{id}` and `holders:{content id bytes}` (the two views of holdings); see the
//! [module docs](super).

use std::collections::{HashMap, HashSet};

use redis::{AsyncCommands, Pipeline};
use shoal_core::wire::{AgentId, AgentSummary, AnnounceRequest, HeartbeatRequest, LeaseGrant};
use shoal_core::{ContentId, Layout};

use super::codec::{
    content_of, decode_agent, decode_pieces, encode_agent, encode_layout, encode_pieces, held_key,
    holders_key, AgentInfo, AGENTS, CATALOG, LEASES, SERVED,
};
use super::RedisStore;
use crate::store::memory::{check_have, check_holding_count, check_holdings, Checked, Pieces};
use crate::store::served::Served;
use crate::store::{AgentPage, Caller, Registration, StoreError};

/// Removes every agent whose lease lapsed by ARGV[1] (ms), with its holdings, in one atomic
/// step, so an agent that renewed meanwhile is never removed. Returns how many were removed.
pub(super) const SWEEP: &str = r"
local lapsed = redis.call('ZRANGEBYSCORE', 'shoal:leases', '-inf', ARGV[1])
for _, id in ipairs(lapsed) do
  local held = 'shoal:held:' .. id
  for _, content in ipairs(redis.call('HKEYS', held)) do
    redis.call('HDEL', 'shoal:holders:' .. content, id)
  end
  redis.call('DEL', held)
  redis.call('HDEL', 'shoal:agents', id)
  redis.call('HDEL', 'shoal:served', id)
  redis.call('ZREM', 'shoal:leases', id)
end
return #lapsed
";

/// An agent's holdings as stored: content id → bits (empty when complete).
type Held = HashMap<Vec<u8>, Vec<u8>>;

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
    /// Lease deadline and owner of `id`, plus its holdings (content id → stored bits).
    async fn agent_with_holdings(&self, id: &AgentId) -> Result<(AgentRecord, Held), StoreError> {
        let mut pipe = redis::pipe();
        pipe.zscore(LEASES, id.as_str())
            .hget(AGENTS, id.as_str())
            .hgetall(held_key(id));
        let (deadline, info, held): (Option<f64>, Option<String>, Held) = self.query(&pipe).await?;
        Ok((AgentRecord::read(deadline, info)?, held))
    }

    /// Checks that the caller may act for the live agent `id` (its token registered it).
    pub(super) async fn check_acts_for(
        &self,
        caller: &Caller,
        id: &AgentId,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.zscore(LEASES, id.as_str()).hget(AGENTS, id.as_str());
        let (deadline, info): (Option<f64>, Option<String>) = self.query(&pipe).await?;
        Self::check_owner(caller, id, &AgentRecord::read(deadline, info)?, self.now())
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

    pub(super) async fn register_in_redis(
        &self,
        caller: Caller,
        reg: Registration,
    ) -> Result<LeaseGrant, StoreError> {
        let now = self.now();
        let (record, old) = self.agent_with_holdings(&reg.id).await?;
        if record.live(now) {
            if !record.owned_by(&caller) {
                return Err(StoreError::NotOwner(reg.id));
            }
            if let Some(held) = record.info.as_ref().map(|info| info.addr) {
                if held != reg.addr {
                    return Err(StoreError::IdInUse {
                        held,
                        asked: reg.addr,
                        id: reg.id,
                    });
                }
            }
        }
        check_holding_count(&reg.id, reg.holdings.len(), self.max_holdings)?;
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
            scheme: reg.scheme,
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

    pub(super) async fn heartbeat_in_redis(
        &self,
        caller: Caller,
        id: AgentId,
        beat: HeartbeatRequest,
    ) -> Result<LeaseGrant, StoreError> {
        let now = self.now();
        let mut pipe = redis::pipe();
        pipe.zscore(LEASES, id.as_str())
            .hget(AGENTS, id.as_str())
            .hget(SERVED, id.as_str());
        let (deadline, info, served): (Option<f64>, Option<String>, Option<String>) =
            self.query(&pipe).await?;
        let record = AgentRecord::read(deadline, info)?;
        Self::check_owner(&caller, &id, &record, now)?;
        let mut info = record
            .info
            .ok_or_else(|| StoreError::UnknownAgent(id.clone()))?;
        info.load = beat.load;
        let served = served
            .as_deref()
            .map_or_else(Served::default, Served::decode)
            .next(beat.served, now);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(AGENTS, id.as_str(), encode_agent(&info))
            .ignore()
            .hset(SERVED, id.as_str(), served.encode())
            .ignore()
            .zadd(LEASES, id.as_str(), now + self.lease_ms)
            .ignore();
        self.query::<()>(&pipe).await?;
        Ok(self.grant())
    }

    pub(super) async fn announce_in_redis(
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
        let holds = |c: &ContentId| held.contains_key(&c.as_bytes()[..]);
        let gone = removed.iter().filter(|c| holds(c)).count();
        let added = checked
            .iter()
            .filter(|c| removed.contains(&c.content) || !holds(&c.content))
            .count();
        check_holding_count(&id, held.len() - gone + added, self.max_holdings)?;

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

    pub(super) async fn deregister_in_redis(
        &self,
        caller: Caller,
        id: AgentId,
    ) -> Result<(), StoreError> {
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
            .hdel(SERVED, id.as_str())
            .ignore()
            .zrem(LEASES, id.as_str())
            .ignore();
        self.query::<()>(&pipe).await
    }

    pub(super) async fn agents_in_redis(
        &self,
        page: AgentPage,
    ) -> Result<Vec<AgentSummary>, StoreError> {
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
        pipe.cmd("HMGET").arg(SERVED).arg(&names);
        let (infos, served): (Vec<Option<String>>, Vec<Option<String>>) = self.query(&pipe).await?;
        let mut pipe = redis::pipe();
        for (id, _) in &live {
            pipe.hvals(held_key(id));
        }
        let held: Vec<Vec<Vec<u8>>> = self.query(&pipe).await?;
        let mut out = Vec::with_capacity(live.len());
        let rows = live.into_iter().zip(infos).zip(served).zip(held);
        for ((((id, deadline), info), served), held) in rows {
            let Some(info) = info else {
                continue;
            };
            let info = decode_agent(&info)?;
            let served = served
                .as_deref()
                .map_or_else(Served::default, Served::decode);
            let remaining = deadline - now;
            out.push(AgentSummary {
                addr: info.addr,
                scheme: info.scheme,
                upload_capacity: info.capacity,
                load: info.load,
                holdings: held.len() as u32,
                complete_holdings: held.iter().filter(|bits| bits.is_empty()).count() as u32,
                lease_remaining_ms: remaining,
                last_seen_ms: self.lease_ms.saturating_sub(remaining),
                served: served.bytes,
                upload_rate: served.rate,
                id,
            });
        }
        Ok(out)
    }

    /// Removes every agent whose lease lapsed, with its holdings; returns how many.
    pub(super) async fn sweep_agents(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        self.agent_sweep
            .arg(self.now())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }
}
