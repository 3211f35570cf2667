-- Append one request's events to a session (all keys in the session's hash slot).
--
-- KEYS[1] meta hash, KEYS[2] click list, KEYS[3] state hash, KEYS[4] event-id zset
--   (event id -> time it was accepted: the idempotency record, bounded by age and count)
-- ARGV[1] idle timeout (s)     ARGV[2] session TTL (s)    ARGV[3] max clicks kept
-- ARGV[4] event-id TTL (s)     ARGV[5] state field (model@version)
-- ARGV[6] user id ('' = none)  ARGV[7] '1' = also return the whole click list
-- ARGV[8] now (server clock, s) ARGV[9] max event ids remembered
-- ARGV[10] number of events, then per event: event id ('' = none), timestamp, item id
--
-- Returns {status, gen, user_id, accepted, duplicates, total, started_at, last_event_at,
--          state_blob|false, state_n, unfolded_clicks, all_clicks, new_generation}
-- status: 'ok' | 'rollover' (idle gap: the caller closes the session and retries; nothing
-- was written) | 'conflict' (the session belongs to another user; nothing was written) |
-- 'unfolded' (the closed generation is not yet folded into its user, e.g. its closer died
-- between seal and fold: the caller completes the close and retries; nothing was written).
--#include _cache_view

local idle = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local max_clicks = tonumber(ARGV[3])
local event_ttl = tonumber(ARGV[4])
local field = ARGV[5]
local user = ARGV[6]
local want_all = ARGV[7] == '1'
local now = tonumber(ARGV[8])
local max_ids = tonumber(ARGV[9])
local n_events = tonumber(ARGV[10])

local meta = redis.call('HMGET', KEYS[1], 'gen', 'status', 'user_id', 'last_event_at',
                        'folded')
local exists = meta[1] ~= false
local gen = tonumber(meta[1]) or 0
local status = meta[2] or ''
local meta_user = meta[3] or ''
local last = tonumber(meta[4])

-- 1. Split duplicates (event id accepted within the TTL, or twice in this request) from
-- new events.
local oldest = now - event_ttl
local fresh = {}
local duplicates = 0
local seen = {}
for i = 0, n_events - 1 do
  local base = 11 + i * 3
  local eid = ARGV[base]
  local known = eid ~= '' and (seen[eid] or
                               (tonumber(redis.call('ZSCORE', KEYS[4], eid)) or -1) >= oldest)
  if known then
    duplicates = duplicates + 1
  else
    if eid ~= '' then seen[eid] = true end
    fresh[#fresh + 1] = {eid, ARGV[base + 1], ARGV[base + 2]}
  end
end

-- 2. Decide where the fresh events go before writing anything.
local new_generation = 0
if #fresh > 0 then
  if exists and status == 'open' then
    if user ~= '' and meta_user ~= '' and user ~= meta_user then
      return {'conflict', gen, meta_user}
    end
    if last and tonumber(fresh[1][2]) - last > idle then
      return {'rollover', gen, meta_user}
    end
    if meta_user == '' and user ~= '' then
      redis.call('HSET', KEYS[1], 'user_id', user)
      meta_user = user
    end
  else
    if exists and meta_user ~= '' and meta[5] ~= '1' then
      return {'unfolded', gen, meta_user}
    end
    -- A new session, or a new generation of a closed one: clicks and states restart.
    gen = gen + 1
    new_generation = 1
    redis.call('DEL', KEYS[2], KEYS[3])
    redis.call('HDEL', KEYS[1], 'closed_at', 'folded')
    redis.call('HSET', KEYS[1], 'gen', gen, 'status', 'open', 'user_id', user,
               'started_at', fresh[1][2], 'last_event_at', fresh[1][2], 'total', 0)
    meta_user = user
    last = nil
  end

  -- 3. Append in arrival order; last_event_at is the maximum timestamp seen.
  local newest = last
  local newest_text = nil
  local with_ids = false
  for _, event in ipairs(fresh) do
    if event[1] ~= '' then
      if not with_ids then
        -- Forget ids past their TTL once per request.
        redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. oldest)
        with_ids = true
      end
      -- Keep at most max_ids: drop the oldest before adding, so the set never grows past
      -- the bound (and stays in Redis' compact encoding when max_ids <= 128).
      local excess = redis.call('ZCARD', KEYS[4]) - max_ids + 1
      if excess > 0 then
        redis.call('ZPOPMIN', KEYS[4], excess)
      end
      redis.call('ZADD', KEYS[4], now, event[1])
    end
    redis.call('RPUSH', KEYS[2], event[2] .. '\t' .. event[3])
    local ts = tonumber(event[2])
    if newest == nil or ts > newest then
      newest = ts
      newest_text = event[2]
    end
  end
  redis.call('LTRIM', KEYS[2], -max_clicks, -1)
  redis.call('HINCRBY', KEYS[1], 'total', #fresh)
  if newest_text then
    redis.call('HSET', KEYS[1], 'last_event_at', newest_text)
  end
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
  if with_ids then
    redis.call('EXPIRE', KEYS[4], event_ttl)
  end
end

if not exists and #fresh == 0 then
  return {'ok', 0, '', 0, duplicates, 0, '', '', false, 0, {}, {}, 0}
end

-- 4. What the caller needs to bring the model's cached state up to date.
local info = redis.call('HMGET', KEYS[1], 'total', 'started_at', 'last_event_at')
local total = tonumber(info[1]) or 0
local blob, folded, unfolded, all = cache_view(KEYS[2], KEYS[3], field, total, want_all)
return {'ok', gen, meta_user, #fresh, duplicates, total, info[2] or '', info[3] or '',
        blob, folded, unfolded, all, new_generation}
