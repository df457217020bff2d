"""The datagram server: ``DatagramServer`` with a ``DatagramProtocol``.

Each datagram reaches ``datagram_received(data, addr)`` with its sender's
address, whole (an empty one too, a large one too); the protocol answers
through ``sendto()``; ``connection_made()`` comes once before any datagram
and ``connection_lost()`` once at the end; a graceful stop sends the queued
datagrams first.  The protocol is not echo: it upper-cases and numbers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from echo_helpers import PROMPT, wait_until
from pollkit import Poller, PollkitError
from pollkit.server import DatagramProtocol, DatagramServer, DatagramTransport
from server_helpers import LOOP_THREAD, running

Address = tuple[str, int]


class NumberedUpper(DatagramProtocol):
    """Answers each datagram with its number (per sender) and the data upper-cased.

    ``burst N`` asks for N numbered datagrams of 1000 bytes at once.
    """

    def __init__(self) -> None:
        self.transport: DatagramTransport | None = None
        self.calls: list[str] = []
        self.threads: set[str] = set()
        self.counts: dict[Address, int] = {}
        self.errors: list[BaseException] = []
        self.lost = threading.Event()

    def _note(self, name: str) -> None:
        self.calls.append(name)
        self.threads.add(threading.current_thread().name)

    def connection_made(self, transport: Any) -> None:
        self._note("connection_made")
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._note("datagram_received")
        assert self.transport is not None
        if data.startswith(b"burst "):
            for number in range(int(data[6:])):
                self.transport.sendto(b"%05d" % number + b"b" * 995, addr)
            return
        if data == b"send a str":
            try:
                self.transport.sendto("text", addr)  # type: ignore[arg-type]  # the wrong type is the input under test
            except (TypeError, PollkitError) as exc:
                self.errors.append(exc)
            self.transport.sendto(b"refused", addr)
            return
        number = self.counts.get(addr, 0)
        self.counts[addr] = number + 1
        self.transport.sendto(b"%d:" % number + data.upper(), addr)

    def error_received(self, exc: Exception) -> None:
        self._note("error_received")

    def connection_lost(self, exc: Exception | None) -> None:
        self._note("connection_lost")
        self.lost.set()


@pytest.fixture
def udp_server(poller: Poller) -> Iterator[tuple[DatagramServer, NumberedUpper]]:
    protocols: list[NumberedUpper] = []

    def factory() -> NumberedUpper:
        protocols.append(NumberedUpper())
        return protocols[-1]

    with DatagramServer(poller, factory, "127.0.0.1", 0) as server, running(server, poller):
        wait_until(lambda: protocols, what="the datagram protocol made")
        yield server, protocols[0]
    assert len(poller) == 0


@contextlib.contextmanager
def udp_client(rcvbuf: int | None = None) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(PROMPT)
        yield sock
    finally:
        sock.close()


def ask(sock: socket.socket, address: Address, data: bytes) -> bytes:
    sock.sendto(data, address)
    reply, sender = sock.recvfrom(65536)
    assert sender == address
    return reply


@pytest.mark.timeout(30)
def test_each_datagram_is_answered_to_its_sender(
    udp_server: tuple[DatagramServer, NumberedUpper],
) -> None:
    server, _ = udp_server
    with udp_client() as first, udp_client() as second:
        for number in range(20):
            assert ask(first, server.address, b"one %d" % number) == b"%d:ONE %d" % (number, number)
            assert ask(second, server.address, b"two") == b"%d:TWO" % number


@pytest.mark.timeout(30)
def test_empty_and_large_datagrams_arrive_whole(
    udp_server: tuple[DatagramServer, NumberedUpper],
) -> None:
    server, _ = udp_server
    large = b"x" * 65000
    with udp_client(rcvbuf=1 << 20) as sock:
        assert ask(sock, server.address, b"") == b"0:"
        assert ask(sock, server.address, large) == b"1:" + large.upper()


@pytest.mark.timeout(30)
def test_sendto_refuses_a_str(udp_server: tuple[DatagramServer, NumberedUpper]) -> None:
    server, protocol = udp_server
    with udp_client() as sock:
        assert ask(sock, server.address, b"send a str") == b"refused"
        assert ask(sock, server.address, b"still served") == b"0:STILL SERVED"
    (error,) = protocol.errors
    assert "str" in str(error)


@pytest.mark.timeout(30)
def test_a_stop_asked_during_a_burst_lets_the_whole_burst_out(poller: Poller) -> None:
    """shutdown() from another thread while a callback sends 200 replies: all
    arrive, in order.  (Loopback UDP never refuses a sendto(), so nothing is
    queued here: the queue at a stop is in test_server_datagram_queue.py.)"""
    burst = 200
    protocols: list[NumberedUpper] = []

    def factory() -> NumberedUpper:
        protocols.append(NumberedUpper())
        return protocols[-1]

    with (
        DatagramServer(poller, factory, "127.0.0.1", 0) as server,
        udp_client(rcvbuf=4 << 20) as sock,
    ):
        with running(server, poller) as thread:
            sock.sendto(b"burst %d" % burst, server.address)
            first, _ = sock.recvfrom(2000)
            server.shutdown()
            thread.join(PROMPT)
            assert not thread.is_alive()
        numbers = [int(first[:5])]
        for _ in range(burst - 1):
            data, _ = sock.recvfrom(2000)
            numbers.append(int(data[:5]))
    assert numbers == list(range(burst))
    (protocol,) = protocols
    assert protocol.lost.is_set()


@pytest.mark.timeout(30)
def test_connection_made_once_first_and_connection_lost_once_last(poller: Poller) -> None:
    protocols: list[NumberedUpper] = []

    def factory() -> NumberedUpper:
        protocols.append(NumberedUpper())
        return protocols[-1]

    with DatagramServer(poller, factory, "127.0.0.1", 0) as server:
        with running(server, poller), udp_client() as sock:
            for number in range(3):
                assert ask(sock, server.address, b"hi") == b"%d:HI" % number
            server.shutdown()
            server.shutdown()  # harmless
        (protocol,) = protocols
        assert protocol.lost.wait(PROMPT)
    assert protocol.calls == ["connection_made"] + ["datagram_received"] * 3 + ["connection_lost"]
    assert protocol.threads == {LOOP_THREAD}
    assert len(poller) == 0
