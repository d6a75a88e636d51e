"""Open an online store from its URI: ``redis://`` (or ``rediss://``) for Redis, a directory for the embedded store."""

from __future__ import annotations

from pathlib import Path

from fraud_detection.features.state.base import OnlineStore
from fraud_detection.features.state.embedded import EmbeddedStore

MEMORY = "memory"


def open_online_store(uri: str, label_delay_days: int = 7, *, password: str | None = None) -> OnlineStore:
    """Open the online store a URI names.

    Args:
        uri: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), a directory (the embedded store,
            persisted there) or ``memory`` (embedded, not persisted).
        label_delay_days: The label delay of the served features.
        password: Redis password when the URL has none (e.g. from a Secret).

    Returns:
        The store.

    Raises:
        ValueError: The URI names an unsupported scheme.
        OnlineStoreUnavailableError: The embedded directory is held by another process or corrupt.
    """
    if uri.startswith(("redis://", "rediss://", "unix://")):
        from fraud_detection.features.state.redis_store import RedisStore

        return RedisStore(uri, label_delay_days, password=password)
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise ValueError(
            f"online store {uri!r}: unsupported scheme {scheme!r} (use redis://, rediss:// or a directory)"
        )
    if uri == MEMORY:
        return EmbeddedStore(None, label_delay_days)
    return EmbeddedStore(Path(uri), label_delay_days)
