-- Take the sweeper's lease on one shard of the idle-session index (its own slot) and read
-- the candidates: sessions whose last known activity is older than the cutoff. Only the
-- holder of the lease sweeps the shard, so several processes share the work; a holder
-- that dies loses the lease when it expires.
-- KEYS[1] index zset (session id -> server time of last known activity), KEYS[2] lease
-- ARGV[1] owner token, ARGV[2] lease (ms), ARGV[3] cutoff (s), ARGV[4] most candidates
-- Returns the candidate session ids, or false when another process holds the lease.
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  return false
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
