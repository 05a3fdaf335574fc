"""The user's program is never harmed: broken rules, busy ports and bad input fail soft and clearly."""

from __future__ import annotations

import logging
import socket

import torch

import otel_flops
from otel_flops.torch import rules


def _boom(args, kwargs, out):
    raise RuntimeError("deliberately broken rule")


def test_broken_rule_is_contained_counted_and_logged(monkeypatch, caplog):
    monkeypatch.setitem(rules.REGISTRY, torch.ops.aten.relu, rules.Rule("elementwise", _boom))
    x = torch.randn(4, 4)
    with caplog.at_level(logging.WARNING, logger="otel_flops"), otel_flops.track() as tracker:
        for _ in range(3):
            y = torch.relu(x) @ x
    assert torch.equal(y, torch.relu(x) @ x)
    report = tracker.report()
    assert report["errors"] == {"aten.relu": 3}
    assert report["by_op"]["aten.mm"]["flops"] == 3 * 2 * 4 * 4 * 4
    warnings = [r for r in caplog.records if "aten.relu" in r.getMessage()]
    assert len(warnings) == 1, "logged once per op, not once per call"


def test_port_in_use_gives_one_clear_line_and_counting_goes_on(caplog):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="otel_flops"), otel_flops.track(
            serve=True, host="127.0.0.1", port=port
        ) as tracker:
            torch.ones(3, 3) @ torch.ones(3, 3)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert str(port) in errors[0] and "OTEL_EXPORTER_PROMETHEUS_PORT" in errors[0] and "\n" not in errors[0]
    assert tracker.endpoint is None
    assert tracker.report()["totals"]["flops"] == 2 * 3 * 3 * 3
