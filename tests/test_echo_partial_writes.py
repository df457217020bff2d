"""Partial writes and EAGAIN: megabytes through small socket buffers come back
byte-exact.  Both sides' buffers are 4 KiB and the client reads less per round
than it sends, so most of the server's send() calls take only part of the
echo (or fail with EAGAIN) and its pending-output path does the work."""

from __future__ import annotations

import random

import pytest

from echo_helpers import connect, exchange, serving, wait_until
from pollkit import Poller

SIZE = 6 * 1024 * 1024


@pytest.mark.timeout(60)
def test_megabytes_through_small_buffers(poller: Poller) -> None:
    rng = random.Random(7)
    payload = rng.randbytes(SIZE)
    with (
        serving(poller, socket_buffer=4096) as server,
        connect(server.address, rcvbuf=4096, sndbuf=4096) as sock,
    ):
        # Reading less than it sends per round, the client lets the pipe fill up.
        (echo,) = exchange(
            [sock],
            [payload],
            chunk_sizes=lambda: rng.randint(1, 20_000),
            recv_sizes=lambda: rng.randint(1, 4_000),
        )
        assert len(echo) == len(payload)
        assert echo == payload
        wait_until(lambda: server.stats().connections == 0, what="server closes after EOF")
        assert server.stats().dropped == 0
