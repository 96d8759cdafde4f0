from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelmonitor_sandbox.devcluster import targets


def test_add_writes_a_file_sd_group_that_prometheus_reads(tmp_path: Path) -> None:
    path = targets.add(tmp_path, "fraud-0", "127.0.0.1:9100", {"namespace": "ml", "model": "fraud"})
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:9100"], "labels": {"namespace": "ml", "model": "fraud"}}
    ]
    assert targets.listed(tmp_path) == {
        "fraud-0": {"address": "127.0.0.1:9100", "labels": {"namespace": "ml", "model": "fraud"}}
    }
    assert not list(tmp_path.glob("*.tmp")), "the atomic write left its temporary file"


def test_add_again_replaces_and_remove_unregisters(tmp_path: Path) -> None:
    targets.add(tmp_path, "a", "127.0.0.1:1")
    targets.add(tmp_path, "a", "127.0.0.1:2")
    assert targets.listed(tmp_path)["a"]["address"] == "127.0.0.1:2"
    assert targets.remove(tmp_path, "a") is True
    assert targets.remove(tmp_path, "a") is False
    assert targets.listed(tmp_path) == {}


@pytest.mark.parametrize("name", ["", "../escape", "a/b", "x" * 200, "-leading"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="scrape target name"):
        targets.add(tmp_path, name, "127.0.0.1:1")


@pytest.mark.parametrize("address", ["http://127.0.0.1:1", "localhost", ""])
def test_bad_addresses_are_refused(tmp_path: Path, address: str) -> None:
    with pytest.raises(ValueError, match="must be host:port"):
        targets.add(tmp_path, "ok", address)
