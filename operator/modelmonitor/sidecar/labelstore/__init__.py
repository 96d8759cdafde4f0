"""The label stores behind ``modelmonitor sidecar --label-store``: ``memory`` and ``redis://`` / ``rediss://``."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable

from modelmonitor.sidecar.labels import LabelStore, Maturity
from modelmonitor.sidecar.labelstore.memory import MemoryLabelStore

PASSWORD_ENV = "MODELMONITOR_LABEL_STORE_PASSWORD"
"""The environment variable the Redis password is read from (or ``--label-store-password-file``)."""


def open_label_store(
    url: str,
    *,
    model: str,
    version: str,
    ttl_seconds: float,
    capacity: int,
    password: str | None = None,
    maturities: tuple[Maturity, ...] = (),
    clock: Callable[[], float] = time.monotonic,
) -> LabelStore:
    """The store ``url`` names: ``memory``, or ``redis://host:port/db`` / ``rediss://host:port/db``.

    ``maturities``: the ``--label-maturity`` ages whose held outcomes a shared store sweeps.

    Raises:
        ValueError: an unknown scheme, or a password in the URL (it would show in ``ps``; use the environment
            variable or the password file).
    """
    if url == "memory":
        return MemoryLabelStore(ttl=ttl_seconds, capacity=capacity, clock=clock)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in {"redis", "rediss"} or not parsed.hostname:
        raise ValueError(f"--label-store: expected memory, redis://HOST:PORT/DB or rediss://HOST:PORT/DB, got {url!r}")
    if parsed.password is not None:
        raise ValueError(
            f"--label-store: no password in the URL (it would show in the process list); put it in ${PASSWORD_ENV} "
            "or a file named by --label-store-password-file"
        )
    from modelmonitor.sidecar.labelstore.redis_store import RedisStoreSettings, connect

    return connect(
        url,
        password=password,
        namespace=f"modelmonitor:{model}:{version}",
        settings=RedisStoreSettings(
            ttl_seconds=ttl_seconds, queue_capacity=capacity, maturities=tuple(m.name for m in maturities)
        ),
    )
