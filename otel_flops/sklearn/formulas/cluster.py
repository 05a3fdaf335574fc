"""Clustering and mixtures: k-means family, BIRCH, hierarchical, affinity propagation, GMMs."""

from __future__ import annotations

import math
from typing import Any

from .registry import Data, cholesky_flops, formula, iters


def _k(est: Any) -> int:
    return est.cluster_centers_.shape[0]


@formula(("KMeans", "MiniBatchKMeans", "BisectingKMeans"), "transform", "score")
def kmeans_distances(est: Any, x: Data) -> float:
    """The distance to every centre, 2·N·F·K (a multiply-add per value and centre)."""
    return 2 * x.nnz * _k(est)


@formula(("KMeans", "MiniBatchKMeans"), "predict")
def kmeans_predict(est: Any, x: Data) -> float:
    return kmeans_distances(est, x)


@formula("KMeans", "fit")
def kmeans_fit(est: Any, x: Data) -> float:
    """Seed paper 3.2 (Lloyd 1982): T·N·F·K over the iterations of the kept run."""
    return iters(est) * x.nnz * _k(est)


@formula("KMeans", "fit_transform")
def kmeans_fit_transform(est: Any, x: Data) -> float:
    return kmeans_fit(est, x) + kmeans_distances(est, x)


@formula("MiniBatchKMeans", "fit")
def minibatch_fit(est: Any, x: Data) -> float:
    """Each step assigns one batch (Sculley 2010); labels for all of X at the end when compute_labels."""
    batch = min(est.batch_size, x.n) * (x.nnz / x.n if x.n else x.f)
    return est.n_steps_ * batch * _k(est) + (x.nnz * _k(est) if est.compute_labels else 0)


@formula("MiniBatchKMeans", "partial_fit")
def minibatch_partial_fit(est: Any, x: Data) -> float:
    return x.nnz * _k(est) * (2 if est.compute_labels else 1)


BISECTION_ITERS = 10


def _bisection_levels(est: Any) -> int:
    return max(1, math.ceil(math.log2(_k(est))))


@formula("BisectingKMeans", "fit")
def bisecting_fit(est: Any, x: Data) -> float:
    """Each level of bisection runs 2-means over the points of the clusters it splits, all N at
    most (Steinbach et al. 2000); scikit-learn keeps no iteration counts of the bisections, so each
    counts BISECTION_ITERS Lloyd iterations of T·N·F·2 (an estimate), n_init times."""
    return _bisection_levels(est) * est.n_init * BISECTION_ITERS * x.nnz * 2 + x.nnz * _k(est)


@formula("BisectingKMeans", "predict")
def bisecting_predict(est: Any, x: Data) -> float:
    """Down the hierarchy: two centres per level."""
    return _bisection_levels(est) * 2 * 2 * x.nnz


@formula("Birch", "fit", "partial_fit")
def birch_fit(est: Any, x: Data) -> float:
    """Each sample descends the CF tree comparing itself with up to branching_factor subclusters per
    level (2·F each) and updates the summaries on its path (Zhang et al. 1996); then the global
    clustering of the S subcluster centres (agglomerative, S²·(2F + 3))."""
    s = est.subcluster_centers_.shape[0]
    depth = max(1, math.ceil(math.log(max(s, 2), est.branching_factor)))
    insert = x.n * depth * (min(s, est.branching_factor) * 2 * x.f + 3 * x.f)
    return insert + s * s * (2 * x.f + 3)


@formula("Birch", "predict", "transform")
def birch_predict(est: Any, x: Data) -> float:
    return 2 * x.nnz * est.subcluster_centers_.shape[0]


@formula("AgglomerativeClustering", "fit")
def agglomerative_fit(est: Any, x: Data) -> float:
    """All pairwise distances (2·F each), then N - 1 merges each updating up to N distances by the
    Lance-Williams formula (3 each) (Müllner 2011)."""
    return x.n * x.n * (2 * (x.nnz / x.n if x.n else x.f) + 3)


@formula("FeatureAgglomeration", "fit")
def feature_agglomeration_fit(est: Any, x: Data) -> float:
    """The same on the features: F² pairwise distances over N rows, F merges."""
    return x.f * x.f * (2 * x.n + 3)


@formula("FeatureAgglomeration", "transform")
def feature_agglomeration_transform(est: Any, x: Data) -> float:
    return x.nnz + x.n * est.n_clusters_  # pooling: an add per value, a divide per output


@formula("FeatureAgglomeration", "inverse_transform")
def feature_agglomeration_inverse(est: Any, x: Data) -> float:
    return 0  # the pooled values are copied back to their features


@formula("AffinityPropagation", "fit")
def affinity_propagation_fit(est: Any, x: Data) -> float:
    """Similarities (2·N²·F), then per iteration (``n_iter_``) the responsibility and availability
    updates with damping, about 10 per pair (Frey & Dueck 2007)."""
    return 2 * x.n * x.nnz + iters(est) * 10 * x.n * x.n


@formula("AffinityPropagation", "predict")
def affinity_propagation_predict(est: Any, x: Data) -> float:
    return 2 * x.nnz * _k(est)


MIXTURES = ("GaussianMixture", "BayesianGaussianMixture")


def _estep(est: Any, x: Data) -> float:
    """Per component, the whitened distance: 2·N·F² with full or tied covariance, 2·N·F with diag
    or spherical, plus the log-sum-exp over components (3 per sample and component)."""
    per = 2 * x.n * x.f * x.f if est.covariance_type in ("full", "tied") else 2 * x.n * x.f
    return est.n_components * (per + 3 * x.n)


def _mstep(est: Any, x: Data) -> float:
    """Weighted means (2·N·F·K), covariances (2·N·F²·K full) and their Cholesky factors (F³/3·K)."""
    full = est.covariance_type in ("full", "tied")
    cov = 2 * x.n * x.f * x.f if full else 2 * x.n * x.f
    return est.n_components * (2 * x.n * x.f + cov + (cholesky_flops(x.f) if full else x.f))


@formula(MIXTURES, "fit")
def mixture_fit(est: Any, x: Data) -> float:
    """EM (Dempster et al. 1977): per iteration (``n_iter_`` of the kept run) an E and an M step,
    for each of the n_init runs; the k-means initialisation counts as one assignment pass."""
    return est.n_init * (iters(est) * (_estep(est, x) + _mstep(est, x)) + 2 * x.n * x.f * est.n_components)


@formula(MIXTURES, "predict", "predict_proba", "score")
def mixture_predict(est: Any, x: Data) -> float:
    return _estep(est, x)
