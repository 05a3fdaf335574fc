"""Every OpenTelemetry object lives here: meter provider, instruments, Prometheus reader and server.

The counters are observable: at each collection they read cumulative totals from the Ledger,
so the per-op hot path never touches OpenTelemetry and metrics always equal the report.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from . import __version__
from .ledger import Ledger, Totals, capped, grouped
from .settings import Settings

log = logging.getLogger("otel_flops")

METER_NAME = "otel_flops"
BASE_LABELS = ("framework", "phase", "dtype", "bits", "device", "model")


@dataclass
class Endpoint:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"


class Telemetry:
    """Publishes a Ledger as the `otel_flops.flops` and `otel_flops.bops` counters."""

    def __init__(self, ledger: Ledger, settings: Settings, energy: Any = None) -> None:
        self._ledger = ledger
        self._settings = settings
        self._energy = energy
        self._provider: Any = None
        self._server: Any = None
        self.endpoint: Endpoint | None = None

    def start(self, serve: bool) -> None:
        """Use the application's MeterProvider, or with ``serve`` our own Prometheus endpoint."""
        provider = metrics.get_meter_provider()
        if serve:
            provider = self._serve_prometheus()
        meter = provider.get_meter(METER_NAME, __version__)
        meter.create_observable_counter(
            "otel_flops.flops", [self._observe_flops], unit="{flop}",
            description="Floating-point operations counted by otel-flops",
        )
        meter.create_observable_counter(
            "otel_flops.bops", [self._observe_bops], unit="{bop}",
            description="Bit operations: FLOPs times the effective operand bit-width",
        )
        if self._energy is not None:
            meter.create_observable_counter(
                "otel_flops.energy", [self._observe_energy], unit="J",
                description="Energy used by the machine, by component and by how it was measured",
            )
            meter.create_observable_gauge(
                "otel_flops.power", [self._observe_power], unit="W", description="Power draw by component"
            )
            meter.create_observable_counter(
                "otel_flops.emissions", [self._observe_emissions], unit="g",
                description="CO2-equivalent emissions of that energy",
            )

    def _serve_prometheus(self) -> Any:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        reader = PrometheusMetricReader(registry=registry)
        self._provider = MeterProvider(metric_readers=[reader], resource=Resource.create())
        host, port = self._settings.host, self._settings.port
        try:
            self._server, _ = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            log.error(
                "otel-flops: cannot serve /metrics on %s:%s (%s); set OTEL_EXPORTER_PROMETHEUS_PORT or "
                "--port to a free port (0 picks one). Counting goes on without the endpoint.",
                host, port, exc.strerror or exc,
            )
            return self._provider
        self.endpoint = Endpoint(host, self._server.server_address[1])
        log.info("otel-flops: serving metrics on %s", self.endpoint.url)
        return self._provider

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None

    def _labelled(self) -> dict[tuple, Totals]:
        items = self._ledger.items()
        settings = self._settings
        models = capped((k.model for k, _ in items), settings.model_label_cap)
        extra: tuple[str, ...] = ()
        ops: dict[str, str] = {}
        if settings.op_label == "op":
            extra = ("op",)
            ops = capped((k.op for k, _ in items), settings.op_label_cap)
        elif settings.op_label == "family":
            extra = ("op_family",)
        relabelled = [
            (k._replace(model=models[k.model], op=ops.get(k.op, k.op)), t) for k, t in items
        ]
        fields = BASE_LABELS + tuple("family" if f == "op_family" else f for f in extra)
        return {
            tuple(zip(BASE_LABELS + extra, (str(v) for v in group))): totals
            for group, totals in grouped(relabelled, *fields).items()
        }

    def _observe(self, attr: str) -> Iterable[Observation]:
        return [Observation(getattr(t, attr), dict(labels)) for labels, t in self._labelled().items()]

    def _observe_flops(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._observe("flops")

    def _observe_bops(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._observe("bops")

    def _observe_energy(self, options: CallbackOptions) -> Iterable[Observation]:
        joules = self._energy.reading().joules
        return [Observation(j, {"hw_type": h, "device": d, "source": s}) for (h, d, s), j in joules.items()]

    def _observe_power(self, options: CallbackOptions) -> Iterable[Observation]:
        watts = self._energy.reading().watts
        return [Observation(w, {"hw_type": h, "device": d}) for (h, d), w in watts.items()]

    def _observe_emissions(self, options: CallbackOptions) -> Iterable[Observation]:
        reading = self._energy.reading()
        return [Observation(reading.emissions_g)] if reading.joules else []


