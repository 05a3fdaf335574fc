"""alpha-FLOPs: what a FLOP of a convolution costs on this device, fitted from timings.

Seed 004 proposes alpha_K(S) = ((S_K + beta_K (S - S_K)) / S) ** gamma_K, with S = W x H, as
the share of a convolution's FLOPs that the device's parallelism leaves "perceived"; seed 002
replicates it with scipy's curve_fit, an extra scale final_K, bounds [0, 2], initial values
0.01 / 0.8 / 0.3, and separate fits for K = 1 and K > 1. Predicted time is
final_K x alpha_K(S) x FLOPs, in milliseconds per MFLOP.

S_K, the smallest spatial size at which a K x K kernel can gain from parallelism, is K**2 here
(clamped to S): a kernel cannot be faster on an input smaller than itself (seed 004 sec. 5.1,
property 5), and S_1 = 1 keeps alpha_1(1) = 1, so a dense layer is never corrected.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..progress import bar

INITIAL = (0.01, 0.8, 0.3)  # beta, gamma, final (seed 002)
BOUNDS = ([0.0, 0.0, 0.0], [2.0, 2.0, 2.0])

# The replication's sampling grid (seed 002, sec. 4.1).
SIZES = (1, 2, 4, 8, 16, 32, 64, 96, 128, 256)
CHANNELS = tuple([10 * x for x in range(1, 10)] + [100 + 50 * x for x in range(21)] + [1600, 3200])
KERNELS = tuple(range(1, 15))


@dataclass(frozen=True)
class Conv:
    """One convolution configuration: input H x W, channels, square kernel K ('same' padding)."""

    h: int
    w: int
    k: int
    c_in: int
    c_out: int

    @property
    def s(self) -> int:
        return self.h * self.w

    @property
    def flops(self) -> int:
        return 2 * self.k * self.k * self.c_in * self.c_out * self.h * self.w


def s_k(k: int, s: float) -> float:
    return min(float(k * k), s)


def alpha(k: int, s: float, beta: float, gamma: float) -> float:
    """alpha_K(S); alpha_1(1) = 1 for any beta and gamma."""
    sk = s_k(k, s)
    return ((sk + beta * (s - sk)) / s) ** gamma


@dataclass(frozen=True)
class Fit:
    beta: float
    gamma: float
    final: float

    def predict_ms(self, conv: Conv) -> float:
        return self.final * alpha(conv.k, conv.s, self.beta, self.gamma) * conv.flops / 1e6


@dataclass(frozen=True)
class Profile:
    """Fitted parameters for K = 1 and K > 1 on one device and library stack."""

    key: str
    k1: Fit
    kn: Fit

    def fit_for(self, k: int) -> Fit:
        return self.k1 if k == 1 else self.kn

    def predict_ms(self, conv: Conv) -> float:
        return self.fit_for(conv.k).predict_ms(conv)

    def alpha_flops(self, conv: Conv) -> float:
        fit = self.fit_for(conv.k)
        return alpha(conv.k, conv.s, fit.beta, fit.gamma) * conv.flops


def device_key(device: str) -> str:
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({_cpu_name()})"
    return f"{name} | torch {torch.__version__}"


def _cpu_name() -> str:
    from ..environment import describe

    return describe()["cpu"]


# ---------------------------------------------------------------- timing
def time_conv(conv: Conv, device: str, repeats: int, warmup: int = 3) -> float:
    """Median forward time in ms, after warm-up; CUDA events on the GPU."""
    with warnings.catch_warnings():  # even kernels with 'same' padding pad asymmetrically; expected here
        warnings.simplefilter("ignore", UserWarning)
        return _time_conv(conv, device, repeats, warmup)


def _time_conv(conv: Conv, device: str, repeats: int, warmup: int) -> float:
    layer = torch.nn.Conv2d(conv.c_in, conv.c_out, conv.k, padding="same", bias=False).to(device)
    x = torch.randn(1, conv.c_in, conv.h, conv.w, device=device)
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            layer(x)
        for _ in range(repeats):
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                layer(x)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                layer(x)
                times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


# ---------------------------------------------------------------- sampling
def training_grid(samples: int, max_flops: float, seed: int = 0) -> list[Conv]:
    """A seeded sample of the replication's grid, capped in FLOPs, half K = 1 and half K > 1."""
    rng = random.Random(seed)
    chosen: list[Conv] = []
    for want_k1 in itertools.islice(itertools.cycle((True, False)), samples * 50):
        if len(chosen) >= samples:
            break
        k = 1 if want_k1 else rng.choice(KERNELS[1:])
        conv = Conv(rng.choice(SIZES), rng.choice(SIZES), k, rng.choice(CHANNELS), rng.choice(CHANNELS))
        if conv.flops <= max_flops:
            chosen.append(conv)
    return chosen


def experiments(quick: bool) -> dict[str, list[Conv]]:
    """Held-out configurations in the layout of seed 002's Table 1 (experiments A to G).

    ``quick`` keeps every experiment's shape but fewer points and channels / 10 where a CPU
    could not time the originals in seconds.
    """
    c = (lambda n: max(1, round(n / 10))) if quick else (lambda n: n)
    a, bc, def_, g = (4, 12, 80, 400) if quick else (1, 1, 20, 100)  # strides through each range
    exps: dict[str, list[Conv]] = {
        "A": [Conv(h, w, 1, c(base * 2**x), c(base * 2**x))
              for h, w, base in ((1, 2, 100), (2, 2, 50), (4, 4, 25)) for x in range(0, 10, a)],
        "B": [Conv(round(300 / k), round(300 / k), k, c(ch), c(ch))
              for ch in (150, 100, 70, 50) for k in range(1, 31, bc)],
        "C": [Conv(10, 10, k, c(round(r / k)), c(round(r / k)))
              for r in (4500, 3000, 2100, 1500) for k in range(1, 31, bc)],
        "D": [Conv(100, w, 3, c(ci), c(100)) for ci in (50, 100, 150) for w in range(1, 651, def_)],
        "E": [Conv(100, 100, 3, c(ci), c(co)) for ci in (50, 100, 150) for co in range(1, 651, def_)],
        "F": [Conv(h, 100, 1, c(50), c(co)) for h in (100, 200, 300) for co in range(1, 651, def_)],
        "G": [Conv(10, 100, k, c(ci), c(100)) for k in (1, 3, 5) for ci in range(1, 1001, g)],
    }
    return exps


# ---------------------------------------------------------------- fitting
def fit(convs: list[Conv], times_ms: list[float]) -> Fit:
    from scipy.optimize import curve_fit

    def model(x: Any, beta: float, gamma: float, final: float) -> Any:
        k, s, mflops = x
        sk = [s_k(int(kk), ss) for kk, ss in zip(k, s)]
        return [final * ((a + beta * (ss - a)) / ss) ** gamma * f for a, ss, f in zip(sk, s, mflops)]

    x = ([c.k for c in convs], [float(c.s) for c in convs], [c.flops / 1e6 for c in convs])
    params, _ = curve_fit(model, x, times_ms, p0=INITIAL, bounds=BOUNDS, maxfev=20000)
    return Fit(*(float(p) for p in params))


def rmse(measured: list[float], predicted: list[float]) -> tuple[float, float]:
    """RMSE in ms, and normalised by the measured range (seed 002's error report)."""
    error = math.sqrt(sum((m - p) ** 2 for m, p in zip(measured, predicted)) / len(measured))
    spread = max(measured) - min(measured)
    return error, (error / spread if spread else float("nan"))


def calibrate(
    device: str, quick: bool, log: Callable[[str], None] = print, progress: bool = True
) -> tuple[Profile, dict[str, Any], dict[str, list[tuple[Conv, float, float]]]]:
    """Time, fit, and score on the held-out experiments; returns the profile, its JSON, the points.

    ``progress`` shows a bar per stage on stderr when it is a terminal (``otel_flops.progress``).
    """
    repeats = 5 if quick else 30
    max_flops = 5e7 if quick else 2e11
    grid = training_grid(60 if quick else 1500, max_flops)
    started = time.perf_counter()
    measured = [time_conv(c, device, repeats) for c in bar(grid, "timing training convolutions", progress, "conv")]
    log(f"timed {len(grid)} training configurations in {time.perf_counter() - started:.0f} s")
    k1 = [(c, t) for c, t in zip(grid, measured) if c.k == 1]
    kn = [(c, t) for c, t in zip(grid, measured) if c.k > 1]
    profile = Profile(device_key(device), fit(*zip(*k1)), fit(*zip(*kn)))
    points: dict[str, list[tuple[Conv, float, float]]] = {}
    table: dict[str, dict[str, float]] = {}
    for name, convs in experiments(quick).items():
        convs = [c for c in convs if c.flops <= max_flops * 4]
        if not convs:
            continue
        timed = [(c, time_conv(c, device, repeats), profile.predict_ms(c))
                 for c in bar(convs, f"experiment {name}", progress, "conv")]
        points[name] = timed
        error, normalised = rmse([t for _, t, _ in timed], [p for _, _, p in timed])
        table[name] = {"configs": len(timed), "rmse_ms": error, "nrmse": normalised}
    document = {
        "key": profile.key,
        "device": device,
        "torch": torch.__version__,
        "quick": quick,
        "s_k": "K**2, clamped to S (S_1 = 1)",
        "units": "predicted ms = final * alpha_K(S) * MFLOP",
        "training_configs": len(grid),
        "fits": {"k1": profile.k1.__dict__, "k_gt_1": profile.kn.__dict__},
        "experiments": table,
    }
    return profile, document, points


# ---------------------------------------------------------------- profiles on disk
def save(document: dict[str, Any], path: Path) -> None:
    """Profiles are keyed by device and library versions; other keys in the file are kept."""
    existing = json.loads(path.read_text()) if path.exists() else {"profiles": {}}
    existing["profiles"][document["key"]] = document
    path.write_text(json.dumps(existing, indent=2) + "\n")


def load(path: str | Path, key: str | None = None) -> Profile:
    profiles = json.loads(Path(path).read_text())["profiles"]
    if key is None:
        if len(profiles) != 1:
            raise ValueError(f"{path} holds {len(profiles)} profiles; name one of: {', '.join(profiles)}")
        key = next(iter(profiles))
    doc = profiles[key]
    return Profile(key, Fit(**doc["fits"]["k1"]), Fit(**doc["fits"]["k_gt_1"]))


def load_for_this_device(path: str | Path) -> Profile:
    """The profile fitted on this device and library stack, or the file's only profile."""
    profiles = json.loads(Path(path).read_text())["profiles"]
    key = device_key("cuda" if torch.cuda.is_available() else "cpu")
    return load(path, key if key in profiles else None)


def rmse_table(document: dict[str, Any]) -> str:
    lines = ["| experiment | configs | RMSE (ms) | normalised RMSE |", "|---|---|---|---|"]
    for name, row in document["experiments"].items():
        lines.append(f"| {name} | {row['configs']} | {row['rmse_ms']:.4f} | {row['nrmse']:.1%} |")
    return "\n".join(lines)


def plot(points: dict[str, list[tuple[Conv, float, float]]], path: Path, experiments_shown: Iterable[str] = "AB"):
    """Measured against predicted time for experiments A and B."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [e for e in experiments_shown if e in points]
    fig, axes = plt.subplots(1, len(shown), figsize=(6 * len(shown), 4.5), squeeze=False)
    for ax, name in zip(axes[0], shown):
        measured = [t for _, t, _ in points[name]]
        predicted = [p for _, _, p in points[name]]
        ax.scatter(measured, predicted, s=14)
        top = max(measured + predicted)
        ax.plot([0, top], [0, top], "k--", linewidth=1, label="predicted = measured")
        ax.set(title=f"experiment {name}", xlabel="measured forward time (ms)", ylabel="alpha-FLOPs prediction (ms)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- at run time
def geometry(family: str, op: str, args: tuple, out: Any) -> tuple[int, float]:
    """(K, S) of a counted op: a dense product is K = 1, S = 1 (alpha = 1: never corrected)."""
    if family != "conv":
        return 1, 1.0
    weight, spatial = (args[2], args[0]) if op == "aten.convolution_backward" else (args[1], out)
    kernel = weight.shape[2:]
    k = round(math.prod(kernel) ** (1 / len(kernel))) if kernel else 1
    spatial_shape = spatial.shape[2:] if isinstance(spatial, torch.Tensor) else ()
    return k, float(math.prod(spatial_shape) or 1)


def terms(profile: Profile, family: str, op: str, args: tuple, out: Any, flops: int) -> tuple[int, int]:
    """alpha-FLOPs and predicted nanoseconds of one convolution or dense product."""
    k, s = geometry(family, op, args, out)
    fit = profile.fit_for(k)
    a = alpha(k, s, fit.beta, fit.gamma)
    return round(a * flops), round(fit.final * a * flops)  # ms per MFLOP is ns per FLOP
