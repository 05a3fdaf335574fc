"""A fleet's needs of one process: its run identity, safe label values, the final scrape it waits
for, and one energy publisher per machine."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.request

import torch
from conftest import scrape

import otel_flops
from otel_flops import identity
from otel_flops.energy import node_lock
from otel_flops.settings import load


def test_run_id_from_the_variable_then_resource_attributes_then_generated_once():
    assert load({"OTEL_FLOPS_RUN_ID": "r1"}).run_id == "r1"
    env = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=train,service.instance.id=job%2F7"}
    assert load(env).run_id == "job/7"
    child = "from otel_flops.settings import load; print(load().run_id)"
    code = ("import os, subprocess, sys; from otel_flops.settings import load; s = load(); "
            f"child = subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, text=True); "
            "print(s.run_id == child.stdout.strip() == os.environ['OTEL_FLOPS_RUN_ID'])")
    env = {k: v for k, v in os.environ.items() if k not in ("OTEL_FLOPS_RUN_ID", "OTEL_RESOURCE_ATTRIBUTES")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


def test_every_series_carries_run_pool_and_node_and_a_lone_surrogate_is_served(monkeypatch):
    monkeypatch.setenv("OTEL_FLOPS_RUN_ID", "run-7")
    monkeypatch.setenv("OTEL_FLOPS_POOL", "team")
    monkeypatch.setenv("OTEL_FLOPS_NODE", "node-3")
    with otel_flops.track(serve=True, port=0, host="127.0.0.1", energy=False, budget_flops=1e9) as tracker:
        with otel_flops.phase("bad \udcff"):
            torch.ones(4, 4) @ torch.ones(4, 4)
        samples = scrape(tracker.endpoint.url)
        assert scrape(tracker.endpoint.url)  # the next scrape too: nothing broke
    [(labels, value)] = samples["otel_flops_flops_total"]
    assert value == 128 and labels["phase"] == "bad \\udcff"
    for name in ("otel_flops_flops_total", "otel_flops_budget_flops", "otel_flops_run_started"):
        for labels, _ in samples[name]:
            assert (labels["run"], labels["pool"], labels["node"]) == ("run-7", "team", "node-3"), name
    assert "otel_flops_run_finished" not in samples


def test_at_the_end_metrics_wait_for_one_scrape_of_the_final_state(monkeypatch):
    monkeypatch.setenv("OTEL_FLOPS_LINGER", "60")
    tracker = otel_flops.track(serve=True, port=0, host="127.0.0.1", energy=False)
    torch.ones(4, 4) @ torch.ones(4, 4)
    url, seen, stopped = tracker.endpoint.url, [], threading.Event()

    def scraper() -> None:  # a Prometheus that scrapes until it sees the run finished
        while not seen and not stopped.is_set():
            page = scrape(url)
            if "otel_flops_run_finished" in page:
                seen.extend(page["otel_flops_flops_total"])

    thread = threading.Thread(target=scraper)
    thread.start()
    tracker.__exit__(None, None, None)  # on the session's own thread: it waits for that scrape
    stopped.set()
    thread.join(timeout=30)
    assert not thread.is_alive() and [value for _, value in seen] == [128]
    try:
        urllib.request.urlopen(url, timeout=2)
        raise AssertionError("still serving after the final scrape")
    except OSError:
        pass


def test_one_process_per_machine_holds_the_energy_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_FLOPS_LOCK_DIR", str(tmp_path))
    held = node_lock.acquire()
    assert held is not None
    code = "from otel_flops.energy import node_lock; print(node_lock.acquire() is None)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert other.stdout.strip() == "True", other.stderr
    os.close(held)
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert other.stdout.strip() == "False", other.stderr
    assert identity.node({"OTEL_FLOPS_NODE": "n1"}) == "n1"
