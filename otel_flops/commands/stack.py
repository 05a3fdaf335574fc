"""``otel-flops stack``: Prometheus and Alertmanager on loopback with the shipped configs.

For users without Docker: it runs Debian's (or any) prometheus and alertmanager binaries in the
foreground, with deploy/'s rules and Alertmanager config, targets rewritten from the compose
network to loopback, and data in a temporary folder (removed at exit), until Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

# The shipped configs: package data in an install, links to the repository's deploy/ in a checkout.
DEPLOY = Path(__file__).resolve().parents[1] / "data" / "deploy"
BINARIES = {
    "prometheus": ("prometheus",),
    "alertmanager": ("alertmanager", "prometheus-alertmanager"),
}
INSTALL = "install them with: apt-get install prometheus prometheus-alertmanager (or put both on PATH)"


class StackError(RuntimeError):
    """One line: what is missing and how to get it."""


def find(name: str) -> str:
    for candidate in BINARIES[name]:
        path = shutil.which(candidate)
        if path:
            return path
    raise StackError(f"{name} is not installed; {INSTALL}")


def prometheus_config(deploy: Path, targets: list[str], alertmanager: str) -> dict:
    config = yaml.safe_load((deploy / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(deploy / "prometheus" / "rules" / "*.yml")]
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    for job in config["scrape_configs"]:
        if "static_configs" in job:
            job["static_configs"] = [{"targets": targets}]
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [str(deploy / "prometheus" / pattern) for pattern in sd["files"]]
    return config


def run(args: argparse.Namespace) -> int:
    deploy = Path(args.deploy)
    if not (deploy / "prometheus" / "prometheus.yml").exists():
        raise StackError(f"no deploy configs in {deploy} (no prometheus/prometheus.yml); pass --deploy pointing at "
                         f"a deploy/ folder like the one shipped in {DEPLOY}")
    prometheus, alertmanager = find("prometheus"), find("alertmanager")
    with tempfile.TemporaryDirectory(prefix="otel-flops-stack-", ignore_cleanup_errors=True) as work:
        return _serve(Path(work), deploy, prometheus, alertmanager, args)


def _serve(work: Path, deploy: Path, prometheus: str, alertmanager: str, args: argparse.Namespace) -> int:
    """Run both servers with their data in ``work`` (removed when they stop) until Ctrl-C or SIGTERM."""
    am_address = f"127.0.0.1:{args.alertmanager_port}"
    config = prometheus_config(deploy, args.targets, am_address)
    (work / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    processes = [
        subprocess.Popen([alertmanager, f"--config.file={deploy / 'alertmanager' / 'alertmanager.yml'}",
                          f"--storage.path={work / 'alertmanager'}", f"--web.listen-address={am_address}",
                          "--cluster.listen-address="]),
        subprocess.Popen([prometheus, f"--config.file={work / 'prometheus.yml'}",
                          f"--storage.tsdb.path={work / 'prometheus'}",
                          f"--web.listen-address=127.0.0.1:{args.prometheus_port}"]),
    ]
    print(f"otel-flops stack: Prometheus http://127.0.0.1:{args.prometheus_port} (scraping "
          f"{', '.join(args.targets)}), Alertmanager http://{am_address}; data in {work} (removed when they stop); "
          "Ctrl-C stops both",
          flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"] and all(p.poll() is None for p in processes):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    failed = [p for p in processes if p.poll() not in (None, 0)]
    for p in processes:
        p.terminate()
    for p in processes:
        p.wait(timeout=15)
    if failed:
        print("otel-flops stack: a server exited early; its output is above", file=sys.stderr)
        return 1
    return 0
