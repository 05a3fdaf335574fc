"""Progress bars for the commands that run longer than a few seconds (calibrate, bench paper, demo).

tqdm on stderr, drawn only when stderr is a terminal (tqdm's ``disable=None``) and not turned off
with ``--no-progress``: pipes, logs and tests get no bar, and stdout keeps only results.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def bar(items: Iterable[T], desc: str, enabled: bool = True, unit: str = "it") -> Iterator[T]:
    """``items``, one by one, with a bar named ``desc`` counting ``unit``s while they are consumed."""
    return iter(tqdm(items, desc=desc, unit=unit, disable=None if enabled else True, leave=False, file=sys.stderr))
