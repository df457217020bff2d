"""Many concurrent clients, random payloads in random chunk sizes: every byte
comes back, in order, exactly once, on every driver."""

from __future__ import annotations

import contextlib
import random

import pytest

from echo_helpers import connect, exchange, serving
from pollkit import Poller

CLIENTS = 40


@pytest.mark.timeout(60)
def test_every_byte_comes_back_in_order_exactly_once(poller: Poller) -> None:
    rng = random.Random(862)
    # Sizes from empty to a few hundred KiB; the total stays around 4 MB.
    payloads = [rng.randbytes(rng.choice((0, 1, 7, 1000, 65536, 200_000))) for _ in range(CLIENTS)]
    with serving(poller) as server, contextlib.ExitStack() as stack:
        socks = [stack.enter_context(connect(server.address)) for _ in range(CLIENTS)]
        echoes = exchange(socks, payloads, chunk_sizes=lambda: rng.randint(1, 9000))
        for index, (payload, echo) in enumerate(zip(payloads, echoes, strict=False)):
            assert echo == payload, f"client {index}: {len(echo)} bytes back of {len(payload)}"
        stats = server.stats()
    assert stats.accepted == CLIENTS
    assert stats.dropped == 0


def test_one_message_round_trip(poller: Poller) -> None:
    with serving(poller) as server, connect(server.address) as sock:
        sock.sendall(b"hello, echo\n")
        assert sock.recv(100) == b"hello, echo\n"
