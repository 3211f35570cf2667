-- Attach a session to its user (user slot), once per session generation, and read what is
-- needed to start the session from the user's model state. Called after ``ingest`` has
-- accepted the session's first click for this user, so a refused click never writes here.
-- Creates the user when it does not exist (a first visit, or a later request after an
-- erasure: that request re-creates the user, as a serial order would).
-- KEYS[1] meta, KEYS[2] history, KEYS[3] closed set, KEYS[4] state, KEYS[5] attached set
-- ARGV[1] session id, ARGV[2] gen, ARGV[3] event timestamp, ARGV[4] state field
-- (model@version), ARGV[5] user TTL (s)
-- Returns {previous_open_session ('' if none), sessions_total, state_blob|false, state_n,
--          unfolded_history (JSON item lists, oldest first), approximate (1 if trimmed)}
--#include _user_view
local sid = ARGV[1]
local ttl = tonumber(ARGV[5])
local previous = redis.call('HGET', KEYS[1], 'open_session') or ''
if previous == sid then
  previous = ''
end
redis.call('HSET', KEYS[1], 'open_session', sid)
local last = tonumber(redis.call('HGET', KEYS[1], 'last_event_at'))
if last == nil or tonumber(ARGV[3]) > last then
  redis.call('HSET', KEYS[1], 'last_event_at', ARGV[3])
end
-- "<sid>#<gen>" -> attach time: the generations the user owns and has not folded yet
redis.call('ZADD', KEYS[5], ARGV[3], sid .. '#' .. ARGV[2])
for i = 1, 5 do
  redis.call('EXPIRE', KEYS[i], ttl)
end
local total, blob, folded, history, approximate = user_view(KEYS[1], KEYS[2], KEYS[4],
                                                            ARGV[4])
return {previous, total, blob, folded, history, approximate}
