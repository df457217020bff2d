"""UDP: every datagram comes back to its sender exactly, the empty one and
the largest IPv4 allows (65,507 bytes) included."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from echo_helpers import running, serving, wait_until
from pollkit import Poller
from pollkit.echo import MAX_DATAGRAM, EchoServer


@pytest.fixture
def udp_client() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        yield sock


def round_trip(sock: socket.socket, server: EchoServer, data: bytes) -> bytes:
    sock.sendto(data, server.address)
    reply, peer = sock.recvfrom(65536)
    assert peer == server.address
    return reply


@pytest.mark.parametrize("size", [0, 1, 1472, 9000, MAX_DATAGRAM])
def test_datagrams_echoed_exactly(poller: Poller, udp_client: socket.socket, size: int) -> None:
    data = random.Random(size).randbytes(size)
    with serving(poller, udp=True) as server:
        assert round_trip(udp_client, server, data) == data


def test_each_sender_gets_its_own(poller: Poller) -> None:
    with serving(poller, udp=True) as server:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
        ):
            for sock in (a, b):
                sock.settimeout(10)
            a.sendto(b"from a", server.address)
            b.sendto(b"from b", server.address)
            assert b.recv(100) == b"from b"
            assert a.recv(100) == b"from a"
        assert server.stats().connections == 0


def test_a_burst_is_echoed_in_order(poller: Poller, udp_client: socket.socket) -> None:
    # Fewer bytes than the default socket buffers hold, so loopback drops none.
    datagrams = [f"datagram {index}".encode() * 10 for index in range(100)]
    with serving(poller, udp=True) as server:
        for data in datagrams:
            udp_client.sendto(data, server.address)
        replies = [udp_client.recv(65536) for _ in datagrams]
    assert replies == datagrams


class _Balking:
    """A stand-in for the server's UDP socket whose sendto() can be made to
    fail with EAGAIN, as a full socket buffer would (loopback never fills)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.full = threading.Event()
        self.full.set()

    def sendto(self, data: bytes, address: tuple[Any, ...]) -> int:
        if self.full.is_set():
            raise BlockingIOError
        return self._sock.sendto(data, address)

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


def test_datagrams_queue_while_the_socket_is_full(
    poller: Poller, udp_client: socket.socket
) -> None:
    datagrams = [b"one", b"two" * 40, b"", b"four" * 10]
    server = EchoServer(poller, "127.0.0.1", 0, udp=True, max_buffer=100)
    balking = _Balking(server._listener)  # white-box: no public way to fill a loopback socket
    server._listener = balking  # type: ignore[assignment]  # duck-typed for the test
    with server, running(server, poller):
        for data in datagrams:
            udp_client.sendto(data, server.address)
        # Queued in order; past max_buffer (100 bytes) the server stops reading.
        wait_until(lambda: server.stats().paused == 1, what="reading paused")
        assert server.stats().pending_bytes == len(b"one") + len(b"two" * 40)
        balking.full.clear()
        replies = [udp_client.recv(65536) for _ in datagrams]
        assert replies == datagrams
        wait_until(lambda: server.stats().pending_bytes == 0, what="queue drained")
        assert server.stats().paused == 0
