"""Settings from OTEL_* / OTEL_FLOPS_* variables and CLI flags, validated at start-up.

A bad value stops start-up with one line that names the variable and the accepted values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

MODES = ("steady", "full")
OP_LABELS = ("none", "family", "op")


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
    report: str | None = None
    audit_every: int = 1000
    energy: bool = True
    energy_interval: float = 2.0
    sklearn: bool = True

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply CLI flags that were given (None means 'not given') and re-validate."""
        given = {k: v for k, v in overrides.items() if v is not None}
        updated = replace(self, **given)
        _check_choice("--mode", updated.mode, MODES)
        _check_port("--port", updated.port)
        return updated


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SettingsError(f"{name}={value!r} is not valid; use one of: {', '.join(choices)}")
    return value


def _check_port(name: str, port: int) -> int:
    if not 0 <= port <= 65535:
        raise SettingsError(f"{name}={port} is not a valid port; use 0-65535 (0 picks a free port)")
    return port


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer; set a whole number >= {minimum}") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is too small; set a whole number >= {minimum}")
    return value


SWITCHES = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False, "no": False}


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return SWITCHES[raw.lower()]
    except KeyError:
        raise SettingsError(f"{name}={raw!r} is not valid; use one of: on, off") from None


def _float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set a number >= {minimum}") from None
    if not value >= minimum:
        raise SettingsError(f"{name}={value} is too small; set a number >= {minimum}")
    return value


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings from the environment."""
    env = os.environ if env is None else env
    return Settings(
        mode=_check_choice("OTEL_FLOPS_MODE", env.get("OTEL_FLOPS_MODE", "steady").lower(), MODES),
        host=env.get("OTEL_EXPORTER_PROMETHEUS_HOST") or "localhost",
        port=_check_port("OTEL_EXPORTER_PROMETHEUS_PORT", _int(env, "OTEL_EXPORTER_PROMETHEUS_PORT", 9464)),
        op_label=_check_choice("OTEL_FLOPS_OP_LABEL", env.get("OTEL_FLOPS_OP_LABEL", "none").lower(), OP_LABELS),
        op_label_cap=_int(env, "OTEL_FLOPS_OP_LABEL_CAP", 50, minimum=1),
        model_label_cap=_int(env, "OTEL_FLOPS_MODEL_LABEL_CAP", 20, minimum=1),
        report=env.get("OTEL_FLOPS_REPORT") or None,
        audit_every=_int(env, "OTEL_FLOPS_AUDIT_EVERY", 1000, minimum=1),
        energy=_switch(env, "OTEL_FLOPS_ENERGY", True),
        energy_interval=_float(env, "OTEL_FLOPS_ENERGY_INTERVAL", 2.0, minimum=0.1),
        sklearn=_switch(env, "OTEL_FLOPS_SKLEARN", True),
    )
