"""Server layer, line 2: backpressure both ways.

Past the high-water mark (``max_buffer``; low-water a quarter unless set)
the layer calls ``pause_writing()`` and stops reading the connection until
its output drains below the low-water mark (``resume_writing()``, reading
again).  Memory per connection stays below the high-water mark plus one
read.  The application's own ``pause_reading()`` is a separate switch:
neither undoes the other.

Reading "stopped" is shown without sleeping: the client's bytes are seen
waiting in the server's kernel receive queue (``/proc/net/tcp``), the loop
is turned a few times, and they are still there, unread.
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import threading
import time
from collections.abc import Callable

import pytest

from echo_helpers import PROMPT, connect, recv_exactly, unread_by_server, wait_until
from pollkit import Poller
from pollkit.server import Server, Transport
from server_helpers import (
    Made,
    Producer,
    UpperLines,
    lines_payload,
    on_loop,
    pattern,
    serving,
    settle,
    transport_of,
    wait_unread,
)

HIGH = 64 * 1024
#: The most one read may add to a connection's output with a protocol whose
#: output is no longer than its input: one read, plus a line held over from
#: the read before.
ONE_READ = 256 * 1024 + 1024
#: The server's socket buffers (SO_SNDBUF/SO_RCVBUF): small, so that output
#: waits in the layer, not in a kernel buffer autotuned to megabytes.
KERNEL_BUFFER = 16384


@pytest.mark.timeout(60)
def test_pause_writing_past_high_water_resume_below_low(poller: Poller) -> None:
    made = Made(Producer)
    size = 2 * 1024 * 1024
    with (
        serving(poller, made, max_buffer=HIGH, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"%d\n" % size)
        (protocol,) = made.wait()
        wait_until(lambda: protocol.pauses == 1, what="pause_writing()")
        assert on_loop(server, lambda: server.stats().paused) == 1
        assert recv_exactly(sock, size) == pattern(0, size)
        wait_until(lambda: protocol.resumes == protocol.pauses, what="the last resume_writing()")
        assert on_loop(server, lambda: server.stats().paused) == 0
    assert protocol.pauses >= 1
    assert all(buffered >= HIGH for buffered in protocol.buffered_at_pause)
    assert all(buffered <= HIGH // 4 for buffered in protocol.buffered_at_resume)
    # A producer that stops at pause_writing() never holds more than the
    # mark plus the chunk that crossed it.
    assert protocol.max_buffered <= HIGH + Producer.chunk


class MeasuredUpper(UpperLines):
    """Upper-cases lines and remembers the most output it ever had buffered."""

    def __init__(self) -> None:
        super().__init__()
        self.read = 0
        self.max_buffered = 0

    def data_received(self, data: bytes) -> None:
        self.read += len(data)
        super().data_received(data)
        self.max_buffered = max(self.max_buffered, transport_of(self).get_write_buffer_size())


def send_until(sock: socket.socket, payload: bytes, done: Callable[[], bool]) -> int:
    """Send ``payload`` until ``done()``; return how much went.  Never blocks the test."""
    sent = 0
    deadline = time.monotonic() + PROMPT
    sock.setblocking(False)
    try:
        while sent < len(payload) and not done():
            assert time.monotonic() < deadline, f"not done after sending {sent} bytes"
            try:
                sent += sock.send(payload[sent : sent + 65536])
            except BlockingIOError:
                select.select([], [sock], [], 0.01)  # wait (bounded) for room to send
    finally:
        sock.settimeout(PROMPT)
    return sent


def send_in_thread(sock: socket.socket, data: bytes) -> threading.Thread:
    """Send ``data`` then half-close, from a thread, while the test reads."""

    def send() -> None:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=send, name="client-sender", daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(60)
def test_reading_stops_while_output_is_over_high_water(poller: Poller) -> None:
    made = Made(MeasuredUpper)
    payload = lines_payload(3, 2 * 1024 * 1024)
    with (
        serving(poller, made, max_buffer=HIGH, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192, sndbuf=16384) as sock,
    ):
        sent = send_until(sock, payload, lambda: server.stats().paused == 1)
        assert sent < len(payload), "the whole payload went in without a pause"
        (protocol,) = made.items
        # More input arrives while paused: it waits in the kernel, unread.
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sent += sock.send(payload[sent : sent + 4096])
        sock.settimeout(PROMPT)
        wait_unread(sock, 1)
        read_before = protocol.read
        settle(server)
        assert protocol.read == read_before, "the layer read a connection over its high-water mark"
        assert unread_by_server(sock) > 0
        # The client reads: output drains, reading resumes, every line comes back.
        sender = send_in_thread(sock, payload[sent:])
        reply = recv_exactly(sock, len(payload))
        sender.join(PROMPT)
        assert not sender.is_alive()
    assert reply == payload.upper()
    assert protocol.max_buffered < HIGH + ONE_READ


class LimitsSetByTheApplication(Producer):
    def __init__(self, high: int, low: int | None) -> None:
        super().__init__()
        self.limits = (high, low)

    def connection_made(self, transport: Transport) -> None:
        super().connection_made(transport)
        high, low = self.limits
        transport.set_write_buffer_limits(high=high, low=low)


@pytest.mark.parametrize(("high", "low"), [(24 * 1024, 2 * 1024), (40_000, None)])
@pytest.mark.timeout(60)
def test_set_write_buffer_limits_moves_the_marks(
    poller: Poller, high: int, low: int | None
) -> None:
    made = Made(lambda: LimitsSetByTheApplication(high, low))
    size = 1024 * 1024
    with (
        serving(poller, made, max_buffer=4 * 1024 * 1024, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"%d\n" % size)
        (protocol,) = made.wait()
        wait_until(lambda: protocol.pauses >= 1, what="pause_writing() at the application's mark")
        assert recv_exactly(sock, size) == pattern(0, size)
        wait_until(lambda: protocol.resumes == protocol.pauses, what="the last resume_writing()")
    low_mark = high // 4 if low is None else low
    assert all(buffered >= high for buffered in protocol.buffered_at_pause)
    assert all(buffered <= low_mark for buffered in protocol.buffered_at_resume)
    assert protocol.max_buffered <= high + Producer.chunk


def assert_not_reading(server: Server, sock: socket.socket, protocol: Producer) -> None:
    """Bytes from ``sock`` wait in the server's kernel and the loop turns: none is read."""
    asked = protocol.asked
    wait_unread(sock, 1)
    settle(server)
    assert protocol.asked == asked, "the layer read a connection it should not read"
    assert unread_by_server(sock) > 0


@pytest.mark.timeout(60)
def test_backpressure_resume_does_not_undo_the_applications_pause(poller: Poller) -> None:
    made = Made(Producer)
    size = 1024 * 1024
    with (
        serving(poller, made, max_buffer=HIGH, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"%d\n" % size)
        (protocol,) = made.wait()
        wait_until(lambda: protocol.pauses == 1, what="pause_writing()")
        on_loop(server, lambda: transport_of(protocol).pause_reading())
        assert recv_exactly(sock, size) == pattern(0, size)
        wait_until(lambda: protocol.resumes == protocol.pauses, what="resume_writing()")
        # Output has drained, but the application paused reading: it stays paused.
        sock.sendall(b"5\n")
        assert_not_reading(server, sock, protocol)
        assert on_loop(server, lambda: transport_of(protocol).is_reading()) is False
        assert on_loop(server, lambda: server.stats().paused) == 1
        on_loop(server, lambda: transport_of(protocol).resume_reading())
        assert recv_exactly(sock, 5) == pattern(size, 5)


@pytest.mark.timeout(60)
def test_applications_resume_does_not_undo_backpressure(poller: Poller) -> None:
    made = Made(Producer)
    size = 1024 * 1024
    with (
        serving(poller, made, max_buffer=HIGH, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"%d\n" % size)
        (protocol,) = made.wait()
        wait_until(lambda: protocol.pauses == 1, what="pause_writing()")

        def toggle() -> None:
            transport = transport_of(protocol)
            transport.pause_reading()
            transport.resume_reading()

        on_loop(server, toggle)
        # The application asked to read again, but output is still over the mark.
        sock.sendall(b"7\n")
        assert_not_reading(server, sock, protocol)
        assert on_loop(server, lambda: server.stats().paused) == 1
        # Once the output drains, reading resumes and the request is served.
        assert recv_exactly(sock, size + 7) == pattern(0, size + 7)
    assert protocol.asked == size + 7


@pytest.mark.timeout(60)
def test_a_paused_connection_does_not_hold_up_another(poller: Poller) -> None:
    made = Made(Producer)
    payloads = [random.Random(seed).randrange(1, 50_000) for seed in range(20)]
    with (
        serving(poller, made, max_buffer=HIGH, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as stuck,
        connect(server.address) as other,
    ):
        stuck.sendall(b"%d\n" % (8 * 1024 * 1024))
        (stuck_protocol,) = made.wait()
        wait_until(lambda: stuck_protocol.pauses == 1, what="pause_writing()")
        offset = 0
        for count in payloads:
            other.sendall(b"%d\n" % count)
            assert recv_exactly(other, count) == pattern(offset, count)
            offset += count
