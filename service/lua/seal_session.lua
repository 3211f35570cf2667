-- Close a session generation on the session slot and return its clicks, atomically, so a
-- click racing with the close either lands before it (and is returned) or starts the next
-- generation. Idempotent: sealing a closed generation returns it again.
-- KEYS[1] meta, KEYS[2] clicks
-- ARGV[1] expected gen ('' = current), ARGV[2] expected user ('' = any), ARGV[3] now,
-- ARGV[4] idle cutoff ('' = none): the sweeper closes an open session only when it has had
-- no click since this server time.
-- Returns false (unknown), {'stale'} (that generation is gone), {'foreign'} (other user),
-- {'active', touched_at} (not idle since the cutoff; nothing written), or
-- {'ok', gen, status_before, user_id, started_at, last_event_at, total, clicks, folded}.
local meta = redis.call('HMGET', KEYS[1], 'gen', 'status', 'user_id', 'started_at',
                        'last_event_at', 'total', 'folded', 'touched_at')
if meta[1] == false then
  return false
end
if ARGV[1] ~= '' and meta[1] ~= ARGV[1] then
  return {'stale'}
end
local user = meta[3] or ''
if ARGV[2] ~= '' and user ~= ARGV[2] then
  return {'foreign'}
end
local before = meta[2] or ''
if before == 'open' then
  if ARGV[4] ~= '' and (tonumber(meta[8]) or 0) > tonumber(ARGV[4]) then
    return {'active', meta[8]}
  end
  redis.call('HSET', KEYS[1], 'status', 'closed', 'closed_at', ARGV[3])
end
return {'ok', meta[1], before, user, meta[4] or '', meta[5] or '', meta[6] or '0',
        redis.call('LRANGE', KEYS[2], 0, -1), meta[7] or '0'}
