"""Server layer, line 7: graceful shutdown.

``shutdown()`` from any thread or a signal handler: stop accepting, stop
reading, send pending output for up to ``grace_period``, half-close and
linger until the peer's kernel has acknowledged everything (so no RST loses
the tail), then close what is left; ``connection_lost()`` for each.
``shutdown(graceful=False)``, or a second call that says so: at once.  A
repeated graceful ``shutdown()`` is harmless.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from types import FrameType

import pytest

from echo_helpers import (
    PROMPT,
    connect,
    main_thread_sleeps,
    recv_exactly,
    sees_eof,
    wait_until,
)
from pollkit import Poller
from pollkit.server import Server
from server_helpers import (
    CallLog,
    Recorder,
    check_lifecycle,
    pattern,
    read_until_eof,
    running,
    serving,
)

SIZE = 3 * 1024 * 1024
#: The server's socket buffers: small, so that the reply waits in the layer.
KERNEL_BUFFER = 16384


def flood(size: int = SIZE) -> CallLog:
    """A CallLog whose connections answer their first input with ``size`` bytes of pattern."""

    def reply(protocol: Recorder, data: bytes) -> None:
        if protocol.count("data_received") == 1:
            assert protocol.transport is not None
            protocol.transport.write(pattern(0, size))

    return CallLog(data_received=reply)


@pytest.mark.timeout(30)
def test_shutdown_from_another_thread_sends_everything_then_eof(poller: Poller) -> None:
    log = flood()
    with (
        Server(poller, log.factory, "127.0.0.1", 0, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as sock,
        running(server, poller) as thread,
    ):
        sock.sendall(b"go")
        first = recv_exactly(sock, 1)
        server.shutdown()
        reply = first + read_until_eof(sock)  # a reset would raise here
        thread.join(PROMPT)
        assert not thread.is_alive(), "serve_forever() did not return"
    assert reply == pattern(0, SIZE)
    (protocol,) = log.protocols
    check_lifecycle(protocol)
    assert len(poller) == 0


@pytest.mark.timeout(30)
def test_shutdown_stops_accepting_and_reading(poller: Poller) -> None:
    log = flood()
    with (
        serving(poller, log.factory, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"go")
        first = recv_exactly(sock, 1)
        server.shutdown()
        # shutdown() only asks; the loop stops accepting when it next looks.
        wait_until(lambda: not server.stats().accepting, what="the listener closed")
        # Draining: the client has not read its reply, so the server is still running.
        try:
            late = connect(server.address)
        except (ConnectionRefusedError, ConnectionResetError):
            pass  # refused, or reset by the listener closing mid-handshake
        else:
            with late:
                assert sees_eof(late)
        sock.sendall(b"ignored")
        reply = first + read_until_eof(sock)
    assert reply == pattern(0, SIZE)
    assert len(log.protocols) == 1, "a connection was made after shutdown()"
    (protocol,) = log.protocols
    assert bytes(protocol.received) == b"go", "input was delivered after shutdown()"
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_no_connection_is_made_once_shutdown_has_returned(poller: Poller) -> None:
    """However soon after ``shutdown()`` a client connects (before the loop has
    even looked), it gets no ``connection_made()``: refused, or closed."""
    log = flood()
    with (
        serving(poller, log.factory, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"go")
        first = recv_exactly(sock, 1)  # keeps the server draining for a while
        server.shutdown()
        for _ in range(5):
            try:
                late = connect(server.address)
            except (ConnectionRefusedError, ConnectionResetError):
                # Refused, or reset by the listener closing mid-handshake: the
                # listener is gone, and the freed port may now be any process's.
                break
            with late:
                # A handshake the closing listener dropped leaves the client
                # "connected" in silence; a byte sent there draws the RST.
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    late.sendall(b"x")
                assert sees_eof(late)
        reply = first + read_until_eof(sock)
    assert reply == pattern(0, SIZE)
    assert len(log.protocols) == 1, "a connection was made after shutdown() returned"


@pytest.mark.timeout(30)
def test_no_rst_loses_the_tail_while_the_peer_keeps_sending(poller: Poller) -> None:
    log = flood()
    sender_errors: list[OSError] = []

    def keep_sending(sock: socket.socket) -> None:
        try:
            for _ in range(64):
                sock.sendall(b"j" * 16384)
        except OSError as exc:  # the server may close before all of it is taken
            sender_errors.append(exc)

    with (
        serving(poller, log.factory, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"go")
        first = recv_exactly(sock, 1)
        server.shutdown()
        sender = threading.Thread(target=keep_sending, args=(sock,), daemon=True)
        sender.start()
        reply = first + read_until_eof(sock)
        sender.join(PROMPT)
        assert not sender.is_alive()
    assert len(reply) == SIZE
    assert reply == pattern(0, SIZE)
    check_lifecycle(log.protocols[0])


@pytest.mark.timeout(30)
def test_grace_period_bounds_the_wait_then_aborts(poller: Poller) -> None:
    grace = 0.3
    log = flood(16 * 1024 * 1024)
    with (
        Server(
            poller, log.factory, "127.0.0.1", 0, grace_period=grace, socket_buffer=KERNEL_BUFFER
        ) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        with running(server, poller) as thread:
            sock.sendall(b"go")
            recv_exactly(sock, 1)
            started = time.monotonic()
            server.shutdown()  # the client never reads: only the grace period ends it
            thread.join(PROMPT)
            assert not thread.is_alive(), "serve_forever() outlived its grace period"
            assert time.monotonic() - started >= grace
        assert sees_eof(sock)
    (protocol,) = log.protocols
    check_lifecycle(protocol)


@pytest.mark.parametrize("first", ["graceful", "not graceful"])
@pytest.mark.timeout(30)
def test_shutdown_not_graceful_is_at_once(poller: Poller, first: str) -> None:
    log = flood(16 * 1024 * 1024)
    with (
        Server(
            poller, log.factory, "127.0.0.1", 0, grace_period=600, socket_buffer=KERNEL_BUFFER
        ) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        with running(server, poller) as thread:
            sock.sendall(b"go")
            recv_exactly(sock, 1)
            if first == "graceful":
                server.shutdown()
                wait_until(lambda: not server.stats().accepting, what="the drain to start")
            server.shutdown(graceful=False)
            thread.join(PROMPT)  # the 600 s grace period is not waited for
            assert not thread.is_alive()
        assert sees_eof(sock)
    (protocol,) = log.protocols
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_a_repeated_graceful_shutdown_is_harmless(poller: Poller) -> None:
    log = flood()
    with (
        Server(poller, log.factory, "127.0.0.1", 0, socket_buffer=KERNEL_BUFFER) as server,
        connect(server.address, rcvbuf=8192) as sock,
        running(server, poller) as thread,
    ):
        sock.sendall(b"go")
        first = recv_exactly(sock, 1)
        for _ in range(3):
            server.shutdown()
        reply = first + read_until_eof(sock)
        thread.join(PROMPT)
        assert not thread.is_alive()
        server.shutdown()  # after serve_forever() returned, too
    assert reply == pattern(0, SIZE)
    check_lifecycle(log.protocols[0])


@pytest.mark.timeout(30)
def test_shutdown_from_a_signal_handler(poller: Poller) -> None:
    """``serve_forever()`` in the main thread, blocked in ``poll()``; a signal
    arrives and its handler calls ``shutdown()``: the server drains and
    returns, and the client reads every byte, then EOF."""
    assert threading.current_thread() is threading.main_thread()
    log = flood()
    results: list[bytes] = []
    failures: list[BaseException] = []
    main = threading.main_thread().ident
    assert main is not None

    def client(address: tuple[str, int]) -> None:
        try:
            with connect(address, rcvbuf=8192) as sock:
                sock.sendall(b"go")
                first = recv_exactly(sock, 1)
                wait_until(main_thread_sleeps, what="the server blocked in poll()")
                signal.pthread_kill(main, signal.SIGUSR1)
                results.append(first + read_until_eof(sock))
        except BaseException as exc:  # noqa: BLE001  # re-raised in the test's thread below
            failures.append(exc)
            server.shutdown(graceful=False)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.shutdown()

    with Server(poller, log.factory, "127.0.0.1", 0, socket_buffer=KERNEL_BUFFER) as server:
        previous = signal.signal(signal.SIGUSR1, on_signal)
        thread = threading.Thread(target=client, args=(server.address,), daemon=True)
        try:
            thread.start()
            server.serve_forever()
        finally:
            thread.join(PROMPT)
            signal.signal(signal.SIGUSR1, previous)
    assert not thread.is_alive()
    if failures:
        raise failures[0]
    assert results == [pattern(0, SIZE)]
    check_lifecycle(log.protocols[0], loop_thread=threading.main_thread().name)
    assert len(poller) == 0
