"""White-box checks of the server layer that its public API cannot show: it
imports no driver, keeps its hot path free of registration changes, stores
connections without per-object dicts, compacts cancelled timers, and a
worker's watch of its parent is a reader on the loop, not a thread."""

from __future__ import annotations

import ast
import os
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import pollkit.server
from conftest import Delegating
from echo_helpers import PROMPT, connect, recv_exactly, running, wait_until
from pollkit import Poller
from pollkit.echo import EchoServer
from pollkit.echo._server import _Echo
from pollkit.server import Server
from pollkit.server._transport import Transport
from pollkit.server._workers import GRACEFUL, watch_parent
from server_helpers import running as serving_thread

LAYER = Path(pollkit.server.__file__).parent
#: What the layer may import from pollkit: the interface, never a driver.
ALLOWED = {"_base", "_events", "_validate", "errors"}


def test_the_layer_imports_no_driver() -> None:
    for module in sorted(LAYER.glob("*.py")):
        tree = ast.parse(module.read_text(), filename=str(module))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
                assert not [n for n in names if n in ("select", "selectors")], module.name
            elif isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module in ALLOWED, f"{module.name} imports pollkit.{node.module}"
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module not in ("select", "selectors"), module.name


class CountingPoller(Delegating):
    """Delegates to a driver and counts the calls that change registrations."""

    def __init__(self, inner: Poller) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()

    def register(
        self, fd: Any, events: int, *, oneshot: bool = False, edge: bool = False,
        exclusive: bool = False,
    ) -> None:  # fmt: skip
        self.calls["register"] += 1
        self.inner.register(fd, events, oneshot=oneshot, edge=edge, exclusive=exclusive)

    def modify(self, fd: Any, events: int, *, oneshot: bool = False, edge: bool = False) -> None:
        self.calls["modify"] += 1
        self.inner.modify(fd, events, oneshot=oneshot, edge=edge)

    def unregister(self, fd: Any) -> None:
        self.calls["unregister"] += 1
        self.inner.unregister(fd)


@pytest.mark.timeout(60)
def test_small_echoes_change_no_registration(poller: Poller) -> None:
    counting = CountingPoller(poller)
    with (
        EchoServer(counting, "127.0.0.1", 0) as server,
        running(server, counting),
        connect(server.address) as sock,
    ):
        sock.sendall(b"warm")
        assert recv_exactly(sock, 4) == b"warm"
        before = dict(counting.calls)
        for index in range(200):
            message = b"message %d" % index
            sock.sendall(message)
            assert recv_exactly(sock, len(message)) == message
        assert dict(counting.calls) == before, "a small echo changed a registration"


def test_connections_carry_no_dict() -> None:
    assert not hasattr(_Echo(), "__dict__")
    assert "__dict__" not in dir(Transport)
    assert not hasattr(Transport, "__dictoffset__") or Transport.__dictoffset__ == 0


def test_cancelled_timers_are_compacted(poller: Poller) -> None:
    with Server(poller, pollkit.server.Protocol, "127.0.0.1", 0) as server:
        timers = [server.call_later(60 + index, print) for index in range(1000)]
        for timer in timers[:900]:
            timer.cancel()
        assert len(server._timers) < 1000  # rebuilt once most entries were cancelled
        assert sum(not entry[2].cancelled() for entry in server._timers) == 100
        for timer in timers[900:]:
            timer.cancel()


@pytest.mark.timeout(60)
def test_a_workers_parent_watch_is_a_reader_not_a_thread(poller: Poller) -> None:
    control_read, control_write = os.pipe()
    try:
        server = Server(poller, pollkit.server.Protocol, "127.0.0.1", 0)
        watch_parent(server, control_read)
        assert control_read in server._readers
        threads = threading.active_count()
        done = threading.Event()

        def serve() -> None:
            server.serve_forever()
            done.set()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert threading.active_count() == threads + 1  # the test's own thread, no other
        os.write(control_write, GRACEFUL)
        assert done.wait(PROMPT), "the parent's 'g' did not stop the server"
        thread.join(PROMPT)
        assert len(poller) == 0
    finally:
        os.close(control_read)
        os.close(control_write)


@pytest.mark.timeout(60)
def test_the_parents_end_of_file_stops_the_worker_gracefully(poller: Poller) -> None:
    control_read, control_write = os.pipe()
    try:
        with Server(poller, pollkit.server.Protocol, "127.0.0.1", 0) as server:
            watch_parent(server, control_read)
            os.close(control_write)
            control_write = -1
            server.serve_forever()  # returns: the pipe's EOF asked for a graceful stop
        assert len(poller) == 0
    finally:
        os.close(control_read)
        if control_write >= 0:
            os.close(control_write)


def test_peer_close_while_paused_by_the_application_is_quiet(poller: Poller) -> None:
    """A paused connection is not registered at all: nothing to report, no spin."""

    class Pausing(pollkit.server.Protocol):
        def connection_made(self, transport: Transport) -> None:
            transport.pause_reading()

    with (
        Server(poller, Pausing, "127.0.0.1", 0) as server,
        serving_thread(server, poller),
        socket.create_connection(server.address, timeout=PROMPT) as sock,
    ):
        sock.sendall(b"ignored")
        wait_until(lambda: server.stats().paused == 1, what="the connection paused")
        assert registered_fds(server) == {server._listener.fd}


def registered_fds(server: Server) -> set[int]:
    """The fds the server has in its poller, apart from its signal pipe."""
    signals = server._signals
    pipe = {signals.read_fd} if signals is not None else set()
    return {fd for fd in [server._listener.fd, *server._connections] if fd in server.poller} - pipe
