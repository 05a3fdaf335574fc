"""``otel-flops bench paper``: the seed paper's sec. 4 evaluation (Table 2, Figure 2, sec. 4.1), measured.

Each workload runs in four formats: FP32; FP16 (torch.autocast on CUDA; on CPU the model and
inputs are cast to float16, because CPU autocast would leave most ops in float32); INT8 and
INT4 (``otel_flops.analysis.quant``: int8 or packed 4-bit weights dequantized in forward). Per format it
counts one forward+backward iteration (the paper's unit) and one full AdamW training step (for
the phase decomposition), in full mode so that every op is seen.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

import otel_flops

from ..progress import bar
from ..report import human
from . import html_report
from .quant import quantize_model
from .workloads import WORKLOADS, Workload

FORMATS = ("fp32", "fp16", "int8", "int4")
PHASES = ("forward", "backward", "loss", "optimizer")
# Batch sizes: ResNet-18 at 1 gives the paper's per-sample figure; the others are documented in
# docs/paper-reproduction.md (the paper does not state its batch sizes).
FULL_BATCH = {"mlp": 64, "resnet18": 1, "transformer": 4}
QUICK_BATCH = {"mlp": 64, "resnet18": 1, "transformer": 1}


def _prepare(workload: Workload, fmt: str, batch: int, device: torch.device) -> tuple[Any, Any, Any, Any]:
    torch.manual_seed(0)
    model = workload.build().to(device)
    x, y = workload.make_batch(batch, device)
    autocast: Any = contextlib.nullcontext()
    if fmt == "fp16" and device.type == "cuda":
        autocast = torch.autocast("cuda", dtype=torch.float16)
    elif fmt == "fp16":
        model = model.half()
        x = x.half() if x.is_floating_point() else x
    elif fmt in ("int8", "int4"):
        quantize_model(model, 8 if fmt == "int8" else 4)
    return model, x, y, autocast


def _summary(report: dict) -> dict[str, Any]:
    return {
        "totals": report["totals"],
        "phases": report["phases"],
        "by_dtype": report["by_dtype"],
        "by_op": dict(list(report["by_op"].items())[:10]),
        "uncounted_ops": report["uncounted_ops"],
    }


def _merged(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    out = {k: dict(v) for k, v in a.items()}
    for key, counts in b.items():
        slot = out.setdefault(key, {"flops": 0, "bops": 0})
        slot["flops"] += counts["flops"]
        slot["bops"] += counts["bops"]
    return out


def measure(name: str, fmt: str, batch: int, device: torch.device) -> dict[str, Any]:
    """Counts of one forward+backward iteration and of the training step it belongs to.

    The step is that iteration followed by ``AdamW.step()`` on its gradients, counted in a second
    session, so the forward and backward run once (on a 2-core CPU that halves the bench time).
    """
    workload = WORKLOADS[name]
    model, x, y, autocast = _prepare(workload, fmt, batch, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    with otel_flops.track(model, name=name, mode="full", energy=False) as t:
        with autocast:
            loss = workload.loss(model(x).float(), y)
        loss.backward()
    iteration = _summary(t.report())
    with otel_flops.track(model, name=name, mode="full", energy=False) as t:
        optimizer.step()
    update = _summary(t.report())
    step = {
        "totals": _merged({"all": iteration["totals"]}, {"all": update["totals"]})["all"],
        "phases": _merged(iteration["phases"], update["phases"]),
        "by_dtype": _merged(iteration["by_dtype"], update["by_dtype"]),
        "uncounted_ops": {**iteration["uncounted_ops"], **update["uncounted_ops"]},
    }
    return {"iteration": iteration, "step": step}


def run(device: torch.device, quick: bool, progress: bool = True) -> dict[str, Any]:
    """Measure every workload in every format; ``progress`` shows a bar on stderr when it is a terminal."""
    batches = QUICK_BATCH if quick else FULL_BATCH
    results: dict[str, dict[str, Any]] = {name: {} for name in WORKLOADS}
    for name, fmt in bar([(n, f) for n in WORKLOADS for f in FORMATS], "bench paper", progress, "run"):
        results[name][fmt] = measure(name, fmt, batches[name], device)
    return {
        "schema": "otel-flops/paper/v1",
        "device": str(device),
        "quick": quick,
        "fp16": "torch.autocast(float16)" if device.type == "cuda" else "model and inputs cast to float16",
        "batch": batches,
        "torch": torch.__version__,
        "results": results,
    }


def _forward_bops(entry: dict) -> int:
    return entry["iteration"]["phases"].get("forward", {}).get("bops", 0)


def table2(data: dict) -> list[list[str]]:
    """Rows in the layout of the paper's Table 2, plus the forward-only BOP reduction."""
    rows = []
    for name, by_fmt in data["results"].items():
        fp32, int4 = by_fmt["fp32"]["iteration"]["totals"], by_fmt["int4"]["iteration"]["totals"]
        f32, f4 = _forward_bops(by_fmt["fp32"]), _forward_bops(by_fmt["int4"])
        rows.append([
            f"{name} (batch {data['batch'][name]})",
            f"{fp32['flops'] / 1e9:.3f} GFLOPs", f"{int4['flops'] / 1e9:.3f} GFLOPs",
            f"{fp32['bops'] / 1e9:.1f} / {int4['bops'] / 1e9:.1f} G·bits",
            f"{int4['bops'] / fp32['bops'] - 1:+.1%}",
            f"{f32 / 1e9:.1f} / {f4 / 1e9:.1f} G·bits", f"{f4 / f32 - 1:+.1%}",
        ])
    return rows


TABLE2_HEADERS = ("workload", "FLOPs (FP32)", "FLOPs (INT4)", "BOPs FP32 / INT4", "BOP reduction",
                  "forward BOPs FP32 / INT4", "forward BOP reduction")
PHASE_HEADERS = ("workload", "format", *[f"{p} GFLOPs" for p in PHASES], *[f"{p} G·bits" for p in PHASES])


def phase_rows(data: dict) -> list[list[str]]:
    """Sec. 4.1: one full training step per workload and format, by phase."""
    rows = []
    for name, by_fmt in data["results"].items():
        for fmt, entry in by_fmt.items():
            phases = entry["step"]["phases"]
            rows.append([name, fmt,
                         *[f"{phases.get(p, {}).get('flops', 0) / 1e9:.4f}" for p in PHASES],
                         *[f"{phases.get(p, {}).get('bops', 0) / 1e9:.3f}" for p in PHASES]])
    return rows


def format_rows(data: dict) -> list[list[str]]:
    """Figure 2's data: forward+backward FLOPs and BOPs of every workload in every format."""
    rows = []
    for name, by_fmt in data["results"].items():
        for fmt, entry in by_fmt.items():
            totals = entry["iteration"]["totals"]
            rows.append([name, fmt, human(totals["flops"], "FLOP"), human(totals["bops"], "bit")])
    return rows


def text_table(headers: tuple[str, ...], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [list(headers), *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(h).rjust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def figure2(data: dict) -> bytes:
    """Panel (a): FLOPs per forward+backward iteration; panel (b): BOPs, log axis."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = list(data["results"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(FORMATS)
    for panel, (ax, key) in enumerate(zip(axes, ("flops", "bops"))):
        for i, fmt in enumerate(FORMATS):
            values = [data["results"][n][fmt]["iteration"]["totals"][key] for n in names]
            ax.bar([j + i * width for j in range(len(names))], values, width, label=fmt.upper())
        ax.set_xticks([j + width * (len(FORMATS) - 1) / 2 for j in range(len(names))], names)
        ax.set_title(f"({'ab'[panel]}) {'FLOPs' if key == 'flops' else 'BOPs (log)'} per iteration")
        if key == "bops":
            ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    return html_report.save_png(fig)


def html_page(data: dict, png: bytes) -> str:
    body = (
        f"<p>device {data['device']}, torch {data['torch']}, FP16 as {data['fp16']}, "
        f"{'quick' if data['quick'] else 'full'} run</p>"
        + html_report.png_tag(png, "Figure 2: FLOPs and BOPs by workload and format")
        + "<h2>Table 2 (forward+backward iteration)</h2>" + html_report.table(TABLE2_HEADERS, table2(data), "table2")
        + "<h2>All formats</h2>" + html_report.table(("workload", "format", "FLOPs", "BOPs"), format_rows(data))
        + "<h2>Phase decomposition (one training step, sec. 4.1)</h2>"
        + html_report.table(PHASE_HEADERS, phase_rows(data), "phases")
    )
    return html_report.page("otel-flops: seed paper reproduction", body)


def bench(device: str, quick: bool, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run, print the two tables, write paper.json, figure2.png and report.html under ``out``."""
    data = run(torch.device(device), quick, progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper.json").write_text(json.dumps(data, indent=2) + "\n")
    png = figure2(data)
    (out / "figure2.png").write_bytes(png)
    (out / "report.html").write_text(html_page(data, png))
    print("Table 2 (one forward+backward iteration)")
    print(text_table(TABLE2_HEADERS, table2(data)))
    print("\nPhase decomposition (sec. 4.1; one full AdamW training step)")
    print(text_table(PHASE_HEADERS, phase_rows(data)))
    print(f"\nwrote {out / 'paper.json'}, {out / 'figure2.png'}, {out / 'report.html'}")
    return data
