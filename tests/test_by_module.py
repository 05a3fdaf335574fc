"""by_module: FLOPs and BOPs per submodule path, per phase, on a real transformers GPT-2 (tiny config).

The paths add up to each phase's total exactly, steady mode (recorded once, replayed) equals full
mode, and the forward (and backward) per module equals torch's FlopCounterMode module hierarchy on
the ops both count.
"""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import free_port, scrape
from torch.utils.flop_counter import FlopCounterMode

import otel_flops
from otel_flops.ledger import NO_MODULE, ROOT_MODULE
from otel_flops.settings import SettingsError, load

transformers = pytest.importorskip("transformers")
logging.getLogger("transformers").setLevel(logging.ERROR)

STEPS = 4
GPT2 = "GPT2LMHeadModel:"  # by_module keys lead with the model label


def tiny_gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def batch() -> torch.Tensor:
    return torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))


def train(mode: str, steps: int = STEPS, **overrides) -> tuple[dict, list]:
    """``steps`` AdamW steps of the tiny GPT-2, counted in ``mode``: (report, ledger items)."""
    model = tiny_gpt2()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = batch()
    with otel_flops.track(model, mode=mode, energy=False, sklearn=False, **overrides) as tracker:
        for _ in range(steps):
            model(x, labels=x).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return tracker.report(), tracker.session.ledger.items()


@pytest.mark.parametrize("mode", ["full", "steady"])
def test_modules_add_up_to_each_phase(mode):
    report, _ = train(mode)
    assert set(report["by_module"]) == set(report["phases"])
    for phase, counts in report["phases"].items():
        paths = report["by_module"][phase]
        assert sum(c["flops"] for c in paths.values()) == counts["flops"], phase
        assert sum(c["bops"] for c in paths.values()) == counts["bops"], phase
    forward = report["by_module"]["forward"]
    assert {GPT2 + "transformer.h.0", GPT2 + "transformer.h.1", GPT2 + "lm_head"} <= set(forward)
    assert forward[GPT2 + "transformer.h.0"] == forward[GPT2 + "transformer.h.1"]  # identical blocks
    assert forward[GPT2 + "lm_head"]["flops"] == STEPS * 2 * 16 * 32 * 64  # tokens x n_embd x vocab, multiply-add = 2
    assert set(report["by_module"]["optimizer"]) == {NO_MODULE}
    backward = report["by_module"]["backward"]
    assert backward[GPT2 + "transformer.h.0"]["flops"] > forward[GPT2 + "transformer.h.0"]["flops"]


def test_steady_equals_full_per_module():
    full, _ = train("full")
    steady, _ = train("steady")
    # Two segments a step (forward, optimizer), recorded in the first two steps (the first has no grads
    # and no optimizer state yet), replayed after.
    assert steady["steady"]["replayed"] == 2 * (STEPS - 2)
    assert steady["by_module"] == full["by_module"]
    assert steady["totals"] == full["totals"]


def _ours(items: list, phase: str, prefix: str, ops: set[str]) -> int:
    return sum(t.flops for k, t in items if k.phase == phase and k.op in ops
               and (prefix == "" or k.module == prefix or k.module.startswith(prefix + ".")))


def _flop_counter_hierarchy(model: torch.nn.Module, x: torch.Tensor, backward: bool) -> dict[str, dict[str, int]]:
    """FlopCounterMode's per-module counts ({module: {op: flops}}), root name dropped."""
    with FlopCounterMode(display=False) as counter:
        loss = model(x, labels=x).loss
        if backward:
            loss.backward()
    root = type(model).__name__
    return {name.removeprefix(root).removeprefix("."): {str(op): n for op, n in ops.items()}
            for name, ops in counter.get_flop_counts().items() if name != "Global"}


@pytest.mark.parametrize("depth", [2, 4])
def test_forward_and_backward_match_flop_counter_mode_per_module(depth):
    _, items = train("full", steps=1, module_depth=depth)
    forward = _flop_counter_hierarchy(tiny_gpt2(), batch(), backward=False)
    both = _flop_counter_hierarchy(tiny_gpt2(), batch(), backward=True)
    compared = 0
    for name, ops in forward.items():
        if name and name.count(".") + 1 > depth:
            continue  # deeper than by_module goes
        for op, flops in ops.items():
            assert _ours(items, "forward", name, {op}) == flops, (name, op)
            assert _ours(items, "backward", name, {op}) == both[name][op] - flops, (name, op, "backward")
            compared += 1
    assert compared == {2: 6, 4: 16}[depth]  # (module, op) pairs compared
    paths = {k.module for k, _ in items}
    assert max(p.count(".") + 1 for p in paths if p not in (NO_MODULE, ROOT_MODULE)) == depth


def test_a_compiled_model_is_attributed_as_a_whole():
    """torch.compile: a graph's work goes to the module open at its call (here the compiled root)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    compiled = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 16)
    with otel_flops.track(compiled, energy=False, sklearn=False) as tracker:
        for _ in range(3):
            compiled(x).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        report = tracker.report()
    linears = 2 * 8 * (16 * 32 + 32 * 4)
    assert report["by_module"]["forward"]["Sequential:" + ROOT_MODULE]["flops"] == report["phases"]["forward"]["flops"]
    assert report["phases"]["forward"]["flops"] >= 3 * linears
    for phase, counts in report["phases"].items():
        assert sum(c["flops"] for c in report["by_module"][phase].values()) == counts["flops"], phase
    assert not any("_orig_mod" in path for paths in report["by_module"].values() for path in paths)


def test_depth_zero_puts_everything_in_the_root():
    report, _ = train("full", steps=1, module_depth=0)
    assert set(report["by_module"]["forward"]) == {GPT2 + ROOT_MODULE}


@pytest.mark.parametrize("raw, problem", [("deep", "is not a whole number"), ("-1", "is out of range"),
                                          ("65", "is out of range")])
def test_bad_depth_is_one_line_naming_the_variable(raw, problem):
    with pytest.raises(SettingsError) as error:
        load({"OTEL_FLOPS_MODULE_DEPTH": raw})
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"OTEL_FLOPS_MODULE_DEPTH={raw!r} {problem}")
    assert "0 to 64" in message


def test_module_label_is_opt_in_and_capped_on_a_real_endpoint():
    cap = 3
    model = tiny_gpt2()
    x = batch()
    with otel_flops.track(model, mode="full", energy=False, sklearn=False, serve=True, host="127.0.0.1",
                          port=free_port(), module_label=True, module_label_cap=cap) as tracker:
        model(x, labels=x).loss.backward()
        report = tracker.report()
        samples = scrape(tracker.endpoint.url)["otel_flops_flops_total"]
    by_label: dict[str, float] = {}
    for labels, value in samples:
        by_label[labels["module"]] = by_label.get(labels["module"], 0) + value
    named = set(by_label) - {"other"}
    assert len(named) == cap and "other" in by_label
    per_module: dict[str, int] = {}
    for paths in report["by_module"].values():
        for path, counts in paths.items():  # "Model:path" (the metric's model label holds the model)
            path = path.removeprefix(GPT2)
            per_module[path] = per_module.get(path, 0) + counts["flops"]
    for path in named:
        assert by_label[path] == per_module[path]
    assert sum(by_label.values()) == report["totals"]["flops"]


def test_no_module_label_by_default():
    model = tiny_gpt2()
    x = batch()
    with otel_flops.track(model, mode="full", energy=False, sklearn=False, serve=True, host="127.0.0.1",
                          port=free_port()) as tracker:
        model(x).logits.sum().backward()
        samples = scrape(tracker.endpoint.url)["otel_flops_flops_total"]
    assert samples and all("module" not in labels for labels, _ in samples)


def test_table_and_html_show_the_top_modules():
    from otel_flops.analysis import html_report

    report, _ = train("full", steps=1)
    table = otel_flops.Report(report).table()
    assert "module (top 8)" in table and "transformer.h.0" in table
    page = html_report.render(report)
    assert "<table id=\"modules\">" in page and "transformer.h.1" in page


@pytest.mark.parametrize("mode", ["full", "steady"])
def test_two_models_of_one_class_are_kept_apart(mode):
    """A GAN's generator and discriminator, both nn.Sequential with no names: by_model and by_module keep
    them apart ("Sequential", "Sequential#2" in order of first use), backward included. Exact counts by
    hand: a Linear(k, n) on m rows is 2*m*k*n forward, the same again per gradient (input, weight);
    ReLU is 1 per element forward and backward."""
    g = torch.nn.Sequential(torch.nn.Linear(8, 64, bias=False), torch.nn.ReLU(), torch.nn.Linear(64, 8, bias=False))
    d = torch.nn.Sequential(torch.nn.Linear(8, 4, bias=False), torch.nn.ReLU(), torch.nn.Linear(4, 1, bias=False))
    z, m = torch.randn(16, 8), 16
    with otel_flops.track(mode=mode, energy=False, sklearn=False) as tracker:
        for _ in range(3):
            d(g(z)).mean().backward()
            g.zero_grad(), d.zero_grad()  # gradients set to None: no accumulation adds
        report = tracker.report()
    forward, backward = report["by_module"]["forward"], report["by_module"]["backward"]
    assert forward["Sequential:0"]["flops"] == 3 * 2 * m * 8 * 64
    assert forward["Sequential:2"]["flops"] == 3 * 2 * m * 64 * 8
    assert forward["Sequential#2:0"]["flops"] == 3 * 2 * m * 8 * 4
    assert forward["Sequential#2:2"]["flops"] == 3 * 2 * m * 4 * 1
    assert backward["Sequential:0"]["flops"] == 3 * 2 * m * 8 * 64  # weight gradient only: z needs none
    assert backward["Sequential:2"]["flops"] == 3 * 2 * 2 * m * 64 * 8
    assert backward["Sequential#2:0"]["flops"] == 3 * 2 * 2 * m * 8 * 4
    generator = 2 * m * 8 * 64 + 2 * m * 64 * 8 + m * 64  # forward: two linears and the ReLU
    generator += 2 * m * 8 * 64 + 2 * 2 * m * 64 * 8 + m * 64  # backward: their gradients and the ReLU's
    assert report["by_model"]["Sequential"]["flops"] == 3 * generator
    assert set(report["by_model"]) - {"none"} == {"Sequential", "Sequential#2"}


def test_a_users_name_wins_over_the_class_name():
    g = torch.nn.Sequential(torch.nn.Linear(8, 8, bias=False))
    d = torch.nn.Sequential(torch.nn.Linear(8, 1, bias=False))
    with otel_flops.track(g, name="generator", energy=False, sklearn=False) as tracker:
        d(g(torch.randn(4, 8)))
    report = tracker.report()
    assert {k: c["flops"] for k, c in report["by_model"].items() if c["flops"]} == {
        "generator": 2 * 4 * 8 * 8, "Sequential": 2 * 4 * 8 * 1}
    assert set(report["by_module"]["forward"]) == {"generator:0", "Sequential:0"}
