-- Remember a list answered for a session (session slot), so a later click that names its
-- recommendation id is attributed to it (see ingest.lua): the newest ``max`` lists; and
-- count it for its model version's online experiment counters (the session's log shard).
-- KEYS[1] served lists, KEYS[2] the shard's experiment counters;
-- ARGV[1] "<recommendation id>\t<model@version>\t<item>...", ARGV[2] lists kept,
-- ARGV[3] TTL (s), ARGV[4] model@version
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[2], ARGV[4] .. '|lists', 1)
return 1
