"""Gaussian processes (Rasmussen & Williams 2006, alg. 2.1 and 3.1-3.2)."""

from __future__ import annotations

from typing import Any

from .registry import PREDICT, Data, cholesky_flops, formula

LBFGS_EVALS = 20


def _kernel(est: Any, f: int) -> float:
    """One kernel value: the default and the usual kernels cost about an rbf's 3·F + 2; each
    hyperparameter's gradient one more per pair."""
    kernel = getattr(est, "kernel_", None)
    params = len(kernel.theta) if kernel is not None else 1
    return 3 * f + 2 + params


def _marginal_likelihood(est: Any, x: Data) -> float:
    """The N x N kernel with its gradient, its Cholesky factor, α = K⁻¹y, and the gradient's
    trace terms (the inverse, N³, and N² per hyperparameter)."""
    return x.n * x.n * _kernel(est, x.f) + cholesky_flops(x.n) + x.n**3 + 2 * x.n * x.n


def _optimiser_evals(est: Any) -> int:
    """L-BFGS evaluations of the likelihood: LBFGS_EVALS per start (an estimate: scipy's count is
    not kept), for the first start and n_restarts_optimizer more; none when optimizer=None."""
    if est.optimizer is None:
        return 0
    return LBFGS_EVALS * (1 + est.n_restarts_optimizer)


@formula("GaussianProcessRegressor", "fit")
def gpr_fit(est: Any, x: Data) -> float:
    return (_optimiser_evals(est) + 1) * _marginal_likelihood(est, x)


@formula("GaussianProcessRegressor", "predict")
def gpr_predict(est: Any, x: Data) -> float:
    """The kernel with the training rows and the mean K*·α (2·N·N_train)."""
    n_train = est.X_train_.shape[0]
    return x.n * n_train * (_kernel(est, x.f) + 2)


@formula("_BinaryGaussianProcessClassifierLaplace", "fit")
def gpc_binary_fit(est: Any, x: Data) -> float:
    """Laplace's approximation: per likelihood evaluation Newton's mode search (up to
    max_iter_predict steps, counted as 10, each a Cholesky and products with K: N³/3 + 4·N²)."""
    newton = 10 * (cholesky_flops(x.n) + 4 * x.n * x.n)
    return (_optimiser_evals(est) + 1) * (_marginal_likelihood(est, x) + newton)


@formula("_BinaryGaussianProcessClassifierLaplace", *PREDICT)
def gpc_binary_predict(est: Any, x: Data) -> float:
    """The kernel with the training rows, the latent mean, and (probabilities) its variance by a
    triangular solve (N·N_train²) and the probit integral's sum over 5 erf terms."""
    n_train = est.X_train_.shape[0]
    return x.n * n_train * (_kernel(est, x.f) + 2) + x.n * n_train * n_train + 20 * x.n
