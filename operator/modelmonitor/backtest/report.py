"""A replay as the user reads it: JSON (``--output json``), a text summary, and an optional PNG timeline."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelmonitor.backtest.replay import PolicyReplay, Replay
from modelmonitor.policy import ActionRecord, ActionResult, State, format_time
from modelmonitor.policy.timefmt import format_duration

#: How each record's result reads in a backtest, where nothing is executed.
RESULTS: Mapping[ActionResult, str] = {
    ActionResult.SUCCEEDED: "wouldRun",
    ActionResult.SKIPPED: "skipped",
    ActionResult.DRY_RUN: "dryRun",
    ActionResult.PENDING: "awaitingApproval",
    ActionResult.FAILED: "failed",
}

PNG_EXTRA_HINT = (
    "--png needs matplotlib, which the modelmonitor runtime does not carry (it stays out of the images); install "
    "it beside modelmonitor (pip install matplotlib) or run without --png"
)


def _time(moment: Any) -> str | None:
    return None if moment is None else format_time(moment)


def _policy(policy: PolicyReplay, end: Any) -> dict[str, Any]:
    return {
        "name": policy.name,
        "signal": policy.signal,
        "evaluations": policy.evaluations,
        "breaches": policy.breaches,
        "noData": policy.no_data,
        "errors": policy.errors,
        "pendingOnly": policy.pending_only,
        "firingSeconds": policy.firing_seconds(end),
        "episodes": [
            {
                "activeSince": format_time(e.active_since),
                "firingAt": format_time(e.firing_at),
                "resolvedAt": _time(e.resolved_at),
                "peak": e.peak,
            }
            for e in policy.episodes
        ],
    }


def _action(record: ActionRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "type": record.type,
        "policy": record.policy,
        "at": format_time(record.at),
        "result": RESULTS[record.result],
        "reason": record.reason,
        "key": record.key,
    }


def to_json(replay: Replay, *, step_seconds: float, source: Mapping[str, Any]) -> dict[str, Any]:
    """The report as a JSON document: ``{"monitor", "from", "to", "step", "steps", "source", "policies",
    "actions"}``; ``source`` says how the history was read (range and instant queries)."""
    monitor = replay.monitor
    return {
        "monitor": f"{monitor.namespace}/{monitor.name}",
        "from": format_time(replay.start),
        "to": format_time(replay.end),
        "step": format_duration(step_seconds),
        "steps": replay.steps,
        "source": dict(source),
        "policies": [_policy(p, replay.end) for p in replay.policies],
        "actions": [_action(a) for a in replay.actions],
    }


def to_text(document: Mapping[str, Any]) -> str:
    """The JSON report as a few lines per policy and one per action."""
    lines = [
        f"backtest of {document['monitor']} from {document['from']} to {document['to']}, "
        f"every {document['step']} ({document['steps']} evaluations)",
    ]
    for query in document["source"].get("instantOnly", []):
        lines.append(f"  read with instant queries (not range-queryable: {query['reason']}): {query['query']}")
    for policy in document["policies"]:
        lines.append("")
        lines.append(
            f"policy {policy['name']} ({policy['signal']}): {len(policy['episodes'])} episode(s) fired, "
            f"{policy['pendingOnly']} pending only; {policy['evaluations']} evaluations, {policy['breaches']} "
            f"breaches, {policy['noData']} NoData, {policy['errors']} errors; firing "
            f"{format_duration(policy['firingSeconds'])}"
        )
        for episode in policy["episodes"]:
            peak = "-" if episode["peak"] is None else f"{episode['peak']:.6g}"
            lines.append(
                f"  firing {episode['firingAt']} -> {episode['resolvedAt'] or 'still firing at the end'} "
                f"(pending since {episode['activeSince']}, peak {peak})"
            )
    lines.append("")
    actions = document["actions"]
    ran = sum(1 for a in actions if a["result"] == "wouldRun")
    lines.append(f"actions: {ran} would have run ({len(actions)} records)")
    for action in actions:
        lines.append(
            f"  {action['at']} {action['result']:<16} {action['name']} ({action['type']}) for {action['policy']}"
        )
    return "\n".join(lines) + "\n"


_STATE_COLORS = {
    State.PENDING: "gold",
    State.FIRING: "tab:red",
    State.RESOLVING: "tab:red",
    State.NO_DATA: "gray",
    State.ERROR: "black",
}


def render_png(replay: Replay, path: Path) -> Path:
    """Draw one panel per policy (value, threshold, Pending and Firing spans, actions) into ``path``.

    Raises ImportError with `PNG_EXTRA_HINT` when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(PNG_EXTRA_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(replay.policies)
    fig, axes = plt.subplots(count, 1, figsize=(13, 2.6 * count + 1), sharex=True, squeeze=False)
    fig.suptitle(
        f"modelmonitor backtest: {replay.monitor.namespace}/{replay.monitor.name}, "
        f"{format_time(replay.start)} to {format_time(replay.end)}",
        fontsize=11,
    )
    for ax, policy in zip(axes[:, 0], replay.policies, strict=True):
        limits = [(p.at, p.threshold) for p in policy.points if p.threshold is not None]
        if any(p.value is not None for p in policy.points):
            # NaN where nothing was measured, so a gap shows as a gap rather than a line across it.
            values = [math.nan if p.value is None else p.value for p in policy.points]
            ax.plot([p.at for p in policy.points], values, color="tab:blue", lw=1.2, label="value")
        if limits:
            ax.step(*zip(*limits, strict=True), where="post", color="black", ls="--", lw=1, label="threshold in force")
        start = None
        for point in [*policy.points, None]:
            color = None if point is None else _STATE_COLORS.get(point.state)
            if start is not None and (point is None or color != start[1]):
                end = policy.points[-1].at if point is None else point.at
                ax.axvspan(start[0], end, color=start[1], alpha=0.2, lw=0)
                start = None
            if start is None and color is not None and point is not None:
                start = (point.at, color)
        for record in replay.actions:
            if record.policy == policy.name and record.result is ActionResult.SUCCEEDED:
                ax.axvline(record.at, color="tab:green", lw=1.2)
        ax.set_title(
            f"policy {policy.name} ({policy.signal}): {len(policy.episodes)} episode(s); red: firing, gold: "
            "pending, grey: no data, dark: error, green: an action would run",
            fontsize=9,
            loc="left",
        )
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
