"""Who a series belongs to: the run (and its pool) and the machine, for budgets in a fleet.

A budget belongs to a run or to a pool of runs, so every series carries the run that produced
it. The run id comes from OTEL_FLOPS_RUN_ID, else from OTEL_RESOURCE_ATTRIBUTES'
``service.instance.id``, else it is generated once per process tree: the first process to load
the settings writes it to its environment, so ``otel-flops run``'s child, torchrun's ranks and
DataLoader workers all inherit the same id. A resumed run keeps its budget by being given the
same id again.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import urllib.parse
import uuid
from collections.abc import Mapping
from pathlib import Path

RUN_VARIABLE = "OTEL_FLOPS_RUN_ID"


def resource_attribute(raw: str, key: str) -> str | None:
    """One key of an OTEL_RESOURCE_ATTRIBUTES value (``k=v,k2=v2``, values percent-encoded)."""
    for pair in raw.split(","):
        name, sep, value = pair.partition("=")
        if sep and name.strip() == key and value.strip():
            return urllib.parse.unquote(value.strip())
    return None


def run_id(env: Mapping[str, str]) -> str:
    """The run's id; one generated here is written to ``env`` (when it is ``os.environ``) so
    that every process this one starts shares it."""
    given = env.get(RUN_VARIABLE) or resource_attribute(env.get("OTEL_RESOURCE_ATTRIBUTES", ""),
                                                         "service.instance.id")
    if given:
        return given
    generated = uuid.uuid4().hex
    if env is os.environ:
        os.environ[RUN_VARIABLE] = generated
    return generated


def node(env: Mapping[str, str]) -> str:
    """The machine whose energy a process may measure: OTEL_FLOPS_NODE (in Kubernetes, the
    node's name from the downward API) or the host name."""
    return env.get("OTEL_FLOPS_NODE") or socket.gethostname()


def host_resource() -> dict[str, str]:
    """OpenTelemetry's host semantic conventions for this machine: ``host.name`` (the host name) and,
    where the OS keeps one, ``host.id`` (the machine-id of /etc/machine-id, as the conventions say
    for non-cloud Linux hosts)."""
    attributes = {"host.name": socket.gethostname()}
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            machine_id = Path(path).read_text().strip()
        except OSError:
            continue
        if machine_id:
            attributes["host.id"] = machine_id
            break
    return attributes


@functools.lru_cache(maxsize=64)
def gpu_uuid(device: str) -> str | None:
    """The UUID ("GPU-" and 32 hex digits, as NVML, DCGM's ``UUID`` label and Kepler write it) of a CUDA
    device label such as "cuda:0", so series join with DCGM's; None for other devices, or when torch
    has not initialised CUDA in this process (it is never initialised here)."""
    kind, _, index = device.partition(":")
    torch = sys.modules.get("torch")
    if kind != "cuda" or torch is None or not torch.cuda.is_initialized():
        return None
    try:
        uuid_text = str(torch.cuda.get_device_properties(int(index or torch.cuda.current_device())).uuid)
    except (RuntimeError, ValueError, AssertionError):
        return None
    return uuid_text if uuid_text.startswith(("GPU-", "MIG-")) else f"GPU-{uuid_text}"
