-- Shared by ingest.lua and attribute.lua (spliced in at the `--#include _served_position`
-- line): where an item stood in a remembered list. ``served`` holds entries
-- "<recommendation id>\t<model@version>\t<item>\t<item>..."; returns {model@version,
-- position (1-based; 0: not in the list)}, or {'', -1} when no entry has that id.
local function served_position(served, recommendation_id, item)
  for _, entry in ipairs(served) do
    local fields = {}
    for field in string.gmatch(entry, '[^\t]+') do
      fields[#fields + 1] = field
    end
    if fields[1] == recommendation_id then
      for position = 3, #fields do
        if fields[position] == item then
          return {fields[2], position - 2}
        end
      end
      return {fields[2], 0}
    end
  end
  return {'', -1}
end
