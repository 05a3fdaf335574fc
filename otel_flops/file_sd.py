"""Per-rank Prometheus targets without a hand-written list: one file_sd file per serving process.

With OTEL_FLOPS_FILE_SD_DIR set, every process that serves /metrics writes its own target file
there (``<run>-<node>-<pid>.json``, written whole then renamed, so Prometheus never reads half a
file) and removes it when it stops serving. A node-local Prometheus whose ``file_sd_configs``
watches that directory finds every rank of every run on the node, whatever its port.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def target_host(bound: str) -> str:
    """The host Prometheus should scrape: the bound address, or this machine's name for a wildcard."""
    return socket.gethostname() if bound in WILDCARD_HOSTS else bound


def write(directory: str, host: str, port: int, run: str, node: str) -> Path:
    """Write this process's target file; returns its path. Raises OSError when it cannot."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{run}-{node}-{os.getpid()}")
    path = Path(directory) / f"{name}.json"
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps([{"targets": [address], "labels": {}}]))
    os.replace(partial, path)
    return path


def remove(path: Path) -> None:
    """Remove a target file written by ``write``; one already gone is fine."""
    path.unlink(missing_ok=True)
