"""max_clients: connections past the limit are accepted and closed at once;
a freed slot is taken by the next connection."""

from __future__ import annotations

from echo_helpers import connect, recv_exactly, sees_eof, serving, wait_until
from pollkit import Poller


def test_connections_past_the_limit_are_closed(poller: Poller) -> None:
    with serving(poller, max_clients=2) as server:
        with connect(server.address) as first, connect(server.address) as second:
            for sock in (first, second):
                sock.sendall(b"in")
                assert recv_exactly(sock, 2) == b"in"
            with connect(server.address) as third:
                assert sees_eof(third)
            wait_until(lambda: server.stats().rejected_max_clients == 1, what="one refusal")
            first.sendall(b"still served")
            assert recv_exactly(first, 12) == b"still served"
        wait_until(lambda: server.stats().connections == 0, what="both closed")
        with connect(server.address) as later:
            later.sendall(b"a slot again")
            assert recv_exactly(later, 12) == b"a slot again"
        stats = server.stats()
    assert stats.accepted == 3
    assert stats.rejected_max_clients == 1
