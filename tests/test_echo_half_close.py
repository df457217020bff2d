"""Half-close: after the client's shutdown(SHUT_WR), everything it sent is
echoed, and then the server closes the connection."""

from __future__ import annotations

import socket

from echo_helpers import connect, read_to_eof, send_until_paused, serving, wait_until
from pollkit import Poller


def test_pending_echo_is_sent_before_the_server_closes(poller: Poller) -> None:
    with serving(poller, max_buffer=64 * 1024) as server, connect(server.address) as sock:
        # Not reading while sending: at EOF the server holds at least max_buffer of echo.
        sent = send_until_paused(server, sock)
        assert server.stats().pending_bytes > 64 * 1024
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == sent
        wait_until(lambda: server.stats().connections == 0, what="connection closed")
        assert server.stats().dropped == 0


def test_half_close_with_nothing_pending_closes_at_once(poller: Poller) -> None:
    with serving(poller) as server, connect(server.address) as sock:
        sock.sendall(b"ping")
        assert sock.recv(10) == b"ping"
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
        wait_until(lambda: server.stats().connections == 0, what="connection closed")


def test_empty_connection(poller: Poller) -> None:
    with serving(poller) as server, connect(server.address) as sock:
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
