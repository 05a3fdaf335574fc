"""The ``otel-flops`` command: ``run``, ``demo``, ``stack``, ``calibrate``, ``bench``, ``compare``, ``report``.

Importing this module (and ``--help``) loads no torch: commands import what they need when they run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .. import __version__, signals
from .. import report as report_mod
from ..analysis.compare import CompareError
from ..settings import MODES, Settings, SettingsError, is_host, load_or_tell, told
from .extras import MissingExtra, require
from .stack import DEPLOY, StackError

BOOTSTRAP = Path(__file__).parent / "bootstrap"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-flops", description="FLOPs and BOPs as OpenTelemetry metrics.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train the seed paper's three workloads, serving /metrics")
    _exporter_flags(demo)
    demo.add_argument("--steps", type=_positive, default=3, help="training steps per workload (default 3)")
    demo.add_argument("--linger", type=_non_negative, default=0, metavar="N",
                      help="keep /metrics up N seconds after training")
    demo.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _progress_flag(demo)

    calibrate = sub.add_parser("calibrate", help="fit alpha-FLOPs (time per FLOP of convolutions) for this device")
    calibrate.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                           help="default: cuda where there is a GPU, else cpu")
    calibrate.add_argument("--quick", action="store_true", help="a small grid that finishes in under 2 minutes on CPU")
    calibrate.add_argument("--out", default="alpha-profile.json", help="profile JSON (default alpha-profile.json)")
    calibrate.add_argument("--plot", help="PNG of measured against predicted time, experiments A and B")
    _progress_flag(calibrate)

    stack = sub.add_parser("stack", help="run Prometheus and Alertmanager on loopback with the shipped configs")
    stack.add_argument("--targets", nargs="+", type=_host_port, default=["127.0.0.1:9464"], metavar="HOST:PORT",
                       help="exporters to scrape (default 127.0.0.1:9464)")
    stack.add_argument("--prometheus-port", type=_port, default=9090)
    stack.add_argument("--alertmanager-port", type=_port, default=9093)
    stack.add_argument("--deploy", default=str(DEPLOY), metavar="DIR",
                       help="the deploy/ folder (default: the one shipped with otel-flops, %(default)s)")

    run = sub.add_parser("run", help="run a script with torch counted, no code change",
                         usage="otel-flops run [--report FILE] [--port N] [--host H] [--mode M] "
                               "-- python script.py ARGS")
    _exporter_flags(run)
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    _analysis_parsers(sub)
    _own_usage(sub)
    return parser


def _own_usage(sub: argparse._SubParsersAction) -> None:
    """Each command records its parser (``args.command_parser``, the innermost one wins), so that a usage
    error after parsing (an unknown flag, ``run`` with no command) shows that command's usage."""
    for command_parser in sub.choices.values():
        command_parser.set_defaults(command_parser=command_parser)


def _analysis_parsers(sub: argparse._SubParsersAction) -> None:
    """``bench paper``, ``compare`` and ``report``: they read or write reports, nothing served."""
    from ..analysis import compare

    bench = sub.add_parser("bench", help="reproduce a published evaluation")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    paper = bench_sub.add_parser("paper", help="the seed paper's Table 2, Figure 2 and phase decomposition")
    paper.set_defaults(command_parser=paper)
    paper.add_argument("--quick", action="store_true", help="small batches, for CI (about 10 s on 2 idle CPU cores)")
    paper.add_argument("--device", type=_torch_device, default="cpu", help="torch device (default cpu)")
    paper.add_argument("--out", default="paper-run", metavar="DIR", help="output folder (default paper-run)")
    _progress_flag(paper)

    cmp = sub.add_parser("compare", help="rank runs by FLOPs, BOPs, energy, FLOP/J, emissions and GreenScore")
    cmp.add_argument("runs", nargs="+", metavar="RUN.json")
    cmp.add_argument("--accuracy", action="append", default=[], metavar="RUN=ACC",
                     help="accuracy of a run (file stem), 0-1; repeat per run; GreenScore needs it")
    cmp.add_argument("--alpha", type=_non_negative_float, default=compare.DEFAULT_ALPHA,
                     help=f"GreenScore FLOPs exponent (default {compare.DEFAULT_ALPHA})")
    cmp.add_argument("--beta", type=_non_negative_float, default=compare.DEFAULT_BETA,
                     help=f"GreenScore CO2 exponent (default {compare.DEFAULT_BETA})")
    cmp.add_argument("--pj-per-flop", type=_positive_float, default=compare.DEFAULT_PJ_PER_FLOP,
                     help=f"estimate: energy per FLOP in pJ (default {compare.DEFAULT_PJ_PER_FLOP:g})")
    cmp.add_argument("--pue", type=_positive_float, default=compare.DEFAULT_PUE,
                     help=f"estimate: power usage effectiveness (default {compare.DEFAULT_PUE:g})")
    cmp.add_argument("--grid-intensity", type=_positive_float, default=compare.DEFAULT_GRID_G_PER_KWH,
                     metavar="G_PER_KWH", help=f"grid carbon intensity (default {compare.DEFAULT_GRID_G_PER_KWH:g})")

    rep = sub.add_parser("report", help="print a JSON report's table, or write it as a self-contained HTML page")
    rep.add_argument("run", metavar="RUN.json")
    rep.add_argument("--html", metavar="OUT.html", help="write the HTML report here")


def _float_arg(text: str, strict: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0 or (strict and value == 0) or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be {'> 0' if strict else '>= 0'}, got {text}")
    return value


def _positive_float(text: str) -> float:
    return _float_arg(text, strict=True)


def _non_negative_float(text: str) -> float:
    return _float_arg(text, strict=False)


def _torch_device(text: str) -> str:
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("CUDA is not available on this machine")
    return text


def _analysis(args: argparse.Namespace) -> int:
    try:
        return _analyse(args)
    except OSError as exc:
        print(f"otel-flops: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2


def _analyse(args: argparse.Namespace) -> int:
    from ..analysis import compare

    if args.command == "bench":
        require("analysis", "otel-flops bench")
        from ..analysis import paper

        paper.bench(args.device, args.quick, args.out, progress=args.progress)
        return 0
    if args.command == "compare":
        estimate = compare.Estimate(args.pj_per_flop, args.pue, args.grid_intensity)
        print(compare.compare(args.runs, args.accuracy, args.alpha, args.beta, estimate))
        return 0
    report = compare.read_report(args.run)
    if args.html:
        require("analysis", "otel-flops report --html")
        from ..analysis import html_report

        print(f"wrote {html_report.write(report, args.html, title=f'otel-flops report: {Path(args.run).name}')}")
    else:
        print(report_mod.table(report))
    return 0


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _calibrate(args: argparse.Namespace) -> int:
    require("analysis", "otel-flops calibrate")
    from ..analysis import alpha

    device = args.device if args.device != "auto" else ("cuda" if _has_cuda() else "cpu")
    profile, document, points = alpha.calibrate(device, args.quick, progress=args.progress)
    out = Path(args.out)
    alpha.save(document, out)
    plot = Path(args.plot) if args.plot else out.with_name(out.stem + "-AB.png")
    alpha.plot(points, plot)
    fits = document["fits"]
    print(f"alpha-FLOPs profile for {profile.key}")
    for name, fit in fits.items():
        print(f"  {name}: beta {fit['beta']:.5g}, gamma {fit['gamma']:.5g}, final {fit['final']:.5g} ms/MFLOP")
    print(alpha.rmse_table(document))
    print(f"profile written to {out}, plot to {plot}")
    return 0


def _progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (there is none either when stderr is not a terminal)")


def _exporter_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", metavar="FILE", help="write the JSON report here")
    p.add_argument("--port", type=_port, help="Prometheus port (default $OTEL_EXPORTER_PROMETHEUS_PORT or 9464)")
    p.add_argument("--host", help="Prometheus bind address (default localhost)")
    p.add_argument("--mode", help=f"counting mode, {' or '.join(MODES)} (default $OTEL_FLOPS_MODE or {Settings.mode})")


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


def _host_port(text: str) -> str:
    """A scrape target, HOST:PORT (an IPv6 host in brackets), as Prometheus takes it."""
    host, colon, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not (colon and port.isdigit() and 0 < int(port) <= 65535 and is_host(host)):
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT with a port 1-65535 (e.g. 127.0.0.1:9464)")
    return text


def _port(text: str) -> int:
    value = _int_arg(text, 0, "port")
    if value > 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The script's exit code; when a signal kills the script, this process ends by the same one."""
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("run needs a command after --, e.g. otel-flops run -- python train.py")
    if cmd[0] in ("python", "python3"):
        cmd = [sys.executable, *cmd[1:]]
    settings = load_or_tell()
    if settings is None:  # the program runs as if otel-flops were not there
        return signals.exit_status(_launch(cmd, dict(os.environ)))
    settings = settings.with_overrides(port=args.port, host=args.host, mode=args.mode)  # a bad flag: exit 2
    report = args.report or settings.report  # --report, else OTEL_FLOPS_REPORT
    destination = Path(report).resolve() if report else None
    reason = destination and _unwritable(destination)
    if reason:
        print(f"otel-flops: cannot write the report to {destination} ({reason}); the script runs and the table "
              "is printed, but no report file is kept", file=sys.stderr)
        destination = None
    with tempfile.TemporaryDirectory(prefix="otel-flops-", ignore_cleanup_errors=True) as scratch:
        report_path = Path(scratch) / "report.json"  # the script writes here; copied to --report after
        env = dict(os.environ)
        env.pop("OTEL_FLOPS_OWNER", None)
        env.update(
            OTEL_FLOPS_AUTOSTART="1",
            OTEL_FLOPS_REPORT=str(report_path),
            OTEL_FLOPS_MODE=settings.mode,
            OTEL_EXPORTER_PROMETHEUS_HOST=settings.host,
            OTEL_EXPORTER_PROMETHEUS_PORT=str(settings.port),
            OTEL_FLOPS_TOLD=told(),
            PYTHONPATH=os.pathsep.join(filter(None, [str(BOOTSTRAP), env.get("PYTHONPATH")])),
        )
        code = _launch(cmd, env, then=lambda code: _deliver(report_path, destination, code))
    return signals.exit_status(code)


def _launch(cmd: list[str], env: dict[str, str], then: Callable[[int], None] = lambda code: None) -> int:
    """Run ``cmd``, then ``then`` with its return code: that code (negative: killed by that signal), or
    126 or 127, as a shell gives, when it cannot be started (then ``then`` is not called)."""
    try:
        code = signals.run(cmd, env)
    except OSError as exc:
        print(f"otel-flops: cannot run {cmd[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    then(code)
    return code


def _no_report(code: int) -> str:
    """Why the program wrote no report, from its return code: a report is written at any normal exit
    (and on SIGTERM/SIGHUP), so a signal or a nonzero status without one means it was cut short."""
    if code < 0:
        try:
            name = f", {signal.Signals(-code).name}"
        except ValueError:
            name = ""
        return f"the program ended before writing its report (killed by signal {-code}{name})"
    if code > 0:
        return (f"the program ended before writing its report (exited with status {code} without running its "
                "exit handlers, as os._exit does), or it never started counting")
    return "the program wrote no report (it did not start torch counting)"


def _unwritable(path: Path) -> str | None:
    """Why a report cannot be written to ``path``, or None; checked before the script starts
    (the write itself can still fail, e.g. on a full disk, and says so then)."""
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666))
    except (FileExistsError, NotADirectoryError):
        return "a parent of it is not a directory"
    except OSError as exc:
        return exc.strerror or str(exc)
    if not existed:  # another rank's probe of the same path may have removed it already
        path.unlink(missing_ok=True)
    return None


def _deliver(written: Path, destination: Path | None, code: int) -> None:
    """Print each report the script wrote (one per rank, and one of the process that started
    them, if it counted) and copy it to ``destination``; ``code`` (the script's) says why there is none."""
    per_rank = sorted(written.parent.glob(f"{written.stem}.rank*.json")) + sorted(
        written.parent.glob(f"{written.stem}.local*.json"))
    reports = [written, *per_rank] if written.exists() else per_rank
    if not reports:
        print(f"otel-flops: {_no_report(code)}", file=sys.stderr)
    for path in reports:
        text = path.read_text()
        try:
            print(report_mod.table(json.loads(text)), file=sys.stderr)
        except (ValueError, KeyError) as exc:
            print(f"otel-flops: the report {path.name} is incomplete ({exc})", file=sys.stderr)
        if destination is None:
            continue
        target = destination.with_name(destination.stem + path.stem[len(written.stem):] + destination.suffix)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        except OSError as exc:
            print(f"otel-flops: cannot write the report to {target} ({exc.strerror or exc}); the table above is "
                  "all that is kept", file=sys.stderr)


def _stack(args: argparse.Namespace) -> int:
    from . import stack

    return stack.run(args)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


# Each command's handler; `run` also needs its parser for its usage errors.
COMMANDS = {
    "run": _run,
    "calibrate": lambda args, parser: _calibrate(args),
    "stack": lambda args, parser: _stack(args),
    "bench": lambda args, parser: _analysis(args),
    "compare": lambda args, parser: _analysis(args),
    "report": lambda args, parser: _analysis(args),
    "demo": lambda args, parser: _demo(args),
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse's own check would show the top-level usage, not the command's
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return COMMANDS[args.command](args, args.command_parser)
    except (SettingsError, CompareError, StackError, MissingExtra) as exc:
        print(f"otel-flops: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
