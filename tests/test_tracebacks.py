"""The program's own uncaught exceptions print as bare: no otel-flops frame in their tracebacks."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import threading, torch, otel_flops

class Interrupting(torch.nn.Module):
    def forward(self, x):
        raise KeyboardInterrupt  # raised inside the counting mode's frames, as a Ctrl-C can be

def bad():
    Interrupting()(torch.ones(1))

with otel_flops.track(mode="full", energy=False):
    thread = threading.Thread(target=bad)
    thread.start()
    thread.join()
    torch.ones(2).add(1)
    Interrupting()(torch.ones(1))
"""


def test_uncaught_exceptions_in_threads_and_main_show_no_frame_of_ours():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    frames = [line for line in run.stderr.splitlines() if line.startswith("  File")]
    assert run.returncode == -2 and run.stderr.count("KeyboardInterrupt") == 2, run.stderr  # ended by SIGINT
    assert frames and not [line for line in frames if "otel_flops" in line], run.stderr
