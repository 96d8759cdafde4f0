"""The metrics socket is bound before Kopf starts: a taken or malformed address stops the start, naming it;
Kopf's settings for thousands of monitors; and what the operator loads at start."""

from __future__ import annotations

import socket
import subprocess
import sys

import kopf
import pytest

from modelmonitor.handlers import LIST_CHUNK, NoDiffBase, StartupError, bind_metrics, configure_kopf


@pytest.mark.parametrize("address", ["127.0.0.1:0", "[::1]:0"])
def test_the_metrics_address_is_bound(address: str) -> None:
    bound = bind_metrics(address)
    assert bound is not None
    with bound:
        assert bound.getsockname()[1] > 0


def test_no_address_binds_nothing() -> None:
    assert bind_metrics("") is None


def test_a_taken_port_or_a_bad_address_names_the_address_and_the_variable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(StartupError, match=rf"{address} \(MODELMONITOR_METRICS_ADDRESS\): Address already in use"):
            bind_metrics(address)
    with pytest.raises(StartupError, match=r"127.0.0.1:http \(MODELMONITOR_METRICS_ADDRESS\)"):
        bind_metrics("127.0.0.1:http")


def test_kopf_lists_in_pages_and_keeps_no_diff_base() -> None:
    settings = kopf.OperatorSettings()
    configure_kopf(settings)
    assert settings.watching.chunk_size == LIST_CHUNK
    assert settings.watching.server_timeout < settings.watching.client_timeout
    storage = settings.persistence.diffbase_storage
    assert isinstance(storage, NoDiffBase)
    body = kopf.Body({"metadata": {"name": "m", "annotations": {"a": "b"}}, "spec": {"x": 1}, "status": {"y": 2}})
    # Nothing copied per event, nothing written to the object, nothing recalled from it.
    assert storage.build(body=body) == {}
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence={"spec": {"x": 1}})
    assert not patch
    assert storage.fetch(body=body) is None


def test_the_operator_starts_without_scipy() -> None:
    # scipy costs the operator ~55 MiB of memory; only drift thresholds and the sidecar's calibration need it.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, modelmonitor.cli, modelmonitor.handlers; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'numpy'" in loaded
    assert "'scipy'" not in loaded
