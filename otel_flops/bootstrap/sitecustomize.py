"""Started by Python in every process that ``otel-flops run`` launches: turn counting on.

Then hand over to any sitecustomize this one shadows, so the user's own still runs.
"""

import os
import sys


def _start() -> None:
    if os.environ.get("OTEL_FLOPS_AUTOSTART") != "1":
        return
    from otel_flops import autostart

    autostart.start()


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    del sys.modules["sitecustomize"]
    try:
        import sitecustomize  # noqa: F401
    except ImportError:
        pass


_start()
_chain()
