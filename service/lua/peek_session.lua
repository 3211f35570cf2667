-- Read a session for a recommendation without writing (session slot).
-- KEYS[1] meta, KEYS[2] clicks, KEYS[3] state; ARGV[1] state field, ARGV[2] '1' = all clicks.
-- Returns false for an unknown session, else
-- {gen, status, user_id, total, state_blob|false, state_n, unfolded_clicks, all_clicks}.
--#include _cache_view

local meta = redis.call('HMGET', KEYS[1], 'gen', 'status', 'user_id', 'total')
if meta[1] == false then
  return false
end
local field = ARGV[1]
local total = tonumber(meta[4]) or 0
local blob, folded, unfolded, all = cache_view(KEYS[2], KEYS[3], field, total,
                                               ARGV[2] == '1')
return {meta[1], meta[2] or '', meta[3] or '', total, blob, folded, unfolded, all}
