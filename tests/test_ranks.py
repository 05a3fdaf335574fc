"""Rank discovery from each launcher's variables, who counts among a job's processes, a rank's own
GPU energy, and the per-rank file_sd target."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_energy_nvml import nvml  # noqa: F401  (the NVML stand-in fixture)

from otel_flops import ranks
from otel_flops.commands import autostart
from otel_flops.energy import EnergyMonitor
from otel_flops.energy.nvml import NvmlSource
from otel_flops.settings import Settings, SettingsError, load


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}, {"rank": 3, "local_rank": 1, "world_size": 4}),
        ({"LOCAL_RANK": "1", "WORLD_SIZE": "2", "NODE_RANK": "0"}, {"rank": 1, "local_rank": 1, "world_size": 2}),
        ({"LOCAL_RANK": "1", "WORLD_SIZE": "4", "NODE_RANK": "1"}, {"local_rank": 1, "world_size": 4}),
        ({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8"},
         {"rank": 5, "local_rank": 1, "world_size": 8}),
        ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4"},
         {"rank": 2, "local_rank": 0, "world_size": 4}),
        ({"PMI_RANK": "1", "PMI_SIZE": "2"}, {"rank": 1, "local_rank": 1, "world_size": 2}),
        # torchrun under srun: torchrun's variables win
        ({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"},
         {"rank": 1, "local_rank": 1, "world_size": 2}),
        ({"SLURM_JOB_ID": "7"}, None),
        ({}, None),
    ],
)
def test_each_launchers_variables_give_the_rank(env, rank):
    assert ranks.from_env(env) == rank
    assert load(env).rank == rank


def test_a_bad_rank_variable_is_one_line_naming_it():
    with pytest.raises(SettingsError) as raised:
        load({"SLURM_PROCID": "one", "SLURM_NTASKS": "2"})
    assert str(raised.value) == ("SLURM_PROCID='one' is not a whole number >= 0 (or -1 for none); fix the "
                                 "launcher's variable or unset it")


@pytest.mark.parametrize(
    ("argv", "env", "rank", "role"),
    [
        (["python", "train.py"], {}, None, autostart.COUNT),
        (["python", "/usr/bin/torchrun", "--nproc_per_node=2", "train.py"], {}, None, autostart.ASIDE),
        (["python", "/venv/bin/accelerate", "launch", "train.py"], {}, None, autostart.ASIDE),
        (["python", "-m", "deepspeed.launcher.launch", "train.py"], {}, None, autostart.ASIDE),
        # interpreter options before the launcher: DeepSpeed's runner starts `python -u -m deepspeed.launcher.launch`
        (["python", "-u", "-m", "deepspeed.launcher.launch", "train.py"], {}, None, autostart.ASIDE),
        (["python", "-X", "dev", "-um", "torch.distributed.run", "train.py"], {}, None, autostart.ASIDE),
        (["python", "-W", "ignore", "/venv/bin/deepspeed", "--num_gpus", "2", "train.py"], {}, None, autostart.ASIDE),
        # ... and DeepSpeed's ranks, `python -u train.py --local_rank=1`, count
        (["python", "-u", "train.py", "--local_rank=1"], {autostart.OWNER: "1:"},
         {"rank": 1, "local_rank": 1, "world_size": 2}, autostart.COUNT),
        (["python", "-c", "import torchrun"], {}, None, autostart.COUNT),
        (["python", "-c", "from multiprocessing.spawn import spawn_main; spawn_main()", "--multiprocessing-fork"],
         {autostart.OWNER: "1:"}, None, autostart.HELPER),
        # Lightning re-launches the script for local rank 1 from rank 0, which started with no rank
        (["python", "train.py"], {autostart.OWNER: "1:"}, {"rank": 1, "local_rank": 1, "world_size": 2},
         autostart.COUNT),
        # a plain subprocess of a rank has that rank's variables: it is not another rank
        (["python", "tool.py"], {autostart.OWNER: "1:local_rank=1,rank=1,world_size=2"},
         {"rank": 1, "local_rank": 1, "world_size": 2}, autostart.ASIDE),
        (["python", "tool.py"], {autostart.OWNER: "1:"}, None, autostart.ASIDE),
    ],
)
def test_what_a_process_is_decides_whether_it_counts(argv, env, rank, role):
    assert autostart._role(argv, env, rank) == role


def test_reports_are_named_by_rank():
    assert autostart.report_path("/r/run.json", {"rank": 3, "local_rank": 1, "world_size": 4}) == "/r/run.rank3.json"
    assert autostart.report_path("/r/run.json", {"local_rank": 1, "world_size": 4}) == "/r/run.local1.json"
    assert autostart.report_path("/r/run.json", None) == "/r/run.json"


def test_a_rank_measures_its_own_gpu_of_several(nvml):  # noqa: F811
    joined = {"local_rank": None}
    sources = {"no rank": NvmlSource(), "rank 1": NvmlSource(own=lambda: 1), "rank 2": NvmlSource(own=lambda: 2),
               "joins later": NvmlSource(own=lambda: joined["local_rank"])}
    for source in sources.values():
        source.start()
    nvml.energy_mj[0] += 1_000
    nvml.energy_mj[1] += 3_000
    read = {name: source.read().joules for name, source in sources.items()}
    both = {("gpu", "cuda:0", "nvml"): 1.0, ("gpu", "cuda:1", "nvml"): 3.0}
    assert read == {"no rank": both, "rank 1": {("gpu", "cuda:1", "nvml"): 3.0},
                    "rank 2": {},  # more ranks than GPUs here: none of its own
                    "joins later": both}
    joined["local_rank"] = 0  # from the moment it is local rank 0, it publishes only its GPU
    nvml.energy_mj[0] += 1_000
    nvml.energy_mj[1] += 3_000
    assert sources["joins later"].read().joules == {("gpu", "cuda:0", "nvml"): 2.0}


def test_with_one_gpu_visible_a_rank_measures_that_one(nvml, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb")
    source = NvmlSource(own=lambda: 1)
    source.start()
    nvml.energy_mj[1] += 4_000
    assert source.read().joules == {("gpu", "cuda:0", "nvml"): 4.0}


def test_local_rank_one_measures_its_gpu_but_not_the_machine(nvml):  # noqa: F811
    monitor = EnergyMonitor(Settings(rank={"rank": 1, "local_rank": 1, "world_size": 2}))
    monitor.start()
    nvml.energy_mj[1] += 5_000
    nvml.energy_mj[0] += 7_000
    assert monitor.reading().joules == {("gpu", "cuda:1", "nvml"): 5.0}
    monitor.stop()
    assert monitor.unavailable is None


def test_each_serving_process_writes_its_file_sd_target_and_removes_it(tmp_path, monkeypatch):
    import otel_flops

    monkeypatch.setenv("OTEL_FLOPS_FILE_SD_DIR", str(tmp_path))
    with otel_flops.track(serve=True, port=0, host="127.0.0.1", energy=False) as tracker:
        [target] = list(tmp_path.glob("*.json"))
        assert json.loads(target.read_text()) == [{"targets": [f"127.0.0.1:{tracker.endpoint.port}"], "labels": {}}]
        assert str(os.getpid()) in target.name
    assert list(tmp_path.iterdir()) == []


def test_a_missing_file_sd_directory_is_one_line(tmp_path):
    with pytest.raises(SettingsError) as raised:
        load({"OTEL_FLOPS_FILE_SD_DIR": str(tmp_path / "nope")})
    assert "OTEL_FLOPS_FILE_SD_DIR" in str(raised.value) and "create it" in str(raised.value)


@pytest.mark.parametrize("env", [{"LOCAL_RANK": "-1"}, {"LOCAL_RANK": "-1", "RANK": "-1", "WORLD_SIZE": "-1"},
                                 {"LOCAL_RANK": "", "WORLD_SIZE": "2"}, {"SLURM_LOCALID": "-1", "SLURM_NTASKS": "1"}])
def test_minus_one_or_empty_means_not_distributed(env):
    assert ranks.from_env(env) is None
    assert load(env).rank is None


@pytest.mark.parametrize(
    ("env", "rank", "line"),
    [
        ({"RANK": "3", "WORLD_SIZE": "2"}, None, "RANK=3 is not below WORLD_SIZE=2"),
        ({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}, {"local_rank": 1, "world_size": 2},
         "RANK=3 is not below WORLD_SIZE=2"),
        ({"RANK": "1", "LOCAL_RANK": "4", "WORLD_SIZE": "2"}, {"rank": 1, "local_rank": 1, "world_size": 2},
         "LOCAL_RANK=4 is not below WORLD_SIZE=2"),
        ({"SLURM_PROCID": "2", "SLURM_LOCALID": "2", "SLURM_NTASKS": "2"}, None,
         "SLURM_PROCID=2 and SLURM_LOCALID=2 is not below SLURM_NTASKS=2"),
    ],
)
def test_inconsistent_rank_variables_are_one_line_and_the_consistent_rest_counts(env, rank, line, capsys,
                                                                                  monkeypatch):
    monkeypatch.setattr("otel_flops.settings._told", set())
    assert load(env).rank == rank
    assert ranks.from_env(env) == rank
    assert capsys.readouterr().err.splitlines() == [
        f"otel-flops: {line}; ignored (fix the launcher's variables); counting goes on with the rest"]


def test_a_run_with_local_rank_minus_one_counts(tmp_path):
    """LOCAL_RANK=-1 (Hugging Face's 'not distributed') under `otel-flops run`: counted, one report."""
    script, report = tmp_path / "s.py", tmp_path / "r.json"
    script.write_text("import torch\ntorch.ones(3) + 1\n")
    result = subprocess.run([sys.executable, "-m", "otel_flops", "run", "--port", "0", "--report", str(report), "--",
                             "python", str(script)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "LOCAL_RANK": "-1", "OTEL_FLOPS_ENERGY": "off"})
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["totals"]["flops"] == 3


def test_inconsistent_rank_variables_under_run_are_one_line_and_counted(tmp_path):
    """`otel-flops run` and the script it starts both read the variables: the line is printed once."""
    script, report = tmp_path / "s.py", tmp_path / "r.json"
    script.write_text("import torch\ntorch.ones(3) + 1\n")
    result = subprocess.run([sys.executable, "-m", "otel_flops", "run", "--port", "0", "--report", str(report), "--",
                             "python", str(script)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "RANK": "3", "WORLD_SIZE": "2", "OTEL_FLOPS_ENERGY": "off"})
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "RANK=3" in line] == [
        "otel-flops: RANK=3 is not below WORLD_SIZE=2; ignored (fix the launcher's variables); counting goes on "
        "with the rest"]
    assert json.loads(report.read_text())["totals"]["flops"] == 3
