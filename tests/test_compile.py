"""torch.compile under a session: the model is compiled (its first call inside the session), its
compiled code runs inside and after the session, counts equal eager's per phase, and parameters
are bitwise those of the same compiled run with no session."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch._dynamo.utils import counters
from torch.profiler import profile

import otel_flops
from otel_flops.torch import compiled as compiled_module
from otel_flops.torch.compiled import measure

VOCAB, WIDTH, STEPS_IN, STEPS_AFTER = 64, 32, 5, 3


class Block(nn.Module):
    def __init__(self, d: int = WIDTH, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.drop(self.proj(a))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class TinyLM(nn.Module):
    def __init__(self, graph_break: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, WIDTH)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.ln, self.head = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, VOCAB)
        self.graph_break = graph_break

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.graph_break and i == 0:
                torch._dynamo.graph_break()
        return self.head(self.ln(x))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 8))


def _batch(model: nn.Module, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(model, TinyLM):
        return torch.randint(0, VOCAB, (4, 16), generator=g), torch.randint(0, VOCAB, (4 * 16,), generator=g)
    return torch.randn(8, 16, generator=g), torch.randint(0, 8, (8,), generator=g)


def _train(build, compile_kwargs: dict | None, mode: str | None) -> tuple[dict | None, str, bool, bool]:
    """STEPS_IN steps (inside a session when ``mode``), then STEPS_AFTER outside it. Returns the
    report's phases, a digest of the final parameters, and whether the last step inside and the
    last step after ran compiled code."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build()
    run = torch.compile(model, **compile_kwargs) if compile_kwargs is not None else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)

    def step() -> None:
        x, y = _batch(model, g)
        F.cross_entropy(run(x).flatten(0, -2), y).backward()
        opt.step()
        opt.zero_grad()

    def profiled_step() -> bool:
        with profile() as prof:
            step()
        return any(e.name.startswith("Torch-Compiled Region") for e in prof.events())

    phases, compiled_inside = None, False
    if mode is None:
        for _ in range(STEPS_IN):
            step()
    else:
        with otel_flops.track(run, mode=mode, energy=False) as tracker:
            for _ in range(STEPS_IN - 1):
                step()
            compiled_inside = profiled_step()
            phases = tracker.report()["phases"]
            errors = tracker.report()["errors"]
        assert not errors
    for _ in range(STEPS_AFTER - 1):
        step()
    compiled_after = profiled_step()
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    return phases, digest, compiled_inside, compiled_after


@pytest.fixture(autouse=True)
def one_thread():
    """Inductor's CPU kernels split reductions over threads, and a compiled run with several
    threads is not bitwise repeatable even with no session (measured: 2 digests in 3 runs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MODELS = {"mlp": mlp, "transformer": TinyLM, "transformer-graph-break": lambda: TinyLM(graph_break=True)}


@pytest.mark.parametrize("mode", ["steady", "full"])
@pytest.mark.parametrize("name", list(MODELS))
def test_compiled_training_counts_like_eager_and_stays_compiled(name: str, mode: str) -> None:
    build = MODELS[name]
    eager_phases, _, _, _ = _train(build, None, "full")
    _, reference, _, reference_compiled = _train(build, {}, None)
    assert reference_compiled
    frames_before = counters["frames"]["ok"]
    phases, digest, compiled_inside, compiled_after = _train(build, {}, mode)
    assert counters["frames"]["ok"] > frames_before  # Dynamo compiled the model, first call inside
    assert compiled_inside and compiled_after
    assert phases == eager_phases  # FLOPs and BOPs per phase, exactly
    assert digest == reference


def test_reduce_overhead_mode_counts_like_eager() -> None:
    """CUDA graphs need a GPU; on CPU reduce-overhead compiles as the default mode does."""
    eager_phases, _, _, _ = _train(mlp, None, "steady")
    _, reference, _, _ = _train(mlp, {"mode": "reduce-overhead"}, None)
    phases, digest, compiled_inside, compiled_after = _train(mlp, {"mode": "reduce-overhead"}, "steady")
    assert compiled_inside and compiled_after
    assert phases == eager_phases
    assert digest == reference


@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.inference_mode])
def test_recompiled_shapes_get_their_own_counts(grad_mode) -> None:
    """Batch sizes that change make Dynamo recompile with dynamic shapes: each call is counted at
    its own shape, as eager counts it."""
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4)).eval()
    compiled = torch.compile(model)
    batches = (2, 3, 5, 3, 2)

    def inference(run) -> dict:
        with otel_flops.track(run, mode="full", energy=False) as tracker:
            for b in batches:
                with grad_mode():
                    run(torch.randn(b, 8))
            return tracker.report()

    eager, report = inference(model), inference(compiled)
    assert report["phases"] == eager["phases"]
    if grad_mode is torch.no_grad:  # (inference_mode's whole aten.linear has no rule yet: issue 15)
        per_row = 2 * 8 * 16 + 16 + 2 * 16 * 4  # addmm (bias not counted, as FlopCounterMode), GELU, addmm
        assert report["phases"]["inference"]["flops"] == per_row * sum(batches)


def test_a_model_compiled_before_the_session_is_counted_in_it() -> None:
    """Its graphs were compiled with no session (and, on torch 2.13, Dynamo does not recompile
    them under the session's hooks): they are followed from the import of otel_flops on."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = mlp()
    compiled = torch.compile(model)
    x = torch.randn(8, 16)
    compiled(x).sum().backward()  # compiled here, outside any session

    def step(run) -> dict:
        with otel_flops.track(run, mode="full", energy=False) as tracker:
            run(x).sum().backward()
            return tracker.report()

    eager, report = step(model), step(compiled)
    assert report["phases"] == eager["phases"] and report["incomplete"] == []


def test_graphs_compiled_before_otel_flops_was_imported_make_the_count_incomplete() -> None:
    script = (
        "import torch\n"
        "m = torch.compile(torch.nn.Linear(4, 4))\n"
        "m(torch.ones(2, 4))\n"
        "import otel_flops\n"
        "with otel_flops.track(m, energy=False) as t:\n"
        "    m(torch.ones(2, 4))\n"
        "print(t.report()['incomplete'])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "1 torch.compile graph(s) were compiled before otel_flops was imported" in out.stdout


def test_sessions_come_and_go_without_recompiling() -> None:
    """Our hooks keep one identity for the life of the process and do nothing while Dynamo traces
    them: a compiled model has one variant bare and one with a session's hooks, however many
    sessions (and steady-mode recordings) come and go."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = mlp()
    compiled = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        compiled(torch.randn(8, 16)).sum().backward()
        opt.step()
        opt.zero_grad()

    step()
    graphs = counters["stats"]["unique_graphs"]
    for mode in ("steady", "full", "steady", "full"):
        with otel_flops.track(compiled, mode=mode, energy=False, audit_every=2):
            for _ in range(4):
                step()
        step()
    assert counters["stats"]["unique_graphs"] - graphs <= 2  # the forward's and backward's, with hooks


def test_many_static_shapes_stay_compiled_and_steady_counts_them_as_full() -> None:
    """dynamic=False and 6 batch sizes: bare, 6 graphs; under a session each may get a variant
    with the session's hooks, so Dynamo's recompile limit (8) is doubled while it runs, and
    compiling's own autograd nodes do not make steady mode take a replay for another branch."""
    reports = {}
    for mode in ("full", "steady"):
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = mlp()
        compiled = torch.compile(model, dynamic=False)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with otel_flops.track(compiled, mode=mode, energy=False) as tracker:
            for _ in range(2):
                for batch in range(2, 8):
                    compiled(torch.randn(batch, 16)).sum().backward()
                    opt.step()
                    opt.zero_grad()
            reports[mode] = tracker.report()
        assert torch._dynamo.config.recompile_limit == 8  # restored
    assert reports["steady"]["phases"] == reports["full"]["phases"]
    assert reports["steady"]["incomplete"] == []


class Linear4bit(nn.Linear):
    """Named as bitsandbytes' 4-bit layer: the precision resolver's class marker gives 4 bits."""


def test_quantized_class_marker_holds_inside_compiled_graphs() -> None:
    def train(run, model) -> dict:
        with otel_flops.track(run, mode="full", energy=False) as tracker:
            for _ in range(2):
                run(torch.randn(4, 8)).sum().backward()
                model.zero_grad()
            return tracker.report()

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), Linear4bit(8, 4))
    eager, compiled = train(model, model), train(torch.compile(model), model)
    assert compiled["phases"] == eager["phases"]
    assert compiled["by_op"]["aten.mm"]["bops"] == eager["by_op"]["aten.mm"]["bops"]
    assert eager["phases"]["forward"]["bops"] < 32 * eager["phases"]["forward"]["flops"]  # 4 bits took hold


def test_graph_count_draws_no_random_numbers_and_needs_no_device_work() -> None:
    """Counting a graph runs it on fake tensors: dropout's generator is left where it was."""
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)))
    x = torch.randn(3, 4)
    state = torch.get_rng_state()
    forward, backward = measure(gm, [x])
    assert torch.equal(state, torch.get_rng_state())
    assert sum(t.flops for k, t in forward.items() if k.op == "aten.addmm") == 2 * 3 * 4 * 4
    assert not backward  # x needs no gradient and symbolic_trace keeps the parameters inside


def _hf_model(name: str) -> nn.Module:
    """Tiny GPT-2 and Llama: GPT-2's GELU reads ``math.pi`` and Llama's rotary embedding reads
    ``attention_scaling``, both unspecialized floats (0-d tensor inputs) under dynamic=True."""
    import transformers as tf

    torch.manual_seed(0)
    if name == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    return tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                                              num_attention_heads=2, num_key_value_heads=1, intermediate_size=32))


def _hf_phases(model: nn.Module, run: nn.Module, mode: str) -> dict:
    """Inference at two sequence lengths, then a training step at each (the loss taken inside the
    model, which also returns logits and a KV cache that get no gradient)."""
    g = torch.Generator().manual_seed(1)
    with otel_flops.track(model, mode=mode, energy=False) as tracker:
        for length in (12, 16):
            with torch.no_grad():
                run(input_ids=torch.randint(0, VOCAB, (2, length), generator=g))
        for length in (12, 16, 12):
            ids = torch.randint(0, VOCAB, (2, length), generator=g)
            run(input_ids=ids, labels=ids).loss.backward()
            model.zero_grad()
        report = tracker.report()
    assert not report["errors"] and report["incomplete"] == []
    return report["phases"]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_dynamic_hf_models_count_like_eager(name: str) -> None:
    """dynamic=True: symbolic sizes and scalars are measured per call with the call's values, and an
    output that gets no gradient (logits, KV cache) adds no gradient accumulation to the backward.
    aot_eager keeps the test short; Inductor gets the same Dynamo graph (tests above)."""
    torch._dynamo.reset()
    model = _hf_model(name)
    compiled = torch.compile(model, dynamic=True, backend="aot_eager")
    for mode in ("steady", "full"):  # one compile for both modes
        eager = _hf_phases(model, model, mode)
        assert eager["inference"]["flops"] > 0 and eager["backward"]["flops"] > 0
        assert _hf_phases(model, compiled, mode) == eager, mode


class Scaled(nn.Module):
    """A float attribute and ``math.pi``: Dynamo passes both as 0-d tensors under dynamic=True."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.scale = nn.Linear(8, 8, bias=False), 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * (self.scale * math.sqrt(2 / math.pi))


@pytest.mark.parametrize("how", ["dynamic", "mark_dynamic"])
def test_symbolic_sizes_and_scalars_are_counted_per_call(how: str) -> None:
    torch._dynamo.reset()
    model = Scaled()
    compiled = torch.compile(model, dynamic=True if how == "dynamic" else None)
    rows = (3, 5, 9)
    with otel_flops.track(model, mode="full", energy=False) as tracker:
        with torch.no_grad():
            for n in rows:
                x = torch.randn(n, 8)
                if how == "mark_dynamic":
                    torch._dynamo.mark_dynamic(x, 0)
                compiled(x)
        report = tracker.report()
    assert not report["errors"] and report["incomplete"] == []
    assert report["phases"]["inference"]["flops"] == sum(2 * n * 8 * 8 + n * 8 for n in rows)  # mm, mul


def test_a_graph_that_cannot_be_measured_makes_the_count_incomplete(monkeypatch, caplog) -> None:
    def fail(*args: object) -> None:
        raise RuntimeError("replay failed\n  a long traceback line")

    monkeypatch.setattr(compiled_module, "measure", fail)
    torch._dynamo.reset()
    compiled = torch.compile(mlp())
    with otel_flops.track(compiled, mode="full", energy=False) as tracker:
        for _ in range(3):
            compiled(torch.randn(4, 16))
        report = tracker.report()
    assert report["incomplete"] == [
        "3 call(s) of torch.compile graphs were not counted (RuntimeError: replay failed); the graphs ran "
        "normally (run the model uncompiled to count it, and report the reason)"]
    assert report["errors"] == {"torch.compile graph": 1}  # measured once: the signature's failure is kept
    warnings = [r.getMessage() for r in caplog.records if "torch.compile graph failed" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
