"""Helpers shared by the conformance suite.

The driver fixtures (``poller``, ``poller_backend``, ``poller_factory``) come
from pollkit's own pytest plugin, loaded through its ``pytest11`` entry point;
they are deliberately not redefined here, so the suite tests the plugin users
get.  This module holds only what several test modules need: sockets that are
always closed, ways to make ``WRITE`` not ready, a list of this process's fds,
and signals aimed at the main thread.

Plain helpers are imported by test modules (``from conftest import ...``);
helpers that own resources are fixtures so that pytest closes them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import pytest

from pollkit import FD_SETSIZE, Events, FileDescriptorLike, Poller
from pollkit._backends import parse_backend
from pollkit._wrap import WrapperBase

# pytester runs throwaway test suites through the plugin (test_pytest_plugin.py).
pytest_plugins = ["pytester"]

READ = int(Events.READ)
WRITE = int(Events.WRITE)
PRIORITY = int(Events.PRIORITY)
ERROR = int(Events.ERROR)
HANGUP = int(Events.HANGUP)
INVALID = int(Events.INVALID)
READ_HANGUP = int(Events.READ_HANGUP)

#: Bits the kernel may add to any reported mask, whatever was registered.
OUTPUT_ONLY = ERROR | HANGUP | INVALID

#: Float slack when comparing a measured wait with the timeout asked for.
#: The kernel's timers never fire early and time.monotonic() reads the same
#: clock, so this only absorbs rounding in the subtraction.
CLOCK_EPSILON = 1e-6

#: What "promptly" means in an assertion: far above any real latency, so a
#: loaded machine never fails a test, yet far below "blocked forever".
PROMPT = 5.0

#: Bound on loops that fill or drain a socket buffer (64 KiB per step).
_MAX_BUFFER_STEPS = 10_000

SocketPair = tuple[socket.socket, socket.socket]
SignalHandler = Callable[[int, FrameType | None], object]


def driver_of(poller: Poller) -> str:
    """The driver under any checking prefixes: ``"select"`` for ``"chaos:debug:select"``."""
    return parse_backend(poller.name).driver


# -- a base for test doubles ---------------------------------------------------


class Delegating(WrapperBase):
    """A :class:`Poller` that hands every call to :attr:`inner`: a base for test doubles.

    The forwarding of what a wrapper does not check is pollkit's own
    (``WrapperBase``); a double overrides what it changes.
    """

    def __init__(self, inner: Poller) -> None:
        super().__init__(inner, inner.name)

    def register(
        self,
        fd: FileDescriptorLike,
        events: int,
        *,
        oneshot: bool = False,
        edge: bool = False,
        exclusive: bool = False,
    ) -> None:
        self._inner.register(fd, events, oneshot=oneshot, edge=edge, exclusive=exclusive)

    def modify(
        self, fd: FileDescriptorLike, events: int, *, oneshot: bool = False, edge: bool = False
    ) -> None:
        self._inner.modify(fd, events, oneshot=oneshot, edge=edge)

    def unregister(self, fd: FileDescriptorLike) -> None:
        self._inner.unregister(fd)

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        return self._inner.poll(timeout, max_events)


# -- sockets ------------------------------------------------------------------


@pytest.fixture
def make_socketpair() -> Iterator[Callable[[], SocketPair]]:
    """Make non-blocking AF_UNIX stream pairs; all are closed after the test."""
    opened: list[socket.socket] = []

    def make() -> SocketPair:
        left, right = socket.socketpair()
        opened.extend((left, right))
        left.setblocking(False)
        right.setblocking(False)
        return left, right

    yield make
    for sock in opened:
        sock.close()


@pytest.fixture
def socketpair(make_socketpair: Callable[[], SocketPair]) -> SocketPair:
    """One non-blocking AF_UNIX stream pair, both ends closed after the test."""
    return make_socketpair()


@pytest.fixture
def make_tcp_pair() -> Iterator[Callable[[], SocketPair]]:
    """Make connected non-blocking TCP pairs on 127.0.0.1: ``(client, server)``."""
    opened: list[socket.socket] = []

    def make() -> SocketPair:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            client = socket.create_connection(listener.getsockname(), timeout=PROMPT)
            opened.append(client)
            server, _ = listener.accept()
            opened.append(server)
        client.setblocking(False)
        server.setblocking(False)
        return client, server

    yield make
    for sock in opened:
        sock.close()


@pytest.fixture
def make_high_socketpair(
    make_socketpair: Callable[[], SocketPair],
) -> Iterator[Callable[[int], SocketPair]]:
    """Make AF_UNIX pairs whose first end has an fd number >= ``minimum``.

    ``fcntl(F_DUPFD_CLOEXEC)`` picks the lowest free fd at or above the
    bound, which is how a busy server ends up with fds past ``FD_SETSIZE``.
    """
    opened: list[socket.socket] = []

    def make(minimum: int = FD_SETSIZE) -> SocketPair:
        low, peer = make_socketpair()
        high_fd = fcntl.fcntl(low.fileno(), fcntl.F_DUPFD_CLOEXEC, minimum)
        high = socket.socket(fileno=high_fd)
        opened.append(high)
        low.close()
        high.setblocking(False)
        return high, peer

    yield make
    for sock in opened:
        sock.close()


def fill_send_buffer(sock: socket.socket) -> int:
    """Write to non-blocking ``sock`` until the kernel refuses; return the bytes written.

    For an AF_UNIX stream socket this leaves ``WRITE`` not ready until the
    peer reads: the socket is writable again only once three quarters of its
    send buffer are free.
    """
    chunk = b"x" * 65536
    written = 0
    for _ in range(_MAX_BUFFER_STEPS):
        try:
            written += sock.send(chunk)
        except BlockingIOError:
            return written
    raise AssertionError(f"{sock!r} accepted {written} bytes without filling up")


def drain(sock: socket.socket) -> int:
    """Read non-blocking ``sock`` until nothing is left (or EOF); return the bytes read."""
    total = 0
    for _ in range(_MAX_BUFFER_STEPS):
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return total
        if not data:
            return total
        total += len(data)
    raise AssertionError(f"{sock!r} still had data after {total} bytes")


def closed_fd_number() -> int:
    """An fd number that is not open (a socket's, just closed)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = sock.fileno()
    sock.close()
    return fd


# -- fds of this process ------------------------------------------------------


def is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError as exc:
        if exc.errno == errno.EBADF:
            return False
        raise
    return True


def open_fds() -> set[int]:
    """The fds open in this process right now, from ``/proc/self/fd``."""
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    # The directory's own fd is listed but closed by the time we look.
    return {fd for fd in listed if is_open(fd)}


def masks_by_fd(ready: list[tuple[int, int]]) -> dict[int, int]:
    """``poll()``'s result as a dict, asserting no fd is reported twice in one call."""
    by_fd = dict(ready)
    assert len(by_fd) == len(ready), f"an fd was reported twice in one call: {ready}"
    return by_fd


# -- signals --------------------------------------------------------------------


class SignalShower:
    """What :func:`signal_shower` did: how many signals it sent."""

    def __init__(self) -> None:
        self.sent = 0
        self.done = threading.Event()


@contextlib.contextmanager
def signal_shower(
    handler: SignalHandler,
    *,
    count: int,
    first_after: float = 0.02,
    interval: float = 0.01,
    then: Callable[[], object] | None = None,
    signum: int = signal.SIGUSR1,
) -> Iterator[SignalShower]:
    """Send ``signum`` to the main thread ``count`` times while the block runs.

    ``handler`` is installed for the block.  The signals go to the main
    thread with ``pthread_kill`` so that they interrupt the system call the
    test is blocked in (a process-directed signal may land on any thread),
    and a helper thread sends them, so that pytest-timeout's ``SIGALRM`` and
    its interval timer are left alone.  ``then`` runs in the helper thread
    after the last signal (e.g. to call ``wakeup()``).
    """
    main = threading.main_thread().ident
    assert main == threading.get_ident(), "signal tests must run in the main thread"
    shower = SignalShower()
    stop = threading.Event()

    def send() -> None:
        try:
            if stop.wait(first_after):
                return
            for _ in range(count):
                signal.pthread_kill(main, signum)
                shower.sent += 1
                if stop.wait(interval):
                    return
            if then is not None:
                then()
        finally:
            shower.done.set()

    previous = signal.signal(signum, handler)
    sender = threading.Thread(target=send, name="signal-shower", daemon=True)
    sender.start()
    try:
        yield shower
    finally:
        stop.set()
        sender.join(PROMPT)
        # A signal still pending would hit the restored handler (SIG_DFL
        # kills the process for SIGUSR1): consume it with the signal blocked.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
        try:
            while signum in signal.sigpending():
                signal.sigtimedwait({signum}, 0)
            signal.signal(signum, previous)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    assert not sender.is_alive(), "the signal sender thread did not stop"
