-- Record on the session slot that a closed generation has been folded into its user, so
-- the session id may start its next generation. KEYS[1] meta; ARGV[1] gen.
-- Returns 1 if marked (0: that generation is gone or still open).
local meta = redis.call('HMGET', KEYS[1], 'gen', 'status')
if meta[1] ~= ARGV[1] or meta[2] ~= 'closed' then
  return 0
end
redis.call('HSET', KEYS[1], 'folded', '1')
return 1
