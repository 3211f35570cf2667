-- Shared by attach_user.lua and read_user.lua (spliced in at the `--#include _user_view`
-- line): a user's cached model state and the past sessions not folded into it yet.
-- Returns sessions_total, blob|false, sessions folded into blob, the unfolded history
-- (JSON item lists, oldest first) and 1 when older sessions than the bounded history
-- holds were never folded (the caller folds what is left).
local function user_view(meta_key, history_key, state_key, field)
  local total = tonumber(redis.call('HGET', meta_key, 'sessions_total')) or 0
  local cached = redis.call('HMGET', state_key, field, field .. '#n')
  local blob = cached[1]
  local folded = tonumber(cached[2]) or 0
  if blob == false then
    folded = 0
  end
  local missing = total - folded
  local held = redis.call('LLEN', history_key)
  local history = {}
  local approximate = 0
  if missing > held then
    approximate = 1
    history = redis.call('LRANGE', history_key, 0, -1)
  elseif missing > 0 then
    history = redis.call('LRANGE', history_key, -missing, -1)
  end
  return total, blob, folded, history, approximate
end
