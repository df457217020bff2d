"""What the echo tests share: a server in a thread, a server in a subprocess,
clients that send and receive at once, and bounded waits.

Every wait here is bounded in time and in steps; none of them sleeps to let
something happen that could be awaited instead.  Where the only way to see a
server-side change is to look again (its :meth:`EchoServer.stats`, another
process's ``/proc``), :func:`wait_until` polls with a deadline.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import random
import re
import selectors
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from pollkit import Poller
from pollkit.echo import EchoServer

#: Far above any real latency on a loaded machine, far below "hung".
PROMPT = 10.0
#: How often wait_until() looks again.
POLL_INTERVAL = 0.005
_MAX_STEPS = 1_000_000


def ipv6_loopback_works() -> bool:
    """True if this machine can bind ``::1`` (some containers have no IPv6)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def wait_until(
    predicate: Callable[[], object], *, timeout: float = PROMPT, what: str = "condition"
) -> None:
    """Return once ``predicate()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        time.sleep(POLL_INTERVAL)


# -- a server in a thread --------------------------------------------------------


@contextlib.contextmanager
def serving(poller: Poller, host: str = "127.0.0.1", **options: Any) -> Iterator[EchoServer]:
    """An :class:`EchoServer` on ``host``, port 0, serving in a thread (see :func:`running`)."""
    with EchoServer(poller, host, 0, **options) as server, running(server, poller):
        yield server


@contextlib.contextmanager
def running(server: EchoServer, poller: Poller) -> Iterator[EchoServer]:
    """Run ``server.serve_forever()`` in a thread for the block.

    On exit the server is shut down, its thread joined (bounded) and any
    exception it raised re-raised; it must have unregistered everything from
    ``poller``, which is left for its fixture to close.
    """
    failures: list[BaseException] = []

    def run() -> None:
        try:
            server.serve_forever()
        except BaseException as exc:  # noqa: BLE001  # re-raised in the test's thread below
            failures.append(exc)

    thread = threading.Thread(target=run, name="echo-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(PROMPT)
    assert not thread.is_alive(), "serve_forever() did not return after shutdown()"
    if failures:
        raise failures[0]
    assert len(poller) == 0, "the server left registrations in the caller's poller"


def connect(
    address: tuple[str, int],
    *,
    rcvbuf: int | None = None,
    sndbuf: int | None = None,
    timeout: float = PROMPT,
) -> socket.socket:
    """A blocking TCP client socket (``timeout`` on every call) connected to ``address``."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Buffer sizes must be set before connect() to shape the TCP window.
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    """Read exactly ``count`` bytes (the socket's timeout bounds each read)."""
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(min(count - len(data), 1 << 20))
        if not chunk:
            raise AssertionError(f"EOF after {len(data)} of {count} bytes")
        data += chunk
    return bytes(data)


def read_to_eof(sock: socket.socket, limit: int = 1 << 30) -> bytes:
    """Read until the peer closes; fail past ``limit`` bytes."""
    data = bytearray()
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return bytes(data)
        data += chunk
        assert len(data) <= limit, f"more than {limit} bytes before EOF"


def sees_eof(sock: socket.socket) -> bool:
    """True if the peer closed the connection (FIN or reset), reading what is left."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True


def exchange(
    socks: Sequence[socket.socket],
    payloads: Sequence[bytes],
    *,
    chunk_sizes: Callable[[], int] | None = None,
    recv_sizes: Callable[[], int] | None = None,
    half_close: bool = True,
    timeout: float = 30.0,
) -> list[bytes]:
    """Send each payload on its socket while reading the echo, all at once.

    Chunk sizes come from ``chunk_sizes()`` (default 64 KiB), the sizes of
    reads from ``recv_sizes()`` (default: the same).  With
    ``half_close``, each socket shuts down its sending side once its payload
    is out, and its result is everything read until EOF (so extra bytes would
    show); otherwise it reads exactly ``len(payload)`` bytes.  A client-side
    selectors loop, independent of the driver under test.
    """
    size = chunk_sizes or (lambda: 65536)
    read_size = recv_sizes or size
    views = [memoryview(payload) for payload in payloads]
    sent = [0] * len(socks)
    received = [bytearray() for _ in socks]
    done = [False] * len(socks)
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(socks):
            sock.setblocking(False)
            if payloads[index]:
                selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, index)
            elif half_close:
                sock.shutdown(socket.SHUT_WR)
                selector.register(sock, selectors.EVENT_READ, index)
            else:
                done[index] = True
        for _ in range(_MAX_STEPS):
            if all(done):
                return [bytes(data) for data in received]
            remaining = deadline - time.monotonic()
            assert remaining > 0, (
                f"exchange stalled: sent {sent}, received {[len(r) for r in received]}"
            )
            for key, events in selector.select(remaining):
                index = key.data
                sock = socks[index]
                payload = payloads[index]
                if events & selectors.EVENT_WRITE and sent[index] < len(payload):
                    end = sent[index] + max(1, size())
                    try:
                        sent[index] += sock.send(views[index][sent[index] : end])
                    except BlockingIOError:
                        pass
                    if sent[index] == len(payload):
                        if half_close:
                            sock.shutdown(socket.SHUT_WR)
                        selector.modify(sock, selectors.EVENT_READ, index)
                if events & selectors.EVENT_READ and not done[index]:
                    try:
                        chunk = sock.recv(max(1, read_size()))
                    except BlockingIOError:
                        continue
                    received[index] += chunk
                    if not chunk:
                        assert half_close, f"client {index}: EOF before the whole echo"
                        done[index] = True
                        selector.unregister(sock)
                    elif not half_close and len(received[index]) >= len(payload):
                        done[index] = True
                        selector.unregister(sock)
                    assert len(received[index]) <= len(payload), (
                        f"client {index}: more bytes back than sent"
                    )
    raise AssertionError("exchange: step bound reached")


def send_until_paused(server: EchoServer, sock: socket.socket, *, seed: int = 0) -> bytes:
    """Send without reading until the server stops reading ``sock`` (backpressure).

    Returns what was sent.  The server pauses a client only when its unsent
    echo passes ``max_buffer``, so afterwards it holds at least that much.
    """
    chunk = random.Random(seed).randbytes(65536)
    sent = bytearray()
    sock.setblocking(False)
    deadline = time.monotonic() + PROMPT
    try:
        while server.stats().paused == 0:
            assert time.monotonic() < deadline, f"not paused after {len(sent)} bytes"
            try:
                count = sock.send(chunk)
            except BlockingIOError:
                time.sleep(POLL_INTERVAL)  # the pipe is full: let the server catch up
                continue
            sent += chunk[:count]
    finally:
        sock.settimeout(PROMPT)
    return bytes(sent)


def unsent(sock: socket.socket) -> int:
    """Bytes in ``sock``'s send queue: not yet acknowledged by the peer's kernel."""
    queued = fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0\0\0\0")
    return int.from_bytes(queued, sys.byteorder)


def unread_by_server(sock: socket.socket) -> int:
    """Bytes the server's kernel holds for it from client ``sock``, not yet read.

    From the server side's row in ``/proc/net/tcp`` (``rx_queue``).
    """
    table = "/proc/net/tcp6" if sock.family == socket.AF_INET6 else "/proc/net/tcp"
    client_port = sock.getsockname()[1]
    server_port = sock.getpeername()[1]
    with open(table) as rows:
        for row in rows.read().splitlines()[1:]:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if local_port == server_port and remote_port == client_port:
                return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"no server-side socket for client port {client_port} in {table}")


def read_by_server(sock: socket.socket, sent: int) -> int:
    """How many of the ``sent`` bytes the server process has read from ``sock``.

    For a client the server has stopped reading: the kernels may still be
    moving bytes from the client's send queue to the server's receive queue,
    so it waits until two looks in a row agree.
    """
    deadline = time.monotonic() + PROMPT
    last = (-1, -1)
    while True:
        now = (unsent(sock), unread_by_server(sock))
        if now == last:
            return sent - sum(now)
        assert time.monotonic() < deadline, "the queues never settled"
        last = now
        time.sleep(0.05)  # long enough for a loopback segment to land


def wait_until_server_read_all(sock: socket.socket) -> None:
    """Wait until the server process has read everything sent on ``sock``."""
    wait_until(
        lambda: unsent(sock) == 0 and unread_by_server(sock) == 0,
        what="the server reads everything sent",
    )


# -- a server in a subprocess --------------------------------------------------------

#: Runs the ``pollkit`` command line; a test prepends setup code (rlimits, signals).
#: The ``-c`` source that runs the ``pollkit`` CLI with the process's arguments.
CLI_MAIN = "import sys\nfrom pollkit.cli import main\nsys.exit(main(sys.argv[1:]))\n"
_LISTENING = re.compile(r"serving echo over \w+ on \[?([^\]\s]+?)\]?:(\d+)")


class ServerProcess:
    """``pollkit echo`` (or another command) in a subprocess, stderr collected by a thread."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        backend: str,
        prelude: str = "",
        script: str = CLI_MAIN,
        stdin: int | None = subprocess.DEVNULL,
    ) -> None:
        env = dict(os.environ, POLLKIT_BACKEND=backend, PYTHONUNBUFFERED="1")
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-c", prelude + script, *argv],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self._reader = threading.Thread(
            target=self._read, args=(self.process.stderr,), name="stderr", daemon=True
        )
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr.append(line)
            self.lines.put(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = PROMPT) -> re.Match[str]:
        """The first new stderr line matching ``pattern``; fail on timeout or exit."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {regex.pattern!r}: {self.output()}")
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    self._reader.join(PROMPT)
                    if self.lines.empty():
                        raise AssertionError(
                            f"exited ({self.process.returncode}) before a line matching "
                            f"{regex.pattern!r}: {self.output()}"
                        ) from None
                continue
            match = regex.search(line)
            if match:
                return match

    def wait_listening(self) -> tuple[str, int]:
        match = self.wait_for(_LISTENING)
        return match.group(1), int(match.group(2))

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = PROMPT) -> int:
        """The exit status; fails if the process is still running after ``timeout``."""
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s: {self.output()}") from None
        self._reader.join(PROMPT)
        return status

    def output(self) -> str:
        return "".join(self.stderr)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(PROMPT)
        self._reader.join(PROMPT)
        for stream in (self.process.stdin, self.process.stderr):
            if stream is not None:
                stream.close()

    def tell(self, line: str) -> None:
        """Write ``line`` to the process's stdin (started with ``stdin=subprocess.PIPE``)."""
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def main_thread_sleeps() -> bool:
    """True while this process's main thread sleeps (in a poller's system call, say)."""
    with open(f"/proc/self/task/{threading.main_thread().native_id}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "S"


def signal_from_another_thread(read_signum: str) -> str:
    """Source for a child's ``-c`` prelude: a thread that signals itself when asked.

    The thread evaluates ``read_signum`` (an expression that blocks until the
    test asks, and gives the signal number), waits until the main thread
    sleeps (the test of :func:`main_thread_sleeps`, inlined: the child cannot
    import this module), then sends the signal to itself with
    ``pthread_kill``.  The C-level handler runs in that thread, so the main
    thread's system call is not interrupted: what a signal landing just
    before the main thread blocks also leaves behind.
    """
    return f"""
import os, signal, sys, threading, time

def _main_thread_sleeps():
    with open(f"/proc/self/task/{{os.getpid()}}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "S"

def _signal_from_another_thread():
    signum = int({read_signum})
    deadline = time.monotonic() + 10
    while not _main_thread_sleeps() and time.monotonic() < deadline:
        time.sleep(0.005)
    signal.pthread_kill(threading.get_ident(), signum)

threading.Thread(target=_signal_from_another_thread, daemon=True).start()
"""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def is_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid``, from ``/proc``."""
    children = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            children.append(int(name))
    return children
