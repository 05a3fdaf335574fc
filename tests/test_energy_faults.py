"""Without a working CodeCarbon, `otel-flops run` still counts FLOPs and the report says why energy is absent.

Real subprocesses: one in a throwaway venv that has every package of the project's venv except
CodeCarbon, one where an installed-but-broken CodeCarbon raises on import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import importlib.util
    import torch
    from torch import nn

    model = nn.Linear(32, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 32)).sum().backward()
        opt.step()
    print("codecarbon importable:", importlib.util.find_spec("codecarbon") is not None)
    """
)
ADDMM_FLOPS = 3 * 2 * 8 * 32 * 4


def _venv_without_codecarbon(root: Path) -> Path:
    """A venv whose site-packages links to every entry of ours except codecarbon's."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    ours = Path(sysconfig.get_paths()["purelib"])
    theirs = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())
    for entry in ours.iterdir():
        if not entry.name.lower().startswith("codecarbon"):
            (theirs / entry.name).symlink_to(entry)
    return python


def _run(python: Path, tmp_path: Path, env: dict[str, str] | None = None) -> tuple[dict, str, str]:
    """`otel-flops run` on a short script, with no GPU visible, so NVML is absent on any machine."""
    script, report_path = tmp_path / "train.py", tmp_path / "report.json"
    script.write_text(SCRIPT)
    cli = [python, "-m", "otel_flops", "run", "--report", str(report_path), "--port", "0", "--host", "127.0.0.1"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    proc = subprocess.run([*cli, "--", "python", str(script)], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(report_path.read_text()), proc.stdout, proc.stderr


def _assert_counted_without_energy(report: dict, err: str, reason: str) -> None:
    assert report["by_op"]["aten.addmm"]["flops"] == ADDMM_FLOPS and report["steps"] == 3
    energy = report["energy"]
    assert energy["available"] is False and report["efficiency"] == {}
    assert energy["reason"].startswith("NVML: ") and reason in energy["reason"] and "\n" not in energy["reason"]
    assert f"energy: unavailable ({energy['reason']})" in err


def test_run_in_a_venv_without_codecarbon(tmp_path):
    python = _venv_without_codecarbon(tmp_path / "venv")
    report, out, err = _run(python, tmp_path)
    assert "codecarbon importable: False" in out
    _assert_counted_without_energy(
        report, err, "CodeCarbon: not installed (pip install codecarbon; a plain otel-flops install brings it)")
    assert not list(tmp_path.glob("*.csv")), "nothing written beside the report"


def test_run_with_a_broken_codecarbon(tmp_path):
    shadow = tmp_path / "shadow" / "codecarbon"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise RuntimeError('a broken install')\n")
    report, out, err = _run(Path(sys.executable), tmp_path, {"PYTHONPATH": str(shadow.parent)})
    assert "codecarbon importable: True" in out
    _assert_counted_without_energy(report, err, "CodeCarbon: cannot be imported (RuntimeError: a broken install)")
