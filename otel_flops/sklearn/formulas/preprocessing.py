"""Scalers, encoders, imputers, discretisers, feature expansions, selectors and dummies.

Comparisons count 1 FLOP, as in the trees: a sort of N values is N·log2 N, a binary search among
K values log2 K. Work that only moves, selects or looks up values is classified zero.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .registry import PREDICT, Data, classify_zero, formula


def log2(k: float) -> int:
    return max(1, math.ceil(math.log2(k))) if k > 1 else 1


def _sort(x: Data) -> float:
    """np.unique / percentiles per column: a sort of each column's N values."""
    return x.f * x.n * log2(x.n)


@formula("StandardScaler", "fit", "partial_fit")
def standard_fit(est: Any, x: Data) -> float:
    """Mean: 1 add per value; variance: subtract, square, add."""
    return x.nnz * ((1 if est.with_mean or est.with_std else 0) + (3 if est.with_std else 0))


@formula("StandardScaler", "transform", "inverse_transform")
def standard_transform(est: Any, x: Data) -> float:
    return x.nnz * (int(est.with_mean) + int(est.with_std))


@formula("MinMaxScaler", "fit", "partial_fit", "transform", "inverse_transform")
def minmax(est: Any, x: Data) -> float:
    return 2 * x.nnz  # fit: a min and a max comparison; transform: a multiply and an add


@formula("MaxAbsScaler", "fit", "partial_fit")
def maxabs_fit(est: Any, x: Data) -> float:
    return 2 * x.nnz  # an absolute value and a comparison


@formula(("MaxAbsScaler", "Binarizer", "MissingIndicator"), "transform", "inverse_transform")
def one_per_value(est: Any, x: Data) -> float:
    """One operation per stored value: a divide (MaxAbsScaler), a comparison (Binarizer, MissingIndicator)."""
    return x.nnz


@formula("MissingIndicator", "fit")
def missing_indicator_fit(est: Any, x: Data) -> float:
    return x.nnz


@formula("RobustScaler", "fit")
def robust_fit(est: Any, x: Data) -> float:
    """The median and the quantile range per column: a sort of each column."""
    return _sort(x)


@formula("RobustScaler", "transform", "inverse_transform")
def robust_transform(est: Any, x: Data) -> float:
    return x.nnz * (int(est.with_centering) + int(est.with_scaling))


@formula("Normalizer", "transform")
def normalizer_transform(est: Any, x: Data) -> float:
    """l2: square, add, divide per value (and a square root per row); l1: abs, add, divide; max: compare, divide."""
    return (2 if est.norm == "max" else 3) * x.nnz + x.n


@formula("KernelCenterer", "fit")
def kernel_centerer_fit(est: Any, x: Data) -> float:
    return x.nnz + x.f  # column means of the kernel matrix and their mean


@formula("KernelCenterer", "transform")
def kernel_centerer_transform(est: Any, x: Data) -> float:
    return 3 * x.nnz + x.n * x.f  # row means, then subtract two means and add the overall one


@formula("QuantileTransformer", "fit")
def quantile_fit(est: Any, x: Data) -> float:
    """Each column's quantiles of a subsample (at most ``subsample`` rows): a sort per column."""
    rows = min(x.n, est.subsample or x.n)
    return x.f * rows * log2(rows)


@formula("QuantileTransformer", "transform", "inverse_transform")
def quantile_transform(est: Any, x: Data) -> float:
    """np.interp twice per value (both directions, for ties): a binary search and 4 for the
    interpolation each; a normal output adds the inverse CDF (about 10)."""
    per = 2 * (log2(est.n_quantiles_) + 4) + (10 if est.output_distribution == "normal" else 0)
    return x.nnz * per


BRENT_EVALS = 30


@formula("PowerTransformer", "fit")
def power_fit(est: Any, x: Data) -> float:
    """Per column Brent's search for lambda (about BRENT_EVALS log-likelihoods of 11·N: transform,
    variance, log sum; an estimate, scipy does not report them), then the transform and the
    standardisation (Yeo & Johnson 2000)."""
    return x.f * BRENT_EVALS * 11 * x.n + power_transform(est, x) + (4 * x.nnz if est.standardize else 0)


@formula("PowerTransformer", "fit_transform")
def power_fit_transform(est: Any, x: Data) -> float:
    return power_fit(est, x) + power_transform(est, x)


@formula("PowerTransformer", "transform", "inverse_transform")
def power_transform(est: Any, x: Data) -> float:
    return 6 * x.nnz + (2 * x.nnz if est.standardize else 0)  # log1p or power, scale; standardise


@formula("PolynomialFeatures", "transform")
def polynomial_transform(est: Any, x: Data) -> float:
    """One multiply per output term of degree 2 or more (each built from a lower-degree term);
    sparse input: only the terms whose factors are stored, scaled by the density."""
    linear = x.f + int(est.include_bias)
    density = x.nnz / (x.n * x.f) if x.n and x.f else 1
    return x.n * max(est.n_output_features_ - linear, 0) * density


@formula("SplineTransformer", "fit")
def spline_fit(est: Any, x: Data) -> float:
    """Knots: uniform from each column's min and max (2·N·F), quantile from a sort per column."""
    return _sort(x) if est.knots == "quantile" else 2 * x.nnz


@formula("SplineTransformer", "transform")
def spline_transform(est: Any, x: Data) -> float:
    """Per value a search among the knots and de Boor's recursion, 3·(d + 1)(d + 2)/2 for degree d."""
    d = est.degree
    return x.nnz * (log2(est.n_knots) + 3 * (d + 1) * (d + 2) // 2)


@formula("KBinsDiscretizer", "fit")
def kbins_fit(est: Any, x: Data) -> float:
    """Edges per column: uniform 2·N (min, max), quantile a sort, kmeans a 1-D k-means (counted as
    10 Lloyd iterations of 2·N·K, an estimate)."""
    k = int(np.max(est.n_bins_))
    if est.strategy == "uniform":
        return 2 * x.nnz
    if est.strategy == "kmeans":
        return x.f * 10 * 2 * x.n * k
    return _sort(x)


@formula("KBinsDiscretizer", "transform")
def kbins_transform(est: Any, x: Data) -> float:
    """A binary search among the edges per value (the one-hot encoding after it is free)."""
    return x.nnz * log2(int(np.max(est.n_bins_)))


@formula("KBinsDiscretizer", "inverse_transform")
def kbins_inverse(est: Any, x: Data) -> float:
    return 2 * x.n * x.f  # the bin centre: add and halve


ENCODERS = ("OneHotEncoder", "OrdinalEncoder")


def _categories(est: Any) -> float:
    return float(np.mean([len(c) for c in est.categories_])) if est.categories_ else 1


@formula(ENCODERS, "fit")
def encoder_fit(est: Any, x: Data) -> float:
    """The categories of each column: np.unique, a sort."""
    return _sort(x)


@formula(ENCODERS, "transform")
def encoder_transform(est: Any, x: Data) -> float:
    """Each value's code: a binary search among its column's categories."""
    return x.n * x.f * log2(_categories(est))


classify_zero(ENCODERS + ("LabelEncoder", "LabelBinarizer", "MultiLabelBinarizer"), "inverse_transform")


@formula("TargetEncoder", "fit", "fit_transform")
def target_encoder_fit(est: Any, x: Data) -> float:
    """The categories (a sort per column), then per fold of the cross fitting and for the full fit
    the target mean per category (2·N per column) with its shrinkage, and the lookup of each value."""
    folds = est.cv if isinstance(est.cv, int) else 5
    return _sort(x) + (folds + 1) * (2 * x.n * x.f) + x.n * x.f * log2(_categories(est))


@formula("TargetEncoder", "transform")
def target_encoder_transform(est: Any, x: Data) -> float:
    return x.n * x.f * log2(_categories(est))


@formula(("LabelEncoder", "LabelBinarizer"), "fit", "fit_transform")
def label_fit(est: Any, x: Data) -> float:
    return x.n * log2(x.n)  # np.unique of the labels


@formula(("LabelEncoder", "LabelBinarizer"), "transform")
def label_transform(est: Any, x: Data) -> float:
    return x.n * log2(len(est.classes_))


classify_zero("MultiLabelBinarizer", "fit", "fit_transform", "transform")  # set building: hashing, no arithmetic


@formula("SimpleImputer", "fit")
def simple_imputer_fit(est: Any, x: Data) -> float:
    """The missing mask (a comparison per value), then per column: mean, an add per value; median
    and most_frequent, a sort; constant, nothing."""
    stat = {"mean": x.nnz, "median": _sort(x), "most_frequent": _sort(x)}.get(est.strategy, 0)
    return x.nnz + stat


@formula("SimpleImputer", "transform")
def simple_imputer_transform(est: Any, x: Data) -> float:
    return x.nnz  # the mask; the fill is a copy


@formula("SimpleImputer", "inverse_transform")
def simple_imputer_inverse(est: Any, x: Data) -> float:
    return x.nnz


@formula("IsotonicRegression", "fit")
def isotonic_fit(est: Any, x: Data) -> float:
    """Sort by X, then pool adjacent violators (a few adds and compares per sample, 3·N) (Barlow et al. 1972)."""
    return x.n * log2(x.n) + 3 * x.n


@formula("IsotonicRegression", "predict", "transform")
def isotonic_predict(est: Any, x: Data) -> float:
    return x.n * (log2(len(est.X_thresholds_)) + 4)  # np.interp: a binary search and the interpolation


@formula("_SigmoidCalibration", "fit")
def sigmoid_calibration_fit(est: Any, x: Data) -> float:
    """Platt scaling (Platt 1999): two parameters by L-BFGS, counted as 30 evaluations of the loss
    and gradient over the N scores (10 each; an estimate, scipy does not report them)."""
    return 30 * 10 * x.n


@formula("_SigmoidCalibration", "predict")
def sigmoid_calibration_predict(est: Any, x: Data) -> float:
    return 4 * x.n  # a·s + b, exp, add, divide


@formula("DummyClassifier", "fit")
def dummy_classifier_fit(est: Any, x: Data) -> float:
    return x.n * log2(x.n)  # the classes and their counts: np.unique


@formula("DummyRegressor", "fit")
def dummy_regressor_fit(est: Any, x: Data) -> float:
    return x.n  # the mean (or a sort for the median, counted the same)


classify_zero(("DummyClassifier", "DummyRegressor"), *PREDICT)  # a constant, filled in
classify_zero("FunctionTransformer", "fit", "transform", "inverse_transform")  # identity; a user's func runs unseen


@formula(("SelectKBest", "SelectPercentile", "SelectFpr", "SelectFdr", "SelectFwe", "GenericUnivariateSelect"), "fit")
def univariate_fit(est: Any, x: Data) -> float:
    """The default scorer, the ANOVA F-test: per class and feature the sums and sums of squares
    (5·N·F), then the F statistics and p-values, and a sort of the F scores."""
    return 5 * x.nnz + 20 * x.f + x.f * log2(x.f)


@formula("VarianceThreshold", "fit")
def variance_fit(est: Any, x: Data) -> float:
    return 4 * x.nnz  # the mean (1) and the variance (3) per value


classify_zero("SelectorMixin", "transform", "inverse_transform")  # columns kept or dropped: no arithmetic
classify_zero(("Binarizer", "Normalizer", "PolynomialFeatures"), "fit")  # stateless or combinatorial: validates only
