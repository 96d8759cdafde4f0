"""Test support for the policy engine: an injected clock and an operator-like loop over status dicts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from modelmonitor.policy import Decision, Evaluation, Measurement, MonitorSpec, Rule, evaluate, render_status

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """The time ``seconds`` after T0."""
    return T0 + timedelta(seconds=seconds)


def ok(value: float = 0.95, samples: int | None = 500) -> Measurement:
    return Measurement.value(value, samples)


def bad(value: float = 0.70, samples: int | None = 500) -> Measurement:
    return Measurement.value(value, samples)


ERR = Measurement.error("Prometheus: connection refused")
EMPTY = Measurement.no_data("the query returned no series")
JUNK = Measurement.invalid("string result where a number was expected")


def accuracy_rule(**overrides: Any) -> Rule:
    """accuracy < 0.85, the running example of the docs."""
    fields: dict[str, Any] = {
        "name": "accuracy-drop",
        "op": "<",
        "threshold": 0.85,
        "window": "10m",
        "query": 'modelmonitor:accuracy{model="fraud"}',
        "actions": ("rollback", "page"),
    }
    fields.update(overrides)
    return Rule(**fields)


def monitor(*rules: Rule, **overrides: Any) -> MonitorSpec:
    fields: dict[str, Any] = {
        "namespace": "ml",
        "name": "fraud",
        "policies": rules,
        "action_types": {"rollback": "rollback", "page": "alert", "scaleUp": "scale", "retrain": "retrain"},
    }
    fields.update(overrides)
    return MonitorSpec(**fields)


@dataclass
class Operator:
    """Plays the operator shell: every cycle reads the last written status (through JSON, as the API server
    would store it), evaluates, records the decisions, and writes the new status."""

    spec: MonitorSpec
    status: dict[str, Any] = field(default_factory=dict)
    history: list[Evaluation] = field(default_factory=list)

    def cycle(self, seconds: float, measurements: Mapping[str, Measurement] | Measurement) -> Evaluation:
        if isinstance(measurements, Measurement):
            measurements = {rule.name: measurements for rule in self.spec.policies}
        prior = json.loads(json.dumps(self.status))
        result = evaluate(self.spec, prior, measurements, at(seconds))
        self.status = render_status(self.spec, result, prior_status=prior, observed_generation=1)
        self.history.append(result)
        return result

    def run(self, script: Iterable[tuple[float, Measurement]]) -> list[Evaluation]:
        return [self.cycle(t, m) for t, m in script]

    def state(self, policy: str | None = None) -> str:
        entries = self.status["policies"]
        entry = entries[0] if policy is None else next(e for e in entries if e["name"] == policy)
        return str(entry["state"])

    def acts(self) -> list[Decision]:
        return [d for e in self.history for d in e.decisions if d.kind.value == "act"]


def restarted(op: Operator) -> Operator:
    """A new operator process: nothing but the stored status survives."""
    return Operator(op.spec, status=json.loads(json.dumps(op.status)))
