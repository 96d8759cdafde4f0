"""The ModelMonitor API: pydantic models of the custom resource's spec and status.

The CRD in ``crds/`` is generated from these models (``modelmonitor crd``); the operator validates what it
reads with them (:func:`parse_monitor`) and writes status through them (:func:`status_to_dict`).
"""

from modelmonitor.api.actions import (
    ACTION_TYPES,
    Action,
    ActionRails,
    AlertAction,
    Budget,
    Promotion,
    RetrainAction,
    RollbackAction,
    ScaleAction,
    ScaleDown,
)
from modelmonitor.api.common import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    duration_seconds,
    parse_duration,
)
from modelmonitor.api.spec import (
    DRIFT_SIGNALS,
    QUERY_PLACEHOLDERS,
    SIGNALS,
    Combine,
    Condition,
    ModelMonitorSpec,
    ModelSelector,
    Policy,
    PrometheusConnection,
    Target,
)
from modelmonitor.api.status import (
    MAX_ACTION_HISTORY,
    ActionRecord,
    ActionResult,
    LastKnownGood,
    ModelMonitorStatus,
    MonitorCondition,
    PolicyStatus,
    status_from_dict,
    status_to_dict,
)
from modelmonitor.api.validation import FieldProblem, SpecError, parse_monitor, parse_spec

__all__ = [
    "ACTION_TYPES",
    "API_VERSION",
    "DRIFT_SIGNALS",
    "GROUP",
    "KIND",
    "MAX_ACTION_HISTORY",
    "PLURAL",
    "QUERY_PLACEHOLDERS",
    "SIGNALS",
    "VERSION",
    "Action",
    "ActionRails",
    "ActionRecord",
    "ActionResult",
    "AlertAction",
    "Budget",
    "Combine",
    "Condition",
    "FieldProblem",
    "LastKnownGood",
    "ModelMonitorSpec",
    "ModelMonitorStatus",
    "ModelSelector",
    "MonitorCondition",
    "Policy",
    "PolicyStatus",
    "PrometheusConnection",
    "Promotion",
    "RetrainAction",
    "RollbackAction",
    "ScaleAction",
    "ScaleDown",
    "SpecError",
    "Target",
    "duration_seconds",
    "parse_duration",
    "parse_monitor",
    "parse_spec",
    "status_from_dict",
    "status_to_dict",
]
