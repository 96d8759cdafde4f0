"""The `modelmonitor` command line: one console script, one subcommand per subsystem.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; it is
imported only when chosen, so `modelmonitor cluster status` does not pay for numpy or kopf.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("modelmonitor.runner", "run the operator (watch ModelMonitors, evaluate policies, act)"),
    "crd": (
        "modelmonitor.api.cli",
        "print the ModelMonitor CustomResourceDefinition generated from the API models",
    ),
    "sidecar": ("modelmonitor.sidecar.cli", "run the monitoring sidecar next to a model server"),
    "profile": (
        "modelmonitor.sidecar.profile_cli",
        "build or inspect a reference profile from training data",
    ),
    "demo": ("modelmonitor.demo.cli", "run the narrated demo on the local sandbox (what `make demo` runs)"),
    "cluster": ("modelmonitor.devcluster.cli", "build, start, stop and inspect the local Kubernetes sandbox"),
}


def build_parser() -> argparse.ArgumentParser:
    from modelmonitor import __version__

    parser = argparse.ArgumentParser(prog="modelmonitor", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"modelmonitor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (_module_name, help_text) in SUBCOMMANDS.items():
        # The listing only: each subcommand's own options are parsed by its module (see main).
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the chosen subcommand's module; `--help` and errors fall back to the full parser.
    if argv and argv[0] in SUBCOMMANDS:
        name = argv[0]
        module_name, help_text = SUBCOMMANDS[name]
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"modelmonitor {name}", description=help_text)
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        return int(module.run(args))
    build_parser().parse_args(argv)
    return 2
