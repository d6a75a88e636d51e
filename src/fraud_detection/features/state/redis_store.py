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
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from fraud_detection.features.definitions import HOUR, MINUTE, amount_cents
from fraud_detection.features.online import (
    CUSTOMER_PREFIX,
    TERMINAL_PREFIX,
    TRANSACTION_PREFIX,
    PreState,
    RawTransaction,
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

# Prune one hash: delete tile fields older than its horizons behind its newest event.
_PRUNE = """
local function prune(key, fine_s, fine_h, coarse_s, coarse_h)
  local newest = tonumber(redis.call('HGET', key, 'newest'))
  if not newest then return end
  for _, name in ipairs(redis.call('HKEYS', key)) do
    local kind = string.sub(name, 1, 1)
    if kind == 'f' or kind == 'h' then
      local idx = tonumber(string.sub(name, 2, -2))
      if idx then
        if kind == 'f' and fine_s > 0 and (idx + 1) * fine_s <= newest - fine_h then
          redis.call('HDEL', key, name)
        elseif kind == 'h' and (idx + 1) * coarse_s <= newest - coarse_h then
          redis.call('HDEL', key, name)
        end
      end
    end
  end
end
"""

# KEYS: per row customer, terminal, transaction. ARGV: 1 rows, 2 prune_every, 3 ttl, 4-7 customer tiles,
# 8-9 terminal coarse tiles; then per row: seconds, minute, hour, cents, cents^2, since ('' for none), record.
_SCORE = (
    _PRUNE
    + """
local rows = tonumber(ARGV[1])
local prune_every = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local out = {}
for i = 0, rows - 1 do
  local ck, tk, xk = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local a = 9 + 7 * i
  local secs, minute, hour = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local cents, square, since, record = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local seen = redis.call('EXISTS', xk)
  out[#out + 1] = seen
  out[#out + 1] = redis.call('HGETALL', ck)
  out[#out + 1] = redis.call('HGETALL', tk)
  if seen == 0 then
    redis.call('SET', xk, record, 'EX', ttl)
    for _, tile in ipairs({'f' .. minute, 'h' .. hour}) do
      redis.call('HINCRBY', ck, tile .. 'n', 1)
      redis.call('HINCRBY', ck, tile .. 's', cents)
      redis.call('HINCRBY', ck, tile .. 'q', square)
    end
    redis.call('HINCRBY', tk, 'h' .. hour .. 'n', 1)
    if since ~= '' then
      redis.call('HSET', ck, 'since', since)
    else
      local current = redis.call('HGET', ck, 'since')
      if (not current) or tonumber(current) > tonumber(secs) then redis.call('HSET', ck, 'since', secs) end
    end
    for _, key in ipairs({ck, tk}) do
      local newest = redis.call('HGET', key, 'newest')
      if (not newest) or tonumber(newest) < tonumber(secs) then redis.call('HSET', key, 'newest', secs) end
    end
    if redis.call('HINCRBY', ck, '_p', 1) % prune_every == 0 then
      prune(ck, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
    end
    if redis.call('HINCRBY', tk, '_p', 1) % prune_every == 0 then
      prune(tk, 0, 0, tonumber(ARGV[8]), tonumber(ARGV[9]))
    end
  end
end
return out
"""
)

# KEYS: per label the transaction key. ARGV: 1 terminal key prefix, then per label its value (0/1).
_LABELS = """
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
      redis.call('HINCRBY', ARGV[1] .. terminal, 'h' .. hour .. 'f', delta)
      redis.call('SET', xk, terminal .. '\\t' .. hour .. '\\t' .. label, 'KEEPTTL')
      applied = applied + 1
    end
  end
end
return {applied, unchanged, unknown}
"""

# KEYS: one hash. ARGV: field, value pairs; 'since' takes the minimum, 'newest' the maximum, tiles are set.
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


def _pairs(flat: Sequence[bytes]) -> dict[str, int]:
    return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}


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

    def score_batch(self, transactions: Sequence[RawTransaction]) -> list[PreState]:  # noqa: D102
        if not transactions:
            return []
        keys: list[str] = []
        args: list[Any] = [len(transactions), PRUNE_EVERY, TRANSACTION_TTL_SECONDS, *self._tile_args]
        cents = amount_cents(np.array([tx.amount for tx in transactions], dtype=np.float64))
        for tx, c in zip(transactions, cents.tolist(), strict=True):
            keys += [
                self._prefix + CUSTOMER_PREFIX + tx.customer_id,
                self._prefix + TERMINAL_PREFIX + tx.terminal_id,
                self._prefix + TRANSACTION_PREFIX + tx.transaction_id,
            ]
            since = "" if tx.customer_since is None else str(tx.customer_since)
            args += [tx.seconds, tx.seconds // MINUTE, tx.seconds // HOUR, c, c * c, since, transaction_record(tx)]
        raw = self._call("scoring", self._score, keys=keys, args=args)
        return [PreState(_pairs(raw[i + 1]), _pairs(raw[i + 2]), bool(raw[i])) for i in range(0, len(raw), 3)]

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
        for prefix, entities in ((CUSTOMER_PREFIX, snapshot.customers), (TERMINAL_PREFIX, snapshot.terminals)):
            for entity, fields in entities.items():
                flat: list[Any] = []
                for name, value in fields.items():
                    flat += [name, int(value)]
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
        """One hash (``c:<customer>`` or ``t:<terminal>``), for inspection and tests.

        Args:
            key: The hash's key without the store prefix.

        Returns:
            Its fields.
        """
        raw = self._call("reading", self._client.hgetall, self._prefix + key)
        return {k.decode(): int(v) for k, v in raw.items()}

    def close(self) -> None:  # noqa: D102
        self._client.close()
