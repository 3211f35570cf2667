-- A user's cached model state and unfolded history, read without writing (user slot).
-- KEYS[1] meta, KEYS[2] history, KEYS[3] state; ARGV[1] state field (model@version).
-- Returns {sessions_total, state_blob|false, state_n, unfolded_history, approximate,
--          exists (1 when the user has a meta record)}
--#include _user_view
local total, blob, folded, history, approximate = user_view(KEYS[1], KEYS[2], KEYS[3],
                                                            ARGV[1])
return {total, blob, folded, history, approximate, redis.call('EXISTS', KEYS[1])}
