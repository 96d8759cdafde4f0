"""Build the engine's inputs from a ModelMonitor spec as a plain dict (camelCase, as in the CRD).

The operator shell hands over ``spec`` (e.g. a pydantic model dumped with ``by_alias=True``) and gets back a
`MonitorSpec`. Errors name the field the way ``kubectl explain`` does (``spec.policies[0].condition.op``), so
they can go straight into ``status.message`` of an Invalid monitor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelmonitor.policy.model import Combine, MonitorSpec, NoDataPolicy, Op, Reduce, Rule, Severity
from modelmonitor.policy.timefmt import parse_duration


def _choice(value: Any, allowed: type[Any], field: str, default: Any) -> Any:
    if value is None:
        return default
    try:
        return allowed(value)
    except ValueError:
        options = ", ".join(repr(m.value) for m in allowed)
        raise ValueError(f"{field}: must be one of {options}, got {value!r}") from None


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field}: expected a number, got {value!r}")
    return float(value)


def rule_from_spec(
    policy: Mapping[str, Any],
    *,
    index: int = 0,
    calibrated_threshold: float | None = None,
    query: str | None = None,
) -> Rule:
    """The `Rule` for ``spec.policies[index]``.

    ``calibrated_threshold`` fills in ``threshold: auto`` / ``autoThreshold: true`` (None leaves the policy
    uncalibrated: NoData).
    ``query`` is the rendered PromQL for messages; by default the policy's own ``query`` template, or
    ``signal <name>`` for a built-in signal.
    """
    where = f"spec.policies[{index}]"
    name = policy.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: required, a non-empty string")
    condition = policy.get("condition")
    if not isinstance(condition, Mapping):
        raise ValueError(f"{where}.condition: required, an object with op and threshold")
    op = _choice(condition.get("op"), Op, f"{where}.condition.op", None)
    if op is None:
        raise ValueError(f"{where}.condition.op: required, one of '<', '<=', '>', '>='")
    raw_threshold = condition.get("threshold")
    # A calibrated threshold is written `threshold: auto` or, in the CRD, `autoThreshold: true`.
    auto_flag = condition.get("autoThreshold") is True
    threshold: float | None
    if auto_flag and raw_threshold not in (None, "auto"):
        raise ValueError(f"{where}.condition.threshold: set exactly one of threshold or autoThreshold: true")
    if raw_threshold == "auto" or auto_flag:
        threshold = calibrated_threshold
    elif raw_threshold is None:
        raise ValueError(f"{where}.condition.threshold: required, a number (or autoThreshold: true)")
    else:
        threshold = _number(raw_threshold, f"{where}.condition.threshold")
    raw_clear = condition.get("clearThreshold")
    clear = None if raw_clear is None else _number(raw_clear, f"{where}.condition.clearThreshold")
    min_samples = policy.get("minSamples", 0)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 0:
        raise ValueError(f"{where}.minSamples: expected a non-negative integer, got {min_samples!r}")
    actions = policy.get("actions") or []
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise ValueError(f"{where}.actions: expected a list of action names")
    if query is None:
        template = policy.get("query")
        signal = policy.get("signal")
        query = template if isinstance(template, str) else (f"signal {signal}" if signal else "")
    try:
        return Rule(
            name=name,
            op=op,
            threshold=threshold,
            clear_threshold=clear,
            for_seconds=parse_duration(policy.get("for", "0s"), field=f"{where}.for"),
            keep_firing_for_seconds=parse_duration(policy.get("keepFiringFor", "0s"), field=f"{where}.keepFiringFor"),
            min_samples=min_samples,
            no_data=_choice(policy.get("noData"), NoDataPolicy, f"{where}.noData", NoDataPolicy.HOLD),
            reduce=_choice(policy.get("reduce"), Reduce, f"{where}.reduce", None),
            severity=_choice(policy.get("severity"), Severity, f"{where}.severity", Severity.WARNING),
            actions=tuple(actions),
            dry_run=bool(policy.get("dryRun", False)),
            window=str(policy.get("window", "")),
            query=query,
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def monitor_from_spec(
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    *,
    calibrated_thresholds: Mapping[str, float] | None = None,
    queries: Mapping[str, str] | None = None,
) -> MonitorSpec:
    """The `MonitorSpec` of a ModelMonitor ``spec`` dict; ValueError names the offending field."""
    calibrated_thresholds = calibrated_thresholds or {}
    queries = queries or {}
    policies = spec.get("policies") or []
    if not isinstance(policies, list):
        raise ValueError("spec.policies: expected a list")
    rules = []
    for i, policy in enumerate(policies):
        if not isinstance(policy, Mapping):
            raise ValueError(f"spec.policies[{i}]: expected an object")
        policy_name = policy.get("name")
        rules.append(
            rule_from_spec(
                policy,
                index=i,
                calibrated_threshold=calibrated_thresholds.get(str(policy_name)),
                query=queries.get(str(policy_name)),
            )
        )
    actions = spec.get("actions") or {}
    if not isinstance(actions, Mapping):
        raise ValueError("spec.actions: expected a map of action name to action")
    action_types: dict[str, str] = {}
    for action_name, action in actions.items():
        if not isinstance(action, Mapping) or not isinstance(action.get("type"), str):
            raise ValueError(f"spec.actions.{action_name}.type: required (scale, rollback, retrain or alert)")
        action_types[str(action_name)] = action["type"]
    combine = spec.get("combine") or {}
    if not isinstance(combine, Mapping):
        raise ValueError("spec.combine: expected an object with mode")
    mode = _choice(combine.get("mode"), Combine, "spec.combine.mode", Combine.ANY_OF)
    degraded_after = spec.get("degradedAfterErrors", 3)
    if isinstance(degraded_after, bool) or not isinstance(degraded_after, int) or degraded_after < 1:
        raise ValueError(f"spec.degradedAfterErrors: expected a positive integer, got {degraded_after!r}")
    try:
        return MonitorSpec(
            namespace=namespace,
            name=name,
            policies=tuple(rules),
            combine=mode,
            dry_run=bool(spec.get("dryRun", False)),
            paused=bool(spec.get("paused", False)),
            degraded_after_errors=degraded_after,
            action_types=action_types,
        )
    except ValueError as exc:
        raise ValueError(f"spec: {exc}") from None
