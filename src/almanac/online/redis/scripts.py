"""The Lua scripts of the Redis stores, how they are loaded, and the digest that
MERGE_SCRIPT's Python callers must compute exactly as the script does.

Writes are monotonic inside Redis: WRITE_SCRIPT takes many rows per call and, per row,
compares the stored (event time, created time) with the new one before setting the
fields (scripts run atomically, so concurrent writers cannot interleave). MERGE_SCRIPT
is the write half of `merge_batch`'s optimistic read-modify-write: it writes an entity
only if a SHA-1 of its fields (`merge_digest`) still equals the one of what was read.
WATERMARK_SCRIPT keeps a view's watermark from moving back.

Event times are compared with Lua's `tonumber` (doubles): exact up to 2^53 microseconds,
that is until the year 2255.

The scripts' texts and their argument layouts (the comments above each) are one
contract with their callers: `almanac.online.redis.wire.write_payload` and
`almanac.online.redis.writes` build the arguments. Both stores (one node, cluster) load
the write and merge scripts with `load_script_command` and call them by SHA-1 (EVALSHA);
WATERMARK_SCRIPT is sent whole (EVAL), once per watermark.
"""

from __future__ import annotations

import hashlib

from almanac.online.redis.wire import command

# KEYS: one hash per row. ARGV: feature count, event-time field, created-time field,
# expiry seconds (0 for none), the feature fields, then per row the event time and the
# created time (decimal microseconds; empty: none, the oldest) and one value per feature
# (empty: null, the field is deleted). A row is written when its (event time, created
# time) is not older than the stored pair: rule 2's order.
# Redis spends most of a call in `redis.call` and in building tables (measured: 6.6-6.9
# vs 7.6-8.0 us of server time per row before): a row with a created time reads the
# stored one only on an event-time tie, and a row without nulls fills prebuilt HSET
# arguments.
WRITE_SCRIPT = """
local call = redis.call
local nf = tonumber(ARGV[1])
local ts_field = ARGV[2]
local created_field = ARGV[3]
local expire = tonumber(ARGV[4])
local base = 4 + nf
local with_created = {ts_field, false, created_field, false}
local without_created = {ts_field, false}
for j = 1, nf do
  with_created[3 + 2 * j] = ARGV[4 + j]
  without_created[1 + 2 * j] = ARGV[4 + j]
end
local written = 0
for i = 1, #KEYS do
  local key = KEYS[i]
  local at = base + (i - 1) * (nf + 2) + 1
  local ts = ARGV[at]
  local created = ARGV[at + 1]
  local stored, stored_created
  if created == '' then  -- a stored created time must then go: read it now
    local pair = call('HMGET', key, ts_field, created_field)
    stored, stored_created = pair[1], pair[2]
  else
    stored = call('HGET', key, ts_field)
  end
  local newer = not stored
  if not newer then
    local old, new = tonumber(stored), tonumber(ts)
    newer = old < new
    if old == new then
      if created ~= '' then stored_created = call('HGET', key, created_field) end
      newer = (not stored_created) or (created ~= '' and tonumber(created) >= tonumber(stored_created))
    end
  end
  if newer then
    local set, first = with_created, 4
    if created == '' then set, first = without_created, 2 end
    local plain = true
    for j = 1, nf do
      local value = ARGV[at + 1 + j]
      if value == '' then plain = false end
      set[first + 2 * j] = value
    end
    if plain then
      set[2] = ts
      if first == 4 then set[4] = created end
      call('HSET', key, unpack(set))
      if stored_created and created == '' then call('HDEL', key, created_field) end
    else
      local cut = {ts_field, ts}
      local nulls = {}
      if created == '' then
        if stored_created then nulls[1] = created_field end
      else
        cut[3] = created_field
        cut[4] = created
      end
      for j = 1, nf do
        local value = set[first + 2 * j]
        if value == '' then
          nulls[#nulls + 1] = ARGV[4 + j]
        else
          cut[#cut + 1] = ARGV[4 + j]
          cut[#cut + 1] = value
        end
      end
      call('HSET', key, unpack(cut))
      if #nulls > 0 then call('HDEL', key, unpack(nulls)) end
    end
    if expire > 0 then call('EXPIRE', key, expire) end
    written = written + 1
  end
end
return written
"""

# KEYS: one hash per row. ARGV: feature count, event-time field, expiry seconds, the
# feature fields, then per row the digest of the fields as read (`merge_digest`), the event
# time and one value per feature (empty: null). Returns the 0-based rows not written
# because their fields changed since they were read.
MERGE_SCRIPT = """
local nf = tonumber(ARGV[1])
local ts_field = ARGV[2]
local expire = tonumber(ARGV[3])
local fields = {ts_field}
for j = 1, nf do fields[j + 1] = ARGV[3 + j] end
local base = 3 + nf
local conflicts = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local at = base + (i - 1) * (nf + 2)
  local current = redis.call('HMGET', key, unpack(fields))
  local parts = {}
  for j = 1, #current do
    if current[j] then parts[j] = 'v' .. #current[j] .. ':' .. current[j] else parts[j] = '-' end
  end
  if redis.sha1hex(table.concat(parts)) == ARGV[at + 1] then
    local set = {ts_field, ARGV[at + 2]}
    local nulls = {}
    for j = 1, nf do
      local value = ARGV[at + 2 + j]
      if value == '' then
        nulls[#nulls + 1] = fields[j + 1]
      else
        set[#set + 1] = fields[j + 1]
        set[#set + 1] = value
      end
    end
    redis.call('HSET', key, unpack(set))
    if #nulls > 0 then redis.call('HDEL', key, unpack(nulls)) end
    if expire > 0 then redis.call('EXPIRE', key, expire) end
  else
    conflicts[#conflicts + 1] = i - 1
  end
end
return conflicts
"""
# KEYS: the watermarks hash. ARGV: the view, the watermark (decimal µs, or - for none),
# the layout. Under one layout it never moves back; a new layout replaces it.
WATERMARK_SCRIPT = """
local stored = redis.call('HGET', KEYS[1], ARGV[1])
local value = ARGV[2] .. ' ' .. ARGV[3]
if stored then
  local micros, layout = string.match(stored, '^(%S+) (.*)$')
  if layout == ARGV[3] then
    if ARGV[2] == '-' then return 0 end
    if micros ~= '-' and tonumber(micros) >= tonumber(ARGV[2]) then return 0 end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], value)
return 1
"""


def load_script_command(script: str) -> bytes:
    """SCRIPT LOAD of `script`, packed; its reply is the SHA-1 that EVALSHA names."""
    return command(b"SCRIPT", b"LOAD", script.encode())


def script_sha(reply: bytes | str) -> bytes:
    """The SHA-1 of a SCRIPT LOAD reply, as bytes (the clients do not decode replies,
    but a client configured to would give text)."""
    return reply if isinstance(reply, bytes) else reply.encode()


def merge_digest(fields: list[bytes | None]) -> bytes:
    """What MERGE_SCRIPT computes of the fields it finds: length-prefixed, so no two
    different field lists give the same text; absent and empty differ."""
    parts = [b"-" if value is None else b"v%d:%s" % (len(value), value) for value in fields]
    return hashlib.sha1(b"".join(parts)).hexdigest().encode()
