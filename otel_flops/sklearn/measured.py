"""scikit-learn running on torch tensors (array-API dispatch): its ATen ops are measured, not estimated.

With ``sklearn.config_context(array_api_dispatch=True)`` an estimator given torch tensors does its
arithmetic as ATen ops, which the counting dispatch mode sees one by one. A call on torch input is
therefore counted from those ops and not from its formula, so the work is counted once: the call
runs in an explicit phase block named after the method (steady mode intercepts such blocks every
time), the mode's sink is pointed at a ledger of the call's own for its duration, and when it
returns its totals become the call's count events (``family="measured"``, per dtype and device),
its ATen ops without a rule go to ``uncounted_ops``. With no counting mode on this thread (no
session, or a thread the session does not intercept) the formula counts the call as usual.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from ..ledger import CountKey, Ledger

FAMILY = "measured"


def is_torch(X: Any) -> bool:
    """Whether the input is a torch tensor (torch is never imported here)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(X, torch.Tensor)


class Measurement:
    """One call's ATen ops, collected while it runs."""

    def __init__(self, session: Any) -> None:
        self._stack = contextlib.ExitStack()
        self._session = session
        self.ledger = Ledger()
        self._mode: Any = None
        self._saved: Any = None

    def start(self, phase: str) -> bool:
        """Open the phase block and redirect the counting mode; False when no mode counts here."""
        from ..torch.dispatch import counting_mode

        self._stack.enter_context(self._session.phase(phase))
        mode = counting_mode()
        if mode is None:
            self._stack.close()
            return False
        self._mode, self._saved = mode, mode.sink
        mode.sink = self.ledger
        return True

    def stop(self) -> None:
        if self._mode is not None and self._mode.sink is self.ledger:
            self._mode.sink = self._saved
        self._stack.close()

    def emit(self, sink: Ledger, phase: str, op: str, model: str) -> None:
        """The call's measured totals as its count events, per dtype, bits and device."""
        groups: dict[tuple[str, int, str], list[int]] = {}
        for key, totals in self.ledger.items():
            group = groups.setdefault((key.dtype, key.bits, key.device), [0, 0])
            group[0] += totals.flops
            group[1] += totals.bops
        for (dtype, bits, device), (flops, bops) in groups.items():
            sink.add(CountKey("sklearn", phase, op, FAMILY, dtype, bits, device, model), flops, bops)
        for aten_op, calls in self.ledger.uncounted().items():
            for _ in range(calls):
                sink.add_uncounted(aten_op)
        for aten_op, calls in self.ledger.errors.items():
            sink.add_error(aten_op, calls)


def begin(X: Any, phase: str) -> Measurement | None:
    """A running measurement when ``X`` is a torch tensor and a counting mode sees this thread."""
    if not is_torch(X):
        return None
    from ..session import active

    session = active()
    if session is None:
        return None
    measurement = Measurement(session)
    return measurement if measurement.start(phase) else None
