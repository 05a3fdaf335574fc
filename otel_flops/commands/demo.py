"""``otel-flops demo``: the seed paper's three workloads, trained briefly with /metrics served."""

from __future__ import annotations

import argparse
import time

import torch

from .. import track
from ..analysis.workloads import WORKLOADS, train_step
from ..progress import bar
from ..settings import Settings
from .extras import missing

# Per-workload batch sizes: small on CPU so the demo takes seconds, the paper's on GPU.
BATCH = {"cpu": {"mlp": 64, "resnet18": 8, "transformer": 8}, "cuda": {"mlp": 256, "resnet18": 128, "transformer": 32}}


def run_demo(args: argparse.Namespace) -> int:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    overrides = {"port": args.port, "host": args.host, "mode": args.mode}
    Settings().with_overrides(**overrides)  # a bad flag is one line naming the flag, not track()'s keyword
    with track(serve=True, **overrides) as tracker:
        if tracker.endpoint:
            print(f"otel-flops demo: metrics at {tracker.endpoint.url}")
        for name, workload in WORKLOADS.items():
            torch.manual_seed(0)
            model = workload.build().to(device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            batch = BATCH[device.type][name]
            started = time.perf_counter()
            for _ in bar(range(args.steps), name, args.progress, "step"):
                x, y = workload.make_batch(batch, device)
                loss = train_step(model, optimizer, workload, x, y)
            print(f"  {name:<12} batch {batch:<4} {args.steps} steps  loss {loss.item():.3f}  "
                  f"{time.perf_counter() - started:.1f}s")
        sklearn_example()
        report = tracker.report()
        if args.linger and tracker.endpoint:
            print(f"otel-flops demo: serving {tracker.endpoint.url} for {args.linger}s more")
            time.sleep(args.linger)
    print(report.table())
    if args.report:
        print(f"report written to {report.save(args.report)}")
    return 0


def sklearn_example() -> None:
    """Fit and predict two estimators, so the demo shows the scikit-learn backend's counts too."""
    if missing("sklearn"):
        print("  scikit-learn is not installed, so its part of the demo is skipped "
              "(pip install 'otel-flops[sklearn]' adds it)")
        return
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(2000, 20, random_state=0)
    for est in (LogisticRegression(max_iter=200), RandomForestClassifier(20, random_state=0)):
        started = time.perf_counter()
        est.fit(X, y).predict(X)
        print(f"  {type(est).__name__:<24} fit+predict {X.shape[0]}x{X.shape[1]}  "
              f"{time.perf_counter() - started:.1f}s")
