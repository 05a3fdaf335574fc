"""The deployment files are valid for the real tools that read them: promtool, amtool, the compose
spec's JSON schema, and the Kubernetes manifests are the ones generated from the rule file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jsonschema
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
            assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
            assert "humanize" in rule["annotations"]["description"], rule["alert"]
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    assert {"ComputeBudgetExceeded", "ComputeDailyThresholdExceeded", "ComputeBudgetForecastExceeded",
            "ComputeEfficiencyDropped", "OtelFlopsExporterDown", "TrainingWithoutFlops",
            "OtelFlopsTargetMissing"} <= alerts
    budgets = [r for r in rules if r.get("alert") == "ComputeBudgetExceeded"]
    assert sorted((r["labels"]["scope"], r["labels"]["resource"]) for r in budgets) == [
        (scope, kind) for scope in ("pool", "run") for kind in ("bops", "flops", "joules")]


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
