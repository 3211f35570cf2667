-- Undo ``attach_user`` for a generation the session then refused (another user took the
-- session id in between): the attach is forgotten and the open-session pointer goes back,
-- so the refused request leaves nothing behind (user slot).
-- KEYS[1] meta, KEYS[2] attached set; ARGV[1] session id, ARGV[2] gen,
-- ARGV[3] the open session before the attach ('' = none)
redis.call('ZREM', KEYS[2], ARGV[1] .. '#' .. ARGV[2])
if redis.call('HGET', KEYS[1], 'open_session') == ARGV[1] then
  if ARGV[3] ~= '' then
    redis.call('HSET', KEYS[1], 'open_session', ARGV[3])
  else
    redis.call('HDEL', KEYS[1], 'open_session')
  end
end
return 1
