"""The `modelmonitor` command line: one console script, one subcommand per subsystem.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; it is
imported only when chosen, so `modelmonitor sidecar` does not pay for kopf. Other distributions add subcommands
through the ``modelmonitor.commands`` entry-point group (a module that also sets ``HELP``, its one-line help):
the development tooling, modelmonitor-sandbox, adds `cluster` and `demo` that way, so the runtime carries none
of it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from types import ModuleType

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
    "backtest": (
        "modelmonitor.backtest.cli",
        "replay a ModelMonitor's policies over Prometheus history (episodes, counts, actions that would have run)",
    ),
}

COMMAND_GROUP = "modelmonitor.commands"

# The tooling's subcommands are named here only so that, without the tooling, they are refused with what to
# install rather than argparse's "invalid choice".
TOOLING_DISTRIBUTION = "modelmonitor-sandbox"
TOOLING_COMMANDS = ("cluster", "demo", "images")


def _added_commands() -> dict[str, ModuleType]:
    """Subcommands other installed distributions register; a built-in name cannot be taken over."""
    found = entry_points(group=COMMAND_GROUP)
    return {ep.name: ep.load() for ep in sorted(found, key=lambda ep: ep.name) if ep.name not in SUBCOMMANDS}


def _not_installed(name: str) -> str:
    return (
        f"modelmonitor {name}: this command is part of the development tooling, which is not installed; "
        f"install the {TOOLING_DISTRIBUTION} distribution (in a checkout of the repository: "
        "pip install -e './sandbox[demo]', which `make venv` does)"
    )


def build_parser() -> argparse.ArgumentParser:
    from modelmonitor import __version__

    added = _added_commands()
    missing = [name for name in TOOLING_COMMANDS if name not in added]
    parser = argparse.ArgumentParser(
        prog="modelmonitor",
        description=__doc__.splitlines()[0],
        epilog=f"{', '.join(missing)}: need {TOOLING_DISTRIBUTION} (not installed)" if missing else None,
    )
    parser.add_argument("--version", action="version", version=f"modelmonitor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    helps = {name: help_text for name, (_module, help_text) in SUBCOMMANDS.items()}
    helps.update({name: str(module.HELP) for name, module in added.items()})
    for name, help_text in helps.items():
        # The listing only: each subcommand's own options are parsed by its module (see main).
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def _chosen(name: str) -> tuple[ModuleType, str] | None:
    """Subcommand `name`'s module, imported, and its help; None when no installed distribution provides it."""
    if name in SUBCOMMANDS:
        module_name, help_text = SUBCOMMANDS[name]
        return importlib.import_module(module_name), help_text
    for ep in entry_points(group=COMMAND_GROUP, name=name):
        module = ep.load()
        return module, str(module.HELP)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the chosen subcommand's module; `--help` and errors fall back to the full parser.
    chosen = _chosen(argv[0]) if argv else None
    if chosen is not None:
        module, help_text = chosen
        parser = argparse.ArgumentParser(prog=f"modelmonitor {argv[0]}", description=help_text)
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        return int(module.run(args))
    if argv and argv[0] in TOOLING_COMMANDS:
        print(_not_installed(argv[0]), file=sys.stderr)
        return 2
    build_parser().parse_args(argv)
    return 2
