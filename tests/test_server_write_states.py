"""``write()`` in every state of a connection, and where ``data_received`` is looked up.

``write()`` decides with one comparison whether it may send at once; these
tests pin what each state makes of a write, through the public interface:
open (sent at once), output pending (queued behind it, in order), reading
paused by the application or a buffered protocol (still sent at once), after
``write_eof()`` (``RuntimeError``, while reading goes on), after ``close()``
or ``abort()`` (a no-op).

The transport looks the protocol's ``data_received`` up once, when
``connection_made()`` has returned (uvloop looks it up once too): a callable
the protocol installs there receives every read, one installed later does
not, and a protocol without one fails only its own connection.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

from echo_helpers import connect, recv_exactly, sees_eof
from pollkit import Poller
from pollkit.server import BufferedProtocol, Protocol, Transport
from server_helpers import (
    CallLog,
    Made,
    Recorder,
    check_lifecycle,
    on_loop,
    pattern,
    read_until_eof,
    serving,
    settle,
    transport_of,
)


@pytest.mark.timeout(30)
def test_write_after_write_eof_raises_and_reading_goes_on(poller: Poller) -> None:
    def half_close_then_write(protocol: Recorder, data: bytes) -> None:
        transport = transport_of(protocol)
        if protocol.count("data_received") == 1:
            transport.write(b"first\n")
            transport.write_eof()
            try:
                transport.write(b"refused\n")
            except RuntimeError as exc:
                protocol.notes["error"] = str(exc)
            transport.write(b"")  # an empty write is refused too: the side is shut

    def empty_write_after_eof(protocol: Recorder, data: bytes) -> None:
        try:
            half_close_then_write(protocol, data)
        except RuntimeError as exc:
            protocol.notes["empty"] = str(exc)

    log = CallLog(data_received=empty_write_after_eof)
    with serving(poller, log.factory) as server, connect(server.address) as sock:
        sock.sendall(b"go")
        assert read_until_eof(sock) == b"first\n"
        (protocol,) = log.wait_protocols(1)
        # The reading side still delivers, now through the slow path.
        sock.sendall(b"more")
        assert protocol.wait_received(6) == b"gomore"
        sock.shutdown(socket.SHUT_WR)
        protocol.wait_for("connection_lost")
    assert "write_eof" in protocol.notes["error"]
    assert "write_eof" in protocol.notes["empty"]
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_writes_after_close_or_abort_send_nothing(poller: Poller) -> None:
    def close_or_abort(protocol: Recorder, data: bytes) -> None:
        transport = transport_of(protocol)
        transport.write(b"kept\n")
        if data.startswith(b"close"):
            transport.close()
        else:
            transport.abort()
        transport.write(b"dropped\n")
        transport.write(bytearray(b"dropped too\n"))
        protocol.notes["pending"] = transport.get_write_buffer_size()

    log = CallLog(data_received=close_or_abort)
    with serving(poller, log.factory) as server:
        with connect(server.address) as sock:
            sock.sendall(b"close")
            assert read_until_eof(sock) == b"kept\n"
        with connect(server.address) as sock:
            sock.sendall(b"abort")
            # abort() drops what was not sent; "kept" went out at once, so it
            # arrives, and nothing written after the abort follows it.
            assert read_until_eof(sock) == b"kept\n"
        closed, aborted = log.wait_protocols(2)
        closed.wait_for("connection_lost")
        aborted.wait_for("connection_lost")
    for protocol in (closed, aborted):
        assert protocol.notes["pending"] == 0
        check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_writes_queue_in_order_behind_pending_output(poller: Poller) -> None:
    size = 2 * 1024 * 1024

    def big_then_small(protocol: Recorder, data: bytes) -> None:
        transport = transport_of(protocol)
        if protocol.count("data_received") == 1:
            transport.write(pattern(0, size))
            protocol.notes["pending"] = transport.get_write_buffer_size()
            transport.write(b"tail")  # must wait behind the pending output
            transport.write(memoryview(b"-view"))
            transport.close()

    log = CallLog(data_received=big_then_small)
    with (
        serving(poller, log.factory, socket_buffer=16384) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"go")
        assert read_until_eof(sock) == pattern(0, size) + b"tail-view"
        (protocol,) = log.wait_protocols(1)
        protocol.wait_for("connection_lost")
    assert protocol.notes["pending"] > 0, "the kernel took everything: no output was pending"
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_writes_while_reading_is_paused_are_sent_at_once(poller: Poller) -> None:
    def pause_and_answer(protocol: Recorder, data: bytes) -> None:
        transport = transport_of(protocol)
        transport.pause_reading()
        transport.write(b"paused:" + data)

    log = CallLog(data_received=pause_and_answer)
    with serving(poller, log.factory) as server, connect(server.address) as sock:
        sock.sendall(b"one")
        assert recv_exactly(sock, 10) == b"paused:one"
        (protocol,) = log.wait_protocols(1)
        transport = transport_of(protocol)
        assert on_loop(server, transport.is_reading) is False
        # While paused, writes from outside data_received are sent at once too.
        on_loop(server, lambda: transport.write(b"from the loop"))
        assert recv_exactly(sock, 13) == b"from the loop"
        assert on_loop(server, transport.get_write_buffer_size) == 0
    check_lifecycle(protocol)


class _BufferedAnswer(BufferedProtocol):
    """Answers each read with its length, through get_buffer()/buffer_updated()."""

    def __init__(self) -> None:
        self.buffer = bytearray(64)
        self.transport: Transport | None = None

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        assert self.transport is not None
        self.transport.write(b"%d\n" % nbytes)


@pytest.mark.timeout(30)
def test_a_buffered_protocols_writes_are_sent(poller: Poller) -> None:
    made = Made(_BufferedAnswer)
    with serving(poller, made) as server, connect(server.address) as sock:
        sock.sendall(b"12345")
        assert recv_exactly(sock, 2) == b"5\n"
        (protocol,) = made.items
        assert protocol.transport is not None
        assert on_loop(server, protocol.transport.get_write_buffer_size) == 0


class _Installs(Protocol):
    """Installs its own data_received in connection_made(), and a second one later."""

    def __init__(self) -> None:
        self.first: list[bytes] = []
        self.second: list[bytes] = []
        self.transport: Transport | None = None

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        self.data_received = self._first  # type: ignore[method-assign]  # what the test is about

    def _first(self, data: bytes) -> None:
        self.first.append(data)
        # Installed after connection_made(): documented to have no effect.
        self.data_received = self._second  # type: ignore[method-assign]  # what the test is about
        assert self.transport is not None
        self.transport.write(b"ok %d\n" % len(self.first))

    def _second(self, data: bytes) -> None:
        self.second.append(data)


@pytest.mark.timeout(30)
def test_data_received_is_looked_up_when_connection_made_returns(poller: Poller) -> None:
    made = Made(_Installs)
    with serving(poller, made) as server, connect(server.address) as sock:
        sock.sendall(b"a")
        assert recv_exactly(sock, 5) == b"ok 1\n"
        sock.sendall(b"b")
        assert recv_exactly(sock, 5) == b"ok 2\n"
        (protocol,) = made.items
        settle(server)
        assert protocol.first == [b"a", b"b"]
        assert protocol.second == []


class _NoDataReceived:
    """A duck-typed protocol that forgot data_received()."""

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc


@pytest.mark.timeout(30)
def test_a_protocol_without_data_received_fails_only_its_connection(
    poller: Poller, caplog: pytest.LogCaptureFixture
) -> None:
    log = CallLog(data_received=lambda protocol, data: transport_of(protocol).write(data))
    factories: list[Any] = [_NoDataReceived, log.factory]

    def factory() -> Any:
        return factories.pop(0)()

    with serving(poller, factory) as server:
        with connect(server.address) as broken:
            broken.sendall(b"x")
            assert sees_eof(broken)
        with connect(server.address) as fine:
            fine.sendall(b"still served")
            assert recv_exactly(fine, 12) == b"still served"
    failed = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert failed, "the failing connection was not logged"
    assert any("data_received" in r.getMessage() for r in failed)
    assert any(r.exc_info and "no data_received" in str(r.exc_info[1]) for r in failed), (
        "the log does not say what was missing"
    )
