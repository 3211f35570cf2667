-- Shared by save_session_state.lua and save_user_state.lua (spliced in at the
-- `--#include _write_if_newer` line): write a cached model state only when it folds more
-- than the stored one, so an older state never overwrites a newer one. Returns 1 if written.
local function write_if_newer(state_key, field, blob, folded, ttl)
  local stored = tonumber(redis.call('HGET', state_key, field .. '#n')) or -1
  if folded <= stored then
    return 0
  end
  redis.call('HSET', state_key, field, blob, field .. '#n', folded)
  redis.call('EXPIRE', state_key, ttl)
  return 1
end
