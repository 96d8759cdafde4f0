"""`modelmonitor demo`: run the narrated demo on the local sandbox."""

from __future__ import annotations

import argparse
import sys

from modelmonitor.devcluster.build import BuildError
from modelmonitor.devcluster.processes import SandboxError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="shorter acts (about 2 minutes instead of 3)")
    parser.add_argument("--stop-cluster", action="store_true", help="stop the sandbox at the end")


def run(args: argparse.Namespace) -> int:
    from modelmonitor.demo.story import Pacing, run_demo

    try:
        return run_demo(Pacing.quick() if args.quick else Pacing.full(), keep_cluster=not args.stop_cluster)
    except (SandboxError, BuildError) as exc:
        print(f"modelmonitor demo: {exc}", file=sys.stderr)
        return 1
