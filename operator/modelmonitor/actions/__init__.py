"""Where decisions become changes to the cluster: the one place allowed to mutate workloads.

The evaluation loop hands each monitor's cycle (its evaluation, with the decisions) to an `Actions`
implementation together with the monitor's prior status, and writes the records it returns into
``status.actions``. `Remediator` is the implementation: scale, rollback (and the last-known-good revision),
retrain (and promotion), alert, each behind the same rails. Semantics: docs/actions.md.
"""

from modelmonitor.actions.base import (
    APPROVE_ANNOTATION,
    Actions,
    ActionsOutcome,
    Checkpoint,
    Event,
    MonitorContext,
)
from modelmonitor.actions.remediator import Remediator
from modelmonitor.actions.testhooks import CRASH_ENV, CrashHook

__all__ = [
    "APPROVE_ANNOTATION",
    "CRASH_ENV",
    "Actions",
    "ActionsOutcome",
    "Checkpoint",
    "CrashHook",
    "Event",
    "MonitorContext",
    "Remediator",
]
