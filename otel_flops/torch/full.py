"""Full mode: every op of every step is intercepted and counted."""

from __future__ import annotations

from typing import Any

from ..ledger import Ledger
from ..settings import Settings
from . import tls
from .dispatch import CountingMode
from .phases import PhaseTracker, module_hooks, optimizer_hooks, remove


class FullCounting:
    """Global hooks and the counting dispatch mode, on for the whole session."""

    def __init__(self, ledger: Ledger, settings: Settings, roots: dict[int, str], alpha_profile: Any = None) -> None:
        self.tracker = PhaseTracker(ledger, roots)
        self._mode = CountingMode(ledger, self.tracker, alpha_profile)
        self._handles: list[Any] = []

    def start(self) -> None:
        t = self.tracker
        self._handles = module_hooks(t.enter_module, t.exit_module)
        self._handles += optimizer_hooks(t.enter_optimizer, t.exit_optimizer)
        tls.push(self._mode)

    def stop(self) -> None:
        tls.pop(self._mode)
        remove(self._handles)

    def stats(self) -> dict[str, int]:
        return {}

    def incomplete(self) -> list[str]:
        """Full mode intercepts everything: its count is never incomplete."""
        return []
