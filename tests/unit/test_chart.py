"""The Helm chart (charts/modelmonitor): lint and render every scenario, and check what users rely on.

Rendering needs the helm binary that `modelmonitor cluster build` (and so `make test`) builds into the cache;
without it these tests are skipped, saying so. Alert rules and dashboard queries are parsed by Prometheus' own
`promtool` (Debian's prometheus package, installed by `make test`).

Regenerate the chart's RBAC rules from operator/modelmonitor/rbac.py:
    make generate
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelmonitor.rbac import LEASE_RULES, RULES, chart_rules_template
from modelmonitor.settings import OperatorSettings
from modelmonitor_sandbox.devcluster import versions
from modelmonitor_sandbox.devcluster.paths import binary_path
from support import OPERATOR_METRIC_PREFIXES, operator_metric_names

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelmonitor"
SCENARIOS = sorted((CHART / "ci").glob("*.yaml"))
RULES_TEMPLATE = CHART / "templates" / "_rbac_rules.tpl"
KUBE_VERSION = versions.KUBERNETES
HELM = binary_path("helm", versions.HELM, "helm")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.skip(f"helm is not built ({HELM}): run `modelmonitor cluster build` (`make test` does)")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60, check=False)


@functools.cache
def _render(values_file: str | None, sets: tuple[str, ...], namespace: str) -> tuple[dict[str, Any], ...]:
    args = ["template", "mm", str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    if values_file:
        args += ["-f", values_file]
    for s in sets:
        args += ["--set", s]
    result = helm(*args)
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr}"
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def render(values_file: Path | None = None, *sets: str, namespace: str = "mm-system") -> list[dict[str, Any]]:
    """The chart's objects as `helm template` renders them (test hooks included)."""
    return list(_render(str(values_file) if values_file else None, sets, namespace))


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "operator")


def scenario(name: str) -> Path:
    return CHART / "ci" / f"{name}-values.yaml"


# --- lint and render every scenario ---------------------------------------------------------------------------


def test_there_are_scenarios() -> None:
    assert {p.name for p in SCENARIOS} >= {
        "default-values.yaml",
        "namespaced-values.yaml",
        "monitoring-values.yaml",
        "restricted-values.yaml",
    }


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_each_scenario_lints_strictly(values: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(values), "--kube-version", KUBE_VERSION)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_each_scenario_renders_named_labelled_objects(values: Path) -> None:
    objects = render(values)
    assert any(o["kind"] == "Deployment" for o in objects)
    for o in objects:
        meta = o["metadata"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", meta["name"]), meta["name"]
        assert meta["labels"]["app.kubernetes.io/part-of"] == "modelmonitor", (o["kind"], meta["name"])


def test_the_chart_refuses_clusters_older_than_the_crd_needs() -> None:
    result = helm("template", "mm", str(CHART), "--kube-version", "1.28.0")
    assert result.returncode != 0
    assert ">=1.29" in result.stderr


# --- values: documented, and a typo fails the install ---------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("serviceMonitor.enable=true", "additional properties 'enable' not allowed"),
        ("imag.tag=v2", "additional properties 'imag' not allowed"),
        ("settings.tickSecond=2", "additional properties 'tickSecond' not allowed"),
        ("watchNamespace[0]=team-a", "additional properties 'watchNamespace' not allowed"),
        ("prometheus.url=prometheus:9090", "/prometheus/url"),
        ("watchNamespaces[0]=Team_A", "/watchNamespaces/0"),
        ("settings.queryParallelism=0", "/settings/queryParallelism"),
        ("settings.maxSeriesPerAnswer=0", "/settings/maxSeriesPerAnswer"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("metrics.port=80", "/metrics/port"),
    ],
)
def test_a_wrong_value_fails_schema_validation_naming_it(setting: str, named: str) -> None:
    result = helm("template", "mm", str(CHART), "--kube-version", KUBE_VERSION, "--set", setting)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert "don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr, result.stderr


def _value_keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in tree.items():
        keys.add(prefix + key)
        if isinstance(value, dict) and value:
            keys |= _value_keys(value, f"{prefix}{key}.")
    return keys


def _schema_keys(schema: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, sub in schema.get("properties", {}).items():
        keys.add(prefix + key)
        keys |= _schema_keys(sub, f"{prefix}{key}.")
    return keys


def _schema_objects(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path or "/", schema)] if "properties" in schema else []
    for key, sub in schema.get("properties", {}).items():
        found += _schema_objects(sub, f"{path}/{key}")
    if isinstance(schema.get("items"), dict):
        found += _schema_objects(schema["items"], f"{path}[]")
    return found


def test_every_value_is_documented_by_a_comment_starting_with_its_name() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):", line)
        if not match:
            continue
        # The comment block right above the key; its first line starts with the key's name.
        start = i
        while start > 0 and lines[start - 1].strip().startswith("#"):
            start -= 1
        first = lines[start].strip() if start < i else ""
        if not first.startswith(f"# {match.group(2)} "):
            undocumented.append(f"line {i + 1}: {match.group(2)}")
    assert not undocumented, undocumented


def test_the_schema_knows_exactly_the_documented_values_and_nothing_else() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    # User-keyed maps (labels, annotations) hold example keys in values.yaml but take any key in the schema.
    free_maps = {"grafanaDashboard.labels"}
    value_keys = {k for k in _value_keys(values) if not any(k.startswith(f"{m}.") for m in free_maps)}
    assert value_keys == _schema_keys(schema)
    open_objects = [path for path, obj in _schema_objects(schema) if obj.get("additionalProperties") is not False]
    assert not open_objects, f"schema objects that accept unknown keys: {open_objects}"


def test_camel_case_keys() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    label_keys = {"grafanaDashboard.labels.grafana_dashboard"}
    for key in _value_keys(values) - label_keys:
        assert re.fullmatch(r"[a-z][A-Za-z0-9]*", key.rpartition(".")[2]), key


# --- CRDs -----------------------------------------------------------------------------------------------------


def test_the_chart_crds_are_byte_identical_to_the_generated_ones() -> None:
    top = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert top == chart
    for name in top:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"charts/modelmonitor/crds/{name} differs from crds/{name}; sync with: "
            f"modelmonitor crd --output charts/modelmonitor/crds/{name}"
        )


# --- RBAC: exactly the operator's rules, scoped by watchNamespaces --------------------------------------------


def _module_rules() -> list[dict[str, Any]]:
    return [rule.to_dict() for rule in RULES]


def test_the_rules_template_is_generated_from_the_operator_rbac_module() -> None:
    assert RULES_TEMPLATE.read_text() == chart_rules_template(), (
        "charts/modelmonitor/templates/_rbac_rules.tpl is out of date with operator/modelmonitor/rbac.py; "
        "regenerate: make generate"
    )


def test_cluster_wide_install_binds_exactly_the_operator_rules() -> None:
    objects = render(scenario("default"))
    role = only(objects, "ClusterRole")
    assert role["rules"] == _module_rules()
    generated = [d for d in yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text()) if d]
    assert role["rules"] == only(generated, "ClusterRole")["rules"]
    binding = only(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "mm-modelmonitor",
    }
    account = only(objects, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"], "namespace": "mm-system"}]
    assert not [
        o for o in objects if o["kind"] in ("Role", "RoleBinding") and not o["metadata"]["name"].endswith("-leases")
    ]


def test_namespaced_install_gets_a_role_per_watched_namespace_and_nothing_cluster_wide() -> None:
    objects = render(scenario("namespaced"))
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {
        o["metadata"]["namespace"]: o
        for o in objects
        if o["kind"] == "Role" and o["metadata"]["name"] == "mm-modelmonitor"
    }
    bindings = {
        o["metadata"]["namespace"]: o
        for o in objects
        if o["kind"] == "RoleBinding" and o["metadata"]["name"] == "mm-modelmonitor"
    }
    assert set(roles) == set(bindings) == {"team-fraud", "team-recs"}
    for namespace, role in roles.items():
        assert role["rules"] == _module_rules()
        assert bindings[namespace]["roleRef"]["kind"] == "Role"
        assert bindings[namespace]["subjects"][0]["namespace"] == "mm-system"


def test_no_rbac_and_an_existing_account_when_asked() -> None:
    objects = render(scenario("restricted"))
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "modelmonitor-operator"


def test_an_existing_account_must_be_named() -> None:
    result = helm("template", "mm", str(CHART), "--kube-version", KUBE_VERSION, "--set", "serviceAccount.create=false")
    assert result.returncode != 0
    assert "serviceAccount.name is required" in result.stderr


# --- the operator Deployment ----------------------------------------------------------------------------------


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_every_pod_runs_hardened(values: Path) -> None:
    objects = render(values)
    pods = [only(objects, "Deployment")["spec"]["template"]["spec"]]
    pods += [o["spec"] for o in objects if o["kind"] == "Pod"]  # the helm test hook
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["limits"]["memory"]


def test_the_operator_gets_a_writable_tmp_and_nothing_else() -> None:
    pod = only(render(), "Deployment")["spec"]["template"]["spec"]
    mounts = operator_container(render())["volumeMounts"]
    assert mounts == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]


def _env(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in operator_container(objects)["env"] if "value" in e}


def test_the_operator_reads_its_settings_from_the_values() -> None:
    objects = render(scenario("namespaced"))
    container = operator_container(objects)
    assert container["args"] == ["run", "--verbose"]
    # The environment the chart sets is read by the operator's own settings parser, as `modelmonitor run` does.
    settings = OperatorSettings.from_env(_env(objects))
    assert settings.namespaces == ("team-fraud", "team-recs")
    assert settings.prometheus_url == "http://prometheus-operated.monitoring.svc:9090"
    assert settings.metrics_address == "0.0.0.0:8080"
    assert settings.tick_seconds == 2
    assert settings.stall_seconds == 300
    assert settings.secret_ttl_seconds == 60
    assert settings.max_series_per_answer == 100_000


def test_a_large_series_budget_reaches_the_operator_as_an_integer(tmp_path: Path) -> None:
    """Helm reads a values file's numbers as floats: without `int` a budget of 2,000,000 would be 2e+06."""
    values = tmp_path / "values.yaml"
    values.write_text("settings:\n  maxSeriesPerAnswer: 2000000\n")
    settings = OperatorSettings.from_env(_env(render(values)))
    assert settings.max_series_per_answer == 2_000_000


def test_decimals_given_with_set_are_accepted() -> None:
    """`helm --set` passes 0.5 as a string; the schema takes numeric strings where decimals make sense."""
    objects = render(None, "settings.tickSeconds=0.5", "settings.stallSeconds=90.5", "settings.secretTTLSeconds=7.5")
    settings = OperatorSettings.from_env(_env(objects))
    assert (settings.tick_seconds, settings.stall_seconds, settings.secret_ttl_seconds) == (0.5, 90.5, 7.5)


def test_defaults_watch_every_namespace_without_a_default_prometheus() -> None:
    objects = render()
    env = _env(objects)
    assert "MODELMONITOR_PROMETHEUS_URL" not in env
    settings = OperatorSettings.from_env(env)
    assert settings.namespaces == ()
    assert settings.prometheus_url is None
    assert operator_container(objects)["args"] == ["run"]
    assert operator_container(objects)["image"] == "modelmonitor/operator:0.1.0"


def test_probes_and_service_use_the_metrics_port() -> None:
    objects = render(None, "metrics.port=9100", "service.port=80")
    container = operator_container(objects)
    assert container["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    assert _env(objects)["MODELMONITOR_METRICS_ADDRESS"] == "0.0.0.0:9100"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    service = only(objects, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 80, "targetPort": "metrics", "protocol": "TCP"}]
    deployment = only(objects, "Deployment")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_two_replicas_roll_one_at_a_time_spread_over_nodes_and_keep_one_through_a_drain() -> None:
    objects = render()
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = deployment["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    budget = only(objects, "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
    # Each pod is its own replica: its Lease is named after the pod, in the pod's namespace.
    env = {e["name"]: e.get("valueFrom") for e in operator_container(objects)["env"]}
    assert env["MODELMONITOR_REPLICA_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["MODELMONITOR_LEASE_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    settings = OperatorSettings.from_env(_env(objects))
    assert (settings.lease_duration_seconds, settings.lease_renew_deadline_seconds) == (15, 10)
    assert settings.status_heartbeat_seconds == 300


@pytest.mark.parametrize("values", [scenario("default"), scenario("namespaced")], ids=["cluster-wide", "namespaced"])
def test_leases_are_granted_in_the_release_namespace_only(values: Path) -> None:
    objects = render(values)
    lease_roles = [o for o in objects if o["kind"] in ("Role", "ClusterRole") and "leases" in json.dumps(o["rules"])]
    assert [(o["kind"], o["metadata"]["namespace"]) for o in lease_roles] == [("Role", "mm-system")]
    assert lease_roles[0]["rules"] == [rule.to_dict() for rule in LEASE_RULES]
    binding = next(o for o in objects if o["kind"] == "RoleBinding" and o["roleRef"]["name"].endswith("-leases"))
    assert binding["metadata"]["namespace"] == "mm-system"


def test_image_digest_wins_over_tag() -> None:
    assert operator_container(render(scenario("restricted")))["image"] == (
        "registry.example.com/mlops/modelmonitor-operator@sha256:" + "0123456789abcdef" * 4
    )


def test_empty_resource_values_are_left_out() -> None:
    resources = operator_container(render())["resources"]
    assert resources == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}


def test_helm_test_hook_asks_healthz_through_the_service() -> None:
    objects = render()
    pod = only(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service = only(objects, "Service")
    url = f"http://{service['metadata']['name']}.mm-system.svc:{service['spec']['ports'][0]['port']}/healthz"
    assert pod["spec"]["containers"][0]["command"][-1] == url
    assert "--fail" in pod["spec"]["containers"][0]["command"]
    assert not [o for o in render(scenario("restricted")) if o["kind"] == "Pod"]


# --- Prometheus Operator objects and the dashboard ------------------------------------------------------------


def promtool_check_rules(groups: list[dict[str, Any]], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; `make test` installs it)")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_optional_monitoring_objects_are_off_by_default() -> None:
    kinds = {o["kind"] for o in render()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap"}


def test_service_monitor_scrapes_the_operator_service() -> None:
    objects = render(scenario("monitoring"))
    monitor = only(objects, "ServiceMonitor")
    service = only(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    # honorLabels: the per-policy series keep their own namespace label (the monitor's), not exported_namespace.
    endpoint = {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s", "honorLabels": True}
    assert monitor["spec"]["endpoints"] == [endpoint]


def test_prometheus_rules_are_valid_and_cover_operator_health_and_firing_monitors(tmp_path: Path) -> None:
    rule = only(render(scenario("monitoring")), "PrometheusRule")
    groups = rule["spec"]["groups"]
    promtool_check_rules(groups, tmp_path)
    alerts = {r["alert"]: r for g in groups for r in g["rules"]}
    assert set(alerts) == {
        "ModelMonitorOperatorDown",
        "ModelMonitorOperatorStalled",
        "ModelMonitorOperatorErrors",
        "ModelMonitorMeasurementsFailing",
        "ModelMonitorInvalidSpecs",
        "ModelMonitorActing",
        "ModelMonitorActionFailed",
        "ModelMonitorPolicyFiring",  # policyAlerts: true
    }
    assert "[5m]" in alerts["ModelMonitorOperatorStalled"]["expr"]  # stalledMinutes: 5
    assert alerts["ModelMonitorActing"]["labels"] == {"severity": "critical", "team": "mlops"}
    policy_alert = alerts.pop("ModelMonitorPolicyFiring")
    # The per-policy series carry the monitor's namespace, so only the job selects the operator.
    assert 'modelmonitor_policy_state{job="mm-modelmonitor", state="Firing"}' in policy_alert["expr"]
    assert policy_alert["labels"] == {"severity": "critical", "team": "mlops"}
    assert "modelmonitor_policy_value" in policy_alert["annotations"]["description"]
    for alert in alerts.values():
        assert 'job="mm-modelmonitor", namespace="mm-system"' in alert["expr"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_policy_alerts_are_off_by_default() -> None:
    rule = only(render(None, "prometheusRule.enabled=true"), "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "ModelMonitorActing" in alerts and "ModelMonitorPolicyFiring" not in alerts


def _sidecar_metric_names() -> set[str]:
    """Every metric name of the sidecar contract (docs/metrics.md), the operator's own left out."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    return {n for n in re.findall(r"`(modelmonitor_[a-z_]+)", text) if not n.startswith(OPERATOR_METRIC_PREFIXES)}


def _dashboard() -> dict[str, Any]:
    return dict(json.loads((CHART / "dashboards" / "modelmonitor.json").read_text()))


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    return exprs


def test_the_dashboard_configmap_carries_the_dashboard() -> None:
    config_map = only(render(scenario("monitoring")), "ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["modelmonitor.json"]) == _dashboard()


def test_every_dashboard_query_parses_and_uses_contract_metrics(tmp_path: Path) -> None:
    dashboard = _dashboard()
    exprs = _dashboard_exprs(dashboard)
    assert len(exprs) >= 15
    sidecar, operator = _sidecar_metric_names(), operator_metric_names()
    for expr in exprs:
        for name in re.findall(r"\bmodelmonitor_[a-z_]+", expr):
            if name.startswith(OPERATOR_METRIC_PREFIXES):
                assert name in operator, f"{name} is not exported by the operator's /metrics"
            else:
                base = re.sub(r"_(bucket|count|sum)$", "", name)
                assert name in sidecar or base in sidecar, f"{name} is not in the sidecar contract (docs/metrics.md)"
    grafana = {
        "$__rate_interval": "5m",
        "$namespace": ".*",
        "$monitor": ".*",
        "$model": ".*",
        "$feature": ".*",
        "$method": "psi",
    }
    rules = []
    for i, expr in enumerate(exprs):
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    promtool_check_rules([{"name": "dashboard", "rules": rules}], tmp_path)


def test_the_dashboard_shows_signals_thresholds_and_actions() -> None:
    dashboard = _dashboard()
    exprs = "\n".join(_dashboard_exprs(dashboard))
    for metric in (
        "modelmonitor_drift_score",
        "modelmonitor_drift_threshold",
        "modelmonitor_prediction_drift_score",
        "modelmonitor_labeled_predictions_total",
        "modelmonitor_request_duration_seconds_bucket",
        "modelmonitor_fairness_gap",
        "modelmonitor_operator_decisions_total",
        "modelmonitor_policy_state",
        "modelmonitor_policy_value",
        "modelmonitor_policy_threshold",
    ):
        assert metric in exprs, metric
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "monitor", "model", "feature", "method"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# --- the guides: their helm commands and the files they name --------------------------------------------------

GUIDES = [ROOT / "docs" / "install.md", ROOT / "docs" / "kind.md"]


def _shell_commands(path: Path) -> list[list[str]]:
    """The commands of a guide's ```sh blocks, continuation lines joined, split like a shell would."""
    import shlex

    commands = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), flags=re.S):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = command.split(" #", 1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(shlex.split(command))
    return commands


def test_the_guides_helm_installs_of_this_chart_render() -> None:
    """Every `helm install|upgrade ... charts/modelmonitor ...` in the guides, run as `helm template`."""
    checked = 0
    for guide in GUIDES:
        for argv in _shell_commands(guide):
            if argv[:2] not in (["helm", "install"], ["helm", "upgrade"]) or "charts/modelmonitor" not in argv:
                continue
            release = argv[2]
            rest = [a for a in argv[4:] if a not in ("--wait", "--create-namespace", "--reuse-values")]
            result = helm("template", release, str(CHART), *rest, "--kube-version", KUBE_VERSION)
            assert result.returncode == 0, f"{guide.name}: {' '.join(argv)}\n{result.stderr}"
            checked += 1
    assert checked >= 4


def test_the_files_the_guides_name_exist() -> None:
    for guide in [*GUIDES, CHART / "templates" / "NOTES.txt"]:
        for argv in _shell_commands(guide) if guide.suffix == ".md" else [guide.read_text().split()]:
            for token in argv:
                path = token.split("=", 1)[-1]
                if re.match(r"^(examples|charts|docker|crds|docs)/|^kind-config\.yaml$", path):
                    assert (ROOT / path).exists(), f"{guide.name} names {path}, which does not exist"
