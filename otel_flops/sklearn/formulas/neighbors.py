"""Neighbour searches and what is built on them: k-NN and radius models, density, outliers,
density clustering, manifold learning, label propagation, the k-NN imputer.

A query against N_train rows costs 2·F per distance: brute force computes all of them; a kd or
ball tree visits about one leaf per level, leaf_size·⌈log2(N_train / leaf_size)⌉ rows (an
estimate: the visited nodes are not reported). Sparse input: F is the stored values per row.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .registry import PREDICT, Data, eigh_flops, formula, iters

LEAF = 30


def levels(n: int, leaf_size: int) -> int:
    return max(1, math.ceil(math.log2(n / leaf_size))) if n > leaf_size else 1


def _row(x: Data) -> float:
    return x.nnz / x.n if x.n else x.f


def queries(x: Data, n_train: int, method: str, leaf_size: int = LEAF) -> float:
    """Distances computed by N queries against n_train rows (brute, or the tree estimate)."""
    if method == "brute":
        return 2 * x.n * n_train * _row(x)
    return 2 * _row(x) * x.n * leaf_size * levels(n_train, leaf_size)


def build(x: Data, method: str, leaf_size: int = LEAF) -> float:
    """Brute force only stores X (one pass, N·F); a tree partitions it on every level."""
    return x.nnz if method == "brute" else x.nnz * levels(x.n, leaf_size)


NEIGHBORS = ("KNeighborsClassifier", "KNeighborsRegressor", "RadiusNeighborsClassifier",
             "RadiusNeighborsRegressor", "NearestNeighbors", "KNeighborsTransformer", "RadiusNeighborsTransformer")


@formula(NEIGHBORS, "fit")
def neighbors_fit(est: Any, x: Data) -> float:
    return build(x, est._fit_method, est.leaf_size)


@formula(NEIGHBORS, *PREDICT, "transform")
def neighbors_predict(est: Any, x: Data) -> float:
    """Seed paper 3.2 for brute force: 2·N_train·F·N; a tree: the log2 N estimate above."""
    return queries(x, est.n_samples_fit_, est._fit_method, est.leaf_size)


@formula(("KNeighborsTransformer", "RadiusNeighborsTransformer"), "fit_transform")
def neighbors_graph(est: Any, x: Data) -> float:
    return neighbors_fit(est, x) + neighbors_predict(est, x)


@formula("NearestCentroid", "fit")
def centroid_fit(est: Any, x: Data) -> float:
    """Class means (one add per value, a divide per centroid value), and shrinkage's spread when set."""
    k = est.centroids_.shape[0]
    return x.nnz + k * x.f + (3 * x.nnz if est.shrink_threshold else 0)


@formula("NearestCentroid", *PREDICT)
def centroid_predict(est: Any, x: Data) -> float:
    return 3 * x.nnz * est.centroids_.shape[0]  # squared distance to each centroid: subtract, square, add


@formula("KernelDensity", "fit")
def kde_fit(est: Any, x: Data) -> float:
    return build(x, "tree", est.leaf_size)


@formula("KernelDensity", "score")
def kde_score(est: Any, x: Data) -> float:
    """With the default tolerances (atol = rtol = 0) the tree prunes nothing: every pair's distance
    (2·F) and kernel (exp or polynomial, 2) is computed, then a log per query."""
    n_train = est.tree_.data.shape[0]
    return x.n * n_train * (2 * _row(x) + 2) + x.n


@formula("LocalOutlierFactor", "fit")
def lof_fit(est: Any, x: Data) -> float:
    """The training set's k-NN (Breunig et al. 2000), then reachability distances and local
    densities: 3 per neighbour per sample."""
    k = est.n_neighbors_
    return build(x, est._fit_method, est.leaf_size) + queries(x, x.n, est._fit_method, est.leaf_size) + 3 * x.n * k


@formula("LocalOutlierFactor", *PREDICT)
def lof_predict(est: Any, x: Data) -> float:
    return queries(x, est.n_samples_fit_, est._fit_method, est.leaf_size) + 3 * x.n * est.n_neighbors_


@formula("DBSCAN", "fit")
def dbscan_fit(est: Any, x: Data) -> float:
    """A radius query per sample: all pairs by brute force, otherwise the tree estimate."""
    method = "brute" if est.algorithm == "brute" else "tree"
    return queries(x, x.n, method, est.leaf_size)


@formula("OPTICS", "fit")
def optics_fit(est: Any, x: Data) -> float:
    """Core distances (k-NN of every sample), then with the default max_eps = inf each sample's
    reachability to all unprocessed ones: N² distances (2·F) and updates (1) (Ankerst et al. 1999)."""
    method = "brute" if est.algorithm == "brute" else "tree"
    return build(x, method, est.leaf_size) + queries(x, x.n, method, est.leaf_size) + x.n * x.n * (2 * _row(x) + 1)


@formula("HDBSCAN", "fit")
def hdbscan_fit(est: Any, x: Data) -> float:
    """Core distances (k-NN of every sample), then the minimum spanning tree of the mutual
    reachability graph: Prim over all pairs with brute force (N²·(2F + 2)), Boruvka over the tree
    with about log2 N rounds of queries (Campello et al. 2013; McInnes & Healy 2017)."""
    method = "brute" if est.algorithm == "brute" else "tree"
    core = queries(x, x.n, method, est.leaf_size)
    if method == "brute":
        return core + x.n * x.n * (2 * _row(x) + 2)
    return core + core * levels(x.n, 1)


@formula("MeanShift", "fit")
def mean_shift_fit(est: Any, x: Data) -> float:
    """The bandwidth estimate (k-NN of all samples, 2·N²·F unless given), then per seed and
    iteration (``n_iter_``, the most any seed ran) a radius query and its mean (an estimate: a
    bandwidth near the median neighbour distance reaches a large share of the samples, so the
    query is counted as brute force) (Comaniciu & Meer 2002)."""
    bandwidth = 0 if est.bandwidth is not None else 2 * x.n * x.n * _row(x)
    seeds = x.n if not est.bin_seeding else est.cluster_centers_.shape[0]
    return bandwidth + seeds * est.n_iter_ * (2 * x.n * _row(x) + x.nnz / max(x.n, 1))


@formula("MeanShift", "predict")
def mean_shift_predict(est: Any, x: Data) -> float:
    return 2 * x.nnz * est.cluster_centers_.shape[0]


@formula("Isomap", "fit", "fit_transform")
def isomap_fit(est: Any, x: Data) -> float:
    """The k-NN graph, Dijkstra from every node (N·E·log2 N, E = N·k edges), then kernel PCA of the
    N x N geodesic distances: centring (2·N²) and a dense eigendecomposition (Tenenbaum et al. 2000)."""
    k = est.n_neighbors or 5
    graph = build(x, "tree", LEAF) + queries(x, x.n, "tree")
    return graph + x.n * x.n * k * levels(x.n, 1) + 2 * x.n * x.n + eigh_flops(x.n) + 2 * x.n * est.embedding_.shape[1]


@formula("Isomap", "transform")
def isomap_transform(est: Any, x: Data) -> float:
    """k-NN of the new rows, their geodesic distances through the neighbours (N·N_train·k), projection."""
    n_train = est.embedding_.shape[0]
    k = est.n_neighbors or 5
    d = est.embedding_.shape[1]
    return queries(x, n_train, "tree") + x.n * n_train * k + 2 * x.n * n_train * d


@formula("LocallyLinearEmbedding", "fit", "fit_transform")
def lle_fit(est: Any, x: Data) -> float:
    """k-NN, per sample a local Gram (2·k²·F) and its solve (k³/3), then the bottom eigenvectors
    of the N x N (I - W)ᵀ(I - W): dense below 200 samples, 9·N³ (Roweis & Saul 2000)."""
    k = est.n_neighbors
    local = x.n * (2 * k * k * x.f + k**3 / 3)
    return build(x, "tree") + queries(x, x.n, "tree") + local + 2 * x.n * k * k + eigh_flops(x.n)


@formula("LocallyLinearEmbedding", "transform")
def lle_transform(est: Any, x: Data) -> float:
    k = est.n_neighbors
    n_train = est.embedding_.shape[0]
    return queries(x, n_train, "tree") + x.n * (2 * k * k * x.f + k**3 / 3) + 2 * x.n * k * est.embedding_.shape[1]


@formula("SpectralEmbedding", "fit", "fit_transform")
def spectral_embedding_fit(est: Any, x: Data) -> float:
    """The affinity (k-NN graph, or the dense rbf kernel N²·(3F + 2)), the normalised Laplacian
    (3 per entry) and its eigenvectors, counted as a dense eigendecomposition 9·N³ (an upper
    estimate: ARPACK's restarts are not reported)."""
    if est.affinity == "rbf":
        affinity = x.n * x.n * (3 * _row(x) + 2)
    else:
        affinity = build(x, "tree") + queries(x, x.n, "tree")
    return affinity + 3 * x.n * x.n + eigh_flops(x.n)


@formula("TSNE", "fit", "fit_transform")
def tsne_fit(est: Any, x: Data) -> float:
    """k-NN with k = 3·perplexity, a binary search for each sample's bandwidth (about 50 steps of
    4·k), then per iteration (``n_iter_``) Barnes-Hut's repulsion (N·log2 N cells of 4·d) and the
    attraction over the k neighbours (4·N·k·d) (van der Maaten 2014); exact: N²·(4·d + 3)."""
    k = min(x.n - 1, int(3 * est.perplexity + 1))
    d = est.embedding_.shape[1]
    setup = build(x, "tree") + queries(x, x.n, "tree") + 50 * 4 * x.n * k
    if est.method == "exact":
        return setup + est.n_iter_ * x.n * x.n * (4 * d + 3)
    return setup + est.n_iter_ * (x.n * levels(x.n, 1) * 4 * d + 4 * x.n * k * d)


PROPAGATION = ("LabelPropagation", "LabelSpreading")


def _graph(est: Any, x: Data, n_train: int) -> float:
    from .svm import kernel_cost

    if est.kernel == "knn":
        return queries(x, n_train, "tree")
    return x.n * n_train * kernel_cost(est, _row(x))


@formula(PROPAGATION, "fit")
def propagation_fit(est: Any, x: Data) -> float:
    """The affinity over the training rows (rbf: N²·(3F + 2)), then per iteration (``n_iter_``)
    the label distributions times it, 2·N²·C dense (Zhou et al. 2004)."""
    c = len(est.classes_)
    return _graph(est, x, x.n) + est.n_iter_ * 2 * x.n * x.n * c


@formula(PROPAGATION, *PREDICT)
def propagation_predict(est: Any, x: Data) -> float:
    n_train = est.X_.shape[0]
    return _graph(est, x, n_train) + 2 * x.n * n_train * len(est.classes_)


@formula("KNNImputer", "fit")
def knn_imputer_fit(est: Any, x: Data) -> float:
    return x.nnz  # the missing-value mask: one comparison per value


@formula("KNNImputer", "transform")
def knn_imputer_transform(est: Any, x: Data) -> float:
    """The mask, then for each row with a missing value the nan-euclidean distance to every fitted
    row (3·F) and the mean of its k donors per missing value (Troyanskaya et al. 2001)."""
    X = np.asarray(x.X, dtype=float) if x.X is not None and not x.sparse else None
    missing = np.isnan(X) if X is not None else np.zeros((x.n, x.f), bool)
    rows = int(missing.any(axis=1).sum())
    n_train = est._fit_X.shape[0]
    return x.nnz + rows * n_train * 3 * x.f + int(missing.sum()) * 2 * est.n_neighbors


@formula("NeighborhoodComponentsAnalysis", "fit")
def nca_fit(est: Any, x: Data) -> float:
    """L-BFGS over the linear map L (k x F) (Goldberger et al. 2004): per iteration (``n_iter_``)
    the embedding X·Lᵀ (2·N·F·k), all pairwise distances in it (3·N²·k), the softmax over them
    (3·N²), and the gradient's weighted outer products (2·N²·k + 4·N·F·k)."""
    k = est.components_.shape[0]
    return iters(est) * (6 * x.nnz * k + 5 * x.n * x.n * k + 3 * x.n * x.n)


@formula("NeighborhoodComponentsAnalysis", "transform")
def nca_transform(est: Any, x: Data) -> float:
    return 2 * x.nnz * est.components_.shape[0]
