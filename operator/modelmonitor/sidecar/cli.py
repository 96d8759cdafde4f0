"""``modelmonitor sidecar``: run the monitoring sidecar next to a model server.

    # push mode: the model server POSTs events and labels
    modelmonitor sidecar --profile /etc/modelmonitor/profile.json --listen 0.0.0.0:8081 --model churn --version v3
    # proxy mode: clients call the sidecar, which forwards to the model server
    modelmonitor sidecar --profile profile.json --listen 0.0.0.0:8081 --upstream http://127.0.0.1:8080 \\
        --model churn --version v3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import TYPE_CHECKING

from modelmonitor import durations
from modelmonitor.sidecar.labels import Maturity, parse_maturities
from modelmonitor.sidecar.labelstore import PASSWORD_ENV

if TYPE_CHECKING:
    from modelmonitor.sidecar.profile import Profile


def duration_seconds(text: str) -> float:
    """``"90s"``, ``"1h30m"``, ``"2d"`` or a plain number of seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return durations.seconds(text)
    except ValueError as problem:
        raise argparse.ArgumentTypeError(str(problem)) from None


def _maturities(text: str) -> tuple[Maturity, ...]:
    try:
        return parse_maturities(text)
    except ValueError as problem:
        raise argparse.ArgumentTypeError(str(problem)) from None


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8081`` for IPv6)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. 0.0.0.0:8081")
    return host.strip("[]"), int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sidecar's options."""
    parser.add_argument("--profile", help="the reference profile JSON (a file or a mounted ConfigMap key)")
    parser.add_argument(
        "--profile-from-registry",
        metavar="MLFLOW_URL",
        help="instead of --profile: load the profile of the registered version served (profile build --registry)",
    )
    parser.add_argument("--registered-model", help="with --profile-from-registry: the registered model's name")
    parser.add_argument("--registered-version", help="with --profile-from-registry: the version served")
    parser.add_argument(
        "--model-uri", help="with --profile-from-registry: the source URI the model serves (instead of the version)"
    )
    parser.add_argument("--listen", type=listen_address, default=("0.0.0.0", 8081), help="HOST:PORT to serve on")
    parser.add_argument("--upstream", help="model server base URL: enables proxy mode (e.g. http://127.0.0.1:8080)")
    parser.add_argument("--model", required=True, help="the `model` label of every series")
    parser.add_argument("--version", required=True, dest="model_version", help="the `version` label of every series")
    parser.add_argument("--mapping", help="JSON field mapping for proxied payloads that are not KServe v1 / OIP v2")
    parser.add_argument("--window-size", type=int, help="drift window rows (default: the profile's)")
    parser.add_argument("--min-window-rows", type=int, help="rows before drift scores are exported (default: full)")
    parser.add_argument("--quality-window", type=int, default=1000, help="joined labels in the quality window")
    parser.add_argument(
        "--label-ttl",
        type=duration_seconds,
        default=3600.0,
        help="how long predictions wait for labels (1h; days or weeks with a shared store)",
    )
    parser.add_argument(
        "--label-store",
        default="memory",
        help="where predictions wait for labels: memory (this replica only; the default) or a Redis / Valkey "
        "shared by the model's replicas, redis://HOST:PORT/DB or rediss://HOST:PORT/DB (password: "
        f"${PASSWORD_ENV} or --label-store-password-file)",
    )
    parser.add_argument("--label-store-password-file", help="a file holding the label store's password")
    parser.add_argument(
        "--label-maturity",
        type=_maturities,
        default=(),
        metavar="DURATION[,DURATION...]",
        help="also count each label when its prediction is this old, if it joined by then (e.g. 1d): the cohorts "
        "that a policy's labelDelay judges; default: none",
    )
    parser.add_argument(
        "--label-capacity",
        type=int,
        default=100_000,
        help="most predictions waiting for labels (memory store), or queued while a shared store is unreachable",
    )
    parser.add_argument("--max-groups", type=int, default=20, help="group values exported when the profile lists none")
    parser.add_argument("--max-classes", type=int, default=50, help="classes exported when the profile lists none")
    parser.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024, help="largest push body (16 MiB)")
    parser.add_argument("--max-events", type=int, default=100_000, help="most events or labels per push batch")
    parser.add_argument("--upstream-timeout", type=duration_seconds, default=60.0, help="model call timeout (60s)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _load_profile(args: argparse.Namespace, log: logging.Logger) -> Profile:
    """The profile from --profile, or the registered version's from --profile-from-registry."""
    from modelmonitor.sidecar import profile as profile_io

    if (args.profile is None) == (args.profile_from_registry is None):
        raise ValueError("give exactly one of --profile and --profile-from-registry")
    if args.profile is not None:
        return profile_io.load(args.profile)
    from modelmonitor.mlflowrest import RegistryError
    from modelmonitor.sidecar.registry_profiles import fetch_profile

    if not args.registered_model or (args.registered_version is None) == (args.model_uri is None):
        raise ValueError(
            "--profile-from-registry needs --registered-model and one of --registered-version, --model-uri"
        )
    try:
        data, which = fetch_profile(
            args.profile_from_registry, args.registered_model, version=args.registered_version, source=args.model_uri
        )
        document = json.loads(data)
    except (RegistryError, ValueError) as error:
        raise ValueError(f"--profile-from-registry: {error}") from error
    log.info("reference profile of %s", which)
    return profile_io.from_json(document)


def run(args: argparse.Namespace) -> int:
    """Load the profile, build the monitor and serve until SIGTERM / SIGINT."""
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from modelmonitor.sidecar.labelstore import open_label_store
    from modelmonitor.sidecar.monitor import Monitor, MonitorSettings
    from modelmonitor.sidecar.payloads import FieldMapping
    from modelmonitor.sidecar.server import ServerSettings, SidecarServer

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("modelmonitor.sidecar")
    try:
        profile = _load_profile(args, log)
        mapping = FieldMapping.from_file(args.mapping) if args.mapping else None
        settings = MonitorSettings(
            window_size=args.window_size,
            min_window_rows=args.min_window_rows,
            quality_window=args.quality_window,
            label_ttl_seconds=args.label_ttl,
            label_capacity=args.label_capacity,
            max_groups=args.max_groups,
            max_classes=args.max_classes,
            label_maturities=args.label_maturity,
        )
        store = open_label_store(
            args.label_store,
            model=args.model,
            version=args.model_version,
            ttl_seconds=args.label_ttl,
            capacity=args.label_capacity,
            password=_label_store_password(args.label_store_password_file),
            maturities=args.label_maturity,
        )
        monitor = Monitor(profile, model=args.model, version=args.model_version, settings=settings, label_store=store)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    server = SidecarServer(
        monitor,
        ServerSettings(
            upstream=args.upstream,
            mapping=mapping,
            max_body_bytes=args.max_body_bytes,
            max_events=args.max_events,
            upstream_timeout_seconds=args.upstream_timeout,
        ),
        CollectorRegistry(),
    )
    host, port = args.listen
    mode = f"proxy to {args.upstream}" if args.upstream else "push"
    cohorts = ", ".join(maturity.name for maturity in args.label_maturity) or "none"
    log.info(
        "sidecar for %s %s (%s mode) on %s:%d; label store: %s; maturity cohorts: %s",
        args.model,
        args.model_version,
        mode,
        host,
        port,
        store.description,
        cohorts,
    )
    web.run_app(server.app(), host=host, port=port, print=None, access_log=None)
    return 0


def _label_store_password(path: str | None) -> str | None:
    """From the file when one is named (a mounted Secret), else from the environment; never from a flag."""
    if path:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    return os.environ.get(PASSWORD_ENV) or None
