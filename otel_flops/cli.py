"""The ``otel-flops`` command: ``demo`` and ``run``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import report as report_mod
from .settings import SettingsError, load

BOOTSTRAP = Path(__file__).parent / "bootstrap"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-flops", description="FLOPs and BOPs as OpenTelemetry metrics.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train the seed paper's three workloads, serving /metrics")
    _exporter_flags(demo)
    demo.add_argument("--steps", type=_positive, default=3, help="training steps per workload (default 3)")
    demo.add_argument("--linger", type=_non_negative, default=0, metavar="N",
                      help="keep /metrics up N seconds after training")
    demo.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")

    run = sub.add_parser("run", help="run a script with torch counted, no code change",
                         usage="otel-flops run [--report FILE] [--port N] [--mode M] -- python script.py ARGS")
    _exporter_flags(run)
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    return parser


def _exporter_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", metavar="FILE", help="write the JSON report here")
    p.add_argument("--port", type=_port, help="Prometheus port (default $OTEL_EXPORTER_PROMETHEUS_PORT or 9464)")
    p.add_argument("--host", help="Prometheus bind address (default localhost)")
    p.add_argument("--mode", help="counting mode (default $OTEL_FLOPS_MODE or full)")


def _int_arg(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {value}")
    return value


def _positive(text: str) -> int:
    return _int_arg(text, 1, "value")


def _non_negative(text: str) -> int:
    return _int_arg(text, 0, "value")


def _port(text: str) -> int:
    value = _int_arg(text, 0, "port")
    if value > 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("run needs a command after --, e.g. otel-flops run -- python train.py")
    settings = load().with_overrides(port=args.port, host=args.host, mode=args.mode)
    report_path = Path(args.report or tempfile.mkstemp(prefix="otel-flops-", suffix=".json")[1]).resolve()
    report_path.unlink(missing_ok=True)
    env = dict(os.environ)
    env.pop("OTEL_FLOPS_OWNER", None)
    env.update(
        OTEL_FLOPS_AUTOSTART="1",
        OTEL_FLOPS_REPORT=str(report_path),
        OTEL_FLOPS_MODE=settings.mode,
        OTEL_EXPORTER_PROMETHEUS_HOST=settings.host,
        OTEL_EXPORTER_PROMETHEUS_PORT=str(settings.port),
        PYTHONPATH=os.pathsep.join(filter(None, [str(BOOTSTRAP), env.get("PYTHONPATH")])),
    )
    if cmd[0] in ("python", "python3"):
        cmd = [sys.executable, *cmd[1:]]
    try:
        code = subprocess.call(cmd, env=env)
    except FileNotFoundError:
        print(f"otel-flops: command not found: {cmd[0]}", file=sys.stderr)
        return 127
    ranks = sorted(report_path.parent.glob(f"{report_path.stem}.rank*.json"))
    reports = [report_path] if report_path.exists() else ranks
    for path in reports:
        print(report_mod.table(json.loads(path.read_text())), file=sys.stderr)
        if args.report is None:
            path.unlink()
    if not reports:
        print("otel-flops: the program wrote no report (it did not start torch counting)", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "run":
            return _run(args, parser)
        from .demo import run_demo

        return run_demo(args)
    except SettingsError as exc:
        print(f"otel-flops: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
