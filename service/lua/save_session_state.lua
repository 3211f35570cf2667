-- Compare-and-set a session's cached model state (session slot): written only while the
-- generation is the one it was computed for and when it folds more clicks than the stored
-- one, so concurrent requests never overwrite a newer state with an older one.
-- KEYS[1] meta, KEYS[2] state; ARGV[1] field, ARGV[2] blob, ARGV[3] clicks folded,
-- ARGV[4] gen, ARGV[5] TTL. Returns 1 if written.
--#include _write_if_newer
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[4] then
  return 0
end
return write_if_newer(KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5]))
