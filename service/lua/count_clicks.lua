-- Count attributed clicks in a log shard's online experiment counters (see ingest.lua).
-- KEYS[1] experiment counters; ARGV: pairs of (model@version, position; 0 = a miss)
--#include _count_click
for i = 1, #ARGV, 2 do
  count_click(KEYS[1], ARGV[i], tonumber(ARGV[i + 1]))
end
return 1
