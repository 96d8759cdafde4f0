"""What the demo applies to the cluster: the model's Deployment, the ModelMonitor guarding it, the trainer's
ServiceAccount, and the pacing that sets their timings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelmonitor_sandbox.demo.world import ALIAS, REGISTERED_MODEL

DEPLOYMENT = "fraud-model"
MONITOR = "fraud"
TRAINER_ACCOUNT = "fraud-trainer"
MODEL_IMAGE = "fraud-model-server:1.0"

DRIFT_POLICY = "input-drift"
ACCURACY_POLICY = "accuracy-drop"
LATENCY_POLICY = "latency-p95"
ACCURACY_THRESHOLD, ACCURACY_CLEAR = 0.8, 0.84
LATENCY_THRESHOLD, LATENCY_CLEAR = 0.4, 0.2


@dataclass(frozen=True)
class Pacing:
    """The demo's timings. Windows and hold times are short so that the story fits in minutes; the semantics are
    those of production settings (windows of 10m, ``for: 5m``), only faster."""

    interval: str
    drift_window: str
    accuracy_window: str
    latency_window: str
    hold: str  # `for` and `keepFiringFor` of every policy
    settle: str  # the rollback action's settlePeriod: how long a revision must stay OK to become last-known-good
    scale_cooldown: str  # longer than a new replica takes to serve (~10 s) plus the latency window: one step's
    # effect is measured before the next step is decided
    baseline_seconds: float  # healthy traffic shown before the first story
    train_rows: int  # freshly labeled transactions the retraining pipeline waits for
    baseline_rate: float  # requests per second
    peak_rate: float
    min_ready_seconds: int
    step_timeout: float  # seconds any one step of a story may take before the demo gives up

    @classmethod
    def full(cls) -> Pacing:
        return cls(
            interval="3s",
            drift_window="30s",
            accuracy_window="30s",
            latency_window="20s",
            hold="9s",
            settle="30s",
            scale_cooldown="40s",
            baseline_seconds=20,
            train_rows=4000,
            baseline_rate=40,
            peak_rate=100,
            min_ready_seconds=15,
            step_timeout=180,
        )

    @classmethod
    def quick(cls) -> Pacing:
        return cls(
            interval="2s",
            drift_window="20s",
            accuracy_window="20s",
            latency_window="15s",
            hold="4s",
            settle="15s",
            scale_cooldown="30s",
            baseline_seconds=6,
            train_rows=3000,
            baseline_rate=40,
            peak_rate=100,
            min_ready_seconds=15,
            step_timeout=150,
        )


def deployment(namespace: str, model_uri: str, replicas: int, pacing: Pacing) -> dict[str, Any]:
    """The model's Deployment: a model server container serving the registered version its ``MODEL_URI`` pins,
    and the sidecar."""
    labels = {"app": DEPLOYMENT}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 10,
            # A new pod counts as available only after this long Ready: time for its processes to start and for
            # Prometheus to discover and scrape its sidecar (up to ~8 s) before the rollout takes an old pod away
            # (kwok reports Ready at once).
            "minReadySeconds": pacing.min_ready_seconds,
            # New pods all at once, old ones only once the new are available: a rollout never lowers capacity.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "model",
                            "image": MODEL_IMAGE,
                            "env": [{"name": "MODEL_URI", "value": model_uri}],
                            "ports": [{"name": "http", "containerPort": 8080}],
                        },
                        {
                            "name": "sidecar",
                            "image": "modelmonitor:0.1.0",
                            "args": [
                                "sidecar", "--profile", "/etc/modelmonitor/profile.json", "--listen", "0.0.0.0:8081",
                                "--upstream", "http://127.0.0.1:8080", "--model", "fraud",
                            ],
                            "ports": [{"name": "modelmonitor", "containerPort": 8081}],
                        },
                    ]
                },
            },
        },
    }  # fmt: skip


def trainer_account(namespace: str) -> list[dict[str, Any]]:
    """The ServiceAccount retraining runs as. It needs no permission in the cluster: the trainer reports the
    version it produced in the model registry (a tag), not on the Job."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": TRAINER_ACCOUNT, "namespace": namespace}}
    ]


def monitor(namespace: str, pacing: Pacing, tracking_uri: str) -> dict[str, Any]:
    """The ModelMonitor: three policies, each with the action that fixes what it detects, and the model registry
    (MLflow at ``tracking_uri``) whose versions it promotes and whose alias it moves."""
    hold = {"for": pacing.hold, "keepFiringFor": pacing.hold}
    return {
        "apiVersion": "modelmonitor.dev/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": MONITOR, "namespace": namespace},
        "spec": {
            "target": {"kind": "Deployment", "name": DEPLOYMENT},
            "model": {"name": "fraud"},
            "registry": {
                "mlflow": {"trackingUri": tracking_uri, "timeout": "5s"},
                "model": REGISTERED_MODEL,
                "alias": ALIAS,
            },
            "interval": pacing.interval,
            "policies": [
                {
                    "name": DRIFT_POLICY,
                    "signal": "dataDrift",
                    "window": pacing.drift_window,
                    # Each feature against its own threshold, calibrated for 1,000-row windows at a 1% false-alarm
                    # rate for the model; fewer rows than that are noisier than the threshold assumes.
                    "condition": {"op": ">", "autoThreshold": True},
                    "minSamples": 1000,
                    **hold,
                    "severity": "warning",
                    "actions": ["retrain"],
                },
                {
                    "name": ACCURACY_POLICY,
                    "signal": "accuracy",
                    "window": pacing.accuracy_window,
                    "condition": {"op": "<", "threshold": ACCURACY_THRESHOLD, "clearThreshold": ACCURACY_CLEAR},
                    "minSamples": 300,
                    **hold,
                    "severity": "critical",
                    "actions": ["rollback"],
                },
                {
                    "name": LATENCY_POLICY,
                    "signal": "latencyP95",
                    "window": pacing.latency_window,
                    "condition": {"op": ">", "threshold": LATENCY_THRESHOLD, "clearThreshold": LATENCY_CLEAR},
                    "minSamples": 100,
                    **hold,
                    "severity": "warning",
                    "actions": ["scaleUp"],
                },
            ],
            "actions": {
                "retrain": {
                    "type": "retrain",
                    "serviceAccountName": TRAINER_ACCOUNT,
                    "cooldown": "30m",
                    "jobTemplate": {
                        "spec": {
                            "backoffLimit": 0,
                            "template": {
                                "spec": {
                                    "restartPolicy": "Never",
                                    "containers": [
                                        {
                                            "name": "train",
                                            "image": "fraud-trainer:1.4",
                                            "args": ["--fresh-rows", str(pacing.train_rows)],
                                        }
                                    ],
                                }
                            },
                        }
                    },
                    # The trainer registers the version it produced, tagged with the Job's name; the operator
                    # writes that version's source URI into the model container's MODEL_URI, which rolls the
                    # model, and moves the alias to it once it proved itself.
                    "promote": {"from": "registry", "to": {"env": {"container": "model", "name": "MODEL_URI"}}},
                },
                "rollback": {
                    "type": "rollback",
                    "to": "lastKnownGood",
                    "settlePeriod": pacing.settle,
                    "cooldown": "30m",
                },
                "scaleUp": {"type": "scale", "step": 1, "maxReplicas": 5, "cooldown": pacing.scale_cooldown},
            },
        },
    }
