"""The hostile corpus (tests/hostile/): programs people really write, each run bare, under
``otel-flops run --mode steady`` and under ``--mode full``, in real subprocesses (issue 14).

Per program: the exit status and stdout equal bare's (stdout ends with a sha256 of the results,
so they are bitwise equal); the instrumented runs' stderr has the same tracebacks as bare's (none
of otel-flops' own); steady mode's FLOPs and BOPs per phase equal full mode's, or its report says
the count is incomplete, with a reason, and the run said so on stderr. A few programs also have
exact numbers of their own to meet (``EXPECTED``).

The runs of every selected program start together in a pool (one worker per core) at the first
test. Measured: about 14 CPU-s per program (3 bare, 5-6 per instrumented run, most of it importing
torch), so the corpus takes its CPU time divided by the cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

HOSTILE = Path(__file__).parent / "hostile"
SCRIPTS = sorted(p.name for p in HOSTILE.glob("*.py") if p.name != "digest.py")
MODES = ("bare", "steady", "full")
TIMEOUT_S = 240
TRACEBACK = "Traceback (most recent call last):"
TORCH_MODULE_CALL = str(Path("torch", "nn", "modules", "module.py"))


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    report: dict | None


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_FLOPS_ENERGY="off", OTEL_METRICS_EXPORTER="none", OMP_NUM_THREADS="1")
    return env


def _run(script: str, mode: str, tmp: Path) -> Run:
    """One program in one mode, in a directory of its own (so stray files land there)."""
    cwd = tmp / f"{Path(script).stem}-{mode}"
    cwd.mkdir()
    report = cwd / "report.json"
    cmd = [sys.executable, str(HOSTILE / script)]
    if mode != "bare":
        cmd = [sys.executable, "-m", "otel_flops", "run", "--mode", mode, "--report", str(report), "--", *cmd]
    try:
        done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        return Run(-999, exc.stdout or "", f"timed out after {TIMEOUT_S} s", None)
    loaded = json.loads(report.read_text()) if report.exists() else None
    return Run(done.returncode, done.stdout, done.stderr, loaded)


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory) -> Iterator[dict[tuple[str, str], Future]]:
    """Start every selected program's three runs at once; each test waits for its own."""
    wanted = [item.callspec.params["script"] for item in request.session.items
              if item.module is sys.modules[__name__] and hasattr(item, "callspec")]
    tmp = tmp_path_factory.mktemp("hostile")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {(s, m): pool.submit(_run, s, m, tmp) for s in wanted for m in MODES}
        yield futures
        for future in futures.values():
            future.cancel()


def tracebacks(stderr: str) -> list[tuple[str, ...]]:
    """The tracebacks in a stderr, each as its frames' locations and its exception line.

    Frames in torch's ``nn/modules/module.py`` are left out: with any module hook installed torch
    calls forward through a slower path of its own that adds two frames there.
    """
    found, current = [], None
    for line in stderr.splitlines():
        if line == TRACEBACK:
            current = []
        elif current is not None and line.startswith('  File "'):
            if not line.split('"')[1].endswith(TORCH_MODULE_CALL):
                current.append(line)
        elif current is not None and not line.startswith(" "):
            found.append((*current, line))
            current = None
    return found


def same_exit(bare: int, code: int) -> bool:
    """A program killed by signal N bare may end killed by N, or with 128+N, instrumented."""
    return code == bare or (bare < 0 and code == 128 - bare)


def incomplete_reason(report: dict) -> str | None:
    """The steady report's reasons why its count is incomplete (its ``incomplete`` list), or None."""
    reasons = report.get("incomplete")
    return "; ".join(map(str, reasons)) if reasons else None


def phase_differences(steady: dict, full: dict) -> list[str]:
    """'phase: steady N != full M FLOPs' for each phase and unit that differ."""
    out = []
    for phase in sorted(set(steady["phases"]) | set(full["phases"])):
        for unit in ("flops", "bops"):
            s = steady["phases"].get(phase, {}).get(unit, 0)
            f = full["phases"].get(phase, {}).get(unit, 0)
            if s != f:
                out.append(f"{phase}: steady {s:,} != full {f:,} {unit.upper()[:-1]}s")
    return out


def _eval_metrics_is_the_matmul(report: dict, out: str) -> list[str]:
    """The final 256x256 matmul, alone in its explicit phase: 2 x 256^3 FLOPs."""
    got = report["phases"].get("eval-metrics", {}).get("flops", 0)
    return [] if got == 2 * 256**3 else [f"phase eval-metrics has {got:,} FLOPs, want {2 * 256**3:,}"]


def _no_inference(report: dict, out: str) -> list[str]:
    """A checkpointed forward (recomputed in backward) is training work, never inference."""
    return [f"inference phase {report['phases']['inference']}"] if "inference" in report["phases"] else []


def _matmuls_as_flop_counter_mode(report: dict, out: str) -> list[str]:
    """Under the user's FlopCounterMode our mm + addmm FLOPs equal its total (it counts only those here)."""
    ours = sum(report["by_op"].get(op, {}).get("flops", 0) for op in ("aten.mm", "aten.addmm"))
    theirs = out.splitlines()[0]
    return [] if theirs == f"torch FlopCounterMode total {ours}" else [f"mm+addmm {ours:,} FLOPs, {theirs}"]


# How the programs that do not end normally end bare (a negative code: killed by that signal).
BARE_EXIT = {
    "sys_exit_midway.py": 3,
    "uncaught_exception.py": 1,
    "keyboard_interrupt.py": -signal.SIGINT,
    "sigterm_default.py": -signal.SIGTERM,
}

# Numbers of a program's own, checked on the full-mode report (steady must equal it, or say why not).
EXPECTED: dict[str, Callable[[dict, str], list[str]]] = {
    "eval_after_last_step.py": _eval_metrics_is_the_matmul,
    "checkpoint_reentrant.py": _no_inference,
    "checkpoint_nonreentrant.py": _no_inference,
    "user_dispatch_modes.py": _matmuls_as_flop_counter_mode,
}


def problems(script: str, bare: Run, steady: Run, full: Run) -> list[str]:
    """Every way the instrumented runs differ from bare or from each other, one line each."""
    found = []
    bare_tracebacks = tracebacks(bare.err)
    for mode, run in (("steady", steady), ("full", full)):
        if not same_exit(bare.code, run.code):
            found.append(f"{mode}: exit {run.code}, bare {bare.code}: {run.err.strip().splitlines()[-1:]}")
        if run.out != bare.out:
            found.append(f"{mode}: stdout {run.out[-300:]!r} != bare {bare.out[-300:]!r}")
        extra = [t for t in tracebacks(run.err) if t not in bare_tracebacks]
        if extra:
            found.append(f"{mode}: a traceback bare has not: {' | '.join(extra[0])[-600:]}")
        if run.report is None:
            found.append(f"{mode}: no report written; stderr ends {run.err[-300:]!r}")
    if steady.report is None or full.report is None:
        return found
    reason = incomplete_reason(steady.report)
    if reason is None:
        found += [f"steady != full: {d}" for d in phase_differences(steady.report, full.report)]
    elif not any("incomplete" in line for line in steady.err.splitlines()):
        found.append(f"steady report says incomplete ({reason}) but the run printed no line saying so")
    if script in EXPECTED:
        found += [f"full: {p}" for p in EXPECTED[script](full.report, full.out)]
    if found:
        found.append(f"(steady stats {steady.report.get('steady')}, errors steady {steady.report['errors']} "
                     f"full {full.report['errors']})")
    return found


@pytest.mark.parametrize("script", SCRIPTS)
def test_hostile_program_runs_as_bare_and_steady_counts_as_full(script, runs):
    bare, steady, full = (runs[(script, mode)].result() for mode in MODES)
    assert bare.code == BARE_EXIT.get(script, 0), f"the program itself changed: {bare.err[-2000:]}"
    assert "digest " in bare.out
    found = problems(script, bare, steady, full)
    assert not found, "\n".join(found)


def test_corpus_is_large_enough():
    assert len(SCRIPTS) >= 30
