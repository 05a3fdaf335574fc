"""Settings from OTEL_* / OTEL_FLOPS_* variables and CLI flags, validated at start-up.

A bad value stops start-up with one line that names the variable and the accepted values.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import identity, ranks

MODES = ("steady", "full")
OP_LABELS = ("none", "family", "op")
EXPORTERS = ("prometheus", "otlp", "console", "none")
# OTLP protocols and the exporter each names in the SDK's ``opentelemetry_metrics_exporter`` entry
# points (the names opentelemetry-instrument resolves OTEL_EXPORTER_OTLP_PROTOCOL to). The spec's
# default, http/protobuf, ships with otel-flops; grpc needs the ``otlp-grpc`` extra.
OTLP_PROTOCOLS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
# A host name (RFC 1123 labels; "_" tolerated, as some container names have it) to bind /metrics to.
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")


class SettingsError(ValueError):
    """A setting has a value otel-flops cannot use; the message is one line."""


@dataclass(frozen=True)
class Settings:
    mode: str = "steady"
    host: str = "localhost"
    port: int = 9464
    op_label: str = "none"
    op_label_cap: int = 50
    model_label_cap: int = 20
    module_depth: int = 3  # by_module: submodule paths cut to this many names ("transformer.h.0")
    module_label: bool = False  # the flops/bops series also get a ``module`` label (capped)
    module_label_cap: int = 50
    window_label_cap: int = 20  # distinct otel_flops.window names on the window series
    phase_label_cap: int = 20  # the user's own phase names; the built-in ones are never folded
    report: str | None = None
    audit_every: int = 1000
    energy: bool = True
    energy_interval: float = 2.0
    sklearn: bool = True
    exporters: tuple[str, ...] = ("prometheus",)
    otlp_protocol: str = "http/protobuf"  # OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL
    budget_name: str = "default"
    budget_flops: float | None = None
    budget_bops: float | None = None
    budget_joules: float | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    rank: dict[str, int] | None = None  # rank, local_rank, world_size from the launcher's variables (ranks)
    peak_flops: float | None = None  # overrides the peak table for MFU
    alpha_profile: str | None = None  # an `otel-flops calibrate` profile: predicted time per op
    run_id: str = "unknown"  # the run every series belongs to (identity.run_id)
    pool: str | None = None  # a named pool of runs that shares a budget
    node: str = "unknown"  # the machine: its energy is published by one process only
    linger: float | None = None  # the longest wait at exit for a final scrape, in seconds
    file_sd_dir: str | None = None  # where each serving process writes its Prometheus file_sd target

    @property
    def local_rank(self) -> int:
        """The local rank now (``ranks.current``: a process that joined a group since has one)."""
        rank = ranks.current(self.rank)
        return rank["local_rank"] if rank else 0

    @property
    def budgets(self) -> dict[str, float]:
        found = {"flops": self.budget_flops, "bops": self.budget_bops, "joules": self.budget_joules}
        return {kind: value for kind, value in found.items() if value is not None}

    def with_overrides(self, caller: str | None = None, /, **overrides: Any) -> Settings:
        """Apply CLI flags (``caller`` None) or the keywords of ``caller`` (``"track"``, ``"instrument"``)
        that were given (None means 'not given'), each checked by the rules of its variable.

        Raises SettingsError, one line naming the flag or keyword and the fix, for a value (or a
        keyword) the environment would refuse too.
        """
        given = {}
        for field, value in overrides.items():
            if value is None:
                continue
            shown = f"--{field.replace('_', '-')}={value!r}" if caller is None else f"{caller}({field}={value!r})"
            if field not in KEYWORDS:
                raise SettingsError(f"{shown}: there is no such setting; use one of: {', '.join(KEYWORDS)}")
            given[field] = KEYWORDS[field](shown, value)
        updated = replace(self, **given)
        if "otlp" in updated.exporters:
            otlp_exporter(updated.otlp_protocol)
        _check_tls(updated)
        return updated


def _check_choice(name: str, value: str, choices: tuple[str, ...], shown: str | None = None) -> str:
    """``value`` if one of ``choices``; else SettingsError starting with ``shown`` (default ``name=value``)."""
    if value not in choices:
        raise SettingsError(f"{shown or f'{name}={value!r}'} is not valid; use one of: {', '.join(choices)}")
    return value


def is_host(host: Any) -> bool:
    """Whether ``host`` is an IP address or a well-formed host name (text only: ``ip_address(3)`` is valid)."""
    if not isinstance(host, str):
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(HOST_NAME.fullmatch(host))


def _check_host(name: str, host: str, shown: str | None = None) -> str:
    """``host`` if ``is_host``; else SettingsError naming ``name`` (or starting with ``shown``)."""
    if is_host(host):
        return host
    raise SettingsError(f"{shown or f'{name}={host!r}'} is not a host name or IP address; set one to bind "
                        "/metrics to (e.g. localhost, 0.0.0.0 or ::)")


@dataclass(frozen=True)
class Number:
    """A numeric setting: its variable and the values it accepts (finite, from ``minimum``,
    excluded when ``strict``, up to ``maximum``)."""

    variable: str
    parse: type  # int or float
    minimum: float
    strict: bool = False
    maximum: float = math.inf

    def wanted(self) -> str:
        """The accepted values, as the fix to suggest."""
        kind = "a whole number" if self.parse is int else "a finite number"
        if self.maximum < math.inf:
            return f"{kind} from {self.minimum:g} to {self.maximum:g}"
        return f"{kind} {'>' if self.strict else '>='} {self.minimum:g}"

    def parsed(self, raw: str) -> Any:
        """``raw`` (the variable's text) as a number in range; SettingsError otherwise."""
        try:
            value = self.parse(raw)
        except ValueError:
            kind = "a whole number" if self.parse is int else "a number"
            raise SettingsError(f"{self.variable}={raw!r} is not {kind}; set {self.wanted()}") from None
        return self.check(f"{self.variable}={raw!r}", value)

    def check(self, shown: str, value: Any) -> Any:
        """``value`` if in range; else SettingsError that starts with ``shown`` (what was given)."""
        in_range = isinstance(value, (int, float)) and math.isfinite(value) and value <= self.maximum
        if not (in_range and (value > self.minimum if self.strict else value >= self.minimum)):
            raise SettingsError(f"{shown} is out of range; set {self.wanted()}")
        return value


# Every numeric setting, by field. Non-finite values (inf, nan) and values past a maximum are
# refused here, so nothing downstream (a thread's wait, a gauge) ever sees them.
NUMBERS: dict[str, Number] = {
    "port": Number("OTEL_EXPORTER_PROMETHEUS_PORT", int, 0, maximum=65535),
    "op_label_cap": Number("OTEL_FLOPS_OP_LABEL_CAP", int, 1),
    "model_label_cap": Number("OTEL_FLOPS_MODEL_LABEL_CAP", int, 1),
    "module_depth": Number("OTEL_FLOPS_MODULE_DEPTH", int, 0, maximum=64),
    "module_label_cap": Number("OTEL_FLOPS_MODULE_LABEL_CAP", int, 1),
    "window_label_cap": Number("OTEL_FLOPS_WINDOW_LABEL_CAP", int, 1),
    "phase_label_cap": Number("OTEL_FLOPS_PHASE_LABEL_CAP", int, 1),
    "audit_every": Number("OTEL_FLOPS_AUDIT_EVERY", int, 1),
    "energy_interval": Number("OTEL_FLOPS_ENERGY_INTERVAL", float, 0.1, maximum=3600),
    "budget_flops": Number("OTEL_FLOPS_BUDGET_FLOPS", float, 0, strict=True),
    "budget_bops": Number("OTEL_FLOPS_BUDGET_BOPS", float, 0, strict=True),
    "budget_joules": Number("OTEL_FLOPS_BUDGET_JOULES", float, 0, strict=True),
    "peak_flops": Number("OTEL_FLOPS_PEAK_FLOPS", float, 0, strict=True),
    "linger": Number("OTEL_FLOPS_LINGER", float, 0, maximum=3600),
}


def _keyword_number(field: str) -> Callable[[str, Any], Any]:
    """The check of a numeric keyword: a Python number of the variable's kind (no bool, no text), in range."""
    number = NUMBERS[field]

    def check(shown: str, value: Any) -> Any:
        kinds = (int,) if number.parse is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            kind = "a whole number" if number.parse is int else "a number"
            raise SettingsError(f"{shown} is not {kind}; set {number.wanted()}")
        return number.check(shown, value)

    return check


def _keyword_switch(shown: str, value: Any) -> bool:
    """A switch keyword: True or False, or the words its variable accepts (on, off, ...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in SWITCHES:
        return SWITCHES[value.lower()]
    raise SettingsError(f"{shown} is not valid; use True or False")


def _keyword_text(shown: str, value: Any) -> str:
    """A name or path keyword: non-empty text (a path may be a Path)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise SettingsError(f"{shown} is not valid; use a non-empty string")
    return value


def _keyword_path(variable: str, check: Callable[[Mapping[str, str], str], str | None]) -> Callable[[str, Any], Any]:
    """A file or folder keyword, checked as its variable is (``check`` is ``_existing_file`` or ``_directory``)."""

    def checked(shown: str, value: Any) -> str | None:
        path = _keyword_text(shown, value)
        try:
            return check({variable: path}, variable)
        except SettingsError as exc:
            raise SettingsError(f"{shown}{str(exc).removeprefix(f'{variable}={path!r}')}") from None

    return checked


def _keyword_exporters(shown: str, value: Any) -> tuple[str, ...]:
    """Exporter names, as a tuple or as OTEL_METRICS_EXPORTER's comma-separated text."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
        raise SettingsError(f"{shown} is not valid; use names from: {', '.join(EXPORTERS)}")
    chosen = tuple(n.strip().lower() for n in names if n.strip())
    for name in chosen:
        _check_choice("exporters", name, EXPORTERS, shown)
    return chosen


def _keyword_choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    return lambda shown, value: _check_choice("", value.lower() if isinstance(value, str) else value, choices, shown)


def _number(env: Mapping[str, str], field: str, default: Any) -> Any:
    """One numeric setting: absent gives the default; unparsable or out of range, one line."""
    number = NUMBERS[field]
    raw = env.get(number.variable)
    return default if raw is None or raw == "" else number.parsed(raw)


SWITCHES = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False, "no": False}


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return SWITCHES[raw.lower()]
    except KeyError:
        raise SettingsError(f"{name}={raw!r} is not valid; use one of: on, off") from None


def _exporters(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("OTEL_METRICS_EXPORTER") or "prometheus"
    names = tuple(n.strip().lower() for n in raw.split(",") if n.strip())
    for name in names:
        _check_choice("OTEL_METRICS_EXPORTER", name, EXPORTERS)
    return names


def _otlp_protocol(env: Mapping[str, str]) -> str:
    """The OTLP protocol for metrics: the metrics-specific variable wins over the general one (OTel spec)."""
    for name in ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        raw = (env.get(name) or "").strip()
        if raw:
            return _check_choice(name, raw.lower(), tuple(OTLP_PROTOCOLS))
    return "http/protobuf"


def otlp_exporter(protocol: str) -> Any:
    """The entry point (group ``opentelemetry_metrics_exporter``) of the OTLP metric exporter for
    ``protocol``, one of OTLP_PROTOCOLS. Raises SettingsError, one line, when the package that
    provides it is not installed."""
    from importlib.metadata import entry_points

    found = entry_points(group="opentelemetry_metrics_exporter", name=OTLP_PROTOCOLS[protocol])
    if not found:
        package = "opentelemetry-exporter-otlp-proto-" + ("grpc" if protocol == "grpc" else "http")
        raise SettingsError(f"OTLP over {protocol} needs the package {package}; install it (pip install "
                            "'otel-flops[otlp-grpc]') or set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf")
    return next(iter(found))


def _existing_file(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(name) or None
    if path is not None and not os.path.isfile(path):
        raise SettingsError(f"{name}={path!r} is not a readable file; point it at an existing file")
    return path


def _directory(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(name) or None
    if path is not None and not os.path.isdir(path):
        raise SettingsError(f"{name}={path!r} is not a directory; create it or point {name} at one")
    return path


# Every keyword of track()/instrument() (and CLI flag) that sets a Settings field: its check, by the
# rules of its variable; the fields set from the launcher or the machine (rank, node) are not here.
KEYWORDS: dict[str, Callable[[str, Any], Any]] = {
    "mode": _keyword_choice(MODES),
    "host": lambda shown, value: _check_host("", value, shown),
    "op_label": _keyword_choice(OP_LABELS),
    "module_label": _keyword_switch,
    "report": _keyword_text,
    "energy": _keyword_switch,
    "sklearn": _keyword_switch,
    "exporters": _keyword_exporters,
    "otlp_protocol": _keyword_choice(tuple(OTLP_PROTOCOLS)),
    "budget_name": _keyword_text,
    "tls_cert": _keyword_path("OTEL_FLOPS_TLS_CERT", _existing_file),
    "tls_key": _keyword_path("OTEL_FLOPS_TLS_KEY", _existing_file),
    "tls_client_ca": _keyword_path("OTEL_FLOPS_TLS_CLIENT_CA", _existing_file),
    "alpha_profile": _keyword_path("OTEL_FLOPS_ALPHA_PROFILE", _existing_file),
    "file_sd_dir": _keyword_path("OTEL_FLOPS_FILE_SD_DIR", _directory),
    "pool": _keyword_text,
    "run_id": _keyword_text,
    **{field: _keyword_number(field) for field in NUMBERS},
}


def _rank(env: Mapping[str, str]) -> dict[str, int] | None:
    """The rank its launcher's variables give (``ranks``), when this process is one of several."""
    try:
        return ranks.from_env(env)
    except ranks.RankError as exc:
        raise SettingsError(str(exc)) from None


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings from the environment."""
    env = os.environ if env is None else env
    settings = Settings(
        mode=_check_choice("OTEL_FLOPS_MODE", env.get("OTEL_FLOPS_MODE", "steady").lower(), MODES),
        host=_check_host("OTEL_EXPORTER_PROMETHEUS_HOST", env.get("OTEL_EXPORTER_PROMETHEUS_HOST") or "localhost"),
        port=_number(env, "port", 9464),
        op_label=_check_choice("OTEL_FLOPS_OP_LABEL", env.get("OTEL_FLOPS_OP_LABEL", "none").lower(), OP_LABELS),
        op_label_cap=_number(env, "op_label_cap", 50),
        model_label_cap=_number(env, "model_label_cap", 20),
        module_depth=_number(env, "module_depth", 3),
        module_label=_switch(env, "OTEL_FLOPS_MODULE_LABEL", False),
        module_label_cap=_number(env, "module_label_cap", 50),
        window_label_cap=_number(env, "window_label_cap", 20),
        phase_label_cap=_number(env, "phase_label_cap", 20),
        report=env.get("OTEL_FLOPS_REPORT") or None,
        audit_every=_number(env, "audit_every", 1000),
        energy=_switch(env, "OTEL_FLOPS_ENERGY", True),
        energy_interval=_number(env, "energy_interval", 2.0),
        sklearn=_switch(env, "OTEL_FLOPS_SKLEARN", True),
        exporters=_exporters(env),
        otlp_protocol=_otlp_protocol(env),
        budget_name=env.get("OTEL_FLOPS_BUDGET_NAME") or "default",
        budget_flops=_number(env, "budget_flops", None),
        budget_bops=_number(env, "budget_bops", None),
        budget_joules=_number(env, "budget_joules", None),
        tls_cert=_existing_file(env, "OTEL_FLOPS_TLS_CERT"),
        tls_key=_existing_file(env, "OTEL_FLOPS_TLS_KEY"),
        tls_client_ca=_existing_file(env, "OTEL_FLOPS_TLS_CLIENT_CA"),
        rank=_rank(env),
        peak_flops=_number(env, "peak_flops", None),
        alpha_profile=_existing_file(env, "OTEL_FLOPS_ALPHA_PROFILE"),
        run_id=identity.run_id(env),
        pool=env.get("OTEL_FLOPS_POOL") or None,
        node=identity.node(env),
        linger=_number(env, "linger", None),
        file_sd_dir=_directory(env, "OTEL_FLOPS_FILE_SD_DIR"),
    )
    if "otlp" in settings.exporters:
        otlp_exporter(settings.otlp_protocol)
    return _check_tls(settings)


def _check_tls(settings: Settings) -> Settings:
    """``settings`` if its TLS files make a whole set; SettingsError otherwise."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise SettingsError("OTEL_FLOPS_TLS_CERT and OTEL_FLOPS_TLS_KEY (tls_cert, tls_key) go together; "
                            "set both or neither")
    if settings.tls_client_ca and not settings.tls_cert:
        raise SettingsError("OTEL_FLOPS_TLS_CLIENT_CA needs OTEL_FLOPS_TLS_CERT and OTEL_FLOPS_TLS_KEY; set them too")
    return settings


def sdk_disabled(env: Mapping[str, str] | None = None) -> bool:
    """OTEL_SDK_DISABLED=true, OpenTelemetry's switch that makes the whole SDK a no-op: otel-flops
    then counts nothing, binds no port and writes no report. Any other value means enabled (OTel spec)."""
    env = os.environ if env is None else env
    return (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true"


DISABLED_LINE = "otel-flops: OTEL_SDK_DISABLED=true; nothing is counted, served or reported"
_told: set[str] = set()


TOLD_VARIABLE = "OTEL_FLOPS_TOLD"  # the lines `otel-flops run` printed already: the script it starts skips them


def tell(line: str) -> None:
    """Print one line of ours on stderr, once per process (and once per `otel-flops run`): a bad setting,
    inconsistent rank variables or OTEL_SDK_DISABLED under an entry point that must not stop the program."""
    if line not in _told and line not in os.environ.get(TOLD_VARIABLE, "").split("\n"):
        print(line, file=sys.stderr)
    _told.add(line)


def told() -> str:
    """The lines this process has told, for TOLD_VARIABLE."""
    return "\n".join(sorted(_told))


def uncounted_line(exc: SettingsError) -> str:
    """The line for a bad setting met where the program must run anyway: what is wrong, and its fix."""
    return f"otel-flops: {exc}; the program runs without counting"


def load_or_tell() -> Settings | None:
    """The settings from the environment, for an entry point that must never stop the user's program:
    None, after one line on stderr, where nothing is to be counted (OTEL_SDK_DISABLED=true, or a
    variable with a bad value: the line names it and its fix)."""
    if sdk_disabled():
        tell(DISABLED_LINE)
        return None
    try:
        return load()
    except SettingsError as exc:
        tell(uncounted_line(exc))
        return None
