"""Redis as the online store: the state that 2-10 model-server replicas share.

Each operation is one Lua script, so it is atomic across replicas (Redis runs a script alone) and costs one round
trip per request whatever its rows: the scoring script reads each row's customer and terminal hashes, then records
the row unless its transaction key exists (a retry), so every row sees the rows before it. Counters are integers
(``HINCRBY``), so concurrent writers never lose an update and sums are exact. Keys carry a prefix (default
``fraud:``) and the entity ids; a Redis Cluster would need hash tags to keep a row's keys on one slot, which this
backend does not set: use a single primary (with replicas for failover), as Azure Cache for Redis Standard gives.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from fraud_detection.features.definitions import (
    CUSTOMER_AGGREGATES,
    CUSTOMER_WINDOWS,
    HOUR,
    MINUTE,
    TERMINAL_AGGREGATES,
    TERMINAL_WINDOWS,
    amount_cents,
)
from fraud_detection.features.online import (
    CUSTOMER_PREFIX,
    TERMINAL_PREFIX,
    TRANSACTION_PREFIX,
    PreStates,
    RawTransaction,
    tile_ranges,
    tiles_for,
    transaction_record,
)
from fraud_detection.features.state.base import (
    PRUNE_EVERY,
    TRANSACTION_TTL_SECONDS,
    LabelOutcome,
    OnlineStore,
    OnlineStoreUnavailableError,
    Snapshot,
)

LOG = logging.getLogger(__name__)

# Physical layout: the hash layout of features.online with one field per tile, ``F<minute>`` or ``H<hour>``, whose
# value packs the tile's counters in binary, little-endian: a customer's ``n s q`` as int32, double, double (20
# bytes), a terminal's ``n f`` as two int32 (8 bytes); ``since``, ``newest`` and ``_p`` (records, for pruning) as
# decimal integers. One field per tile instead of one per counter makes the scoring script's scan three times
# shorter, and Lua reads a binary tile with one struct.unpack, about 15 times cheaper than matching text (the text
# tiles, ``f<minute>``/``h<hour>`` = ``"n s q"``, of an earlier version are refused, not misread: materialize again).
# Values stay under 64 bytes, so Redis keeps the hashes as compact listpacks. Counters are exact below 2**53 (Lua
# numbers are doubles; the sums of cents and of squared cents are stored as doubles, counts as int32).
CUSTOMER_TILE_FORMAT = "<idd"
TERMINAL_TILE_FORMAT = "<ii"
_FORMATS = {"".join(CUSTOMER_AGGREGATES): CUSTOMER_TILE_FORMAT, "".join(TERMINAL_AGGREGATES): TERMINAL_TILE_FORMAT}
_PACKED = f"""
local sunpack, spack = struct.unpack, struct.pack
local CUSTOMER_TILE, TERMINAL_TILE = '{CUSTOMER_TILE_FORMAT}', '{TERMINAL_TILE_FORMAT}'

local function unpack_tile(v, width)
  if width == 3 then
    local n, s, q = sunpack(CUSTOMER_TILE, v)
    return {{n, s, q}}
  end
  local n, f = sunpack(TERMINAL_TILE, v)
  return {{n, f}}
end

local function pack_tile(c)
  if #c == 3 then return spack(CUSTOMER_TILE, c[1], c[2], c[3]) end
  return spack(TERMINAL_TILE, c[1], c[2])
end

local function old_layout(key)
  error({{err = 'online store: ' .. key .. ' holds text tiles of an earlier version (f<minute>/h<hour> fields): '
    .. 'delete the store keys and run `fraud online materialize` again'}})
end

-- Delete tiles older than the hash's horizons behind its newest event (F = 70: minute tiles, H = 72: hour tiles).
local function prune(key, fine_s, fine_h, coarse_s, coarse_h)
  local newest = tonumber(redis.call('HGET', key, 'newest'))
  if not newest then return end
  for _, name in ipairs(redis.call('HKEYS', key)) do
    local kind = string.byte(name, 1)
    local idx = tonumber(string.sub(name, 2))
    if idx then
      if kind == 70 and fine_s > 0 and (idx + 1) * fine_s <= newest - fine_h then
        redis.call('HDEL', key, name)
      elseif kind == 72 and (idx + 1) * coarse_s <= newest - coarse_h then
        redis.call('HDEL', key, name)
      end
    end
  end
end
"""

# Sum one hash's tiles over a row's windows (the Lua twin of features.online.window_sums). `flat` is HGETALL's
# answer; `lims` the row's tile ranges (four per window, from features.online.tile_ranges), `first` its first
# window, `nwin` how many, `width` the counters per tile. Appends the sums to `out`; returns since, newest, the
# record counter and the counters of the fine tile `fine_at` and the coarse tile `coarse_at` (where the row lands).
_SUMS = """
local function sums(key, flat, lims, first, nwin, width, out, fine_at, coarse_at)
  local base = #out
  for k = 1, nwin * width do out[base + k] = 0 end
  local since, newest, p, fine_tile, coarse_tile = nil, nil, 0, nil, nil
  local byte, sub = string.byte, string.sub
  for j = 1, #flat, 2 do
    local name = flat[j]
    local kind = byte(name, 1)
    if kind == 70 or kind == 72 then
      local idx = tonumber(sub(name, 2))
      local off = (kind == 70) and 1 or 3
      local x, y, z = nil, nil, nil
      for w = 0, nwin - 1 do
        local r = 4 * (first + w) + off
        if idx >= lims[r] and idx < lims[r + 1] then
          if not x then
            if width == 3 then
              x, y, z = sunpack(CUSTOMER_TILE, flat[j + 1])
            else
              x, y = sunpack(TERMINAL_TILE, flat[j + 1])
            end
          end
          local o = base + w * width
          out[o + 1] = out[o + 1] + x
          out[o + 2] = out[o + 2] + y
          if z then out[o + 3] = out[o + 3] + z end
        end
      end
      if (kind == 70 and idx == fine_at) or (kind == 72 and idx == coarse_at) then
        local c = unpack_tile(flat[j + 1], width)
        if kind == 70 then fine_tile = c else coarse_tile = c end
      end
    elseif kind == 102 or kind == 104 then
      old_layout(key)
    elseif name == 'since' then
      since = flat[j + 1]
    elseif name == 'newest' then
      newest = flat[j + 1]
    elseif name == '_p' then
      p = tonumber(flat[j + 1])
    end
  end
  return since, newest, p, fine_tile, coarse_tile
end

local function added(c, inc)
  if not c then return inc end
  local out = {}
  for a = 1, #inc do out[a] = c[a] + inc[a] end
  return out
end
"""

# KEYS: per row customer, terminal, transaction. ARGV: 1 rows, 2 prune_every, 3 ttl, 4-7 customer tiles,
# 8-9 terminal coarse tiles, 10 customer windows, 11 terminal windows; then per row: seconds, minute, hour, cents,
# cents^2, since ('' for none), record, and four tile-range integers per window (customer windows first).
# Answers per row: seen, the relationship start before it (at most its time), then the window aggregates.
_SCORE = (
    _PACKED
    + _SUMS
    + """
local rows = tonumber(ARGV[1])
local prune_every = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local cwin, twin = tonumber(ARGV[10]), tonumber(ARGV[11])
local stride = 7 + 4 * (cwin + twin)
local out = {}
for i = 0, rows - 1 do
  local ck, tk, xk = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local a = 11 + stride * i
  local secs, minute, hour = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local cents, square, given, record = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), ARGV[a + 6], ARGV[a + 7]
  local lims = {}
  for k = 1, 4 * (cwin + twin) do lims[k] = tonumber(ARGV[a + 7 + k]) end
  local seen = redis.call('EXISTS', xk)
  out[#out + 1] = seen
  local slot = #out + 1
  out[slot] = 0
  local since, cnewest, cp, cfine, ccoarse = sums(ck, redis.call('HGETALL', ck), lims, 0, cwin, 3, out, minute, hour)
  local _, tnewest, tp, _, tcoarse = sums(tk, redis.call('HGETALL', tk), lims, cwin, twin, 2, out, -1, hour)
  local t = tonumber(secs)
  if since and tonumber(since) < t then out[slot] = tonumber(since) else out[slot] = t end
  if seen == 0 then
    redis.call('SET', xk, record, 'EX', ttl)
    if given ~= '' then
      since = given
    elseif (not since) or tonumber(since) > t then
      since = secs
    end
    if (not cnewest) or tonumber(cnewest) < t then cnewest = secs end
    if (not tnewest) or tonumber(tnewest) < t then tnewest = secs end
    local inc = {1, cents, square}
    redis.call('HSET', ck, 'F' .. minute, pack_tile(added(cfine, inc)), 'H' .. hour, pack_tile(added(ccoarse, inc)),
      'since', since, 'newest', cnewest, '_p', string.format('%d', cp + 1))
    redis.call('HSET', tk, 'H' .. hour, pack_tile(added(tcoarse, {1, 0})), 'newest', tnewest,
      '_p', string.format('%d', tp + 1))
    if (cp + 1) % prune_every == 0 then
      prune(ck, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
    end
    if (tp + 1) % prune_every == 0 then
      prune(tk, 0, 0, tonumber(ARGV[8]), tonumber(ARGV[9]))
    end
  end
end
return out
"""
)

# KEYS: per label the transaction key. ARGV: 1 terminal key prefix, then per label its value (0/1).
_LABELS = (
    _PACKED
    + """
local applied, unchanged, unknown = 0, 0, 0
for i, xk in ipairs(KEYS) do
  local label = ARGV[i + 1]
  local record = redis.call('GET', xk)
  if not record then
    unknown = unknown + 1
  else
    local terminal, hour, old = string.match(record, '^(.*)\\t([^\\t]*)\\t([^\\t]*)$')
    if old == label then
      unchanged = unchanged + 1
    else
      local delta = tonumber(label) - ((old == '-') and 0 or tonumber(old))
      local tk, field = ARGV[1] .. terminal, 'H' .. hour
      if redis.call('HEXISTS', tk, 'h' .. hour) == 1 then old_layout(tk) end
      local current = redis.call('HGET', tk, field)
      local c = current and unpack_tile(current, 2) or {0, 0}
      redis.call('HSET', tk, field, pack_tile({c[1], c[2] + delta}))
      redis.call('SET', xk, terminal .. '\\t' .. hour .. '\\t' .. label, 'KEEPTTL')
      applied = applied + 1
    end
  end
end
return {applied, unchanged, unknown}
"""
)

# KEYS: one hash. ARGV: field, value pairs (tiles packed); 'since' takes the minimum, 'newest' the maximum, tiles
# are set.
_LOAD = """
local key = KEYS[1]
for i = 1, #ARGV, 2 do
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


def packed(fields: Mapping[str, int], aggregates: str) -> dict[str, int | bytes]:
    """Logical hash fields (one per counter, as :mod:`fraud_detection.features.online` lays them out) packed per tile.

    Args:
        fields: ``f<minute><agg>``/``h<hour><agg>`` counters, ``since``, ``newest``.
        aggregates: The entity's counters in order (``nsq`` or ``nf``).

    Returns:
        ``F<minute>``/``H<hour>`` to the tile's counters in binary (:data:`CUSTOMER_TILE_FORMAT` or
        :data:`TERMINAL_TILE_FORMAT`), the other fields as they were.
    """
    tiles: dict[str, list[int]] = {}
    out: dict[str, int | bytes] = {}
    for name, value in fields.items():
        if name[:1] in ("f", "h") and name[-1:] in aggregates:
            tiles.setdefault(name[:-1].upper(), [0] * len(aggregates))[aggregates.index(name[-1])] = int(value)
        else:
            out[name] = int(value)
    form = _FORMATS[aggregates]
    for tile, counters in tiles.items():
        out[tile] = struct.pack(form, *counters)
    return out


def unpacked(fields: Mapping[str, bytes], aggregates: str) -> dict[str, int]:
    """The inverse of :func:`packed`.

    Args:
        fields: A hash as stored (names decoded, values as bytes).
        aggregates: The entity's counters in order.

    Returns:
        One field per counter.
    """
    out: dict[str, int] = {}
    form = _FORMATS[aggregates]
    for name, value in fields.items():
        if name[:1] in ("F", "H"):
            for agg, counter in zip(aggregates, struct.unpack(form, value), strict=True):
                out[name.lower() + agg] = int(counter)
        else:
            out[name] = int(value)
    return out


def redacted(url: str) -> str:
    """A Redis URL without its password.

    Args:
        url: ``redis://[user:password@]host:port/db``.

    Returns:
        The URL with ``***`` for the password.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"{user}:***@{host}{port}").geturl()


class RedisStore(OnlineStore):
    """Online state in Redis.

    Args:
        url: ``redis://[user:password@]host:port/db`` (or ``rediss://`` for TLS); the password may come from
            ``password`` instead.
        label_delay_days: The label delay of the served features.
        password: Password (e.g. from a Secret) when the URL has none.
        prefix: Key prefix.
        timeout_seconds: Socket connect and read timeout (a 1,000-row request is one script call).
    """

    def __init__(
        self,
        url: str,
        label_delay_days: int = 7,
        *,
        password: str | None = None,
        prefix: str = "fraud:",
        timeout_seconds: float = 2.0,
    ) -> None:
        super().__init__(label_delay_days)
        import redis

        self._url = url
        self._prefix = prefix
        self._client = redis.Redis.from_url(
            url,
            password=password or None,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=30,
        )
        self._score = self._client.register_script(_SCORE)
        self._labels = self._client.register_script(_LABELS)
        self._load = self._client.register_script(_LOAD)
        customer, terminal = tiles_for("customer", label_delay_days), tiles_for("terminal", label_delay_days)
        self._tile_args = [
            customer.fine_seconds,
            customer.fine_horizon_seconds,
            customer.coarse_seconds,
            customer.coarse_horizon_seconds,
            terminal.coarse_seconds,
            terminal.coarse_horizon_seconds,
            len(CUSTOMER_WINDOWS),
            len(TERMINAL_WINDOWS),
        ]

    @property
    def uri(self) -> str:  # noqa: D102
        return redacted(self._url)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise OnlineStoreUnavailableError(f"online store {self.uri}: {what} failed: {exc}") from exc

    def score_batch(self, transactions: Sequence[RawTransaction]) -> PreStates:  # noqa: D102
        if not transactions:
            return PreStates.from_rows([])
        keys: list[str] = []
        args: list[Any] = [len(transactions), PRUNE_EVERY, TRANSACTION_TTL_SECONDS, *self._tile_args]
        cents = amount_cents(np.fromiter((tx.amount for tx in transactions), np.float64, len(transactions)))
        prefix = self._prefix
        delay = self.label_delay_days
        for tx, c in zip(transactions, cents.tolist(), strict=True):
            keys += [
                prefix + CUSTOMER_PREFIX + tx.customer_id,
                prefix + TERMINAL_PREFIX + tx.terminal_id,
                prefix + TRANSACTION_PREFIX + tx.transaction_id,
            ]
            since = "" if tx.customer_since is None else tx.customer_since
            args += [tx.seconds, tx.seconds // MINUTE, tx.seconds // HOUR, c, c * c, since, transaction_record(tx)]
            args += tile_ranges(tx.seconds, delay)
        flat = self._call("scoring", self._score, keys=keys, args=args)
        return PreStates.from_rows(flat)

    def apply_labels(self, labels: Sequence[tuple[str, int]]) -> LabelOutcome:  # noqa: D102
        if not labels:
            return LabelOutcome(0, 0, 0)
        keys = [self._prefix + TRANSACTION_PREFIX + str(t) for t, _ in labels]
        args = [self._prefix + TERMINAL_PREFIX, *(str(int(v)) for _, v in labels)]
        applied, unchanged, unknown = self._call("label ingestion", self._labels, keys=keys, args=args)
        return LabelOutcome(int(applied), int(unchanged), int(unknown))

    def load(self, snapshot: Snapshot, batch: int = 500) -> None:  # noqa: D102
        pipe = self._client.pipeline(transaction=False)
        pending = 0
        kinds = (
            (CUSTOMER_PREFIX, snapshot.customers, "".join(CUSTOMER_AGGREGATES)),
            (TERMINAL_PREFIX, snapshot.terminals, "".join(TERMINAL_AGGREGATES)),
        )
        for prefix, entities, aggregates in kinds:
            for entity, fields in entities.items():
                flat: list[Any] = []
                for name, value in packed(fields, aggregates).items():
                    flat += [name, value]
                if flat:
                    self._load(keys=[self._prefix + prefix + entity], args=flat, client=pipe)
                    pending += 1
                if pending >= batch:
                    self._call("loading", pipe.execute)
                    pending = 0
        for transaction_id, record in snapshot.transactions.items():
            pipe.set(self._prefix + TRANSACTION_PREFIX + transaction_id, record, ex=TRANSACTION_TTL_SECONDS)
            pending += 1
            if pending >= batch * 10:
                self._call("loading", pipe.execute)
                pending = 0
        self._call("loading", pipe.execute)

    def ping(self) -> None:  # noqa: D102
        self._call("ping", self._client.ping)

    def fields(self, key: str) -> dict[str, int]:
        """One hash (``c:<customer>`` or ``t:<terminal>``) in the logical layout (a field per counter), for inspection.

        Args:
            key: The hash's key without the store prefix.

        Returns:
            Its fields.
        """
        raw = self._call("reading", self._client.hgetall, self._prefix + key)
        aggregates = CUSTOMER_AGGREGATES if key.startswith(CUSTOMER_PREFIX) else TERMINAL_AGGREGATES
        return unpacked({k.decode(): v for k, v in raw.items()}, "".join(aggregates))

    def close(self) -> None:  # noqa: D102
        self._client.close()
