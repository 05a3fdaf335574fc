"""Where the scikit-learn formulas track reality: formula FLOPs against measured time.

    python benchmarks/sklearn_scaling.py [--sizes 500 1000 2000 4000] [--features 20]

For every estimator with a formula, it fits and predicts (or transforms) at each data size,
counting with otel_flops.track(estimator) and timing with a wall clock, and prints the FLOPs,
the seconds and Spearman's rank correlation between the two per method. A correlation near 1
means the formula ranks the sizes as the clock does; it says nothing about the constant.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.base import ClassifierMixin, ClusterMixin, RegressorMixin
from sklearn.datasets import make_classification, make_regression
from sklearn.utils import all_estimators

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import otel_flops  # noqa: E402
from otel_flops.sklearn.formulas import _REGISTRY  # noqa: E402

# Settings that keep a fit short and its work size-dependent (capped iteration counts).
PARAMS = {
    "MLPClassifier": {"max_iter": 50}, "MLPRegressor": {"max_iter": 50}, "KMeans": {"n_init": 1},
    "MiniBatchKMeans": {"n_init": 1}, "LogisticRegression": {"max_iter": 200}, "LinearSVC": {"max_iter": 2000},
    "RandomForestClassifier": {"n_estimators": 20}, "RandomForestRegressor": {"n_estimators": 20},
    "ExtraTreesClassifier": {"n_estimators": 20}, "ExtraTreesRegressor": {"n_estimators": 20},
    "GradientBoostingClassifier": {"n_estimators": 20}, "GradientBoostingRegressor": {"n_estimators": 20},
    "TruncatedSVD": {"n_components": 5}, "PCA": {"n_components": 5},
}


def _data(cls: type, n: int, f: int) -> tuple[np.ndarray, np.ndarray | None]:
    if issubclass(cls, RegressorMixin):
        return make_regression(n, f, random_state=0)
    x, y = make_classification(n, f, random_state=0)
    x = np.abs(x)  # count-based models (MultinomialNB) take no negative values
    return (x, y) if issubclass(cls, ClassifierMixin) else (x, None if issubclass(cls, ClusterMixin) else y)


def _second_method(est: object) -> str | None:
    for name in ("predict", "transform"):
        if hasattr(est, name):
            return name
    return None


def measure(cls: type, sizes: list[int], f: int) -> dict[str, list[tuple[int, float]]]:
    rows: dict[str, list[tuple[int, float]]] = {}
    for n in sizes:
        x, y = _data(cls, n, f)
        est = cls(**PARAMS.get(cls.__name__, {}))
        with otel_flops.track(est, energy=False) as tracker:
            start = time.perf_counter()
            est.fit(x) if y is None else est.fit(x, y)
            fitted = time.perf_counter() - start
            method = _second_method(est)
            start = time.perf_counter()
            if method:
                getattr(est, method)(x)
            used = time.perf_counter() - start
        phases = tracker.report()["phases"]
        rows.setdefault("fit", []).append((phases.get("fit", {}).get("flops", 0), fitted))
        if method:
            rows.setdefault(method, []).append((phases.get(method, {}).get("flops", 0), used))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    parser.add_argument("--features", type=int, default=20)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    classes = dict(all_estimators())
    names = sorted({name for name, _ in _REGISTRY if name in classes})
    print(f"{'estimator':<30}{'method':<12}{'FLOPs at each size':<48}{'seconds at each size':<36}spearman")
    for name in names:
        try:
            rows = measure(classes[name], args.sizes, args.features)
        except Exception as exc:  # an estimator that cannot run on this data is reported, not fatal
            print(f"{name:<30}failed: {type(exc).__name__}: {exc}"[:120])
            continue
        for method, points in rows.items():
            flops, seconds = zip(*points)
            rho = spearmanr(flops, seconds).statistic if len(set(flops)) > 1 else float("nan")
            print(f"{name:<30}{method:<12}{' '.join(f'{v:.2e}' for v in flops):<48}"
                  f"{' '.join(f'{s:.4f}' for s in seconds):<36}{rho:+.2f}")


if __name__ == "__main__":
    main()
