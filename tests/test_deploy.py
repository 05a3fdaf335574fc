"""The deployment files are valid for the real tools that read them: promtool, amtool, the compose
spec's JSON schema, and the Kubernetes manifests are the ones generated from the rule file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
sys.path.insert(0, str(ROOT))

from prometheus_server import require  # noqa: E402

from grafana import generate  # noqa: E402


def _run(*cmd: str) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=DEPLOY)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_promtool_check_config():
    _run(require("promtool"), "check", "config", "prometheus/prometheus.yml")


def test_promtool_check_rules():
    out = _run(require("promtool"), "check", "rules", *map(str, sorted((DEPLOY / "prometheus/rules").glob("*.yml"))))
    assert "SUCCESS" in out


def test_promtool_test_rules():
    tests = sorted((DEPLOY / "prometheus/tests").glob("*.yml"))
    assert tests
    _run(require("promtool"), "test", "rules", *map(str, tests))


def test_rules_naming_and_annotations():
    groups = yaml.safe_load((DEPLOY / "prometheus/rules/otel-flops.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    for rule in rules:
        if "record" in rule:
            assert len(rule["record"].split(":")) == 3, f"{rule['record']} is not level:metric:operations"
        else:
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["alert"]
            assert "runbook" not in rule["annotations"], f"{rule['alert']}: the runbook text goes to docs/runbook.md"
            assert "humanize" in rule["annotations"]["description"], rule["alert"]
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    assert {"ComputeBudgetExceeded", "ComputeDailyThresholdExceeded", "ComputeBudgetForecastExceeded",
            "ComputeEfficiencyDropped", "OtelFlopsExporterDown", "TrainingWithoutFlops",
            "OtelFlopsTargetMissing"} <= alerts
    budgets = [r for r in rules if r.get("alert") == "ComputeBudgetExceeded"]
    assert sorted((r["labels"]["scope"], r["labels"]["resource"]) for r in budgets) == [
        (scope, kind) for scope in ("pool", "run") for kind in ("bops", "flops", "joules")]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", markdown, flags=re.M)}


def test_every_runbook_url_names_a_section_of_the_runbook():
    anchors = _anchors((ROOT / "docs/runbook.md").read_text())
    groups = yaml.safe_load((DEPLOY / "prometheus/rules/otel-flops.yml").read_text())["groups"]
    urls = {rule["alert"]: rule["annotations"]["runbook_url"]
            for group in groups for rule in group["rules"] if "alert" in rule}
    for alert, url in urls.items():
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md" and anchor == alert.lower() and anchor in anchors, (alert, url)
    assert _anchors("# Runbook: alerts\n## ComputeBudgetExceeded\n") == {"runbook-alerts", "computebudgetexceeded"}


def test_rules_read_counters_only_through_increase_or_rate():
    """Reset-safe: a raw counter in a rule would lose the work done before a restart."""
    groups = yaml.safe_load((DEPLOY / "prometheus/rules/otel-flops.yml").read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        for match in re.finditer(r"(\w+\()?\s*otel_flops_\w+_total\b", rule["expr"]):
            assert match.group(1) in ("increase(", "rate("), (rule.get("alert") or rule["record"], rule["expr"])


def test_prometheus_config_scrapes_static_and_file_sd_targets():
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    kinds = {key for job in config["scrape_configs"] for key in job if key.endswith("_configs")}
    assert {"static_configs", "file_sd_configs"} <= kinds


def test_amtool_check_config():
    _run(require("amtool"), "check-config", "alertmanager/alertmanager.yml")
    route = yaml.safe_load((DEPLOY / "alertmanager/alertmanager.yml").read_text())["route"]
    assert {"run", "pool", "budget"} <= set(route["group_by"])


def _compose_validator() -> jsonschema.Draft7Validator:
    # The vendored schema names a draft URL jsonschema does not know; its keywords are draft 7's.
    return jsonschema.Draft7Validator(yaml.safe_load((DEPLOY / "schemas/compose-spec.json").read_text()))


def test_compose_file_matches_the_compose_spec():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    _compose_validator().validate(compose)
    assert {"prometheus", "alertmanager", "grafana"} <= set(compose["services"])


def test_compose_schema_rejects_a_misspelt_key():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    compose["services"]["grafana"]["enviroment"] = {}
    assert not _compose_validator().is_valid(compose)


def test_compose_mounts_exist_and_grafana_password_has_no_default():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), volume
    password = compose["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?"), "the password must come from the environment"


def test_k8s_manifests_are_generated_from_the_rule_file_and_dashboards():
    stale = [str(path) for path, text in generate.outputs().items() if path.read_text() != text]
    assert not stale, f"run python -m grafana.generate: {stale}"
    rule = yaml.safe_load((DEPLOY / "k8s/prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load((DEPLOY / "prometheus/rules/otel-flops.yml").read_text())["groups"]
    configmap = yaml.safe_load((DEPLOY / "k8s/dashboards-configmap.yaml").read_text())
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(configmap["data"]) == {p.name for p in (ROOT / "grafana/dashboards").glob("*.json")}
    monitor = yaml.safe_load((DEPLOY / "k8s/podmonitor.yaml").read_text())
    assert monitor["kind"] == "PodMonitor" and monitor["spec"]["podMetricsEndpoints"]


# Kubernetes: the core kinds against kubernetes-validate's schemas (strict: an unknown field fails, as
# under kubectl's server-side field validation); the Prometheus Operator's kinds against their CRDs'
# schemas, vendored in deploy/schemas (its README says from where), made strict the same way.
K8S_VERSION = "1.32"
CRD_SCHEMAS = {"PodMonitor": "podmonitor-v1.json", "PrometheusRule": "prometheusrule-v1.json"}
MANIFESTS = sorted(p for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")


def _strict(schema):
    """The schema with additionalProperties false wherever it lists properties and allows no others."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(value) for value in schema]
    return schema


def _validate_k8s(doc: dict) -> None:
    """Raises (jsonschema or kubernetes_validate ValidationError) when ``doc`` is not a valid resource."""
    if doc["kind"] in CRD_SCHEMAS:
        schema = json.loads((DEPLOY / "schemas" / CRD_SCHEMAS[doc["kind"]]).read_text())
        jsonschema.Draft7Validator(_strict(schema)).validate(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _k8s(name: str) -> dict:
    return yaml.safe_load((DEPLOY / "k8s" / name).read_text())


def test_k8s_manifests_are_valid_resources():
    kinds = set()
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            _validate_k8s(doc)
            kinds.add(doc["kind"])
    assert kinds == {"PodMonitor", "PrometheusRule", "ConfigMap", "Job"}


@pytest.mark.parametrize(("name", "path", "key", "typo"), [
    ("podmonitor.yaml", ("spec",), "podMetricsEndpoints", "podMetricEndpoints"),
    ("training-job.yaml", ("spec", "template", "spec"), "restartPolicy", "restartpolicy"),
    ("prometheusrule.yaml", ("spec",), "groups", "group"),
])
def test_k8s_validation_rejects_a_misspelt_key(name, path, key, typo):
    doc = _k8s(name)
    node = doc
    for step in path:
        node = node[step]
    node[typo] = node.pop(key)
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        _validate_k8s(doc)


def test_example_job_is_scraped_by_the_podmonitor_on_all_interfaces():
    monitor, job = _k8s("podmonitor.yaml"), _k8s("training-job.yaml")
    pod = job["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {var["name"]: var.get("value") for var in container["env"]}
    assert [endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]] == ["otel-flops"]
    assert env["OTEL_EXPORTER_PROMETHEUS_HOST"] == "0.0.0.0"
    assert int(env["OTEL_EXPORTER_PROMETHEUS_PORT"]) == ports["otel-flops"]
    assert container["command"][:2] == ["otel-flops", "run"]


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is missing in CI; it builds the kustomization (kubectl kustomize)")
        pytest.skip("kubectl is not installed; it builds the kustomization (kubectl kustomize)")
    return path


def test_release_label_is_set_by_kustomize_for_the_podmonitor_and_the_rules(tmp_path):
    """kube-prometheus-stack selects by release=<Helm release>: the default, and an overlay's own."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(DEPLOY / "k8s", overlay)],
        "labels": [{"pairs": {"release": "prom-main"}}],
    }))
    for directory, release in ((DEPLOY / "k8s", "kube-prometheus-stack"), (overlay, "prom-main")):
        built = {doc["kind"]: doc for doc in yaml.safe_load_all(_run(_kubectl(), "kustomize", str(directory)))}
        assert set(built) == {"PodMonitor", "PrometheusRule", "ConfigMap"}, "the example Job is not installed"
        for kind in ("PodMonitor", "PrometheusRule"):
            assert built[kind]["metadata"]["labels"]["release"] == release, (directory, kind)
        assert built["PodMonitor"]["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/component": "otel-flops"}}
