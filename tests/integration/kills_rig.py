"""The kill scenario shared by test_kills_injected.py and test_kills_random.py.

One namespace, one real operator process (its own ServiceAccount), one real Prometheus scraping a real
exporter, the sandbox's real Alertmanager, and four monitors watching the same model, each guarding its own
Deployment with one kind of action:

- ``scaler``   -> Deployment ``fraud``: scale up one replica per cycle (no cooldown) from 1 to 4, and page
  Alertmanager;
- ``roller``   -> Deployment ``churn``: roll back to the last-known-good revision;
- ``trainer``  -> Deployment ``risk``: a retraining Job whose version (an annotation on the Job) is promoted
  into the Deployment;

The model turns bad once, and stays bad while the operator is killed over and over (`Kills`), then turns good
again for a few more kills while the alert resolves. What a user would count is then checked: the number of
changes each Deployment went through (``metadata.generation``), Jobs, rollout revisions, the action records in
status, and the alerts Alertmanager holds.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from actions_rig import Rig, deployment, monitor

from support import http_get, wait_for

VERSION_KEY = "example.com/model-version"
MAX_REPLICAS = 4


def _monitors(alertmanager_url: str) -> list[dict[str, Any]]:
    scaler = monitor(
        {
            "scaleUp": {"type": "scale", "step": 1, "maxReplicas": MAX_REPLICAS, "cooldown": "0s"},
            "page": {"type": "alert", "alertmanager": {"url": alertmanager_url}, "resendInterval": "2s"},
        },
        name="scaler",
    )
    roller = monitor({"rollback": {"type": "rollback", "settlePeriod": "3s", "cooldown": "0s"}}, name="roller")
    roller["spec"]["target"] = {"name": "churn"}
    template = {
        "metadata": {"annotations": {VERSION_KEY: "v2"}},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "train", "image": "trainer:v1"}]}},
        },
    }
    retrain = {
        "type": "retrain",
        "serviceAccountName": "trainer",
        "cooldown": "1h",
        "jobTemplate": template,
        "promote": {"from": "annotation", "key": VERSION_KEY, "to": {"env": {"container": "model", "name": "VERSION"}}},
    }
    trainer = monitor({"retrain": retrain}, name="trainer")
    trainer["spec"]["target"] = {"name": "risk"}
    return [scaler, roller, trainer]


@dataclass
class Kills:
    """How the operator dies in each round: a hook setting (None: SIGKILL after a random delay)."""

    settings: list[str | None]
    seed: int = 12
    #: Seconds a round waits for the hook, once the operator has evaluated the monitors, before killing it itself.
    patience: float = 4.0
    log: list[str] = field(default_factory=list)

    def run(self, rig: Rig, rounds: int) -> int:
        """Kill the operator ``rounds`` times; returns how many kills were at an injected point."""
        rng = random.Random(self.seed)
        at_points = 0
        for round_ in range(rounds):
            setting = self.settings[round_ % len(self.settings)]
            # Not waiting for /healthz in `start`: the point may come in the very first cycle.
            rig.operator.start(crash_at=setting, wait=False)
            process = rig.operator.process
            assert process is not None
            if setting is None and rng.random() < 0.25:
                delay = rng.uniform(0.3, 3.0)  # while starting: imports, login, the first watch
                time.sleep(delay)
                rig.operator.kill()
                self.log.append(f"SIGKILL {delay:.1f} s after the process started")
                continue
            metrics = f"http://127.0.0.1:{rig.operator.metrics_port}/metrics"
            wait_for(
                "the operator to evaluate the monitors or exit",
                lambda p=process, url=metrics: p.poll() is not None or evaluated(url),
                timeout=90,
            )
            if setting is None:
                delay = rng.uniform(0.0, 3.0)  # while evaluating: cycles, status writes, actions
                time.sleep(delay)
                rig.operator.kill()
                self.log.append(f"SIGKILL {delay:.1f} s after the first evaluation")
                continue
            try:
                process.wait(timeout=self.patience)
            except subprocess.TimeoutExpired:
                rig.operator.kill()
                self.log.append(f"{setting} not reached within {self.patience:g} s: SIGKILL")
                continue
            rig.operator.wait_for_crash(timeout=1)
            self.log.append(f"{setting}: exited there")
            at_points += 1
        return at_points


def evaluated(metrics_url: str) -> bool:
    """Whether the operator has evaluated a monitor (its first cycles may run before the watch has listed any)."""
    text = (http_get(metrics_url) or b"").decode()
    line = next(
        (x for x in text.splitlines() if x.startswith('modelmonitor_operator_evaluations_total{result="valid"}')), ""
    )
    return bool(line) and float(line.split()[-1]) > 0


def generation(rig: Rig, name: str) -> int:
    return int(rig.get("deployment", name)["metadata"]["generation"])


def active_alerts(rig: Rig) -> list[dict[str, Any]]:
    """The sandbox Alertmanager's alerts of this test's namespace (resolved ones are not listed)."""
    with urllib.request.urlopen(f"{rig.cluster.alertmanager_url}/api/v2/alerts", timeout=5) as response:
        alerts = json.loads(response.read())
    return [a for a in alerts if a["labels"].get("namespace") == rig.namespace]


def settled(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Results per action key, in order, without Skipped records (a rail's note, not an action)."""
    results: dict[str, list[str]] = {}
    for record in records:
        if record["result"] != "Skipped":
            results.setdefault(record["key"], []).append(record["result"])
    return results


def run_scenario(rig: Rig, kills: Kills, rounds: int, healed_rounds: int) -> int:
    """The whole scenario; returns how many kills came at an injected point (the log is in ``kills.log``).
    Fails naming the first count that is not exactly once."""
    ns = rig.namespace
    rig.cluster.kubectl("create", "serviceaccount", "trainer", "-n", ns)
    rig.healthy()
    for name in ("fraud", "churn", "risk"):
        rig.apply(deployment(name, replicas=1, env={"VERSION": "v1"}))
    rig.operator.start()
    for manifest in _monitors(rig.cluster.alertmanager_url):
        rig.apply(manifest)
    wait_for("churn's last-known-good", lambda: rig.status("roller").get("lastKnownGood"), timeout=90)
    rig.operator.kill()
    before = {name: generation(rig, name) for name in ("fraud", "churn", "risk")}

    # A bad revision of churn rolls out, then the model's answers go bad; the operator keeps dying meanwhile.
    rig.cluster.kubectl("set", "image", "-n", ns, "deployment/churn", "model=model:v2")
    rig.broken()
    at_points = kills.run(rig, rounds)
    rig.operator.start()

    def all_done() -> bool:
        fraud = rig.get("deployment", "fraud")["spec"]["replicas"] == MAX_REPLICAS
        rolled = any(r["result"] == "Succeeded" for r in rig.records("rollback", "roller"))
        promoted = any(r["result"] == "Succeeded" for r in rig.records("retrain", "trainer"))
        return fraud and rolled and promoted and len(active_alerts(rig)) == 1

    wait_for(f"every action to finish; kills: {kills.log}", all_done, timeout=90)
    time.sleep(3)  # more cycles of the still-firing policies: nothing may be repeated

    # Scale: three steps of one, each once.
    assert generation(rig, "fraud") - before["fraud"] == MAX_REPLICAS - 1, kills.log
    steps = settled(rig.records("scaleUp", "scaler"))
    assert len(steps) == MAX_REPLICAS - 1, steps
    assert all(r.count("Succeeded") == 1 and "Failed" not in r for r in steps.values()), steps
    # Rollback: v2 rolled back once; the restored v1 is revision 3, there is no fourth.
    assert generation(rig, "churn") - before["churn"] == 2, kills.log  # set image, rollback
    history = rig.cluster.kubectl("rollout", "history", "-n", ns, "deployment/churn").stdout
    assert [line.split()[0] for line in history.splitlines() if line[:1].isdigit()] == ["2", "3"], history
    # Retrain: one Job, its version promoted once.
    jobs = rig.cluster.kubectl_json("get", "jobs", "-n", ns)["items"]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    assert generation(rig, "risk") - before["risk"] == 1, kills.log
    for action, monitor_name in (("rollback", "roller"), ("retrain", "trainer")):
        results = settled(rig.records(action, monitor_name))
        assert len(results) == 1, (action, results)
        [outcomes] = results.values()
        assert outcomes.count("Succeeded") == 1 and "Failed" not in outcomes, (action, results)
    # Alert: one alert in Alertmanager for the policy, whatever the number of re-sends and restarts.
    [alert] = active_alerts(rig)
    assert (alert["labels"]["monitor"], alert["labels"]["policy"]) == ("scaler", "accuracy-drop"), alert

    # The model recovers while the operator keeps dying: the resolution reaches Alertmanager all the same.
    rig.operator.kill()
    rig.healthy()
    kills.run(rig, healed_rounds)
    rig.operator.start()
    wait_for(f"the alert to resolve; kills: {kills.log}", lambda: not active_alerts(rig), timeout=60)
    return at_points
