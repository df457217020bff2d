"""shutdown() from another thread: stop accepting, flush pending echo within
the grace period, close the clients; serve_forever() returns and leaves the
caller's poller as it found it."""

from __future__ import annotations

import socket
import time

import pytest

from echo_helpers import (
    PROMPT,
    connect,
    read_by_server,
    read_to_eof,
    recv_exactly,
    running,
    sees_eof,
    send_until_paused,
    serving,
)
from pollkit import Poller
from pollkit.echo import EchoServer


def test_shutdown_from_another_thread(poller: Poller) -> None:
    with serving(poller) as server, connect(server.address) as sock:
        sock.sendall(b"before")
        assert recv_exactly(sock, 6) == b"before"
        server.shutdown()
        assert read_to_eof(sock) == b""  # closed by the server
        with pytest.raises(ConnectionRefusedError):
            connect(server.address).close()
    assert len(poller) == 0


def test_pending_echo_is_flushed_before_closing(poller: Poller) -> None:
    with (
        EchoServer(poller, "127.0.0.1", 0, max_buffer=64 * 1024) as server,
        running(server, poller),
        connect(server.address) as sock,
    ):
        sent = send_until_paused(server, sock)
        assert server.stats().pending_bytes > 64 * 1024
        read = read_by_server(sock, len(sent))
        server.shutdown()
        # Everything the server read comes back, then EOF; what it never
        # read is discarded.
        echo = read_to_eof(sock)
    assert len(echo) >= read
    assert echo == sent[: len(echo)]


def test_grace_period_bounds_the_wait(poller: Poller) -> None:
    server = EchoServer(poller, "127.0.0.1", 0, max_buffer=64 * 1024, grace_period=0.2)
    with server, connect(server.address) as sock:
        with running(server, poller):
            send_until_paused(server, sock)
            server.shutdown()  # the client never reads: only the grace period ends it
        # running() has joined serve_forever(): it returned while the client
        # still had not read.
        assert sees_eof(sock)


def test_shutdown_not_graceful_skips_the_flush(poller: Poller) -> None:
    server = EchoServer(poller, "127.0.0.1", 0, max_buffer=64 * 1024, grace_period=600)
    with server, connect(server.address) as sock, running(server, poller):
        send_until_paused(server, sock)
        server.shutdown(graceful=False)  # running() fails unless this returns promptly


def test_shutdown_before_serving_returns_at_once(poller: Poller) -> None:
    server = EchoServer(poller, "127.0.0.1", 0)
    server.shutdown()
    server.serve_forever()  # returns at once, closed
    assert repr(server).endswith("closed>")
    with pytest.raises(RuntimeError, match="closed"):
        server.serve_forever()
    assert len(poller) == 0


def test_close_without_serving(poller: Poller) -> None:
    server = EchoServer(poller, "127.0.0.1", 0)
    address = server.address
    server.close()
    server.close()  # idempotent
    with pytest.raises(ConnectionRefusedError), socket.create_connection(address, timeout=5):
        pass


def test_serving_twice_is_refused(poller: Poller) -> None:
    with serving(poller) as server:
        deadline = time.monotonic() + PROMPT
        while "serving" not in repr(server):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        with pytest.raises(RuntimeError, match="already serving"):
            server.serve_forever()
        with pytest.raises(RuntimeError, match="shutdown"):
            server.close()


def test_poller_closed_first(poller: Poller) -> None:
    """A caller that closes the poller before the server: close() still frees the sockets."""
    with EchoServer(poller, "127.0.0.1", 0) as server, running(server, poller):
        pass
    server2 = EchoServer(poller, "127.0.0.1", 0)
    poller.close()
    server2.shutdown()  # nothing to wake: quiet
    server2.close()
