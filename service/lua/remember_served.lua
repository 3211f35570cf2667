-- Remember a list answered for a session (session slot), so a later click that names its
-- recommendation id is attributed to it (see ingest.lua): the newest ``max`` lists.
-- KEYS[1] served lists; ARGV[1] "<recommendation id>\t<model@version>\t<item>...",
-- ARGV[2] lists kept, ARGV[3] TTL (s)
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
