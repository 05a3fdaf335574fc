"""Every launcher, every rank: DDP over gloo (CPU, world size 2, one process per rank) started by
torchrun, by torch.multiprocessing.spawn, by Lightning Fabric, by `accelerate launch` and by
`deepspeed` (its CPU accelerator, ZeRO stage 0, gradient clipping off), each under `otel-flops
run`. Each rank serves its own /metrics with its rank labels and writes its own report, whose
per-phase FLOPs equal a single-process run on the same local batch, plus the gradient averaging
(one FLOP per parameter per step). SLURM and OpenMPI variables, set on
plain processes, give distinct ports and labels."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import free_port, scrape, wait_for_file
from torch import nn

import otel_flops

STEPS, BATCH = 3, 8
PARAMS = 32 * 16 + 16 + 16 * 4 + 4


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))


# Shared by every launcher's script: train on this rank's batches, then wait to be scraped.
COMMON = f"""
import os, pathlib, sys, time
import torch, torch.distributed as dist
from torch import nn


def batches():
    return [(torch.randn({BATCH}, 32), torch.randint(0, 4, ({BATCH},))) for _ in range({STEPS})]


def train(rank, data, setup, backward):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    model, opt = setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    for x, y in data:
        opt.zero_grad()
        backward(nn.functional.cross_entropy(model(x), y))
        opt.step()
    pathlib.Path(sys.argv[1] + str(rank)).touch()
    while not pathlib.Path(sys.argv[2]).exists():
        time.sleep(0.1)


def ddp(model, opt):
    return nn.parallel.DistributedDataParallel(model), opt
"""

TORCHRUN = COMMON + """
dist.init_process_group("gloo")
train(dist.get_rank(), batches(), ddp, lambda loss: loss.backward())
dist.destroy_process_group()
"""

# mp.spawn's workers are multiprocessing children, like DataLoader workers: they count from the
# moment they join the group. Each rank's batches come through a DataLoader with a spawned
# worker, which never counts.
SPAWN = COMMON + """
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset


def worker(rank, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    data = batches()
    dataset = TensorDataset(torch.cat([x for x, _ in data]), torch.cat([y for _, y in data]))
    loader = DataLoader(dataset, batch_size=len(data[0][0]), num_workers=1, multiprocessing_context="spawn")
    train(rank, list(loader), ddp, lambda loss: loss.backward())
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[3],), nprocs=2)
"""

# Fabric re-launches this script for local rank 1 from rank 0, which started with no rank.
FABRIC = COMMON + """
import lightning as L

fabric = L.Fabric(accelerator="cpu", devices=2, strategy="ddp")
fabric.launch()
train(fabric.global_rank, batches(), fabric.setup, fabric.backward)
"""

ACCELERATE = COMMON + """
from accelerate import Accelerator

accelerator = Accelerator(cpu=True)
train(accelerator.process_index, batches(), accelerator.prepare, accelerator.backward)
"""

# DeepSpeed's runner starts `python -u -m deepspeed.launcher.launch`, which starts the ranks with RANK,
# LOCAL_RANK and WORLD_SIZE set; on a machine with no GPU its CPU accelerator runs over gloo.
DEEPSPEED = COMMON + f"""
import importlib
import deepspeed

sys.argv = [a for a in sys.argv if not a.startswith("--local_rank=")]  # the launcher passes it first

# For CPU ranks DeepSpeed JIT-compiles a shared-memory all-reduce kernel for inference (about 90 s on
# 2 cores, once per machine); training's gradient all-reduce goes through torch.distributed either way.
importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def setup(model, opt):
    global engine
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config={{"train_micro_batch_size_per_gpu": {BATCH},
                                                                        "gradient_clipping": 0.0}})
    return engine, engine  # the engine zeroes the gradients and steps the optimizer


train(int(os.environ["RANK"]), batches(), setup, lambda loss: engine.backward(loss))
"""

LAUNCHERS = {
    "torchrun": (TORCHRUN, lambda script, port: [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                                                 f"--master_port={port}", script]),
    "mp.spawn": (SPAWN, lambda script, port: [sys.executable, script]),
    "lightning-fabric": (FABRIC, lambda script, port: [sys.executable, script]),
    "accelerate": (ACCELERATE, lambda script, port: [
        str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
        str(port), script]),
    "deepspeed": (DEEPSPEED, lambda script, port: [
        str(Path(sys.executable).with_name("deepspeed")), "--num_gpus", "2", "--master_port", str(port), script]),
}


@pytest.fixture(scope="module")
def single_process() -> dict[str, int]:
    """Per-phase FLOPs of one process training on one rank's local batch."""
    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with otel_flops.track(energy=False, mode="full") as tracker:
        for _ in range(STEPS):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(BATCH, 32)), torch.randint(0, 4, (BATCH,))).backward()
            opt.step()
    return {name: p["flops"] for name, p in tracker.report()["phases"].items()}


def _base_port() -> int:
    base = free_port()
    while free_port() == base + 1:  # rank 1 serves on base + 1
        base = free_port()
    return base


def _two_ranks(tmp_path: Path, launcher: str) -> tuple[dict[int, dict], dict[int, dict]]:
    """Run the launcher's DDP script under `otel-flops run`; each rank's /metrics samples (read
    while it waits) and its report."""
    source, command = LAUNCHERS[launcher]
    script = tmp_path / "train.py"
    script.write_text(source)
    base, ready, go = _base_port(), str(tmp_path / "ready"), tmp_path / "go"
    env = {**os.environ, "OTEL_FLOPS_ENERGY": "off", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("OTEL_FLOPS_RUN_ID", None)
    cmd = [sys.executable, "-m", "otel_flops", "run", "--report", str(tmp_path / "run.json"),
           "--host", "127.0.0.1", "--port", str(base), "--",
           *command(str(script), free_port()), ready, str(go)]
    if launcher == "mp.spawn":
        cmd.append(str(free_port()))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)
    try:
        for rank in (0, 1):
            wait_for_file(Path(ready + str(rank)), proc, timeout=240)
        samples = {rank: scrape(f"http://127.0.0.1:{base + rank}/metrics") for rank in (0, 1)}
    finally:
        go.touch()
        try:
            out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # a hung rank and its launcher must not outlive the test
            raise
    assert proc.returncode == 0, err
    reports = {rank: json.loads((tmp_path / f"run.rank{rank}.json").read_text()) for rank in (0, 1)}
    return samples, reports


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_each_rank_counts_its_local_batch_with_its_labels(tmp_path, launcher, single_process):
    if launcher == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        if os.environ.get("CI"):
            pytest.fail("deepspeed is missing in CI; make setup installs the test extra")
        pytest.skip("deepspeed is not installed (the test extra has it: pip install -e '.[test]')")
    samples, reports = _two_ranks(tmp_path, launcher)
    # the gradient averaging, one FLOP per parameter: DDP's runs in the backward's hooks, DeepSpeed's (ZeRO stage 0)
    # after the backward returns, in the optimizer phase with the rest of the work between backward and step
    averaging = "optimizer" if launcher == "deepspeed" else "backward"
    expected = dict(single_process, **{averaging: single_process[averaging] + STEPS * PARAMS})
    if launcher in ("accelerate", "deepspeed"):  # backward() divides the loss by gradient_accumulation_steps:
        expected.update(loss=expected["loss"] + STEPS, backward=expected["backward"] + STEPS)  # 1 FLOP each way
    for rank in (0, 1):
        labels = {"rank": str(rank), "local_rank": str(rank), "world_size": "2"}
        flops = samples[rank]["otel_flops_flops_total"]
        assert flops and all(s.items() >= labels.items() for s, _ in flops), (launcher, rank, flops)
        served = {}
        for s, value in flops:
            if value:
                served[s["phase"]] = served.get(s["phase"], 0) + value
        report = reports[rank]
        assert report["rank"] == {"rank": rank, "local_rank": rank, "world_size": 2}
        phases = {name: p["flops"] for name, p in report["phases"].items() if p["flops"]}
        assert phases == {k: v for k, v in expected.items() if v}, (launcher, rank)
        assert served == phases, "/metrics and the report agree"
        assert report["comm_bytes"]["c10d.allreduce_"] == STEPS * 4 * PARAMS  # float32 gradients
    others = sorted(p.name for p in tmp_path.glob("run*.json"))
    assert set(others) <= {"run.json", "run.rank0.json", "run.rank1.json"}, others  # no helper wrote one
    if (tmp_path / "run.json").exists():  # the process that started the ranks did no work of its own
        assert json.loads((tmp_path / "run.json").read_text())["totals"]["flops"] == 0


SCHEDULERS = {
    "slurm": lambda rank: {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NTASKS": "2"},
    "openmpi": lambda rank: {"OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_LOCAL_RANK": str(rank),
                             "OMPI_COMM_WORLD_SIZE": "2"},
}
TASK = textwrap.dedent("""
    import pathlib, sys, time
    import torch
    torch.ones(4, 8) @ torch.ones(8, 2)
    pathlib.Path(sys.argv[1]).touch()
    while not pathlib.Path(sys.argv[2]).exists():
        time.sleep(0.1)
""")


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_scheduler_tasks_get_distinct_ports_and_labels(tmp_path, scheduler):
    """srun and mpirun set no LOCAL_RANK: their own variables give each task its port and labels."""
    script, base, go = tmp_path / "task.py", _base_port(), tmp_path / "go"
    script.write_text(TASK)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "OTEL_FLOPS_RUN_ID")}
    env.update(OTEL_FLOPS_ENERGY="off", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "otel_flops", "run", "--report", str(tmp_path / "r.json"),
                               "--host", "127.0.0.1", "--port", str(base), "--", sys.executable, str(script),
                               str(tmp_path / f"ready{rank}"), str(go)],
                              env={**env, **SCHEDULERS[scheduler](rank)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        for rank, proc in enumerate(procs):
            wait_for_file(tmp_path / f"ready{rank}", proc, timeout=120)
        samples = {rank: scrape(f"http://127.0.0.1:{base + rank}/metrics") for rank in (0, 1)}
    finally:
        go.touch()
        results = [proc.communicate(timeout=120) for proc in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    for rank in (0, 1):
        [(labels, value)] = samples[rank]["otel_flops_flops_total"]
        assert value == 2 * 4 * 8 * 2
        assert (labels["rank"], labels["local_rank"], labels["world_size"]) == (str(rank), str(rank), "2")
        report = json.loads((tmp_path / f"r.rank{rank}.json").read_text())
        assert report["rank"] == {"rank": rank, "local_rank": rank, "world_size": 2}
