"""Lua scripts of the store. Each header is the script's contract.

Every key arrives in KEYS (built by store.RoomKeys, hash-tagged on the room id, so one
room is one cluster slot); values arrive in ARGV. Writes return a status first:
1 done, 0 compare-and-set lost or duplicate, -1 If-Match version mismatch.
"""

from .rows import OWN_ID_LUA

# Shared helpers prepended to the scripts that need them (Lua source only, never values).
_EXPECTED_VERSION = """
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
local function expected_version_differs(expected)
  return expected ~= '' and tonumber(expected) ~= version
end
local function bump(now)
  redis.call('HSET', KEYS[3], 'active_at', now)
  return redis.call('INCR', KEYS[2])
end
"""

READ_ROOM = """#!lua flags=no-writes
-- Read a room's window in one atomic step (a read-only script: it runs during a failover's write pause).
-- KEYS[1] turns list, KEYS[2] version counter, KEYS[3] room meta hash
-- ARGV[1] default window size
-- Returns {version, window size, rebackfill flag (0/1), active_at ms or nil, rows}
local limit = tonumber(redis.call('HGET', KEYS[3], 'limit') or ARGV[1])
return {
  tonumber(redis.call('GET', KEYS[2]) or '0'),
  limit,
  redis.call('HEXISTS', KEYS[3], 'rebackfill'),
  redis.call('HGET', KEYS[3], 'active_at'),
  redis.call('LRANGE', KEYS[1], -limit, -1),
}
"""

APPEND_TURN = (
    _EXPECTED_VERSION
    + OWN_ID_LUA
    + """
-- Append one turn unless a turn with its message id is already in the window.
-- KEYS[1] turns list, KEYS[2] version counter, KEYS[3] room meta hash
-- ARGV[1] encoded row, ARGV[2] the marker as it appears inside an encoded row ('' = no id),
-- ARGV[3] the message id, ARGV[4] default window size, ARGV[5] now (ms),
-- ARGV[6] expected version ('' = any)
-- Returns {1, version, window rows} stored, {0, version, window rows} already there,
-- {-1, version} expected version differs. A duplicate wins over If-Match: it already succeeded.
local limit = tonumber(redis.call('HGET', KEYS[3], 'limit') or ARGV[4])

if ARGV[2] ~= '' then
  local rows = redis.call('LRANGE', KEYS[1], -limit, -1)
  for i = #rows, 1, -1 do
    if string.find(rows[i], ARGV[2], 1, true) and own_id(rows[i]) == ARGV[3] then
      return {0, version, rows}
    end
  end
end
if expected_version_differs(ARGV[6]) then return {-1, version} end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -limit, -1)
return {1, bump(ARGV[5]), redis.call('LRANGE', KEYS[1], 0, -1)}
"""
)

REPLACE_TURN = (
    _EXPECTED_VERSION
    + """
-- Compare-and-set one turn: only if the room is still at the version the caller read
-- and the row is still the one it read (guards against a reaped and refilled room).
-- KEYS[1] turns list, KEYS[2] version counter, KEYS[3] room meta hash
-- ARGV[1] version read, ARGV[2] index of the turn (negative, from the tail),
-- ARGV[3] row read, ARGV[4] new row, ARGV[5] now (ms)
-- Returns {1, new version} or {0, current version}.
if expected_version_differs(ARGV[1]) or redis.call('LINDEX', KEYS[1], ARGV[2]) ~= ARGV[3] then
  return {0, version}
end
redis.call('LSET', KEYS[1], ARGV[2], ARGV[4])
return {1, bump(ARGV[5])}
"""
)

SET_LIMIT = (
    _EXPECTED_VERSION
    + """
-- Set the room's window size; raising it above the effective size asks for a re-backfill.
-- KEYS[1] turns list, KEYS[2] version counter, KEYS[3] room meta hash
-- ARGV[1] new window size, ARGV[2] default window size, ARGV[3] now (ms), ARGV[4] expected version ('' = any)
-- Returns {1, new version, rebackfill flag (0/1)} or {-1, version}.
if expected_version_differs(ARGV[4]) then return {-1, version} end
local limit = tonumber(ARGV[1])
if limit > tonumber(redis.call('HGET', KEYS[3], 'limit') or ARGV[2]) then
  redis.call('HSET', KEYS[3], 'rebackfill', '1')
end
redis.call('HSET', KEYS[3], 'limit', limit)
redis.call('LTRIM', KEYS[1], -limit, -1)
return {1, bump(ARGV[3]), redis.call('HEXISTS', KEYS[3], 'rebackfill')}
"""
)

CLEAR_TURNS = (
    _EXPECTED_VERSION
    + """
-- Wipe the turns; the limit and the version stay (the version still grows).
-- KEYS[1] turns list, KEYS[2] version counter, KEYS[3] room meta hash
-- ARGV[1] now (ms), ARGV[2] expected version ('' = any)
-- Returns {1, new version} or {-1, version}.
if expected_version_differs(ARGV[2]) then return {-1, version} end
redis.call('DEL', KEYS[1])
return {1, bump(ARGV[1])}
"""
)

DISCARD_REBACKFILL = (
    _EXPECTED_VERSION
    + """
-- Drop the room's re-backfill request.
-- KEYS[1] turns list, KEYS[2] version counter, KEYS[3] room meta hash
-- ARGV[1] now (ms), ARGV[2] expected version ('' = any)
-- Returns {1, new version} or {-1, version}.
if expected_version_differs(ARGV[2]) then return {-1, version} end
redis.call('HDEL', KEYS[3], 'rebackfill')
return {1, bump(ARGV[1])}
"""
)

REAP_ROOM = """
-- Remove a room idle since the cutoff; a room written after the reaper picked it survives.
-- KEYS[1] turns list, KEYS[2] version counter, KEYS[3] room meta hash
-- ARGV[1] cutoff (ms): rooms whose last activity is at or before it are removed
-- Returns {1, keys deleted} removed, or {0, active_at} kept.
local active_at = redis.call('HGET', KEYS[3], 'active_at')
if active_at and tonumber(active_at) > tonumber(ARGV[1]) then
  return {0, tonumber(active_at)}
end
return {1, redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])}
"""

UNINDEX_IDLE_ROOM = """
-- Drop a room from the activity index unless a writer touched it after the cutoff.
-- KEYS[1] activity index (sorted set: room id -> last activity ms)
-- ARGV[1] room id, ARGV[2] cutoff (ms)
-- Returns 1 removed, 0 kept.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""
