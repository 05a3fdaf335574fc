"""The /metrics endpoint on real sockets: idle clients block no scrape, connections are bounded,
and forked DataLoader workers never keep the port."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
from conftest import free_port, training_step
from test_exporters import self_signed

import otel_flops
from otel_flops.metrics_server import MAX_CONNECTIONS


@contextlib.contextmanager
def idle_connections(port: int, n: int):
    """``n`` TCP connections that connect and then say nothing, held open for the block."""
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
    try:
        yield held
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
def test_twenty_idle_connections_do_not_block_a_scrape(tmp_path, tls):
    port = free_port()
    files = dict(zip(("tls_cert", "tls_key"), map(str, self_signed(tmp_path)))) if tls else {}
    context = ssl.create_default_context(cafile=files["tls_cert"]) if tls else None
    with otel_flops.track(serve=True, host="127.0.0.1", port=port, energy=False, **files) as tracker:
        training_step("mlp")
        with idle_connections(port, 20):
            body = urllib.request.urlopen(tracker.endpoint.url, context=context, timeout=5).read().decode()
            again = urllib.request.urlopen(tracker.endpoint.url, context=context, timeout=5).read().decode()
        url = tracker.endpoint.url
    assert url.startswith("https://" if tls else "http://")
    assert "otel_flops_flops_total" in body and "otel_flops_flops_total" in again


def test_connections_past_the_bound_are_closed_at_once_and_serving_resumes(tmp_path):
    port = free_port()
    with otel_flops.track(serve=True, host="127.0.0.1", port=port, energy=False) as tracker:
        training_step("mlp")
        with idle_connections(port, MAX_CONNECTIONS):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
                assert extra.recv(1) == b""  # closed by the server, not left waiting
        deadline = time.monotonic() + 30  # the idle connections' threads end as their clients hang up
        while True:
            try:
                body = urllib.request.urlopen(tracker.endpoint.url, timeout=5).read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "the endpoint never served again"
                time.sleep(0.1)
    assert "otel_flops_flops_total" in body


FORKED_WORKERS = textwrap.dedent(
    """
    import multiprocessing, socket, sys, urllib.request
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    import otel_flops

    port = int(sys.argv[1])
    loader = DataLoader(TensorDataset(torch.arange(8.0)), batch_size=2, num_workers=2,
                        persistent_workers=True, multiprocessing_context="fork")
    with otel_flops.track(serve=True, host="127.0.0.1", port=port, energy=False):
        for (x,) in loader:
            (x * 2).sum()
    print("workers alive after the session:", len(multiprocessing.active_children()))
    probe = socket.socket()
    probe.settimeout(5)
    try:
        probe.connect(("127.0.0.1", port))
        print("connect: accepted")
    except ConnectionRefusedError:
        print("connect: refused")
    with otel_flops.track(serve=True, host="127.0.0.1", port=port, energy=False) as tracker:
        print("second session:", tracker.endpoint and tracker.endpoint.url)
        print("scrape:", urllib.request.urlopen(tracker.endpoint.url, timeout=5).status)
    """
)


def test_forked_dataloader_workers_do_not_keep_the_port(tmp_path):
    script, port = tmp_path / "workers.py", free_port()
    script.write_text(FORKED_WORKERS)
    result = subprocess.run([sys.executable, str(script), str(port)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "workers alive after the session: 2",
        "connect: refused",
        f"second session: http://127.0.0.1:{port}/metrics",
        "scrape: 200",
    ]
