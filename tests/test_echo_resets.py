"""Resets (RST mid-stream, RST before accept) drop only that client."""

from __future__ import annotations

import socket
import struct

import pytest

from echo_helpers import connect, recv_exactly, running, send_until_paused, serving, wait_until
from pollkit import Poller
from pollkit.echo import EchoServer


def linger_zero(sock: socket.socket) -> None:
    """Make close() send RST instead of FIN (SO_LINGER on, timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def assert_served(sock: socket.socket, message: bytes = b"still here") -> None:
    sock.sendall(message)
    assert recv_exactly(sock, len(message)) == message


@pytest.mark.parametrize("when", ["while-reading", "with-echo-pending"])
def test_reset_mid_stream_drops_only_that_client(poller: Poller, when: str) -> None:
    with serving(poller, max_buffer=64 * 1024) as server, connect(server.address) as other:
        assert_served(other)
        with connect(server.address) as rude:
            if when == "with-echo-pending":
                send_until_paused(server, rude)
            else:
                rude.sendall(b"x" * 10_000)
                wait_until(lambda: server.stats().connections == 2, what="both connected")
            linger_zero(rude)
        wait_until(lambda: server.stats().connections == 1, what="the reset client dropped")
        assert server.stats().dropped == 1
        assert_served(other)


def test_reset_before_accept(poller: Poller) -> None:
    with EchoServer(poller, "127.0.0.1", 0) as server:
        # The server listens but does not run yet: the connection waits in the
        # backlog, and is reset there.
        with connect(server.address) as rude:
            rude.sendall(b"never read")
            linger_zero(rude)
        with running(server, poller), connect(server.address) as polite:
            assert_served(polite)
            wait_until(lambda: server.stats().connections == 1, what="only the polite client")
