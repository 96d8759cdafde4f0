"""`make demo`'s command, run as a user would: the story must fire during the drift and recover afterwards."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]


def test_the_demo_fires_on_drift_and_recovers(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelmonitor", "demo", "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
    assert "the monitor fired during the drift and returned to Healthy at the end" in out
    assert "PolicyFiring" in out and "PolicyResolving" in out
    # The drift policy waits for the calibrated window size: no drift alarm on healthy traffic.
    healthy_act = out.split("act 2:")[0]
    assert "Firing" not in healthy_act and "input-drift" not in healthy_act.split("act 1:")[1]
