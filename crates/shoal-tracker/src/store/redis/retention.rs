//! Retention in Redis: contents no agent holds are removed after the retention period, as in
//! the memory index (`memory/retention.rs`): the sweep marks when it first finds a content
//! unheld (`unheld`, a sorted set of content ids scored by that time) and removes it once the
//! mark is older than the period.
//!
//! The script walks the catalog, once per sweep, inside Redis: one round trip, a few
//! microseconds per content. URL mappings are found by walking the URL map only in a sweep that
//! removes something.

use super::RedisStore;
use crate::store::StoreError;

/// Marks unheld contents and removes those unheld since ARGV[1] (now, ms) minus ARGV[2]
/// (the retention, ms) or earlier: catalog entry, manifest, reports, and every URL mapping
/// (and latest version) naming them. Returns how many contents it removed.
pub(super) const SWEEP: &str = r"
local now, retention = tonumber(ARGV[1]), tonumber(ARGV[2])
local removed = {}
for _, id in ipairs(redis.call('HKEYS', 'shoal:catalog')) do
  if redis.call('EXISTS', 'shoal:holders:' .. id) == 1 then
    redis.call('ZREM', 'shoal:unheld', id)
  else
    local since = redis.call('ZSCORE', 'shoal:unheld', id)
    if not since then
      redis.call('ZADD', 'shoal:unheld', now, id)
    elseif now - tonumber(since) >= retention then
      redis.call('HDEL', 'shoal:catalog', id)
      redis.call('HDEL', 'shoal:manifests', id)
      redis.call('ZREM', 'shoal:unheld', id)
      redis.call('DEL', 'shoal:reported:' .. id)
      removed[(id:gsub('.', function(c) return string.format('%02x', c:byte()) end))] = true
    end
  end
end
if next(removed) == nil then
  return 0
end
local count = 0
for _ in pairs(removed) do count = count + 1 end
for _, map in ipairs({'shoal:urls', 'shoal:urls:latest'}) do
  local entries = redis.call('HGETALL', map)
  for i = 1, #entries, 2 do
    local ok, mapping = pcall(cjson.decode, entries[i + 1])
    if ok and removed[mapping.content] then
      redis.call('HDEL', map, entries[i])
    end
  end
end
return count
";

impl RedisStore {
    /// Removes contents no agent held for the retention period; returns how many.
    pub(super) async fn sweep_contents(&self) -> Result<usize, StoreError> {
        let Some(retention) = self.retention_ms else {
            return Ok(0);
        };
        let mut conn = self.conn.clone();
        self.content_sweep
            .arg(self.now())
            .arg(retention)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }
}
