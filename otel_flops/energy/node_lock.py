"""One process per machine measures its energy: the one holding this machine's lock file.

CodeCarbon and NVML measure the whole machine, so a second process measuring it would count the
same joules again. The first otel-flops process of a machine takes an exclusive ``flock`` on a
file named after the boot (``/proc/sys/kernel/random/boot_id``); the kernel drops the lock when
that process exits, however it exits, and a file left from an earlier boot is never confused
with this one. Processes in different containers share the lock only through a shared
directory (OTEL_FLOPS_LOCK_DIR on a hostPath).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "boot"


def path() -> str:
    """The lock file of this machine's current boot, in OTEL_FLOPS_LOCK_DIR or the temp directory."""
    directory = os.environ.get("OTEL_FLOPS_LOCK_DIR") or tempfile.gettempdir()
    return os.path.join(directory, f"otel-flops-energy-{_boot_id()}.lock")


def acquire() -> int | None:
    """The lock's descriptor (close it to release), or None when another process holds it.

    Raises OSError when the file cannot be opened (a directory that does not exist)."""
    fd = os.open(path(), os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
