-- Read a session for a recommendation without writing (session slot).
-- KEYS[1] meta, KEYS[2] clicks, KEYS[3] state; ARGV[1] state field, ARGV[2] '1' = all clicks.
-- Returns false for an unknown session, else
-- {gen, status, user_id, total, state_blob|false, state_n, unfolded_clicks, all_clicks}.
local meta = redis.call('HMGET', KEYS[1], 'gen', 'status', 'user_id', 'total')
if meta[1] == false then
  return false
end
local field = ARGV[1]
local total = tonumber(meta[4]) or 0
local cached = redis.call('HMGET', KEYS[3], field, field .. '#n')
local blob = cached[1]
local folded = tonumber(cached[2]) or 0
local held = redis.call('LLEN', KEYS[2])
local missing = total - folded
local unfolded
if blob == false or missing > held or missing < 0 then
  blob = false
  folded = 0
  unfolded = redis.call('LRANGE', KEYS[2], 0, -1)
elseif missing == 0 then
  unfolded = {}
else
  unfolded = redis.call('LRANGE', KEYS[2], -missing, -1)
end
local all = {}
if ARGV[2] == '1' then
  all = redis.call('LRANGE', KEYS[2], 0, -1)
end
return {meta[1], meta[2] or '', meta[3] or '', total, blob, folded, unfolded, all}
