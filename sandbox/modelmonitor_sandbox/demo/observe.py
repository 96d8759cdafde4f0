"""Watching the demo as a user would: the ModelMonitor's status, its Events, the Deployment, and what serves.

`Observer.until` is how the story waits: once a second it reads the monitor and the Deployment, prints each new
Event on the monitor, prints ``kubectl get mm`` whenever the phase, the firing policies or the last action
change, prints each new entry of the monitor's registry history (``status.registry``: versions served, alias
moves), prints a progress line every few seconds, and keeps every observation for the timeline picture.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modelmonitor.adapters.kubernetes import DEPLOYMENT, Kind, KubernetesError, Workloads
from modelmonitor.api import API_VERSION, KIND
from modelmonitor_sandbox.demo.fleet import Fleet, model_uri
from modelmonitor_sandbox.demo.traffic import Traffic, TrafficStats
from modelmonitor_sandbox.demo.world import ALIAS

MODELMONITOR = Kind(API_VERSION, KIND)
EVENT = Kind("v1", "Event")


class Printer:
    """Prints lines (from any thread) with the time since the demo started."""

    def __init__(self, start: float, stream: Any = None) -> None:
        self.start = start
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def clock(self, at: float | None = None) -> str:
        seconds = max(0, int((time.time() if at is None else at) - self.start))
        return f"{seconds // 60:02d}:{seconds % 60:02d}"

    def line(self, text: str) -> None:
        with self._lock:
            print(f"  {self.clock()}  {text}", file=self.stream, flush=True)

    def block(self, text: str) -> None:
        with self._lock:
            print(text.rstrip("\n"), file=self.stream, flush=True)

    def step(self, text: str) -> None:
        with self._lock:
            print(f"\n==> {self.clock()}  {text}", file=self.stream, flush=True)


@dataclass(frozen=True)
class PolicyView:
    """One policy as the status shows it."""

    name: str
    state: str
    value: float | None
    threshold: float | None
    since: str
    message: str


@dataclass(frozen=True)
class Observation:
    """What a user could see at one moment."""

    at: float
    phase: str
    firing: str
    last_action: str
    policies: dict[str, PolicyView]
    actions: list[dict[str, Any]]
    last_known_good: dict[str, Any] | None
    replicas: int
    model_uri: str  # the MODEL_URI the Deployment's model container pins
    registry: dict[str, Any]  # status.registry
    revision: str
    serving: dict[str, int]
    traffic: TrafficStats

    def state(self, policy: str) -> str:
        view = self.policies.get(policy)
        return view.state if view is not None else ""

    def records(self, action: str) -> list[dict[str, Any]]:
        return [a for a in self.actions if a.get("name") == action]


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def policy_views(status: Mapping[str, Any]) -> dict[str, PolicyView]:
    views = {}
    for entry in status.get("policies") or []:
        name = str(entry.get("name", ""))
        views[name] = PolicyView(
            name=name,
            state=str(entry.get("state", "")),
            value=_number(entry.get("value")),
            threshold=_number(entry.get("threshold")),
            since=str(entry.get("since") or entry.get("lastTransitionTime") or ""),
            message=str(entry.get("message", "")),
        )
    return views


class StoryTimeout(RuntimeError):
    """A step of the story did not happen in time."""


class Observer:
    """Reads and narrates; keeps every observation."""

    def __init__(
        self,
        workloads: Workloads,
        kubectl: Callable[..., str],
        printer: Printer,
        namespace: str,
        monitor: str,
        deployment: str,
        fleet: Fleet,
        traffic: Traffic,
        name: Callable[[str], str],
        progress_every: float = 10.0,
    ) -> None:
        self.workloads = workloads
        self.kubectl = kubectl
        self.printer = printer
        self.namespace = namespace
        self.monitor = monitor
        self.deployment = deployment
        self.fleet = fleet
        self.traffic = traffic
        self.name = name  # how the story names a registered version number
        self.progress_every = progress_every
        self.observations: list[Observation] = []
        self.events: list[dict[str, Any]] = []
        self._seen_events: set[str] = set()
        self._shown: tuple[str, str, str] | None = None
        self._history_seen: set[tuple[str, str, str]] = set()
        self._last_progress = 0.0
        self._last_traffic: tuple[float, TrafficStats] | None = None

    # --- reading --------------------------------------------------------------------------------------------

    def observe(self) -> Observation:
        try:
            monitor = self.workloads.get(MODELMONITOR, self.namespace, self.monitor)
        except KubernetesError as exc:
            if exc.status != 404:
                raise
            monitor = {}
        status = monitor.get("status") or {}
        deployment = self.workloads.get(DEPLOYMENT, self.namespace, self.deployment)
        template = (deployment.get("spec") or {}).get("template") or {}
        observation = Observation(
            at=time.time(),
            phase=str(status.get("phase", "")),
            firing=str(status.get("firingPolicies", "")),
            last_action=str(status.get("lastAction", "")),
            policies=policy_views(status),
            actions=[dict(a) for a in status.get("actions") or []],
            last_known_good=dict(status["lastKnownGood"]) if status.get("lastKnownGood") else None,
            replicas=int((deployment.get("spec") or {}).get("replicas") or 0),
            model_uri=model_uri(template, "model") or "",
            registry=dict(status.get("registry") or {}),
            revision=str(
                ((deployment.get("metadata") or {}).get("annotations") or {}).get(
                    "deployment.kubernetes.io/revision", ""
                )
            ),
            serving=dict(self.fleet.serving()),
            traffic=self.traffic.snapshot(),
        )
        self.observations.append(observation)
        return observation

    def new_events(self) -> list[dict[str, Any]]:
        fresh = []
        for event in self.workloads.list(EVENT, self.namespace):
            name = event["metadata"]["name"]
            involved = event.get("involvedObject") or {}
            if name in self._seen_events or involved.get("kind") != KIND or involved.get("name") != self.monitor:
                continue
            self._seen_events.add(name)
            fresh.append(event)
        fresh.sort(key=lambda e: (e.get("firstTimestamp") or e.get("eventTime") or "", e["metadata"]["name"]))
        self.events.extend(fresh)
        return fresh

    # --- narrating ------------------------------------------------------------------------------------------

    def get_mm(self) -> str:
        return self.kubectl("get", "mm", self.monitor, "-n", self.namespace, check=False)

    def narrate(self, observation: Observation) -> None:
        for event in self.new_events():
            message = str(event.get("message", "")).split("; query:", 1)[0]
            if len(message) > 240:
                message = message[:237] + "..."
            self.printer.line(f"Event {event.get('type', ''):7} {event.get('reason', '')}: {message}")
        for entry in observation.registry.get("history") or []:
            seen = (str(entry.get("event")), str(entry.get("version")), str(entry.get("at")))
            if seen not in self._history_seen:
                self._history_seen.add(seen)
                self.printer.line(
                    f"status.registry: {entry.get('event')} {self.name(str(entry.get('version')))} "
                    f"({entry.get('source')}): {entry.get('why')}"
                )
        shown = (observation.phase, observation.firing, observation.last_action)
        if shown != self._shown and observation.phase:
            self._shown = shown
            self.printer.line("$ kubectl get mm")
            self.printer.block("\n".join("      " + row for row in self.get_mm().strip().splitlines()))
        if observation.at - self._last_progress >= self.progress_every:
            self._last_progress = observation.at
            self.printer.line(self.progress(observation))

    def progress(self, observation: Observation) -> str:
        parts = [f"phase {observation.phase or '-'}"]
        for view in observation.policies.values():
            value = "-" if view.value is None else f"{view.value:.3g}"
            threshold = "" if view.threshold is None else f" (threshold {view.threshold:.3g})"
            parts.append(f"{view.name} {value}{threshold} {view.state}")
        serving = ", ".join(f"{v} x{n}" for v, n in sorted(observation.serving.items())) or "none"
        parts.append(f"replicas {observation.replicas}, serving {serving}")
        if observation.registry:
            alias = self.name(str(observation.registry.get("aliasVersion", "")))
            parts.append(f"{ALIAS} {alias}")
        now, stats = observation.at, observation.traffic
        if self._last_traffic is not None and now > self._last_traffic[0]:
            then, before = self._last_traffic
            rate = (stats.requests - before.requests) / (now - then)
            shed = stats.shed - before.shed
            parts.append(f"{rate:.0f} req/s" + (f" ({shed} shed: queue full)" if shed else ""))
        self._last_traffic = (now, stats)
        return "· " + " | ".join(parts)

    def until(
        self,
        what: str,
        done: Callable[[Observation], bool],
        timeout: float,
        fail: Callable[[Observation], str | None] | None = None,
    ) -> Observation:
        """Observe and narrate once a second until ``done``; raise `StoryTimeout` after ``timeout`` seconds, or at
        once when ``fail`` returns a reason."""
        self.printer.line(f"waiting: {what}")
        deadline = time.monotonic() + timeout
        while True:
            observation = self.observe()
            self.narrate(observation)
            if done(observation):
                return observation
            reason = fail(observation) if fail is not None else None
            if reason:
                raise StoryTimeout(f"{what}: {reason}")
            if time.monotonic() > deadline:
                raise StoryTimeout(f"{what}: not within {timeout:.0f} s")
            time.sleep(1.0)

    def hold(self, seconds: float) -> Observation:
        """Observe and narrate for ``seconds``."""
        end = time.monotonic() + seconds
        observation = self.observe()
        self.narrate(observation)
        while time.monotonic() < end:
            time.sleep(1.0)
            observation = self.observe()
            self.narrate(observation)
        return observation
