"""``--workers N``: N processes share the port through SO_REUSEPORT; a
signal to the parent stops them all gracefully, and no worker outlives the
parent, even one killed with SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import socket

import pytest

from echo_helpers import ServerProcess, children_of, connect, exchange, is_gone, wait_until

WORKERS = 2
_READY = r"(\d+) workers serving echo over \w+ on \[?([^\]\s]+?)\]?:(\d+)"


def start(poller_backend: str, *extra: str) -> tuple[ServerProcess, tuple[str, int], list[int]]:
    argv = ["echo", "--port", "0", "--workers", str(WORKERS), *extra]
    server = ServerProcess(argv, backend=poller_backend)
    match = server.wait_for(_READY)
    assert int(match.group(1)) == WORKERS
    workers = children_of(server.pid)
    assert len(workers) == WORKERS, workers
    return server, (match.group(2), int(match.group(3))), workers


@pytest.mark.timeout(60)
def test_workers_serve_and_stop_with_the_parent(poller_backend: str) -> None:
    server, address, workers = start(poller_backend)
    with server:
        with contextlib.ExitStack() as stack:
            socks = [stack.enter_context(connect(address)) for _ in range(20)]
            payloads = [os.urandom(10_000 * (index + 1)) for index in range(20)]
            assert exchange(socks, payloads) == payloads
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.output()
    for pid in workers:
        assert is_gone(pid), f"worker {pid} outlived the parent"
    assert server.output().count("serving echo over tcp") == WORKERS + 1  # each, and the parent


@pytest.mark.timeout(60)
def test_no_orphans_when_the_parent_is_killed(poller_backend: str) -> None:
    server, _, workers = start(poller_backend)
    with server:
        server.signal(signal.SIGKILL)
        server.wait()
        wait_until(lambda: all(is_gone(pid) for pid in workers), what="every worker gone")


@pytest.mark.timeout(60)
def test_a_dead_worker_stops_the_rest(poller_backend: str) -> None:
    server, _, workers = start(poller_backend)
    with server:
        os.kill(workers[0], signal.SIGKILL)
        assert server.wait() == 1, server.output()
    assert f"worker {workers[0]} exited with status -9; stopping the others" in server.output()
    assert is_gone(workers[1])


@pytest.mark.timeout(60)
def test_workers_serve_udp(poller_backend: str) -> None:
    server, address, _ = start(poller_backend, "--udp")
    with server:
        # Each datagram from its own socket (own port), so they spread over
        # the workers; every one must come back.
        for index in range(20):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(10)
                sock.sendto(f"datagram {index}".encode(), address)
                assert sock.recv(100) == f"datagram {index}".encode()
        server.signal(signal.SIGINT)
        assert server.wait() == 0, server.output()
