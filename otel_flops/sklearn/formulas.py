"""FLOP formulas per estimator class and method: a registry, one small function per family.

Each formula takes the fitted estimator and the input's rows ``n`` and columns ``f`` and
returns FLOPs. It reads the work the estimator really did from fitted attributes (``n_iter_``,
``tree_.n_node_samples``, ``estimators_``, ``support_vectors_``, ``n_steps_``, ``coefs_``);
log2 N appears only where nothing fitted reveals the work (neighbour trees). Sources and the
symbol table: docs/sklearn-formulas.md. Adding an estimator means adding one ``@formula`` entry here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

Formula = Callable[[Any, int, int], float]

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


def lookup(cls: type, method: str) -> Formula | None:
    """The formula of the nearest class in the MRO that has one (a user's subclass inherits it)."""
    for klass in cls.__mro__:
        fn = _REGISTRY.get((klass.__name__, method))
        if fn is not None:
            return fn
    return None


def flops_of(est: Any, method: str, n: int, f: int) -> float:
    """A registered formula applied to an inner estimator (ensembles are sums of their members)."""
    fn = lookup(type(est), method)
    return fn(est, n, f) if fn is not None else 0.0


def _iters(est: Any) -> int:
    return int(np.max(est.n_iter_))


def _outputs(est: Any) -> int:
    return max(np.atleast_2d(est.coef_).shape[0], 1)


# ---- linear models -------------------------------------------------------------------------
ITERATIVE_LINEAR = ("LogisticRegression", "SGDClassifier", "SGDRegressor", "Perceptron", "LinearSVC",
                    "Lasso", "ElasticNet")
LINEAR = ITERATIVE_LINEAR + ("LinearRegression", "Ridge")


@formula(ITERATIVE_LINEAR, "fit")
def iterative_linear_fit(est: Any, n: int, f: int) -> float:
    """Seed paper 3.2: T * N * F * max(C_out, 1), T the iterations (epochs) really run."""
    return _iters(est) * n * f * _outputs(est)


@formula(("SGDClassifier", "SGDRegressor", "Perceptron"), "partial_fit")
def linear_partial_fit(est: Any, n: int, f: int) -> float:
    return n * f * _outputs(est)  # one epoch over the batch


@formula("LinearRegression", "fit")
def least_squares_fit(est: Any, n: int, f: int) -> float:
    """Seed paper 3.2: Gram matrix 2 N F^2, Cholesky F^3 / 3 * 2 (Bjorck 1996)."""
    return 2 * n * f * f + 2 * f**3 / 3


@formula("Ridge", "fit")
def ridge_fit(est: Any, n: int, f: int) -> float:
    if getattr(est, "n_iter_", None) is not None:  # sag, saga, lsqr, sparse_cg report iterations
        return iterative_linear_fit(est, n, f)
    return least_squares_fit(est, n, f)


@formula(LINEAR, *PREDICT)
def linear_predict(est: Any, n: int, f: int) -> float:
    return 2 * n * f * _outputs(est)


# ---- SVM -------------------------------------------------------------------------------------
KERNEL = {"linear": lambda f: 2 * f, "poly": lambda f: 2 * f + 3, "rbf": lambda f: 3 * f + 2,
          "sigmoid": lambda f: 2 * f + 3}


def _kernel(est: Any, f: int) -> int:
    return KERNEL.get(est.kernel, lambda f: f)(f) if isinstance(est.kernel, str) else f


@formula(("SVC", "SVR"), "fit")
def svm_fit(est: Any, n: int, f: int) -> float:
    """Each SMO iteration computes two kernel rows: 2 N kernel evaluations."""
    return int(np.sum(est.n_iter_)) * 2 * n * _kernel(est, f)


@formula(("SVC", "SVR"), *PREDICT)
def svm_predict(est: Any, n: int, f: int) -> float:
    """A kernel with every support vector, then the dual coefficients of each decision."""
    s = est.support_vectors_.shape[0]
    return n * s * _kernel(est, f) + 2 * n * s * est.dual_coef_.shape[0]


# ---- neighbours ------------------------------------------------------------------------------
def _levels(n: int, leaf_size: int) -> int:
    return max(1, math.ceil(math.log2(n / leaf_size))) if n > leaf_size else 1


@formula(("KNeighborsClassifier", "KNeighborsRegressor"), "fit")
def neighbors_fit(est: Any, n: int, f: int) -> float:
    """Brute force only validates and stores X (N F); a tree partitions it on every level."""
    return n * f if est._fit_method == "brute" else n * f * _levels(n, est.leaf_size)


@formula(("KNeighborsClassifier", "KNeighborsRegressor"), *PREDICT)
def neighbors_predict(est: Any, n: int, f: int) -> float:
    """Brute: 2 N_train F N (seed paper). Tree: about one leaf of distances per level (log2 N estimate)."""
    n_train = est.n_samples_fit_
    if est._fit_method == "brute":
        return 2 * n_train * f * n
    return 2 * f * n * est.leaf_size * _levels(n_train, est.leaf_size)


@formula("DBSCAN", "fit")
def dbscan_fit(est: Any, n: int, f: int) -> float:
    """A radius query per sample: all pairs by brute force, otherwise the tree estimate above."""
    if est.algorithm == "brute":
        return 2 * n * n * f
    return 2 * f * n * est.leaf_size * _levels(n, est.leaf_size)


# ---- clustering ------------------------------------------------------------------------------
def _k(est: Any) -> int:
    return est.cluster_centers_.shape[0]


@formula(("KMeans", "MiniBatchKMeans"), "predict", "transform", "score")
def kmeans_predict(est: Any, n: int, f: int) -> float:
    return 2 * n * f * _k(est)


@formula("KMeans", "fit")
def kmeans_fit(est: Any, n: int, f: int) -> float:
    """Seed paper 3.2 (Lloyd 1982): T * N * F * K over the iterations of the kept run."""
    return _iters(est) * n * f * _k(est)


@formula("KMeans", "fit_transform")
def kmeans_fit_transform(est: Any, n: int, f: int) -> float:
    return kmeans_fit(est, n, f) + kmeans_predict(est, n, f)


@formula("MiniBatchKMeans", "fit")
def minibatch_fit(est: Any, n: int, f: int) -> float:
    """Each step assigns one batch; labels for all of X at the end when compute_labels."""
    steps = est.n_steps_ * min(est.batch_size, n) * f * _k(est)
    return steps + (n * f * _k(est) if est.compute_labels else 0)


@formula("MiniBatchKMeans", "partial_fit")
def minibatch_partial_fit(est: Any, n: int, f: int) -> float:
    return n * f * _k(est) * (2 if est.compute_labels else 1)


# ---- decomposition ---------------------------------------------------------------------------
@formula("PCA", "fit")
def pca_fit(est: Any, n: int, f: int) -> float:
    """Centring (2 N F) plus the solver actually used (Golub & Van Loan operation counts)."""
    solver = getattr(est, "_fit_svd_solver", "full")
    m = min(n, f)
    if solver == "covariance_eigh":
        return 2 * n * f + 2 * n * f * f + 9 * f**3
    if solver in ("arpack", "randomized"):
        power = est.iterated_power if isinstance(est.iterated_power, int) else 4
        return 2 * n * f + 4 * n * f * (est.n_components_ + est.n_oversamples) * (power + 1)
    return 2 * n * f + 4 * n * f * m + 8 * m**3


@formula("PCA", "fit_transform")
def pca_fit_transform(est: Any, n: int, f: int) -> float:
    return pca_fit(est, n, f) + n * est.n_components_  # U * S


@formula("PCA", "transform")
def pca_transform(est: Any, n: int, f: int) -> float:
    return n * f + 2 * n * f * est.n_components_


@formula("PCA", "inverse_transform")
def pca_inverse(est: Any, n: int, f: int) -> float:
    return 2 * n * est.n_components_ * est.n_features_in_ + n * est.n_features_in_


@formula("TruncatedSVD", "fit", "fit_transform")
def tsvd_fit(est: Any, n: int, f: int) -> float:
    """Randomized range finder: (n_iter + 1) passes of two N x F x l products, l = k + oversamples."""
    k = est.n_components
    return 4 * n * f * (k + est.n_oversamples) * (est.n_iter + 1) + n * k


@formula("TruncatedSVD", "transform")
def tsvd_transform(est: Any, n: int, f: int) -> float:
    return 2 * n * f * est.n_components


@formula("TruncatedSVD", "inverse_transform")
def tsvd_inverse(est: Any, n: int, f: int) -> float:
    return 2 * n * est.n_components * est.n_features_in_


# ---- preprocessing ---------------------------------------------------------------------------
@formula("StandardScaler", "fit", "partial_fit")
def standard_fit(est: Any, n: int, f: int) -> float:
    """Mean: 1 add per element; variance: subtract, square, add."""
    return n * f * ((1 if est.with_mean or est.with_std else 0) + (3 if est.with_std else 0))


@formula("StandardScaler", "transform", "inverse_transform")
def standard_transform(est: Any, n: int, f: int) -> float:
    return n * f * (int(est.with_mean) + int(est.with_std))


@formula("MinMaxScaler", "fit", "partial_fit", "transform", "inverse_transform")
def minmax(est: Any, n: int, f: int) -> float:
    return 2 * n * f  # fit: a min and a max comparison; transform: a multiply and an add


# ---- trees and ensembles ---------------------------------------------------------------------
def tree_fit_flops(tree: Any, features: int, sort: bool = True) -> float:
    """Seed paper's N F log2 N, per real node: each split sorts its n samples on each feature tried."""
    t = tree.tree_
    ns = t.n_node_samples[t.children_left != -1].astype(float)
    if sort:
        return float(np.sum(ns * np.log2(ns))) * features
    return float(np.sum(2 * ns)) * features  # random thresholds: a min/max pass and a split pass


@formula(("DecisionTreeClassifier", "DecisionTreeRegressor"), "fit")
def tree_fit(est: Any, n: int, f: int) -> float:
    return tree_fit_flops(est, est.max_features_)


@formula(("ExtraTreeClassifier", "ExtraTreeRegressor"), "fit")
def extra_tree_fit(est: Any, n: int, f: int) -> float:
    return tree_fit_flops(est, est.max_features_, sort=False)


@formula(("DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier", "ExtraTreeRegressor"),
         *PREDICT)
def tree_predict(est: Any, n: int, f: int) -> float:
    return n * est.tree_.max_depth  # one comparison per level, the depth as the bound


FORESTS = ("RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor")


@formula(FORESTS, "fit")
def forest_fit(est: Any, n: int, f: int) -> float:
    return sum(flops_of(tree, "fit", n, f) for tree in est.estimators_)


@formula(FORESTS, *PREDICT)
def forest_predict(est: Any, n: int, f: int) -> float:
    """Each tree's traversal, plus averaging the trees' outputs."""
    outputs = len(est.classes_) if hasattr(est, "classes_") else est.n_outputs_
    return sum(tree_predict(tree, n, f) for tree in est.estimators_) + n * outputs * len(est.estimators_)


@formula(("GradientBoostingClassifier", "GradientBoostingRegressor"), "fit")
def gb_fit(est: Any, n: int, f: int) -> float:
    """Each stage fits its trees, then adds their predictions to the running scores."""
    return sum(tree_fit(t, n, f) + tree_predict(t, n, f) for t in est.estimators_.flat)


@formula(("GradientBoostingClassifier", "GradientBoostingRegressor"), *PREDICT)
def gb_predict(est: Any, n: int, f: int) -> float:
    return sum(tree_predict(t, n, f) for t in est.estimators_.flat)


HGB = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")


@formula(HGB, "fit")
def hgb_fit(est: Any, n: int, f: int) -> float:
    """Binning (a binary search per value), then per tree: histograms per level, 3 per-sample updates."""
    binning = n * f * math.ceil(math.log2(est.max_bins + 1))
    return binning + sum(n * (f * p.get_max_depth() + 3) for stage in est._predictors for p in stage)


@formula(HGB, *PREDICT)
def hgb_predict(est: Any, n: int, f: int) -> float:
    return sum(n * p.get_max_depth() for stage in est._predictors for p in stage)


@formula(("AdaBoostClassifier", "AdaBoostRegressor"), "fit")
def adaboost_fit(est: Any, n: int, f: int) -> float:
    """Each boost fits a member, predicts the training set with it, and reweights (4 per sample)."""
    return sum(flops_of(e, "fit", n, f) + flops_of(e, "predict", n, f) + 4 * n for e in est.estimators_)


@formula(("AdaBoostClassifier", "AdaBoostRegressor"), *PREDICT)
def adaboost_predict(est: Any, n: int, f: int) -> float:
    return sum(flops_of(e, "predict", n, f) for e in est.estimators_)


# ---- naive Bayes -----------------------------------------------------------------------------
@formula("GaussianNB", "fit", "partial_fit")
def gaussian_nb_fit(est: Any, n: int, f: int) -> float:
    return 3 * n * f  # per-class mean and variance: add; subtract, square, add


@formula("GaussianNB", *PREDICT)
def gaussian_nb_predict(est: Any, n: int, f: int) -> float:
    return 4 * n * f * len(est.classes_)  # subtract, square, divide, add per class


@formula("MultinomialNB", "fit", "partial_fit", *PREDICT)
def multinomial_nb(est: Any, n: int, f: int) -> float:
    return 2 * n * f * len(est.classes_)  # fit: Y^T X counts; predict: X @ log_prob.T


# ---- neural networks -------------------------------------------------------------------------
def _weights(est: Any) -> int:
    return sum(w.shape[0] * w.shape[1] for w in est.coefs_)


@formula(("MLPClassifier", "MLPRegressor"), "fit")
def mlp_fit(est: Any, n: int, f: int) -> float:
    """Per epoch a forward (2 N W) and a backward (4 N W) over the N samples, W the weights."""
    return est.n_iter_ * 6 * n * _weights(est)


@formula(("MLPClassifier", "MLPRegressor"), "partial_fit")
def mlp_partial_fit(est: Any, n: int, f: int) -> float:
    return 6 * n * _weights(est)


@formula(("MLPClassifier", "MLPRegressor"), *PREDICT)
def mlp_predict(est: Any, n: int, f: int) -> float:
    return 2 * n * _weights(est)
