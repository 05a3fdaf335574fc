"""Text and dictionary vectorizers, hashers, image patches.

Tokenising and hashing are string and integer work, not floating point: they count 0. What is
counted: building each document's counts (one add per token, the sum of the count matrix the call
returned), sorting the vocabulary (V·log2 V comparisons), and the tf-idf weighting and norm.
"""

from __future__ import annotations

from typing import Any

from .preprocessing import log2
from .registry import Data, classify_zero, formula


def _tokens(x: Data) -> float:
    out = x.out
    return float(out.sum()) if out is not None and hasattr(out, "sum") else 0.0


def _nnz(x: Data) -> int:
    out = x.out
    return int(getattr(out, "nnz", 0)) if out is not None else 0


def _vocabulary(est: Any) -> int:
    return len(getattr(est, "vocabulary_", {}) or {})


@formula("CountVectorizer", "fit_transform")
def count_fit_transform(est: Any, x: Data) -> float:
    """One add per token counted, then the vocabulary sorted (V·log2 V)."""
    v = _vocabulary(est)
    return _tokens(x) + v * log2(v)


@formula("CountVectorizer", "transform")
def count_transform(est: Any, x: Data) -> float:
    return _tokens(x)


def _tfidf(est: Any, x: Data, fitting: bool) -> float:
    """Document frequencies and idf (a log per term), then per non-zero the idf product and the
    l2 norm (square, add, divide) (Salton & Buckley 1988); sublinear tf adds a log per non-zero."""
    nnz = _nnz(x)
    sublinear = nnz if getattr(est, "sublinear_tf", False) else 0
    idf = (nnz + 3 * x.f) if fitting else 0
    return idf + nnz * (1 + 3) + sublinear


@formula("TfidfVectorizer", "fit_transform")
def tfidf_vectorizer_fit_transform(est: Any, x: Data) -> float:
    """The counts as CountVectorizer (the tokens are the non-zeros' weights before the norm: the
    count pass is read from the vocabulary and the output's non-zeros), then tf-idf."""
    v = _vocabulary(est)
    return _nnz(x) + v * log2(v) + _tfidf(est, Data(x.n, v, _nnz(x), True, None, x.out), True)


@formula("TfidfVectorizer", "transform")
def tfidf_vectorizer_transform(est: Any, x: Data) -> float:
    return _nnz(x) + _tfidf(est, Data(x.n, _vocabulary(est), _nnz(x), True, None, x.out), False)


@formula("TfidfTransformer", "fit")
def tfidf_fit(est: Any, x: Data) -> float:
    return x.nnz + 3 * x.f  # document frequencies, then idf = log((1 + n) / (1 + df)) + 1


@formula("TfidfTransformer", "transform")
def tfidf_transform(est: Any, x: Data) -> float:
    return 4 * x.nnz + (x.nnz if est.sublinear_tf else 0)


@formula("HashingVectorizer", "transform")
def hashing_transform(est: Any, x: Data) -> float:
    """Tokens hashed (no floating point), then the norm of each row (3 per non-zero)."""
    return 3 * _nnz(x) if est.norm else 0


classify_zero("HashingVectorizer", "fit")
classify_zero("FeatureHasher", "fit", "transform")  # hashing and signs: integer work
classify_zero("DictVectorizer", "transform", "inverse_transform")  # vocabulary lookups
classify_zero("PatchExtractor", "fit", "transform")  # copies of image windows


@formula("DictVectorizer", "fit", "fit_transform")
def dict_vectorizer_fit(est: Any, x: Data) -> float:
    v = len(est.vocabulary_)
    return v * log2(v)  # the sorted feature names
