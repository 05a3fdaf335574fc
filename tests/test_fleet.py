"""The fleet path end to end: ranks that write their own file_sd targets, a node-local Prometheus
that finds and scrapes them and remote-writes to a central Prometheus (two real Prometheus
processes on loopback, configured from deploy/prometheus/fleet/). A job's totals at the central
Prometheus equal the sum of its ranks' reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml
from prometheus_server import Prometheus, require

FLEET = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "fleet"
RULES = FLEET.parent / "rules"
RANK = textwrap.dedent("""
    import os, torch
    for _ in range(int(os.environ["SLURM_PROCID"]) + 1):
        torch.ones(4, 8) @ torch.ones(8, 2)
""")


def _central(tmp_path: Path) -> Prometheus:
    config = yaml.safe_load((FLEET / "central.yml").read_text())
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(RULES / "*.yml")]
    (tmp_path / "central").mkdir()
    return Prometheus(yaml.safe_dump(config), tmp_path / "central", args=("--web.enable-remote-write-receiver",))


def _node_local(tmp_path: Path, targets: Path, central: Prometheus) -> Prometheus:
    config = yaml.safe_load((FLEET / "node-local.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["scrape_configs"][0]["file_sd_configs"][0]["files"] = [str(targets / "*.json")]
    config["remote_write"][0]["url"] = f"{central.url}/api/v1/write"
    config["remote_write"][0]["queue_config"]["batch_send_deadline"] = "1s"
    (tmp_path / "node").mkdir()
    return Prometheus(yaml.safe_dump(config), tmp_path / "node")


def test_a_jobs_totals_at_the_central_prometheus_equal_the_sum_of_its_ranks_reports(tmp_path):
    require("prometheus")
    targets = tmp_path / "targets"
    targets.mkdir()
    central = _central(tmp_path)
    node = None
    try:
        node = _node_local(tmp_path, targets, central)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
        env.update(OTEL_FLOPS_ENERGY="off", OTEL_FLOPS_RUN_ID="fleet-job", OTEL_FLOPS_FILE_SD_DIR=str(targets),
                   OTEL_FLOPS_LINGER="60", OMP_NUM_THREADS="1")
        ranks = [subprocess.Popen(  # any free port: the node-local Prometheus reads it from the target file
            [sys.executable, "-m", "otel_flops", "run", "--report", str(tmp_path / "r.json"), "--host",
             "127.0.0.1", "--port", "0", "--", sys.executable, "-c", RANK],
            env={**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NTASKS": "2"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
        results = [proc.communicate(timeout=120) for proc in ranks]  # each waits for its final scrape
        assert [proc.returncode for proc in ranks] == [0, 0], results
        assert "no scrape of the final totals" not in "".join(err for _, err in results)
        assert list(targets.iterdir()) == [], "each rank removed its target"
        reports = [json.loads((tmp_path / f"r.rank{rank}.json").read_text()) for rank in (0, 1)]
        expected = {str(r["rank"]["rank"]): float(r["totals"]["flops"]) for r in reports}
        assert expected == {"0": 128.0, "1": 256.0}  # 2*4*8*2 FLOPs per product, rank r does r+1
        query = 'sum by (rank) (max_over_time(otel_flops_flops_total{run="fleet-job",job="otel-flops-ranks"}[10m]))'

        def at_central() -> dict[str, float]:
            return {r["metric"]["rank"]: float(r["value"][1]) for r in central.query(query)}

        central.wait(lambda: at_central() == expected, f"the central Prometheus to hold {expected}", timeout=60)
    finally:
        if node:
            node.stop()
        central.stop()
    assert sum(expected.values()) == sum(r["totals"]["flops"] for r in reports)
