-- Mark a user's open session and read what is needed to catch up the user's model state
-- (all keys in the user's hash slot).
-- KEYS[1] meta, KEYS[2] history, KEYS[3] state, KEYS[4] closed set
-- ARGV[1] session id ('' = read only: nothing is written), ARGV[2] event timestamp,
-- ARGV[3] state field (model@version), ARGV[4] user TTL (s)
-- Returns {previous_open_session ('' if none), sessions_total, state_blob|false, state_n,
--          unfolded_history (JSON item lists, oldest first), approximate (1 if trimmed)}
local sid = ARGV[1]
local field = ARGV[3]
local ttl = tonumber(ARGV[4])
local previous = redis.call('HGET', KEYS[1], 'open_session') or ''
if sid ~= '' then
  redis.call('HSET', KEYS[1], 'open_session', sid)
  local last = tonumber(redis.call('HGET', KEYS[1], 'last_event_at'))
  if last == nil or tonumber(ARGV[2]) > last then
    redis.call('HSET', KEYS[1], 'last_event_at', ARGV[2])
  end
  for i = 1, 4 do
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
local total = tonumber(redis.call('HGET', KEYS[1], 'sessions_total')) or 0
local cached = redis.call('HMGET', KEYS[3], field, field .. '#n')
local blob = cached[1]
local folded = tonumber(cached[2]) or 0
if blob == false then
  folded = 0
end
local missing = total - folded
local held = redis.call('LLEN', KEYS[2])
local history = {}
local approximate = 0
if missing > held then
  -- Older sessions than the bounded history holds were never folded: fold what is left.
  approximate = 1
  history = redis.call('LRANGE', KEYS[2], 0, -1)
elseif missing > 0 then
  history = redis.call('LRANGE', KEYS[2], -missing, -1)
end
return {previous, total, blob, folded, history, approximate}
