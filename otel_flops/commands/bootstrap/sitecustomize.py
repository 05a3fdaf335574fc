"""Started by Python in every process that ``otel-flops run`` launches: turn counting on.

Then run any sitecustomize this one shadows (found further along sys.path), so the user's own
still runs.
"""

import importlib.machinery
import importlib.util
import os
import sys


def _start() -> None:
    if os.environ.get("OTEL_FLOPS_AUTOSTART") != "1":
        return
    from otel_flops.commands import autostart

    autostart.start()


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", sys.path)
    if spec is not None and spec.loader is not None:
        shadowed = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(shadowed)


_start()
_chain()
