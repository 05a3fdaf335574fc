"""/metrics scraped over HTTP during a real run: names, labels, and sums equal to the report."""

from __future__ import annotations

from conftest import free_port, scrape, training_step

import otel_flops

LABELS = {"framework", "phase", "dtype", "bits", "device", "model"}


def _sums(samples, name):
    return sum(v for _, v in samples[name])


def test_scraped_counters_equal_the_report():
    port = free_port()
    with otel_flops.track(serve=True, host="127.0.0.1", port=port) as tracker:
        training_step("mlp", steps=2)
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        report = tracker.report()
    for name in ("otel_flops_flops_total", "otel_flops_bops_total"):
        assert samples[name], f"{name} missing from /metrics"
        for labels, _ in samples[name]:
            assert LABELS <= set(labels), labels
    assert _sums(samples, "otel_flops_flops_total") == report["totals"]["flops"]
    assert _sums(samples, "otel_flops_bops_total") == report["totals"]["bops"]
    phases = {labels["phase"] for labels, _ in samples["otel_flops_flops_total"]}
    assert {"forward", "backward", "loss", "optimizer"} <= phases
    assert {labels["model"] for labels, _ in samples["otel_flops_flops_total"]} >= {"MLP"}


def test_op_label_is_opt_in_and_capped():
    port = free_port()
    with otel_flops.track(serve=True, host="127.0.0.1", port=port, op_label="op", op_label_cap=3):
        training_step("mlp")
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    ops = {labels["op"] for labels, _ in samples["otel_flops_flops_total"]}
    assert len(ops) == 4 and "other" in ops


def test_no_op_label_by_default():
    port = free_port()
    with otel_flops.track(serve=True, host="127.0.0.1", port=port):
        training_step("mlp")
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert all("op" not in labels for labels, _ in samples["otel_flops_flops_total"])
