"""One training run as a trainer callback sees it: a counting session over it, and its metrics.

The trainer integrations (``huggingface``, ``lightning``) start a ``TrainingRun`` when training
starts and end it when training ends. It starts a session of its own (``otel_flops.track()``), or,
where one is already active (``otel-flops run``, ``opentelemetry-instrument``, an enclosing
``track()``), joins it with a nested ``track()``, whose report is the work, seconds and joules from
the moment training started. Every figure comes from that report, so what a trainer logs (MFU,
FLOP/s, joules included) is training's own span, however long the session ran before.
"""

from __future__ import annotations

import threading
import time
from typing import Any

PREFIX = "otel_flops/"  # the logged keys' namespace (W&B and TensorBoard group by the part before "/")
TRAINING_PHASES = ("forward", "loss", "backward", "optimizer")  # a training step's work: what total_flos counts


class TrainingRun:
    """The counting session over one training run. At most one is open per process: a second
    trainer callback (one added by hand next to one attached automatically) finds it open and
    stays idle, so nothing is counted or logged twice."""

    _open: TrainingRun | None = None
    _lock = threading.Lock()

    def __init__(self, tracker: Any) -> None:
        self.report: dict[str, Any] | None = None  # the report the latest metrics came from
        # track(): its own session (ended with the run), or a nested one in the session it joined
        # (its report is the run's span)
        self._tracker = tracker
        self._started = time.monotonic()

    @classmethod
    def begin(cls) -> TrainingRun | None:
        """A run counting from now, or None where another run is open or the session is off
        (OTEL_SDK_DISABLED=true or a bad setting: one line on stderr said so)."""
        import otel_flops

        with cls._lock:
            if cls._open is not None:
                return None
            tracker = otel_flops.track()
            if getattr(tracker.session, "off", None):
                return None
            cls._open = cls(tracker)
            return cls._open

    @property
    def session(self) -> Any:
        return self._tracker.session

    def training_flops(self) -> int:
        """FLOPs of the training phases (forward, loss, backward, optimizer) since the run began: HF's
        ``total_flos`` counts training work, so evaluation (inference) and preprocessing stay out."""
        return sum(t.flops for key, t in self._tracker.counts().items() if key.phase in TRAINING_PHASES)

    def metrics(self) -> dict[str, float]:
        """The run so far, as a trainer logs it (keys under ``otel_flops/``):

        - ``flops``, ``bops``: FLOPs and BOPs since training began (integers); ``flops/<phase>`` per phase;
        - ``flops_per_second``: those FLOPs over the wall seconds since training began (FLOP/s);
        - ``mfu``: the run's model FLOP utilisation (its report's ``mfu.mfu``: over the seconds since
          training began), only where a peak is known (a GPU in the peak table, or OTEL_FLOPS_PEAK_FLOPS);
        - ``joules`` (J) and ``flops_per_joule`` (FLOP/J), only where energy is measured.
        """
        self.report = self._tracker.report()
        now = _figures(self.report)
        seconds = time.monotonic() - self._started
        flops = now["flops"]
        out: dict[str, float] = {f"{PREFIX}flops": flops, f"{PREFIX}bops": now["bops"]}
        for phase, count in now["phases"].items():
            out[f"{PREFIX}flops/{phase}"] = count
        if seconds > 0:
            out[f"{PREFIX}flops_per_second"] = flops / seconds
        if now["mfu"] is not None:
            out[f"{PREFIX}mfu"] = now["mfu"]
        if now["joules"] is not None:
            joules = now["joules"]
            out[f"{PREFIX}joules"] = joules
            if joules > 0:
                out[f"{PREFIX}flops_per_joule"] = flops / joules
        return out

    def end(self) -> None:
        """Stop the session if the run started it (a joined session goes on, the run's span ends); then
        the run is closed."""
        try:
            self._tracker.__exit__(None, None, None)
        finally:
            with TrainingRun._lock:
                if TrainingRun._open is self:
                    TrainingRun._open = None


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    """The cumulative figures a run logs, read from a report."""
    energy = report.get("energy", {})
    mfu = report.get("mfu", {})
    return {
        "flops": report["totals"]["flops"],
        "bops": report["totals"]["bops"],
        "phases": {phase: counts["flops"] for phase, counts in report["phases"].items()},
        "mfu": mfu.get("mfu") if mfu.get("available") else None,
        "joules": energy.get("joules") if energy.get("available") else None,
    }
