"""A self-contained HTML page for a run: phases, dtype mix, top ops, energy, efficiency, a figure.

Everything is inline (the figure is a base64 PNG, the style a <style> block), so the file can
be mailed or attached to a CI run and opened anywhere, with no server and no network.
"""

from __future__ import annotations

import base64
import html
import io
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..report import display, human

CELL_WIDTH = 200  # a longer name is cut in the page (the JSON keeps it whole)
FIGURE_PHASES = 12  # the phases with the most FLOPs that the figure draws

STYLE = """
body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}img{max-width:100%}
"""


def esc(value: object) -> str:
    """Any string of a report as HTML text: escaped, lone surrogates replaced, at most CELL_WIDTH long."""
    return html.escape(display(value, CELL_WIDTH))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], table_id: str = "") -> str:
    ident = f' id="{esc(table_id)}"' if table_id else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{ident}><tr>{head}</tr>{body}</table>"


def png_tag(png: bytes, alt: str) -> str:
    return f'<img id="figure" alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{body}</body></html>\n")


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def phase_figure(report: dict) -> bytes:
    """FLOPs and BOPs per phase, side by side (BOPs on a log axis, as in the paper's Figure 2): the
    FIGURE_PHASES phases with the most FLOPs, their names made plain text for matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    phases = report["phases"]
    names = sorted(phases, key=lambda n: -phases[n].get("flops", 0))[:FIGURE_PHASES] or ["none"]
    flops = [phases.get(n, {}).get("flops", 0) for n in names]
    bops = [phases.get(n, {}).get("bops", 0) for n in names]
    labels: list[str] = []
    for n in names:  # bar() merges equal labels: two names cut to the same text get their position
        labels.append(_label(n) if _label(n) not in labels else f"{_label(n)} #{len(labels) + 1}")
    names = labels
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.bar(names, flops, color="#4c72b0")
    a.set_title("(a) FLOPs by phase")
    b.bar([n for n, v in zip(names, bops) if v], [v for v in bops if v], color="#dd8452")
    b.set_yscale("log")
    b.set_title("(b) BOPs by phase (log)")
    for ax in (a, b):
        ax.tick_params(axis="x", labelrotation=20)
    with warnings.catch_warnings():  # a glyph the font lacks (an emoji in a name) is drawn as a box
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.tight_layout()
        return save_png(fig)


def _label(name: str) -> str:
    """A short tick label that matplotlib draws as it is: no surrogates (its font code rejects them), and
    ``$`` escaped so it is not read as mathtext."""
    return display(name, 24).replace("$", r"\$")


def save_png(fig: Any) -> bytes:
    from matplotlib import pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def energy_section(report: dict) -> str:
    energy, eff = report.get("energy") or {}, report.get("efficiency") or {}
    if not energy.get("available"):
        reason = energy.get("reason", "not in this report")
        return f"<h2>Energy and efficiency</h2><p id='efficiency'>Energy unavailable: {esc(reason)}.</p>"
    rows = [
        ("energy", f"{energy['joules']:.3f} J", energy.get("source", "")),
        ("emissions", f"{energy.get('emissions_g') or 0:.4g} g CO2eq", ""),
        ("FLOP/J", human(eff.get("flops_per_joule") or 0, "FLOP/J"), ""),
        ("BOP/J", human(eff.get("bops_per_joule") or 0, "BOP/J"), ""),
    ]
    rows += [(f"energy: {k}", f"{v:.3f} J", "") for k, v in energy.get("by_component", {}).items()]
    return "<h2>Energy and efficiency</h2>" + table(("quantity", "value", "source"), rows, "efficiency")


def module_section(report: dict, top: int = 20) -> str:
    """The ``top`` (model:module, phase) entries of ``by_module`` by FLOPs."""
    by_module, whole = report.get("by_module") or {}, report["totals"]["flops"]
    entries = sorted(((c["flops"], c["bops"], phase, path) for phase, paths in by_module.items()
                      for path, c in paths.items() if c["flops"]), reverse=True)[:top]
    if not entries:
        return ""
    rows = [(path, phase, f"{flops:,}", f"{bops:,}", _share(flops, whole)) for flops, bops, phase, path in entries]
    return (f"<h2>By module (top {len(rows)})</h2>"
            + table(("model:module", "phase", "FLOPs", "BOPs", "share of FLOPs"), rows, "modules"))


def windows_section(report: dict) -> str:
    """One row per ``otel_flops.window`` name."""
    windows = report.get("windows") or {}
    if not windows:
        return ""
    rows = [(name, f"{w['flops']:,}", f"{w['bops']:,}", "-" if w["joules"] is None else f"{w['joules']:.3f}",
             f"{w['seconds']:.3f}", w["count"]) for name, w in windows.items()]
    return "<h2>Windows</h2>" + table(("window", "FLOPs", "BOPs", "joules", "seconds", "count"), rows, "windows")


def render(report: dict, title: str = "otel-flops report") -> str:
    """The HTML page for one JSON report (schema otel-flops/report/v1)."""
    total = report["totals"]
    phases = [(n, f"{c['flops']:,}", f"{c['bops']:,}", _share(c["flops"], total["flops"]))
              for n, c in report["phases"].items()]
    phases.append(("total", f"{total['flops']:,}", f"{total['bops']:,}", "100.0%" if total["flops"] else "-"))
    dtypes = [(d, f"{c['flops']:,}", f"{c['bops']:,}", _share(c["flops"], total["flops"]))
              for d, c in report["by_dtype"].items()]
    ops = [(op, f"{c['flops']:,}", f"{c['bops']:,}", c.get("calls", ""))
           for op, c in list(report["by_op"].items())[:10]]
    body = (
        f"<p>{esc(report.get('mode', '?'))} mode, {report.get('steps', 0)} optimizer steps, "
        f"total {human(total['flops'], 'FLOP')}, {human(total['bops'], 'BOP')}</p>"
        + png_tag(phase_figure(report), "FLOPs and BOPs by phase")
        + "<h2>Phases</h2>" + table(("phase", "FLOPs", "BOPs", "share of FLOPs"), phases, "phases")
        + "<h2>Dtype mix</h2>" + table(("dtype/bits", "FLOPs", "BOPs", "share of FLOPs"), dtypes, "dtypes")
        + "<h2>Top ops</h2>" + table(("op", "FLOPs", "BOPs", "calls"), ops, "ops")
        + module_section(report)
        + windows_section(report)
        + energy_section(report)
    )
    return page(title, body)


def write(report: dict, path: str | Path, title: str = "otel-flops report") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report, title), encoding="utf-8")
    return path
