"""A model that has run forward inside a session is, to whatever the user does with the model
object, the same as bare: copies, pickles, whole-model saves, scripts, traces, exports, weight
averages and other processes get no hook of ours and compute bitwise the same."""

from __future__ import annotations

import contextlib
import copy
import io
import multiprocessing
import os
import pickle
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.flop_counter import FlopCounterMode

import otel_flops

X = torch.arange(16.0).reshape(2, 8) / 16


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _train(model: nn.Module, steps: int = 3) -> None:
    """Forward, backward and step: in steady mode the model becomes a hooked root."""
    torch.manual_seed(1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(4, 8)).sum().backward()
        optimizer.step()


def _saved(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _averaged(model: nn.Module) -> nn.Module:
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    _train(model, 1)
    averaged.update_parameters(model)
    return averaged


def _state_dict_loaded(model: nn.Module) -> nn.Module:
    fresh = _model()
    fresh.load_state_dict(model.state_dict())
    return fresh.apply(lambda m: None)


OPERATIONS: dict[str, Callable[[nn.Module], Callable[..., torch.Tensor]]] = {
    "deepcopy": copy.deepcopy,
    "copy": copy.copy,
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "torch.save": _saved,
    "jit.script": torch.jit.script,
    "jit.trace": lambda m: torch.jit.trace(m, X),
    "torch.export": lambda m: torch.export.export(m, (X,)).module(),
    "AveragedModel": _averaged,
    "state_dict+apply": _state_dict_loaded,
}


def _hooks(module: object) -> list[int]:
    """How many forward hooks each submodule of an nn.Module result carries."""
    if not isinstance(module, nn.Module) or isinstance(module, torch.jit.ScriptModule):
        return []
    return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules()]


def _outcome(operation: str, mode: str | None) -> tuple[torch.Tensor, list[int], str, int]:
    """Train a model (in a session of ``mode``, or bare), apply the operation inside the session,
    run the result; its output, hook counts, the model's repr and the session's matmul FLOPs."""
    model = _model()
    session = otel_flops.track(model, mode=mode) if mode else contextlib.nullcontext()
    with session as tracker:
        _train(model)
        result = OPERATIONS[operation](model)
        with torch.no_grad():
            out = result(X)
    by_op = tracker.report()["by_op"] if mode else {}
    flops = sum(by_op[op]["flops"] for op in ("aten.addmm", "aten.mm") if op in by_op)
    return out, _hooks(result), repr(model), flops


@pytest.mark.parametrize("mode", ["full", "steady"])
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_model_object_operations_match_bare(operation: str, mode: str) -> None:
    bare_out, bare_hooks, bare_repr, _ = _outcome(operation, None)
    out, hooks, text, _ = _outcome(operation, mode)
    assert torch.equal(out, bare_out)
    assert hooks == bare_hooks
    assert text == bare_repr


@pytest.mark.parametrize("mode", ["full", "steady"])
def test_copy_forward_in_session_is_counted(mode: str) -> None:
    """A copy made inside the session is real work while the session lasts: counted exactly."""
    with FlopCounterMode(display=False) as counter:
        _train(_model())
        with torch.no_grad():
            copy.deepcopy(_model())(X)
    # A step: forward 2*4*(8*16 + 16*4); backward the first layer's weight grad, the second's
    # weight and input grads. Then the copy's forward on 2 rows.
    step = 2 * 4 * (8 * 16 + 16 * 4) + 2 * 4 * 8 * 16 + 2 * (2 * 4 * 16 * 4)
    expected = 3 * step + 2 * 2 * (8 * 16 + 16 * 4)
    *_, flops = _outcome("deepcopy", mode)
    assert flops == counter.get_total_flops() == expected


def _child_output(model: nn.Module, queue: multiprocessing.Queue) -> None:
    with torch.no_grad():
        queue.put(model(X).tolist())  # a list: a tensor's shared memory dies with the child


@pytest.mark.parametrize("mode", ["full", "steady"])
def test_model_sent_to_other_processes(mode: str, tmp_path) -> None:
    """Sent to a spawned process, or saved whole and loaded where otel_flops is never imported:
    the model arrives as bare and computes the same."""
    model = _model()
    with otel_flops.track(model, mode=mode):
        _train(model)
        bare = _model()
        _train(bare)
        torch.save(model, tmp_path / "model.pt")
        context = torch.multiprocessing.get_context("spawn")
        queue = context.Queue()
        child = context.Process(target=_child_output, args=(model, queue))
        child.start()
        received = queue.get(timeout=60)
        child.join(60)
    with torch.no_grad():
        expected = bare(X)
    assert child.exitcode == 0 and received == expected.tolist()
    script = ("import sys, torch; m = torch.load(sys.argv[1], weights_only=False); "
              "assert 'otel_flops' not in sys.modules; "
              "x = torch.arange(16.).reshape(2, 8) / 16; "
              "print(len(m._forward_hooks), len(m._forward_pre_hooks), m(x).tolist())")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model.pt")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"0 0 {expected.tolist()}"


def _encoder_layer_counts(mode: str | None) -> tuple[torch.Tensor, dict, dict]:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    session = otel_flops.track(layer, mode=mode) if mode else contextlib.nullcontext()
    with session as tracker, torch.no_grad():
        outs = torch.stack([layer(x) for _ in range(12)])
    report = tracker.report() if mode else {}
    return outs, report.get("by_op", {}), report.get("steady", {})


def test_encoder_layer_root_keeps_fast_path_and_draws_boundaries() -> None:
    """A TransformerEncoderLayer root (whose fast path a hook of its own would turn off) is
    replayed between boundaries like any root, computes bare's bits and counts as full mode."""
    bare, _, _ = _encoder_layer_counts(None)
    full, full_ops, _ = _encoder_layer_counts("full")
    steady, steady_ops, stats = _encoder_layer_counts("steady")
    assert torch.equal(full, bare) and torch.equal(steady, bare)
    assert {op: c["flops"] for op, c in steady_ops.items()} == {op: c["flops"] for op, c in full_ops.items()}
    assert sum(c["flops"] for c in full_ops.values()) > 0
    assert stats["replayed"] >= 10, stats


USER_SCRIPT = """
import copy, io, pickle, torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    optimizer.zero_grad(); model(torch.randn(4, 8)).sum().backward(); optimizer.step()
x = torch.ones(2, 8)
copies = [copy.deepcopy(model), pickle.loads(pickle.dumps(model)), torch.jit.script(model),
          torch.optim.swa_utils.AveragedModel(model)]
torch.save(model, io.BytesIO())
print("outputs", [c(x).tolist() for c in copies])
"""


@pytest.mark.parametrize("mode", ["full", "steady"])
def test_model_objects_under_otel_flops_run(mode: str, tmp_path) -> None:
    """Under ``otel-flops run`` (the session starts before the user's script): same output as bare."""
    script = tmp_path / "user.py"
    script.write_text(USER_SCRIPT)
    env = {**os.environ, "OTEL_FLOPS_ENERGY": "off"}
    bare = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    command = [sys.executable, "-m", "otel_flops", "run", "--mode", mode, "--port", "0", "--", sys.executable,
               str(script)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert bare.returncode == 0 and run.returncode == 0, run.stderr
    outputs = [line for line in run.stdout.splitlines() if line.startswith("outputs")]
    assert outputs == [bare.stdout.strip()], run.stdout


def _user_hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
    return output * 2


def test_steady_replay_runs_no_global_hook_and_only_the_roots_own() -> None:
    """Steady mode's cost: in a replayed step no global module hook of ours is armed (each would send
    every module call through nn.Module's hooked path); the root alone carries one pre- and one post-hook."""
    from otel_flops.torch import relays

    model = _model()
    seen: list[int] = []

    def count_ours(*_: object) -> None:
        hooks = torch.nn.modules.module
        seen.append(sum(isinstance(h, relays.Relay) for d in (hooks._global_forward_pre_hooks,
                                                               hooks._global_forward_hooks) for h in d.values()))

    model[1].register_forward_hook(count_ours)
    with otel_flops.track(model, mode="steady") as tracker:
        _train(model, 8)
        ours = [type(h).__name__ for d in (model._forward_pre_hooks, model._forward_hooks) for h in d.values()]
    assert tracker.report()["steady"]["replayed"] >= 5
    assert seen[-4:] == [0, 0, 0, 0], seen
    assert ours == ["RootRelay", "RootRelay"]
    assert not model._forward_hooks and not model._forward_pre_hooks and len(model[1]._forward_hooks) == 1


def test_user_hooks_kept_in_order_and_copied_without_ours() -> None:
    """Around steady mode's root hooks, the user's own hooks are untouched: scripting compiles theirs
    (the hook dicts are put back in their exact order), copies and pickles carry theirs and not ours."""
    from otel_flops.torch import relays

    model = _model()
    model.register_forward_hook(_user_hook)
    original_getstate = nn.Module.__getstate__
    with otel_flops.track(model, mode="steady"):
        _train(model)
        model.register_forward_hook(_user_hook)
        order = list(model._forward_hooks.items())
        scripted = torch.jit.script(model)
        assert list(model._forward_hooks.items()) == order
        copies = [copy.deepcopy(model), copy.copy(model), pickle.loads(pickle.dumps(model))]
        assert pickle.loads(pickle.dumps(relays.ROOT_PRE)) is relays.ROOT_PRE is copy.deepcopy(relays.ROOT_PRE)
    assert nn.Module.__getstate__ is original_getstate  # nothing of ours outlives the session
    with torch.no_grad():
        expected = model(X)  # through the user's two hooks
        assert torch.equal(expected, model[2](model[1](model[0](X))) * 4)
        assert torch.equal(scripted(X), expected)
        for result in copies:
            assert list(result._forward_hooks.values()) == [_user_hook, _user_hook]
            assert not result._forward_pre_hooks and torch.equal(result(X), expected)
