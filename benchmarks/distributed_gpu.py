"""DDP and FSDP2 counts, and per-GPU energy per rank, on CUDA/NCCL (issue 16's GPU acceptance).

Run on a machine with 2 GPUs:

    torchrun --nproc_per_node=2 benchmarks/distributed_gpu.py [--steps 200] [--width 4096]

Each rank checks, on its own GPU (cuda:LOCAL_RANK):
- DDP: per-phase FLOPs equal an unwrapped single-process run on the same local batch, with the
  backward's gradient averaging shown apart (expected: one FLOP per parameter per step);
- FSDP2 (``fully_shard`` per layer and on the root): forward and backward equal the unsharded
  run; the optimizer's per-element work is the shard's (half with 2 ranks), Adam's per-tensor step
  counters whole;
- energy: NVML's joules of this rank's GPU only, and FLOP/J from them.
Rank 0 prints one table; the exit code is 1 when a check fails. ``--cpu`` runs the same checks
on CPU with gloo (no GPU energy), to check the script itself.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

import otel_flops


def mlp(width: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 16)).to(device)


def train(model: nn.Module, batches: list, energy: bool = False) -> tuple[dict, dict[str, float]]:
    """The report, and the GPU joules this rank measured by device (NVML)."""
    opt = torch.optim.Adam(model.parameters())
    with otel_flops.track(mode="full", serve=False, energy=energy) as tracker:
        for x, y in batches:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()
    monitor = tracker.session.energy
    joules = monitor.reading().joules if monitor is not None else {}
    return tracker.report(), {device: j for (hw, device, _), j in joules.items() if hw == "gpu"}


def phases(report: dict) -> dict[str, int]:
    return {name: p["flops"] for name, p in report["phases"].items() if p["flops"]}


def check(rank: int, world: int, steps: int, width: int, device: torch.device) -> dict:
    batches = [(torch.randn(64, width, device=device), torch.randint(0, 16, (64,), device=device))
               for _ in range(steps)]
    reference = phases(train(mlp(width, device), batches)[0])
    params = sum(p.numel() for p in mlp(width, device).parameters())
    tensors = len(list(mlp(width, device).parameters()))

    ddp_report, gpu = train(nn.parallel.DistributedDataParallel(mlp(width, device)), batches, energy=True)
    ddp = phases(ddp_report)
    averaging = ddp.get("backward", 0) - reference["backward"]

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = mlp(width, device)
    mesh = init_device_mesh(device.type, (world,))
    for layer in (*[m for m in model if isinstance(m, nn.Linear)], model):
        fully_shard(layer, mesh=mesh)
    fsdp = phases(train(model, batches)[0])
    shard_optimizer = (reference["optimizer"] - steps * tensors) // world + steps * tensors

    gpu_joules = sum(gpu.values())
    return {
        "rank": rank,
        "device": str(device),
        "ddp_forward_equal": ddp["forward"] == reference["forward"],
        "ddp_optimizer_equal": ddp["optimizer"] == reference["optimizer"],
        "ddp_averaging": averaging,
        "averaging_expected": steps * params,
        "fsdp_forward_equal": fsdp["forward"] == reference["forward"],
        "fsdp_backward_equal": fsdp["backward"] == reference["backward"],
        "fsdp_optimizer": fsdp["optimizer"],
        "fsdp_optimizer_expected": shard_optimizer,
        "unsharded_optimizer": reference["optimizer"],
        "gpu_energy": gpu,
        "ddp_flops": ddp_report["totals"]["flops"],
        "flops_per_joule": ddp_report["totals"]["flops"] / gpu_joules if gpu_joules else None,
        "energy_reason": ddp_report["energy"].get("reason"),
    }


def table(rows: list[dict]) -> str:
    lines = ["rank device  DDP fwd/opt  averaging (got/expected)   FSDP2 fwd/bwd  "
             "FSDP2 optimizer (got/expected/unsharded)   GPU J by device          FLOP/J"]
    for r in rows:
        energy = ", ".join(f"{k}={v:.1f}" for k, v in r["gpu_energy"].items()) or r["energy_reason"] or "-"
        fpj = f"{r['flops_per_joule']:.3g}" if r["flops_per_joule"] else "-"
        lines.append(
            f"{r['rank']:>4} {r['device']:<7} {r['ddp_forward_equal']!s:>5}/{r['ddp_optimizer_equal']!s:<5} "
            f"{r['ddp_averaging']:>12,}/{r['averaging_expected']:<12,} {r['fsdp_forward_equal']!s:>5}/"
            f"{r['fsdp_backward_equal']!s:<6}  {r['fsdp_optimizer']:>12,}/{r['fsdp_optimizer_expected']:,}/"
            f"{r['unsharded_optimizer']:,}   {energy:<24} {fpj}")
    return "\n".join(lines)


def passed(row: dict) -> bool:
    return (row["ddp_forward_equal"] and row["ddp_optimizer_equal"]
            and row["ddp_averaging"] == row["averaging_expected"]
            and row["fsdp_forward_equal"] and row["fsdp_backward_equal"]
            and row["fsdp_optimizer"] == row["fsdp_optimizer_expected"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per check")
    parser.add_argument("--width", type=int, default=4096, help="hidden width of the MLP")
    parser.add_argument("--cpu", action="store_true", help="check this script itself on CPU (gloo), no energy")
    args = parser.parse_args()
    if "LOCAL_RANK" not in os.environ or not (args.cpu or torch.cuda.is_available()):
        print("run under torchrun on a machine with GPUs: torchrun --nproc_per_node=2 benchmarks/distributed_gpu.py",
              file=sys.stderr)
        return 2
    if args.cpu:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    else:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    row = check(rank, world, args.steps, args.width, device)
    rows: list = [None] * world
    dist.all_gather_object(rows, row)
    dist.destroy_process_group()
    if rank == 0:
        print(table(rows))
        print("all checks passed" if all(map(passed, rows)) else "A CHECK FAILED")
    return 0 if all(map(passed, rows)) else 1


if __name__ == "__main__":
    sys.exit(main())
