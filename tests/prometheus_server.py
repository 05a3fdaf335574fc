"""A real Prometheus (Debian's package) for tests: started on loopback, stopped afterwards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port


def require(binary: str) -> str:
    """The binary's path; without it, skip outside CI and fail in CI (where set-up installs it)."""
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is missing in CI; make setup installs Debian's prometheus package")
        pytest.skip(f"{binary} is not installed (Debian package prometheus); make setup installs it")
    return path


class Prometheus:
    def __init__(self, config: str, workdir: Path, args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "prometheus.yml").write_text(config)
        self.log = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [require("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}", *args],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT,
        )
        self.wait(lambda: self._ready(), "Prometheus to start")

    def _ready(self) -> bool:
        try:
            return urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200
        except OSError:
            return False

    def wait(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; log:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.25)

    def query(self, expr: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        return json.loads(urllib.request.urlopen(url, timeout=10).read())["data"]["result"]

    def query_at(self, expr: str, at: float) -> list[dict]:
        """An instant query evaluated at ``at`` (Unix seconds) instead of now."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        return json.loads(urllib.request.urlopen(url, timeout=10).read())["data"]["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
