"""The command's input checks (before any query) and its text report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from modelmonitor.backtest import cli as backtest_cli
from modelmonitor.backtest.cli import BacktestError, load_monitor, parse_when
from modelmonitor.backtest.report import to_text
from modelmonitor.cli import main

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
MONITOR = """
apiVersion: modelmonitor.dev/v1alpha1
kind: ModelMonitor
metadata: {name: fraud}
spec:
  target: {name: fraud}
  model: {name: fraud}
  paused: true
  policies:
  - {name: errors, signal: errorRate, window: 5m, condition: {op: ">", threshold: 0.05}}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("now-6h", datetime(2026, 12, 6, 6, 0, tzinfo=UTC)),
        ("2026-12-01T00:00:00Z", datetime(2026, 12, 1, tzinfo=UTC)),
        ("1764547200", datetime(2025, 12, 1, tzinfo=UTC)),
    ],
)
def test_times_are_rfc3339_unix_seconds_or_relative_to_now(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "now-6x", "2026-13-01"])
def test_a_bad_time_names_what_is_accepted(text: str) -> None:
    with pytest.raises(BacktestError, match=f"time '{text}'"):
        parse_when(text, NOW)


def test_a_monitor_file_is_validated_as_the_operator_does_and_replayed_unpaused(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MONITOR)
    monitor = load_monitor(path, "ml")
    assert (monitor.namespace, monitor.name, monitor.spec.paused) == ("ml", "fraud", False)

    path.write_text(MONITOR.replace('op: ">"', 'op: "=="'))
    with pytest.raises(BacktestError, match=r"invalid ModelMonitor: .*spec\.policies\[0\]\.condition\.op"):
        load_monitor(path, "ml")
    path.write_text("kind: ConfigMap\n")
    with pytest.raises(BacktestError, match="expected exactly one ModelMonitor document, found 0"):
        load_monitor(path, "ml")
    with pytest.raises(BacktestError, match="No such file"):
        load_monitor(tmp_path / "missing.yaml", "ml")


def backtest(tmp_path: Path, *args: str) -> int:
    path = tmp_path / "m.yaml"
    path.write_text(MONITOR)
    return main(["backtest", str(path), "--prometheus-url", "http://127.0.0.1:9", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "now", "--to", "now-1h"), "--from now must be before --to now-1h"),
        (("--from", "now-1h", "--step", "1.5s"), "--step: '1.5s' is not a duration"),
        (("--from", "now-1h", "--step", "500ms"), "step 0.5s: expected whole seconds"),
    ],
)
def test_bad_input_is_refused_before_any_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    assert backtest(tmp_path, *args) == 2
    assert message in capsys.readouterr().err


def test_png_without_matplotlib_says_what_to_install_before_replaying(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backtest_cli.importlib.util, "find_spec", lambda name: None)
    assert backtest(tmp_path, "--from", "now-1h", "--png", str(tmp_path / "t.png")) == 2
    assert "--png needs matplotlib" in capsys.readouterr().err


def test_the_text_report_lists_episodes_and_actions() -> None:
    document: dict[str, Any] = {
        "monitor": "ml/fraud",
        "from": "2026-12-06T00:00:00Z",
        "to": "2026-12-06T06:00:00Z",
        "step": "1m",
        "steps": 361,
        "source": {"instantOnly": []},
        "policies": [
            {
                "name": "errors",
                "signal": "errorRate",
                "evaluations": 361,
                "breaches": 70,
                "noData": 3,
                "errors": 0,
                "pendingOnly": 1,
                "firingSeconds": 3600,
                "episodes": [
                    {
                        "activeSince": "2026-12-06T01:00:00Z",
                        "firingAt": "2026-12-06T01:10:00Z",
                        "resolvedAt": None,
                        "peak": 0.2,
                    }
                ],
            }
        ],
        "actions": [
            {"at": "2026-12-06T01:10:00Z", "result": "wouldRun", "name": "page", "type": "alert", "policy": "errors"}
        ],
    }
    text = to_text(document)
    assert "policy errors (errorRate): 1 episode(s) fired, 1 pending only; 361 evaluations, 70 breaches" in text
    assert (
        "firing 2026-12-06T01:10:00Z -> still firing at the end (pending since 2026-12-06T01:00:00Z, peak 0.2)" in text
    )
    assert "2026-12-06T01:10:00Z wouldRun         page (alert) for errors" in text
    assert "actions: 1 would have run (1 records)" in text
