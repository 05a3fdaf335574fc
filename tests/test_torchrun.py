"""torchrun with two DDP ranks (gloo, CPU): one endpoint per rank, scraped by a real Prometheus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import free_port, wait_for_file
from prometheus_server import Prometheus, require

DDP = textwrap.dedent(
    """
    import pathlib, sys, time
    import torch, torch.distributed as dist
    from torch import nn

    dist.init_process_group("gloo")
    model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 32)), torch.randint(0, 4, (8,))).backward()
        opt.step()
    pathlib.Path(sys.argv[1] + str(dist.get_rank())).touch()
    while not pathlib.Path(sys.argv[2]).exists():
        time.sleep(0.1)
    dist.destroy_process_group()
    """
)


def test_two_ranks_two_endpoints_summed_by_prometheus(tmp_path):
    require("prometheus")
    script, report = tmp_path / "ddp.py", tmp_path / "run.json"
    script.write_text(DDP)
    base = free_port()
    while free_port() == base + 1:  # the second rank serves on base + 1
        base = free_port()
    ready, go = str(tmp_path / "ready"), tmp_path / "go"
    env = {**os.environ, "OTEL_FLOPS_ENERGY_INTERVAL": "0.5", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "otel_flops", "run", "--report", str(report), "--host", "127.0.0.1",
           "--port", str(base), "--", sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}", str(script), ready, str(go)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prometheus = None
    try:
        for rank in (0, 1):
            wait_for_file(Path(ready + str(rank)), proc, timeout=180)
        time.sleep(2.5)  # energy is read every 0.5 s: let rank 0 have some
        config = (f"global: {{scrape_interval: 1s}}\nscrape_configs:\n- job_name: train\n  static_configs:\n"
                  f"  - targets: ['127.0.0.1:{base}', '127.0.0.1:{base + 1}']\n")
        prometheus = Prometheus(config, tmp_path)
        prometheus.wait(lambda: len(prometheus.query('sum by (rank) (otel_flops_flops_total)')) == 2,
                        "both ranks' FLOPs", timeout=60)
        time.sleep(1.5)
        by_rank = {r["metric"]["rank"]: float(r["value"][1])
                   for r in prometheus.query("sum by (rank) (otel_flops_flops_total)")}
        energy_ranks = {r["metric"]["rank"] for r in prometheus.query("otel_flops_energy_joules_total")}
        comm = prometheus.query('sum by (rank, collective) (otel_flops_comm_bytes_total)')
    finally:
        go.touch()
        out, err = proc.communicate(timeout=120)
        if prometheus:
            prometheus.stop()
    assert proc.returncode == 0, err
    reports = {r: json.loads((tmp_path / f"run.rank{r}.json").read_text()) for r in ("0", "1")}
    assert by_rank == {r: float(reports[r]["totals"]["flops"]) for r in ("0", "1")}
    assert sum(by_rank.values()) == sum(rep["totals"]["flops"] for rep in reports.values())
    assert energy_ranks == {"0"}, "only local rank 0 measures machine energy"
    params = 32 * 16 + 16 + 16 * 4 + 4
    allreduce = {r["metric"]["rank"]: float(r["value"][1]) for r in comm if r["metric"]["collective"] == "allreduce"}
    assert allreduce == {"0": 4 * 4 * params, "1": 4 * 4 * params}  # 4 steps, float32 gradients
    assert reports["1"]["comm_bytes"]["c10d.allreduce_"] == 4 * 4 * params
