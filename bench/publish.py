"""What the benchmarks share about their report: the ``--quick`` and ``--output`` options, and printing the report
and writing it to its results file (not after a quick run, unless ``--output`` names one)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_output_arguments(parser: argparse.ArgumentParser, results: Path) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds, print only")
    parser.add_argument("--output", type=Path, help=f"markdown results (default {results}, not in --quick)")


def publish(text: str, args: argparse.Namespace, results: Path) -> None:
    print(text)
    output = args.output or (None if args.quick else results)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
