"""The engine's view of a validated ModelMonitor: `MonitorSpec` and its `Rule`s from the API's `ModelMonitorSpec`.

Called once per watched change of a monitor (never per cycle): the API model has already checked every field
(the same rules the API server's schema and CEL enforce), so this is a mapping, not a second validation.
Per-cycle facts (a calibrated ``threshold: auto``, the PromQL actually sent) arrive with each `Measurement`.
"""

from __future__ import annotations

from modelmonitor.api import ModelMonitorSpec, Policy, duration_seconds
from modelmonitor.policy.cusum import DRIFT_ALLOWANCE, SequentialRule
from modelmonitor.policy.model import Combine, MonitorSpec, NoDataPolicy, Op, Reduce, Rule, Severity


def rule_from_policy(policy: Policy) -> Rule:
    """The `Rule` of one validated policy. ``threshold: auto`` leaves the threshold to each measurement."""
    condition = policy.condition
    return Rule(
        sequential=_sequential(policy),
        name=policy.name,
        op=Op(condition.op),
        threshold=condition.threshold,
        auto_threshold=bool(condition.auto_threshold),
        clear_threshold=condition.clear_threshold,
        for_seconds=duration_seconds(policy.for_),
        keep_firing_for_seconds=duration_seconds(policy.keep_firing_for),
        min_samples=policy.min_samples,
        no_data=NoDataPolicy(policy.no_data),
        reduce=Reduce(policy.reduce) if policy.reduce is not None else None,
        severity=Severity(policy.severity),
        actions=tuple(policy.actions),
        dry_run=policy.dry_run,
        window=policy.window,
        query=policy.query if policy.query is not None else f"signal {policy.signal}",
    )


def _sequential(policy: Policy) -> SequentialRule | None:
    sequential = policy.detection.sequential if policy.detection is not None else None
    if sequential is None:
        return None
    if sequential.reference_level is None:
        allowance = DRIFT_ALLOWANCE
    else:
        assert sequential.standard_deviation is not None and policy.condition.threshold is not None
        shift = abs(policy.condition.threshold - sequential.reference_level) / sequential.standard_deviation
        allowance = shift / 2.0
    return SequentialRule.for_budget(
        duration_seconds(sequential.false_alarm_every),
        duration_seconds(policy.window),
        allowance,
        reference_level=sequential.reference_level,
        standard_deviation=sequential.standard_deviation,
    )


def monitor_from_api(
    namespace: str, name: str, spec: ModelMonitorSpec, rules: tuple[Rule, ...] | None = None
) -> MonitorSpec:
    """The `MonitorSpec` of a validated ModelMonitor spec; ``rules``, when given, are its policies' (in order)."""
    return MonitorSpec(
        namespace=namespace,
        name=name,
        policies=rules if rules is not None else tuple(rule_from_policy(p) for p in spec.policies),
        combine=Combine(spec.combine.mode),
        dry_run=spec.dry_run,
        paused=spec.paused,
        degraded_after_errors=spec.degraded_after_errors,
        action_types={action_name: action.type for action_name, action in spec.actions.items()},
    )
