"""The demo's ending: a timeline picture of signals, thresholds and actions, and a summary table.

The picture has four panels over the demo's time:

1. **input drift**: the value the operator measured each cycle (the worst feature's PSI over the policy window,
   from the sidecars' summed bucket counts) and that feature's calibrated threshold, both from the monitor's
   status (drift is computed by the operator, not by PromQL);
2. **accuracy** from late labels and 3. **latency p95**: the same PromQL the operator runs, evaluated by
   Prometheus over the whole run (``query_range``), with the operator's own measurements as dots and the
   threshold and clear threshold as lines;
4. **serving replicas per model version** (sidecars Prometheus scraped) and the request rate.

Shaded spans are the policy's Pending (yellow) and Firing/Resolving (red) states; dashed grey lines are what
happened in the world (drift, a hand-made rollout, a load rise), solid coloured lines the operator's actions,
read from the monitor's status.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from modelmonitor.promql import quote
from modelmonitor_sandbox.demo.manifests import (
    ACCURACY_CLEAR,
    ACCURACY_POLICY,
    ACCURACY_THRESHOLD,
    DRIFT_POLICY,
    LATENCY_CLEAR,
    LATENCY_POLICY,
    LATENCY_THRESHOLD,
    Pacing,
)
from modelmonitor_sandbox.demo.observe import Observation
from modelmonitor_sandbox.demo.prometheus import Series, query_range

VERSION_COLORS = {"v1": "tab:cyan", "v2": "yellowgreen", "v3": "sandybrown", "v4": "tab:olive"}
ACTION_COLORS = {"retrain": "tab:orange", "promote": "tab:green", "rollback": "tab:red", "scale": "tab:blue"}


@dataclass
class Loop:
    """One closed loop of the story, as it happened."""

    number: int
    title: str
    trigger: str = ""
    triggered_at: float | None = None
    detected_at: float | None = None
    detected: str = ""
    actions: list[tuple[float, str]] = field(default_factory=list)
    recovered_at: float | None = None
    recovered: str = ""
    registry: list[tuple[float, str]] = field(default_factory=list)  # what moved in the model registry
    ok: bool = False
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self, start: float) -> dict[str, Any]:
        def rel(at: float | None) -> float | None:
            return None if at is None else round(at - start, 1)

        return {
            "number": self.number,
            "title": self.title,
            "ok": self.ok,
            "error": self.error,
            "trigger": self.trigger,
            "triggered_at": rel(self.triggered_at),
            "detected_at": rel(self.detected_at),
            "detected": self.detected,
            "actions": [{"at": rel(at), "what": what} for at, what in self.actions],
            "recovered_at": rel(self.recovered_at),
            "recovered": self.recovered,
            "registry": [{"at": rel(at), "what": what} for at, what in self.registry],
            "details": self.details,
        }


def epoch(text: str) -> float | None:
    """An RFC 3339 time from the status as epoch seconds, or None."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


# --- the action history ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionMark:
    at: float
    kind: str  # retrain | promote | rollback | scale
    label: str


def action_marks(observations: Sequence[Observation]) -> list[ActionMark]:
    """The operator's actions, from every status seen (the status keeps only the latest 20 records)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for observation in observations:
        for record in observation.actions:
            seen.setdefault((str(record.get("key")), str(record.get("result"))), record)
    marks = []
    for record in seen.values():
        at = epoch(str(record.get("at", "")))
        kind, result, reason = str(record.get("type")), str(record.get("result")), str(record.get("reason", ""))
        if at is None:
            continue
        if kind == "retrain" and result == "Pending":
            job = re.search(r"Job (\S+)", reason)
            marks.append(ActionMark(at, "retrain", f"retraining Job{' ' + job.group(1) if job else ''}"))
        elif kind == "retrain" and result == "Succeeded":
            version = re.search(r"promoted model version (\S+)", reason)
            marks.append(ActionMark(at, "promote", f"promote {version.group(1) if version else 'new version'}"))
        elif kind == "rollback" and result == "Pending":
            marks.append(ActionMark(at, "rollback", "rollback to last-known-good"))
        elif kind == "scale" and result == "Succeeded":
            step = re.search(r"from (\d+) to (\d+) replicas", reason)
            marks.append(ActionMark(at, "scale", f"scale {step.group(1)}->{step.group(2)}" if step else "scale"))
    return sorted(marks, key=lambda m: m.at)


# --- Prometheus ----------------------------------------------------------------------------------------------


def signal_queries(namespace: str, pacing: Pacing) -> dict[str, str]:
    """The PromQL the operator's built-in signals run (docs/signals.md), for this model over the whole run."""
    labels = f"namespace={quote(namespace)}, model={quote('fraud')}"
    labeled = "modelmonitor_labeled_predictions_total"
    return {
        "accuracy": (
            f'sum(increase({labeled}{{{labels}, outcome=~"tp|tn"}}[{pacing.accuracy_window}])) / '
            f"sum(increase({labeled}{{{labels}}}[{pacing.accuracy_window}]))"
        ),
        "latency": (
            "histogram_quantile(0.95, sum by (le) "
            f"(rate(modelmonitor_request_duration_seconds_bucket{{{labels}}}[{pacing.latency_window}])))"
        ),
        "replicas": f'count by (version) (modelmonitor_requests_total{{{labels}, code="2xx"}})',
        "rate": f"sum(rate(modelmonitor_requests_total{{{labels}}}[10s]))",
    }


# --- the picture -------------------------------------------------------------------------------------------


def _spans(observations: Sequence[Observation], policy: str) -> list[tuple[float, float, str]]:
    """(start, end, state) runs of Pending and Firing/Resolving for ``policy``."""
    spans: list[tuple[float, float, str]] = []
    current: tuple[float, str] | None = None
    for observation in observations:
        state = observation.state(policy)
        kind = "Pending" if state == "Pending" else "Firing" if state in ("Firing", "Resolving") else ""
        if current is not None and current[1] != kind:
            spans.append((current[0], observation.at, current[1]))
            current = None
        if current is None and kind:
            current = (observation.at, kind)
    if current is not None and observations:
        spans.append((current[0], observations[-1].at, current[1]))
    return spans


def render(
    path: Path,
    *,
    observations: Sequence[Observation],
    world: Sequence[tuple[float, str]],
    prometheus_url: str,
    namespace: str,
    pacing: Pacing,
    start: float,
    end: float,
) -> Path:
    """Draw the timeline PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    queries = signal_queries(namespace, pacing)
    step = 2.0

    def prom(name: str) -> Series:
        return query_range(prometheus_url, queries[name], start, end, step)

    grid = [start + i * step for i in range(int((end - start) // step) + 1)]

    def on_grid(points: list[tuple[float, float]], missing: float) -> tuple[list[float], list[float]]:
        """The points at every step between the series' first and last point; a step without a value there is
        ``missing`` (a gap when NaN); outside it, nothing is drawn."""
        values = {round(t, 3): v for t, v in points}
        first, last = points[0][0], points[-1][0]
        shown = [t for t in grid if first - 1e-3 <= t <= last + 1e-3]
        return [t - start for t in shown], [values.get(round(t, 3), missing) for t in shown]

    def rel(at: float) -> float:
        return at - start

    fig, axes = plt.subplots(4, 1, figsize=(13, 11), sharex=True, gridspec_kw={"height_ratios": [1, 1, 1, 0.9]})
    fig.suptitle(
        f"ModelMonitor demo: fraud-model in namespace {namespace}: signals, thresholds and the operator's actions",
        fontsize=12,
    )
    drift_ax, accuracy_ax, latency_ax, fleet_ax = axes

    # 1. input drift, as the operator measured it
    points = [(rel(o.at), o.policies[DRIFT_POLICY]) for o in observations if DRIFT_POLICY in o.policies]
    values = [(t, v.value) for t, v in points if v.value is not None and v.value > 0]
    limits = [(t, v.threshold) for t, v in points if v.threshold is not None and v.threshold > 0]
    if values:
        drift_ax.plot(*zip(*values, strict=True), color="tab:purple", lw=1.6, label="worst feature PSI (operator)")
    if limits:
        drift_ax.step(
            *zip(*limits, strict=True), where="post", color="black", ls="--", lw=1, label="its calibrated threshold"
        )
    drift_ax.set_yscale("log")
    drift_ax.set_ylabel("input drift (PSI)")

    # 2. accuracy and 3. latency: Prometheus over the run, the operator's measurements as dots
    for ax, policy, name, threshold, clear, label in (
        (accuracy_ax, ACCURACY_POLICY, "accuracy", ACCURACY_THRESHOLD, ACCURACY_CLEAR, "accuracy (late labels)"),
        (latency_ax, LATENCY_POLICY, "latency", LATENCY_THRESHOLD, LATENCY_CLEAR, "latency p95 (s)"),
    ):
        for _, series in prom(name):
            if series:
                ax.plot(*on_grid(series, math.nan), color="tab:blue", lw=1.4, label="Prometheus")
        measured = [(rel(o.at), o.policies[policy].value) for o in observations if policy in o.policies]
        measured = [(t, v) for t, v in measured if v is not None]
        if measured:
            ax.plot(*zip(*measured, strict=True), ".", ms=3, color="tab:gray", label="operator's measurement")
        ax.axhline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:g}")
        ax.axhline(clear, color="black", ls=":", lw=1, label=f"clears at {clear:g}")
        ax.set_ylabel(label)
    accuracy_ax.set_ylim(0.5, 1.0)
    latency_ax.set_yscale("log")

    for ax, policy in ((drift_ax, DRIFT_POLICY), (accuracy_ax, ACCURACY_POLICY), (latency_ax, LATENCY_POLICY)):
        for begin, finish, kind in _spans(observations, policy):
            ax.axvspan(rel(begin), rel(finish), color="gold" if kind == "Pending" else "tab:red", alpha=0.15, lw=0)
        ax.set_title(f"policy {policy}", fontsize=9, loc="left")

    # 4. what served: sidecars scraped per version, stacked (a rollout's surge shows both), and the request rate
    serving = sorted((s for s in prom("replicas") if s[1]), key=lambda s: s[0].get("version", ""))
    if serving:
        # A step without a series: no sidecar of that version was scraped then, i.e. 0 replicas.
        counts = [dict((round(t, 3), v) for t, v in points) for _, points in serving]
        fleet_ax.stackplot(
            [t - start for t in grid],
            *[[c.get(round(t, 3), 0.0) for t in grid] for c in counts],
            labels=[f"replicas serving {labels.get('version', '?')}" for labels, _ in serving],
            colors=[VERSION_COLORS.get(labels.get("version", ""), "lightgray") for labels, _ in serving],
            step="post",
            alpha=0.8,
        )
    fleet_ax.set_ylabel("serving replicas")
    fleet_ax.set_ylim(0, 6)
    rate_ax = fleet_ax.twinx()
    for _, series in prom("rate"):
        if series:
            rate_ax.plot(*on_grid(series, math.nan), color="tab:gray", lw=1, alpha=0.7)
    rate_ax.set_ylabel("requests/s (grey)")

    # the world (dashed grey) and the operator's actions (solid)
    for at, label in world:
        for ax in axes:
            ax.axvline(rel(at), color="dimgray", ls="--", lw=1)
        drift_ax.annotate(
            label, (rel(at), 1.02), xycoords=("data", "axes fraction"), fontsize=8, color="dimgray", rotation=20
        )
    for mark in action_marks(observations):
        color = ACTION_COLORS.get(mark.kind, "black")
        for ax in axes:
            ax.axvline(rel(mark.at), color=color, lw=1.3, alpha=0.85)
        fleet_ax.annotate(
            mark.label, (rel(mark.at), 0.98), xycoords=("data", "axes fraction"), fontsize=7, color=color,
            rotation=90, va="top", ha="right",
        )  # fmt: skip

    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=7, framealpha=0.8)
    fleet_ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{int(x) // 60:02d}:{int(x) % 60:02d}"))
    fleet_ax.set_xlabel("time since the demo started (mm:ss)")
    fleet_ax.set_xlim(0, rel(end))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the table ---------------------------------------------------------------------------------------------


def summary_table(loops: Sequence[Loop], start: float) -> str:
    """Each loop: what triggered it, when the operator detected it, what it did, when the signal recovered."""

    def clock(at: float | None) -> str:
        if at is None:
            return "  -  "
        seconds = max(0, int(at - start))
        return f"{seconds // 60:02d}:{seconds % 60:02d}"

    def after(at: float | None, loop: Loop) -> str:
        if at is None or loop.triggered_at is None:
            return ""
        return f"  (+{at - loop.triggered_at:.0f} s)"

    lines = []
    for loop in loops:
        result = "OK" if loop.ok else f"FAILED: {loop.error}"
        lines.append(f"  {loop.number}. {loop.title}: {result}")
        lines.append(f"     trigger    {clock(loop.triggered_at)}  {loop.trigger or '-'}")
        lines.append(
            f"     detected   {clock(loop.detected_at)}  {loop.detected or '-'}{after(loop.detected_at, loop)}"
        )
        for at, what in loop.actions:
            lines.append(f"     action     {clock(at)}  {what}{after(at, loop)}")
        if not loop.actions:
            lines.append(f"     action     {clock(None)}  -")
        lines.append(
            f"     recovered  {clock(loop.recovered_at)}  {loop.recovered or '-'}{after(loop.recovered_at, loop)}"
        )
        for at, what in loop.registry:
            lines.append(f"     registry   {clock(at)}  {what}{after(at, loop)}")
    return "\n".join(lines)
