-- tollgate cluster sync (agent/src/cluster): adds one node's usage deltas to
-- this window's fleet-wide counters and returns which are over allowance.
--
-- KEYS[i]          tg:{<window>}:<tier>:<p|r>:<source>, all in one window, so
--                  they share the hash tag and one Redis Cluster slot
-- ARGV[1]          counter TTL in milliseconds (set when a counter is created)
-- ARGV[2i]         units KEYS[i]'s source used on this node since its last push
-- ARGV[2i + 1]     units the source may use in the window, all nodes together
--
-- Returns the indices i (1-based) whose total is over its allowance.
local ttl = tonumber(ARGV[1])
local over = {}
for i = 1, #KEYS do
  local delta = tonumber(ARGV[2 * i])
  local total = redis.call('INCRBY', KEYS[i], delta)
  if total == delta then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
  if total > tonumber(ARGV[2 * i + 1]) then
    over[#over + 1] = i
  end
end
return over
