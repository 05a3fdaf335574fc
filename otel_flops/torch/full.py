"""Full mode: every op of every step, in every thread that runs torch work, is intercepted and counted."""

from __future__ import annotations

from .threads import Threads


class FullCounting(Threads):
    """Global hooks and a counting dispatch mode per thread (``threads``), on for the whole session."""

    include_owner = True

