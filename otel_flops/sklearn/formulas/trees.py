"""Trees and their ensembles: CART, extra trees, forests, boosting, isolation forests."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .registry import PREDICT, Data, flops_of, formula


def tree_fit_flops(tree: Any, features: int, sort: bool = True) -> float:
    """Seed paper's N·F·log2 N, per real node: each split sorts its n samples on each feature tried."""
    t = tree.tree_
    ns = t.n_node_samples[t.children_left != -1].astype(float)
    if sort:
        return float(np.sum(ns * np.log2(ns))) * features
    return float(np.sum(2 * ns)) * features  # random thresholds: a min/max pass and a split pass


@formula(("DecisionTreeClassifier", "DecisionTreeRegressor"), "fit")
def tree_fit(est: Any, x: Data) -> float:
    return tree_fit_flops(est, est.max_features_)


@formula(("ExtraTreeClassifier", "ExtraTreeRegressor"), "fit")
def extra_tree_fit(est: Any, x: Data) -> float:
    return tree_fit_flops(est, est.max_features_, sort=False)


TREES = ("DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier", "ExtraTreeRegressor")


@formula(TREES, *PREDICT)
def tree_predict(est: Any, x: Data) -> float:
    return x.n * est.tree_.max_depth  # one comparison per level, the depth as the bound


FORESTS = ("RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor",
           "RandomTreesEmbedding")


@formula(FORESTS, "fit")
def forest_fit(est: Any, x: Data) -> float:
    return sum(flops_of(tree, "fit", x) for tree in est.estimators_)


@formula(FORESTS[:-1], *PREDICT)
def forest_predict(est: Any, x: Data) -> float:
    """Each tree's traversal, plus averaging the trees' outputs."""
    outputs = len(est.classes_) if hasattr(est, "classes_") else est.n_outputs_
    return sum(tree_predict(tree, x) for tree in est.estimators_) + x.n * outputs * len(est.estimators_)


@formula("RandomTreesEmbedding", "transform")
def embedding_transform(est: Any, x: Data) -> float:
    """Each tree's traversal; the one-hot encoding of the leaves is a lookup."""
    return sum(tree_predict(tree, x) for tree in est.estimators_)


@formula("RandomTreesEmbedding", "fit_transform")
def embedding_fit_transform(est: Any, x: Data) -> float:
    return forest_fit(est, x) + embedding_transform(est, x)


@formula("IsolationForest", "fit")
def isolation_fit(est: Any, x: Data) -> float:
    """Each member an extra tree on its subsample (random thresholds), then the training scores."""
    return sum(flops_of(tree, "fit", x) for tree in est.estimators_) + isolation_predict(est, x)


@formula("IsolationForest", "predict", "decision_function", "score")
def isolation_predict(est: Any, x: Data) -> float:
    """Each tree's path, the average path-length correction of its leaf (about 6), the mean and
    the 2^(-h/c) score (Liu et al. 2008)."""
    return sum(x.n * (t.tree_.max_depth + 6) for t in est.estimators_) + 3 * x.n


@formula(("GradientBoostingClassifier", "GradientBoostingRegressor"), "fit")
def gb_fit(est: Any, x: Data) -> float:
    """Each stage fits its trees, then adds their predictions to the running scores (Friedman 2001)."""
    return sum(tree_fit(t, x) + tree_predict(t, x) for t in est.estimators_.flat)


@formula(("GradientBoostingClassifier", "GradientBoostingRegressor"), *PREDICT)
def gb_predict(est: Any, x: Data) -> float:
    return sum(tree_predict(t, x) for t in est.estimators_.flat)


HGB = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")


@formula(HGB, "fit")
def hgb_fit(est: Any, x: Data) -> float:
    """Binning (a binary search per value), then per tree: histograms per level, 3 per-sample
    updates (Ke et al. 2017)."""
    binning = x.n * x.f * math.ceil(math.log2(est.max_bins + 1))
    return binning + sum(x.n * (x.f * p.get_max_depth() + 3) for stage in est._predictors for p in stage)


@formula(HGB, *PREDICT)
def hgb_predict(est: Any, x: Data) -> float:
    return sum(x.n * p.get_max_depth() for stage in est._predictors for p in stage)


@formula(("AdaBoostClassifier", "AdaBoostRegressor"), "fit")
def adaboost_fit(est: Any, x: Data) -> float:
    """Each boost fits a member, predicts the training set with it, and reweights (4 per sample)
    (Freund & Schapire 1997)."""
    return sum(flops_of(e, "fit", x) + flops_of(e, "predict", x) + 4 * x.n for e in est.estimators_)


@formula(("AdaBoostClassifier", "AdaBoostRegressor"), *PREDICT)
def adaboost_predict(est: Any, x: Data) -> float:
    return sum(flops_of(e, "predict", x) for e in est.estimators_)
