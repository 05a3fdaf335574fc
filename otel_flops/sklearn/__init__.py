"""scikit-learn backend: estimator methods wrapped, analytic FLOP formulas per estimator class.

The contract the facade relies on: ``install(ledger)`` patches estimator classes globally and
returns the function that restores them; ``track_estimator(estimator, ledger)`` counts one
object (and the estimators it calls, e.g. a pipeline's steps) and returns the function that
stops it. Both only ever add count events to the Ledger (framework "sklearn", phase = the
method name). Modules: ``wrap`` (class patching), ``frames`` (who counts a call),
``formulas`` (the registry), ``parallel`` (joblib workers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..ledger import Ledger
from . import frames
from .wrap import acquire


def install(ledger: Ledger) -> Callable[[], None]:
    """Count every estimator call in this process into ``ledger``; the result undoes it fully."""
    release = acquire()
    pop = frames.push_global(ledger)

    def undo() -> None:
        pop()
        release()

    return undo


def track_estimator(estimator: Any, ledger: Ledger) -> Callable[[], None]:
    """Count this estimator's calls into ``ledger``; other estimators stay uncounted at top level."""
    release = acquire()
    untrack = frames.track(estimator, ledger)

    def undo() -> None:
        untrack()
        release()

    return undo


def is_estimator(obj: Any) -> bool:
    return hasattr(obj, "fit") and hasattr(obj, "get_params")
