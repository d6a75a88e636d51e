"""Redis as the online store: the state that 2-10 model-server replicas share.

Each operation is one Lua script, so it is atomic across replicas (Redis runs a script alone) and costs one round
trip per request whatever its rows: the scoring script reads each row's customer and terminal hashes, then records
the row unless its transaction key exists (a retry), so every row sees the rows before it; no update is lost
whatever the number of writers. The hashes' layout and the scripts are in
:mod:`~fraud_detection.features.state.redis_layout`. Keys carry a prefix (default ``fraud:``) and the entity ids; a
Redis Cluster would need hash tags to keep a row's keys on one slot, which this backend does not set: use a single
primary (with replicas for failover), as Azure Cache for Redis Standard gives.

The scripts are sent on connections the store keeps for them (a free list), not through redis-py's per-command path
(pool checkout, retry wrapper, observability hooks), which cost about 60-80 us of a single-row call on loopback here
(docs/PERFORMANCE.md). The rules stay redis-py's: a connection or timeout error drops the connection and fails the
call (the next call reconnects; a call is never sent twice, as its script may have run), and a script Redis does not
know (after a restart or ``SCRIPT FLUSH``) is loaded and sent again. One more: a connection idle for
:data:`IDLE_CHECK_SECONDS` is checked before use, and one the server has closed meanwhile (Redis's ``timeout``, a
managed Redis dropping idle clients, a failover) is replaced before the call instead of failing it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
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
    tiles_for,
    transaction_record,
)
from fraud_detection.features.state import redis_layout
from fraud_detection.features.state.base import (
    PRUNE_EVERY,
    TRANSACTION_TTL_SECONDS,
    LabelOutcome,
    OnlineStore,
    OnlineStoreUnavailableError,
    Snapshot,
)

LOG = logging.getLogger(__name__)
#: A script connection idle this long is checked for a close by the server before it carries a call.
IDLE_CHECK_SECONDS = 1.0


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
        self._idle: list[tuple[Any, float]] = []  # script connections and when each was last used (module docstring)
        self._closed = False
        self._score = self._client.register_script(redis_layout.SCORE)
        self._labels = self._client.register_script(redis_layout.LABELS)
        self._load = self._client.register_script(redis_layout.LOAD)
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
            raise self._failed(what, exc) from exc

    def _failed(self, what: str, exc: Exception) -> OnlineStoreUnavailableError:
        return OnlineStoreUnavailableError(f"online store {self.uri}: {what} failed: {exc}")

    def _run(self, what: str, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One script call on a connection of the store's own (see the module's docstring).

        Args:
            what: What the call does, for the error.
            script: The registered script.
            keys: Its KEYS.
            args: Its ARGV.

        Returns:
            Its answer.

        Raises:
            OnlineStoreUnavailableError: Redis is unreachable, timed out or refused the call.
        """
        import redis

        idle = self._idle
        if idle:
            conn, used = idle.pop()
            if time.monotonic() - used > IDLE_CHECK_SECONDS:
                _drop_if_closed(conn)
        else:
            conn = self._client.connection_pool.make_connection()
        try:
            try:
                return _evalsha(conn, script.sha, keys, args)
            except redis.exceptions.NoScriptError:
                script.sha = self._client.script_load(script.script)
                return _evalsha(conn, script.sha, keys, args)
        except redis.ResponseError as exc:  # an error reply: the connection is in step
            raise self._failed(what, exc) from exc
        except BaseException as exc:  # anything else may leave an answer unread: start afresh next time
            conn.disconnect()
            if isinstance(exc, redis.RedisError):
                raise self._failed(what, exc) from exc
            raise
        finally:
            if self._closed:  # closed while this call ran
                conn.disconnect()
            else:
                idle.append((conn, time.monotonic()))

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
            args.append(redis_layout.packed_ranges(tx.seconds, delay))
        flat = self._run("scoring", self._score, keys, args)
        return PreStates.from_rows(flat)

    def apply_labels(self, labels: Sequence[tuple[str, int]]) -> LabelOutcome:  # noqa: D102
        if not labels:
            return LabelOutcome(0, 0, 0)
        keys = [self._prefix + TRANSACTION_PREFIX + str(t) for t, _ in labels]
        args = [self._prefix + TERMINAL_PREFIX, *(str(int(v)) for _, v in labels)]
        applied, unchanged, unknown = self._run("label ingestion", self._labels, keys, args)
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
                if fields:
                    args = redis_layout.load_arguments(fields, aggregates)
                    self._load(keys=[self._prefix + prefix + entity], args=args, client=pipe)
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
        return redis_layout.logical_fields({k.decode(): v for k, v in raw.items()}, "".join(aggregates))

    def close(self) -> None:  # noqa: D102
        self._closed = True
        while self._idle:
            self._idle.pop()[0].disconnect()
        self._client.close()


def _drop_if_closed(conn: Any) -> None:
    """Disconnect an idle connection the server has closed (or sent anything on: no call is pending on it)."""
    import redis

    try:
        readable = conn.can_read(timeout=0)
    except (redis.ConnectionError, OSError):
        readable = True
    if readable:
        conn.disconnect()


def _evalsha(conn: Any, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    conn.send_packed_command(conn.pack_command("EVALSHA", sha, len(keys), *keys, *args))
    return conn.read_response()
