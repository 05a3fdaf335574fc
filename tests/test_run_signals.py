"""`otel-flops run` on real subprocesses and real signals: the script ends as it would bare, the
exit status is the script's, the report is still written, and a report path that cannot be
written is one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import wait_for_file

CLI = [sys.executable, "-m", "otel_flops", "run"]

TRAIN_UNTIL_STOPPED = textwrap.dedent(
    """
    import pathlib, signal, sys, time
    import torch
    from torch import nn

    if "--handler" in sys.argv:
        def stop(signum, frame):
            print("got", signal.Signals(signum).name, flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, stop)
    batches = [torch.randn(4, 8)] * 1000
    if "--workers" in sys.argv:  # forked DataLoader workers: a group signal kills them too
        from torch.utils.data import DataLoader
        batches = DataLoader(torch.randn(4000, 8), batch_size=4, num_workers=2, multiprocessing_context="fork")
    model = nn.Linear(8, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = 0
    while True:
        for x in batches:
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
            step += 1
            if step == 3:
                pathlib.Path(sys.argv[-1]).touch()
            time.sleep(0.01)
    """
)

SEND = {
    "alone": lambda pid, signum: os.kill(pid, signum),  # what a container runtime does to PID 1
    "group": lambda pid, signum: os.killpg(pid, signum),  # a shell's kill of the job, a Ctrl-C
}


def _signalled(cmd: list[str], tmp: Path, how: str, signum: int) -> subprocess.CompletedProcess:
    """Start ``cmd`` as its own process group, wait until the script has trained 3 steps, signal it."""
    ready = tmp / "ready"
    ready.unlink(missing_ok=True)
    env = {**os.environ, "OTEL_FLOPS_ENERGY": "off", "TMPDIR": str(tmp / "tmp")}
    proc = subprocess.Popen([*cmd, str(ready)], env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_file(ready, proc)
        SEND[how](proc.pid, signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize(
    "signum, how, flags, status",
    [
        (signal.SIGTERM, "alone", [], -signal.SIGTERM),
        (signal.SIGTERM, "group", [], -signal.SIGTERM),
        (signal.SIGTERM, "group", ["--workers"], -signal.SIGTERM),
        (signal.SIGINT, "group", [], -signal.SIGINT),
        (signal.SIGTERM, "alone", ["--handler"], 7),
        (signal.SIGTERM, "group", ["--handler"], 7),
    ],
    ids=["term-alone", "term-group", "term-group-dataloader-workers", "int-group", "term-alone-own-handler",
         "term-group-own-handler"],
)
def test_a_signalled_script_ends_as_bare_and_its_report_is_written(tmp_path, signum, how, flags, status):
    script, report = tmp_path / "train.py", tmp_path / "report.json"
    script.write_text(TRAIN_UNTIL_STOPPED)
    (tmp_path / "tmp").mkdir()
    args = [str(script), *flags]
    bare = _signalled([sys.executable, *args], tmp_path, how, signum)
    run = _signalled([*CLI, "--report", str(report), "--port", "0", "--", "python", *args], tmp_path, how, signum)
    printed = "got SIGTERM\n" if "--handler" in flags else ""
    assert (run.returncode, run.stdout) == (bare.returncode, bare.stdout) == (status, printed)
    assert json.loads(report.read_text())["steps"] >= 3
    assert "otel-flops report" in run.stderr
    assert not [line for line in run.stderr.splitlines() if line.startswith("  File") and "otel_flops" in line]
    assert ("KeyboardInterrupt" in run.stderr) == ("KeyboardInterrupt" in bare.stderr)
    assert not [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("otel-flops")]


EXITS_3 = "import sys, torch\ntorch.ones(2) + 1\nprint('ran')\nsys.exit(3)\n"


def _unwritable(tmp_path: Path, kind: str) -> tuple[Path, str]:
    if kind == "parent-is-a-file":
        (tmp_path / "file").write_text("")
        return tmp_path / "file" / "report.json", "a parent of it is not a directory"
    if kind == "a-directory":
        return tmp_path, "Is a directory"
    return Path("/dev/full"), "No space left on device"


@pytest.mark.parametrize("kind", ["parent-is-a-file", "a-directory", "full-disk"])
def test_an_unwritable_report_path_is_one_line_and_the_script_runs(tmp_path, kind):
    script = tmp_path / "exits3.py"
    script.write_text(EXITS_3)
    path, reason = _unwritable(tmp_path, kind)
    result = subprocess.run([*CLI, "--report", str(path), "--port", "0", "--", "python", str(script)],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "OTEL_FLOPS_ENERGY": "off"})
    assert (result.returncode, result.stdout) == (3, "ran\n")
    lines = [line for line in result.stderr.splitlines() if "cannot write the report" in line]
    assert len(lines) == 1 and f"to {path} ({reason})" in lines[0], result.stderr
    assert "otel-flops report" in result.stderr and "Traceback" not in result.stderr


def test_ranks_probing_one_report_path_at_once_do_not_fail(tmp_path, monkeypatch):
    """Each rank's `otel-flops run` probes the shared --report path; when another rank's probe
    removes the probe file first, this one still starts (a fleet test once failed this way)."""
    from otel_flops.commands import cli

    path = tmp_path / "r.json"
    opened = os.open

    def other_rank_finishes_first(*args, **kwargs):
        fd = opened(*args, **kwargs)
        path.unlink()
        return fd

    monkeypatch.setattr(cli.os, "open", other_rank_finishes_first)
    assert cli._unwritable(path) is None
    assert not path.exists()


def _read_only_mount_works(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(probe)],
        capture_output=True).returncode == 0


def test_a_report_path_on_a_read_only_filesystem_is_one_line(tmp_path):
    if not _read_only_mount_works(tmp_path):
        pytest.skip("needs `unshare --user --mount` to mount a read-only tmpfs")
    script, mount = tmp_path / "exits3.py", tmp_path / "ro"
    script.write_text(EXITS_3)
    mount.mkdir()
    inner = " ".join([*CLI, "--report", f"{mount}/report.json", "--port", "0", "--", "python", str(script)])
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         f"mount -t tmpfs -o ro tmpfs {mount} && exec {inner}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OTEL_FLOPS_ENERGY": "off"},
    )
    assert (result.returncode, result.stdout) == (3, "ran\n")
    lines = [line for line in result.stderr.splitlines() if "cannot write the report" in line]
    assert len(lines) == 1 and f"to {mount}/report.json (Read-only file system)" in lines[0], result.stderr
    assert "otel-flops report" in result.stderr and "Traceback" not in result.stderr


def test_the_temporary_report_is_removed_and_rank_reports_copied(tmp_path):
    """Under a launcher each rank writes its own report: all reach --report's folder, none stays in TMPDIR."""
    script = tmp_path / "rank.py"
    script.write_text("import torch\ntorch.ones(4) * 2\n")
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "OTEL_FLOPS_ENERGY": "off", "TMPDIR": str(tmp_path / "tmp"), "WORLD_SIZE": "2",
           "RANK": "1", "LOCAL_RANK": "1"}
    result = subprocess.run([*CLI, "--report", str(tmp_path / "run.json"), "--port", "0", "--", "python", str(script)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "run.rank1.json").read_text())["totals"]["flops"] == 4
    assert not (tmp_path / "run.json").exists()
    assert not [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("otel-flops")]


@pytest.mark.parametrize(("ending", "code", "line"), [
    ("os._exit(5)", 5, "otel-flops: the program ended before writing its report (exited with status 5 without "
                       "running its exit handlers, as os._exit does), or it never started counting"),
    ("os.kill(os.getpid(), signal.SIGKILL)", -signal.SIGKILL,
     "otel-flops: the program ended before writing its report (killed by signal 9, SIGKILL)"),
    ("os.kill(os.getpid(), signal.SIGSEGV)", -signal.SIGSEGV,
     "otel-flops: the program ended before writing its report (killed by signal 11, SIGSEGV)"),
    ("pass", 0, "otel-flops: the program wrote no report (it did not start torch counting)"),
])
def test_a_missing_report_is_explained_by_how_the_program_ended(tmp_path, ending, code, line):
    """The line says what cut the program short, from its exit status, not 'it did not start counting'."""
    script = tmp_path / "end.py"
    script.write_text(f"import os, signal, torch\ntorch.ones(2) + 1\n{ending}\n")
    cmd = ["true"] if code == 0 else ["python", str(script)]  # `true`: a program that never counts
    result = subprocess.run([*CLI, "--port", "0", "--", *cmd], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OTEL_FLOPS_ENERGY": "off"})
    assert result.returncode == code
    assert line in result.stderr.splitlines()
