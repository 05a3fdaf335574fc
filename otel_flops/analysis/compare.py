"""``otel-flops compare``: rank runs by FLOPs, BOPs, energy, FLOP/J and emissions, and GreenScore.

GreenScore (survey 003, "GreenScore Benchmarking"):
    GS = accuracy x (FLOPs_max / FLOPs_run)^alpha x (CO2_max / CO2_run)^beta
with the maxima taken over the runs compared. Defaults alpha = beta = 0.5: compute and carbon
weigh the same, and the square root damps them, so a run 4x cheaper on both scores 4x (not 16x)
the accuracy-weighted score of the most expensive one.

A run whose report has no measured energy gets the FLOPs-to-CO2 estimate of the same survey:
joules = FLOPs x energy per FLOP x PUE, grams = kWh x grid intensity. Defaults: 85 pJ/FLOP (the
middle of the 75-95 pJ/FLOP it quotes for ML accelerators; a real GPU at full use does about
1 pJ/FLOP, so set it for your hardware), PUE 1.2, 475 g CO2eq/kWh (the IEA world average).
Measured runs keep their own joules and emissions; the table marks which is which. An estimate is no
measurement (85 pJ/FLOP can be 100x off a real device either way), so when the runs mix the two, energy,
FLOP/J, CO2eq and GreenScore are ranked and scored within each group (``[m1]``, ``[e1]``), never across.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..report import SCHEMA, human

DEFAULT_ALPHA = 0.5
DEFAULT_BETA = 0.5
DEFAULT_PJ_PER_FLOP = 85.0
DEFAULT_PUE = 1.2
DEFAULT_GRID_G_PER_KWH = 475.0
JOULES_PER_KWH = 3.6e6


class CompareError(ValueError):
    """A run file (or flag) that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Estimate:
    """The FLOPs-to-CO2 factors, each a command-line flag."""

    pj_per_flop: float = DEFAULT_PJ_PER_FLOP
    pue: float = DEFAULT_PUE
    grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH

    def joules(self, flops: int) -> float:
        return flops * self.pj_per_flop * 1e-12 * self.pue

    def grams(self, joules: float) -> float:
        return joules / JOULES_PER_KWH * self.grid_g_per_kwh


@dataclass
class Run:
    name: str
    flops: int
    bops: int
    joules: float
    grams: float
    measured: bool
    accuracy: float | None = None
    green_score: float | None = None

    @property
    def flops_per_joule(self) -> float:
        return self.flops / self.joules if self.joules else 0.0


def _count(report: dict, path: str, key: str) -> int:
    value = report.get("totals", {}).get(key) if isinstance(report.get("totals"), dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CompareError(f"{path}: totals.{key} is missing or not a non-negative integer")
    return value


def read_report(path: str) -> dict:
    """Read and check one JSON report; raises CompareError naming the file and what is wrong."""
    try:
        report = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CompareError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CompareError(f"{path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise CompareError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        found = report.get("schema") if isinstance(report, dict) else type(report).__name__
        raise CompareError(f"{path}: not an otel-flops report (schema {found!r}, expected {SCHEMA!r})")
    for key in ("flops", "bops"):
        _count(report, path, key)
    for key in ("phases", "by_dtype", "by_op"):
        if not isinstance(report.get(key), dict):
            raise CompareError(f"{path}: {key} is missing or not an object")
    return report


def load(path: str, estimate: Estimate) -> Run:
    """One run, with measured energy or the FLOPs-to-CO2 estimate."""
    report = read_report(path)
    flops, bops = report["totals"]["flops"], report["totals"]["bops"]
    if flops == 0:
        raise CompareError(f"{path}: counted 0 FLOPs, so it cannot be ranked")
    energy = report.get("energy") or {}
    joules = energy.get("joules") if energy.get("available") else None
    if isinstance(joules, (int, float)) and joules > 0:
        grams = energy.get("emissions_g")
        grams = grams if isinstance(grams, (int, float)) and grams > 0 else estimate.grams(joules)
        return Run(Path(path).stem, flops, bops, float(joules), float(grams), measured=True)
    joules = estimate.joules(flops)
    return Run(Path(path).stem, flops, bops, joules, estimate.grams(joules), measured=False)


def groups(runs: list[Run]) -> list[list[Run]]:
    """The runs with measured energy, then those with estimated energy (empty groups left out):
    energy figures compare only within a group."""
    return [g for g in ([r for r in runs if r.measured], [r for r in runs if not r.measured]) if g]


def score(runs: list[Run], alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA) -> None:
    """Fill in the GreenScore of every run that has an accuracy, against the maxima of its own group."""
    for group in groups(runs):
        flops_max = max(r.flops for r in group)
        grams_max = max(r.grams for r in group)
        for r in group:
            if r.accuracy is not None:
                r.green_score = r.accuracy * (flops_max / r.flops) ** alpha * (grams_max / r.grams) ** beta


def _ranks(runs: list[Run], key: Callable[[Run], float], reverse: bool = False) -> dict[str, int]:
    """Competition ranks (1, 1, 3): equal values share the better rank."""
    values = sorted((key(r) for r in runs), reverse=reverse)
    return {r.name: values.index(key(r)) + 1 for r in runs}


def _energy_ranks(runs: list[Run], key: Callable[[Run], float], reverse: bool = False) -> dict[str, str]:
    """Ranks within each energy group; prefixed ``m`` or ``e`` when both groups are present."""
    mixed = len(groups(runs)) > 1
    out = {}
    for group in groups(runs):
        prefix = ("m" if group[0].measured else "e") if mixed else ""
        out.update({name: f"{prefix}{rank}" for name, rank in _ranks(group, key, reverse).items()})
    return out


def table(runs: list[Run]) -> str:
    """Runs ordered by energy group (measured first), then GreenScore, then FLOPs; each metric carries its
    rank in brackets (energy-based ones within the run's group)."""
    ranks = {
        "flops": _ranks(runs, lambda r: r.flops),
        "bops": _ranks(runs, lambda r: r.bops),
        "joules": _energy_ranks(runs, lambda r: r.joules),
        "fpj": _energy_ranks(runs, lambda r: r.flops_per_joule, reverse=True),
        "grams": _energy_ranks(runs, lambda r: r.grams),
    }
    ordered = sorted(runs, key=lambda r: (not r.measured, -(r.green_score if r.green_score is not None else -1.0),
                                          r.flops))
    headers = ("run", "FLOPs", "BOPs", "energy", "FLOP/J", "CO2eq", "accuracy", "GreenScore")
    rows = []
    for r in ordered:
        how = "measured" if r.measured else "estimated"
        rows.append((
            r.name,
            f"{human(r.flops)} [{ranks['flops'][r.name]}]",
            f"{human(r.bops)} [{ranks['bops'][r.name]}]",
            f"{r.joules:.4g} J {how} [{ranks['joules'][r.name]}]",
            f"{human(r.flops_per_joule)} [{ranks['fpj'][r.name]}]",
            f"{r.grams:.4g} g [{ranks['grams'][r.name]}]",
            "-" if r.accuracy is None else f"{r.accuracy:.4g}",
            "-" if r.green_score is None else f"{r.green_score:.4f}",
        ))
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.append("[n] = rank: 1 is fewest FLOPs, BOPs, joules and grams, and most FLOP/J")
    if len(groups(runs)) > 1:
        measured, estimated = ([r.name for r in g] for g in groups(runs))
        lines.append(f"energy is measured for {', '.join(measured)} and estimated for {', '.join(estimated)}: "
                     "energy, FLOP/J, CO2eq and GreenScore are ranked and scored within each group "
                     "([m1] among measured, [e1] among estimated), never across them")
    return "\n".join(lines)


def parse_accuracy(items: list[str], names: list[str]) -> dict[str, float]:
    """``RUN=0.91`` pairs, RUN being a run's file stem or path; raises CompareError when malformed."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            accuracy = float(value) if sep else None
        except ValueError:
            accuracy = None
        if accuracy is None or not 0.0 <= accuracy <= 1.0:
            raise CompareError(f"--accuracy {item!r}: use RUN=ACCURACY with an accuracy from 0 to 1")
        stem = Path(name).stem
        if stem not in names:
            raise CompareError(f"--accuracy {item!r}: no run named {stem!r} (runs: {', '.join(names)})")
        out[stem] = accuracy
    return out


def compare(paths: list[str], accuracy: list[str], alpha: float, beta: float, estimate: Estimate) -> str:
    """Load, score and tabulate; raises CompareError with a one-line message."""
    runs = [load(p, estimate) for p in paths]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise CompareError(f"runs need distinct file names to be told apart: {', '.join(names)}")
    for r in runs:
        r.accuracy = parse_accuracy(accuracy, names).get(r.name)
    score(runs, alpha, beta)
    estimated = [r.name for r in runs if not r.measured]
    note = ""
    if estimated:
        note = (f"\nestimated energy ({', '.join(estimated)}): FLOPs x {estimate.pj_per_flop:g} pJ/FLOP x PUE "
                f"{estimate.pue:g}; CO2eq at {estimate.grid_g_per_kwh:g} g/kWh")
    return table(runs) + f"\nGreenScore = accuracy x (FLOPs_max/FLOPs)^{alpha:g} x (CO2_max/CO2)^{beta:g}" + note
