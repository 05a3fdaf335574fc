"""OpenTelemetry's conventions: OTEL_SDK_DISABLED, OTLP over gRPC, host and GPU resource attributes,
one line for a bad value under every entry point, a bounded phase label, scikit-learn with no torch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from concurrent import futures
from pathlib import Path

import pytest
import torch
from conftest import free_port, scrape, wait_for_file

import otel_flops
from otel_flops.ledger import OTHER, LabelCaps

BIN = Path(sys.executable).parent
# opentelemetry-instrument with the SDK's own exporters off: what is printed is otel-flops' alone
INSTRUMENT = [str(BIN / "opentelemetry-instrument"), "--traces_exporter", "none", "--logs_exporter", "none",
              "--metrics_exporter", "none"]


def _grpc():
    """grpcio (with the otlp-grpc extra); skipped only off CI."""
    try:
        import grpc
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("grpcio is not installed (pip install 'otel-flops[otlp-grpc]')")
    return grpc


class _Receiver:
    """An OTLP/gRPC metrics receiver on loopback: opentelemetry-proto's MetricsService, keeping the
    last value of each metric's data points and the resource of the last request."""

    def __init__(self) -> None:
        grpc = _grpc()
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

        receiver = self

        class Service(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):  # noqa: N802 (the proto's naming)
                with receiver.lock:
                    for resource_metrics in request.resource_metrics:
                        receiver.resource = {a.key: a.value.string_value
                                             for a in resource_metrics.resource.attributes}
                        for scope in resource_metrics.scope_metrics:
                            for metric in scope.metrics:
                                receiver.points[metric.name] = [
                                    ({a.key: a.value.string_value for a in p.attributes}, p.as_int or p.as_double)
                                    for p in metric.sum.data_points]
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self.lock = threading.Lock()
        self.points: dict[str, list[tuple[dict[str, str], float]]] = {}
        self.resource: dict[str, str] = {}
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


@pytest.mark.parametrize("protocols", [
    {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    # the metrics-specific variable wins over the general one
    {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"},
])
def test_otlp_grpc_receiver_gets_the_exact_matmul_flops(monkeypatch, protocols):
    receiver = _Receiver()
    try:
        for name, value in {**protocols, "OTEL_METRICS_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "grpc-test",
                            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
                            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci"}.items():
            monkeypatch.setenv(name, value)
        a, b = torch.randn(8, 16), torch.randn(16, 4)
        with otel_flops.track(serve=True, energy=False, mode="full") as tracker:
            a @ b
        # the final collection goes out as the provider shuts down
        with receiver.lock:
            flops = receiver.points["otel_flops.flops"]
            resource = dict(receiver.resource)
    finally:
        receiver.server.stop(None)
    assert sum(v for _, v in flops) == 2 * 8 * 16 * 4 == tracker.report()["totals"]["flops"]
    assert {labels["phase"] for labels, v in flops if v} == {"preprocessing"}
    assert resource["service.name"] == "grpc-test" and resource["deployment.environment"] == "ci"
    assert resource["host.name"] == socket.gethostname()
    assert resource["service.instance.id"] == tracker.session.settings.run_id
    machine_id = Path("/etc/machine-id")
    if machine_id.exists() and machine_id.read_text().strip():
        assert resource["host.id"] == machine_id.read_text().strip()


def test_resource_attributes_given_win_over_the_detected_host(monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "host.name=pinned,host.id=h-1")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    with otel_flops.track(serve=True, energy=False) as tracker:
        resource = tracker.session.telemetry._provider._sdk_config.resource.attributes
        assert (resource["host.name"], resource["host.id"]) == ("pinned", "h-1")


# ---------------------------------------------------------------------------------------------- entry points
USER = "import sys\nprint('ran')\nsys.exit(3)\n"
TRACK = textwrap.dedent(
    """
    import sys
    import otel_flops
    with otel_flops.track(serve=True) as tracker:
        pass
    print("ran", tracker.report()["totals"]["flops"], tracker.report()["off"], tracker.endpoint)
    sys.exit(3)
    """
)


def _entry(kind: str, script: Path) -> list[str]:
    """The command that runs ``script`` under one of the three entry points."""
    if kind == "track":
        script.write_text(TRACK)
        return [sys.executable, str(script)]
    script.write_text(USER)
    if kind == "run":
        return [sys.executable, "-m", "otel_flops", "run", "--", "python", str(script)]
    return [*INSTRUMENT, sys.executable, str(script)]


BAD = [
    ("OTEL_FLOPS_MODE", "bogus", "use one of: steady, full"),
    ("OTEL_FLOPS_SKLEARN", "maybe", "use one of: on, off"),
    ("OTEL_FLOPS_PHASE_LABEL_CAP", "0", "set a whole number >= 1"),
    ("OTEL_EXPORTER_PROMETHEUS_HOST", "garbage!!", "is not a host name or IP address; set one"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "use one of: http/protobuf, grpc"),
    ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "udp", "use one of: http/protobuf, grpc"),
]


@pytest.mark.parametrize("kind", ["run", "track", "instrument"])
@pytest.mark.parametrize("variable, value, fix", BAD)
def test_a_bad_value_is_one_line_and_the_program_runs(tmp_path, kind, variable, value, fix):
    env = {**os.environ, variable: value, "OTEL_EXPORTER_PROMETHEUS_PORT": "0", "OTEL_FLOPS_ENERGY": "off"}
    result = subprocess.run(_entry(kind, tmp_path / "user.py"), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith("ran")
    assert result.stderr == (f"otel-flops: {variable}={value!r} " + result.stderr.split(" ", 2)[2])
    assert result.stderr.count("\n") == 1 and fix in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.rstrip().endswith("the program runs without counting")
    if kind == "track":
        assert result.stdout.split()[1:] == ["0", "a", "bad", "setting", "(see", "stderr)", "None"]


DISABLED = textwrap.dedent(
    """
    import socket, sys
    import otel_flops
    from otel_flops.session import active
    if sys.argv[2] == "track":
        tracker = otel_flops.track(serve=True).__enter__()
        assert tracker.endpoint is None and tracker.report()["off"] == "OTEL_SDK_DISABLED=true"
    assert active() is None and "torch" not in sys.modules, "nothing may count"
    socket.create_server(("127.0.0.1", int(sys.argv[1]))).close()  # nobody bound the port
    print("ran")
    sys.exit(3)
    """
)


@pytest.mark.parametrize("kind", ["run", "track", "instrument"])
def test_otel_sdk_disabled_counts_serves_and_reports_nothing(tmp_path, kind):
    script, report, port = tmp_path / "user.py", tmp_path / "report.json", free_port()
    script.write_text(DISABLED)
    env = {**os.environ, "OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
           "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_FLOPS_REPORT": str(report)}
    prefix = {"run": [sys.executable, "-m", "otel_flops", "run", "--"], "track": [], "instrument": INSTRUMENT}[kind]
    result = subprocess.run([*prefix, sys.executable, str(script), str(port), kind], env=env, capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stdout) == (3, "ran\n"), result.stderr
    assert result.stderr == "otel-flops: OTEL_SDK_DISABLED=true; nothing is counted, served or reported\n"
    assert not report.exists()


# ---------------------------------------------------------------------------------------------- label caps
def test_label_caps_fold_for_good_and_keep_the_builtin_phases():
    caps = LabelCaps({"phase": 2, "model": 1}, keep={"phase": frozenset({"forward"})})
    assert [caps.fold("phase", v) for v in ("a", "forward", "b", "c", "a", "forward")] == \
        ["a", "forward", "b", OTHER, "a", "forward"]
    assert caps.fold("phase", "c") == OTHER  # folded for good: it never gets a series of its own later
    assert [caps.fold("model", v) for v in ("m1", "m2")] == ["m1", OTHER]
    assert caps.fold("device", "cuda:7") == "cuda:7"  # no cap: not a label the user controls


def test_three_hundred_phase_names_are_capped_and_totals_unchanged():
    x = torch.ones(4, 4)
    with otel_flops.track(serve=True, port=0, host="127.0.0.1", energy=False, mode="full") as tracker:
        for i in range(300):
            with otel_flops.phase(f"epoch-{i}"):
                x @ x
        samples = scrape(tracker.endpoint.url)
    flops = samples["otel_flops_flops_total"]
    phases = {labels["phase"] for labels, _ in flops}
    cap = tracker.session.settings.phase_label_cap
    assert len(phases) == cap + 1 and OTHER in phases
    assert sum(v for _, v in flops) == 300 * 2 * 4 * 4 * 4 == tracker.report()["totals"]["flops"]
    assert sum(v for labels, v in flops if labels["phase"] == OTHER) == (300 - cap) * 2 * 4 * 4 * 4
    assert len(tracker.report()["phases"]) == 300  # the report keeps every name


# ---------------------------------------------------------------------------------------------- no torch
# Installed through PYTHONPATH: every import of torch fails, then the sitecustomize it shadows (that of
# opentelemetry-instrument) runs, as Python would have run it.
NO_TORCH = textwrap.dedent(
    """
    import importlib.machinery, importlib.util, os, sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "torch":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.machinery.PathFinder.find_spec(
        "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != here])
    if spec is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    """
)
SKLEARN = textwrap.dedent(
    """
    import pathlib, sys, time
    import numpy as np
    from sklearn.linear_model import LinearRegression

    try:
        import torch  # noqa: F401
        sys.exit("torch imported")
    except ModuleNotFoundError:
        pass
    X = np.random.default_rng(0).normal(size=(200, 5))

    def work():
        LinearRegression().fit(X, X @ np.arange(5.0)).predict(X)
        pathlib.Path(sys.argv[1]).touch()
        while not pathlib.Path(sys.argv[2]).exists():
            time.sleep(0.05)

    if sys.argv[3] == "track":
        import otel_flops
        with otel_flops.track(serve=True):
            work()
    else:
        work()
    assert "torch" not in sys.modules
    """
)
N, F = 200, 5
# LinearRegression: fit 2·N·F² + 2F³/3 (Gram matrix, Cholesky), predict 2·N·F + N (seed paper 3.2)
SKLEARN_FLOPS = round(2 * N * F * F + 2 * F**3 / 3) + 2 * N * F + N


@pytest.mark.parametrize("kind", ["track", "instrument"])
def test_sklearn_is_counted_and_served_where_torch_cannot_be_imported(tmp_path, kind):
    (tmp_path / "prelude").mkdir()
    (tmp_path / "prelude" / "sitecustomize.py").write_text(NO_TORCH)
    python = tmp_path / "python"  # the interpreter opentelemetry-instrument starts, with the prelude first
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{tmp_path / "prelude"}:$PYTHONPATH" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    script, ready, go, port = tmp_path / "svc.py", tmp_path / "ready", tmp_path / "go", free_port()
    script.write_text(SKLEARN)
    env = {**os.environ, "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
           "OTEL_FLOPS_ENERGY": "off", "OTEL_METRICS_EXPORTER": "prometheus"}
    cmd = [str(python), str(script), str(ready), str(go), kind]
    if kind == "instrument":
        cmd = [*INSTRUMENT[:-2], "--metrics_exporter", "prometheus", *cmd]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(ready, proc, timeout=60)
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        go.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err
    flops = [(labels, v) for labels, v in samples["otel_flops_flops_total"] if labels["framework"] == "sklearn"]
    assert {labels["phase"]: v for labels, v in flops} == {
        "fit": round(2 * N * F * F + 2 * F**3 / 3), "predict": 2 * N * F + N}
    assert sum(v for labels, v in samples["otel_flops_bops_total"]) == 64 * SKLEARN_FLOPS  # float64 input
