"""`modelmonitor demo`: the closed-loop demo on the local sandbox (what `make demo` runs)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from modelmonitor_sandbox.devcluster.build import BuildError
from modelmonitor_sandbox.devcluster.processes import SandboxError

# The line `modelmonitor --help` lists (this module is registered in the modelmonitor.commands entry-point group).
HELP = "run the narrated demo on the local sandbox (what `make demo` runs)"

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Three closed loops on the local sandbox, narrated: drift -> retrain -> promote, a worse version -> "
        "rollback, load -> scale up. Ends with a timeline picture and a summary (docs/demo.md)."
    )
    parser.add_argument("--quick", action="store_true", help="shorter windows and hold times (about 5 minutes, not 7)")
    parser.add_argument("--namespace", default="modelmonitor-demo", help="namespace to run in (recreated)")
    parser.add_argument(
        "--output", type=Path, default=Path("out/demo"), help="folder for timeline.png, summary.json, logs (out/demo)"
    )
    parser.add_argument("--stop-cluster", action="store_true", help="stop the sandbox at the end")
    parser.add_argument(
        "--mlflow",
        metavar="URL",
        help="an MLflow tracking server to use as the model registry instead of starting one (its registered model "
        "fraud-detector is deleted and recreated)",
    )


def run(args: argparse.Namespace) -> int:
    if not _NAMESPACE.match(args.namespace):
        print(f"modelmonitor demo: --namespace {args.namespace!r} is not a valid namespace name", file=sys.stderr)
        return 2
    from modelmonitor_sandbox.demo.manifests import Pacing
    from modelmonitor_sandbox.demo.story import run_demo

    try:
        return run_demo(
            Pacing.quick() if args.quick else Pacing.full(),
            namespace=args.namespace,
            output=args.output,
            keep_cluster=not args.stop_cluster,
            mlflow_url=args.mlflow,
        )
    except (SandboxError, BuildError) as exc:
        print(f"modelmonitor demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("modelmonitor demo: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
