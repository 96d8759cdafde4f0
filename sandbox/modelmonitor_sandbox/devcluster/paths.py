"""Where the sandbox keeps its cached binaries (reused across runs) and its running state (thrown away by `down`)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Built binaries and Go build caches, keyed by version; survives `cluster down`.

    ``MODELMONITOR_CACHE`` overrides the default ``~/.cache/modelmonitor``.
    """
    return Path(os.environ.get("MODELMONITOR_CACHE") or Path.home() / ".cache" / "modelmonitor")


def cluster_dir() -> Path:
    """The running cluster: PKI, etcd data, Prometheus data, kubeconfig, pid/port state and one log per component.

    ``MODELMONITOR_CLUSTER_DIR`` overrides the default ``~/.local/state/modelmonitor/cluster``.
    """
    return Path(
        os.environ.get("MODELMONITOR_CLUSTER_DIR") or Path.home() / ".local" / "state" / "modelmonitor" / "cluster"
    )


def binary_path(folder: str, version: str, name: str) -> Path:
    return cache_dir() / "bin" / f"{folder}-v{version}" / name
