"""The metrics socket is bound before Kopf starts: a taken or malformed address stops the start, naming it."""

from __future__ import annotations

import socket

import pytest

from modelmonitor.handlers import StartupError, bind_metrics


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
