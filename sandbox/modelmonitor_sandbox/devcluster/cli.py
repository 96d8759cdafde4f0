"""`modelmonitor cluster ...`: build, start, stop and inspect the local sandbox."""

from __future__ import annotations

import argparse
import shlex
import sys

from modelmonitor_sandbox.devcluster import cluster, targets
from modelmonitor_sandbox.devcluster.build import BuildError, ensure_binaries
from modelmonitor_sandbox.devcluster.paths import cache_dir, cluster_dir
from modelmonitor_sandbox.devcluster.processes import SandboxError

# The line `modelmonitor --help` lists (this module is registered in the modelmonitor.commands entry-point group).
HELP = "build, start, stop and inspect the local Kubernetes sandbox"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("build", help="build or install every binary the sandbox needs (cached; done by `up` too)")
    up = sub.add_parser("up", help="start the sandbox, or reuse the running one")
    up.add_argument("--nodes", type=int, default=2, help="simulated kwok nodes (default 2)")
    up.add_argument("--scrape-interval", default="2s", help="Prometheus scrape interval (default 2s)")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each component (default 180)")
    for name in cluster.COMPONENTS:
        up.add_argument(f"--{name}-port", type=int, default=0, help=f"fixed port for {name} (default: a free one)")
    sub.add_parser("down", help="stop every sandbox process and delete its state (the binary cache stays)")
    sub.add_parser("status", help="show each component: pid, running, memory, endpoint, log")
    sub.add_parser("env", help="print shell exports for the sandbox (use: eval $(modelmonitor cluster env))")
    tg = sub.add_parser("targets", help="add, remove or list Prometheus scrape targets")
    tg_sub = tg.add_subparsers(dest="targets_action", required=True)
    add = tg_sub.add_parser("add", help="scrape HOST:PORT/metrics under NAME")
    add.add_argument("name")
    add.add_argument("address", help="host:port")
    add.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="target label (repeatable)")
    rm = tg_sub.add_parser("remove", help="stop scraping NAME")
    rm.add_argument("name")
    tg_sub.add_parser("list", help="list the registered targets")


def _running_state() -> cluster.ClusterState:
    state = cluster.load_state()
    if state is None:
        raise SandboxError(
            f"no sandbox is running (nothing in {cluster_dir()}); start one with `modelmonitor cluster up`"
        )
    return state


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (SandboxError, BuildError, ValueError) as exc:
        print(f"modelmonitor cluster {args.action}: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.action == "build":
        binaries = ensure_binaries()
        for name, path in vars(binaries).items():
            print(f"{name:24} {path}")
        print(f"cache: {cache_dir()}")
        return 0
    if args.action == "up":
        ports = {name: getattr(args, f"{name.replace('-', '_')}_port") for name in cluster.COMPONENTS}
        state = cluster.up(nodes=args.nodes, scrape_interval=args.scrape_interval, ports=ports, timeout=args.timeout)
        for key, value in state.env().items():
            print(f"{key}={value}")
        return 0
    if args.action == "down":
        stopped = cluster.down()
        if not stopped:
            print("no sandbox processes were running", file=sys.stderr)
        return 0
    if args.action == "status":
        rows = cluster.status()
        if not rows:
            print(f"no sandbox (nothing in {cluster_dir()})")
            return 1
        total = 0
        print(f"{'COMPONENT':24} {'PID':>8} {'STATE':8} {'RSS':>9}  ENDPOINT / LOG")
        for row in rows:
            total += row.rss_bytes
            shown = "running" if row.running else "STOPPED"
            print(f"{row.name:24} {row.pid or '-':>8} {shown:8} {_mib(row.rss_bytes):>9}  {row.endpoint}  {row.log}")
        print(f"{'total':24} {'':>8} {'':8} {_mib(total):>9}")
        return 0 if all(r.running for r in rows) else 1
    if args.action == "env":
        for key, value in _running_state().env().items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    if args.action == "targets":
        directory = _running_state().targets_dir
        if args.targets_action == "add":
            labels = {}
            for item in args.label:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise ValueError(f"--label {item!r} must be KEY=VALUE")
                labels[key] = value
            print(targets.add(directory, args.name, args.address, labels))
        elif args.targets_action == "remove":
            if not targets.remove(directory, args.name):
                print(f"no scrape target named {args.name!r}", file=sys.stderr)
                return 1
        else:
            for name, target in targets.listed(directory).items():
                print(f"{name}\t{target['address']}\t{target['labels']}")
        return 0
    raise AssertionError(args.action)
