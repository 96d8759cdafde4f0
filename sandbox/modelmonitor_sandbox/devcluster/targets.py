"""Prometheus scrape targets that come and go at run time (file-based service discovery).

Each target is one JSON file in the sandbox's targets folder; Prometheus watches the folder, so writing or
removing a file adds or removes the target within seconds, without a reload. Files are written atomically so
Prometheus never reads half a file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")


def _path(targets_dir: Path, name: str) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"scrape target name {name!r} must be 1-121 letters, digits, '.', '_' or '-'")
    return targets_dir / f"{name}.json"


def add(targets_dir: Path, name: str, address: str, labels: dict[str, str] | None = None) -> Path:
    """Register `address` (host:port serving /metrics) under `name`, with extra target labels."""
    if ":" not in address or address.startswith("http"):
        raise ValueError(f"scrape target address {address!r} must be host:port (no scheme)")
    targets_dir.mkdir(parents=True, exist_ok=True)
    path = _path(targets_dir, name)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps([{"targets": [address], "labels": dict(labels or {})}]))
    tmp.replace(path)
    return path


def remove(targets_dir: Path, name: str) -> bool:
    """Unregister a target; returns whether it was registered."""
    path = _path(targets_dir, name)
    if path.exists():
        path.unlink()
        return True
    return False


def listed(targets_dir: Path) -> dict[str, dict[str, object]]:
    """The registered targets: name -> {"address", "labels"}."""
    result: dict[str, dict[str, object]] = {}
    for path in sorted(targets_dir.glob("*.json")):
        groups = json.loads(path.read_text())
        result[path.stem] = {"address": groups[0]["targets"][0], "labels": groups[0].get("labels", {})}
    return result
