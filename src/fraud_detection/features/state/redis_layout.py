"""How the Redis store lays out an entity's state, and the Lua scripts that read and write it.

An entity is one hash: ``fine`` and ``coarse`` (its minute and hour tiles, below), ``since``, ``newest`` and ``_p``
(records since it was created, for pruning) as decimal integers. A terminal has no ``fine`` tiles.

A tile series is one binary field: the entity's tiles sorted by index, one fixed-size little-endian record each,
holding the tile's index and the *running sums* of the counters through that tile (the layout of the embedded
store's ``TileSeries``). A customer record is ``<iidd`` (index, then n, s, q summed: 24 bytes), a terminal's
``<idd`` (index, n, f: 20 bytes). A window's sums are then two binary searches and one subtraction per series,
whatever the window holds: the scoring script reads two fields per entity (``HMGET``) instead of scanning every tile
of the hash, which was most of its time. Recording an event in the newest tile rewrites one record; an out-of-order
event (or a label, on a terminal's older tile) rewrites the records after its tile. Pruning drops the records
behind the horizons and subtracts the last dropped running sums from the rest, so the sums cover the kept tiles
only (about 31 days of a customer): Lua numbers are doubles, exact to 2**53. A customer's running count is an
int32 (no card makes 2**31 transactions in a month); a terminal's counts are doubles, as a busy merchant's terminal
may record hundreds of transactions a second.

Each script reads every hash it needs before its first write, works on them in memory and writes each changed one
once at the end, so a call that fails (a refused hash, a bad value) writes nothing; Redis at ``maxmemory`` refuses a
script's writes only before its first one (``scriptVerifyOOM`` in Redis's script.c, ``luaRedisGenericCommand`` in
6.x's scripting.c), so that too leaves nothing half-written.

A store written by an earlier version (a field per tile, ``F<minute>``/``H<hour>``, or text tiles
``f<minute>``/``h<hour>``) is refused with an error naming the fix, never misread.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from functools import lru_cache

from fraud_detection.features.definitions import MINUTE
from fraud_detection.features.online import tile_field, tile_fields, tile_ranges

#: Record of a customer tile: index, running n, s, q.
CUSTOMER_RECORD_FORMAT = "<iidd"
#: Record of a terminal tile: index, running n, f.
TERMINAL_RECORD_FORMAT = "<idd"
FORMATS = {3: CUSTOMER_RECORD_FORMAT, 2: TERMINAL_RECORD_FORMAT}
#: Hash field of the minute tiles and of the hour tiles.
FINE_FIELD, COARSE_FIELD = "fine", "coarse"

_COMMON = f"""
local sunpack, spack, floor, concat, byte = struct.unpack, struct.pack, math.floor, table.concat, string.byte
local FORMAT = {{[3] = '{CUSTOMER_RECORD_FORMAT}', [2] = '{TERMINAL_RECORD_FORMAT}'}}
local SIZE = {{[3] = {struct.calcsize(CUSTOMER_RECORD_FORMAT)}, [2] = {struct.calcsize(TERMINAL_RECORD_FORMAT)}}}

-- Refuse a hash of an earlier version: it has a newest event but no `coarse` series (which every hash written by this
-- layout has, if only empty).
local function check_layout(key, coarse, newest)
  if coarse or not newest then return end
  error({{err = 'online store: ' .. key .. ' holds tiles in the layout of an earlier version (a field per tile): '
    .. 'delete the store keys and run `fraud online materialize` again'}})
end

-- The tile index of record j (0-based): its first four bytes, a little-endian int32.
local function index_at(blob, size, j)
  local b1, b2, b3, b4 = byte(blob, j * size + 1, j * size + 4)
  local v = b1 + 256 * b2 + 65536 * b3 + 16777216 * b4
  if b4 >= 128 then return v - 4294967296 end
  return v
end

-- Records of a series whose tile index is below `bound`: a binary search, after checking both ends (a window's end
-- is usually past the newest tile, a long window's start before the oldest kept).
local function below(blob, size, bound)
  local n = #blob / size
  if n == 0 or index_at(blob, size, 0) >= bound then return 0 end
  if index_at(blob, size, n - 1) < bound then return n end
  local lo, hi = 1, n - 1
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    if index_at(blob, size, mid) < bound then lo = mid + 1 else hi = mid end
  end
  return lo
end

-- Record j (0-based): the tile index and its running sums (the third 0 for a terminal).
local function record(blob, width, j)
  if width == 3 then
    local t, a, b, c = sunpack(FORMAT[3], blob, j * SIZE[3] + 1)
    return t, a, b, c
  end
  local t, a, b = sunpack(FORMAT[2], blob, j * SIZE[2] + 1)
  return t, a, b, 0
end

local function pack(width, t, a, b, c)
  if width == 3 then return spack(FORMAT[3], t, a, b, c) end
  return spack(FORMAT[2], t, a, b)
end

-- The running sums through the first k records.
local function through(blob, width, k)
  if k == 0 then return 0, 0, 0 end
  local _, a, b, c = record(blob, width, k - 1)
  return a, b, c
end

-- The series with (i1, i2, i3) added to tile `idx` (created when absent): the running sums from it on grow.
local function added(blob, width, idx, i1, i2, i3)
  local size = SIZE[width]
  local count = #blob / size
  local k = below(blob, size, idx)
  local parts = {{string.sub(blob, 1, k * size)}}
  if k == count or index_at(blob, size, k) ~= idx then
    local a, b, c = through(blob, width, k)
    parts[2] = pack(width, idx, a + i1, b + i2, c + i3)
  end
  for j = k, count - 1 do
    local t, a, b, c = record(blob, width, j)
    parts[#parts + 1] = pack(width, t, a + i1, b + i2, c + i3)
  end
  return concat(parts)
end

-- The series without its tiles below index `first`, the running sums rebased on what is kept.
local function pruned(blob, width, first)
  local k = below(blob, SIZE[width], first)
  if k == 0 then return blob end
  local a0, b0, c0 = through(blob, width, k)
  local parts = {{}}
  for j = k, #blob / SIZE[width] - 1 do
    local t, a, b, c = record(blob, width, j)
    parts[#parts + 1] = pack(width, t, a - a0, b - b0, c - c0)
  end
  return concat(parts)
end
"""

# Window sums of one entity (the Lua twin of features.online.window_sums): `lims` are the row's tile ranges (four
# per window, from features.online.tile_ranges), `first` its first window, `nwin` how many. Appends the sums to
# `out`.
_SUMS = """
local function sums(fine, coarse, width, lims, first, nwin, out)
  local size = SIZE[width]
  local memo = {{}, {}}  -- per series, bound -> the running sums through the records below it (windows share bounds)
  local function upto(blob, s, bound)
    local m = memo[s][bound]
    if not m then
      m = {through(blob, width, below(blob, size, bound))}
      memo[s][bound] = m
    end
    return m
  end
  for w = 0, nwin - 1 do
    local r = 4 * (first + w)
    local x, y, z = 0, 0, 0
    local lo, hi = lims[r + 1], lims[r + 2]
    if lo < hi and fine ~= '' then
      local p, q = upto(fine, 1, hi), upto(fine, 1, lo)
      x, y, z = p[1] - q[1], p[2] - q[2], p[3] - q[3]
    end
    lo, hi = lims[r + 3], lims[r + 4]
    if lo < hi and coarse ~= '' then
      local p, q = upto(coarse, 2, hi), upto(coarse, 2, lo)
      x, y, z = x + (p[1] - q[1]), y + (p[2] - q[2]), z + (p[3] - q[3])
    end
    out[#out + 1] = x
    out[#out + 1] = y
    if width == 3 then out[#out + 1] = z end
  end
end

-- The entities a call touches, read once (in the order first met) and written back once at the end: HMGET's answer
-- itself, {fine, coarse, since, newest, records}, with [6] set once changed and [7] for a customer.
local FINE, COARSE, SINCE, NEWEST, RECORDS, DIRTY, CUSTOMER = 1, 2, 3, 4, 5, 6, 7
local ents, order = {}, {}
local function entity(key)
  local e = ents[key]
  if not e then
    local h = redis.call('HMGET', key, 'fine', 'coarse', 'since', 'newest', '_p')
    check_layout(key, h[2], h[4])
    h[1], h[2], h[5] = h[1] or '', h[2] or '', tonumber(h[5]) or 0
    e = h
    ents[key] = e
    order[#order + 1] = key
  end
  return e
end
"""

#: KEYS: per row customer, terminal, transaction. ARGV: 1 rows, 2 prune_every, 3 ttl, 4-7 customer tiles,
#: 8-9 terminal coarse tiles, 10 customer windows, 11 terminal windows; then per row: seconds, minute, hour, cents,
#: cents^2, since ('' for none), record, and the tile ranges packed (:func:`packed_ranges`: four int32 per window,
#: customer windows first).
#: Answers per row: seen, the relationship start before it (at most its time), then the window aggregates.
SCORE = (
    _COMMON
    + _SUMS
    + """
local rows = tonumber(ARGV[1])
local prune_every = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local fine_s, fine_h, coarse_s, coarse_h = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local tcoarse_s, tcoarse_h = tonumber(ARGV[8]), tonumber(ARGV[9])
local cwin, twin = tonumber(ARGV[10]), tonumber(ARGV[11])
local stride = 8
local RANGES = '<' .. string.rep('i', 4 * (cwin + twin))
local out = {}
-- Read every entity first: a hash that cannot be read fails the call before anything is written.
for i = 0, rows - 1 do
  entity(KEYS[3 * i + 1])[CUSTOMER] = true
  entity(KEYS[3 * i + 2])
end
local recorded, records = {}, {}
for i = 0, rows - 1 do
  local ck, tk, xk = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local a = 11 + stride * i
  local secs, minute, hour = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local cents, square, given, rec = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), ARGV[a + 6], ARGV[a + 7]
  local lims = {sunpack(RANGES, ARGV[a + 8])}
  local seen = (recorded[xk] and 1) or redis.call('EXISTS', xk)
  out[#out + 1] = seen
  local slot = #out + 1
  out[slot] = 0
  local c, term = ents[ck], ents[tk]
  sums(c[FINE], c[COARSE], 3, lims, 0, cwin, out)
  sums('', term[COARSE], 2, lims, cwin, twin, out)
  local t = tonumber(secs)
  if c[SINCE] and tonumber(c[SINCE]) < t then out[slot] = tonumber(c[SINCE]) else out[slot] = t end
  if seen == 0 then
    recorded[xk] = true
    records[#records + 1] = xk
    records[#records + 1] = rec
    if given ~= '' then
      c[SINCE] = given
    elseif (not c[SINCE]) or tonumber(c[SINCE]) > t then
      c[SINCE] = secs
    end
    if (not c[NEWEST]) or tonumber(c[NEWEST]) < t then c[NEWEST] = secs end
    if (not term[NEWEST]) or tonumber(term[NEWEST]) < t then term[NEWEST] = secs end
    c[FINE] = added(c[FINE], 3, minute, 1, cents, square)
    c[COARSE] = added(c[COARSE], 3, hour, 1, cents, square)
    term[COARSE] = added(term[COARSE], 2, hour, 1, 0, 0)
    c[RECORDS], term[RECORDS] = c[RECORDS] + 1, term[RECORDS] + 1
    if c[RECORDS] % prune_every == 0 then
      c[FINE] = pruned(c[FINE], 3, floor((tonumber(c[NEWEST]) - fine_h) / fine_s))
      c[COARSE] = pruned(c[COARSE], 3, floor((tonumber(c[NEWEST]) - coarse_h) / coarse_s))
    end
    if term[RECORDS] % prune_every == 0 then
      term[COARSE] = pruned(term[COARSE], 2, floor((tonumber(term[NEWEST]) - tcoarse_h) / tcoarse_s))
    end
    c[DIRTY], term[DIRTY] = true, true
  end
end
-- Then write: every recorded transaction, every changed entity once.
for j = 1, #records, 2 do redis.call('SET', records[j], records[j + 1], 'EX', ttl) end
for _, key in ipairs(order) do
  local e = ents[key]
  if e[DIRTY] then
    if e[CUSTOMER] then
      redis.call('HSET', key, 'fine', e[FINE], 'coarse', e[COARSE], 'since', e[SINCE], 'newest', e[NEWEST],
        '_p', string.format('%d', e[RECORDS]))
    else
      redis.call('HSET', key, 'coarse', e[COARSE], 'newest', e[NEWEST], '_p', string.format('%d', e[RECORDS]))
    end
  end
end
return out
"""
)

#: KEYS: per label the transaction key. ARGV: 1 terminal key prefix, then per label its value (0/1).
LABELS = (
    _COMMON
    + """
local applied, unchanged, unknown = 0, 0, 0
-- Read every record and terminal first, change them in memory, then write: nothing is half-applied.
local terminals, order, writes = {}, {}, {}
for i, xk in ipairs(KEYS) do
  local label = ARGV[i + 1]
  local rec = writes[xk] or redis.call('GET', xk)
  if not rec then
    unknown = unknown + 1
  else
    local terminal, hour, old = string.match(rec, '^(.*)\t([^\t]*)\t([^\t]*)$')
    if old == label then
      unchanged = unchanged + 1
    else
      local delta = tonumber(label) - ((old == '-') and 0 or tonumber(old))
      local tk = ARGV[1] .. terminal
      local coarse = terminals[tk]
      if not coarse then
        local h = redis.call('HMGET', tk, 'coarse', 'newest')
        check_layout(tk, h[1], h[2])
        coarse = h[1] or ''
        order[#order + 1] = tk
      end
      terminals[tk] = added(coarse, 2, tonumber(hour), 0, delta, 0)
      if not writes[xk] then writes[#writes + 1] = xk end
      writes[xk] = terminal .. '\t' .. hour .. '\t' .. label
      applied = applied + 1
    end
  end
end
for _, tk in ipairs(order) do redis.call('HSET', tk, 'coarse', terminals[tk]) end
for _, xk in ipairs(writes) do redis.call('SET', xk, writes[xk], 'KEEPTTL') end
return {applied, unchanged, unknown}
"""
)

#: KEYS: one hash. ARGV: 1 counters per tile (3 or 2), 2 fine tiles, 3 coarse tiles (each as records of the tile's
#: own counters, not running sums, sorted by index: :func:`tile_records`), then field, value pairs: ``since`` takes
#: the minimum, ``newest`` the maximum, others are set. The given tiles replace the stored ones of the same index.
LOAD = (
    _COMMON
    + """
local key, width = KEYS[1], tonumber(ARGV[1])
local h = redis.call('HMGET', key, 'fine', 'coarse', 'newest')
check_layout(key, h[2], h[3])

-- `stored` (running sums) with the tiles of `given` (own counters) set.
local function merged(stored, given)
  if given == '' then return stored end
  local tiles, order = {}, {}
  local pa, pb, pc = 0, 0, 0
  for j = 0, #stored / SIZE[width] - 1 do
    local t, a, b, c = record(stored, width, j)
    tiles[t] = {a - pa, b - pb, c - pc}
    order[#order + 1] = t
    pa, pb, pc = a, b, c
  end
  for j = 0, #given / SIZE[width] - 1 do
    local t, a, b, c = record(given, width, j)
    if not tiles[t] then order[#order + 1] = t end
    tiles[t] = {a, b, c}
  end
  table.sort(order)
  local parts = {}
  local sa, sb, sc = 0, 0, 0
  for _, t in ipairs(order) do
    local v = tiles[t]
    sa, sb, sc = sa + v[1], sb + v[2], sc + v[3]
    parts[#parts + 1] = pack(width, t, sa, sb, sc)
  end
  return concat(parts)
end

if width == 3 then redis.call('HSET', key, 'fine', merged(h[1] or '', ARGV[2])) end
redis.call('HSET', key, 'coarse', merged(h[2] or '', ARGV[3]))
for i = 4, #ARGV, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  if name == 'since' or name == 'newest' then
    local current = redis.call('HGET', key, name)
    if (not current) or (name == 'since' and tonumber(current) > tonumber(value))
        or (name == 'newest' and tonumber(current) < tonumber(value)) then
      redis.call('HSET', key, name, value)
    end
  else
    redis.call('HSET', key, name, value)
  end
end
return 1
"""
)


@lru_cache(maxsize=4096)
def _packed_ranges(minute: int, label_delay_days: int) -> bytes:
    ranges = tile_ranges(minute * MINUTE, label_delay_days)
    return struct.pack(f"<{len(ranges)}i", *ranges)


def packed_ranges(seconds: int, label_delay_days: int) -> bytes:
    """A transaction's :func:`~fraud_detection.features.online.tile_ranges` as the scoring script takes them.

    Args:
        seconds: The transaction's event time (epoch seconds).
        label_delay_days: The label delay.

    Returns:
        The ranges as little-endian int32, computed once per minute.
    """
    return _packed_ranges(seconds // MINUTE, label_delay_days)


def tile_records(tiles: Mapping[int, list[int]], width: int) -> bytes:
    """Tiles as the load script takes them: one record per tile with its own counters, sorted by index.

    Args:
        tiles: Tile index to its counters.
        width: Counters per tile.

    Returns:
        The records.
    """
    form = FORMATS[width]
    return b"".join(struct.pack(form, idx, *tiles[idx]) for idx in sorted(tiles))


def load_arguments(fields: Mapping[str, int], aggregates: str) -> list[int | bytes | str]:
    """The load script's ARGV for one hash given in the logical layout (one field per counter).

    Args:
        fields: ``f<minute><agg>``/``h<hour><agg>`` counters, ``since``, ``newest``, ``_p``.
        aggregates: The entity's counters in order (``nsq`` or ``nf``).

    Returns:
        Counters per tile, the fine and coarse tile records, then field, value pairs.
    """
    width = len(aggregates)
    series: dict[str, dict[int, list[int]]] = {"f": {}, "h": {}}
    scalars: list[int | bytes | str] = []
    for name, value in fields.items():
        tile = tile_field(name, aggregates)
        if tile is not None:
            kind, idx, counter = tile
            series[kind].setdefault(idx, [0] * width)[counter] = int(value)
        else:
            scalars += [name, int(value)]
    return [width, tile_records(series["f"], width), tile_records(series["h"], width), *scalars]


def series_tiles(blob: bytes, width: int) -> Iterator[tuple[int, list[int]]]:
    """A stored series' tiles with their own counters (the running sums differenced), in index order.

    Args:
        blob: The ``fine`` or ``coarse`` field.
        width: Counters per tile.

    Returns:
        (tile index, counters) pairs.
    """
    previous = [0] * width
    for idx, *running in struct.iter_unpack(FORMATS[width], blob):
        yield idx, [int(now - before) for now, before in zip(running, previous, strict=True)]
        previous = running


def logical_fields(stored: Mapping[str, bytes], aggregates: str) -> dict[str, int]:
    """A stored hash in the logical layout, one field per counter (the inverse of :func:`load_arguments`).

    Args:
        stored: The hash as stored (names decoded, values as bytes).
        aggregates: The entity's counters in order.

    Returns:
        One field per counter, and ``since``, ``newest``, ``_p``.
    """
    out: dict[str, int] = {}
    for name, value in stored.items():
        if name in (FINE_FIELD, COARSE_FIELD):
            kind = "f" if name == FINE_FIELD else "h"
            out.update(tile_fields(kind, series_tiles(value, len(aggregates)), aggregates))
        else:
            out[name] = int(value)
    return out
