-- Shared by ingest.lua and peek_session.lua (spliced in by service.store.Script at the
-- `--#include _cache_view` line): what a model's cached session state has not folded yet.
-- Returns blob|false, clicks folded into it, the clicks after them, and (want_all) every
-- held click.
local function cache_view(clicks_key, state_key, field, total, want_all)
  local cached = redis.call('HMGET', state_key, field, field .. '#n')
  local blob = cached[1]
  local folded = tonumber(cached[2]) or 0
  local held = redis.call('LLEN', clicks_key)
  local missing = total - folded
  local unfolded
  if blob == false or missing > held or missing < 0 then
    -- No usable cache (new model version, or more clicks missed than the list holds):
    -- the caller rebuilds from the clicks the list still holds.
    blob = false
    folded = 0
    unfolded = redis.call('LRANGE', clicks_key, 0, -1)
  elseif missing == 0 then
    unfolded = {}
  else
    unfolded = redis.call('LRANGE', clicks_key, -missing, -1)
  end
  local all = {}
  if want_all then
    all = redis.call('LRANGE', clicks_key, 0, -1)
  end
  return blob, folded, unfolded, all
end
