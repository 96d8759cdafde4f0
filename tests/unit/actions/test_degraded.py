"""A monitor that cannot measure: after degradedAfterErrors failed cycles a Warning Event once per episode and a
MonitorDegraded alert through every alert action, re-sent while it lasts and resolved when it recovers; the
episode (its startsAt) comes from the Degraded condition in status, so a restarted operator carries it on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fakes import FakeSender, Scenario, monitor_spec

from modelmonitor.actions import Remediator
from modelmonitor.actions.alert import DEGRADED_ALERTNAME
from modelmonitor.policy import Measurement, format_time, parse_time

GOOD = 0.95
DOWN = Measurement.error("HTTP 503 from Prometheus http://prom:9090")
AM = "http://am:9093"
HOOK = "http://hooks:8080/alerts"


def page(**fields: Any) -> dict[str, Any]:
    return {
        "type": "alert",
        "alertmanager": {"url": AM},
        "resendInterval": "30s",
        "labels": {"team": "fraud"},
        **fields,
    }


def events(s: Scenario, reason: str) -> list[str]:
    return [e.message for o in s.outcomes for e in o.events if e.reason == reason]


def degraded_alerts(sender: FakeSender) -> list[dict[str, Any]]:
    return [a for _url, a in sender.alerts if a["labels"]["alertname"] == DEGRADED_ALERTNAME]


def test_the_third_failed_cycle_posts_one_event_and_alerts_with_the_queries_and_the_error() -> None:
    s = Scenario(monitor_spec({"page": page()}))
    s.cycle(GOOD)
    s.cycle(DOWN)
    s.cycle(DOWN)
    assert events(s, "MonitorDegraded") == [] and s.sender.alerts == [], "not before degradedAfterErrors (3)"
    s.cycle(DOWN)
    [message] = events(s, "MonitorDegraded")
    assert "accuracy-drop" in message and "HTTP 503" in message and "sent via page" in message
    [alert] = degraded_alerts(s.sender)
    assert alert["labels"] == {
        "team": "fraud",
        "alertname": "MonitorDegraded",
        "namespace": "ml",
        "monitor": "fraud",
        "model": "fraud",
        "severity": "warning",
    }, "one alert for the monitor, whichever policies fail"
    notes = alert["annotations"]
    assert notes["queries"] == "accuracy-drop: signal accuracy"
    assert "HTTP 503 from Prometheus" in notes["lastError"]
    assert parse_time(alert["startsAt"]) == s.now
    degraded = next(c for c in s.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["lastTransitionTime"] == alert["startsAt"]
    assert s.records() == [], "an alert about the monitor itself is not a policy action"


def test_re_sent_while_degraded_and_resolved_once_on_recovery() -> None:
    s = Scenario(monitor_spec({"page": page()}, degradedAfterErrors=1))
    s.cycle(DOWN)
    s.cycle(DOWN, after=10)
    assert len(degraded_alerts(s.sender)) == 1, "not before resendInterval"
    s.cycle(DOWN, after=25)
    first, second = degraded_alerts(s.sender)
    assert first["labels"] == second["labels"] and first["startsAt"] == second["startsAt"], "the same alert"
    assert parse_time(second["endsAt"]) > parse_time(first["endsAt"]) > s.now
    assert len(events(s, "MonitorDegraded")) == 1, "one Event per episode"

    s.cycle(GOOD)
    resolved = degraded_alerts(s.sender)[-1]
    assert parse_time(resolved["endsAt"]) == s.now and resolved["startsAt"] == first["startsAt"]
    assert len(events(s, "MonitorRecovered")) == 1
    s.cycle(GOOD)
    s.cycle(GOOD, after=60)
    assert len(degraded_alerts(s.sender)) == 3, "resolved once, then silence"


def test_a_new_episode_is_a_new_event() -> None:
    s = Scenario(monitor_spec({"page": page()}, degradedAfterErrors=1))
    s.cycle(DOWN)
    s.cycle(GOOD)
    s.cycle(DOWN)
    assert len(events(s, "MonitorDegraded")) == 2
    starts = [a["startsAt"] for a in degraded_alerts(s.sender)]
    assert starts[0] != starts[-1]


def test_every_alert_action_is_told_the_webhook_as_json() -> None:
    actions = {"page": page(), "hook": {"type": "alert", "webhook": {"url": HOOK}}, "quiet": page(dryRun=True)}
    s = Scenario(monitor_spec(actions, degradedAfterErrors=1))
    s.cycle(DOWN)
    assert len(degraded_alerts(s.sender)) == 1, "the dry-run action sends nothing"
    [(url, payload)] = s.sender.webhooks
    assert url == HOOK and payload["status"] == "firing" and payload["labels"]["alertname"] == DEGRADED_ALERTNAME
    s.cycle(GOOD)
    assert s.sender.webhooks[-1][1]["status"] == "resolved"


def test_a_monitor_in_dry_run_still_says_it_cannot_see() -> None:
    s = Scenario(monitor_spec({"page": page()}, degradedAfterErrors=1, dryRun=True))
    s.cycle(DOWN)
    assert len(degraded_alerts(s.sender)) == 1 and len(events(s, "MonitorDegraded")) == 1


def test_without_an_alert_action_the_event_still_says_it() -> None:
    s = Scenario(monitor_spec({"up": {"type": "scale", "step": 1, "maxReplicas": 3}}, degradedAfterErrors=2))
    s.cycle(DOWN)
    s.cycle(DOWN)
    s.cycle(DOWN)
    [message] = events(s, "MonitorDegraded")
    assert "no alert action" in message
    assert s.sender.alerts == [] and s.cluster.calls == [], "and nothing is acted on"


def test_a_restarted_operator_continues_the_episode_without_a_second_event() -> None:
    s = Scenario(monitor_spec({"page": page()}, degradedAfterErrors=1))
    s.cycle(DOWN)
    began = degraded_alerts(s.sender)[0]["startsAt"]
    s.remediator = Remediator(s.cluster, FakeSender(), clock=lambda: s.seconds)
    s.sender = s.remediator.alert.sender  # type: ignore[assignment]
    s.cycle(DOWN)
    [again] = degraded_alerts(s.sender)
    assert again["startsAt"] == began, "re-sent at once, same episode"
    assert len(events(s, "MonitorDegraded")) == 1
    s.cycle(GOOD)
    assert parse_time(degraded_alerts(s.sender)[-1]["endsAt"]) == s.now, "and resolved by the new process"


def test_an_unreachable_alertmanager_is_reported_once_and_retried_every_cycle() -> None:
    s = Scenario(monitor_spec({"page": page()}, degradedAfterErrors=1))
    s.sender.down = True
    s.cycle(DOWN)
    s.cycle(DOWN)
    assert len(events(s, "AlertNotDelivered")) == 1 and len(events(s, "MonitorDegraded")) == 1
    s.sender.down = False
    s.cycle(DOWN)
    [alert] = degraded_alerts(s.sender)
    assert alert["startsAt"] == format_time(s.now - timedelta(seconds=20)), "the episode began at the first cycle"
