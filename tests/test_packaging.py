"""The wheel as a user gets it: built from this checkout, installed into fresh virtual environments.

(a) The wheel and its requirements except torch: the CLI's --version and --help work (so they
import no torch), the deploy configs, dashboards, bootstrap and py.typed are installed, and
`otel-flops stack` starts Prometheus and Alertmanager from the installed configs.
(b) The wheel with the extra the README names for `opentelemetry-instrument`, and torch pinned
as the Makefile pins it: the README's zero-code line, copied from README.md, serves the FLOPs of
a known matmul on /metrics.

Both install from the machine's package source (pip's configured index and find-links), with
--no-compile. On 2 cores: the wheel about 3 s, (a)'s venv about 25 s, (b)'s about 35 s and its
script about 17 s (torch's first import compiles it); about 1.5 min in all, 2.5 min under load.
"""

from __future__ import annotations

import email
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import free_port, scrape, wait_for_file
from prometheus_server import require

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"  # the Makefile's pin: the CPU build from this machine's package source
# What a source checkout holds that the wheel is built from (the tests, benchmarks and docs are not in it).
SOURCES = ("pyproject.toml", "README.md", "otel_flops", "deploy", "grafana")
M, K, N = 64, 128, 32  # the script's matmul: 2*M*K*N FLOPs (one multiply and one add per term)


def _venv(path: Path) -> Path:
    """A fresh venv without pip (this one's pip installs into it); returns its bin/."""
    venv.EnvBuilder().create(path)
    return path / "bin"


def _pip(bin_dir: Path, *args: str, timeout: float = 300) -> None:
    """pip install into that venv; --no-compile halves torch's install (its .pyc files come at first import)."""
    subprocess.run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "-q", "--no-compile",
                    "--disable-pip-version-check", *args], check=True, timeout=timeout, capture_output=True, text=True)


def _clean_env(bin_dir: Path) -> dict[str, str]:
    """The environment of a user of that venv: its bin first, nothing of this checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("OTEL")}
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    return env


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a clean copy of the checkout (symlinks kept) so no stale build/ leaks in."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "--disable-pip-version-check", "-w", str(out), str(src)],
                   check=True, timeout=300, capture_output=True, text=True)
    (found,) = out.glob("otel_flops-*.whl")
    return found


def _requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist without extras, read from its METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(name))
    return [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]


@pytest.fixture(scope="session")
def light(wheel, tmp_path_factory) -> Path:
    """(a)'s venv: the wheel (--no-deps), then every requirement but torch; returns its bin/."""
    bin_dir = _venv(tmp_path_factory.mktemp("light") / "venv")
    _pip(bin_dir, "--no-deps", str(wheel))
    _pip(bin_dir, *[r for r in _requirements(wheel) if not r.startswith("torch")])
    return bin_dir


def _run(bin_dir: Path, *cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_clean_env(bin_dir), capture_output=True, text=True, timeout=120)


def _installed(bin_dir: Path, tmp_path: Path, code: str) -> str:
    return _run(bin_dir, str(bin_dir / "python"), "-c", code, cwd=tmp_path).stdout.strip()


def test_without_torch_version_and_help_work_and_import_no_torch(light, wheel, tmp_path):
    no_torch = _run(light, str(light / "python"), "-c", "import torch", cwd=tmp_path)
    assert no_torch.returncode == 1 and "No module named 'torch'" in no_torch.stderr
    version = wheel.name.split("-")[1]
    done = _run(light, "otel-flops", "--version", cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, f"otel-flops {version}"), done.stderr
    versions = _installed(light, tmp_path, "import importlib.metadata as m, otel_flops; "
                                           "print(m.version('otel-flops'), otel_flops.__version__)")
    assert versions == f"{version} {version}"
    for cmd, usage in ((["python", "-m", "otel_flops", "--help"], "usage: otel-flops"),
                       (["otel-flops", "stack", "--help"], "usage: otel-flops stack"),
                       (["otel-flops", "run", "--help"], "usage: otel-flops run")):
        done = _run(light, *cmd, cwd=tmp_path)
        assert done.returncode == 0 and done.stdout.startswith(usage), (cmd, done.stderr)
    assert "(default $OTEL_FLOPS_MODE or steady)" in " ".join(_run(light, "otel-flops", "run", "--help",
                                                                   cwd=tmp_path).stdout.split())


def test_a_command_needing_a_missing_extra_names_it_in_one_line(light, tmp_path):
    done = _run(light, "otel-flops", "calibrate", "--quick", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "matplotlib and scipy" in done.stderr and "pip install 'otel-flops[analysis]'" in done.stderr


def test_deploy_dashboards_bootstrap_and_py_typed_are_installed(light, tmp_path):
    package = Path(_installed(light, tmp_path, "import otel_flops, os; print(os.path.dirname(otel_flops.__file__))"))
    assert package.is_relative_to(light.parent) and not package.is_symlink()
    deploy, grafana = package / "data" / "deploy", package / "data" / "grafana"
    for repo, installed in ((ROOT / "deploy", deploy), (ROOT / "grafana" / "dashboards", grafana / "dashboards"),
                            (ROOT / "grafana" / "provisioning", grafana / "provisioning")):
        files = sorted(p.relative_to(repo) for p in repo.rglob("*") if p.is_file() and not p.name.startswith("."))
        assert files and files == sorted(p.relative_to(installed) for p in installed.rglob("*") if p.is_file())
    assert json.loads((grafana / "dashboards" / "compute-efficiency.json").read_text())["panels"]
    # docker compose's bind mounts (./prometheus, ../grafana/dashboards, ...) resolve in the install too
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())
    sources = [v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", [])]
    relative = [s for s in sources if s.startswith(".")]
    assert any(s.startswith("../grafana") for s in relative)
    assert all((deploy / s).is_dir() for s in relative), relative
    assert (package / "commands" / "bootstrap" / "sitecustomize.py").is_file()
    assert (package / "py.typed").is_file()
    stack_default = _installed(light, tmp_path, "from otel_flops.commands.stack import DEPLOY; print(DEPLOY)")
    assert Path(stack_default) == deploy


def _get(url: str) -> dict | None:
    try:
        return json.loads(urllib.request.urlopen(url, timeout=2).read())
    except OSError:
        return None


def test_stack_runs_from_the_installed_configs(light, tmp_path):
    require("prometheus")
    prom, am, target = free_port(), free_port(), free_port()
    proc = subprocess.Popen(["otel-flops", "stack", "--prometheus-port", str(prom), "--alertmanager-port", str(am),
                             "--targets", f"127.0.0.1:{target}"], cwd=tmp_path, env=_clean_env(light),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, rules, status = time.monotonic() + 60, None, None
        while time.monotonic() < deadline and not (rules and status):
            assert proc.poll() is None, proc.communicate()
            rules = _get(f"http://127.0.0.1:{prom}/api/v1/rules")
            status = _get(f"http://127.0.0.1:{am}/api/v2/status")
            time.sleep(0.5)
        assert rules and status, "Prometheus or Alertmanager never answered"
        files = {g["file"] for g in rules["data"]["groups"]}
        assert files and all(Path(f).is_relative_to(light.parent) for f in files), files
        assert "ComputeBudgetExceeded" in {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def _readme(pattern: str) -> re.Match:
    found = re.search(pattern, (ROOT / "README.md").read_text())
    assert found, f"README.md has no line matching {pattern}"
    return found


@pytest.fixture(scope="session")
def full(wheel, tmp_path_factory) -> Path:
    """(b)'s venv: the wheel with the extra the README names for opentelemetry-instrument, and torch."""
    extra = _readme(r"pip install 'otel-flops\[(\w+)\]' +#.*opentelemetry-instrument").group(1)
    bin_dir = _venv(tmp_path_factory.mktemp("full") / "venv")
    _pip(bin_dir, f"{wheel}[{extra}]", TORCH, timeout=600)
    return bin_dir


SCRIPT = textwrap.dedent(
    f"""
    import pathlib, time
    import torch

    torch.mm(torch.randn({M}, {K}), torch.randn({K}, {N}))
    pathlib.Path("ready").touch()
    while not pathlib.Path("go").exists():
        time.sleep(0.05)
    """
)


def test_the_readmes_opentelemetry_instrument_line_serves_flops(full, tmp_path):
    line = _readme(r"`(opentelemetry-instrument [^`]*python train\.py)`").group(1)
    (tmp_path / "train.py").write_text(SCRIPT)
    port = free_port()
    env = {**_clean_env(full), "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)}
    proc = subprocess.Popen(shlex.split(line), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for_file(tmp_path / "ready", proc)
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        (tmp_path / "go").touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Failed to auto initialize" not in err, err
    flops = [(labels, v) for labels, v in samples["otel_flops_flops_total"] if labels["framework"] == "torch"]
    assert sum(v for _, v in flops) == 2 * M * K * N
    assert {labels["dtype"] for labels, v in flops if v} == {"float32"}
    bops = [(labels, v) for labels, v in samples["otel_flops_bops_total"] if labels["framework"] == "torch"]
    assert sum(v for _, v in bops) == 2 * M * K * N * 32


def test_the_demo_skips_its_scikit_learn_part_without_the_extra(full, tmp_path):
    done = _run(full, "python", "-c", "from otel_flops.commands.demo import sklearn_example; sklearn_example()",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pip install 'otel-flops[sklearn]'" in done.stdout
