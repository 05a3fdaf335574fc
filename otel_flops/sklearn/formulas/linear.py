"""Linear models, GLMs, discriminant analysis, kernel ridge and PLS.

Iterative solvers keep the seed paper's T·N·F·C (sec. 3.2), with N·F read as the stored values
(nnz), so a sparse input costs its non-zeros. Predictions are X·wᵀ + b: 2·nnz·C + N·C.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .registry import PREDICT, Data, cholesky_flops, formula, gram_flops, iters, outputs, svd_flops

ITERATIVE = ("LogisticRegression", "SGDClassifier", "SGDRegressor", "Perceptron", "LinearSVC", "LinearSVR",
             "Lasso", "ElasticNet", "MultiTaskLasso", "MultiTaskElasticNet", "PassiveAggressiveClassifier",
             "PassiveAggressiveRegressor", "HuberRegressor", "PoissonRegressor", "GammaRegressor",
             "TweedieRegressor", "SGDOneClassSVM", "QuantileRegressor")
LINEAR = ITERATIVE + ("LinearRegression", "Ridge", "RidgeClassifier", "RidgeCV", "RidgeClassifierCV", "LassoCV",
                      "ElasticNetCV", "MultiTaskLassoCV", "MultiTaskElasticNetCV", "LogisticRegressionCV", "Lars",
                      "LassoLars", "LarsCV", "LassoLarsCV", "LassoLarsIC", "OrthogonalMatchingPursuit",
                      "OrthogonalMatchingPursuitCV", "BayesianRidge", "ARDRegression", "TheilSenRegressor")


@formula(ITERATIVE, "fit")
def iterative_fit(est: Any, x: Data) -> float:
    """Seed paper 3.2: T·N·F·max(C, 1), T the iterations (epochs) really run (``n_iter_``)."""
    return iters(est) * x.nnz * outputs(est)


@formula(("SGDClassifier", "SGDRegressor", "Perceptron", "PassiveAggressiveClassifier",
          "PassiveAggressiveRegressor", "SGDOneClassSVM"), "partial_fit")
def one_epoch(est: Any, x: Data) -> float:
    """One epoch over the batch: N·F·C."""
    return x.nnz * outputs(est)


@formula(LINEAR, *PREDICT)
def linear_predict(est: Any, x: Data) -> float:
    """X·wᵀ + b: a multiply-add per stored value and output, an add per row and output."""
    c = outputs(est)
    return 2 * x.nnz * c + x.n * c


@formula(("PoissonRegressor", "GammaRegressor", "TweedieRegressor"), "score")
def glm_score(est: Any, x: Data) -> float:
    """D² (the deviance explained): the prediction with its inverse link (exp, N), and the unit
    deviances of the model and of the null model (about 6 per sample each)."""
    return linear_predict(est, x) + x.n + 12 * x.n


@formula("LinearRegression", "fit")
def least_squares_fit(est: Any, x: Data) -> float:
    """Seed paper 3.2: Gram matrix 2·N·F², Cholesky 2F³/3 (Björck 1996); sparse: 2·nnz·F."""
    return 2 * x.nnz * x.f + 2 * x.f**3 / 3


@formula(("Ridge", "RidgeClassifier"), "fit")
def ridge_fit(est: Any, x: Data) -> float:
    """By the solver used (``solver_``): cholesky on the Gram matrix; svd (the one array-API
    dispatch uses), centring and a thin SVD and Uᵀy; sag, saga, lsqr and sparse_cg report
    ``n_iter_``: T·N·F·C."""
    if getattr(est, "n_iter_", None) is not None:
        return iterative_fit(est, x)
    if getattr(est, "solver_", est.solver) == "svd":
        return 2 * x.nnz + svd_flops(x.n, x.f) + outputs(est) * (2 * x.n * min(x.n, x.f) + 4 * x.f)
    extra_targets = outputs(est) - 1  # each: Xᵀy and the two triangular solves
    return least_squares_fit(est, x) + extra_targets * (2 * x.nnz + 2 * x.f * x.f)


@formula("_RidgeGCV", "fit")
def ridge_gcv_fit(est: Any, x: Data) -> float:
    """Efficient leave-one-out (scikit-learn's _RidgeGCV): one decomposition, then per alpha the
    LOO residuals. N > F: Gram 2·N·F² + eigh 9F³; else the kernel 2·N²·F + eigh 9N³. Per alpha and
    target the diagonal of the hat matrix through the eigenvectors (2·N·m²) and the residuals
    (4·N·m + 2·m²)."""
    m = min(x.n, x.f)
    decomposition = gram_flops(max(x.n, x.f), m) + 9 * m**3
    alphas = np.size(est.alphas)
    targets = outputs(est)
    return decomposition + alphas * targets * (2 * x.n * m * m + 4 * x.n * m + 2 * m * m)


def _folds(est: Any, default: int = 5) -> int:
    cv = getattr(est, "cv", None)
    return cv if isinstance(cv, int) else default


@formula(("LassoCV", "ElasticNetCV", "MultiTaskLassoCV", "MultiTaskElasticNetCV"), "fit")
def coordinate_descent_cv_fit(est: Any, x: Data) -> float:
    """The regularisation path on each fold, then the refit: per alpha (and l1_ratio) and fold,
    ``n_iter_`` of the refit epochs of T·N·F·C over the fold's (k-1)/k of the rows (an estimate:
    the path's per-alpha iterations are not kept)."""
    k = est.mse_path_.shape[-1]
    path = np.size(est.alphas_) * k * iters(est) * x.nnz * (k - 1) / k
    return (path + iters(est) * x.nnz) * outputs(est)


@formula("LogisticRegressionCV", "fit")
def logistic_cv_fit(est: Any, x: Data) -> float:
    """Every fold's fit for every C, with its real iterations (``n_iter_`` per class, fold and C),
    on (k-1)/k of the rows, then the refit at the best C."""
    k = est.n_iter_.shape[1]
    return int(np.sum(est.n_iter_)) * x.nnz * (k - 1) / k * outputs(est) + iters(est) * x.nnz * outputs(est)


def _lars_path(x: Data, steps: int) -> float:
    """LARS (Efron et al. 2004): per step the correlations Xᵀr and Xᵀu (4·N·F), the equiangular
    vector over the active set (2·N·k) and a Cholesky update (k²), k <= steps."""
    return steps * (4 * x.nnz + 2 * x.n * steps + steps * steps)


@formula(("Lars", "LassoLars", "LassoLarsIC"), "fit")
def lars_fit(est: Any, x: Data) -> float:
    return _lars_path(x, iters(est)) * outputs(est)


@formula(("LarsCV", "LassoLarsCV"), "fit")
def lars_cv_fit(est: Any, x: Data) -> float:
    """A path per fold on (k-1)/k of the rows, then the refit; steps read from ``n_iter_``."""
    k = est.mse_path_.shape[-1]
    fold = Data(x.n * (k - 1) // k, x.f, x.nnz * (k - 1) // k)
    return k * _lars_path(fold, iters(est)) + _lars_path(x, iters(est))


def _omp(x: Data, steps: int) -> float:
    """OMP (Pati et al. 1993): per step Xᵀr (2·N·F), a Cholesky update and solve (2k²), the residual (2·N·k)."""
    return steps * (2 * x.nnz + 2 * x.n * steps + 2 * steps * steps)


@formula("OrthogonalMatchingPursuit", "fit")
def omp_fit(est: Any, x: Data) -> float:
    return _omp(x, iters(est)) * outputs(est)


@formula("OrthogonalMatchingPursuitCV", "fit")
def omp_cv_fit(est: Any, x: Data) -> float:
    """A path of up to F steps on each fold (the residues of every step are scored), then the refit."""
    k = _folds(est)
    fold = Data(x.n * (k - 1) // k, x.f, x.nnz * (k - 1) // k)
    return k * _omp(fold, x.f) + _omp(x, iters(est))


@formula("BayesianRidge", "fit")
def bayesian_ridge_fit(est: Any, x: Data) -> float:
    """One thin SVD of X, then per iteration (``n_iter_``) the coefficients through it
    (2·N·m + 2·F·m) and the residual norm (2·N·F + 2·N) (Tipping 2001; scikit-learn's update)."""
    m = min(x.n, x.f)
    return svd_flops(x.n, x.f) + iters(est) * (2 * x.n * m + 2 * x.f * m + 2 * x.nnz + 2 * x.n)


@formula("ARDRegression", "fit")
def ard_fit(est: Any, x: Data) -> float:
    """Per iteration a Woodbury update of the posterior covariance over the kept features
    (2·N·F² + F³), coefficients and residual (4·N·F) (Tipping 2001)."""
    return iters(est) * (gram_flops(x.n, x.f) + x.f**3 + 4 * x.nnz)


@formula("TheilSenRegressor", "fit")
def theil_sen_fit(est: Any, x: Data) -> float:
    """A least-squares fit per subpopulation (``n_subpopulation_`` subsets of F+1 rows), then the
    spatial median (Weiszfeld) over them, 3·F per subset and iteration (``n_iter_``)."""
    p = x.f + 1
    per_subset = gram_flops(p, p) + 2 * p**3 / 3
    return est.n_subpopulation_ * (per_subset + 3 * p * max(est.n_iter_, 1))


@formula("LinearDiscriminantAnalysis", "fit")
def lda_fit(est: Any, x: Data) -> float:
    """Class means and centring (2·N·F), then by solver: svd, the within-class SVD and the
    between-class SVD of C x F; lsqr / eigen, the covariance (2·N·F²) and a solve or eigh."""
    c = len(est.classes_)
    if est.solver == "svd":
        return 2 * x.nnz + x.nnz + svd_flops(x.n, x.f) + svd_flops(c, x.f)
    solve = 9 * x.f**3 if est.solver == "eigen" else cholesky_flops(x.f) * c
    return 2 * x.nnz + gram_flops(x.n, x.f) + solve


@formula("LinearDiscriminantAnalysis", *PREDICT)
def lda_predict(est: Any, x: Data) -> float:
    c = np.atleast_2d(est.coef_).shape[0]
    return 2 * x.nnz * c + x.n * c


@formula("LinearDiscriminantAnalysis", "transform")
def lda_transform(est: Any, x: Data) -> float:
    k = est.scalings_.shape[1] if est.solver == "svd" else est._max_components
    return x.nnz + 2 * x.nnz * min(k, est._max_components)


@formula("QuadraticDiscriminantAnalysis", "fit")
def qda_fit(est: Any, x: Data) -> float:
    """Per class: its mean and centring (2·n_c·F) and an SVD of its rows (Golub & Van Loan);
    n_c from the fitted ``priors_`` (the class frequencies unless the user set priors)."""
    sizes = np.rint(np.asarray(est.priors_) * x.n).astype(int)
    return sum(2 * n_c * x.f + svd_flops(int(n_c), x.f) for n_c in sizes)


@formula("QuadraticDiscriminantAnalysis", *PREDICT)
def qda_predict(est: Any, x: Data) -> float:
    """Per class: centre (N·F), rotate (2·N·F²), square and sum (2·N·F), log terms (N)."""
    return len(est.classes_) * (3 * x.n * x.f + 2 * x.n * x.f * x.f + x.n)


@formula("KernelRidge", "fit")
def kernel_ridge_fit(est: Any, x: Data) -> float:
    """The N x N kernel (N²·k(F)), then a Cholesky solve per target (Schölkopf & Smola 2002)."""
    from .svm import kernel_cost

    targets = np.atleast_2d(est.dual_coef_.T).shape[0]
    return x.n * x.n * kernel_cost(est, x.f) + x.n**3 / 3 + 2 * x.n * x.n * targets


@formula("KernelRidge", "predict")
def kernel_ridge_predict(est: Any, x: Data) -> float:
    from .svm import kernel_cost

    n_train = est.X_fit_.shape[0]
    targets = np.atleast_2d(est.dual_coef_.T).shape[0]
    return x.n * n_train * kernel_cost(est, x.f) + 2 * x.n * n_train * targets


PLS = ("PLSRegression", "PLSCanonical", "CCA")


@formula(PLS, "fit")
def pls_fit(est: Any, x: Data) -> float:
    """NIPALS (Wold 1966): per component and inner iteration (``n_iter_``) the x and y weights and
    scores (4·N·F + 4·N·Fy), then the deflation of X and Y (4·N·F + 4·N·Fy)."""
    fy = est.y_weights_.shape[0]
    per_pass = 4 * x.n * x.f + 4 * x.n * fy
    return sum(per_pass * (t + 1) for t in est.n_iter_) + 2 * x.nnz


@formula("PLSSVD", "fit")
def plssvd_fit(est: Any, x: Data) -> float:
    """The cross-covariance Xᵀ·Y (2·N·F·Fy) and its SVD."""
    fy = est.y_weights_.shape[0]
    return 2 * x.nnz + 2 * x.n * x.f * fy + svd_flops(x.f, fy)


@formula(PLS + ("PLSSVD",), "transform")
def pls_transform(est: Any, x: Data) -> float:
    """Centre and scale (2·N·F), project on the components (2·N·F·k)."""
    return 2 * x.nnz + 2 * x.nnz * est.x_weights_.shape[1]


@formula(PLS, "predict")
def pls_predict(est: Any, x: Data) -> float:
    fy = est.coef_.shape[0]
    return 2 * x.nnz + 2 * x.nnz * fy + x.n * fy


@formula(PLS + ("PLSSVD",), "inverse_transform")
def pls_inverse(est: Any, x: Data) -> float:
    return 2 * x.n * est.x_weights_.shape[1] * est.x_weights_.shape[0] + 2 * x.n * est.x_weights_.shape[0]
