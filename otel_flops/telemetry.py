"""Every OpenTelemetry object lives here: meter provider, readers, instruments, /metrics server.

The instruments are observable: at each collection they read cumulative totals from the Ledger
(and the energy monitor), so the per-op hot path never touches OpenTelemetry and metrics always
equal the report. With ``export`` the session builds its own MeterProvider with the readers
that OTEL_METRICS_EXPORTER names; otherwise it uses the application's (what
``opentelemetry-instrument`` sets up).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from . import __version__, identity, ranks
from .analysis.mfu import PeakTime
from .ledger import TORCH_PHASES, LabelCaps, Ledger, Totals, WindowTotals, grouped
from .settings import Settings, otlp_exporter

log = logging.getLogger("otel_flops")

METER_NAME = "otel_flops"
BASE_LABELS = ("framework", "phase", "dtype", "bits", "device", "model")
# Every label a user controls, and the Settings field that caps it (values past it fold into "other").
CAPPED_LABELS = {"model": "model_label_cap", "op": "op_label_cap", "phase": "phase_label_cap",
                 "module": "module_label_cap", "window": "window_label_cap"}


def label_caps(settings: Settings) -> LabelCaps:
    """The caps of CAPPED_LABELS from ``settings``; the phases torch and scikit-learn set
    themselves are never folded, only the user's own names (``otel_flops.phase``)."""
    from .sklearn.wrap import METHODS

    caps = {label: getattr(settings, field) for label, field in CAPPED_LABELS.items()}
    return LabelCaps(caps, keep={"phase": frozenset((*TORCH_PHASES, *METHODS))})


def safe(value: Any) -> str:
    """A label value the exposition can always encode: text that is not valid UTF-8 (a lone
    surrogate such as "\\udcff") is written as its backslash escape instead of failing the scrape."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def common_labels(settings: Settings) -> dict[str, str]:
    """Labels on every series: the run (and pool) it belongs to, the machine, the rank (read at each
    collection: a process that joins a group later gets its rank labels then)."""
    labels = {"run": settings.run_id, "node": settings.node}
    if settings.pool:
        labels["pool"] = settings.pool
    labels.update((k, str(v)) for k, v in (ranks.current(settings.rank) or {}).items())
    return {key: safe(value) for key, value in labels.items()}


@dataclass
class Endpoint:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/metrics"


class Telemetry:
    """Publishes a Ledger (and energy, budgets) as OpenTelemetry instruments."""

    def __init__(self, ledger: Ledger, settings: Settings, energy: Any = None) -> None:
        self._ledger = ledger
        self._settings = settings
        self._energy = energy
        self._started_at = time.time()
        self._finished_at: float | None = None
        self._provider: Any = None
        self._server: Any = None
        self.endpoint: Endpoint | None = None
        self._target: Any = None  # this process's file_sd target file, while it serves
        self.peak_time = PeakTime(settings.peak_flops)  # the report reads it too: one MFU
        self.caps = label_caps(settings)

    def start(self, export: bool, meter_provider: Any = None) -> None:
        """Our own provider and readers with ``export``; else the given or the global provider."""
        self._started_at = time.time()
        if export:
            provider = self._provider = self._own_provider()
        else:
            provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter(METER_NAME, __version__)
        counter, gauge = meter.create_observable_counter, meter.create_observable_gauge
        counter("otel_flops.flops", [self._observe_flops], unit="{flop}",
                description="Floating-point operations counted by otel-flops")
        counter("otel_flops.bops", [self._observe_bops], unit="{bop}",
                description="Bit operations: FLOPs times the effective operand bit-width")
        counter("otel_flops.comm", [self._observe_comm], unit="By",
                description="Bytes moved by collectives (DDP's all-reduce and others), not FLOPs")
        for kind, value in self._settings.budgets.items():
            gauge(f"otel_flops.budget.{kind}", [self._constant(value)],
                  description=f"Compute budget in {kind} of the run (or of its pool), for alerting on use against it")
        gauge("otel_flops.run.started", [self._observe_started],
              description="When the run's counting started, in Unix seconds")
        gauge("otel_flops.run.finished", [self._observe_finished],
              description="When the run finished normally, in Unix seconds; absent while it runs")
        if self._settings.alpha_profile:
            counter("otel_flops.alpha_flops", [self._observe_alpha_flops], unit="{flop}",
                    description="alpha-FLOPs: FLOPs as this device perceives them (otel-flops calibrate)")
            counter("otel_flops.predicted", [self._observe_predicted], unit="s",
                    description="Time the alpha-FLOPs profile predicts for convolutions and dense products")
        counter("otel_flops.peak_time", [self._observe_peak_time], unit="s",
                description="Seconds the counted work would take at the device's dense peak for its precision; "
                            "its rate is the model FLOP utilisation (MFU)")
        counter("otel_flops.steps", [self._observe_steps], unit="{step}", description="Optimizer steps taken")
        for kind, unit, what in WINDOW_COUNTERS:
            counter(f"otel_flops.window.{kind}", [self._window_observer(kind)], unit=unit,
                    description=f"{what} inside otel_flops.window blocks, by window name")
        if self._energy is not None:
            counter("otel_flops.energy", [self._observe_energy], unit="J",
                    description="Energy used by the machine, by component and by how it was measured")
            gauge("otel_flops.power", [self._observe_power], unit="W", description="Power draw by component")
            counter("otel_flops.emissions", [self._observe_emissions], unit="g",
                    description="CO2-equivalent emissions of that energy")

    def stop(self) -> None:
        """A final collection goes out through push readers (OTLP) as the provider shuts down;
        /metrics serves the final state until a scrape reads it, at most ``linger`` seconds."""
        self._finished_at = time.time()
        if self._server is not None:
            self._linger(self._server)
        self.close_endpoint()
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None

    def _linger(self, server: Any) -> None:
        limit = self._settings.linger or 0
        if limit <= 0:
            return
        try:
            if not server.wait_final_scrape(limit):
                log.info("otel-flops: no scrape of the final totals within OTEL_FLOPS_LINGER=%gs; they "
                         "are in the report only", limit)
        except KeyboardInterrupt:
            log.info("otel-flops: stopped waiting for the final scrape")

    @property
    def _rank(self) -> dict[str, str]:
        return common_labels(self._settings)

    # ------------------------------------------------------------------ readers
    def _own_provider(self) -> Any:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource

        readers = [reader for name in self._settings.exporters for reader in [READERS[name](self)] if reader]
        # host.name and host.id where OTEL_RESOURCE_ATTRIBUTES gives none (what it gives wins)
        resource = Resource(identity.host_resource()).merge(
            Resource.create({"service.instance.id": self._settings.run_id}))
        return MeterProvider(metric_readers=readers, resource=resource)

    def _prometheus_reader(self) -> Any:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        from . import metrics_server

        settings = self._settings
        registry = CollectorRegistry()
        reader = PrometheusMetricReader(registry=registry)
        host, port = settings.host, settings.port + settings.local_rank if settings.port else 0
        tls = None
        try:
            if settings.tls_cert:
                tls = metrics_server.tls_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        except OSError as exc:  # ssl.SSLError too: a key that does not match, a file that is no PEM
            log.error("otel-flops: cannot use the TLS files %s, %s (%s); fix OTEL_FLOPS_TLS_CERT and "
                      "OTEL_FLOPS_TLS_KEY. Counting goes on without the endpoint.",
                      settings.tls_cert, settings.tls_key, exc.strerror or exc)
            return reader
        try:
            self._server = metrics_server.serve(host, port, registry, tls)
        except OSError as exc:
            log.error("otel-flops: cannot serve /metrics on %s:%s (%s); %s. Counting goes on without the endpoint.",
                      host, port, exc.strerror or exc, metrics_server.bind_fix(exc))
            return reader
        self.endpoint = Endpoint("https" if tls else "http", host, self._server.server_address[1])
        log.info("otel-flops: serving metrics on %s", self.endpoint.url)
        self._write_target()
        return reader

    def _write_target(self) -> None:
        settings = self._settings
        if not settings.file_sd_dir or self.endpoint is None:
            return
        from . import file_sd

        try:
            self._target = file_sd.write(settings.file_sd_dir, file_sd.target_host(settings.host),
                                         self.endpoint.port, settings.run_id, settings.node)
        except OSError as exc:
            log.error("otel-flops: cannot write the file_sd target in %s (%s); fix OTEL_FLOPS_FILE_SD_DIR. "
                      "The endpoint serves, but Prometheus must be told of it", settings.file_sd_dir,
                      exc.strerror or exc)

    def close_endpoint(self) -> None:
        """Stop serving /metrics now (and drop the file_sd target); counting and push readers go on."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.endpoint = None
        if self._target is not None:
            from . import file_sd

            file_sd.remove(self._target)
            self._target = None

    def _otlp_reader(self) -> Any:
        """The OTLP exporter of the protocol the settings name, loaded from the SDK's entry point
        (as opentelemetry-instrument does); OTEL_EXPORTER_OTLP_* configure it."""
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        exporter = otlp_exporter(self._settings.otlp_protocol).load()
        return PeriodicExportingMetricReader(exporter())

    def _console_reader(self) -> Any:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

        return PeriodicExportingMetricReader(ConsoleMetricExporter())

    # ------------------------------------------------------------------ observations
    def _labelled(self) -> dict[tuple, Totals]:
        settings, fold = self._settings, self.caps.fold
        extra: tuple[str, ...] = {"op": ("op",), "family": ("op_family",)}.get(settings.op_label, ())
        relabelled = [
            (k._replace(model=fold("model", k.model), phase=fold("phase", k.phase),
                        op=fold("op", k.op) if extra == ("op",) else k.op,
                        module=fold("module", k.module) if settings.module_label else k.module), t)
            for k, t in self._ledger.items()
        ]
        if settings.module_label:
            extra += ("module",)
        fields = BASE_LABELS + tuple("family" if f == "op_family" else f for f in extra)
        return {
            tuple(zip(BASE_LABELS + extra, (str(v) for v in group))): totals
            for group, totals in grouped(relabelled, *fields).items()
        }

    def _observe(self, attr: str) -> Iterable[Observation]:
        return [Observation(getattr(t, attr), {**{k: safe(v) for k, v in labels}, **_hardware(labels), **self._rank})
                for labels, t in self._labelled().items()]

    def _observe_flops(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._observe("flops")

    def _observe_bops(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._observe("bops")

    def _observe_alpha_flops(self, options: CallbackOptions) -> Iterable[Observation]:
        return [o for o in self._observe("alpha_flops") if o.value]

    def _observe_predicted(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(o.value / 1e9, o.attributes) for o in self._observe("predicted_ns") if o.value]

    def _observe_comm(self, options: CallbackOptions) -> Iterable[Observation]:
        by_op = grouped([(k, t) for k, t in self._ledger.items() if t.comm_bytes], "op")
        return [
            Observation(t.comm_bytes, {"collective": op.split(".")[-1].strip("_"), **self._rank})
            for (op,), t in by_op.items()
        ]

    def _constant(self, value: float) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value, {"budget": safe(self._settings.budget_name), **self._rank})]

        return observe

    def _observe_started(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._started_at, dict(self._rank))]

    def _observe_finished(self, options: CallbackOptions) -> Iterable[Observation]:
        return [] if self._finished_at is None else [Observation(self._finished_at, dict(self._rank))]

    def _observe_peak_time(self, options: CallbackOptions) -> Iterable[Observation]:
        at_peak = self.peak_time.measure(self._ledger.items())
        return [] if at_peak is None else [Observation(at_peak.seconds, dict(self._rank))]

    def _window_observer(self, kind: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            folded: dict[str, WindowTotals] = {}
            for name, totals in self._ledger.windows().items():
                folded.setdefault(self.caps.fold("window", name), WindowTotals()).absorb(totals)
            values = {name: window_value(totals, kind) for name, totals in folded.items()}
            return [Observation(v, {"window": safe(name), **self._rank}) for name, v in values.items() if v is not None]

        return observe

    def _observe_steps(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._ledger.steps, dict(self._rank))]

    @property
    def elapsed(self) -> float:
        """Wall seconds from the start to the finish (or now): otel_flops_run_finished - otel_flops_run_started."""
        return (self._finished_at or time.time()) - self._started_at

    def _observe_energy(self, options: CallbackOptions) -> Iterable[Observation]:
        joules = self._energy.reading().joules
        return [Observation(j, {"hw_type": h, "device": d, "source": s, **self._node})
                for (h, d, s), j in joules.items()]

    def _observe_power(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._finished_at is not None:
            return []  # a finished run draws nothing; the next process to measure this machine may publish already
        watts = self._energy.reading().watts
        return [Observation(w, {"hw_type": h, "device": d, **self._node}) for (h, d), w in watts.items()]

    def _observe_emissions(self, options: CallbackOptions) -> Iterable[Observation]:
        reading = self._energy.reading()
        return [Observation(reading.emissions_g, dict(self._node))] if reading.joules else []

    @property
    def _node(self) -> dict[str, str]:
        """Machine energy: measured by one process per machine, labelled as the node's, not the run's."""
        return {**self._rank, "scope": "node"}


def _hardware(labels: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """``hw.id`` (hardware semantic conventions), the GPU's UUID, on the series of a CUDA device:
    Prometheus's ``hw_id``, which joins with DCGM's ``UUID`` label."""
    gpu = identity.gpu_uuid(dict(labels).get("device", ""))
    return {"hw.id": gpu} if gpu else {}


# The window series: (kind, unit, description), read from the Ledger's windows by ``window_value``.
WINDOW_COUNTERS = (("flops", "{flop}", "FLOPs"), ("bops", "{bop}", "BOPs"),
                   ("energy", "J", "Joules the energy sources measured"), ("duration", "s", "Wall-clock seconds"))


def window_value(totals: WindowTotals, kind: str) -> float | None:
    """One window series' value; None (no series) for energy that no source measured."""
    return {"flops": totals.flops, "bops": totals.bops, "energy": totals.total_joules,
            "duration": totals.seconds}[kind]


# The readers OTEL_METRICS_EXPORTER can name ("none" adds none).
READERS: dict[str, Callable[[Telemetry], Any]] = {
    "prometheus": Telemetry._prometheus_reader,
    "otlp": Telemetry._otlp_reader,
    "console": Telemetry._console_reader,
    "none": lambda telemetry: None,
}
