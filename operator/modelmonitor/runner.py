"""`modelmonitor run`: start the operator (Kopf) against the cluster in $KUBECONFIG or the pod's account."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from modelmonitor.settings import OperatorSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Watch ModelMonitors, evaluate their policies against Prometheus and act. Settings come from the "
        "environment (docs/operator.md); the options below override them."
    )
    parser.add_argument("--namespace", "-n", action="append", default=[], help="watch only this namespace (repeatable)")
    parser.add_argument("--prometheus-url", help="default Prometheus URL (MODELMONITOR_PROMETHEUS_URL)")
    parser.add_argument("--metrics-address", help="host:port for /metrics and /healthz (MODELMONITOR_METRICS_ADDRESS)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    overrides = {
        "MODELMONITOR_NAMESPACES": ",".join(args.namespace) if args.namespace else None,
        "MODELMONITOR_PROMETHEUS_URL": args.prometheus_url,
        "MODELMONITOR_METRICS_ADDRESS": args.metrics_address,
    }
    os.environ.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = OperatorSettings.from_env()
    except ValueError as exc:
        print(f"modelmonitor run: {exc}", file=sys.stderr)
        return 2

    import kopf

    from modelmonitor import handlers  # importing registers the handlers

    kopf.configure(verbose=args.verbose, log_prefix=False)
    try:
        runtime = handlers.prepare(settings)
    except handlers.StartupError as exc:
        print(f"modelmonitor run: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        asyncio.run(
            kopf.operator(
                clusterwide=not settings.namespaces,
                namespaces=list(settings.namespaces),
                # Replicas share the monitors by Leases (modelmonitor.sharding); Kopf's own peering would pause
                # all replicas but one, so it stays off (docs/operator.md, "Replicas").
                standalone=True,
                memo=kopf.Memo(runtime=runtime),
            )
        )
    except Exception as exc:  # Kopf stops on a failed startup handler; say why, not only "handlers failed"
        print(f"modelmonitor run: stopped: {exc.__cause__ or exc}", file=sys.stderr)
        return 1
    return 0
