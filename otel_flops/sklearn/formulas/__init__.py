"""FLOP formulas per estimator class and method: one registry, one module per estimator family.

Each formula takes the fitted estimator and a ``Data`` (rows, columns, stored values, the input
and the result) and returns FLOPs. Sources and the symbol table: docs/sklearn-formulas.md.
Adding an estimator means adding one ``@formula`` entry in its family's module.
"""

from __future__ import annotations

from . import (  # noqa: F401  (importing a family registers its formulas)
    bayes,
    cluster,
    decomposition,
    gaussian_process,
    linear,
    neighbors,
    neural,
    preprocessing,
    svm,
    text,
    trees,
)
from .registry import _REGISTRY, PREDICT, Data, Formula, flops_of, formula, lookup, zero

__all__ = ["Data", "Formula", "PREDICT", "_REGISTRY", "flops_of", "formula", "lookup", "zero"]
