-- tollgate cluster sync (agent/src/cluster): adds one node's usage deltas to
-- this window's fleet-wide counters and returns which are over allowance.
--
-- KEYS[1]          tg:{<window>}:batch:<node>:<seq>:<chunk>, this call's
--                  marker: a call sent again after a lost answer finds it and
--                  adds nothing twice
-- KEYS[i + 1]      tg:{<window>}:<tier>:<p|r>:<source>, all in one window, so
--                  they share the hash tag and one Redis Cluster slot
-- ARGV[1]          counter and marker TTL in milliseconds (set when created)
-- ARGV[2i]         units KEYS[i + 1]'s source used on this node since its
--                  last push
-- ARGV[2i + 1]     units the source may use in the window, all nodes together
--
-- Returns the indices i (1-based) whose total is over its allowance.
local ttl = tonumber(ARGV[1])
local fresh = redis.call('SET', KEYS[1], 1, 'NX', 'PX', ttl)
local over = {}
for i = 1, #KEYS - 1 do
  local key = KEYS[i + 1]
  local total
  if fresh then
    local delta = tonumber(ARGV[2 * i])
    total = redis.call('INCRBY', key, delta)
    if total == delta then
      redis.call('PEXPIRE', key, ttl)
    end
  else
    total = tonumber(redis.call('GET', key) or '0')
  end
  if total > tonumber(ARGV[2 * i + 1]) then
    over[#over + 1] = i
  end
end
return over
