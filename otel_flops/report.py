"""The JSON report (schema ``otel-flops/report/v1``) and its terminal table, built from the Ledger."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .analysis.mfu import PeakTime
from .analysis.peaks import gpu_name
from .ledger import NO_MODULE, CountKey, Ledger, Totals, WindowTotals, grouped

SCHEMA = "otel-flops/report/v1"
PHASE_ORDER = ("preprocessing", "forward", "loss", "backward", "optimizer", "inference")
TABLE_ROWS = 20  # phases and windows shown in the terminal table; the JSON keeps every one
NAME_WIDTH = 40  # a longer name (phase, window, op, module) is cut to this in the table
_SURROGATE = re.compile("[\ud800-\udfff]")


def _counts(t: Totals) -> dict[str, int]:
    return {"flops": t.flops, "bops": t.bops}


def energy_sections(energy: Any, total: Totals) -> dict[str, Any]:
    """The report's ``energy`` and ``efficiency``: joules by component, FLOP/J and BOP/J."""
    if energy is None:
        return {"energy": {"available": False, "reason": "disabled (OTEL_FLOPS_ENERGY=off)"}, "efficiency": {}}
    reading = energy.reading()
    joules = reading.total_joules
    if energy.unavailable and not joules:
        return {"energy": {"available": False, "reason": energy.unavailable}, "efficiency": {}}
    by_component: dict[str, float] = {}
    for (hw_type, _device, _source), j in reading.joules.items():
        by_component[hw_type] = by_component.get(hw_type, 0.0) + j
    sources = sorted({source for (_h, _d, source) in reading.joules})
    return {
        "energy": {
            "available": True,
            "joules": joules,
            "by_component": by_component,
            "emissions_g": reading.emissions_g,
            "source": ", ".join(sources),
        },
        "efficiency": {
            "flops_per_joule": total.flops / joules if joules else None,
            "bops_per_joule": total.bops / joules if joules else None,
        },
    }


def mfu_section(peak_time: PeakTime, ledger: Ledger, seconds: float) -> dict[str, Any]:
    """Model FLOP utilisation over ``seconds`` (wall seconds of the session, the same span as
    otel_flops_run_finished - otel_flops_run_started): seconds at peak (otel_flops.analysis.mfu) over
    them, and the achieved FLOP/s of the work that has a peak. Equal to the PromQL
    ``otel_flops_peak_time_seconds_total / (otel_flops_run_finished - otel_flops_run_started)``."""
    at_peak = peak_time.measure(ledger.items())
    if at_peak is None or seconds <= 0:
        name = gpu_name()
        reason = (f"no peak in the table for {name}; set OTEL_FLOPS_PEAK_FLOPS to its dense peak FLOP/s" if name
                  else "no GPU work counted; OTEL_FLOPS_PEAK_FLOPS sets a peak of your own (the CPU's, say)")
        return {"available": False, "reason": reason}
    tf32 = peak_time.tf32
    return {"available": True, "device": at_peak.device, "seconds": seconds, "peak_seconds": at_peak.seconds,
            "peak_source": "OTEL_FLOPS_PEAK_FLOPS" if peak_time.override else "table",
            "tf32": sorted(tf32) if tf32 is not None else None,
            "achieved_flops_per_s": at_peak.flops / seconds, "mfu": at_peak.seconds / seconds}


def alpha_section(ledger: Ledger, profile: str, seconds: float) -> dict[str, Any]:
    """alpha-FLOPs and the time the profile predicts for convolutions and dense products, per step."""
    total = ledger.totals()
    steps = ledger.steps or 1
    return {
        "profile": profile,
        "alpha_flops": total.alpha_flops,
        "predicted_seconds": total.predicted_ns / 1e9,
        "predicted_step_seconds": total.predicted_ns / 1e9 / steps,
        "measured_step_seconds": seconds / steps,
    }


def build(
    ledger: Ledger,
    *,
    mode: str,
    environment: dict[str, Any],
    energy: Any = None,
    extra: dict[str, Any] | None = None,
    open_windows: Iterable[tuple[str, WindowTotals]] = (),
) -> dict:
    """A plain dict in the v1 schema; every count is an integer (joules are floats)."""
    items = ledger.items()
    total = ledger.totals()
    by_op = grouped(items, "op")
    report = {
        "schema": SCHEMA,
        "mode": mode,
        "environment": environment,
        "totals": _counts(total),
        "phases": {p: _counts(t) for (p,), t in sorted(grouped(items, "phase").items(), key=_phase_order)},
        "by_framework": {f: _counts(t) for (f,), t in grouped(items, "framework").items()},
        "by_model": {m: _counts(t) for (m,), t in grouped(items, "model").items()},
        "by_dtype": {f"{d}/{b}": _counts(t) for (d, b), t in grouped(items, "dtype", "bits").items()},
        "by_device": {d: _counts(t) for (d,), t in grouped(items, "device").items()},
        "by_family": {f: _counts(t) for (f,), t in grouped(items, "family").items()},
        "by_op": {
            op: {**_counts(t), "calls": t.calls}
            for (op,), t in sorted(by_op.items(), key=lambda kv: -kv[1].flops)
        },
        "uncounted_ops": dict(ledger.uncounted().most_common()),
        "by_module": by_module_section(items),
        "windows": windows_section(ledger, open_windows),
        "comm_bytes": {op: t.comm_bytes for (op,), t in by_op.items() if t.comm_bytes},
        "errors": dict(ledger.errors.most_common()),
        "steps": ledger.steps,
    }
    report.update(energy_sections(energy, total))
    report.update(extra or {})
    return report


def by_module_section(items: list[tuple[CountKey, Totals]]) -> dict[str, dict[str, dict[str, int]]]:
    """``{phase: {"model:path": {flops, bops}}}``, most FLOPs first: per phase the entries add up to
    the phase's total exactly. The model label leads the path so two models' submodules never merge
    ("Sequential:0", "Sequential#2:0"); "(none)" is work outside every model module, "Model:(root)"
    a model's own ops."""
    per_phase = grouped(items, "phase")
    by_path: dict[tuple[str, str], Totals] = {}
    for (phase, model, path), t in grouped(items, "phase", "model", "module").items():
        by_path.setdefault((phase, path if path == NO_MODULE else f"{model}:{path}"), Totals()).absorb(t)
    return {
        phase: {path: _counts(t) for (p, path), t in sorted(by_path.items(), key=lambda kv: -kv[1].flops) if p == phase}
        for (phase,), _ in sorted(per_phase.items(), key=_phase_order)
    }


def windows_section(ledger: Ledger, open_windows: Iterable[tuple[str, WindowTotals]] = ()) -> dict[str, dict[str, Any]]:
    """``{window name: {flops, bops, joules, joules_by_component, seconds, count, open}}`` (otel_flops.window);
    joules is None where no energy source measured the window. Occurrences still open when the report is
    built add up, with their work so far, under ``"NAME (open)"`` with ``open: true``: the closed totals are
    the metrics' and stay apart."""
    still_open: dict[str, WindowTotals] = {}
    for name, totals in open_windows:
        still_open.setdefault(f"{name} (open)", WindowTotals()).absorb(totals)
    out = {}
    for (name, w), is_open in [*((kv, False) for kv in ledger.windows().items()),
                               *((kv, True) for kv in still_open.items())]:
        by_component: dict[str, float] = {}
        for (hw_type, _device, _source), j in w.joules.items():
            by_component[hw_type] = by_component.get(hw_type, 0.0) + j
        out[name] = {"flops": w.flops, "bops": w.bops, "joules": w.total_joules,
                     "joules_by_component": by_component, "energy_source": ", ".join(sorted({k[2] for k in w.joules})),
                     "seconds": w.seconds, "count": w.count, "open": is_open}
    return out


def _phase_order(item: tuple[tuple, Totals]) -> tuple[int, str]:
    name = item[0][0]
    return (PHASE_ORDER.index(name) if name in PHASE_ORDER else len(PHASE_ORDER), name)


def display(name: object, width: int | None = None) -> str:
    """``name`` safe to print or render: lone surrogates (from undecodable bytes) become U+FFFD, control
    characters their escapes (a newline cannot break a table row), and at most ``width`` characters."""
    text = _SURROGATE.sub("\ufffd", str(name))
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return text if width is None or len(text) <= width else text[: width - 1] + "\u2026"


def write(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {suffix}{unit}"
    return f"{n:.3g} {unit}".rstrip()


def module_lines(by_module: dict[str, dict[str, dict[str, int]]], total_flops: int, top: int = 8) -> list[str]:
    """The ``top`` (phase, module) entries by FLOPs, as terminal table lines."""
    entries = sorted(((c["flops"], c["bops"], phase, path) for phase, paths in by_module.items()
                      for path, c in paths.items() if c["flops"]), reverse=True)[:top]
    if not entries:
        return []
    header = f"{'model:module (top ' + str(len(entries)) + ')':<48}{'phase':<12}{'FLOPs':>12}{'BOPs':>12}{'share':>8}"
    lines = [header, "-" * len(header)]
    for flops, bops, phase, path in entries:
        share = flops / total_flops if total_flops else 0.0
        shown = display(path)
        shown = shown if len(shown) <= 47 else "\u2026" + shown[-46:]  # a long one keeps its path's tail
        lines.append(f"{shown:<48}{display(phase, 11):<12}{human(flops):>12}{human(bops):>12}{share:>8.1%}")
    return lines


def _top(entries: dict[str, dict], what: str) -> tuple[list[tuple[str, dict]], list[str]]:
    """The first ``TABLE_ROWS`` entries (``entries`` as the report orders them) when they fit, else the
    most FLOPs; and the line counting the rest, which only the JSON lists."""
    items = list(entries.items())
    if len(items) <= TABLE_ROWS:
        return items, []
    shown = sorted(items, key=lambda kv: -kv[1]["flops"])[:TABLE_ROWS]
    return shown, [f"... {len(items) - TABLE_ROWS} more {what} (fewer FLOPs; all are in the JSON report)"]


def _heading(report: dict) -> str:
    """The table's first line; the rank (``rank`` of a distributed run) tells one rank's table from another's."""
    rank = report.get("rank") or {}
    where = f"rank {rank['rank']} of {rank.get('world_size', '?')}, " if "rank" in rank else ""
    return f"otel-flops report ({where}{report['mode']} mode, {report['steps']} optimizer steps)"


def table(report: dict) -> str:
    """The phase breakdown, dtype mix and top ops, for a terminal."""
    total = report["totals"]
    lines = [_heading(report)]
    header = f"{'phase':<24}{'FLOPs':>14}{'BOPs':>14}{'share':>9}"
    lines += [header, "-" * len(header)]
    phases, more = _top(report["phases"], "phases")
    for name, counts in phases:
        share = counts["flops"] / total["flops"] if total["flops"] else 0.0
        lines.append(f"{display(name, 23):<24}{human(counts['flops']):>14}{human(counts['bops']):>14}{share:>9.1%}")
    lines += more
    lines.append("-" * len(header))
    lines.append(f"{'total':<24}{human(total['flops']):>14}{human(total['bops']):>14}")
    lines.append("dtypes: " + ", ".join(f"{display(d, NAME_WIDTH)} {human(c['flops'], 'FLOP')}"
                                        for d, c in report["by_dtype"].items()))
    top = list(report["by_op"].items())[:5]
    lines.append("top ops: " + ", ".join(f"{display(op, NAME_WIDTH)} {human(c['flops'], 'FLOP')}" for op, c in top))
    lines += module_lines(report.get("by_module", {}), total["flops"])
    windows, more = _top(report.get("windows", {}), "windows")
    for name, w in windows:
        joules = "energy unmeasured" if w["joules"] is None else f"{w['joules']:.3g} J"
        state = " (not stopped: its work until this report)" if w.get("open") else ""
        lines.append(f"window {display(name, NAME_WIDTH)}: {human(w['flops'], 'FLOP')}, "
                     f"{human(w['bops'], 'BOP')}, {joules}, {w['seconds']:.3g} s, {w['count']}x{state}")
    lines += more
    energy = report.get("energy", {})
    if energy.get("available"):
        eff = report["efficiency"]
        lines.append(
            f"energy: {energy['joules']:.1f} J ({energy['source']}), {energy['emissions_g']:.3g} g CO2eq; "
            f"{human(eff['flops_per_joule'] or 0, 'FLOP/J')}, {human(eff['bops_per_joule'] or 0, 'BOP/J')}"
        )
    elif energy:
        lines.append(f"energy: unavailable ({energy['reason']})")
    if report["uncounted_ops"]:
        uncounted = ", ".join(display(op, NAME_WIDTH) for op in report["uncounted_ops"])
        lines.append(f"uncounted ops (no FLOP rule): {uncounted}")
    if report["errors"]:
        lines.append("counting errors (ops ran normally): " + ", ".join(display(e) for e in report["errors"]))
    lines += [f"INCOMPLETE count: {display(reason)}" for reason in report.get("incomplete", [])]
    return "\n".join(lines)
