"""`modelmonitor crd`: print, write or check the generated CRD (or its Markdown field reference)."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `modelmonitor crd`."""
    parser.add_argument(
        "--markdown", action="store_true", help="the field reference as Markdown instead of the CRD YAML"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--output", "-o", type=Path, metavar="FILE", help="write to FILE instead of stdout")
    where.add_argument(
        "--check",
        type=Path,
        metavar="FILE",
        help="exit 1 with a diff when FILE differs from what would be generated (for CI)",
    )


def run(args: argparse.Namespace) -> int:
    """Generate; then print, write, or compare. Returns the exit status."""
    # Imported here: generating needs pydantic and PyYAML, which `--help` does not.
    if args.markdown:
        from modelmonitor.api.reference import REFERENCE_PATH, render_reference

        text, regenerate = render_reference(), f"modelmonitor crd --markdown --output {REFERENCE_PATH}"
    else:
        from modelmonitor.api.crd import REGENERATE_COMMAND, render_crd_yaml

        text, regenerate = render_crd_yaml(), REGENERATE_COMMAND

    if args.check is not None:
        path: Path = args.check
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            print(f"{path} does not exist; generate it with: {regenerate}", file=sys.stderr)
            return 1
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=str(path),
            tofile="generated",
        )
        sys.stdout.writelines(diff)
        print(f"{path} is out of date; regenerate it with: {regenerate}", file=sys.stderr)
        return 1
    if args.output is not None:
        out: Path = args.output
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        return 0
    sys.stdout.write(text)
    return 0
