"""Matrix decompositions, kernel approximations, random projections, covariance estimators, the RBM.

Dense factorisations use Golub & Van Loan's operation counts (registry: ``svd_flops``,
``eigh_flops``, ``cholesky_flops``); randomized ones Halko et al. 2011's (passes of two N x F x l
products). Where scikit-learn keeps no iteration count, the docstring says which estimate is used.
"""

from __future__ import annotations

import math
from typing import Any

from .registry import Data, cholesky_flops, eigh_flops, formula, gram_flops, iters, svd_flops


def _k(est: Any) -> int:
    return est.components_.shape[0]


# ---- PCA family ------------------------------------------------------------------------------
@formula("PCA", "fit")
def pca_fit(est: Any, x: Data) -> float:
    """Centring (2·N·F) plus the solver actually used (``_fit_svd_solver``)."""
    solver = getattr(est, "_fit_svd_solver", "full")
    if solver == "covariance_eigh":
        return 2 * x.nnz + gram_flops(x.n, x.f) + eigh_flops(x.f)
    if solver in ("arpack", "randomized"):
        power = est.iterated_power if isinstance(est.iterated_power, int) else 4
        return 2 * x.nnz + 4 * x.nnz * (est.n_components_ + est.n_oversamples) * (power + 1)
    return 2 * x.nnz + svd_flops(x.n, x.f)


@formula("PCA", "fit_transform")
def pca_fit_transform(est: Any, x: Data) -> float:
    return pca_fit(est, x) + x.n * est.n_components_  # U·S


@formula(("PCA", "IncrementalPCA", "FactorAnalysis", "FastICA", "SparsePCA", "MiniBatchSparsePCA"), "transform")
def centred_projection(est: Any, x: Data) -> float:
    """Centre (N·F), project on k components (2·N·F·k)."""
    return x.nnz + 2 * x.nnz * _k(est)


@formula(("PCA", "IncrementalPCA", "FastICA"), "inverse_transform")
def pca_inverse(est: Any, x: Data) -> float:
    f = est.components_.shape[1]
    return 2 * x.n * _k(est) * f + x.n * f


@formula(("PCA", "FactorAnalysis"), "score")
def gaussian_score(est: Any, x: Data) -> float:
    """Log-likelihood under the fitted Gaussian: the precision (F³ via the inverse), centring, the
    quadratic form 2·N·F² + N·F."""
    return est.components_.shape[1] ** 3 + x.nnz + 2 * x.n * x.f * x.f + x.nnz


@formula("IncrementalPCA", "fit")
def incremental_pca_fit(est: Any, x: Data) -> float:
    """Per batch (``batch_size_`` rows): the running mean and variance (4·b·F) and the SVD of the
    (k + b + 1) x F stack of the old components and the centred batch (Ross et al. 2008)."""
    b = est.batch_size_
    batches = math.ceil(x.n / b)
    k = est.n_components_
    return batches * (4 * b * x.f + svd_flops(k + b + 1, x.f))


@formula("IncrementalPCA", "partial_fit")
def incremental_pca_partial_fit(est: Any, x: Data) -> float:
    return 4 * x.nnz + svd_flops(est.n_components_ + x.n + 1, x.f)


@formula("TruncatedSVD", "fit", "fit_transform")
def tsvd_fit(est: Any, x: Data) -> float:
    """Randomized range finder (Halko et al. 2011): (n_iter + 1) passes of two N x F x l products,
    l = k + oversamples; N·F is the stored values, so a sparse matrix costs its non-zeros."""
    k = est.n_components
    return 4 * x.nnz * (k + est.n_oversamples) * (est.n_iter + 1) + x.n * k


@formula(("TruncatedSVD", "GaussianRandomProjection", "SparseRandomProjection"), "transform")
def projection(est: Any, x: Data) -> float:
    """X·Cᵀ: 2·nnz·k (a sparse projection matrix: its density of the products)."""
    density = getattr(est, "density_", 1.0)
    return 2 * x.nnz * _k(est) * density


@formula(("TruncatedSVD", "GaussianRandomProjection", "SparseRandomProjection", "NMF", "MiniBatchNMF",
          "DictionaryLearning", "MiniBatchDictionaryLearning", "LatentDirichletAllocation"), "inverse_transform")
def back_projection(est: Any, x: Data) -> float:
    return 2 * x.n * _k(est) * est.components_.shape[1]


@formula(("GaussianRandomProjection", "SparseRandomProjection"), "fit")
def random_projection_fit(est: Any, x: Data) -> float:
    """Drawing the random matrix (k x F values, one scaling each); the data is not read."""
    return _k(est) * x.f


@formula("KernelPCA", "fit")
def kernel_pca_fit(est: Any, x: Data) -> float:
    """The N x N kernel (N²·k(F)), its double centring (3·N²), and its top eigenvectors: a dense
    eigendecomposition 9·N³ (eigen_solver dense, or auto below 200 samples), else a randomized
    one (Halko et al. 2011) of 4·N²·(k + 10)·(iterations + 1) (Schölkopf et al. 1998)."""
    from .svm import kernel_cost

    k = est.eigenvectors_.shape[1]
    kernel = x.n * x.n * kernel_cost(est, x.nnz / x.n if x.n else x.f) + 3 * x.n * x.n
    solver = est.eigen_solver
    if solver == "auto":
        solver = "dense" if x.n <= 200 or k >= 10 else "arpack"
    if solver == "dense":
        return kernel + eigh_flops(x.n)
    power = est.iterated_power if isinstance(est.iterated_power, int) else 7
    return kernel + 4 * x.n * x.n * (k + 10) * (power + 1)


@formula("KernelPCA", "fit_transform")
def kernel_pca_fit_transform(est: Any, x: Data) -> float:
    return kernel_pca_fit(est, x) + x.n * est.eigenvectors_.shape[1]


@formula("KernelPCA", "transform")
def kernel_pca_transform(est: Any, x: Data) -> float:
    """The kernel with the training rows, its centring (3·N·N_train), the projection (2·N·N_train·k)."""
    from .svm import kernel_cost

    n_train = est.X_fit_.shape[0]
    row = x.nnz / x.n if x.n else x.f
    return x.n * n_train * (kernel_cost(est, row) + 3 + 2 * est.eigenvectors_.shape[1])


@formula("KernelPCA", "inverse_transform")
def kernel_pca_inverse(est: Any, x: Data) -> float:
    n_train = est.X_transformed_fit_.shape[0]
    return x.n * n_train * (3 * x.f + 2) + 2 * x.n * n_train * est.dual_coef_.shape[1]


# ---- NMF, ICA, factor analysis, topic models, dictionary learning ----------------------------------
def _nmf_pass(x: Data, k: int) -> float:
    """One update of W and H (Lee & Seung 2001; coordinate descent alike): the products with X
    (4·nnz·k) and the k x k Grams with their products (4·(N + F)·k²)."""
    return 4 * x.nnz * k + 4 * (x.n + x.f) * k * k


@formula(("NMF", "MiniBatchNMF"), "fit", "fit_transform")
def nmf_fit(est: Any, x: Data) -> float:
    """``n_iter_`` full passes; MiniBatchNMF: ``n_steps_`` passes over a batch."""
    k = est.n_components_
    if hasattr(est, "n_steps_"):
        b = min(est._batch_size, x.n)
        return est.n_steps_ * _nmf_pass(Data(b, x.f, x.nnz * b // max(x.n, 1)), k)
    return iters(est) * _nmf_pass(x, k)


@formula(("NMF", "MiniBatchNMF"), "transform")
def nmf_transform(est: Any, x: Data) -> float:
    """W for fixed H: the same updates, H's half skipped; counted with the fit's ``n_iter_`` (an
    estimate: the transform's own iterations are not kept)."""
    k = est.n_components_
    return iters(est) * (2 * x.nnz * k + 2 * x.n * k * k)


@formula("FactorAnalysis", "fit")
def factor_analysis_fit(est: Any, x: Data) -> float:
    """Centring, then per iteration (``n_iter_``) an SVD of the scaled N x F data and the
    log-likelihood (Barber 2012, alg. 21.1; scikit-learn's lapack solver)."""
    return 2 * x.nnz + iters(est) * (svd_flops(x.n, x.f) + 4 * x.nnz)


@formula("FastICA", "fit", "fit_transform")
def fast_ica_fit(est: Any, x: Data) -> float:
    """Centring and whitening (an SVD of the data), then per iteration (``n_iter_``) of the
    parallel algorithm W·X and the update (4·N·F·k), the contrast g and g' (8·N·k) and the
    symmetric decorrelation (an eigh of k x k) (Hyvärinen & Oja 2000)."""
    k = _k(est)
    whiten = 2 * x.nnz + svd_flops(x.f, x.n) + 2 * x.nnz * k
    return whiten + iters(est) * (4 * x.n * k * k + 8 * x.n * k + eigh_flops(k))


LDA_INNER = 10


def _lda_estep(est: Any, x: Data) -> float:
    """Per document and inner update (LDA_INNER, an estimate: scikit-learn stops each document
    on its own mean change and keeps no count), the phi normalisers over its non-zeros and the
    topics (6·nnz·k) (Hoffman et al. 2010)."""
    return LDA_INNER * 6 * x.nnz * _k(est)


@formula("LatentDirichletAllocation", "fit", "partial_fit")
def lda_topics_fit(est: Any, x: Data) -> float:
    """Per pass (``n_iter_``) an E-step over the documents and the topic-word update (k·F digamma)."""
    passes = iters(est) if hasattr(est, "n_iter_") else 1
    return passes * (_lda_estep(est, x) + 10 * _k(est) * x.f)


@formula("LatentDirichletAllocation", "transform")
def lda_topics_transform(est: Any, x: Data) -> float:
    return _lda_estep(est, x) + x.n * _k(est)


@formula("LatentDirichletAllocation", "score")
def lda_topics_score(est: Any, x: Data) -> float:
    return _lda_estep(est, x) + 3 * x.nnz * _k(est) + 10 * _k(est) * x.f


def _sparse_code(x: Data, k: int) -> float:
    """Sparse coding of N rows over k atoms with LARS on a precomputed Gram (2·k²·F once): the
    correlations (2·N·F·k) and per row up to k steps of k² (Efron et al. 2004)."""
    return 2 * k * k * x.f + 2 * x.nnz * k + x.n * k**3


@formula(("DictionaryLearning", "SparsePCA"), "fit", "fit_transform")
def dictionary_fit(est: Any, x: Data) -> float:
    """Per iteration (``n_iter_``) the sparse code and the dictionary update by block coordinate
    descent (2·N·F·k + 2·N·k²) (Mairal et al. 2009)."""
    k = _k(est)
    return iters(est) * (_sparse_code(x, k) + 2 * x.nnz * k + 2 * x.n * k * k)


@formula(("MiniBatchDictionaryLearning", "MiniBatchSparsePCA"), "fit", "fit_transform")
def minibatch_dictionary_fit(est: Any, x: Data) -> float:
    """``n_steps_`` steps over a batch of ``batch_size`` rows, each a sparse code and an update
    (MiniBatchSparsePCA keeps the epochs, ``n_iter_``, of ⌈N / batch⌉ steps each)."""
    k = _k(est)
    b = min(est.batch_size, x.n)
    batch = Data(b, x.f, x.nnz * b // max(x.n, 1))
    steps = getattr(est, "n_steps_", None) or iters(est) * math.ceil(x.n / b)
    return steps * (_sparse_code(batch, k) + 2 * batch.nnz * k + 2 * b * k * k)


@formula(("DictionaryLearning", "MiniBatchDictionaryLearning", "SparseCoder"), "transform")
def dictionary_transform(est: Any, x: Data) -> float:
    return _sparse_code(x, _k(est) if hasattr(est, "components_") else est.dictionary.shape[0])


@formula(("SparsePCA", "MiniBatchSparsePCA"), "transform")
def sparse_pca_transform(est: Any, x: Data) -> float:
    """Ridge regression on the components: centre, 2·N·F·k, the k x k solve."""
    k = _k(est)
    return x.nnz + 2 * x.nnz * k + gram_flops(x.f, k) + cholesky_flops(k)


# ---- multidimensional scaling -----------------------------------------------------------------
@formula("MDS", "fit", "fit_transform")
def mds_fit(est: Any, x: Data) -> float:
    """Euclidean dissimilarities (2·N²·F), then SMACOF (de Leeuw 1977): per iteration (``n_iter_``
    of the kept run) the embedding's distances (3·N²·d) and the Guttman transform (2·N²·d + 3·N²),
    for each of the n_init runs."""
    d = est.embedding_.shape[1]
    return 2 * x.n * x.nnz + est.n_init * iters(est) * (5 * x.n * x.n * d + 3 * x.n * x.n)


@formula("ClassicalMDS", "fit", "fit_transform")
def classical_mds_fit(est: Any, x: Data) -> float:
    """Dissimilarities (2·N²·F), double centring (3·N²), a dense eigendecomposition (9·N³) (Torgerson 1952)."""
    return 2 * x.n * x.nnz + 3 * x.n * x.n + eigh_flops(x.n) + x.n * est.embedding_.shape[1]


# ---- kernel approximations -----------------------------------------------------------------------
@formula("RBFSampler", "fit")
def rbf_sampler_fit(est: Any, x: Data) -> float:
    return est.random_weights_.size  # the drawn weights scaled by sqrt(2 gamma)


@formula(("RBFSampler", "SkewedChi2Sampler"), "transform")
def random_features_transform(est: Any, x: Data) -> float:
    """X·W (2·nnz·D), the offset, the cosine and the scale (3·N·D) (Rahimi & Recht 2007);
    SkewedChi2 first takes log(x + c) of each value (2·N·F)."""
    d = est.random_weights_.shape[1]
    skewed = 2 * x.nnz if type(est).__name__ == "SkewedChi2Sampler" else 0
    return skewed + 2 * x.nnz * d + 3 * x.n * d


@formula("SkewedChi2Sampler", "fit")
def skewed_chi2_fit(est: Any, x: Data) -> float:
    return 2 * est.random_weights_.size  # tan and log of the drawn uniforms


@formula("AdditiveChi2Sampler", "transform")
def additive_chi2_transform(est: Any, x: Data) -> float:
    """Per stored value: the square root and log (3), then two features (cos, sin with their
    scale: 4) per step after the first (Vedaldi & Zisserman 2012)."""
    return x.nnz * (3 + 4 * (est.sample_steps - 1))


@formula("AdditiveChi2Sampler", "fit")
def additive_chi2_fit(est: Any, x: Data) -> float:
    return 0  # stateless: validates only


@formula("PolynomialCountSketch", "fit")
def count_sketch_fit(est: Any, x: Data) -> float:
    return 0  # draws the hash indices and signs: integers, no arithmetic


@formula("PolynomialCountSketch", "transform")
def count_sketch_transform(est: Any, x: Data) -> float:
    """Per degree a count sketch (a signed add per stored value) and its FFT, the elementwise
    product of the spectra, an inverse FFT (Pham & Pagh 2013; 2.5·D·log2 D per real transform)."""
    d, p = est.n_components, est.degree
    fft = 2.5 * d * math.log2(max(d, 2))
    return p * (2 * x.nnz + x.n * fft) + x.n * (p * 6 * d + fft)


@formula("Nystroem", "fit")
def nystroem_fit(est: Any, x: Data) -> float:
    """The m x m kernel of the sampled components (m²·k(F)) and its inverse square root by SVD
    (Williams & Seeger 2001)."""
    from .svm import kernel_cost

    m = est.components_.shape[0]
    return m * m * kernel_cost(est, x.f) + svd_flops(m, m) + 2 * m * m * m


@formula("Nystroem", "transform")
def nystroem_transform(est: Any, x: Data) -> float:
    from .svm import kernel_cost

    m = est.components_.shape[0]
    return x.n * m * kernel_cost(est, x.nnz / x.n if x.n else x.f) + 2 * x.n * m * m


# ---- covariance ----------------------------------------------------------------------------------
def _covariance(x: Data) -> float:
    """The mean and centring (2·N·F), the covariance (2·N·F²), its pseudo-inverse by eigh (9·F³)."""
    return 2 * x.nnz + gram_flops(x.n, x.f) + eigh_flops(x.f)


@formula(("EmpiricalCovariance", "ShrunkCovariance"), "fit")
def covariance_fit(est: Any, x: Data) -> float:
    return _covariance(x) + (2 * x.f * x.f if type(est).__name__ == "ShrunkCovariance" else 0)


@formula(("LedoitWolf", "OAS"), "fit")
def shrinkage_fit(est: Any, x: Data) -> float:
    """Plus the shrinkage intensity: the Gram of the squared data (2·N·F² + N·F) (Ledoit & Wolf 2004)."""
    return _covariance(x) + gram_flops(x.n, x.f) + x.nnz + 2 * x.f * x.f


COVARIANCES = ("EmpiricalCovariance", "ShrunkCovariance", "LedoitWolf", "OAS", "MinCovDet", "EllipticEnvelope",
               "GraphicalLasso", "GraphicalLassoCV")


@formula(COVARIANCES, "score")
def covariance_score(est: Any, x: Data) -> float:
    """The test data's covariance (2·N·F² + 2·N·F), its product with the precision (2·F³), the log-determinant."""
    return 2 * x.nnz + gram_flops(x.n, x.f) + 2 * x.f**3 + x.f**3 / 3


MCD_TRIALS, MCD_CSTEPS = 30, 4


@formula(("MinCovDet", "EllipticEnvelope"), "fit")
def mcd_fit(est: Any, x: Data) -> float:
    """FastMCD (Rousseeuw & Van Driessen 1999): 30 random subsets, each refined by c-steps (about 4,
    an estimate; not reported): the subset's covariance and inverse, every sample's Mahalanobis
    distance (2·N·F² + N·F); then the reweighting step."""
    cstep = _covariance(x) + 2 * x.n * x.f * x.f + x.nnz
    return (MCD_TRIALS * MCD_CSTEPS + 2) * cstep


@formula("EllipticEnvelope", *("predict", "decision_function"))
def mahalanobis(est: Any, x: Data) -> float:
    return x.nnz + 2 * x.n * x.f * x.f + x.nnz


@formula("GraphicalLasso", "fit")
def graphical_lasso_fit(est: Any, x: Data) -> float:
    """The empirical covariance, then per iteration (``n_iter_``) a lasso on each of the F columns
    against the other F-1 (coordinate descent, counted as F - 1 sweeps of F² each) and the
    precision update (Friedman et al. 2008)."""
    return _covariance(x) + iters(est) * x.f * (x.f * x.f * (x.f - 1) + 4 * x.f)


@formula("GraphicalLassoCV", "fit")
def graphical_lasso_cv_fit(est: Any, x: Data) -> float:
    """The path of alphas (n_refinements x the grid) on each fold, then the refit; each fit counted
    with the refit's ``n_iter_``."""
    k = est.cv if isinstance(est.cv, int) else 5
    grid = est.alphas if isinstance(est.alphas, int) else len(est.alphas)
    fits = k * grid * est.n_refinements + 1
    return fits * graphical_lasso_fit(est, x)


# ---- restricted Boltzmann machine -----------------------------------------------------------------
@formula("BernoulliRBM", "fit")
def rbm_fit(est: Any, x: Data) -> float:
    """Persistent contrastive divergence (Tieleman 2008): per epoch (n_iter) and sample, the hidden
    means, a Gibbs step (visible and hidden) and the gradient: 5 products of 2·F·k, plus sigmoids."""
    return est.n_iter * rbm_partial_fit(est, x)


@formula("BernoulliRBM", "partial_fit")
def rbm_partial_fit(est: Any, x: Data) -> float:
    k = _k(est)
    return 10 * x.nnz * k + 8 * x.n * k + 4 * x.n * x.f


@formula("BernoulliRBM", "transform")
def rbm_transform(est: Any, x: Data) -> float:
    return 2 * x.nnz * _k(est) + 4 * x.n * _k(est)

