"""scikit-learn's array-API dispatch on torch tensors: formula FLOPs against ATen-measured FLOPs.

For every estimator scikit-learn runs on torch tensors (``array_api_support`` tag), fit and
predict or transform on several shapes on torch tensors under
``sklearn.config_context(array_api_dispatch=True)``: the call is counted op by op by the dispatch
mode (full mode), and its formula is evaluated on the same fitted estimator (so both see the
same solver and iterations). Prints one row per estimator, method and shape, and with --json
writes them. SCIPY_ARRAY_API=1 must be set before scipy is imported: this script sets it, so run
it as its own process (``python benchmarks/sklearn_array_api.py``).

Usage: python benchmarks/sklearn_array_api.py [--json FILE]
"""

from __future__ import annotations

import os

os.environ["SCIPY_ARRAY_API"] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.utils import all_estimators  # noqa: E402

import otel_flops  # noqa: E402
from otel_flops.sklearn import formulas  # noqa: E402
from otel_flops.sklearn.wrap import describe  # noqa: E402

SHAPES = ((200, 10), (500, 20), (1000, 8))
ARGS = {"PCA": {"n_components": 5}, "Nystroem": {"n_components": 50}}
FIRST = {"KernelCenterer", "LabelEncoder"}
# Fits counted through an inner estimator on the NumPy path: its formula, applied to the outer one.
INNER = {("RidgeCV", "fit"): formulas.linear.ridge_gcv_fit, ("RidgeClassifierCV", "fit"): formulas.linear.ridge_gcv_fit}


def estimators() -> list[tuple[str, type]]:
    out = []
    for name, cls in all_estimators():
        try:
            if cls().__sklearn_tags__().array_api_support:
                out.append((name, cls))
        except Exception:  # needs an inner estimator
            continue
    return out


def data(name: str, n: int, f: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(n, f, n_informative=min(f, 5), n_redundant=0, random_state=0)
    if name == "KernelCenterer":
        return X @ X.T, y
    if name == "LabelEncoder":
        return y.astype(np.float64), y
    if name == "PoissonRegressor":
        return X, np.abs(X[:, 0]) + y
    return X, y


def method_of(est) -> str | None:
    for m in ("predict", "transform"):
        if hasattr(est, m):
            return m
    return None


def calls(name: str, est, X, y) -> list[tuple[str, object]]:
    """(method, thunk) in call order: fit, then the prediction or transform."""
    if name == "LabelEncoder":
        return [("fit", lambda: est.fit(X)), ("transform", lambda: est.transform(X))]
    fit = ("fit", lambda: est.fit(X) if name in FIRST else est.fit(X, y))
    method = method_of(type(est)())
    return [fit] + ([(method, lambda: getattr(est, method)(X))] if method else [])


def counts(name: str, cls, X, y) -> tuple[dict[str, int], dict[str, int], dict[str, int], set[str]]:
    """Per method: the formula evaluated on the estimator fitted on torch (same solver, same
    iterations), and the FLOPs measured from its ATen ops; the ATen ops left uncounted."""
    est = cls(**ARGS.get(name, {}))
    Xt, yt = torch.asarray(X), torch.asarray(y)
    formula: dict[str, int] = {}
    with otel_flops.track(mode="full", energy=False) as t, sklearn.config_context(array_api_dispatch=True):
        for method, thunk in calls(name, est, Xt, yt):
            out = thunk()
            fn = INNER.get((name, method)) or formulas.lookup(type(est), method)
            data, _ = describe(Xt)
            formula[method] = round(fn(est, dataclasses.replace(data, out=out))) if fn else 0
    ledger = t.session.ledger
    measured: dict[str, int] = {"torch (outside the calls)": 0}
    families = set()
    for key, totals in ledger.items():
        if key.framework != "sklearn":
            measured["torch (outside the calls)"] += totals.flops
        else:
            measured[key.phase] = measured.get(key.phase, 0) + totals.flops
            families.add(key.family)
    return formula, measured, dict(ledger.uncounted()), families


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    print(f"{'estimator':28}{'method':11}{'shape':>11}{'formula':>14}{'measured':>14}{'ratio':>8}  uncounted")
    for name, cls in estimators():
        for n, f in SHAPES:
            X, y = data(name, n, f)
            formula, measured, uncounted, families = counts(name, cls, X, y)
            for method, expected in formula.items():
                got = measured.get(method, 0)
                ratio = got / expected if expected else None
                row = {"estimator": name, "method": method, "n": X.shape[0], "f": X.shape[1] if X.ndim > 1 else 1,
                       "formula": expected, "measured": got, "ratio": ratio, "uncounted": uncounted,
                       "families": sorted(families), "torch_flops": measured["torch (outside the calls)"]}
                rows.append(row)
                shown = f"{ratio:8.3f}" if ratio is not None else "       -"
                print(f"{name:28}{method:11}{n:>6}x{row['f']:<4}{expected:>14,}{got:>14,}{shown}  "
                      f"{','.join(sorted(uncounted)) or '-'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
