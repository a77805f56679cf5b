//! URL swarms in Redis, shared by every replica.
//!
//! Keys:
//! - `swarms` sorted set: swarm id (32 bytes) scored by the [`Clock`](crate::Clock) time of the
//!   last create or publish that touched it; a swarm whose score is older than the lifetime is
//!   gone for every answer at once, and the sweep deletes it;
//! - `swarm:{id bytes}` hash: `layout` (2 × u64 LE), `info` (JSON of the key and the creating
//!   leader), `leader` (the agent id that took over last, when one did), `publisher` (the
//!   leader's token name), `progress` (the [`Clock`](crate::Clock) time the leader last
//!   published a new digest, took over or created the swarm, in decimal), and one field per
//!   published piece: its index in decimal → its 32-byte digest. `HSETNX` makes the first
//!   digest of a piece win across replicas.
//!
//! Create, publish and take over are Lua scripts, so that checking a swarm and changing it is
//! one atomic step whichever replica runs it: the first create of a key wins, the first
//! takeover of a leader wins, and a publish never lands in a swarm that lapsed and was created
//! again meanwhile.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_core::wire::{leader_stall_limit, AgentId, SwarmDigests, SwarmInfo, UrlKey};
use shoal_core::{ContentId, Layout, PieceDigest};

use super::codec::{damaged, decode_layout, encode_layout, swarm_key, LEASES, SWARMS};
use super::RedisStore;
use crate::store::swarms::{check_indices, check_publisher};
use crate::store::{Caller, DigestsPublished, NewSwarm, StoreError, SwarmLimits, SwarmSummary};

/// How many lapsed swarms one sweep script deletes, so that it never blocks Redis for long.
const SWEEP_BATCH: usize = 1000;

/// KEYS: the `swarms` set, the swarm's hash. ARGV: id, now, lapsed (a score at or below it has
/// lapsed), max swarms, layout, info, publisher. Returns {0 existing | 1 created | 2 other
/// layout | 3 full, the swarm's hash}.
const CREATE: &str = r"
local touched = redis.call('ZSCORE', KEYS[1], ARGV[1])
if touched and tonumber(touched) > tonumber(ARGV[3]) then
  if redis.call('HGET', KEYS[2], 'layout') ~= ARGV[5] then
    return {2, redis.call('HGETALL', KEYS[2])}
  end
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  return {0, redis.call('HGETALL', KEYS[2])}
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('UNLINK', KEYS[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return {3, {}}
end
redis.call('HSET', KEYS[2], 'layout', ARGV[5], 'info', ARGV[6], 'publisher', ARGV[7],
  'progress', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return {1, redis.call('HGETALL', KEYS[2])}
";

/// KEYS: the `swarms` set, the swarm's hash. ARGV: id, now, lapsed, the layout and publisher
/// the caller was checked against, then index, digest pairs. Returns {0 gone | 1 done, the
/// indices whose digest differed from the known one, the swarm's hash}.
const PUBLISH: &str = r"
local touched = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not touched or tonumber(touched) <= tonumber(ARGV[3])
    or redis.call('HGET', KEYS[2], 'layout') ~= ARGV[4]
    or redis.call('HGET', KEYS[2], 'publisher') ~= ARGV[5] then
  return {0, {}, {}}
end
local ignored = {}
local added = 0
for i = 6, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    added = added + 1
  elseif redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[i + 1] then
    table.insert(ignored, ARGV[i])
  end
end
if added > 0 then
  redis.call('HSET', KEYS[2], 'progress', ARGV[2])
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return {1, ignored, redis.call('HGETALL', KEYS[2])}
";

/// KEYS: the `swarms` set, the swarm's hash, the `leases` set. ARGV: id, now, lapsed, the
/// agent taking over, its token, the stall limit (ms), the swarm's piece count. Returns {0
/// gone | 1 led by the agent now | 2 the leader is live and publishing, the swarm's hash}.
const TAKE_OVER: &str = r"
local touched = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not touched or tonumber(touched) <= tonumber(ARGV[3]) then
  return {0, {}}
end
local leader = redis.call('HGET', KEYS[2], 'leader')
if not leader then
  leader = cjson.decode(redis.call('HGET', KEYS[2], 'info'))['leader']
end
if leader ~= ARGV[4] then
  local deadline = redis.call('ZSCORE', KEYS[3], leader)
  local live = deadline and tonumber(deadline) > tonumber(ARGV[2])
  local fields = 3
  for _, field in ipairs({'leader', 'progress'}) do
    fields = fields + redis.call('HEXISTS', KEYS[2], field)
  end
  local missing = redis.call('HLEN', KEYS[2]) - fields < tonumber(ARGV[7])
  local progress = tonumber(redis.call('HGET', KEYS[2], 'progress') or '0')
  local stalled = missing and tonumber(ARGV[2]) - progress >= tonumber(ARGV[6])
  if live and not stalled then
    return {2, redis.call('HGETALL', KEYS[2])}
  end
  redis.call('HSET', KEYS[2], 'leader', ARGV[4], 'publisher', ARGV[5], 'progress', ARGV[2])
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return {1, redis.call('HGETALL', KEYS[2])}
";

/// Deletes up to ARGV[2] swarms whose score is at or below ARGV[1]; returns how many.
const SWEEP: &str = r"
local lapsed = redis.call('ZRANGEBYSCORE', 'shoal:swarms', '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(lapsed) do
  redis.call('UNLINK', 'shoal:swarm:' .. id)
  redis.call('ZREM', 'shoal:swarms', id)
end
return #lapsed
";

/// The swarm scripts, loaded once per store.
pub(super) struct SwarmScripts {
    create: redis::Script,
    publish: redis::Script,
    take_over: redis::Script,
    sweep: redis::Script,
}

impl SwarmScripts {
    pub(super) fn new() -> Self {
        Self {
            create: redis::Script::new(CREATE),
            publish: redis::Script::new(PUBLISH),
            take_over: redis::Script::new(TAKE_OVER),
            sweep: redis::Script::new(SWEEP),
        }
    }
}

/// The `info` field of a swarm's hash (its `leader` is the creator, unless the `leader` field
/// says who took over).
#[derive(Serialize, Deserialize)]
struct StoredInfo {
    key: UrlKey,
    leader: AgentId,
}

/// A swarm's hash, decoded (but for the publisher, which only the scripts compare).
struct StoredSwarm {
    layout: Layout,
    info: StoredInfo,
    digests: BTreeMap<u32, PieceDigest>,
}

impl StoredSwarm {
    fn decode(fields: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Self, StoreError> {
        let (mut layout, mut info, mut leader) = (None, None::<StoredInfo>, None);
        let mut digests = BTreeMap::new();
        for (field, value) in fields {
            match &field[..] {
                b"layout" => layout = Some(decode_layout(&value)?.0),
                b"info" => {
                    info = Some(serde_json::from_slice(&value).map_err(|e| damaged(e.to_string()))?)
                }
                b"publisher" | b"progress" => {}
                b"leader" => {
                    let id = String::from_utf8(value)
                        .ok()
                        .and_then(|v| AgentId::new(v).ok());
                    leader = Some(id.ok_or_else(|| damaged("a swarm's leader is no agent id"))?);
                }
                index => {
                    let index = std::str::from_utf8(index)
                        .ok()
                        .and_then(|i| i.parse().ok())
                        .ok_or_else(|| damaged("a swarm's hash has a stray field"))?;
                    let digest = value
                        .try_into()
                        .map_err(|_| damaged("a stored piece digest is not 32 bytes"))?;
                    digests.insert(index, digest);
                }
            }
        }
        match (layout, info) {
            (Some(layout), Some(mut info)) => {
                if let Some(leader) = leader {
                    info.leader = leader;
                }
                Ok(Self {
                    layout,
                    info,
                    digests,
                })
            }
            _ => Err(damaged("a swarm's hash lacks its layout or info")),
        }
    }

    fn into_info(self, id: ContentId, created: bool) -> SwarmInfo {
        SwarmInfo {
            id,
            digests: SwarmDigests::from_known(self.layout.piece_count(), &self.digests),
            key: self.info.key,
            layout: self.layout,
            leader: self.info.leader,
            created,
        }
    }
}

/// A swarm's hash as (field, value) pairs.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A flat `HGETALL` answer as (field, value) pairs.
fn pairs(flat: Vec<Vec<u8>>) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
    let mut flat = flat.into_iter();
    std::iter::from_fn(move || Some((flat.next()?, flat.next()?)))
}

impl RedisStore {
    /// Sets the limits of URL swarms (the default is [`SwarmLimits::default`]); call it before
    /// cloning the store.
    pub fn with_swarms(mut self, limits: SwarmLimits) -> Self {
        self.swarm_limits = limits;
        self
    }

    /// The score at or below which a swarm has lapsed, as Lua compares it.
    fn lapsed_at(&self, now: u64) -> i64 {
        now as i64 - self.swarm_limits.ttl.as_millis() as i64
    }

    /// Whether a swarm last touched at this score (if it has one) is running at `now`.
    fn running(&self, touched: Option<f64>, now: u64) -> bool {
        touched.is_some_and(|t| t as i64 > self.lapsed_at(now))
    }

    pub(super) async fn create_swarm_in_redis(
        &self,
        caller: Caller,
        new: NewSwarm,
    ) -> Result<SwarmInfo, StoreError> {
        let now = self.now();
        let id = new.key.swarm_id();
        let info = StoredInfo {
            key: new.key,
            leader: new.leader,
        };
        let info = serde_json::to_vec(&info).map_err(|e| damaged(e.to_string()))?;
        let mut conn = self.conn.clone();
        let (outcome, fields): (u8, Vec<Vec<u8>>) = self
            .swarm_scripts
            .create
            .key(SWARMS)
            .key(swarm_key(&id))
            .arg(&id.as_bytes()[..])
            .arg(now)
            .arg(self.lapsed_at(now))
            .arg(self.swarm_limits.max)
            .arg(encode_layout(new.layout, &[]))
            .arg(info)
            .arg(&*caller.token)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        match outcome {
            0 | 1 => Ok(StoredSwarm::decode(pairs(fields))?.into_info(id, outcome == 1)),
            2 => Err(StoreError::SwarmLayout {
                id,
                layout: StoredSwarm::decode(pairs(fields))?.layout,
            }),
            _ => Err(StoreError::TooManySwarms {
                max: self.swarm_limits.max,
            }),
        }
    }

    pub(super) async fn swarm_in_redis(&self, id: ContentId) -> Result<SwarmInfo, StoreError> {
        let now = self.now();
        let mut pipe = redis::pipe();
        pipe.zscore(SWARMS, &id.as_bytes()[..])
            .hgetall(swarm_key(&id));
        let (touched, fields): (Option<f64>, Fields) = self.query(&pipe).await?;
        if !self.running(touched, now) || fields.is_empty() {
            return Err(StoreError::UnknownSwarm(id));
        }
        Ok(StoredSwarm::decode(fields)?.into_info(id, false))
    }

    /// The running swarms touched last, without reading their digests: every field of a
    /// swarm's hash but the named ones is a published digest, so `HLEN` counts them.
    pub(super) async fn swarms_in_redis(
        &self,
        limit: usize,
    ) -> Result<Vec<SwarmSummary>, StoreError> {
        const NAMED: [&str; 5] = ["layout", "info", "leader", "publisher", "progress"];
        let now = self.now();
        let mut pipe = redis::pipe();
        pipe.cmd("ZREVRANGEBYSCORE")
            .arg(SWARMS)
            .arg("+inf")
            .arg(format!("({}", self.lapsed_at(now)))
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        let (ids,): (Vec<Vec<u8>>,) = self.query(&pipe).await?;
        let ids: Vec<ContentId> = ids
            .into_iter()
            .filter_map(|id| Some(ContentId::from_bytes(id.try_into().ok()?)))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET").arg(swarm_key(id)).arg(&NAMED[..]);
            pipe.hlen(swarm_key(id));
        }
        let answers: Vec<(Vec<Option<Vec<u8>>>, u32)> = self.query(&pipe).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, (named, len)) in ids.into_iter().zip(answers) {
            let present = named.iter().filter(|v| v.is_some()).count() as u32;
            let fields = NAMED
                .iter()
                .zip(named)
                .filter_map(|(name, value)| Some((name.as_bytes().to_vec(), value?)));
            // A swarm swept between the two reads has no hash left: it is not running.
            let Ok(swarm) = StoredSwarm::decode(fields) else {
                continue;
            };
            out.push(SwarmSummary {
                id,
                key: swarm.info.key,
                layout: swarm.layout,
                leader: swarm.info.leader,
                published: len.saturating_sub(present),
            });
        }
        Ok(out)
    }

    pub(super) async fn publish_digests_in_redis(
        &self,
        caller: Caller,
        id: ContentId,
        digests: Vec<(u32, PieceDigest)>,
    ) -> Result<DigestsPublished, StoreError> {
        let now = self.now();
        // Round trip 1: what the request is checked against.
        let mut pipe = redis::pipe();
        pipe.zscore(SWARMS, &id.as_bytes()[..])
            .hget(swarm_key(&id), "layout")
            .hget(swarm_key(&id), "publisher");
        let (touched, layout, publisher): (Option<f64>, Option<Vec<u8>>, Option<String>) =
            self.query(&pipe).await?;
        let (Some(layout), Some(publisher)) = (layout, publisher) else {
            return Err(StoreError::UnknownSwarm(id));
        };
        if !self.running(touched, now) {
            return Err(StoreError::UnknownSwarm(id));
        }
        check_publisher(&caller, &id, &publisher)?;
        check_indices(&digests, decode_layout(&layout)?.0.piece_count())?;

        // Round trip 2: record them, first digest per piece winning.
        let mut invocation = self.swarm_scripts.publish.key(SWARMS);
        invocation
            .key(swarm_key(&id))
            .arg(&id.as_bytes()[..])
            .arg(now)
            .arg(self.lapsed_at(now))
            .arg(layout)
            .arg(publisher);
        for (index, digest) in &digests {
            invocation.arg(index).arg(&digest[..]);
        }
        let mut conn = self.conn.clone();
        let (outcome, ignored, fields): (u8, Vec<u32>, Vec<Vec<u8>>) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        if outcome == 0 {
            return Err(StoreError::UnknownSwarm(id));
        }
        Ok(DigestsPublished {
            swarm: StoredSwarm::decode(pairs(fields))?.into_info(id, false),
            ignored,
        })
    }

    pub(super) async fn take_over_swarm_in_redis(
        &self,
        caller: Caller,
        id: ContentId,
        agent: AgentId,
    ) -> Result<SwarmInfo, StoreError> {
        self.check_acts_for(&caller, &agent).await?;
        let now = self.now();
        let mut pipe = redis::pipe();
        pipe.hget(swarm_key(&id), "layout");
        let (layout,): (Option<Vec<u8>>,) = self.query(&pipe).await?;
        let layout = decode_layout(&layout.ok_or(StoreError::UnknownSwarm(id))?)?.0;
        let stall = leader_stall_limit(layout);
        let mut conn = self.conn.clone();
        let (outcome, fields): (u8, Vec<Vec<u8>>) = self
            .swarm_scripts
            .take_over
            .key(SWARMS)
            .key(swarm_key(&id))
            .key(LEASES)
            .arg(&id.as_bytes()[..])
            .arg(now)
            .arg(self.lapsed_at(now))
            .arg(agent.as_str())
            .arg(&*caller.token)
            .arg(stall.as_millis() as u64)
            .arg(layout.piece_count())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        match outcome {
            1 => Ok(StoredSwarm::decode(pairs(fields))?.into_info(id, false)),
            2 => Err(StoreError::LeaderLive {
                id,
                leader: StoredSwarm::decode(pairs(fields))?.info.leader,
                stall,
            }),
            _ => Err(StoreError::UnknownSwarm(id)),
        }
    }

    /// Deletes every lapsed swarm, a batch per script call.
    pub(super) async fn sweep_swarms(&self) -> Result<usize, StoreError> {
        let lapsed_at = self.lapsed_at(self.now());
        let mut total = 0;
        loop {
            let mut conn = self.conn.clone();
            let removed: usize = self
                .swarm_scripts
                .sweep
                .arg(lapsed_at)
                .arg(SWEEP_BATCH)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
            total += removed;
            if removed < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }
}
