"""Server layer, line 3: re-entrancy.

``write()``, ``close()``, ``abort()`` and ``pause_reading()`` are safe inside
every callback; ``connection_lost()`` runs exactly once for each
``connection_made()``, after the callback that caused it has returned.
``close()`` sends what is buffered first, then closes as a graceful shutdown
does (no RST loses the tail); ``abort()`` drops the buffer and closes at
once; either makes later ``write()`` calls no-ops and ``is_closing()`` true.

The pitfalls asyncio's issue history teaches each have a test here:
write/close inside ``data_received``, ``pause_reading()`` from
``connection_made``, and ``connection_lost()`` exactly once after an abort
inside ``data_received``, a close then a peer reset, an error in a write,
and a shutdown.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from echo_helpers import PROMPT, connect, recv_exactly, sees_eof
from pollkit import Poller
from pollkit.server import Transport
from server_helpers import (
    CallLog,
    Recorder,
    check_lifecycle,
    on_loop,
    pattern,
    read_until_eof,
    serving,
    settle,
    transport_of,
    wait_unread,
)

#: The server's socket buffers: small, so that big writes wait in the layer.
KERNEL_BUFFER = 16384


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (SO_LINGER with a zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.timeout(30)
def test_write_and_close_inside_data_received(poller: Poller) -> None:
    def answer_and_close(protocol: Recorder, data: bytes) -> None:
        transport = transport_of(protocol)
        if transport.is_closing():
            return
        transport.write(b"bye " + data.upper())
        transport.close()
        protocol.notes["closing after close"] = transport.is_closing()
        transport.write(b"never sent")  # a no-op after close()
        transport.writelines([b"nor", b"this"])
        protocol.notes["lost inside the callback"] = protocol.count("connection_lost")

    log = CallLog(data_received=answer_and_close)
    with (
        serving(poller, log.factory, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address) as sock,
    ):
        sock.sendall(b"hello")
        assert read_until_eof(sock) == b"bye HELLO"
        (protocol,) = log.wait_protocols(1)
        protocol.wait_for("connection_lost")
    assert protocol.notes == {"closing after close": True, "lost inside the callback": 0}
    assert protocol.argument("connection_lost") is None
    assert protocol.count("data_received") == 1
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_close_sends_the_buffered_tail_first(poller: Poller) -> None:
    size = 3 * 1024 * 1024

    def flood_and_close(protocol: Recorder, data: bytes) -> None:
        transport = transport_of(protocol)
        transport.write(pattern(0, size))
        protocol.notes["buffered"] = transport.get_write_buffer_size()
        transport.close()

    log = CallLog(data_received=flood_and_close)
    with (
        serving(poller, log.factory, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"go")
        reply = read_until_eof(sock)
        (protocol,) = log.wait_protocols(1)
        protocol.wait_for("connection_lost")
    assert protocol.notes["buffered"] > 0, "the kernel took 3 MiB at once: nothing was buffered"
    assert len(reply) == size
    assert reply == pattern(0, size)
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_close_lingers_while_the_peer_still_sends(poller: Poller) -> None:
    """Input arriving after ``close()`` is read and dropped, not left unread:
    closing with unread input would make the kernel send RST and lose the
    reply's tail still queued for the peer."""
    size = 2 * 1024 * 1024

    def flood_and_close(protocol: Recorder, data: bytes) -> None:
        transport = transport_of(protocol)
        if not transport.is_closing():
            transport.write(pattern(0, size))
            transport.close()

    log = CallLog(data_received=flood_and_close)
    with (
        serving(poller, log.factory, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"go")
        first = recv_exactly(sock, 1)  # close() has been called by now
        sender = threading.Thread(target=sock.sendall, args=(b"late" * 65536,), daemon=True)
        sender.start()
        reply = first + read_until_eof(sock)  # a reset would raise ConnectionResetError
        sender.join(PROMPT)
        assert not sender.is_alive()
        (protocol,) = log.wait_protocols(1)
        protocol.wait_for("connection_lost")
    assert reply == pattern(0, size)
    assert protocol.count("data_received") == 1, "data_received() after close()"
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_abort_inside_data_received(poller: Poller) -> None:
    def abort(protocol: Recorder, data: bytes) -> None:
        transport = transport_of(protocol)
        transport.write(pattern(0, 1024 * 1024))
        transport.abort()
        protocol.notes["closing"] = transport.is_closing()
        protocol.notes["buffered"] = transport.get_write_buffer_size()
        transport.write(b"ignored")
        transport.close()  # harmless after abort()
        transport.abort()
        protocol.notes["lost inside the callback"] = protocol.count("connection_lost")

    log = CallLog(data_received=abort)
    with (
        serving(poller, log.factory, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"go")
        assert sees_eof(sock)
        (protocol,) = log.wait_protocols(1)
        protocol.wait_for("connection_lost")
    assert protocol.notes == {"closing": True, "buffered": 0, "lost inside the callback": 0}
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_pause_reading_from_connection_made(poller: Poller) -> None:
    def pause(protocol: Recorder, transport: Transport) -> None:
        transport.pause_reading()
        protocol.notes["reading"] = transport.is_reading()

    log = CallLog(connection_made=pause)
    with (
        serving(poller, log.factory, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address) as sock,
    ):
        sock.sendall(b"early")
        (protocol,) = log.wait_protocols(1)
        wait_unread(sock, 5)
        settle(server)
        assert protocol.count("data_received") == 0, "read while paused from connection_made()"
        on_loop(server, transport_of(protocol).resume_reading)
        assert protocol.wait_received(5) == b"early"
        assert on_loop(server, transport_of(protocol).is_reading) is True
    assert protocol.notes["reading"] is False
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_write_and_close_inside_connection_made(poller: Poller) -> None:
    def greet_and_close(protocol: Recorder, transport: Transport) -> None:
        transport.write(b"hello and goodbye\n")
        transport.close()
        protocol.notes["lost inside the callback"] = protocol.count("connection_lost")

    log = CallLog(connection_made=greet_and_close)
    with (
        serving(poller, log.factory, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address) as sock,
    ):
        assert read_until_eof(sock) == b"hello and goodbye\n"
        (protocol,) = log.wait_protocols(1)
        protocol.wait_for("connection_lost")
    assert protocol.notes["lost inside the callback"] == 0
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_abort_inside_connection_made(poller: Poller) -> None:
    log = CallLog(connection_made=lambda protocol, transport: transport.abort())
    with (
        serving(poller, log.factory, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address) as sock,
    ):
        assert sees_eof(sock)
        (protocol,) = log.wait_protocols(1)
        protocol.wait_for("connection_lost")
    assert protocol.count("data_received") == 0
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_connection_lost_once_when_closing_then_the_peer_resets(poller: Poller) -> None:
    def flood_and_close(protocol: Recorder, data: bytes) -> None:
        transport = transport_of(protocol)
        if not transport.is_closing():
            transport.write(pattern(0, 8 * 1024 * 1024))
            transport.close()

    log = CallLog(data_received=flood_and_close)
    with serving(poller, log.factory, socket_buffer=KERNEL_BUFFER) as server:
        sock = connect(server.address, rcvbuf=8192)
        try:
            sock.sendall(b"go")
            recv_exactly(sock, 1)
        finally:
            reset(sock)
        (protocol,) = log.wait_protocols(1)
        protocol.wait_for("connection_lost")
        settle(server)
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_connection_lost_once_after_an_error_in_write(poller: Poller) -> None:
    """The peer resets while output is pending: the layer's next send fails;
    ``connection_lost()`` gets the error, once, and later writes are no-ops."""

    def flood(protocol: Recorder, data: bytes) -> None:
        transport_of(protocol).write(pattern(0, 8 * 1024 * 1024))

    log = CallLog(data_received=flood)
    with serving(poller, log.factory, socket_buffer=KERNEL_BUFFER) as server:
        sock = connect(server.address, rcvbuf=8192)
        try:
            sock.sendall(b"go")
            recv_exactly(sock, 1)
        finally:
            reset(sock)
        (protocol,) = log.wait_protocols(1)
        transport = transport_of(protocol)
        for _ in range(3):
            on_loop(server, lambda: transport.write(b"more"))  # never raises
        protocol.wait_for("connection_lost")
        on_loop(server, lambda: transport.write(b"after the end"))
        assert on_loop(server, transport.is_closing) is True
    error = protocol.argument("connection_lost")
    assert isinstance(error, OSError), f"connection_lost({error!r}) after a reset"
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_connection_lost_once_for_each_connection_at_shutdown(poller: Poller) -> None:
    """Connections in every state when the server stops: idle, paused by the
    application, closing with output pending, with output pending."""

    def setup(protocol: Recorder, transport: Transport) -> None:
        index = len(protocol.log.protocols) - 1
        if index == 1:
            transport.pause_reading()
        elif index == 2:
            transport.write(pattern(0, 4 * 1024 * 1024))
            transport.close()
        elif index == 3:
            transport.write(pattern(0, 4 * 1024 * 1024))

    log = CallLog(connection_made=setup)
    socks = []
    with serving(poller, log.factory, grace_period=0.2, socket_buffer=KERNEL_BUFFER) as server:
        try:
            for _ in range(4):
                socks.append(connect(server.address, rcvbuf=8192))
                log.wait_protocols(len(socks))
            server.shutdown()
            server.shutdown()  # a repeated graceful shutdown is harmless
            for protocol in log.protocols:
                protocol.wait_for("connection_lost")
        finally:
            for sock in socks:
                sock.close()
    assert len(log.protocols) == 4
    for protocol in log.protocols:
        check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_close_gives_up_after_the_grace_period_when_the_peer_never_reads(
    poller: Poller,
) -> None:
    """``close()`` with output a peer never reads ends at the grace deadline
    (no earlier), the other connections served meanwhile."""
    grace = 0.3
    started: list[float] = []

    def flood_and_close(protocol: Recorder, data: bytes) -> None:
        transport = transport_of(protocol)
        if protocol is protocol.log.protocols[0] and not transport.is_closing():
            transport.write(pattern(0, 8 * 1024 * 1024))
            started.append(time.monotonic())
            transport.close()

    log = CallLog(data_received=flood_and_close)
    with (
        serving(poller, log.factory, grace_period=grace, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as stuck,
        connect(server.address) as other,
    ):
        stuck.sendall(b"go")
        first, second = log.wait_protocols(2)
        first.wait_for("connection_lost")
        ended = time.monotonic()
        other.sendall(b"still served")
        assert second.wait_received(12) == b"still served"
        assert not second.lost()
        assert sees_eof(stuck)
    assert ended - started[0] >= grace
    check_lifecycle(first)
