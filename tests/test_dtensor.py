"""DTensor work counted where it runs (gloo, CPU, world size 2, one process per rank).

FSDP2 (``fully_shard`` per layer and on the root): forward and backward run on all-gathered
parameters and count exactly what one unsharded process counts; the optimizer updates the
rank's shard only, so its per-element work is half, to the element. Tensor parallel (a 2-layer
MLP, colwise then rowwise): each rank's matmuls are half the unsharded model's, exactly, and the
all-reduce of the rowwise output is in ``comm_bytes``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import free_port

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist
    from torch import nn
    import torch.multiprocessing as mp
    import otel_flops


    def mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


    def step(model, opt, x, y):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


    def counted(mode, run):
        with otel_flops.track(energy=False, serve=False, mode=mode) as tracker:
            run()
        return tracker.report()


    def worker(rank, port, out):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        dist.init_process_group("gloo", rank=rank, world_size=2)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

        mesh = init_device_mesh("cpu", (2,))
        x, y = torch.randn(4, 16), torch.randn(4, 8)
        results = {}
        model = mlp()
        opt = torch.optim.Adam(model.parameters())
        results["unsharded"] = counted("full", lambda: step(model, opt, x, y))
        for mode in ("full", "steady"):
            model = mlp()
            for layer in (model[0], model[2], model):
                fully_shard(layer, mesh=mesh)
            opt = torch.optim.Adam(model.parameters())
            results[f"fsdp-{mode}"] = counted(mode, lambda: [step(model, opt, x, y) for _ in range(3)])
        model = mlp()
        results["mlp"] = counted("full", lambda: model(x))
        parallelize_module(model, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
        results["tp"] = counted("full", lambda: model(x))
        with open(f"{out}.{rank}", "w") as f:
            json.dump(results, f)
        dist.destroy_process_group()


    if __name__ == "__main__":
        mp.spawn(worker, args=tuple(sys.argv[1:3]), nprocs=2)
    """
)
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
PARAM_TENSORS = 4  # Adam keeps one step counter per parameter tensor: a scalar on every rank
ELEMENTS = 16 * 32 + 32 + 32 * 8 + 8


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("dtensor")
    script, out = tmp / "worker.py", tmp / "counts"
    script.write_text(WORKER)
    done = subprocess.run([sys.executable, str(script), str(free_port()), str(out)], capture_output=True, text=True,
                          timeout=300, env={**CLEAN_ENV, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return [json.loads((tmp / f"counts.{rank}").read_text()) for rank in (0, 1)]


def _phases(report: dict) -> dict[str, int]:
    return {name: p["flops"] for name, p in report["phases"].items() if p["flops"]}


def _matmul(report: dict) -> int:
    return sum(o["flops"] for op, o in report["by_op"].items() if op in ("aten.mm", "aten.addmm"))


@pytest.mark.parametrize("mode", ["full", "steady"])
def test_fsdp2_optimizer_counts_the_shard_forward_and_backward_exact(ranks, mode):
    for rank in ranks:
        one, sharded = _phases(rank["unsharded"]), _phases(rank[f"fsdp-{mode}"])
        for phase in ("forward", "loss", "backward"):
            assert sharded[phase] == 3 * one[phase], phase
        # Adam: every per-element op on half the elements; the step counters stay whole
        per_step_elements = one["optimizer"] - PARAM_TENSORS
        assert per_step_elements % ELEMENTS == 0
        assert sharded["optimizer"] == 3 * (per_step_elements // 2 + PARAM_TENSORS)
        assert rank[f"fsdp-{mode}"]["comm_bytes"] == {
            "c10d._allgather_base_": 3 * 2 * 4 * ELEMENTS,  # forward and backward gather the layers
            "c10d._reduce_scatter_base_": 3 * 4 * ELEMENTS // 2,  # the gradients, once (bytes of the shard out)
        }
        assert "aten.mm" not in rank[f"fsdp-{mode}"]["uncounted_ops"]
    assert _phases(ranks[0][f"fsdp-{mode}"]) == _phases(ranks[1][f"fsdp-{mode}"])


def test_tensor_parallel_matmuls_are_half_the_model_on_each_rank(ranks):
    for rank in ranks:
        whole = _matmul(rank["mlp"])
        assert whole == 2 * 4 * 16 * 32 + 2 * 4 * 32 * 8
        assert _matmul(rank["tp"]) == whole // 2
        assert rank["tp"]["comm_bytes"]["_c10d_functional.all_reduce"] == 4 * 8 * 4  # the rowwise output
        assert rank["tp"]["uncounted_ops"] == {}
    assert sum(_matmul(rank["tp"]) for rank in ranks) == _matmul(ranks[0]["mlp"])
