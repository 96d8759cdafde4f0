"""The pure policy engine: measurements to outcomes, per-policy state machines, decisions, status.

No I/O and no clock of its own: every function takes ``now``. The operator shell calls `evaluate` once per
cycle per monitor, hands `Evaluation.decisions` to the actions layer, emits an Event per
`Evaluation.transitions`, and writes `render_status(...)`. Semantics: docs/policies.md.
"""

from modelmonitor.policy.decide import Decision, DecisionKind, decide, idempotency_key
from modelmonitor.policy.engine import Evaluation, evaluate, prior_states, readable_prior_states
from modelmonitor.policy.model import (
    Combine,
    Measurement,
    MeasurementKind,
    MonitorSpec,
    NoDataPolicy,
    Op,
    Reduce,
    Rule,
    Series,
    Severity,
)
from modelmonitor.policy.outcome import Outcome, OutcomeKind, classify, threshold_in_force
from modelmonitor.policy.records import ActionRecord, ActionResult, records_from_status
from modelmonitor.policy.spec import monitor_from_api, rule_from_policy
from modelmonitor.policy.state import PolicyState, PolicyStep, State, Transition, step
from modelmonitor.policy.status import (
    MAX_ACTION_HISTORY,
    Phase,
    condition_of,
    conflict_message,
    degraded_policies,
    merge_actions,
    monitor_phase,
    render_invalid_status,
    render_status,
)
from modelmonitor.policy.timefmt import format_time, parse_duration, parse_time

__all__ = [
    "MAX_ACTION_HISTORY",
    "ActionRecord",
    "ActionResult",
    "Combine",
    "Decision",
    "DecisionKind",
    "Evaluation",
    "Measurement",
    "MeasurementKind",
    "MonitorSpec",
    "NoDataPolicy",
    "Op",
    "Outcome",
    "OutcomeKind",
    "Phase",
    "PolicyState",
    "PolicyStep",
    "Reduce",
    "Rule",
    "Series",
    "Severity",
    "State",
    "Transition",
    "classify",
    "condition_of",
    "conflict_message",
    "decide",
    "degraded_policies",
    "evaluate",
    "format_time",
    "idempotency_key",
    "merge_actions",
    "monitor_from_api",
    "monitor_phase",
    "parse_duration",
    "parse_time",
    "prior_states",
    "readable_prior_states",
    "records_from_status",
    "render_invalid_status",
    "render_status",
    "rule_from_policy",
    "step",
    "threshold_in_force",
]
