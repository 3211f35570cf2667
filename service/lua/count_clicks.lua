-- Count attributed clicks in a log shard's online experiment counters (see ingest.lua).
-- KEYS[1] experiment counters; ARGV: pairs of (model@version, position; 0 = a miss)
for i = 1, #ARGV, 2 do
  local model = ARGV[i]
  local position = tonumber(ARGV[i + 1])
  redis.call('HINCRBY', KEYS[1], model .. '|clicks', 1)
  if position > 0 then
    local rr = 1 / position
    redis.call('HINCRBY', KEYS[1], model .. '|hits', 1)
    redis.call('HINCRBYFLOAT', KEYS[1], model .. '|rr', rr)
    redis.call('HINCRBYFLOAT', KEYS[1], model .. '|rr2', rr * rr)
  end
end
return 1
