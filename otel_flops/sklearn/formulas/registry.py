"""The registry: one small formula per (estimator class name, method), and what a formula reads.

A formula takes the estimator (fitted, since it runs after the call) and a ``Data`` describing the
call's input and output, and returns FLOPs. It reads the work the estimator really did from what
fitting revealed (``n_iter_``, the solver used, support vectors, tree sizes, components); a
log2 N estimate appears only where nothing fitted reveals the work (neighbour trees).
Conventions (docs/sklearn-formulas.md): a multiply-add is 2 FLOPs, a comparison 1 (trees,
sorting, binning), except where the seed paper fixes a formula (T·N·F·C for iterative linear
models, T·N·F·K for k-means), kept as published so the paper's figures reproduce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Data:
    """One call's input: ``n`` rows, ``f`` columns, ``nnz`` stored values (n·f when dense), the
    input itself ``X`` (imputers count its missing values) and the call's result ``out`` (text
    vectorizers count the tokens of the matrix they produced)."""

    n: int
    f: int
    nnz: int
    sparse: bool = False
    X: Any = None
    out: Any = None

    @staticmethod
    def dense(n: int, f: int) -> Data:
        return Data(n, f, n * f)


Formula = Callable[[Any, Data], float]

_REGISTRY: dict[tuple[str, str], Formula] = {}

PREDICT = ("predict", "predict_proba", "predict_log_proba", "decision_function")


def formula(classes: tuple[str, ...] | str, *methods: str) -> Callable[[Formula], Formula]:
    """Register ``fn`` for every (class name, method) pair given."""
    names = (classes,) if isinstance(classes, str) else classes

    def register(fn: Formula) -> Formula:
        for name in names:
            for method in methods:
                _REGISTRY[(name, method)] = fn
        return fn

    return register


def zero(est: Any, x: Data) -> float:
    """No arithmetic: the call moves, selects or looks up values (documented per estimator)."""
    return 0


def classify_zero(classes: tuple[str, ...] | str, *methods: str) -> None:
    """Register estimators' methods that do no arithmetic, so they are counted as 0, not unknown."""
    formula(classes, *methods)(zero)


def lookup(cls: type, method: str) -> Formula | None:
    """The formula of the nearest class in the MRO that has one (a user's subclass inherits it)."""
    for klass in cls.__mro__:
        fn = _REGISTRY.get((klass.__name__, method))
        if fn is not None:
            return fn
    return None


def flops_of(est: Any, method: str, x: Data) -> float:
    """A registered formula applied to an inner estimator (ensembles are sums of their members)."""
    fn = lookup(type(est), method)
    return fn(est, x) if fn is not None else 0.0


def iters(est: Any, attr: str = "n_iter_") -> int:
    """Iterations really run (the maximum over a per-target or per-class array)."""
    value = getattr(est, attr, None)
    value = np.asarray(value) if value is not None else None  # a torch tensor on the array-API path
    return int(np.max(value)) if value is not None and value.size else 1


def outputs(est: Any) -> int:
    """Rows of ``coef_``: 1 for a binary or single-target model."""
    return max(np.atleast_2d(est.coef_).shape[0], 1)


def svd_flops(n: int, f: int) -> float:
    """Thin SVD of an n x f matrix with U, Σ and V (Golub & Van Loan, table 8.6.1, R-SVD):
    14·M·m² + 8·m³, m = min(n, f), M = max(n, f); the convention of the ATen linalg_svd rule."""
    m, big = min(n, f), max(n, f)
    return 14 * big * m * m + 8 * m**3


def eigh_flops(k: int) -> float:
    """Symmetric eigendecomposition of k x k, eigenvectors included (Golub & Van Loan): 9·k³."""
    return 9 * k**3


def cholesky_flops(k: int) -> float:
    """Cholesky factorisation k³/3 plus the two triangular solves against one right side, 2·k²."""
    return k**3 / 3 + 2 * k**2


def gram_flops(n: int, f: int) -> float:
    """Xᵀ·X, n x f: 2·n·f² (symmetry not exploited, as BLAS gemm does it)."""
    return 2 * n * f * f


def dense_rows(x: Data) -> Data:
    """The same call seen as dense (for estimators that densify their input)."""
    return Data(x.n, x.f, x.n * x.f, False, x.X, x.out)
