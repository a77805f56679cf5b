-- wrk script for bench/tracker-load.sh: a mix of peer queries and piece-announce deltas
-- against a tracker preloaded by the tracker-load example (agents a0.., contents whose id is
-- 48 zeros and the index as 16 hex digits, the first PARTIAL holdings of each agent partial).
local agents = tonumber(os.getenv("AGENTS") or "10000")
local contents = tonumber(os.getenv("CONTENTS") or "10000")
local per_agent = tonumber(os.getenv("PER_AGENT") or "100")
local partial = tonumber(os.getenv("PARTIAL") or "10")
local announce_pct = tonumber(os.getenv("ANNOUNCE_PCT") or "50")
local stride = math.floor(contents / per_agent)
local zeros = string.rep("0", 48)
local headers = {
  ["Authorization"] = "Bearer " .. os.getenv("TRACKER_TOKEN"),
  ["Content-Type"] = "application/json",
}

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(seed * 7919)
end

local function cid(c)
  return zeros .. string.format("%016x", c)
end

request = function()
  local i = math.random(0, agents - 1)
  if math.random(1, 100) <= announce_pct then
    -- One newly verified piece of one of the agent's partial holdings.
    local c = (i + math.random(0, partial - 1) * stride) % contents
    local body = '{"pieces":[{"content":"' .. cid(c) .. '","have":[' .. math.random(0, 255) .. ']}]}'
    return wrk.format("POST", "/v1/agents/a" .. i .. "/announce", headers, body)
  end
  local c = math.random(0, contents - 1)
  return wrk.format("GET", "/v1/content/" .. cid(c) .. "/peers?agent=a" .. i, headers)
end
