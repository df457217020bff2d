"""idle_timeout closes clients that stay silent, and only those."""

from __future__ import annotations

import time

from echo_helpers import connect, recv_exactly, sees_eof, serving, wait_until
from pollkit import Poller

TIMEOUT = 0.5


def test_silent_clients_are_closed_chatty_ones_kept(poller: Poller) -> None:
    with serving(poller, idle_timeout=TIMEOUT) as server:
        started = time.monotonic()
        with connect(server.address) as silent, connect(server.address) as chatty:
            # The chatty client speaks every TIMEOUT / 10, for two timeouts.
            silent_closed_at = None
            silent.setblocking(False)
            while time.monotonic() - started < 2 * TIMEOUT:
                chatty.sendall(b"tick")
                assert recv_exactly(chatty, 4) == b"tick"
                if silent_closed_at is None:
                    try:
                        if silent.recv(1) == b"":
                            silent_closed_at = time.monotonic()
                    except BlockingIOError:
                        pass
                time.sleep(TIMEOUT / 10)  # pacing the chatty client, not synchronisation
            silent.settimeout(10)
            if silent_closed_at is None:
                assert sees_eof(silent)
                silent_closed_at = time.monotonic()
            # Never before the timeout (the server's clock started after our connect()).
            assert silent_closed_at - started >= TIMEOUT
            chatty.sendall(b"still open")
            assert recv_exactly(chatty, 10) == b"still open"
            assert server.stats().closed_idle == 1
            # Once it falls silent, the chatty client goes the same way.
            assert sees_eof(chatty)
        wait_until(lambda: server.stats().closed_idle == 2, what="both closed as idle")
