"""Every keyword of track()/instrument() is checked by the rules of its environment variable: a bad one is
a SettingsError whose one line names the keyword (``track(mode='fast')``) and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import otel_flops
from otel_flops.settings import KEYWORDS, Settings, SettingsError


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("OTEL_FLOPS_ENERGY", "off")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")


BAD = [
    ({"bogus": 1}, "track(bogus=1): there is no such setting; use one of: mode, host"),
    ({"caller": 1}, "track(caller=1): there is no such setting"),
    ({"port": "abc"}, "track(port='abc') is not a whole number; set a whole number from 0 to 65535"),
    ({"port": 70000}, "track(port=70000) is out of range; set a whole number from 0 to 65535"),
    ({"port": True}, "track(port=True) is not a whole number"),
    ({"energy": "maybe"}, "track(energy='maybe') is not valid; use True or False"),
    ({"serve": "yes"}, "track(serve='yes') is not valid; use True or False"),
    ({"mode": "fast"}, "track(mode='fast') is not valid; use one of: steady, full"),
    ({"op_label": "all"}, "track(op_label='all') is not valid; use one of: none, family, op"),
    ({"host": "a b"}, "track(host='a b') is not a host name or IP address"),
    ({"host": 3}, "track(host=3) is not a host name or IP address"),
    ({"exporters": "prom"}, "track(exporters='prom') is not valid; use one of: prometheus, otlp, console, none"),
    ({"budget_flops": -1}, "track(budget_flops=-1) is out of range; set a finite number > 0"),
    ({"energy_interval": "2"}, "track(energy_interval='2') is not a number"),
    ({"module_depth": 65}, "track(module_depth=65) is out of range; set a whole number from 0 to 64"),
    ({"tls_cert": "/no/such/cert.pem"}, "track(tls_cert='/no/such/cert.pem') is not a readable file"),
    ({"report": 3}, "track(report=3) is not valid; use a non-empty string"),
    ({"name": 3}, "track(name=3) is not valid; use a non-empty string"),
]


@pytest.mark.parametrize(("keywords", "line"), BAD, ids=[next(iter(k)) + "-" + repr(v) for k, v in
                                                         ((k, next(iter(k.values()))) for k, _ in BAD)])
def test_a_bad_track_keyword_is_one_line_naming_it(keywords, line):
    with pytest.raises(SettingsError) as caught:
        otel_flops.track(nn.Linear(2, 2), **keywords)
    assert str(caught.value).startswith(line)
    assert "\n" not in str(caught.value)


def test_instrument_names_itself_and_cli_flags_keep_their_spelling():
    with pytest.raises(SettingsError, match=r"^instrument\(port=-1\) is out of range"):
        otel_flops.instrument(serve=False, port=-1)
    with pytest.raises(SettingsError, match=r"^--mode='fast' is not valid"):
        Settings().with_overrides(mode="fast")


def test_good_keywords_are_accepted_and_applied():
    model = nn.Linear(4, 3)
    with otel_flops.track(model, mode="full", port=0, energy="off", sklearn=False, budget_flops=1e9,
                          exporters="none", module_depth=1, name="lin") as tracker:
        model(torch.randn(5, 4))
    settings = tracker.session.settings
    assert (settings.mode, settings.energy, settings.sklearn, settings.exporters) == ("full", False, False, ("none",))
    assert (settings.budget_flops, settings.module_depth) == (1e9, 1)
    assert tracker.report()["totals"]["flops"] == 2 * 5 * 4 * 3  # addmm: 2MNK, as FlopCounterMode counts it


def test_every_settings_field_but_the_launchers_is_a_keyword():
    fields = set(Settings.__dataclass_fields__)
    assert fields - set(KEYWORDS) == {"rank", "node"}
