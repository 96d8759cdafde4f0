"""The operator scale benchmark for two commits in one run: a baseline commit and the work tree, on the same
sandbox, alternating (baseline, work tree, baseline, ...) for ``--rounds`` rounds so both see the same machine
load, and the ratios of the medians of what matters (cycle time, CPU, memory, start-up, breach delay).

Both sides are measured by the work tree's ``bench/bench_operator_scale.py`` (one method for both: a fix to the
measurement applies to the baseline too), each against its own code: the baseline from a ``git archive`` snapshot
(``operator/``) with ``PYTHONPATH`` pointing at the snapshot, so the operator process the benchmark
starts imports the baseline (and the work tree likewise its own ``operator/``, whatever is installed in the
environment). A ratio above 1 means the work tree is
slower (or bigger) than the baseline.

Usage (the sandbox must be running: ``modelmonitor cluster up``)::

    python bench/compare_operator_scale.py --base c3ab97d --monitors 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

#: Rows of the benchmark's figures table compared, and how to read the first number of the cell.
ROWS = (
    "**cycle duration** median / max",
    "**operator CPU** (cores, over the window)",
    "**operator peak RSS** (VmHWM)",
    "operator start to every monitor evaluated once",
    "**queries per cycle** (operator gauge)",
    "status writes per cycle (API server count)",
    "breach delay max vs target (interval + 5 s)",
)


def snapshot(base: str, into: Path) -> str:
    """Extract ``operator/`` of ``base`` into ``into``; returns the short commit."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", base, "operator"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", base], capture_output=True, text=True, check=True
    ).stdout.strip()
    (into / "operator" / "COMMIT").write_text(commit + "\n")
    return commit


def run(bench_dir: Path, pythonpath: Path | None, monitors: int, output: Path, extra: list[str]) -> None:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    command = [sys.executable, str(bench_dir / "bench_operator_scale.py"), "--monitors", str(monitors)]
    command += ["--no-profile", "--output", str(output), *extra]
    print("$", " ".join(command), f"(PYTHONPATH={pythonpath or ''})", file=sys.stderr, flush=True)
    subprocess.run(command, env=env, check=True)


def figures(markdown: str) -> dict[str, str]:
    """The first value column of each row of the figures table, by row label."""
    found: dict[str, str] = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] in ROWS:
            found[cells[0]] = cells[1]
    return found


def first_number(cell: str) -> float | None:
    match = re.search(r"-?\d[\d,]*(?:\.\d+)?", cell.replace("**", ""))
    return float(match.group().replace(",", "")) if match else None


def summary(row: str, runs: list[str]) -> tuple[float | None, str]:
    """The median of a row's first number over the runs, and the cell to show (the median, then every run)."""
    cells = [figures(markdown).get(row, "?") for markdown in runs]
    numbers = [n for n in (first_number(cell) for cell in cells) if n is not None]
    if not numbers:
        return None, " / ".join(cells)
    median = statistics.median(numbers)
    return median, cells[0] if len(cells) == 1 else f"{median:g} ({'; '.join(cells)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="baseline commit (e.g. the previous commit of main)")
    parser.add_argument("--monitors", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--breaches", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="baseline/work-tree pairs, alternating (default 1)")
    parser.add_argument(
        "--no-write-replay", action="store_true", help="skip the replayed status-write phase (minutes at 10,000)"
    )
    parser.add_argument("--output", type=Path, help="results file (default bench/results/operator_scale_vs_<base>.md)")
    args = parser.parse_args(argv)
    extra = ["--cycles", str(args.cycles), "--breaches", str(args.breaches)]
    extra += ["--no-write-replay"] if args.no_write_replay else []
    with tempfile.TemporaryDirectory(prefix="mm-bench-") as tmp:
        root = Path(tmp)
        base_commit = snapshot(args.base, root / "base")
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        raw: dict[str, list[str]] = {"base": [], "head": []}
        for round_ in range(args.rounds):
            for side, pythonpath in (("base", root / "base" / "operator"), ("head", REPO / "operator")):
                output = root / f"{side}-{round_}.md"
                run(REPO / "bench", pythonpath, args.monitors, output, extra)
                raw[side].append(output.read_text())

    lines = [
        f"# Operator scale: {args.monitors:,} monitors, {base_commit} against the work tree",
        "",
        f"Generated by `python bench/compare_operator_scale.py --base {args.base} --monitors {args.monitors} "
        f"--cycles {args.cycles} --breaches {args.breaches}{' --no-write-replay' if args.no_write_replay else ''}` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: the baseline ({base_commit}) then the work tree (HEAD "
        f"{head} plus uncommitted changes, if any), on the same sandbox, both measured by the work tree's "
        f"benchmark, each with "
        f"{args.cycles} measured cycles, alternating for {args.rounds} round(s). Each cell is the median over the "
        "rounds (every run's figure in brackets). Ratio = work tree / baseline (above 1: slower or bigger).",
        "",
        "| | baseline | work tree | ratio |",
        "|---|---:|---:|---:|",
    ]
    for row in ROWS:
        a, old = summary(row, raw["base"])
        b, new = summary(row, raw["head"])
        ratio = f"{b / a:.2f}" if a and b is not None else "n/a"
        lines.append(f"| {row} | {old} | {new} | {ratio} |")
    for side, title in (("base", "Baseline"), ("head", "Work tree")):
        for round_, markdown in enumerate(raw[side], 1):
            lines += ["", f"## {title} run, round {round_}", "", markdown]
    output = args.output or RESULTS / f"operator_scale_vs_{base_commit}.md"
    output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: 8 + len(ROWS)]))
    print(f"wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
