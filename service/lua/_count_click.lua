-- Shared by ingest.lua and count_clicks.lua (spliced in at the `--#include _count_click`
-- line): one attributed click in a log shard's online experiment counters (summed over the
-- shards by GET /admin/experiments): clicks on the model version's lists, hits,
-- reciprocal ranks and their squares. ``position`` 0 is a click outside the list.
local function count_click(counters_key, model, position)
  redis.call('HINCRBY', counters_key, model .. '|clicks', 1)
  if position > 0 then
    local rr = 1 / position
    redis.call('HINCRBY', counters_key, model .. '|hits', 1)
    redis.call('HINCRBYFLOAT', counters_key, model .. '|rr', rr)
    redis.call('HINCRBYFLOAT', counters_key, model .. '|rr2', rr * rr)
  end
end
