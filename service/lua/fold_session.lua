-- Fold a closed session generation into its user exactly once (user slot): append its
-- items to the bounded history, count it, move "<sid>#<gen>" from the attached set to the
-- closed set (so erasure still finds the session), and clear the open-session pointer
-- when it still names this session. Only a generation attached to this user folds: a
-- repeated close, a close racing another, or a close that lost a race with the user's
-- erasure (the user's keys are gone) writes nothing, so an erased user is never re-created.
-- KEYS[1] meta, KEYS[2] history, KEYS[3] closed set, KEYS[4] state, KEYS[5] attached set
-- ARGV[1] session id, ARGV[2] gen, ARGV[3] JSON item list, ARGV[4] now,
-- ARGV[5] max history, ARGV[6] max closed remembered, ARGV[7] user TTL
-- Returns 1 when this call folded the session, 0 otherwise.
local member = ARGV[1] .. '#' .. ARGV[2]
if redis.call('ZREM', KEYS[5], member) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
redis.call('HINCRBY', KEYS[1], 'sessions_total', 1)
redis.call('ZADD', KEYS[3], ARGV[4], member)
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[6]) + 1))
if redis.call('HGET', KEYS[1], 'open_session') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'open_session')
end
local ttl = tonumber(ARGV[7])
for i = 1, 5 do
  redis.call('EXPIRE', KEYS[i], ttl)
end
return 1
