"""The echo server (RFC 862), written only against :class:`~pollkit.Poller`.

How it stays correct and cheap, and why:

* **The per-message path is flat.**  On ``READ`` the server ``recv_into()``\\ s
  one buffer it reuses for every connection and ``send()``\\ s the bytes
  straight back.  Only when the kernel takes part of them does it keep the
  rest in a per-connection ``bytearray`` and ask the poller for ``WRITE``;
  once that drains it drops ``WRITE`` again.  A client whose echo always fits
  in the socket buffer therefore costs one ``recv`` and one ``send`` per
  message and never an ``epoll_ctl``/``modify()``.  (The seed tutorial
  switched every fd to ``EPOLLOUT`` and back per message, and dropped the
  unsent rest of every short ``send()``.)
* **Backpressure.**  A client that sends but does not read makes its unsent
  echo grow.  Past ``max_buffer`` bytes (the high-water mark) the server stops
  reading that client (drops ``READ`` interest), so the kernel's flow control
  slows the sender down; below ``max_buffer // 4`` (the low-water mark) it
  reads again.  Memory per connection stays below ``max_buffer`` plus one read
  (64 KiB).  Everyone else is served as usual.
* **Half-close.**  End of input from a client (``shutdown(SHUT_WR)``) stops
  reading; everything pending is echoed, then the connection is closed.
* **Errors belong to one connection.**  A reset, ``EPIPE`` or any other error
  on a client's socket closes that client only.  ``send()`` passes
  ``MSG_NOSIGNAL``, so a write to a dead peer is an ``EPIPE`` error, never a
  ``SIGPIPE`` that kills the process when ``SIGPIPE`` is at its default.
* **Out of fds.**  ``accept()`` failing with ``EMFILE``/``ENFILE`` (or
  ``ENOBUFS``/``ENOMEM``) leaves the connection in the backlog and the
  listening socket readable: watching it would spin.  The server unregisters
  the listening socket and retries after a back-off (50 ms doubling to 1 s),
  or at once when one of its own connections closes and frees an fd.
  Waiting clients stay in the backlog and are served when fds free up.
* **Limits.**  Connections past ``max_clients`` are accepted and closed at
  once.  A driver that cannot watch an fd (select, for fds >= 1024) makes
  ``register()`` raise :class:`~pollkit.FdOutOfRangeError`: that connection
  is closed and the first such refusal is logged as a warning.
* **Timers without allocations.**  ``idle_timeout`` is checked by sweeps whose
  time becomes the ``poll()`` timeout.  Per message the server only stores one
  timestamp (the loop's, shared by every connection served in that
  iteration).  A sweep runs when the least recently active connection would
  expire, but at most every ``min(idle_timeout / 4, 1 s)``, so a silent
  client is closed after between ``idle_timeout`` and ``idle_timeout`` plus
  that granularity.
* **Shutdown.**  :meth:`EchoServer.shutdown` sets a flag and calls
  ``Poller.wakeup()``, so it works from any thread and from a signal
  handler.  Serving in the main thread, the server also points
  ``signal.set_wakeup_fd()`` at a pipe its poller watches, so that a signal
  that misses the blocked system call (see ``_signals.py``) still ends it
  and the handler runs at once.  The server then closes the listening
  socket, stops reading, pushes every connection's pending echo to the
  kernel within ``grace_period`` seconds, and closes each connection once no
  echo can be lost: it half-closes (the client sees EOF right after its last
  byte of echo), reads and drops the client's input, and closes when the
  client's kernel has acknowledged everything, FIN included, or the client
  has closed too.  (Closing a socket with input unread or still arriving
  makes the kernel send RST and throw away the echo it still holds.)  What is
  left at the end of the grace period is closed in the order accepted.
* **UDP.**  One socket: each datagram (an empty one too) is sent back to its
  sender at once, or queued when the socket buffer is full; past
  ``max_buffer`` queued bytes the server stops reading until the queue
  drains below a quarter of it.

The server must be the only user of its poller while it serves: the loop
dispatches on fd numbers it knows and ignores any other.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import socket
import sys
import termios
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from .._events import Events
from ..errors import FdOutOfRangeError, InvalidArgumentError, PollerClosedError, PollerForkedError
from ._net import DEFAULT_HOST, DEFAULT_PORT, bind_socket, check_port, format_address
from ._signals import SignalWakeup

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from .._base import Poller

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MAX_BUFFER",
    "DEFAULT_MAX_CLIENTS",
    "EchoServer",
    "EchoStats",
]

log = logging.getLogger("pollkit.echo")

#: Per-connection output high-water mark, in bytes.  256 KiB keeps a bulk
#: sender busy (the kernel's own socket buffers add more) while bounding the
#: worst case at ``max_clients * (max_buffer + 64 KiB)``.
DEFAULT_MAX_BUFFER = 256 * 1024
#: Connections served at once; more are accepted and closed at once.
DEFAULT_MAX_CLIENTS = 10_000
#: Seconds a graceful shutdown waits for pending echo to reach the kernel.
DEFAULT_GRACE_PERIOD = 5.0

_READ = int(Events.READ)
_WRITE = int(Events.WRITE)
_READ_WRITE = _READ | _WRITE
_FAILURE = int(Events.ERROR | Events.HANGUP | Events.INVALID)
_READ_OR_FAILURE = _READ | _FAILURE
_WRITE_OR_FAILURE = _WRITE | _FAILURE

_MSG_NOSIGNAL: int = getattr(socket, "MSG_NOSIGNAL", 0)
#: SIOCOUTQ, the ioctl that reads a socket's unacknowledged output (Linux).
_TIOCOUTQ: int | None = getattr(termios, "TIOCOUTQ", None)
#: One read's size: the largest datagram fits, and so does a loopback segment.
_READ_SIZE = 65536
#: accept() or recvfrom() calls per readiness report, so one busy socket
#: cannot hold up the rest of the loop.
_BATCH = 64
#: Reads of unwanted input before a close (16 MiB), so that one client
#: flooding the server cannot hold up the loop.
_DISCARD_READS = 256
#: How often a shutdown looks at connections waiting for the client's kernel
#: to acknowledge their last echo.
_LINGER_TICK = 0.01
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0

#: accept() errors that mean "no resources now": the connection stays queued.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() errors that belong to one failed connection (accept(2), "Error handling").
_CONNECTION_ERRNOS = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.EPERM,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
    }
)
#: Errors on a client's socket that a peer causes; anything else is logged louder.
_PEER_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
    }
)

# Why a connection is ending: the peer finished sending, or the server is stopping.
_OPEN = 0
_PEER_DONE = 1
_SERVER_DONE = 2


def _unsent_bytes(sock: socket.socket) -> int:
    """Bytes in ``sock``'s send queue the peer's kernel has not acknowledged (SIOCOUTQ)."""
    if _TIOCOUTQ is None:
        return 0  # cannot tell: closing at once is what a plain close() does
    try:
        queued = fcntl.ioctl(sock.fileno(), _TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0  # a broken connection: nothing more will be delivered anyway
    return int.from_bytes(queued, sys.byteorder)


class EchoStats(NamedTuple):
    """A snapshot of an :class:`EchoServer`'s state and counters."""

    #: Client connections open now (TCP; always 0 for UDP).
    connections: int
    #: Echo bytes read but not yet taken by the kernel, summed over clients
    #: (UDP: queued datagram bytes).
    pending_bytes: int
    #: Connections (UDP: the socket) not being read because of backpressure.
    paused: int
    #: Whether the listening socket is watched (False while ``accept()`` backs off).
    accepting: bool
    #: Connections admitted since the start.
    accepted: int
    #: Connections closed at once because ``max_clients`` were open.
    rejected_max_clients: int
    #: Connections closed at once because the driver cannot watch their fd.
    rejected_fd_range: int
    #: Connections closed by ``idle_timeout``.
    closed_idle: int
    #: Connections dropped on an error (reset, ``EPIPE``, ...).
    dropped: int
    #: Times ``accept()`` backed off for lack of fds or memory.
    accept_pauses: int


class _Connection:
    """One client: its socket, unsent echo and what the poller watches for it."""

    __slots__ = ("ending", "events", "last_active", "out", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.out: bytearray | None = None
        self.events = _READ
        self.ending = _OPEN
        self.last_active = now


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive int, not {value!r}")
    return value


def _seconds(name: str, value: object, *, allow_zero: bool) -> float:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidArgumentError(
            f"{name} must be a finite number of seconds {bound}, not {value!r}"
        )
    return float(value)


class EchoServer:
    """An RFC 862 echo server over TCP (or UDP) on one :class:`~pollkit.Poller`.

    The constructor binds and listens at once, so :attr:`address` is known
    (``port=0`` picks a free port) and a busy port fails here;
    :meth:`serve_forever` then serves until :meth:`shutdown`.  The poller
    stays the caller's: the server registers its sockets while serving and
    unregisters them afterwards, but never closes the poller.

    Arguments:
        host, port: where to listen; IPv4 or IPv6 (``"::1"``), resolved with
            ``getaddrinfo()``, first address wins.
        udp: serve datagrams instead of connections.
        max_clients: connections served at once; more are accepted and
            closed at once (TCP).
        idle_timeout: seconds without progress in either direction after
            which a client is closed; ``None`` never closes one.  TCP only:
            UDP has no clients to close, and ``udp=True`` with a timeout
            raises :class:`~pollkit.InvalidArgumentError`.
        max_buffer: per-connection high-water mark of unsent echo, in bytes:
            above it the client is not read until its echo drains to a
            quarter of it.  (UDP: the bound on queued datagram bytes.)
        grace_period: seconds a graceful shutdown waits for pending echo.
        reuse_port: set ``SO_REUSEPORT`` so that several servers (processes)
            share the port.
        backlog: the listening socket's accept queue length.
        socket_buffer: ``SO_SNDBUF`` and ``SO_RCVBUF`` for every client
            connection, in bytes (the kernel doubles it); ``None`` leaves the
            kernel's autotuning on.  Set once, on the listening socket, whose
            connections inherit it.

    Raises:
        InvalidArgumentError: a bad port, limit or timeout (the message
            names it), or an ``idle_timeout`` with ``udp=True``.
        OSError: the address does not resolve, or cannot be bound (busy
            port: ``errno.EADDRINUSE``).
    """

    def __init__(
        self,
        poller: Poller,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        udp: bool = False,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        idle_timeout: float | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        reuse_port: bool = False,
        backlog: int = socket.SOMAXCONN,
        socket_buffer: int | None = None,
    ) -> None:
        check_port(port)
        self._max_clients = _positive_int("max_clients", max_clients)
        self._max_buffer = _positive_int("max_buffer", max_buffer)
        self._low_water = self._max_buffer // 4
        self._idle_timeout = (
            None
            if idle_timeout is None
            else _seconds("idle_timeout", idle_timeout, allow_zero=False)
        )
        if udp and idle_timeout is not None:
            raise InvalidArgumentError(
                f"idle_timeout={idle_timeout!r} closes TCP clients; a UDP server has none "
                "(leave it None with udp=True)"
            )
        self._grace_period = _seconds("grace_period", grace_period, allow_zero=True)
        _positive_int("backlog", backlog)
        if socket_buffer is not None:
            _positive_int("socket_buffer", socket_buffer)
        self._poller = poller
        self._udp = bool(udp)
        self._listener = bind_socket(
            host, port, udp=self._udp, reuse_port=reuse_port, backlog=None if udp else backlog
        )
        if socket_buffer is not None:
            try:
                for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                    self._listener.setsockopt(socket.SOL_SOCKET, option, socket_buffer)
            except BaseException:
                self._listener.close()
                raise
        self._listen_fd = self._listener.fileno()
        self._address: tuple[str, int] = self._listener.getsockname()[:2]
        # Only the main thread can route signals to a poller (see _signals.py).
        # Made here, next to the listening socket, so that its fds are as low
        # (select watches fds < 1024 only).  Out of fds, the server still
        # serves; a signal may then wait for the next event to be handled.
        self._signals: SignalWakeup | None = None
        if threading.current_thread() is threading.main_thread():
            try:
                self._signals = SignalWakeup()
            except OSError as exc:
                log.debug("no signal wakeup pipe: %s", exc)
        self._signal_fd = -1  # the pipe's read fd while serve_forever() watches it

        self._connections: dict[int, _Connection] = {}
        self._buffer = bytearray(_READ_SIZE)
        self._view = memoryview(self._buffer)
        self._serving = False
        self._closed = False
        self._stop_requested = False
        self._abort_requested = False
        # The loop's clock, read once per poll() return when idle_timeout is set.
        self._now = 0.0
        # Timers: the poll() timeout is the nearest of these.
        self._deadline: float | None = None
        self._idle_sweep_at: float | None = None
        self._accept_resume_at: float | None = None
        self._accept_backoff = _BACKOFF_FIRST
        self._accept_troubled = False
        self._listener_events = 0  # what the poller watches the listening socket for
        # UDP: datagrams the kernel could not take yet, and their total size.
        self._datagrams: deque[tuple[bytes, Any]] = deque()
        self._queued_bytes = 0
        # Counters for stats().
        self._accepted = 0
        self._rejected_max_clients = 0
        self._rejected_fd_range = 0
        self._closed_idle = 0
        self._dropped = 0
        self._accept_pauses = 0

    # -- public surface ---------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; the real port when 0 was asked for."""
        return self._address

    @property
    def udp(self) -> bool:
        """True for a datagram server."""
        return self._udp

    @property
    def backend(self) -> str:
        """The poller's driver name."""
        return self._poller.name

    @property
    def max_buffer(self) -> int:
        """The per-connection output high-water mark, in bytes."""
        return self._max_buffer

    def stats(self) -> EchoStats:
        """A snapshot of the server's state; safe to call from any thread."""
        connections = list(self._connections.values())
        if self._udp:
            pending = self._queued_bytes
            paused = int(bool(self._listener_events) and not self._listener_events & _READ)
        else:
            pending = 0
            paused = 0
            for conn in connections:
                out = conn.out
                if out is not None:
                    pending += len(out)
                if not conn.events & _READ and conn.ending == _OPEN:
                    paused += 1
        return EchoStats(
            connections=len(connections),
            pending_bytes=pending,
            paused=paused,
            accepting=bool(self._listener_events) and not self._udp,
            accepted=self._accepted,
            rejected_max_clients=self._rejected_max_clients,
            rejected_fd_range=self._rejected_fd_range,
            closed_idle=self._closed_idle,
            dropped=self._dropped,
            accept_pauses=self._accept_pauses,
        )

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown`, then stop gracefully and close.

        Logs one INFO line when it starts (driver and address).  Returns after
        the graceful stop; the server is closed afterwards.  An exception
        (say, from a signal handler) closes every socket on its way out.

        In the main thread it sets ``signal.set_wakeup_fd()`` to a pipe
        registered in the poller while it serves, so that a signal handler
        (calling :meth:`shutdown`, say) runs at once even when the signal
        missed the blocked ``poll()``; it restores the setting on return.
        If a wakeup fd is set already (an asyncio loop's), it leaves it.

        Raises:
            RuntimeError: the server is closed, or already serving.
        """
        if self._closed:
            raise RuntimeError("this EchoServer is closed; make a new one")
        if self._serving:
            raise RuntimeError("this EchoServer is already serving")
        self._serving = True
        signals = self._signals
        try:
            if signals is not None and signals.install(self._poller):
                self._signal_fd = signals.read_fd
            self._set_listener_events(_READ)
            log.info(
                "serving echo over %s on %s with the %s driver",
                "udp" if self._udp else "tcp",
                format_address(self._address),
                self._poller.name,
            )
            if self._udp:
                self._serve_udp()
                self._stop_udp()
            else:
                self._serve_tcp()
                self._stop_tcp()
            log.info("stopped")
        finally:
            self._serving = False
            self._signal_fd = -1
            if signals is not None:
                signals.uninstall()
            self.close()

    def shutdown(self, *, graceful: bool = True) -> None:
        """Ask :meth:`serve_forever` to stop; returns at once.

        Safe from any thread and from a signal handler (it sets a flag and
        calls ``Poller.wakeup()``).  Graceful: stop accepting, push pending
        echo to the kernel for up to ``grace_period`` seconds, close every
        client in the order accepted.  ``graceful=False`` (or a second call
        with it) skips the flushing.  Before :meth:`serve_forever` runs it
        makes it return at once.
        """
        if not graceful:
            self._abort_requested = True
        self._stop_requested = True
        try:
            self._poller.wakeup()
        except (PollerClosedError, PollerForkedError):
            pass  # the loop is not running on this poller any more: nothing to wake

    def close(self) -> None:
        """Close every client (in the order accepted) and the listening socket.

        Idempotent; :meth:`serve_forever` calls it on its way out.  Call it
        yourself only for a server that is not serving.

        Raises:
            RuntimeError: :meth:`serve_forever` is running (use :meth:`shutdown`).
        """
        if self._closed:
            return
        if self._serving:
            raise RuntimeError("close() while serve_forever() runs; call shutdown() instead")
        self._closed = True
        try:
            for fd, conn in list(self._connections.items()):
                self._close_connection(fd, conn, "server closed", discard_input=True)
            self._set_listener_events(0)
        except (PollerClosedError, PollerForkedError):
            # The caller closed the poller first: its registrations are gone anyway.
            for conn in self._connections.values():
                conn.sock.close()
            self._connections.clear()
        finally:
            self._datagrams.clear()
            self._queued_bytes = 0
            self._listener.close()
            if self._signals is not None:
                self._signals.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving" if self._serving else "idle"
        kind = "udp" if self._udp else "tcp"
        return f"<EchoServer {kind} {format_address(self._address)} {self._poller.name} {state}>"

    # -- TCP --------------------------------------------------------------------

    def _serve_tcp(self) -> None:
        # poller.poll(...) rather than a stored bound method: CPython 3.11
        # specialises the method call, not a bound method with defaults.
        poller = self._poller
        monotonic = time.monotonic
        connections = self._connections
        listen_fd = self._listen_fd
        buffer = self._buffer
        view = self._view
        high_water = self._max_buffer
        nosignal = _MSG_NOSIGNAL
        track_time = self._idle_timeout is not None
        signal_fd = self._signal_fd
        now = 0.0
        while not self._stop_requested:
            deadline = self._deadline
            if deadline is None:
                ready = poller.poll()
            else:
                delay = deadline - monotonic()
                ready = poller.poll(delay if delay > 0.0 else 0.0)
            if track_time:
                now = self._now = monotonic()
            for fd, mask in ready:
                try:
                    conn = connections[fd]  # a subscript costs less than .get()
                except KeyError:
                    if fd == listen_fd:
                        self._accept_ready()
                    elif fd == signal_fd:
                        self._drain_signals()
                    continue  # else an fd closed earlier in this batch
                if conn.out is not None and mask & _WRITE_OR_FAILURE and not self._flush(fd, conn):
                    continue  # closed: everything echoed after a half-close, or an error
                if not (mask & _READ_OR_FAILURE and conn.events & _READ):
                    continue
                # The hot path: one recv_into(), one send(), nothing allocated
                # but the slice handed to send().
                sock = conn.sock
                try:
                    received = sock.recv_into(buffer)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self._drop(fd, conn, exc)
                    continue
                if not received:
                    self._end_of_input(fd, conn)
                    continue
                conn.last_active = now
                out = conn.out
                if out is None:
                    try:
                        sent = sock.send(view[:received], nosignal)
                    except BlockingIOError:
                        sent = 0
                    except OSError as exc:
                        self._drop(fd, conn, exc)
                        continue
                    if sent != received:
                        self._hold(fd, conn, view[sent:received])
                else:
                    out += view[:received]
                    if len(out) > high_water:
                        self._set_events(fd, conn, _WRITE)  # backpressure: stop reading
            if self._deadline is not None:
                current = monotonic()
                if current >= self._deadline:
                    self._run_timers(current)

    def _hold(self, fd: int, conn: _Connection, rest: memoryview) -> None:
        """Keep the part of an echo the kernel did not take, and watch for WRITE."""
        conn.out = bytearray(rest)
        self._set_events(fd, conn, _WRITE if len(rest) > self._max_buffer else _READ_WRITE)

    def _flush(self, fd: int, conn: _Connection) -> bool:
        """Send pending echo; False when the connection got closed."""
        out = conn.out
        assert out is not None
        try:
            sent = conn.sock.send(out, _MSG_NOSIGNAL)
        except BlockingIOError:
            return True
        except OSError as exc:
            self._drop(fd, conn, exc)
            return False
        conn.last_active = self._now
        del out[:sent]  # O(1): a bytearray moves its start on deletion at the front
        if out:
            if not conn.events & _READ and conn.ending == _OPEN and len(out) <= self._low_water:
                self._set_events(fd, conn, _READ_WRITE)  # drained enough: read again
            return True
        conn.out = None
        if conn.ending == _PEER_DONE:
            self._close_connection(fd, conn, "echoed everything", discard_input=False)
            return False
        if conn.ending == _SERVER_DONE:
            self._linger(fd, conn)
            return fd in self._connections
        self._set_events(fd, conn, _READ)
        return True

    def _end_of_input(self, fd: int, conn: _Connection) -> None:
        if conn.out is None:
            self._close_connection(fd, conn, "closed by the client", discard_input=False)
            return
        conn.ending = _PEER_DONE  # half-closed: echo what is pending, then close
        self._set_events(fd, conn, _WRITE)

    def _set_events(self, fd: int, conn: _Connection, events: int) -> None:
        if conn.events != events:
            self._poller.modify(fd, events)
            conn.events = events

    def _drop(self, fd: int, conn: _Connection, exc: OSError) -> None:
        self._dropped += 1
        if exc.errno in _PEER_ERRNOS:
            self._close_connection(fd, conn, f"dropped: {exc}", discard_input=False)
        else:
            log.warning("fd %d: unexpected error, closing the connection: %s", fd, exc)
            self._close_connection(fd, conn, "unexpected error", discard_input=False)

    def _close_connection(
        self, fd: int, conn: _Connection, reason: str, *, discard_input: bool
    ) -> None:
        del self._connections[fd]
        sock = conn.sock
        try:
            self._poller.unregister(fd)
            if discard_input:
                self._discard_input(sock)
        finally:
            sock.close()
        log.debug("fd %d: %s", fd, reason)
        if self._accept_resume_at is not None:
            self._accept_resume_at = 0.0  # an fd is free now: retry accept() at once
            self._update_deadline()

    def _discard_input(self, sock: socket.socket) -> bool:
        """Read and drop what the client sent, so that close() sends FIN, not RST.

        True if the input ended (EOF, or the connection failed).  At most
        ``_DISCARD_READS`` reads, so a flooding client cannot hold up the loop.
        """
        buffer = self._buffer
        for _ in range(_DISCARD_READS):
            try:
                if not sock.recv_into(buffer):
                    return True
            except BlockingIOError:
                return False
            except OSError:
                return True
        return False

    def _linger(self, fd: int, conn: _Connection) -> None:
        """Close a connection at shutdown once no echo can be lost; until then, linger.

        Closing a socket while client input is unread, or still on its way
        (as it is from a client the server had stopped reading), makes the
        kernel answer with RST and throw away what it has not sent yet.  So
        the connection is half-closed (the client sees EOF right after its
        last byte of echo), its input is read and dropped, and the socket is
        closed once the client's kernel has acknowledged everything, the
        FIN included (a reset after that costs the client nothing: it reads
        its echo, then EOF), or once the client has closed its side too.
        Nothing signals the acknowledgement, so the grace period's loop
        calls this on every event and tick.
        """
        sock = conn.sock
        if self._discard_input(sock):
            self._close_connection(fd, conn, "closed by the client", discard_input=False)
            return
        if conn.events != _READ:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # reset meanwhile: the next read reports it
            self._set_events(fd, conn, _READ)
        if not _unsent_bytes(sock):
            self._close_connection(fd, conn, "server shutting down", discard_input=False)

    def _accept_ready(self) -> None:
        listener = self._listener
        for _ in range(_BATCH):
            try:
                sock, peer = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _CONNECTION_ERRNOS:
                    log.debug("accept() failed for one connection: %s", exc)
                    continue
                self._pause_accepting(exc)
                return
            if self._accept_troubled:
                self._accept_troubled = False
                self._accept_backoff = _BACKOFF_FIRST
                log.info("accepting connections again")
            self._admit(sock, peer)

    def _admit(self, sock: socket.socket, peer: Any) -> None:
        fd = sock.fileno()
        if len(self._connections) >= self._max_clients:
            self._rejected_max_clients += 1
            sock.close()
            log.debug("refused %s: %d clients already", format_address(peer), self._max_clients)
            return
        try:
            sock.setblocking(False)
            # Echo replies are small writes answered by the peer's next
            # request: Nagle's algorithm would hold them back for an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._poller.register(fd, _READ)
        except FdOutOfRangeError as exc:
            self._rejected_fd_range += 1
            sock.close()
            if self._rejected_fd_range == 1:
                log.warning(
                    "closed a connection from %s: %s (later refusals are logged at DEBUG)",
                    format_address(peer),
                    exc,
                )
            else:
                log.debug("refused %s: fd %d out of range", format_address(peer), fd)
            return
        except OSError as exc:  # the peer reset it already, say
            sock.close()
            log.debug("could not set up the connection from %s: %s", format_address(peer), exc)
            return
        self._connections[fd] = _Connection(sock, self._now)
        self._accepted += 1
        log.debug("fd %d: accepted %s", fd, format_address(peer))
        if self._idle_timeout is not None and self._idle_sweep_at is None:
            self._idle_sweep_at = time.monotonic() + self._idle_timeout
            self._update_deadline()

    def _set_listener_events(self, events: int) -> None:
        current = self._listener_events
        if events == current:
            return
        if not current:
            self._poller.register(self._listen_fd, events)
        elif not events:
            self._poller.unregister(self._listen_fd)
        else:
            self._poller.modify(self._listen_fd, events)
        self._listener_events = events

    def _pause_accepting(self, exc: OSError) -> None:
        """Stop watching the listening socket for a while: it would spin."""
        self._set_listener_events(0)
        delay = self._accept_backoff
        self._accept_backoff = min(delay * 2, _BACKOFF_MAX)
        if not self._accept_troubled:
            self._accept_troubled = True
            self._accept_pauses += 1
            log.warning(
                "accept() failed: %s; serving the %d open connections and retrying every "
                "%g-%g s, or when one closes",
                exc,
                len(self._connections),
                _BACKOFF_FIRST,
                _BACKOFF_MAX,
            )
        self._accept_resume_at = time.monotonic() + delay
        self._update_deadline()

    # -- timers -----------------------------------------------------------------

    def _update_deadline(self) -> None:
        times = [t for t in (self._accept_resume_at, self._idle_sweep_at) if t is not None]
        self._deadline = min(times) if times else None

    def _run_timers(self, now: float) -> None:
        resume_at = self._accept_resume_at
        if resume_at is not None and now >= resume_at:
            self._accept_resume_at = None
            self._set_listener_events(_READ)
        sweep_at = self._idle_sweep_at
        if sweep_at is not None and now >= sweep_at:
            self._sweep_idle(now)
        self._update_deadline()

    def _sweep_idle(self, now: float) -> None:
        timeout = self._idle_timeout
        assert timeout is not None
        limit = now - timeout
        oldest: float | None = None
        for fd, conn in list(self._connections.items()):
            last = conn.last_active
            if last <= limit:
                self._closed_idle += 1
                self._close_connection(fd, conn, "idle timeout", discard_input=True)
            elif oldest is None or last < oldest:
                oldest = last
        if oldest is None:
            self._idle_sweep_at = None
        else:
            self._idle_sweep_at = max(oldest + timeout, now + min(timeout / 4, 1.0))

    # -- graceful stop ------------------------------------------------------------

    def _stop_tcp(self) -> None:
        self._accept_resume_at = None
        self._set_listener_events(0)
        self._listener.close()  # new connections are refused from now on
        connections = self._connections
        if self._abort_requested or not connections:
            return
        for fd, conn in list(connections.items()):
            conn.ending = _SERVER_DONE
            if conn.out is None:
                self._linger(fd, conn)
            else:
                self._set_events(fd, conn, _WRITE)  # stop reading; flush
        if connections:
            log.info(
                "shutting down: flushing %d connections (at most %g s)",
                len(connections),
                self._grace_period,
            )
        self._wait_out_grace_period(lambda: not connections, self._serve_closing)
        if connections:
            log.warning(
                "grace period over: closing %d connections with %d bytes unsent",
                len(connections),
                self.stats().pending_bytes,
            )

    def _serve_closing(self, ready: list[tuple[int, int]]) -> None:
        """Flush connections with pending echo; look at every lingering one again."""
        connections = self._connections
        for fd, mask in ready:
            conn = connections.get(fd)
            if conn is not None and conn.out is not None and mask & _WRITE_OR_FAILURE:
                self._flush(fd, conn)
        # No event says "the client's kernel acknowledged everything": a tick does.
        for fd, conn in list(connections.items()):
            if conn.out is None:
                self._linger(fd, conn)

    def _drain_signals(self) -> None:
        """Empty the signal wakeup pipe; the handlers run on their own, between bytecodes."""
        if self._signals is not None:
            self._signals.drain()

    def _wait_out_grace_period(
        self, done: Callable[[], bool], handle: Callable[[list[tuple[int, int]]], None]
    ) -> None:
        """Poll and ``handle(ready)`` until ``done()``, an abort or the grace period's end.

        ``handle`` also runs every ``_LINGER_TICK`` seconds without events.
        """
        deadline = time.monotonic() + self._grace_period
        poll = self._poller.poll
        signal_fd = self._signal_fd
        while not done() and not self._abort_requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            ready = poll(min(remaining, _LINGER_TICK))
            if signal_fd >= 0 and any(fd == signal_fd for fd, _ in ready):
                self._drain_signals()
            handle(ready)

    # -- UDP --------------------------------------------------------------------

    def _serve_udp(self) -> None:
        poll = self._poller.poll
        signal_fd = self._signal_fd
        while not self._stop_requested:
            for fd, mask in poll():
                if fd == signal_fd:
                    self._drain_signals()
                    continue
                if mask & _WRITE and self._datagrams:
                    self._flush_datagrams()
                if mask & _READ_OR_FAILURE and self._listener_events & _READ:
                    self._echo_datagrams()

    def _echo_datagrams(self) -> None:
        sock = self._listener
        buffer = self._buffer
        view = self._view
        for _ in range(_BATCH):
            try:
                received, peer = sock.recvfrom_into(buffer)
            except BlockingIOError:
                return
            except OSError as exc:  # an ICMP error reported for an earlier datagram
                log.debug("recvfrom() failed: %s", exc)
                continue
            if self._datagrams:
                self._queue_datagram(bytes(view[:received]), peer)
                if not self._listener_events & _READ:
                    return
                continue
            try:
                sock.sendto(view[:received], peer)
            except BlockingIOError:
                self._queue_datagram(bytes(view[:received]), peer)
                if not self._listener_events & _READ:
                    return
            except OSError as exc:
                log.debug("sendto(%s) failed: %s", format_address(peer), exc)

    def _queue_datagram(self, data: bytes, peer: Any) -> None:
        self._datagrams.append((data, peer))
        self._queued_bytes += len(data)
        self._set_listener_events(_WRITE if self._queued_bytes > self._max_buffer else _READ_WRITE)

    def _flush_datagrams(self) -> None:
        sock = self._listener
        queue = self._datagrams
        while queue:
            data, peer = queue[0]
            try:
                sock.sendto(data, peer)
            except BlockingIOError:
                break
            except OSError as exc:
                log.debug("sendto(%s) failed: %s", format_address(peer), exc)
            queue.popleft()
            self._queued_bytes -= len(data)
        if self._stop_requested:
            self._set_listener_events(_WRITE if queue else 0)
        elif not queue:
            self._set_listener_events(_READ)
        elif self._queued_bytes <= self._low_water:
            self._set_listener_events(_READ_WRITE)

    def _stop_udp(self) -> None:
        if self._abort_requested or not self._datagrams:
            return
        self._set_listener_events(_WRITE)
        log.info(
            "shutting down: flushing %d queued datagrams (at most %g s)",
            len(self._datagrams),
            self._grace_period,
        )
        self._wait_out_grace_period(
            lambda: not self._datagrams, lambda ready: self._flush_datagrams()
        )
