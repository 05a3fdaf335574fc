"""The Prometheus /metrics endpoint: one thread per connection, bounded, each with its own timeouts.

prometheus_client's ``start_http_server`` wraps the listening socket in TLS, so every handshake
runs inside ``accept()`` on the one serving thread: a single idle TCP connection stalls every
HTTPS scrape. Here the serving thread only accepts; each connection gets a thread of its own that
does the handshake and reads the request under a timeout, and at most ``MAX_CONNECTIONS`` are
served at once (a connection past that is closed at once, never queued behind the others).
The page itself is prometheus_client's WSGI app.

Forked children (DataLoader workers) close the listening socket and the connections in flight,
so a child that outlives the session never holds the port.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl
import threading
import weakref
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import make_wsgi_app

log = logging.getLogger("otel_flops")

TIMEOUT_S = 10.0  # a handshake or a request read that stalls longer is dropped (Prometheus' default scrape timeout)
MAX_CONNECTIONS = 64


class _Handler(WSGIRequestHandler):
    timeout = TIMEOUT_S  # StreamRequestHandler applies it to every read and write

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: the user's stderr is theirs."""


class MetricsServer(ThreadingMixIn, WSGIServer):
    """Serves a prometheus_client registry; TLS when ``tls`` (a server-side SSLContext) is given."""

    daemon_threads = True  # stopping never waits on a stalled client
    request_queue_size = 128  # listen backlog: a burst of connections waits to be accepted, none is dropped

    def __init__(self, address: tuple[str, int], registry: Any, tls: ssl.SSLContext | None = None) -> None:
        self.address_family = socket.getaddrinfo(*address, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        super().__init__(address, _Handler)
        self.set_app(make_wsgi_app(registry))
        self.tls = tls
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._open: set[socket.socket] = set()
        self._scrapes = threading.Condition()
        self._started = self._answered = 0  # requests started, and answered in full
        self._final_after: int | None = None  # requests started before the final state was set
        self._final_answered = False
        _LIVE.add(self)

    @property
    def scraped(self) -> bool:
        """Whether any request has been answered."""
        return self._answered > 0

    def wait_final_scrape(self, timeout: float) -> bool:
        """From now on the page shows the final state: wait (at most ``timeout`` s) until a request
        that started after this call has been answered in full. True when one was."""
        with self._scrapes:
            self._final_after = self._started
            self._final_answered = False
            return self._scrapes.wait_for(lambda: self._final_answered, timeout)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        self._open.add(request)
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread could be started
            self._done(request)

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        served = request
        with self._scrapes:
            self._started += 1
            number = self._started
        try:
            request.settimeout(TIMEOUT_S)
            if self.tls:
                served = self.tls.wrap_socket(request, server_side=True)  # takes over the descriptor
                self._open.add(served)
            self.finish_request(served, client_address)
            self._answer(number)
        except OSError as exc:  # a client that stalls, hangs up or fails the handshake
            log.debug("otel-flops: /metrics connection from %s dropped: %s", client_address, exc)
        except Exception:
            log.debug("otel-flops: /metrics connection from %s failed", client_address, exc_info=True)
        finally:
            self._open.discard(request)
            self._done(served)

    def _answer(self, number: int) -> None:
        with self._scrapes:
            self._answered += 1
            if self._final_after is not None and number > self._final_after:
                self._final_answered = True
                self._scrapes.notify_all()

    def _done(self, connection: socket.socket) -> None:
        self._open.discard(connection)
        self.shutdown_request(connection)
        self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("otel-flops: /metrics request from %s failed", client_address, exc_info=True)

    def close_in_child(self) -> None:
        """After fork: the child must not keep the port or a scrape open; the parent still serves."""
        for sock in [self.socket, *self._open]:
            with contextlib.suppress(OSError):
                sock.close()


def tls_context(certfile: str, keyfile: str, client_cafile: str | None = None) -> ssl.SSLContext:
    """A server context; with ``client_cafile``, clients must present a certificate it signed.

    Raises OSError or ssl.SSLError when a file cannot be read or the key does not match."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    if client_cafile:
        context.load_verify_locations(cafile=client_cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


_HOST_FIX = "set OTEL_EXPORTER_PROMETHEUS_HOST or --host to "
_PORT_FIX = "set OTEL_EXPORTER_PROMETHEUS_PORT or --port to "
# The fix for each cause of a failed bind, by errno (socket.gaierror: the host does not resolve).
BIND_FIXES = {
    errno.EADDRINUSE: _PORT_FIX + "a free port (0 picks one)",
    errno.EACCES: _PORT_FIX + "1024 or above (lower ports need privileges; 0 picks a free one)",
    errno.EADDRNOTAVAIL: _HOST_FIX + "an address of this machine (e.g. localhost, or 0.0.0.0 for all)",
}
UNRESOLVED_FIX = _HOST_FIX + "a name this machine resolves, or an IP address of it (e.g. localhost or 0.0.0.0)"
OTHER_FIX = "check OTEL_EXPORTER_PROMETHEUS_HOST/--host and OTEL_EXPORTER_PROMETHEUS_PORT/--port"


def bind_fix(exc: OSError) -> str:
    """The fix for ``exc``, raised by ``serve``: the host's when the host is wrong, the port's when the port is."""
    if isinstance(exc, socket.gaierror):
        return UNRESOLVED_FIX
    return BIND_FIXES.get(exc.errno, OTHER_FIX)


def serve(host: str, port: int, registry: Any, tls: ssl.SSLContext | None = None) -> MetricsServer:
    """Bind (port 0 picks one) and serve from a daemon thread; stop with ``shutdown()`` and
    ``server_close()``. Raises OSError when the address cannot be bound."""
    server = MetricsServer((host, port), registry, tls)
    threading.Thread(target=server.serve_forever, name="otel-flops-metrics", daemon=True).start()
    return server


_LIVE: weakref.WeakSet[MetricsServer] = weakref.WeakSet()


def _close_in_child() -> None:
    for server in list(_LIVE):
        server.close_in_child()


os.register_at_fork(after_in_child=_close_in_child)
