"""Lua scripts of the store. Each header is the script's contract.

Every key arrives in KEYS (built by store.RoomKeys, hash-tagged on the room id, so one room is one cluster
slot); values arrive in ARGV. Scripts decide and change; they never carry the window back (copying a list
through Lua costs several times a plain LRANGE): the store reads the window with LRANGE in the same
MULTI/EXEC transaction. Writes reply {status, version, window size, index touch due (0/1), ...}:
status 1 done, 0 nothing to do (compare-and-set lost, duplicate), -1 If-Match version mismatch,
-2 the named turn is not in the window.
"""

from .rows import OWN_ID_LUA

# Shared by the room scripts (Lua source only, never values). KEYS[1] turns list, KEYS[2] version counter,
# KEYS[3] room meta hash, KEYS[4] dedupe index (hash: dedupe key -> rows holding it; field '' marks it built).
_ROOM = (
    OWN_ID_LUA
    + """
local version = tonumber(redis.call('GET', KEYS[2]) or '0')

local function window_size(default)
  return tonumber(redis.call('HGET', KEYS[3], 'limit') or default)
end

local function expected_version_differs(expected)
  return expected ~= '' and tonumber(expected) ~= version
end

-- The activity index lives in another slot, so the store updates it outside the script: at most once per
-- refresh interval per room (the reaper trusts the room's own clock, the index is only where it looks). The
-- store forgets `indexed_at` when its update failed or the write's reply was lost, so the next write (or the
-- client's retry, a duplicate) asks for the update again.
local function touch_due(now, refresh_ms)
  now = tonumber(now)
  if now - tonumber(redis.call('HGET', KEYS[3], 'indexed_at') or '0') >= tonumber(refresh_ms) then
    redis.call('HSET', KEYS[3], 'indexed_at', now)
    return 1
  end
  return 0
end

local function bump(now, refresh_ms)
  local touch = touch_due(now, refresh_ms)
  redis.call('HSET', KEYS[3], 'active_at', now)
  return redis.call('INCR', KEYS[2]), touch
end

local function index_row(row, delta)
  for _, key in ipairs(indexed_keys(row)) do
    if redis.call('HINCRBY', KEYS[4], key, delta) <= 0 then redis.call('HDEL', KEYS[4], key) end
  end
end

-- Rooms written before the index existed, or by another writer, get it built once, on a write.
local function ensure_index()
  if redis.call('EXISTS', KEYS[4]) == 0 then
    for _, row in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do index_row(row, 1) end
    redis.call('HSET', KEYS[4], '', '1')
  end
end

-- Whether a key belongs to a turn of the window: the saved index less the rows beyond the window (a list
-- left longer when the default size was lowered), or for a room without the index the window's rows, read
-- without saving anything (a request that fails changes nothing).
local function window_lookup(size)
  local excess = redis.call('LLEN', KEYS[1]) - size
  if redis.call('EXISTS', KEYS[4]) == 0 then
    local present = {}
    for _, row in ipairs(redis.call('LRANGE', KEYS[1], math.max(excess, 0), -1)) do
      for _, key in ipairs(indexed_keys(row)) do present[key] = true end
    end
    return function(key) return present[key] == true end
  end
  local beyond = {}
  if excess > 0 then
    for _, row in ipairs(redis.call('LRANGE', KEYS[1], 0, excess - 1)) do
      for _, key in ipairs(indexed_keys(row)) do beyond[key] = (beyond[key] or 0) + 1 end
    end
  end
  return function(key)
    return tonumber(redis.call('HGET', KEYS[4], key) or '0') > (beyond[key] or 0)
  end
end

local function any_in(lookup, keys_of_turn)
  for _, key in ipairs(keys_of_turn) do
    if lookup(key) then return true end
  end
  return false
end

-- Drop the oldest rows beyond the window size; returns how many went.
local function trim_to(size)
  local excess = redis.call('LLEN', KEYS[1]) - size
  if excess <= 0 then return 0 end
  for _, row in ipairs(redis.call('LRANGE', KEYS[1], 0, excess - 1)) do index_row(row, -1) end
  redis.call('LTRIM', KEYS[1], excess, -1)
  return excess
end
"""
)

READ_ROOM_IF_CHANGED = """#!lua flags=no-writes
-- A conditional read: only the version when the caller's copy is current (a 304 transfers no turns).
-- KEYS[1] turns list, KEYS[2] version counter, KEYS[3] room meta hash
-- ARGV[1] the caller's version, ARGV[2] how many rows to read at most
-- Returns {version} when unchanged, else {version, limit, rebackfill, active_at, summary, rows}
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
if version == tonumber(ARGV[1]) then return {version} end
local meta = redis.call('HMGET', KEYS[3], 'limit', 'rebackfill', 'active_at', 'summary')
return {version, meta[1], meta[2], meta[3], meta[4], redis.call('LRANGE', KEYS[1], -tonumber(ARGV[2]), -1)}
"""

APPEND_TURN = (
    _ROOM
    + """
-- Append one turn unless a turn sharing one of its dedupe keys is already in the window.
-- ARGV[1] encoded row, ARGV[2] default window size, ARGV[3] now (ms), ARGV[4] index refresh (ms),
-- ARGV[5] expected version ('' = any), ARGV[6..] the row's dedupe keys
-- Returns {1, version, size, touch} stored, {0, version, size, touch} already there, {-1, version} If-Match
-- differs. A duplicate wins over If-Match: the first attempt succeeded.
local size = window_size(ARGV[2])
if any_in(window_lookup(size), {unpack(ARGV, 6)}) then return {0, version, size, touch_due(ARGV[3], ARGV[4])} end
if expected_version_differs(ARGV[5]) then return {-1, version} end
ensure_index()
redis.call('RPUSH', KEYS[1], ARGV[1])
index_row(ARGV[1], 1)
trim_to(size)
local new_version, touch = bump(ARGV[3], ARGV[4])
return {1, new_version, size, touch}
"""
)

APPEND_BATCH = (
    _ROOM
    + """
-- Store a batch of turns in one step: duplicates (against the window and within the batch) skipped,
-- then appended at the end, or inserted before the oldest turn ('start'); trimmed to the window size.
-- ARGV[1] default window size, ARGV[2] now (ms), ARGV[3] index refresh (ms), ARGV[4] expected version
-- ('' = any), ARGV[5] 'end' or 'start', ARGV[6] number of turns, then per turn: row, n, n dedupe keys
-- Returns {1, version, size, touch, stored, duplicates, dropped}; {0, version, size, 0, 0, duplicates,
-- dropped} when nothing is stored (the room is left as it was: all duplicates, or no room at the start);
-- {-1, version} If-Match differs.
local size = window_size(ARGV[1])
local in_window = window_lookup(size)
local fresh, seen, duplicates, at = {}, {}, 0, 7
for _ = 1, tonumber(ARGV[6]) do
  local row, count = ARGV[at], tonumber(ARGV[at + 1])
  local keys_of_turn = {unpack(ARGV, at + 2, at + 1 + count)}
  at = at + 2 + count
  local duplicate = any_in(in_window, keys_of_turn)
  for _, key in ipairs(keys_of_turn) do
    if seen[key] then duplicate = true end
  end
  if duplicate then
    duplicates = duplicates + 1
  else
    for _, key in ipairs(indexed_keys(row)) do seen[key] = true end
    fresh[#fresh + 1] = row
  end
end
-- A batch of duplicates only is a retry of one that succeeded: like a single append, it wins over If-Match.
if #fresh == 0 then return {0, version, size, touch_due(ARGV[2], ARGV[3]), 0, duplicates, 0} end
if expected_version_differs(ARGV[4]) then return {-1, version} end
-- Which fresh turns fit: at the end the newest `size` of them; at the start, the room left in the window.
local room = size
if ARGV[5] == 'start' then room = math.max(0, size - redis.call('LLEN', KEYS[1])) end
local first = math.max(1, #fresh - room + 1)
local dropped = first - 1
if first > #fresh then return {0, version, size, 0, 0, duplicates, dropped} end
ensure_index()
if ARGV[5] == 'start' then
  for i = #fresh, first, -1 do redis.call('LPUSH', KEYS[1], fresh[i]) end
else
  for i = first, #fresh do redis.call('RPUSH', KEYS[1], fresh[i]) end
end
for i = first, #fresh do index_row(fresh[i], 1) end
if ARGV[5] == 'start' then
  -- only an over-long window (its size lowered by the operator) has more to drop, from the oldest side
  local excess = redis.call('LLEN', KEYS[1]) - size
  if excess > 0 then
    for _, row in ipairs(redis.call('LRANGE', KEYS[1], 0, excess - 1)) do index_row(row, -1) end
    redis.call('LTRIM', KEYS[1], excess, -1)
  end
else
  trim_to(size)
end
local new_version, touch = bump(ARGV[2], ARGV[3])
return {1, new_version, size, touch, #fresh - dropped, duplicates, dropped}
"""
)

REPLACE_TURN = (
    _ROOM
    + """
-- Compare-and-set one turn: only if the room is still at the version the caller read
-- and the row is still the one it read (guards against a reaped and refilled room).
-- ARGV[1] version read, ARGV[2] index of the turn (negative, from the tail), ARGV[3] row read,
-- ARGV[4] new row, ARGV[5] now (ms), ARGV[6] index refresh (ms), ARGV[7] default window size
-- Returns {1, new version, size, touch} or {0, current version, size, 0}.
local size = window_size(ARGV[7])
if expected_version_differs(ARGV[1]) or redis.call('LINDEX', KEYS[1], ARGV[2]) ~= ARGV[3] then
  return {0, version, size, 0}
end
redis.call('LSET', KEYS[1], ARGV[2], ARGV[4])
if redis.call('EXISTS', KEYS[4]) == 1 then  -- an index not built yet is built from the rows as they are
  index_row(ARGV[3], -1)
  index_row(ARGV[4], 1)
end
local new_version, touch = bump(ARGV[5], ARGV[6])
return {1, new_version, size, touch}
"""
)

COMPACT = (
    _ROOM
    + """
-- Replace the turns up to and including the one named by `through` with a summary. The turn's identity is
-- checked, not the room version, so turns appended while the summary was being written are kept.
-- ARGV[1] through message id, ARGV[2] its marker as it appears inside an encoded row, ARGV[3] summary,
-- ARGV[4] now (ms), ARGV[5] index refresh (ms), ARGV[6] expected version ('' = any), ARGV[7] default size
-- Returns {1, version, size, touch, turns removed}, {-1, version} If-Match differs, {-2, version, size, 0}
-- not found.
local size = window_size(ARGV[7])
if expected_version_differs(ARGV[6]) then return {-1, version} end
local rows = redis.call('LRANGE', KEYS[1], -size, -1)
local through = nil
for i = #rows, 1, -1 do
  if string.find(rows[i], ARGV[2], 1, true) and own_id(rows[i]) == ARGV[1] then
    through = i
    break
  end
end
if not through then return {-2, version, size, 0} end
local removed = through + math.max(0, redis.call('LLEN', KEYS[1]) - #rows)  -- rows beyond the window go too
if redis.call('EXISTS', KEYS[4]) == 1 then
  for _, row in ipairs(redis.call('LRANGE', KEYS[1], 0, removed - 1)) do index_row(row, -1) end
end
redis.call('LTRIM', KEYS[1], removed, -1)
redis.call('HSET', KEYS[3], 'summary', ARGV[3])
local new_version, touch = bump(ARGV[4], ARGV[5])
return {1, new_version, size, touch, removed}
"""
)

SET_LIMIT = (
    _ROOM
    + """
-- Set the room's window size; raising it above the effective size asks for a re-backfill.
-- ARGV[1] new window size, ARGV[2] default window size, ARGV[3] now (ms), ARGV[4] index refresh (ms),
-- ARGV[5] expected version ('' = any)
-- Returns {1, new version, size, touch, rebackfill flag (0/1)} or {-1, version}.
if expected_version_differs(ARGV[5]) then return {-1, version} end
local size = tonumber(ARGV[1])
if size > window_size(ARGV[2]) then
  redis.call('HSET', KEYS[3], 'rebackfill', '1')
end
redis.call('HSET', KEYS[3], 'limit', size)
if redis.call('EXISTS', KEYS[4]) == 1 then
  trim_to(size)
else
  redis.call('LTRIM', KEYS[1], -size, -1)
end
local new_version, touch = bump(ARGV[3], ARGV[4])
return {1, new_version, size, touch, redis.call('HEXISTS', KEYS[3], 'rebackfill')}
"""
)

CLEAR_TURNS = (
    _ROOM
    + """
-- Wipe the turns, their index and the summary; the limit and the version stay (the version still grows).
-- ARGV[1] now (ms), ARGV[2] index refresh (ms), ARGV[3] expected version ('' = any), ARGV[4] default size
-- Returns {1, new version, size, touch} or {-1, version}.
if expected_version_differs(ARGV[3]) then return {-1, version} end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('HDEL', KEYS[3], 'summary')
local new_version, touch = bump(ARGV[1], ARGV[2])
return {1, new_version, window_size(ARGV[4]), touch}
"""
)

DISCARD_REBACKFILL = (
    _ROOM
    + """
-- Drop the room's re-backfill request.
-- ARGV[1] now (ms), ARGV[2] index refresh (ms), ARGV[3] expected version ('' = any), ARGV[4] default size
-- Returns {1, new version, size, touch} or {-1, version}.
if expected_version_differs(ARGV[3]) then return {-1, version} end
redis.call('HDEL', KEYS[3], 'rebackfill')
local new_version, touch = bump(ARGV[1], ARGV[2])
return {1, new_version, window_size(ARGV[4]), touch}
"""
)

REAP_ROOM = """
-- Remove a room idle since the cutoff; a room written after the reaper picked it survives.
-- KEYS[1] turns list, KEYS[2] version counter, KEYS[3] room meta hash, KEYS[4] dedupe index
-- ARGV[1] cutoff (ms): rooms whose last activity is at or before it are removed
-- Returns {1, keys deleted} removed, or {0, active_at} kept.
local active_at = redis.call('HGET', KEYS[3], 'active_at')
if active_at and tonumber(active_at) > tonumber(ARGV[1]) then
  return {0, tonumber(active_at)}
end
return {1, redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])}
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
