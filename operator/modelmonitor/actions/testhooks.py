"""A test hook: stop the operator dead at a chosen point of an action, to show that acting is idempotent.

``MODELMONITOR_TEST_CRASH_AT=<point>[:<type>][@<n>]`` makes the operator process exit at once (``os._exit``, no
cleanup, like a killed pod) the ``n``-th time (the first when omitted) it reaches ``<point>`` for an action of
``<type>`` (any type when omitted). Points:

- ``before-act``: the action is recorded as Pending in status (alerts record nothing first), the cluster or
  Alertmanager not yet changed;
- ``after-act``: the cluster has been changed (a workload scaled or rolled back, a Job created) or the alert
  sent, the record not yet confirmed;
- ``after-promote``: a retraining Job's model version has been written into the workload, the Job not yet
  marked as handled and the record not yet written.

A restarted operator (without the variable) must then finish the action exactly once. Never set it in
production; the operator logs a warning at start when it is set.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping

CRASH_ENV = "MODELMONITOR_TEST_CRASH_AT"
CRASH_POINTS = ("before-act", "after-act", "after-promote")
#: The exit status of a deliberate crash, so a test can tell it from a real failure.
CRASH_EXIT_CODE = 86

log = logging.getLogger("modelmonitor.actions")


class CrashHook:
    """Exits the process at the configured point; does nothing when none is configured."""

    def __init__(self, setting: str | None = None) -> None:
        self.point: str | None = None
        self.action_type: str | None = None
        self.nth = 1
        self._reached = 0
        self._lock = threading.Lock()  # actions of several monitors run in parallel threads
        if setting:
            where, _, nth = setting.strip().partition("@")
            point, _, action_type = where.partition(":")
            if point not in CRASH_POINTS or (nth and (not nth.isdigit() or int(nth) < 1)):
                raise ValueError(f"{CRASH_ENV}={setting!r}: expected one of {', '.join(CRASH_POINTS)}[:<type>][@<n>]")
            self.point, self.action_type = point, action_type or None
            self.nth = int(nth or 1)
            log.warning("test hook %s=%s is set: the operator will exit at that point", CRASH_ENV, setting)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CrashHook:
        return cls((os.environ if environ is None else environ).get(CRASH_ENV))

    def __call__(self, point: str, action_type: str) -> None:
        if self.point != point or (self.action_type is not None and self.action_type != action_type):
            return
        with self._lock:
            self._reached += 1
            if self._reached != self.nth:
                return
            log.critical("test hook: exiting at %s of a %s action (reached %d times)", point, action_type, self.nth)
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stderr.flush()
            os._exit(CRASH_EXIT_CODE)
