"""Seed paper sec. 4.3 through `otel-flops run` on an unmodified script, in a real subprocess.

LogisticRegression on make_classification(500000, 40), 100 iterations: T N F max(C_out, 1) =
100 x 500000 x 40 x 1 = 2.00e9 FLOPs, 1.28e11 BOPs at 64 bits. Features scaled over eight
decades make L-BFGS run all 100 iterations (on the unscaled data it converges after 14), so the
count is deterministic.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(500000, 40, scale=np.logspace(-4, 4, 40), random_state=0)
    model = LogisticRegression(tol=0, max_iter=100).fit(X, y)
    print("n_iter", int(model.n_iter_[0]))
    """
)


def test_paper_logistic_regression_by_otel_flops_run(tmp_path):
    script, report_path = tmp_path / "paper.py", tmp_path / "report.json"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "otel_flops", "run", "--report", str(report_path), "--port", "0", "--",
           "python", "-W", "ignore", str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "n_iter 100" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["totals"] == {**report["totals"], "flops": 2_000_000_000, "bops": 128_000_000_000}
    assert report["phases"]["fit"]["flops"] == 2_000_000_000
    assert report["by_op"]["LogisticRegression.fit"] == {**report["by_op"]["LogisticRegression.fit"], "calls": 1}
    assert report["by_dtype"]["float64/64"]["bops"] == 128_000_000_000
