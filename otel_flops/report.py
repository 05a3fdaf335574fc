"""The JSON report (schema ``otel-flops/report/v1``) and its terminal table, built from the Ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .analysis.peaks import gpu_name, seconds_at_peak
from .ledger import Ledger, Totals, grouped

SCHEMA = "otel-flops/report/v1"
PHASE_ORDER = ("preprocessing", "forward", "loss", "backward", "optimizer", "inference")


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


def mfu_section(ledger: Ledger, seconds: float, override: float | None) -> dict[str, Any]:
    """Achieved GPU FLOP/s over the session and its share of the dense peak (otel_flops.analysis.peaks)."""
    name = gpu_name()
    at_peak = seconds_at_peak(ledger.items(), name, override) if name else None
    if at_peak is None or seconds <= 0:
        reason = "no GPU in use" if not name else f"no peak known for {name}; set OTEL_FLOPS_PEAK_FLOPS"
        return {"available": False, "reason": reason}
    gpu_flops = sum(t.flops for k, t in ledger.items() if k.device.startswith("cuda"))
    return {"available": True, "device": name, "seconds": seconds,
            "achieved_flops_per_s": gpu_flops / seconds, "mfu": at_peak / seconds}


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
        "comm_bytes": {op: t.comm_bytes for (op,), t in by_op.items() if t.comm_bytes},
        "errors": dict(ledger.errors.most_common()),
        "steps": ledger.steps,
    }
    report.update(energy_sections(energy, total))
    report.update(extra or {})
    return report


def _phase_order(item: tuple[tuple, Totals]) -> tuple[int, str]:
    name = item[0][0]
    return (PHASE_ORDER.index(name) if name in PHASE_ORDER else len(PHASE_ORDER), name)


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


def table(report: dict) -> str:
    """The phase breakdown, dtype mix and top ops, for a terminal."""
    total = report["totals"]
    lines = [f"otel-flops report ({report['mode']} mode, {report['steps']} optimizer steps)"]
    header = f"{'phase':<15}{'FLOPs':>14}{'BOPs':>14}{'share':>9}"
    lines += [header, "-" * len(header)]
    for name, counts in report["phases"].items():
        share = counts["flops"] / total["flops"] if total["flops"] else 0.0
        lines.append(f"{name:<15}{human(counts['flops']):>14}{human(counts['bops']):>14}{share:>9.1%}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<15}{human(total['flops']):>14}{human(total['bops']):>14}")
    lines.append("dtypes: " + ", ".join(f"{d} {human(c['flops'])}FLOP" for d, c in report["by_dtype"].items()))
    top = list(report["by_op"].items())[:5]
    lines.append("top ops: " + ", ".join(f"{op} {human(c['flops'])}FLOP" for op, c in top))
    energy = report.get("energy", {})
    if energy.get("available"):
        eff = report["efficiency"]
        lines.append(
            f"energy: {energy['joules']:.1f} J ({energy['source']}), {energy['emissions_g']:.3g} g CO2eq; "
            f"{human(eff['flops_per_joule'] or 0)}FLOP/J, {human(eff['bops_per_joule'] or 0)}BOP/J"
        )
    elif energy:
        lines.append(f"energy: unavailable ({energy['reason']})")
    if report["uncounted_ops"]:
        lines.append("uncounted ops (no FLOP rule): " + ", ".join(report["uncounted_ops"]))
    if report["errors"]:
        lines.append("counting errors (ops ran normally): " + ", ".join(report["errors"]))
    lines += [f"INCOMPLETE count: {reason}" for reason in report.get("incomplete", [])]
    return "\n".join(lines)
