-- Append one request's events to a session (all keys in the session's hash slot).
--
-- KEYS[1] meta hash, KEYS[2] click list, KEYS[3] state hash,
-- KEYS[4] event-id zset (event id -> time accepted: the idempotency record, bounded by age
--   and count), KEYS[5] event-payload hash (event id -> payload fingerprint, same members),
-- KEYS[6] served lists ("<recommendation id>\t<model@version>\t<item>\t<item>...", newest
--   last: the lists recently answered for this session, for click attribution)
-- KEYS[7] the event-log stream of the session's shard, KEYS[8] that shard's online
--   experiment counters (hash "<model@version>|clicks|hits|rr|rr2")
-- ARGV[1] idle timeout (s)     ARGV[2] session TTL (s)    ARGV[3] max clicks kept
-- ARGV[4] event-id TTL (s)     ARGV[5] state field (model@version)
-- ARGV[6] user id ('' = none)  ARGV[7] '1' = also return the whole click list
-- ARGV[8] now (server clock, s) ARGV[9] max event ids remembered
-- ARGV[10] the generation the caller has attached to its user ('' = none; see 'attach')
-- ARGV[11] event-log length kept per shard ('' = no log), ARGV[12] oldest log entry id
--   kept (ms, '' = no age limit)
-- ARGV[13] number of events, then per event: event id ('' = none), timestamp, item id,
--   payload fingerprint (what must match when the event id is sent again), the
--   recommendation id the item was clicked in ('' = none), event type
--
-- Returns {status, gen, user_id, accepted, duplicates, total, started_at, last_event_at,
--          state_blob|false, state_n, unfolded_clicks, all_clicks, new_generation,
--          attributions}: per accepted event that names a recommendation id,
--          {model@version, position of the item in that list (0: not in it)}, or
--          {'', -1} when the list is not remembered here
-- status, all but 'ok' with nothing written:
--   'ok'
--   'attach'    the events would open a generation (the second field) owned by a user (the
--               third field) that is not yet attached on the user's slot: the caller
--               attaches it there and calls again with ARGV[10] = that generation. So a
--               session's clicks never belong to a user that does not list the session
--               (erasure finds every one), and a refused request writes nothing here.
--   'rollover'  idle gap: the caller closes the session and retries
--   'conflict'  the session belongs to another user (the third field)
--   'unfolded'  the closed generation is not yet folded into its user (its closer died
--               between seal and fold): the caller completes the close and retries
--   'payload_mismatch'  an event id already accepted with another payload (third field)
--#include _cache_view
--#include _served_position
--#include _count_click

local idle = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local max_clicks = tonumber(ARGV[3])
local event_ttl = tonumber(ARGV[4])
local field = ARGV[5]
local user = ARGV[6]
local want_all = ARGV[7] == '1'
local now = tonumber(ARGV[8])
local max_ids = tonumber(ARGV[9])
local attached_gen = tonumber(ARGV[10])
local log_len = tonumber(ARGV[11])
local log_min_id = ARGV[12]
local n_events = tonumber(ARGV[13])

local meta = redis.call('HMGET', KEYS[1], 'gen', 'status', 'user_id', 'last_event_at',
                        'folded', 'attached')
local exists = meta[1] ~= false
local gen = tonumber(meta[1]) or 0
local status = meta[2] or ''
local meta_user = meta[3] or ''
local last = tonumber(meta[4])
local attached = meta[6] == '1'

-- 1. Split duplicates (event id accepted within the TTL, or twice in this request) from
-- new events; an id re-used with another payload refuses the whole request.
local oldest = now - event_ttl
local fresh = {}
local duplicates = 0
local seen = {}
for i = 0, n_events - 1 do
  local base = 14 + i * 6
  local eid = ARGV[base]
  local payload = ARGV[base + 3]
  local known = false
  if eid ~= '' then
    if seen[eid] then
      if seen[eid] ~= payload then
        return {'payload_mismatch', gen, eid}
      end
      known = true
    elseif (tonumber(redis.call('ZSCORE', KEYS[4], eid)) or -1) >= oldest then
      local stored = redis.call('HGET', KEYS[5], eid)
      if stored and stored ~= payload then
        return {'payload_mismatch', gen, eid}
      end
      known = true
    end
  end
  if known then
    duplicates = duplicates + 1
  else
    if eid ~= '' then seen[eid] = payload end
    fresh[#fresh + 1] = {eid, ARGV[base + 1], ARGV[base + 2], payload, ARGV[base + 4],
                         ARGV[base + 5]}
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
    local owner = meta_user ~= '' and meta_user or user
    if owner ~= '' and not attached then
      if attached_gen ~= gen then
        return {'attach', gen, owner}
      end
      redis.call('HSET', KEYS[1], 'user_id', owner, 'attached', '1')
      meta_user = owner
    end
  else
    if exists and meta_user ~= '' and meta[5] ~= '1' then
      return {'unfolded', gen, meta_user}
    end
    if user ~= '' and attached_gen ~= gen + 1 then
      return {'attach', gen + 1, user}
    end
    -- A new session, or a new generation of a closed one: clicks and states restart.
    gen = gen + 1
    new_generation = 1
    redis.call('DEL', KEYS[2], KEYS[3])
    redis.call('HDEL', KEYS[1], 'closed_at', 'folded', 'attached')
    redis.call('HSET', KEYS[1], 'gen', gen, 'status', 'open', 'user_id', user,
               'started_at', fresh[1][2], 'last_event_at', fresh[1][2], 'total', 0)
    if user ~= '' then
      redis.call('HSET', KEYS[1], 'attached', '1')
    end
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
        -- Forget ids past their TTL once per request (and their payloads).
        local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. oldest)
        if #expired > 0 then
          redis.call('ZREM', KEYS[4], unpack(expired))
          redis.call('HDEL', KEYS[5], unpack(expired))
        end
        with_ids = true
      end
      -- Keep at most max_ids: drop the oldest before adding, so the set never grows past
      -- the bound (and stays in Redis' compact encodings when max_ids <= 128).
      local excess = redis.call('ZCARD', KEYS[4]) - max_ids + 1
      if excess > 0 then
        local dropped = redis.call('ZPOPMIN', KEYS[4], excess)
        for j = 1, #dropped, 2 do
          redis.call('HDEL', KEYS[5], dropped[j])
        end
      end
      redis.call('ZADD', KEYS[4], now, event[1])
      redis.call('HSET', KEYS[5], event[1], event[4])
    end
    redis.call('RPUSH', KEYS[2], event[2] .. '\t' .. event[3])
    local ts = tonumber(event[2])
    if newest == nil or ts > newest then
      newest = ts
      newest_text = event[2]
    end
  end
  redis.call('LTRIM', KEYS[2], -max_clicks, -1)
  -- The durable event log: every accepted event, in this same atomic step (session,
  -- user, item, timestamp, type, event id, the model version answering, the list the
  -- item was clicked in).
  if log_len then
    local session_id = string.match(KEYS[1], '^nc:{s:(.*)}:meta$')
    for _, event in ipairs(fresh) do
      redis.call('XADD', KEYS[7], 'MAXLEN', '~', log_len, '*', 's', session_id,
                 'u', meta_user, 'i', event[3], 't', event[2], 'y', event[6],
                 'e', event[1], 'm', field, 'r', event[5])
    end
    if log_min_id ~= '' then
      redis.call('XTRIM', KEYS[7], 'MINID', '~', log_min_id)
    end
  end
  redis.call('HINCRBY', KEYS[1], 'total', #fresh)
  redis.call('HSET', KEYS[1], 'touched_at', ARGV[8])
  if newest_text then
    redis.call('HSET', KEYS[1], 'last_event_at', newest_text)
  end
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
  if with_ids then
    redis.call('EXPIRE', KEYS[4], event_ttl)
    redis.call('EXPIRE', KEYS[5], event_ttl)
  end
end

if not exists and #fresh == 0 then
  return {'ok', 0, '', 0, duplicates, 0, '', '', false, 0, {}, {}, 0, {}}
end

-- 4. Attribution: where each accepted event's item stood in the list it was clicked in.
local attributions = {}
local served = nil
for _, event in ipairs(fresh) do
  if event[5] ~= '' then
    served = served or redis.call('LRANGE', KEYS[6], 0, -1)
    local found = served_position(served, event[5], event[3])
    attributions[#attributions + 1] = found
    if found[2] >= 0 then
      count_click(KEYS[8], found[1], found[2])
    end
  end
end

-- 5. What the caller needs to bring the model's cached state up to date.
local info = redis.call('HMGET', KEYS[1], 'total', 'started_at', 'last_event_at')
local total = tonumber(info[1]) or 0
local blob, folded, unfolded, all = cache_view(KEYS[2], KEYS[3], field, total, want_all)
return {'ok', gen, meta_user, #fresh, duplicates, total, info[2] or '', info[3] or '',
        blob, folded, unfolded, all, new_generation, attributions}
