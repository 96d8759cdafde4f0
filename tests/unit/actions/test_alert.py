"""The alert action: Event always, Alertmanager v2 alerts carrying the evidence, re-sent with endsAt while
firing, resolved on clear, a generic webhook, and delivery failures shown without repeating Events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fakes import FakeSender, Scenario, monitor_spec

from modelmonitor.actions.alert import ALERTNAME
from modelmonitor.policy import parse_time

BAD, GOOD = 0.5, 0.95
AM = "http://am:9093"
HOOK = "http://hooks:8080/alerts"


def alert_scenario(**fields: Any) -> Scenario:
    action = {
        "type": "alert",
        "alertmanager": {"url": AM},
        "resendInterval": "30s",
        "labels": {"team": "fraud"},
        **fields,
    }
    return Scenario(monitor_spec({"page": action}))


def test_the_alert_carries_the_evidence_in_labels_and_annotations() -> None:
    s = alert_scenario()
    s.cycle(GOOD)
    s.cycle(BAD)
    [(url, alert)] = s.sender.alerts
    assert url == AM
    assert alert["labels"] == {
        "team": "fraud",
        "alertname": ALERTNAME,
        "namespace": "ml",
        "monitor": "fraud",
        "model": "fraud",
        "policy": "accuracy-drop",
        "severity": "critical",
    }
    notes = alert["annotations"]
    assert (notes["value"], notes["threshold"], notes["window"]) == ("0.5", "0.8", "5m")
    assert "accuracy" in notes["query"] or notes["query"]
    ends = parse_time(alert["endsAt"])
    assert ends - s.now == timedelta(seconds=4 * 30), "endsAt: four re-send intervals ahead"
    assert s.results("page") == [("page", "Succeeded")]
    assert "Alertmanager" in s.records("page")[0]["reason"]


def test_re_sent_while_firing_and_resolved_once_on_clear() -> None:
    s = alert_scenario()
    s.cycle(BAD)
    s.cycle(BAD, after=10)
    assert len(s.sender.alerts) == 1, "not before resendInterval"
    s.cycle(BAD, after=25)
    assert len(s.sender.alerts) == 2
    assert s.sender.alerts[0][1]["labels"] == s.sender.alerts[1][1]["labels"], "the same alert, refreshed"
    assert parse_time(s.sender.alerts[1][1]["endsAt"]) > parse_time(s.sender.alerts[0][1]["endsAt"])
    s.cycle(GOOD)
    resolved = s.sender.alerts[-1][1]
    assert parse_time(resolved["endsAt"]) == s.now
    s.cycle(GOOD)
    assert len(s.sender.alerts) == 3
    assert s.results("page") == [("page", "Succeeded"), ("page#resolved", "Succeeded")]


def test_an_event_only_alert_succeeds_without_endpoints() -> None:
    s = Scenario(monitor_spec({"page": {"type": "alert"}}))
    s.cycle(BAD)
    assert s.sender.alerts == [] and s.results("page") == [("page", "Succeeded")]
    assert "alert sent (Event)" in s.records("page")[0]["reason"]


def test_the_webhook_gets_the_same_alert_as_json() -> None:
    s = alert_scenario(webhook={"url": HOOK})
    s.cycle(BAD)
    s.cycle(GOOD)
    firing, resolved = (p for _u, p in s.sender.webhooks)
    assert firing["status"] == "firing" and resolved["status"] == "resolved"
    assert firing["value"] == 0.5 and firing["threshold"] == 0.8 and firing["window"] == "5m"
    assert firing["labels"]["policy"] == "accuracy-drop"


def test_an_unreachable_alertmanager_is_reported_once_and_retried() -> None:
    s = alert_scenario()
    s.sender.down = True
    s.cycle(BAD)
    s.cycle(BAD)
    assert s.results("page") == [("page", "Failed")]
    assert "connection refused" in s.records("page")[0]["reason"]
    assert len(s.outcomes[0].records) == 1 and s.outcomes[1].records == [], "one Event, not one per cycle"
    s.sender.down = False
    s.cycle(BAD)
    assert len(s.sender.alerts) == 1
    assert s.results("page") == [("page", "Failed"), ("page", "Succeeded")]


def test_a_restarted_operator_re_sends_instead_of_forgetting() -> None:
    s = alert_scenario()
    s.cycle(BAD)
    s.remediator = type(s.remediator)(s.cluster, FakeSender())
    s.sender = s.remediator.alert.sender  # type: ignore[assignment]
    s.cycle(BAD)
    assert len(s.sender.alerts) == 1, "re-sent at once: the new process does not know when it was last sent"
    assert s.results("page") == [("page", "Succeeded")], "still one record for the episode"
    s.cycle(GOOD)
    assert s.results("page")[-1] == ("page#resolved", "Succeeded")
