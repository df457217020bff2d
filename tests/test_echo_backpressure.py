"""A client that sends and never reads: past the high-water mark the server
stops reading it, so its memory stays bounded; everyone else is still served;
and once the client reads, every byte comes back."""

from __future__ import annotations

import socket

from echo_helpers import connect, read_to_eof, recv_exactly, send_until_paused, serving
from pollkit import Poller

MAX_BUFFER = 64 * 1024
#: The server may read once more after passing the mark: one read is 64 KiB.
BOUND = MAX_BUFFER + 65536


def test_a_client_that_never_reads(poller: Poller) -> None:
    with (
        serving(poller, max_buffer=MAX_BUFFER) as server,
        connect(server.address) as hog,
        connect(server.address) as other,
    ):
        sent = send_until_paused(server, hog)
        stats = server.stats()
        assert stats.paused == 1
        assert MAX_BUFFER < stats.pending_bytes <= BOUND

        # The hog keeps sending until the kernel buffers are full too; the
        # server does not read any of it.
        hog.setblocking(False)
        extra = bytearray()
        for _ in range(10_000):
            try:
                extra += b"z" * hog.send(b"z" * 65536)
            except BlockingIOError:
                break
        hog.settimeout(10)
        assert server.stats().pending_bytes <= BOUND

        # Everyone else is served as usual, in full.
        for size in (1, 1000, 100_000):
            message = bytes(range(256)) * (size // 256) + b"!" * (size % 256)
            other.sendall(message)
            assert recv_exactly(other, len(message)) == message
        assert server.stats().pending_bytes <= BOUND

        # Once the hog reads, nothing is lost: the server resumes reading it.
        hog.shutdown(socket.SHUT_WR)
        assert read_to_eof(hog) == sent + bytes(extra)
        stats = server.stats()
        assert stats.paused == 0
        assert stats.dropped == 0
