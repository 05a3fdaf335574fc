"""Exporters: OTLP/HTTP into a real protobuf-decoding receiver, TLS, budgets and rank labels."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import ssl
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request

import pytest
from conftest import free_port, scrape, training_step
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

import otel_flops

SCRIPT = textwrap.dedent(
    """
    import torch
    from torch import nn
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 32)), torch.randint(0, 4, (8,))).backward()
        opt.step()
    """
)


class Receiver(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP metrics receiver: decodes each request and keeps the last sum per metric."""

    sums: dict[str, float] = {}
    resource: dict[str, str] = {}
    headers: dict[str, str] = {}
    requests = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        Receiver.headers = dict(self.headers)
        for resource in request.resource_metrics:
            Receiver.resource = {a.key: a.value.string_value for a in resource.resource.attributes}
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.HasField("sum"):
                        Receiver.sums[metric.name] = sum(p.as_int or p.as_double for p in metric.sum.data_points)
        Receiver.requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_otlp_http_push_equals_the_report(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script, report = tmp_path / "train.py", tmp_path / "report.json"
    script.write_text(SCRIPT)
    env = {**os.environ, "OTEL_METRICS_EXPORTER": "otlp", "OTEL_FLOPS_ENERGY": "off",
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
           "OTEL_METRIC_EXPORT_INTERVAL": "500", "OTEL_SERVICE_NAME": "otlp-test",
           "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci", "OTEL_EXPORTER_OTLP_HEADERS": "x-token=s3cr3t"}
    try:
        result = subprocess.run([sys.executable, "-m", "otel_flops", "run", "--report", str(report), "--",
                                 "python", str(script)], capture_output=True, text=True, timeout=120, env=env)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    totals = json.loads(report.read_text())["totals"]
    assert Receiver.requests >= 1
    assert Receiver.sums["otel_flops.flops"] == totals["flops"] > 0
    assert Receiver.sums["otel_flops.bops"] == totals["bops"]
    assert Receiver.resource["service.name"] == "otlp-test"
    assert Receiver.resource["deployment.environment"] == "ci"
    assert Receiver.headers.get("x-token") == "s3cr3t"  # the secret reached the receiver, and only it:
    assert "s3cr3t" not in result.stdout + result.stderr + report.read_text()


def self_signed(tmp_path):
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def test_tls_scrape_with_the_ca_succeeds_and_plain_http_fails(tmp_path):
    cert, key = self_signed(tmp_path)
    port = free_port()
    with otel_flops.track(serve=True, host="127.0.0.1", port=port, tls_cert=str(cert), tls_key=str(key),
                          energy=False) as tracker:
        training_step("mlp")
        assert tracker.endpoint.url == f"https://127.0.0.1:{port}/metrics"
        context = ssl.create_default_context(cafile=str(cert))
        body = urllib.request.urlopen(tracker.endpoint.url, context=context, timeout=10).read().decode()
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    assert "otel_flops_flops_total" in body


def test_budgets_are_gauges_with_their_name():
    port = free_port()
    with otel_flops.track(serve=True, host="127.0.0.1", port=port, energy=False, budget_name="team-a",
                          budget_flops=2e12, budget_joules=5e6):
        training_step("mlp")
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    for name, value in (("otel_flops_budget_flops", 2e12), ("otel_flops_budget_joules", 5e6)):
        ((labels, observed),) = samples[name]
        assert (labels["budget"], observed) == ("team-a", value)
    assert "otel_flops_budget_bops" not in samples


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("OTEL_METRICS_EXPORTER", "zipkin", "use one of: prometheus, otlp, console, none"),
        ("OTEL_FLOPS_BUDGET_FLOPS", "lots", "OTEL_FLOPS_BUDGET_FLOPS='lots' is not a number"),
        ("OTEL_FLOPS_TLS_CERT", "/nonexistent.pem", "OTEL_FLOPS_TLS_CERT='/nonexistent.pem' is not a readable file"),
        ("OTEL_FLOPS_ENERGY", "maybe", "OTEL_FLOPS_ENERGY='maybe' is not valid; use one of: on, off"),
        ("OTEL_FLOPS_ENERGY_INTERVAL", "inf", "OTEL_FLOPS_ENERGY_INTERVAL='inf' is out of range; set a finite number "
                                              "from 0.1 to 3600"),
        ("OTEL_FLOPS_ENERGY_INTERVAL", "1e300", "OTEL_FLOPS_ENERGY_INTERVAL='1e300' is out of range"),
        ("OTEL_FLOPS_ENERGY_INTERVAL", "nan", "OTEL_FLOPS_ENERGY_INTERVAL='nan' is out of range"),
        ("OTEL_FLOPS_ENERGY_INTERVAL", "-2", "OTEL_FLOPS_ENERGY_INTERVAL='-2' is out of range"),
        ("OTEL_FLOPS_PEAK_FLOPS", "inf", "OTEL_FLOPS_PEAK_FLOPS='inf' is out of range; set a finite number > 0"),
        ("OTEL_FLOPS_AUDIT_EVERY", "1e3", "OTEL_FLOPS_AUDIT_EVERY='1e3' is not a whole number; "
                                          "set a whole number >= 1"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "70000", "OTEL_EXPORTER_PROMETHEUS_PORT='70000' is out of range; "
                                                   "set a whole number from 0 to 65535"),
    ],
)
def test_bad_settings_are_one_line_and_the_script_runs_uncounted(tmp_path, variable, value, expected):
    script = tmp_path / "noop.py"
    script.write_text("print('ran')\n")
    result = subprocess.run([sys.executable, "-m", "otel_flops", "run", "--", "python", str(script)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, variable: value})
    assert (result.returncode, result.stdout) == (0, "ran\n")
    assert result.stderr.strip().count("\n") == 0 and expected in result.stderr
    assert result.stderr.strip().endswith("the program runs without counting")


def test_track_refuses_a_non_finite_interval_before_starting():
    with pytest.raises(otel_flops.SettingsError, match=r"^track\(energy_interval=inf\) is out of range"):
        otel_flops.track(energy_interval=float("inf"))
    with otel_flops.track(energy=False) as tracker:  # nothing was left running by the refused call
        assert tracker.session.settings.energy_interval == 2.0
