"""Meta-estimators count through their inner estimators, once; sparse input counts its non-zeros."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import make_classification
from sklearn.ensemble import BaggingClassifier, StackingClassifier, VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_validate
from sklearn.multiclass import OneVsRestClassifier
from sklearn.tree import DecisionTreeClassifier

from otel_flops import sklearn as backend
from otel_flops.ledger import Ledger
from otel_flops.sklearn.formulas import Data, trees

X, Y = make_classification(90, 4, n_informative=3, n_redundant=0, n_classes=3, random_state=0)
N, F = X.shape


@pytest.fixture
def ledger():
    ledger = Ledger()
    undo = backend.install(ledger)
    yield ledger
    undo()


def calls(ledger):
    out = {}
    for k, t in ledger.items():
        out[k.op] = out.get(k.op, 0) + t.calls
    return out


def test_logistic_regression_predict_on_csr_counts_the_non_zeros(ledger):
    """Issue 15: CSR 100 x 1000 with 100 non-zeros, about 2·nnz + n, not the dense 200,000."""
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 100, 100), rng.choice(1000, 100, replace=False)
    Xs = sp.csr_matrix((np.ones(100), (rows, cols)), shape=(100, 1000))
    y = np.arange(100) % 2
    model = LogisticRegression().fit(Xs, y)
    before = ledger.totals().flops
    model.predict(Xs)
    assert ledger.totals().flops - before == 2 * 100 + 100


def test_one_vs_rest_counts_each_binary_model(ledger):
    ovr = OneVsRestClassifier(LogisticRegression()).fit(X, Y)
    fits = sum(int(np.max(e.n_iter_)) * N * F for e in ovr.estimators_)
    assert calls(ledger)["LogisticRegression.fit"] == 3
    assert sum(t.flops for k, t in ledger.items() if k.op == "LogisticRegression.fit") == fits
    assert not ledger.uncounted()


def test_bagging_counts_each_member_once(ledger):
    bag = BaggingClassifier(DecisionTreeClassifier(), n_estimators=3, random_state=0).fit(X, Y)
    expected = sum(round(trees.tree_fit(e, Data.dense(N, F))) for e in bag.estimators_)
    assert calls(ledger) == {"DecisionTreeClassifier.fit": 3}
    assert ledger.totals().flops == expected > 0


def test_voting_stacking_and_cross_validate_count_each_fit_once(ledger):
    base = [("lr", LogisticRegression()), ("dt", DecisionTreeClassifier(random_state=0))]
    VotingClassifier(base).fit(X, Y)
    assert calls(ledger) == {"LogisticRegression.fit": 1, "DecisionTreeClassifier.fit": 1,
                             "LabelEncoder.fit": 1, "LabelEncoder.transform": 1}  # the labels, encoded once
    ledger_stack = Ledger()
    undo = backend.install(ledger_stack)
    try:
        StackingClassifier(base, cv=3).fit(X, Y)  # each base on all data and on 3 folds, then the final model
    finally:
        undo()
    seen = calls(ledger_stack)
    assert seen["LogisticRegression.fit"] == 1 + 3 + 1 and seen["DecisionTreeClassifier.fit"] == 1 + 3
    assert not ledger_stack.uncounted()
    ledger_cv = Ledger()
    undo = backend.install(ledger_cv)
    try:
        cross_validate(LogisticRegression(), X, Y, cv=3, n_jobs=2)
    finally:
        undo()
    assert calls(ledger_cv) == {"LogisticRegression.fit": 3, "LogisticRegression.predict": 3}
