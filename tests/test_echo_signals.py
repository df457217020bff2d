"""SIGINT/SIGTERM: stop accepting, flush pending echo within the grace
period, close, exit 0; a second signal exits at once.

To have echo pending in the server when the signal lands, a client that does
not read sends more than the kernel buffers between them hold, and the test
waits until the server has read all of it (its socket's receive queue in
/proc/net/tcp is empty; see echo_helpers).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from types import FrameType

import pytest

from echo_helpers import (
    PROMPT,
    ServerProcess,
    connect,
    main_thread_sleeps,
    read_to_eof,
    signal_from_another_thread,
    wait_until,
    wait_until_server_read_all,
)
from pollkit import Poller
from pollkit.echo import EchoServer

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


# The signal number goes to the server's stdin.  Without a wakeup fd watched
# by the poller, the Python handler (and the shutdown it starts) would wait
# for the next event: none comes.
_OTHER_THREAD = signal_from_another_thread("sys.stdin.readline()")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
@pytest.mark.timeout(60)
def test_signal_that_misses_the_blocked_main_thread_still_stops(
    poller_backend: str, protocol: str, signum: int
) -> None:
    argv = ["echo", "--port", "0"] + (["--udp"] if protocol == "udp" else [])
    with ServerProcess(
        argv, backend=poller_backend, prelude=_OTHER_THREAD, stdin=subprocess.PIPE
    ) as server:
        server.wait_listening()
        server.tell(str(int(signum)))
        assert server.wait() == 0, server.output()
        assert "stopped" in server.output()
    assert "Traceback" not in server.output()


def _serve_in_the_main_thread(server: EchoServer, then: Callable[[], object]) -> None:
    """``server.serve_forever()`` here; ``then()`` in a thread once this one sleeps in it."""
    failures: list[BaseException] = []

    def act() -> None:
        try:
            wait_until(main_thread_sleeps, what="the main thread blocked in poll()")
            then()
        except BaseException as exc:  # noqa: BLE001  # reported in the main thread below
            failures.append(exc)
            server.shutdown()

    helper = threading.Thread(target=act, name="signal-sender", daemon=True)
    helper.start()
    server.serve_forever()
    helper.join(PROMPT)
    if failures:
        raise failures[0]


@pytest.mark.timeout(60)
def test_handler_runs_though_another_thread_took_the_signal(poller: Poller) -> None:
    handled: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        handled.append(signum)
        server.shutdown()

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with EchoServer(poller, "127.0.0.1", 0) as server:
            _serve_in_the_main_thread(
                server, lambda: signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
            )
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert handled == [signal.SIGUSR1]
    # Everything is put back: no wakeup fd, no registration left in the poller.
    assert signal.set_wakeup_fd(-1) == -1
    assert len(poller) == 0


@pytest.mark.timeout(60)
def test_a_wakeup_fd_set_before_is_left_alone(poller: Poller) -> None:
    theirs, other_end = socket.socketpair()
    with theirs, other_end:
        theirs.setblocking(False)
        signal.set_wakeup_fd(theirs.fileno())
        try:
            with EchoServer(poller, "127.0.0.1", 0) as server:
                _serve_in_the_main_thread(server, server.shutdown)
        finally:
            still = signal.set_wakeup_fd(-1)
        assert still == theirs.fileno()
    assert len(poller) == 0
