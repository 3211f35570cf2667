-- Attribute clicks to lists answered for the user with no session yet (a personalised
-- start-of-session list), which the session's own ingest could not see (user slot, then
-- the session's log shard): find each item's position in the named list and count it.
-- KEYS[1] the user's served lists; ARGV: pairs of (recommendation id, item id)
-- Returns per pair {model@version, position (0: not in the list)} or {'', -1}.
local served = redis.call('LRANGE', KEYS[1], 0, -1)
local found = {}
for i = 1, #ARGV, 2 do
  local result = {'', -1}
  for _, entry in ipairs(served) do
    local fields = {}
    for field in string.gmatch(entry, '[^\t]+') do
      fields[#fields + 1] = field
    end
    if fields[1] == ARGV[i] then
      result = {fields[2], 0}
      for position = 3, #fields do
        if fields[position] == ARGV[i + 1] then
          result = {fields[2], position - 2}
          break
        end
      end
      break
    end
  end
  found[#found + 1] = result
end
return found
