"""EMFILE on accept(): no busy loop, open connections still served, and
accepting resumes when fds free up.

The server runs in a subprocess with RLIMIT_NOFILE lowered to 32, so a few
dozen clients exhaust its fds; the rest wait in the backlog.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time

import pytest

from echo_helpers import ServerProcess, connect, cpu_seconds, recv_exactly

LIMIT = 32
CLIENTS = 40
#: CPU the idle server may use over the window, as a share of it.  A server
#: spinning on accept() uses all it can get; a waiting one next to nothing.
MAX_CPU_SHARE = 0.2
WINDOW = 1.0


def echo_once(sock: socket.socket, message: bytes) -> None:
    sock.sendall(message)
    assert recv_exactly(sock, len(message)) == message


@pytest.mark.timeout(60)
def test_out_of_fds_waits_without_spinning_and_resumes(poller_backend: str) -> None:
    prelude = (
        "import resource\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, hard))\n"
    )
    argv = ["echo", "--port", "0"]
    with ServerProcess(argv, backend=poller_backend, prelude=prelude) as server:
        address = server.wait_listening()
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(connect(address)) for _ in range(CLIENTS)]
            server.wait_for(r"accept\(\) failed: .*Too many open files")

            # Connections accepted before the limit are still served.
            echo_once(clients[0], b"first")

            before = cpu_seconds(server.pid)
            started = time.monotonic()
            time.sleep(WINDOW)  # a measurement window, not a synchronisation
            used = cpu_seconds(server.pid) - before
            elapsed = time.monotonic() - started
            assert used < MAX_CPU_SHARE * elapsed, f"{used:.2f} s CPU in {elapsed:.2f} s"

            # Freeing fds lets the waiting clients in, the last one included.
            for sock in clients[: CLIENTS // 2]:
                sock.close()
            for index, sock in enumerate(clients[CLIENTS // 2 :]):
                echo_once(sock, f"client {index}".encode())
            server.wait_for("accepting connections again")
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.output()
