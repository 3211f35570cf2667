-- Erase a session's keys, its event-id record included, when it belongs to the given user
-- (session slot). KEYS[1] meta, KEYS[2] clicks, KEYS[3] state, KEYS[4] event ids,
-- KEYS[5] event payloads, KEYS[6] served lists; ARGV[1] user id. Returns 1 if erased.
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return 1
