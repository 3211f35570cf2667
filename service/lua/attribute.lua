-- Attribute clicks to lists answered for the user with no session yet (a personalised
-- start-of-session list), which the session's own ingest could not see (user slot; the
-- caller counts the found ones in the session's log shard with count_clicks.lua).
-- KEYS[1] the user's served lists; ARGV: pairs of (recommendation id, item id)
-- Returns per pair {model@version, position (0: not in the list)} or {'', -1}.
--#include _served_position
local served = redis.call('LRANGE', KEYS[1], 0, -1)
local found = {}
for i = 1, #ARGV, 2 do
  found[#found + 1] = served_position(served, ARGV[i], ARGV[i + 1])
end
return found
