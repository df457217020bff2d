"""EPIPE with SIGPIPE at its default: writing to a client that reset the
connection drops that client, and never kills the server (MSG_NOSIGNAL).

Python ignores SIGPIPE at start-up, so the server runs in a subprocess that
restores the default first.  The client gets the server to write after the
kernel has set EPIPE: it sends more than the kernel buffers hold (the server
keeps reading: ``--max-buffer`` is large), half-closes, waits until the
server's kernel has its FIN (CLOSE_WAIT there), then resets.  A reset in
CLOSE_WAIT makes the next send() fail with EPIPE, which raises SIGPIPE
unless MSG_NOSIGNAL is passed.
"""

from __future__ import annotations

import signal
import socket
import struct
import time

import pytest

from echo_helpers import PROMPT, ServerProcess, connect, recv_exactly

ROUNDS = 3
PAYLOAD = b"p" * (8 * 1024 * 1024)
_TCP_FIN_WAIT2 = 5


def fin_acknowledged(sock: socket.socket) -> bool:
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return state == _TCP_FIN_WAIT2


@pytest.mark.timeout(60)
def test_epipe_drops_the_client_and_spares_the_server(poller_backend: str) -> None:
    prelude = "import signal\nsignal.signal(signal.SIGPIPE, signal.SIG_DFL)\n"
    argv = ["echo", "--port", "0", "--max-buffer", str(64 * 1024 * 1024), "--log-level", "debug"]
    with ServerProcess(argv, backend=poller_backend, prelude=prelude) as server:
        address = server.wait_listening()
        for _ in range(ROUNDS):
            with connect(address, rcvbuf=4096) as rude:
                rude.sendall(PAYLOAD)
                rude.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + PROMPT
                while not fin_acknowledged(rude):
                    assert time.monotonic() < deadline, "the server's kernel never got the FIN"
                    time.sleep(0.005)
                rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            server.wait_for(r"fd \d+: dropped")
        with connect(address) as polite:
            polite.sendall(b"alive?")
            assert recv_exactly(polite, 6) == b"alive?"
        assert server.process.poll() is None, "the server died"
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.output()
    assert "Broken pipe" in server.output()
