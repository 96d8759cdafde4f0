"""`modelmonitor images ...`: build the operator and sidecar images with podman, list what was built."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from modelmonitor_sandbox.devcluster.build import BuildError
from modelmonitor_sandbox.images import build as images

# The line `modelmonitor --help` lists (this module is registered in the modelmonitor.commands entry-point group).
HELP = "build the operator and sidecar images with podman (no Docker daemon)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build modelmonitor/operator and modelmonitor/sidecar (cached layers)")
    build.add_argument("--context", type=Path, default=Path.cwd(), help="the repository root (default: .)")
    build.add_argument(
        "--debian-base",
        action="store_true",
        help="use the bases bootstrapped from Debian's packages even when python:3.11-slim can be pulled",
    )
    show = sub.add_parser("list", help="the images' names, ids and sizes")
    show.add_argument("--context", type=Path, default=Path.cwd(), help="the repository root (default: .)")


def _print(image: images.Image) -> None:
    print(f"{image.name:32} {image.id[:12]}  {image.size_bytes / 1e6:6.0f} MB")


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "build":
            started = time.monotonic()
            for image in images.build(args.context.resolve(), use_upstream=not args.debian_base):
                _print(image)
            print(f"built in {time.monotonic() - started:.0f} s")
            return 0
        for name in images.image_names(args.context.resolve()).values():
            _print(images.inspect(name))
        return 0
    except (BuildError, OSError) as exc:
        print(f"modelmonitor images {args.action}: {exc}", file=sys.stderr)
        return 1
