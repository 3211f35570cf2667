-- Erase a user's keys in one atomic step on the user slot and return the sessions it
-- owns (its open session, the generations attached and not folded, the closed ones
-- remembered), so the caller deletes each of them on its own slot. A click that attaches
-- a session to this user runs either before this script (its session is returned) or
-- after it (it creates the user anew, as a later request would).
-- KEYS[1] meta, KEYS[2] history, KEYS[3] closed set, KEYS[4] state, KEYS[5] attached set,
-- KEYS[6] lists answered for the user
-- Returns a list of session ids (may repeat).
local sessions = {}
local open = redis.call('HGET', KEYS[1], 'open_session')
if open then
  sessions[#sessions + 1] = open
end
for _, key in ipairs({KEYS[3], KEYS[5]}) do
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    sessions[#sessions + 1] = string.match(member, '^(.*)#[0-9]+$') or member
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return sessions
