"""DTensor work counted where it runs (gloo, CPU, world size 2, one process per rank).

FSDP2 (``fully_shard`` per layer and on the root): forward and backward run on all-gathered
parameters and count exactly what one unsharded process counts; the optimizer updates the
rank's shard only, so its per-element work is half, to the element. Tensor parallel (a 2-layer
MLP, colwise then rowwise): each rank's matmuls are half the unsharded model's, exactly, and the
all-reduce of the rowwise output is in ``comm_bytes``. Sequence parallel (a LayerNorm on half the
sequence, PrepareModuleInput, colwise, rowwise back to sequence shards), and FSDP2 with it on 4
ranks (a 2 x 2 mesh): each rank's ops are its share, exactly; the sum over ranks is the unsharded
work plus what each rank repeats (derived by hand below), and the collectives are in ``comm_bytes``.
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


    class Block(nn.Module):  # a transformer block's MLP half: x + ffn(norm(x)), x of (batch, sequence, 16)

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.norm = nn.LayerNorm(16)
            self.ffn = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))

        def forward(self, x):
            return x + self.ffn(self.norm(x))


    def block_steps(model, x):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()


    def sequence_parallel(model, mesh):  # the norm on the rank's part of the sequence, the MLP on all of it
        from torch.distributed.tensor import Replicate, Shard
        from torch.distributed.tensor.parallel import (
            ColwiseParallel, PrepareModuleInput, RowwiseParallel, SequenceParallel, parallelize_module)

        return parallelize_module(model, mesh, {
            "norm": SequenceParallel(),
            "ffn": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
            "ffn.0": ColwiseParallel(), "ffn.2": RowwiseParallel(output_layouts=Shard(1))})


    def collectives():  # the same exchanges through c10d's ops and the functional ones DTensor uses
        import torch.distributed._functional_collectives as funcol

        group, t = dist.group.WORLD, torch.ones(4)
        dist.all_gather_into_tensor(torch.empty(8), t)
        dist.reduce_scatter_tensor(torch.empty(2), t)
        funcol.all_gather_tensor(t, 0, group).wait()
        funcol.reduce_scatter_tensor(t, "sum", 0, group).wait()


    def counted(mode, run):
        with otel_flops.track(energy=False, serve=False, mode=mode) as tracker:
            run()
        return tracker.report()


    def worker(rank, world, port, out):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        (pairs if world == 2 else grid)(rank, out)
        dist.destroy_process_group()


    def grid(rank, out):  # FSDP2 over the data-parallel dimension, sequence and tensor parallel over the other
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
        torch.manual_seed(1)
        x = torch.randn(4, 8, 16)  # the global batch
        dp, tp = divmod(rank, 2)
        results = {"unsharded": counted("full", lambda: block_steps(Block(), x))}
        for mode in ("full", "steady"):
            model = fully_shard(sequence_parallel(Block(), mesh["tp"]), mesh=mesh["dp"])
            local = x.chunk(2, dim=0)[dp].chunk(2, dim=1)[tp]
            results[mode] = counted(mode, lambda: block_steps(model, local))
        with open(f"{out}.{rank}", "w") as f:
            json.dump(results, f)


    def pairs(rank, out):
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
        torch.manual_seed(1)
        x = torch.randn(2, 8, 16)
        results["block"] = counted("full", lambda: block_steps(Block(), x))
        for mode in ("full", "steady"):
            model = sequence_parallel(Block(), mesh)
            results[f"sp-{mode}"] = counted(mode, lambda: block_steps(model, x.chunk(2, dim=1)[rank]))
        results["collectives"] = counted("full", collectives)
        with open(f"{out}.{rank}", "w") as f:
            json.dump(results, f)


    if __name__ == "__main__":
        world = int(sys.argv[1])
        mp.spawn(worker, args=(world, *sys.argv[2:4]), nprocs=world)
    """
)
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
PARAM_TENSORS = 4  # Adam keeps one step counter per parameter tensor: a scalar on every rank
ELEMENTS = 16 * 32 + 32 + 32 * 8 + 8


def _spawn(tmp_path_factory, world: int) -> list[dict]:
    """Each rank's counts from one run of WORKER with ``world`` ranks."""
    tmp = tmp_path_factory.mktemp(f"dtensor{world}")
    script, out = tmp / "worker.py", tmp / "counts"
    script.write_text(WORKER)
    done = subprocess.run([sys.executable, str(script), str(world), str(free_port()), str(out)], capture_output=True,
                          text=True, timeout=300, env={**CLEAN_ENV, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return [json.loads((tmp / f"counts.{rank}").read_text()) for rank in range(world)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    return _spawn(tmp_path_factory, 2)


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> list[dict]:
    """4 ranks: a (data parallel 2) x (tensor parallel 2) mesh."""
    return _spawn(tmp_path_factory, 4)


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
        assert rank[f"fsdp-{mode}"]["comm_bytes"] == {  # the bytes each rank puts in
            "c10d._allgather_base_": 3 * 2 * 4 * ELEMENTS // 2,  # forward and backward gather the layers' shards
            "c10d._reduce_scatter_base_": 3 * 4 * ELEMENTS,  # the whole gradients, once
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


# The block: x (batch B, sequence S, D) -> LayerNorm(D) -> Linear(D, H) -> ReLU -> Linear(H, D), plus x.
B, S, D, H = 2, 8, 16, 32
STEPS = 3
TP_PARAMS = 2 * D + H // 2 * D + H // 2 + D * H // 2 + D  # a tensor-parallel rank's: norm and the 2nd bias whole
# What a tensor-parallel rank does beyond its share, per step (the job's extra work, counted where it runs):
# forward: RowwiseParallel turns the replicated bias into a Partial one, dividing it by the TP size (D per rank);
# backward: that bias's gradient is summed over the whole (gathered) sequence on every TP rank, B*S*D each where
# its share is B*S*D/TP; optimizer: the replicated parameters (norm weight and bias, the 2nd bias) are updated on
# every TP rank.
EXTRA_FORWARD, EXTRA_BIAS_GRAD, REPLICATED = D, B * S * D // 2, 3 * D


def _block_matmul() -> int:
    """mm/addmm FLOPs of STEPS unsharded steps on a (B, S, D) batch: 2 products forward, 4 backward."""
    return STEPS * 3 * (2 * B * S * D * H + 2 * B * S * H * D)


@pytest.mark.parametrize("mode", ["full", "steady"])
def test_sequence_parallel_ranks_sum_to_the_block_plus_the_replicated_work(ranks, mode):
    whole = _phases(ranks[0]["block"])
    assert _matmul(ranks[0]["block"]) == _block_matmul()
    for rank in ranks:
        sharded = rank[f"sp-{mode}"]
        assert _matmul(sharded) == _block_matmul() // 2
        assert sharded["uncounted_ops"] == {}
        assert sharded["comm_bytes"] == {  # float32, per step: forward, then its backward
            "_c10d_functional.all_gather_into_tensor": STEPS * 2 * 4 * B * S // 2 * D,  # the norm's output, a grad
            "_c10d_functional.reduce_scatter_tensor": STEPS * 2 * 4 * B * S * D,  # the MLP's output, a grad
            "_c10d_functional.all_reduce": STEPS * 4 * 2 * D,  # the norm's Partial gradients
        }
    summed = {phase: sum(_phases(rank[f"sp-{mode}"])[phase] for rank in ranks) for phase in whole}
    assert summed == {"forward": whole["forward"] + STEPS * 2 * EXTRA_FORWARD, "loss": whole["loss"],
                      "backward": whole["backward"] + STEPS * 2 * EXTRA_BIAS_GRAD,
                      "optimizer": whole["optimizer"] + STEPS * REPLICATED}
    assert _phases(ranks[0][f"sp-{mode}"]) == _phases(ranks[1][f"sp-{mode}"])


@pytest.mark.parametrize("mode", ["full", "steady"])
def test_fsdp2_with_tensor_parallel_each_rank_counts_its_shard_of_its_shard(grid, mode):
    whole = _phases(grid[0]["unsharded"])  # the global batch: both data-parallel halves, one process
    assert _matmul(grid[0]["unsharded"]) == 2 * _block_matmul()
    for rank in grid:
        sharded = rank[mode]
        assert _matmul(sharded) == 2 * _block_matmul() // 4
        assert _phases(sharded)["optimizer"] == STEPS * TP_PARAMS // 2  # SGD: its half of its TP shard
        assert sharded["uncounted_ops"] == {}
        assert sharded["comm_bytes"] == {
            # FSDP2: the root keeps its parameters gathered from forward to backward, so one gather a step;
            # fp32 gradients are averaged inside the reduce-scatter (ReduceOp.AVG): no FLOPs
            "c10d._allgather_base_": STEPS * 4 * TP_PARAMS // 2,
            "c10d._reduce_scatter_base_": STEPS * 4 * TP_PARAMS,
            "_c10d_functional.all_gather_into_tensor": STEPS * 2 * 4 * B * S // 2 * D,
            "_c10d_functional.reduce_scatter_tensor": STEPS * 2 * 4 * B * S * D,
            "_c10d_functional.all_reduce": STEPS * 4 * 2 * D,
        }
    summed = {phase: sum(_phases(rank[mode])[phase] for rank in grid) for phase in whole}
    assert summed == {"forward": whole["forward"] + STEPS * 4 * EXTRA_FORWARD, "loss": whole["loss"],
                      "backward": whole["backward"] + STEPS * 4 * EXTRA_BIAS_GRAD,
                      "optimizer": whole["optimizer"] + STEPS * REPLICATED}


def test_c10d_and_functional_collectives_record_the_bytes_a_rank_puts_in(ranks):
    for rank in ranks:
        assert rank["collectives"]["comm_bytes"] == {  # 4 float32 in, whatever the op's output
            "c10d._allgather_base_": 16, "c10d._reduce_scatter_base_": 16,
            "_c10d_functional.all_gather_into_tensor": 16, "_c10d_functional.reduce_scatter_tensor": 16,
        }
