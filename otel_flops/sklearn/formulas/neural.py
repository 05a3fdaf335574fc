"""Multi-layer perceptrons. W = the number of weights (Σ of ``coefs_`` sizes)."""

from __future__ import annotations

from typing import Any

from .registry import PREDICT, Data, formula


def _weights(est: Any) -> int:
    return sum(w.shape[0] * w.shape[1] for w in est.coefs_)


@formula(("MLPClassifier", "MLPRegressor"), "fit")
def mlp_fit(est: Any, x: Data) -> float:
    """Per epoch a forward (2·N·W) and a backward (4·N·W) over the N samples."""
    return est.n_iter_ * 6 * x.n * _weights(est)


@formula(("MLPClassifier", "MLPRegressor"), "partial_fit")
def mlp_partial_fit(est: Any, x: Data) -> float:
    return 6 * x.n * _weights(est)


@formula(("MLPClassifier", "MLPRegressor"), *PREDICT)
def mlp_predict(est: Any, x: Data) -> float:
    return 2 * x.n * _weights(est)
