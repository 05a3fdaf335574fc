"""Each estimator of the list on a small input: fit and predict/transform FLOPs, derived by hand.

N=40 rows, F=4 columns (make_classification / make_regression); the tree family uses 8 rows of
one feature split once, where a stump's fit is 8 log2 8 = 24 comparisons per feature tried.
Iteration counts are read from the fitted estimator, exactly as the formula reads them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn import cluster, decomposition, ensemble, linear_model, naive_bayes, neighbors, neural_network, svm, tree
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from otel_flops import sklearn as backend
from otel_flops.ledger import Ledger

N, F = 40, 4
XC, YC = make_classification(N, F, n_informative=2, random_state=0)
XR, YR = make_regression(N, F, random_state=0)
XS = np.arange(8.0).reshape(8, 1)  # one feature, two classes split at 3.5
YS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
C, R, S = (XC, YC), (XR, YR), (XS, YS)


def counted(est, X, y, method):
    """FLOPs of est.fit(X, y) and of est.<method>(X), counted by a tracker on this object only."""
    out = []
    calls = [lambda: est.fit(X, y) if y is not None else est.fit(X)]
    if method is not None:
        calls.append(lambda: getattr(est, method)(X))
    for call in calls:
        ledger = Ledger()
        undo = backend.track_estimator(est, ledger)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                call()
        finally:
            undo()
        assert not ledger.uncounted() and not ledger.errors, (ledger.uncounted(), ledger.errors)
        out.append(ledger.totals().flops)
    return out


def T(est):
    return int(np.max(est.n_iter_))


def sv(est):
    return est.support_vectors_.shape[0]


# (estimator, data, method, expected fit FLOPs, expected method FLOPs); callables read the fitted estimator
CASES = {
    # linear predictions: X·wᵀ + b, 2 N F + N
    "LogisticRegression": (linear_model.LogisticRegression(), C, "predict", lambda e: T(e) * N * F * 1, 2 * N * F + N),
    "SGDClassifier": (linear_model.SGDClassifier(max_iter=5, tol=None, random_state=0), C, "predict",
                      5 * N * F, 2 * N * F + N),
    "SGDRegressor": (linear_model.SGDRegressor(max_iter=5, tol=None, random_state=0), R, "predict",
                     5 * N * F, 2 * N * F + N),
    "Perceptron": (linear_model.Perceptron(max_iter=5, tol=None, random_state=0), C, "predict", 5 * N * F,
                   2 * N * F + N),
    "LinearSVC": (svm.LinearSVC(random_state=0), C, "decision_function", lambda e: T(e) * N * F, 2 * N * F + N),
    "Lasso": (linear_model.Lasso(alpha=0.1), R, "predict", lambda e: T(e) * N * F, 2 * N * F + N),
    "ElasticNet": (linear_model.ElasticNet(alpha=0.1), R, "predict", lambda e: T(e) * N * F, 2 * N * F + N),
    # 2 N F^2 + 2 F^3 / 3 = 1280 + 42.67
    "LinearRegression": (linear_model.LinearRegression(), R, "predict", 1323, 2 * N * F + N),
    "Ridge": (linear_model.Ridge(), R, "predict", 1323, 2 * N * F + N),
    # rbf kernel: 3F + 2 = 14 per evaluation; a binary problem has one row of dual coefficients
    "SVC": (svm.SVC(), C, "predict", lambda e: int(np.sum(e.n_iter_)) * 2 * N * 14,
            lambda e: N * sv(e) * 14 + 2 * N * sv(e)),
    "SVR": (svm.SVR(kernel="linear"), R, "predict", lambda e: int(np.sum(e.n_iter_)) * 2 * N * 8,
            lambda e: N * sv(e) * 8 + 2 * N * sv(e)),
    "KNeighborsClassifier": (neighbors.KNeighborsClassifier(3, algorithm="brute"), C, "predict", N * F, 2 * N * F * N),
    # kd tree, leaf_size 10: ceil(log2(40 / 10)) = 2 levels
    "KNeighborsRegressor": (neighbors.KNeighborsRegressor(3, algorithm="kd_tree", leaf_size=10), R, "predict",
                            N * F * 2, 2 * F * N * 10 * 2),
    "KMeans": (cluster.KMeans(3, n_init=1, random_state=0), (XC, None), "predict", lambda e: T(e) * N * F * 3,
               2 * N * F * 3),
    "MiniBatchKMeans": (cluster.MiniBatchKMeans(3, batch_size=10, n_init=1, random_state=0), (XC, None), "transform",
                        lambda e: e.n_steps_ * 10 * F * 3 + N * F * 3, 2 * N * F * 3),
    "DBSCAN": (cluster.DBSCAN(algorithm="brute"), (XC, None), None, 2 * N * N * F, None),
    # centring 2NF = 320, thin SVD with U 14 N F^2 + 8 F^3 = 8960 + 512; transform N F + 2 N F k
    "PCA": (decomposition.PCA(2, svd_solver="full"), (XC, None), "transform", 9792, N * F + 2 * N * F * 2),
    # 4 N F (k + 10 oversamples) (n_iter 5 + 1) + N k
    "TruncatedSVD": (decomposition.TruncatedSVD(2, random_state=0), (XC, None), "transform",
                     4 * N * F * 12 * 6 + N * 2, 2 * N * F * 2),
    "StandardScaler": (StandardScaler(), (XC, None), "transform", 4 * N * F, 2 * N * F),
    "MinMaxScaler": (MinMaxScaler(), (XC, None), "transform", 2 * N * F, 2 * N * F),
    "DecisionTreeClassifier": (tree.DecisionTreeClassifier(random_state=0), S, "predict", 24, 8),
    "DecisionTreeRegressor": (tree.DecisionTreeRegressor(random_state=0), S, "predict", 24, 8),
    # three stumps; predict: 8 rows x depth 1 per tree + averaging 8 x 2 classes x 3 trees
    "RandomForestClassifier": (ensemble.RandomForestClassifier(3, bootstrap=False, random_state=0), S,
                               "predict_proba", 72, 24 + 48),
    "RandomForestRegressor": (ensemble.RandomForestRegressor(3, bootstrap=False, random_state=0), S, "predict",
                              72, 24 + 24),
    # random thresholds: 2 n per feature per split (8 rows: 16), three depth-1 trees
    "ExtraTreesClassifier": (ensemble.ExtraTreesClassifier(3, max_depth=1, random_state=0), S, "predict", 48, 24 + 48),
    "ExtraTreesRegressor": (ensemble.ExtraTreesRegressor(3, max_depth=1, random_state=0), S, "predict", 48, 24 + 24),
    # each stage: a stump (24) and its prediction on the 8 rows (8)
    "GradientBoostingClassifier": (ensemble.GradientBoostingClassifier(n_estimators=3, max_depth=1), S, "predict",
                                   96, 24),
    "GradientBoostingRegressor": (ensemble.GradientBoostingRegressor(n_estimators=3, max_depth=1), S, "predict",
                                  96, 24),
    # binning 8 x ceil(log2 256) = 64; three stumps: 8 x (1 x 1 + 3) each
    "HistGradientBoostingClassifier": (ensemble.HistGradientBoostingClassifier(max_iter=3, max_depth=2,
                                       min_samples_leaf=1, max_leaf_nodes=2), S, "predict", 64 + 96, 24),
    "HistGradientBoostingRegressor": (ensemble.HistGradientBoostingRegressor(max_iter=3, max_depth=2,
                                      min_samples_leaf=1, max_leaf_nodes=2), S, "predict", 64 + 96, 24),
    # the first stump is perfect, so boosting stops after it: fit 24 + predict 8 + reweight 4 x 8
    "AdaBoostClassifier": (ensemble.AdaBoostClassifier(tree.DecisionTreeClassifier(max_depth=1), n_estimators=3),
                           S, "predict", 64, 8),
    "AdaBoostRegressor": (ensemble.AdaBoostRegressor(tree.DecisionTreeRegressor(max_depth=1), n_estimators=3,
                                                     random_state=0), S, "predict",
                          lambda e: sum(_stump(t) + 8 * t.tree_.max_depth + 32 for t in e.estimators_),
                          lambda e: sum(8 * t.tree_.max_depth for t in e.estimators_)),
    "GaussianNB": (naive_bayes.GaussianNB(), C, "predict_proba", 3 * N * F, 4 * N * F * 2),
    "MultinomialNB": (naive_bayes.MultinomialNB(), (np.abs(XC), YC), "predict", 2 * N * F * 2, 2 * N * F * 2),
    # one hidden layer of 5: W = 4 x 5 + 5 x 1 = 25 weights; 3 epochs of 6 N W
    "MLPClassifier": (neural_network.MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0), C, "predict",
                      3 * 6 * N * 25, 2 * N * 25),
    "MLPRegressor": (neural_network.MLPRegressor(hidden_layer_sizes=(5,), max_iter=3, random_state=0), R, "predict",
                     3 * 6 * N * 25, 2 * N * 25),
}


def _stump(t):
    """A resampled stump's fit: n log2 n at its root if it split, else nothing."""
    n = t.tree_.n_node_samples[0]
    return n * math.log2(n) if t.tree_.node_count > 1 else 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_formula_matches_hand_derivation(name):
    est, (X, y), method, fit_expected, method_expected = CASES[name]
    fit_flops, *method_flops = counted(est, X, y, method)
    expected = fit_expected(est) if callable(fit_expected) else fit_expected
    assert fit_flops == round(expected) > 0
    if method is not None:
        expected = method_expected(est) if callable(method_expected) else method_expected
        assert method_flops == [round(expected)] and expected > 0
