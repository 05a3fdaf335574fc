"""The scikit-learn backend around the formulas: wrapping, meta-estimators, workers, labels, faults."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import free_port, scrape
from sklearn import clone
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.estimator_checks import check_estimator

import otel_flops
from otel_flops import sklearn as backend
from otel_flops.containment import Containment
from otel_flops.ledger import Ledger
from otel_flops.sklearn import formulas, wrap

X, Y = make_classification(60, 4, n_informative=2, random_state=0)
N, F = X.shape


def ops(ledger: Ledger) -> dict[tuple[str, str], int]:
    return {(k.phase, k.op): t.flops for k, t in ledger.items()}


@pytest.fixture
def ledger():
    ledger = Ledger()
    undo = backend.install(ledger)
    yield ledger
    undo()


def test_install_is_undone_completely():
    classes = [LogisticRegression, StandardScaler, DecisionTreeClassifier, ClassifierMixin, BaseEstimator]
    before = [dict(vars(c)) for c in classes]
    ledger = Ledger()
    undo = backend.install(ledger)
    assert LogisticRegression.fit is not before[0]["fit"] and "score" in vars(LogisticRegression)
    undo()
    assert [dict(vars(c)) for c in classes] == before
    LogisticRegression().fit(X, Y)
    assert ledger.totals().flops == 0


def test_results_clone_pickle_and_params_unchanged(ledger):
    bare = LogisticRegression(C=0.5).fit(X, Y).predict_proba(X)
    est = LogisticRegression(C=0.5)
    assert np.array_equal(est.fit(X, Y).predict_proba(X), bare)
    assert clone(est).get_params() == est.get_params()
    again = pickle.loads(pickle.dumps(est))
    assert np.array_equal(again.predict_proba(X), bare)
    assert not hasattr(DecisionTreeClassifier().fit(X, Y), "transform")  # availability kept


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("est", [LogisticRegression(), StandardScaler(), DecisionTreeClassifier(max_depth=3)],
                         ids=lambda e: type(e).__name__)
def test_estimator_checks_pass_while_patched(ledger, est):
    check_estimator(est)
    assert ledger.totals().flops > 0


def test_track_counts_only_that_object_and_stops():
    ledger = Ledger()
    est = LogisticRegression()
    undo = backend.track_estimator(est, ledger)
    est.fit(X, Y)
    LogisticRegression().fit(X, Y)  # not tracked
    undo()
    est.predict(X)
    assert ops(ledger) == {("fit", "LogisticRegression.fit"): int(np.max(est.n_iter_)) * N * F}


def test_pipeline_counts_its_steps_once(ledger):
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y)
    pipe.score(X, Y)
    t = int(np.max(pipe[-1].n_iter_))
    assert ops(ledger) == {
        ("fit_transform", "StandardScaler.fit"): 4 * N * F,
        ("fit_transform", "StandardScaler.transform"): 2 * N * F,
        ("fit", "LogisticRegression.fit"): t * N * F,
        ("transform", "StandardScaler.transform"): 2 * N * F,
        ("score", "LogisticRegression.predict"): 2 * N * F + N,
    }
    assert not ledger.uncounted()


def test_column_transformer_and_cross_val_score(ledger):
    ct = ColumnTransformer([("a", StandardScaler(), [0, 1]), ("b", MinMaxScaler(), [2, 3])])
    ct.fit_transform(X)
    assert ledger.totals().flops == 4 * N * 2 + 2 * N * 2 + 2 * N * 2 + 2 * N * 2
    before = ledger.totals().flops
    cross_val_score(DecisionTreeClassifier(max_depth=1, random_state=0), X, Y, cv=3)
    phases = {k.phase for k, _ in ledger.items()}
    assert {"fit", "score"} <= phases and ledger.totals().flops > before
    assert all(k.model in {"StandardScaler", "MinMaxScaler", "DecisionTreeClassifier"} for k, _ in ledger.items())


def _search_totals(search_cls, n_jobs, **kw):
    ledger = Ledger()
    undo = backend.install(ledger)
    try:
        search_cls(LogisticRegression(), n_jobs=n_jobs, cv=3, **kw).fit(X, Y)
    finally:
        undo()
    return ledger.totals(), ops(ledger)


def test_grid_search_counts_survive_worker_processes():
    one, ops_one = _search_totals(GridSearchCV, 1, param_grid={"C": [0.1, 1.0]})
    two, ops_two = _search_totals(GridSearchCV, 2, param_grid={"C": [0.1, 1.0]})
    assert (two.flops, two.bops, two.calls) == (one.flops, one.bops, one.calls) and one.flops > 0
    assert ops_two == ops_one
    assert set(ops_one) == {("fit", "LogisticRegression.fit"), ("score", "LogisticRegression.predict")}
    # 2 candidates x 3 folds fits and scores, plus the refit on all data
    assert one.calls == 2 * 3 * 2 + 1


def test_randomized_search_and_threaded_forest_no_double_count(ledger):
    RandomizedSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, n_iter=2, cv=2, random_state=0).fit(X, Y)
    assert {k.model for k, _ in ledger.items()} == {"LogisticRegression"}
    rf = RandomForestClassifier(4, n_jobs=2, random_state=0).fit(X, Y)
    before = ledger.totals().flops
    rf.predict(X)  # trees predict in joblib threads, under the forest's own formula
    assert ledger.totals().flops - before == formulas.trees.forest_predict(rf, formulas.Data.dense(N, F))


def test_float32_list_and_dataframe_inputs(ledger):
    StandardScaler().fit(X.astype(np.float32))
    StandardScaler().fit(X.tolist())
    StandardScaler().fit(pd.DataFrame(X, columns=list("abcd")))
    keys = [k for k, _ in ledger.items()]
    assert sorted((k.dtype, k.bits) for k in keys) == [("float32", 32), ("float64", 64)]
    assert {k.dtype: t.flops for k, t in ledger.items()} == {"float32": 4 * N * F, "float64": 2 * 4 * N * F}
    assert {k.dtype: t.bops for k, t in ledger.items()}["float32"] == 4 * N * F * 32


def test_estimator_without_formula_runs_and_is_listed(ledger):
    class Mine(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            self.classes_ = np.unique(y)
            return self

        def predict(self, X):
            return np.zeros(len(X), dtype=int)

    assert list(Mine().fit(X, Y).predict(X[:3])) == [0, 0, 0]
    DummyClassifier().fit(X, Y).predict(X)  # has formulas: the classes (a sort), a constant filled in
    assert ops(ledger) == {("fit", "DummyClassifier.fit"): N * 6, ("predict", "DummyClassifier.predict"): 0}
    assert ledger.uncounted() == {"Mine.fit": 1, "Mine.predict": 1}


def test_formula_failure_is_contained_and_logged_once(ledger, monkeypatch, caplog):
    def broken(est, n, f):
        raise ZeroDivisionError("boom")

    monkeypatch.setitem(formulas._REGISTRY, ("StandardScaler", "fit"), broken)
    monkeypatch.setattr(wrap, "_containment", Containment())
    out = [StandardScaler().fit(X).mean_ for _ in range(2)]
    assert np.allclose(out[0], X.mean(axis=0))
    assert ledger.errors == {"StandardScaler.fit": 2}
    assert sum("StandardScaler.fit" in r.getMessage() for r in caplog.records) == 1


def test_track_with_an_estimator_uses_the_session():
    est = make_pipeline(StandardScaler(), LogisticRegression())
    with otel_flops.track(est) as t:
        est.fit(X, Y)
        LogisticRegression().fit(X, Y)  # another object: not counted
    report = t.report()
    assert set(report["phases"]) == {"fit", "fit_transform"}
    assert report["by_op"]["LogisticRegression.fit"]["calls"] == 1


def test_metrics_during_a_real_run_equal_the_report():
    port = free_port()
    with otel_flops.track(serve=True, host="127.0.0.1", port=port) as tracker:
        Xb, yb = make_classification(2000, 10, random_state=0)
        LogisticRegression().fit(Xb, yb).predict_proba(Xb)
        RandomForestClassifier(5, random_state=0).fit(Xb, yb).predict(Xb)
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        report = tracker.report()
    flops = [(labels, v) for labels, v in samples["otel_flops_flops_total"] if labels["framework"] == "sklearn"]
    assert {labels["phase"] for labels, _ in flops} == {"fit", "predict", "predict_proba"}
    assert {labels["model"] for labels, _ in flops} == {"LogisticRegression", "RandomForestClassifier"}
    assert sum(v for _, v in samples["otel_flops_flops_total"]) == report["totals"]["flops"] > 0
    assert sum(v for _, v in samples["otel_flops_bops_total"]) == report["totals"]["bops"]
