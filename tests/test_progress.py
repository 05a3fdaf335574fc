"""Progress bars: drawn on stderr only when it is a terminal and not turned off; results stay on stdout."""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import subprocess
import sys
import termios

import pytest

from otel_flops.commands.cli import _parser

CODE = "from otel_flops.progress import bar\nfor _ in bar(range(3), 'counting', {enabled}, 'step'): pass\nprint('done')"


def _run(enabled: bool, tty: bool) -> tuple[str, str]:
    """stdout and stderr of a script that consumes a 3-step bar, stderr a pseudo-terminal or a pipe."""
    master, slave = os.openpty() if tty else (None, None)
    if tty:  # a new pty is 0 columns wide, where tqdm draws nothing; a terminal has a size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    done = subprocess.run([sys.executable, "-c", CODE.format(enabled=enabled)], stdout=subprocess.PIPE,
                          stderr=slave if tty else subprocess.PIPE, text=True, timeout=60)
    if not tty:
        return done.stdout, done.stderr
    os.close(slave)
    err = b""
    with contextlib.suppress(OSError):  # EIO once the child's end is closed and everything is read
        while chunk := os.read(master, 65536):
            err += chunk
    os.close(master)
    return done.stdout, err.decode()


def test_a_terminal_gets_the_bar_on_stderr():
    out, err = _run(enabled=True, tty=True)
    assert out == "done\n"
    assert "counting:   0%" in err and "0/3 [" in err and "step/s" in err


@pytest.mark.parametrize("enabled, tty", [(False, True), (True, False)])
def test_no_bar_with_the_flag_or_without_a_terminal(enabled, tty):
    assert _run(enabled, tty) == ("done\n", "")


@pytest.mark.parametrize("argv", [["calibrate"], ["bench", "paper"], ["demo"]])
def test_long_commands_take_no_progress(argv):
    assert _parser().parse_args(argv).progress is True
    assert _parser().parse_args([*argv, "--no-progress"]).progress is False
