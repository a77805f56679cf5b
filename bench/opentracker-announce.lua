-- wrk script for bench/tracker-load.sh: BitTorrent HTTP announces to opentracker, over the
-- same 10,000 contents (info_hash = 12 zero bytes + the index, 8 bytes big-endian) and agents.
local agents = tonumber(os.getenv("AGENTS") or "10000")
local contents = tonumber(os.getenv("CONTENTS") or "10000")
local prefix = string.rep("%00", 12)

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(seed * 7919)
end

local function hash(c)
  local out = prefix
  for shift = 7, 0, -1 do
    out = out .. string.format("%%%02X", math.floor(c / 2 ^ (8 * shift)) % 256)
  end
  return out
end

request = function()
  local i = math.random(0, agents - 1)
  local c = math.random(0, contents - 1)
  local path = "/announce?info_hash=" .. hash(c) .. "&peer_id=" .. string.format("-SH0001-%012d", i)
    .. "&port=" .. (1024 + i % 60000) .. "&uploaded=0&downloaded=0&left=" .. (i % 2) * 1048576
    .. "&compact=1&numwant=20"
  return wrk.format("GET", path)
end
