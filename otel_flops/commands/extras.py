"""The optional parts of otel-flops (pyproject's extras) and a check that names the one to install.

A command that needs an extra checks before it starts, so a missing package is one line with the
fix instead of an ImportError from deep inside a run.
"""

from __future__ import annotations

import importlib.util

# Each extra of pyproject.toml that commands depend on, and the top-level modules it brings.
EXTRAS = {
    "analysis": ("matplotlib", "scipy"),
    "sklearn": ("sklearn",),
}


class MissingExtra(RuntimeError):
    """One line: what is missing and the pip command that installs it."""


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (empty when the extra is installed)."""
    return [module for module in EXTRAS[extra] if importlib.util.find_spec(module) is None]


def require(extra: str, what: str) -> None:
    """Raise MissingExtra naming ``extra`` when any of its modules is missing; ``what`` is who needs it."""
    absent = missing(extra)
    if absent:
        raise MissingExtra(f"{what} needs {' and '.join(absent)}, which a plain install leaves out; "
                           f"install them with: pip install 'otel-flops[{extra}]'")
