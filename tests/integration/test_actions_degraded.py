"""A monitor that cannot see, on the real sandbox: with its Prometheus stopped, after degradedAfterErrors cycles
the operator posts one MonitorDegraded Warning Event and the real Alertmanager (API v2) holds a MonitorDegraded
alert naming the failing query and the error, re-sent while it lasts; once Prometheus is back the alert is
resolved and a MonitorRecovered Event says so."""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime
from typing import Any

import pytest
from actions_rig import Rig, crd_fixture, monitor, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures

from support import wait_for

pytestmark = pytest.mark.cluster

LIMIT = 6  # degradedAfterErrors: six failed 1 s cycles, long enough to see the errors before Degraded


def degraded_alerts(rig: Rig) -> list[dict[str, Any]]:
    """The sandbox Alertmanager's active MonitorDegraded alerts of this test's namespace (resolved ones are not
    listed)."""
    with urllib.request.urlopen(f"{rig.cluster.alertmanager_url}/api/v2/alerts", timeout=5) as response:
        alerts = json.loads(response.read())
    return [
        a
        for a in alerts
        if a["labels"].get("namespace") == rig.namespace and a["labels"].get("alertname") == "MonitorDegraded"
    ]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def condition(rig: Rig, kind: str) -> dict[str, Any]:
    return dict(next(c for c in rig.status().get("conditions") or [] if c["type"] == kind))


def test_an_unreachable_prometheus_degrades_the_monitor_alerts_and_resolves_when_it_is_back(rig: Rig) -> None:
    rig.healthy()
    rig.operator.start()
    page = {
        "type": "alert",
        "alertmanager": {"url": rig.cluster.alertmanager_url},
        "resendInterval": "2s",
        "labels": {"team": "fraud"},
    }
    rig.apply(monitor({"page": page}, degradedAfterErrors=LIMIT))
    wait_for("Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)
    assert degraded_alerts(rig) == []

    rig.prometheus.stop()
    wait_for("the policy's first error", lambda: rig.status()["policies"][0]["state"] == "Error", timeout=30)
    early = rig.events("MonitorDegraded")
    if rig.status()["policies"][0]["errorStreak"] < LIMIT:  # read after the Events: the streak only grows
        assert early == [], "fewer errors than degradedAfterErrors are not Degraded"
    [alert] = wait_for("the MonitorDegraded alert in Alertmanager", lambda: degraded_alerts(rig), timeout=60)
    labels = alert["labels"]
    assert (labels["monitor"], labels["model"], labels["severity"], labels["team"]) == (
        "fraud",
        "fraud",
        "warning",
        "fraud",
    )
    assert "policy" not in labels, "one alert for the monitor, whichever policies fail"
    notes = alert["annotations"]
    assert (
        notes["queries"].startswith("accuracy-drop: ") and "modelmonitor_labeled_predictions_total" in notes["queries"]
    )
    assert notes["lastError"], notes
    assert alert["status"]["state"] == "active"
    wait_for("phase Degraded", lambda: rig.status().get("phase") == "Degraded", timeout=20)
    assert rig.status()["policies"][0]["errorStreak"] >= LIMIT
    assert when(alert["startsAt"]) == when(condition(rig, "Degraded")["lastTransitionTime"]), "the episode's start"
    [event] = wait_for("the MonitorDegraded Event", lambda: rig.events("MonitorDegraded"), timeout=20)
    assert event["type"] == "Warning" and event["involvedObject"]["name"] == "fraud"
    assert "accuracy-drop" in event["message"] and "sent via page" in event["message"]

    first_end = when(alert["endsAt"])
    wait_for(
        "a re-send pushing endsAt forward",
        lambda: (alerts := degraded_alerts(rig)) and when(alerts[0]["endsAt"]) > first_end,
        timeout=20,
    )
    assert len(degraded_alerts(rig)) == 1, "re-sent, not duplicated"
    [degraded] = rig.events("MonitorDegraded")
    assert (degraded.get("count") or 1) == 1, "one Event per episode"
    assert not (rig.status().get("actions") or []), "no action on the model while it cannot be seen"

    rig.prometheus.start()
    wait_for("the alert resolved in Alertmanager", lambda: not degraded_alerts(rig), timeout=90)
    assert condition(rig, "Degraded")["status"] == "False"
    assert rig.status()["phase"] != "Degraded"
    [recovered] = wait_for("the MonitorRecovered Event", lambda: rig.events("MonitorRecovered"), timeout=20)
    assert recovered["type"] == "Normal"
    [degraded] = rig.events("MonitorDegraded")
    assert (degraded.get("count") or 1) == 1, "one Event for the episode, also where Events are aggregated"
