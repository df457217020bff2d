"""SIGINT/SIGTERM: stop accepting, flush pending echo within the grace
period, close, exit 0; a second signal exits at once.

To have echo pending in the server when the signal lands, a client that does
not read sends more than the kernel buffers between them hold, and the test
waits until the server has read all of it (its socket's receive queue in
/proc/net/tcp is empty; see echo_helpers).
"""

from __future__ import annotations

import signal

import pytest

from echo_helpers import ServerProcess, connect, read_to_eof, wait_until_server_read_all

PAYLOAD = bytes(range(256)) * (16 * 4096)  # 16 MiB
BIG_BUFFER = str(64 * 1024 * 1024)


def start(poller_backend: str, *extra: str) -> ServerProcess:
    argv = ["echo", "--port", "0", "--max-buffer", BIG_BUFFER, *extra]
    return ServerProcess(argv, backend=poller_backend)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.timeout(60)
def test_graceful_stop_flushes_pending_echo(poller_backend: str, signum: int) -> None:
    with start(poller_backend) as server:
        address = server.wait_listening()
        with connect(address, rcvbuf=4096) as sock, connect(address) as idle:
            sock.sendall(PAYLOAD)
            wait_until_server_read_all(sock)
            server.signal(signum)
            server.wait_for("shutting down: flushing 1 connections")
            # The idle client is closed at once, and nobody new gets in.
            assert read_to_eof(idle) == b""
            with pytest.raises(ConnectionRefusedError):
                connect(address).close()
            echo = read_to_eof(sock)
        assert len(echo) == len(PAYLOAD)
        assert echo == PAYLOAD
        assert server.wait() == 0, server.output()
    assert "Traceback" not in server.output()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.timeout(60)
def test_second_signal_exits_at_once(poller_backend: str, signum: int) -> None:
    # A grace period far longer than the test may wait: only the second
    # signal can end it in time.
    with start(poller_backend, "--grace-period", "600") as server:
        address = server.wait_listening()
        with connect(address, rcvbuf=4096) as sock:
            sock.sendall(PAYLOAD)
            wait_until_server_read_all(sock)
            server.signal(signum)
            server.wait_for("shutting down")
            server.signal(signum)
            assert server.wait() == 128 + signum, server.output()
    assert "Traceback" not in server.output()


def test_signal_with_no_clients_exits_zero(poller_backend: str) -> None:
    with start(poller_backend) as server:
        server.wait_listening()
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.output()
        assert "stopped" in server.output()
