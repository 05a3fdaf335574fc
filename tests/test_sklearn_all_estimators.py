"""Every estimator of scikit-learn's own registry, as a new user would try it.

Each estimator of ``all_estimators()`` that builds with default arguments is fitted on a small
dense dataset (60 x 5) and, where its tags accept sparse input, on a CSR copy of it (about half
the values stored); then every prediction, transform and score method it has is called. Each
must count more than 0 FLOPs, or be one of the estimators classified as doing no arithmetic, and
leave nothing in ``uncounted_ops`` and nothing in ``errors``. Meta-estimators that need an inner
estimator are tested in test_sklearn_meta.py.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import is_classifier, is_regressor
from sklearn.datasets import make_classification, make_regression
from sklearn.utils import all_estimators

from otel_flops import sklearn as backend
from otel_flops.ledger import Ledger

N, F = 60, 5
XC, YC = make_classification(N, F, n_informative=3, n_redundant=0, random_state=0)
XR, YR = make_regression(N, F, random_state=0)
YR = np.abs(YR) + 1  # positive targets: the Poisson, Gamma and Tweedie regressors accept them too
DOCS = ["the cat sat on the mat", "the dog ate the cat food", "a bird sang", "dogs and cats and birds"] * 15
METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "transform", "score")

# Work that moves, selects or hashes values and does no arithmetic: counted as 0 on purpose.
ZERO = {"FunctionTransformer", "FeatureHasher", "PatchExtractor", "MultiLabelBinarizer"}
# Needs an argument no default gives (an inner estimator, a dictionary): test_sklearn_meta.py.
NO_DEFAULT = {name for name, cls in all_estimators()
              if any(p.default is inspect.Parameter.empty and p.kind == p.POSITIONAL_OR_KEYWORD
                     for p in list(inspect.signature(cls.__init__).parameters.values())[1:])}
# Builds with defaults, but its defaults cannot fit 60 samples: fitted with the argument named.
ARGS = {"GaussianRandomProjection": {"n_components": 3}, "SparseRandomProjection": {"n_components": 3},
        "PatchExtractor": {"patch_size": (2, 2)}}


def _data(name: str, est) -> tuple:
    tags = est.__sklearn_tags__()
    if tags.input_tags.string or name in ("CountVectorizer", "TfidfVectorizer", "HashingVectorizer"):
        return DOCS, None
    if tags.input_tags.dict or name == "DictVectorizer":
        return [{"a": float(i), "b": 2.0 * i, f"c{i % 3}": 1.0} for i in range(N)], None
    if name == "PatchExtractor":
        return np.arange(2 * 8 * 8, dtype=float).reshape(2, 8, 8), None
    if name in ("LabelEncoder", "LabelBinarizer"):
        return YC, None
    if name == "MultiLabelBinarizer":
        return [{1, 2}, {3}, {1, 3}] * 20, None
    if name == "KernelCenterer":
        return XC @ XC.T, None
    if name == "IsotonicRegression":
        return XR[:, 0], YR
    X = np.abs(XC) if tags.input_tags.positive_only or name == "SkewedChi2Sampler" else XC
    if name.startswith("MultiTask") or name in ("CCA", "PLSCanonical", "PLSSVD"):
        return XR, np.column_stack([YR, YR[::-1]])
    if is_classifier(est):
        return X, YC
    if is_regressor(est):
        return XR, YR
    return X, YC


def _sparse(X):
    X = np.where(np.abs(X) < 0.7, 0.0, np.abs(X))  # about half the values stored, non-negative
    return sp.csr_matrix(X)


def _cases():
    for name, cls in all_estimators():
        if name in NO_DEFAULT:
            continue
        yield pytest.param(name, cls, False, id=f"{name}-dense")
        try:
            sparse = cls(**ARGS.get(name, {})).__sklearn_tags__().input_tags.sparse
        except Exception:  # a tag that needs an inner estimator
            sparse = False
        if sparse:
            yield pytest.param(name, cls, True, id=f"{name}-sparse")


def _run(est, X, y, methods):
    signature = list(inspect.signature(est.fit).parameters)
    if signature[0] == "y":  # label transformers: fit(y), transform(y)
        est.fit(X)
    else:
        est.fit(X) if "y" not in signature else est.fit(X, y)
    for method in methods:
        if not hasattr(est, method):
            continue
        try:
            getattr(est, method)(X, y) if method == "score" else getattr(est, method)(X)
        except (TypeError, ValueError, NotImplementedError, AttributeError) as exc:  # e.g. score needs y
            if method != "score":
                raise AssertionError(f"{method}: {exc}") from exc


def _fails_the_same_bare(bare, name, sparse, exc):
    """An estimator that cannot take this input: counted, it must fail exactly as it does bare
    (same exception type and message); failing only while counted is a defect."""
    try:
        X, y = _data(name, bare)
        _run(bare, _sparse(X) if sparse else X, y, METHODS)
    except Exception as bare_exc:
        assert (type(bare_exc), str(bare_exc)) == (type(exc), str(exc)), "counted, it fails differently"
        return
    raise AssertionError(f"fails only while counted: {exc!r}") from exc


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name, cls, sparse", list(_cases()))
def test_every_estimator_counts_or_is_classified_zero(name, cls, sparse):
    est = cls(**ARGS.get(name, {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ledger = Ledger()
        undo = backend.install(ledger)
        try:
            X, y = _data(name, est)
            X = _sparse(X) if sparse else X
            _run(est, X, y, METHODS)
        except Exception as exc:
            undo()
            _fails_the_same_bare(cls(**ARGS.get(name, {})), name, sparse, exc)
            return  # nothing ran to count
        finally:
            undo()
    assert not ledger.uncounted(), dict(ledger.uncounted())
    assert not ledger.errors, dict(ledger.errors)
    flops = ledger.totals().flops
    if name in ZERO:
        assert flops == 0 and ledger.totals().calls > 0
    else:
        assert flops > 0, {k.op: t.flops for k, t in ledger.items()}
