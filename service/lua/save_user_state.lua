-- Compare-and-set a user's cached model state (user slot) on the number of sessions folded.
-- KEYS[1] meta, KEYS[2] state; ARGV[1] field, ARGV[2] blob, ARGV[3] sessions folded,
-- ARGV[4] TTL. Returns 1 if written. Never recreates an erased user.
--#include _write_if_newer
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local folded = tonumber(ARGV[3])
local total = tonumber(redis.call('HGET', KEYS[1], 'sessions_total')) or 0
if folded > total then
  return 0
end
return write_if_newer(KEYS[2], ARGV[1], ARGV[2], folded, tonumber(ARGV[4]))
