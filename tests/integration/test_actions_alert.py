"""Alerts on the real sandbox: the real Alertmanager (Debian's) receives the alert with its evidence while the
policy fires, re-sent with a moving endsAt, and its resolution when the policy clears; a generic webhook (a real
HTTP server) receives the same as JSON; a Kubernetes Event is posted either way."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from actions_rig import Rig, crd_fixture, monitor, operator_account_fixture, rig_fixture  # noqa: F401 - fixtures

from support import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def active_alerts(rig: Rig) -> list[dict[str, Any]]:
    """The sandbox Alertmanager's active alerts for this test's monitor (resolved ones are not listed)."""
    with urllib.request.urlopen(f"{rig.cluster.alertmanager_url}/api/v2/alerts", timeout=5) as response:
        alerts = json.loads(response.read())
    return [
        a for a in alerts if a["labels"].get("namespace") == rig.namespace and a["labels"].get("monitor") == "fraud"
    ]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_alertmanager_receives_the_alert_while_firing_and_its_resolution(
    rig: Rig, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    hook_url, received = webhook
    rig.healthy()
    rig.operator.start()
    page = {
        "type": "alert",
        "alertmanager": {"url": rig.cluster.alertmanager_url},
        "webhook": {"url": hook_url},
        "resendInterval": "2s",
        "labels": {"team": "fraud"},
    }
    rig.apply(monitor({"page": page}))
    wait_for("Healthy", lambda: rig.status().get("phase") == "Healthy", timeout=60)

    rig.broken()
    [alert] = wait_for("the alert in Alertmanager", lambda: active_alerts(rig), timeout=60)
    labels = alert["labels"]
    assert (labels["alertname"], labels["policy"], labels["severity"], labels["team"]) == (
        "ModelMonitorPolicyFiring",
        "accuracy-drop",
        "critical",
        "fraud",
    )
    notes = alert["annotations"]
    assert float(notes["value"]) < 0.8 and notes["threshold"] == "0.8" and notes["window"] == "4s"
    assert "modelmonitor_labeled_predictions_total" in notes["query"]
    assert alert["status"]["state"] == "active"
    first_end = when(alert["endsAt"])
    wait_for("a re-send pushing endsAt forward", lambda: when(active_alerts(rig)[0]["endsAt"]) > first_end, timeout=20)
    assert len(active_alerts(rig)) == 1, "re-sent, not duplicated"
    assert [r["result"] for r in rig.records("page")] == ["Succeeded"], "one record for the episode"
    sent = next(e for e in rig.events("ActionSucceeded") if "page" in e["message"])
    assert "Alertmanager" in sent["message"] and "0.8" in sent["message"]

    rig.healthy()
    wait_for("the alert resolved in Alertmanager", lambda: not active_alerts(rig), timeout=60)
    records = rig.records("page")
    assert [(r["key"].endswith("#resolved"), r["result"]) for r in records] == [
        (False, "Succeeded"),
        (True, "Succeeded"),
    ]
    statuses = [p["status"] for p in received]
    assert statuses[0] == "firing" and statuses[-1] == "resolved" and "resolved" not in statuses[:-1]
    assert received[0]["policy"] == "accuracy-drop" and received[0]["value"] < 0.8
