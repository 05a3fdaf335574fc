"""Kernel SVMs (libsvm): SVC, SVR, NuSVC, NuSVR, OneClassSVM. LinearSVC/LinearSVR are in ``linear``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .registry import PREDICT, Data, formula

KERNEL = {"linear": lambda f: 2 * f, "poly": lambda f: 2 * f + 3, "rbf": lambda f: 3 * f + 2,
          "sigmoid": lambda f: 2 * f + 3, "laplacian": lambda f: 3 * f + 2, "cosine": lambda f: 2 * f + 2,
          "chi2": lambda f: 4 * f + 1, "additive_chi2": lambda f: 4 * f}


def kernel_cost(est: Any, f: float) -> float:
    """FLOPs of one kernel evaluation between two rows of f values (a precomputed or callable
    kernel: f, one pass over the row). linear 2F, rbf 3F + 2 (difference, square, add; scale, exp)."""
    kernel = getattr(est, "kernel", "linear")
    return KERNEL.get(kernel, lambda f: f)(f) if isinstance(kernel, str) else f


def _row(x: Data) -> float:
    """Values per row a kernel evaluation reads: F dense, nnz / N sparse."""
    return x.nnz / x.n if x.sparse and x.n else x.f


LIBSVM = ("SVC", "SVR", "NuSVC", "NuSVR", "OneClassSVM")


@formula(LIBSVM, "fit")
def svm_fit(est: Any, x: Data) -> float:
    """SMO (Platt 1998; libsvm): each iteration computes two kernel rows, 2·N kernel evaluations,
    summed over the binary problems' ``n_iter_``."""
    return int(np.sum(est.n_iter_)) * 2 * x.n * kernel_cost(est, _row(x))


@formula(LIBSVM, *PREDICT)
def svm_predict(est: Any, x: Data) -> float:
    """A kernel with every support vector (S), then the dual coefficients of each decision (R rows)."""
    s = est.support_vectors_.shape[0]
    return x.n * s * kernel_cost(est, _row(x)) + 2 * x.n * s * est.dual_coef_.shape[0]
