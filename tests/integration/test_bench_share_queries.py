"""The share-queries benchmark's quick mode against a REAL Prometheus scraping the REAL synthetic fleet: it runs end
to end, both ways measure the same (it fails otherwise), and each replica's own share is about half the answer."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_share_queries.py"


def test_quick_mode_asks_each_replica_for_about_half(tmp_path: Path) -> None:
    output = tmp_path / "share.md"
    run = [sys.executable, str(BENCH), "--quick", "--rounds", "1", "--scrape-interval", "2", "--output", str(output)]
    done = subprocess.run(run, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {
        match.group(1): int(match.group(2).replace(",", ""))
        for match in re.finditer(
            r"^\| (whole queries|own share) \|[^|]*\|[^|]*\|[^|]*\| ([\d,]+) \|", output.read_text(), re.M
        )
    }
    assert rows["whole queries"] == 500 * 4  # the accuracy outcomes of every model
    assert 0.4 * rows["whole queries"] < rows["own share"] < 0.6 * rows["whole queries"]
