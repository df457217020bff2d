"""Server layer, line 6: half-close.

End of input calls ``eof_received()``; unless it returns true, the
connection closes once its pending output is sent.  ``write_eof()``
half-closes our side after pending output.
"""

from __future__ import annotations

import socket

import pytest

from echo_helpers import connect, exchange, read_to_eof, recv_exactly
from pollkit import Poller
from server_helpers import (
    CallLog,
    Made,
    Producer,
    Recorder,
    UpperLines,
    check_lifecycle,
    lines_payload,
    on_loop,
    pattern,
    serving,
    settle,
    transport_of,
)


def upper(protocol: Recorder, data: bytes) -> None:
    transport_of(protocol).write(data.upper())


@pytest.mark.timeout(30)
def test_eof_closes_once_pending_output_is_sent(poller: Poller) -> None:
    payload = lines_payload(8, 2 * 1024 * 1024)
    log = CallLog(data_received=upper)
    with (
        serving(poller, log.factory, max_buffer=64 * 1024, socket_buffer=16384) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        # exchange() half-closes once everything is sent and reads until EOF.
        (reply,) = exchange([sock], [payload], recv_sizes=lambda: 1000)
        (protocol,) = log.wait_protocols(1)
        protocol.wait_for("connection_lost")
    assert reply == payload.upper()
    assert protocol.count("eof_received") == 1
    assert protocol.argument("connection_lost") is None
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_the_unterminated_rest_is_answered_at_eof(poller: Poller) -> None:
    with serving(poller, UpperLines) as server, connect(server.address) as sock:
        sock.sendall(b"abc\ndef")
        assert recv_exactly(sock, 4) == b"ABC\n"
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b"DEF"


@pytest.mark.timeout(30)
def test_eof_received_true_keeps_the_connection_open(poller: Poller) -> None:
    def keep_open(protocol: Recorder) -> bool:
        transport_of(protocol).write(b"got %d bytes\n" % len(protocol.received))
        return True

    log = CallLog(eof_received=keep_open)
    with serving(poller, log.factory) as server, connect(server.address) as sock:
        sock.sendall(b"12345")
        (protocol,) = log.wait_protocols(1)
        protocol.wait_received(5)
        sock.shutdown(socket.SHUT_WR)
        assert recv_exactly(sock, 12) == b"got 5 bytes\n"
        protocol.wait_for("eof_received")
        settle(server)
        assert not protocol.lost(), "closed although eof_received() returned true"
        transport = transport_of(protocol)

        def finish() -> None:
            transport.write(b"and the end\n")
            transport.close()

        on_loop(server, finish)
        assert read_to_eof(sock) == b"and the end\n"
        protocol.wait_for("connection_lost")
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_write_eof_half_closes_after_pending_output(poller: Poller) -> None:
    size = 1024 * 1024

    def reply_then_eof(protocol: Recorder, data: bytes) -> None:
        if protocol.count("data_received") == 1:
            transport = transport_of(protocol)
            transport.write(pattern(0, size))
            transport.write_eof()

    log = CallLog(data_received=reply_then_eof)
    with (
        serving(poller, log.factory) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"go")
        # Everything pending, then EOF: our side is closed for writing.
        assert read_to_eof(sock) == pattern(0, size)
        (protocol,) = log.wait_protocols(1)
        # The other direction still works.
        sock.sendall(b"after")
        assert protocol.wait_received(7) == b"goafter"
        assert not protocol.lost()
        sock.shutdown(socket.SHUT_WR)
        protocol.wait_for("connection_lost")
    assert protocol.count("eof_received") == 1
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_eof_while_paused_by_backpressure_sends_everything_first(poller: Poller) -> None:
    """The client asks for a lot and half-closes at once: the layer, paused
    by backpressure, sees the EOF only once it reads again, and the
    producer's whole reply comes before the close."""
    size = 3 * 1024 * 1024
    made = Made(Producer)
    with (
        serving(poller, made, max_buffer=64 * 1024, socket_buffer=16384) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"%d\n%d\n" % (size, 100))
        sock.shutdown(socket.SHUT_WR)
        reply = read_to_eof(sock)
    (protocol,) = made.items
    assert protocol.pauses >= 1
    assert reply == pattern(0, size + 100)
