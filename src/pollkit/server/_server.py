"""The TCP server: admission, idle sweeps, lingering closes and the graceful drain.

* **Admission** (see ``_listener.py`` for accept itself): past
  ``max_clients`` a connection is accepted and closed at once; a connection
  the driver cannot watch (:class:`~pollkit.FdOutOfRangeError`) is closed,
  the first such refusal logged as a warning.  Every connection gets
  ``TCP_NODELAY``: a server's replies are small writes answered by the
  peer's next request, which Nagle's algorithm would hold back for an ACK.
* **Idle timeouts without per-message timers.**  Per message the server
  stores one timestamp (the loop's, shared by every connection served in
  that turn).  One sweep timer closes the connections whose last progress is
  older than their timeout; it runs when the least recently active one would
  expire, but at most every ``min(timeout / 4, 1 s)``, so a silent peer is
  closed after between its timeout and its timeout plus that granularity.
  ``Transport.set_idle_timeout()`` overrides the server's value for one
  connection.
* **Lingering.**  A connection closing gracefully waits, half-closed, until
  the peer's kernel has acknowledged all of its output (see
  ``_transport.py``).  Nothing signals that: a 10 ms tick looks at every
  lingering connection while there are any, and an event on the socket does
  too.
* **Graceful drain.**  ``shutdown()`` closes the listening socket (new
  connections are refused), and closes every connection as ``close()`` does:
  stop reading, send what is pending, half-close, linger.  The loop goes on
  (timers and readers too) until the last connection is gone or
  ``grace_period`` has passed; what is left then is closed in the order
  accepted.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._events import Events
from .._validate import port as check_port
from .._validate import positive_int, seconds
from ..errors import FdOutOfRangeError, InvalidArgumentError
from ._listener import Listener
from ._loop import READ_SIZE, LoopBase, Timer
from ._net import format_address, open_server_socket
from ._stats import ServerStats
from ._transport import _APP_PAUSED, _CLOSING, _EOF_IN, _WRITE_PAUSED, Transport

if TYPE_CHECKING:
    from .._base import Poller
    from ._protocols import BufferedProtocol, Protocol

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MAX_BUFFER",
    "DEFAULT_MAX_CLIENTS",
    "Server",
]

log = logging.getLogger("pollkit.server")

#: Per-connection output high-water mark, in bytes.  256 KiB keeps a bulk
#: sender busy (the kernel's own socket buffers add more) while bounding the
#: worst case at ``max_clients * (max_buffer + one read)``.
DEFAULT_MAX_BUFFER = 256 * 1024
#: Connections served at once; more are accepted and closed at once.
DEFAULT_MAX_CLIENTS = 10_000
#: Seconds a graceful close or shutdown waits for pending output.
DEFAULT_GRACE_PERIOD = 5.0
#: How often lingering connections are looked at.
_LINGER_TICK = 0.01

_READ = int(Events.READ)


class Server(LoopBase):
    """A TCP server on one :class:`~pollkit.Poller`: ``protocol_factory()`` per connection.

    The constructor binds and listens at once, so :attr:`address` is known
    (``port=0`` picks a free port) and a busy port fails here (or it serves
    on a socket the caller made: ``sock``);
    :meth:`serve_forever` then serves until :meth:`shutdown`.  The poller
    stays the caller's: the server registers its sockets while serving and
    unregisters them afterwards, but never closes the poller.  The server
    must be the poller's only user while it serves, apart from the fds
    given to :meth:`add_reader`.

    Arguments:
        poller: any :class:`~pollkit.Poller`, wrappers included.
        protocol_factory: called once per connection, with no arguments; the
            :class:`Protocol` or :class:`BufferedProtocol` it returns gets
            ``connection_made(transport)``.
        host, port: where to listen; IPv4 or IPv6 (``"::1"``), resolved with
            ``getaddrinfo()``, first address wins.  ``None`` (the defaults):
            ``"127.0.0.1"`` (loopback only: every interface is ``"0.0.0.0"``
            or ``"::"``) and port 8888.
        max_clients: connections served at once; more are accepted and
            closed at once.
        idle_timeout: seconds without progress in either direction after
            which a connection is closed; ``None`` never closes one.
            ``Transport.set_idle_timeout()`` overrides it per connection.
        max_buffer: per-connection high-water mark of unsent output, in
            bytes (low-water: a quarter); ``Transport.set_write_buffer_limits()``
            overrides it per connection.
        grace_period: seconds a graceful ``close()`` or :meth:`shutdown`
            waits for pending output to be sent and acknowledged.
        reuse_port: set ``SO_REUSEPORT`` so that several servers (processes)
            share the port; the kernel spreads connections over them.
        backlog: the listening socket's accept queue length (a ``sock``
            given gets ``listen(backlog)`` too: on a socket already
            listening that only sets the length anew).
        socket_buffer: ``SO_SNDBUF`` and ``SO_RCVBUF`` for every connection,
            in bytes (the kernel doubles it); ``None`` leaves the kernel's
            autotuning on.  Set on the listening socket, whose connections
            inherit it.
        sock: serve on this socket instead of binding one (a socket bound by
            the caller, inherited by systemd socket activation, or bound to
            port 0 by a test), as asyncio's ``create_server(sock=...)``.  A
            ``SOCK_STREAM`` TCP socket, ``AF_INET`` or ``AF_INET6``, open and
            bound (listening or not), not a connection; ``AF_UNIX`` is
            refused (the server sets ``TCP_NODELAY`` on every accepted
            connection).  It excludes ``host``, ``port`` and ``reuse_port``
            (set ``SO_REUSEPORT`` before ``bind()``).  Once the constructor
            has returned the server owns the socket: it is made non-blocking,
            and closed by :meth:`close` (or when :meth:`serve_forever`
            returns).  A constructor that raises leaves it open, the
            caller's.

    Raises:
        InvalidArgumentError: a bad port, limit or timeout, a
            ``protocol_factory`` that is not callable, a ``sock`` that is not
            an open, bound TCP socket, or ``sock`` with ``host``, ``port``
            or ``reuse_port`` (the message names the value).
        OSError: the address does not resolve, or cannot be bound (busy
            port: ``errno.EADDRINUSE``); ``listen()`` on ``sock`` failed.
    """

    _kind = "Server"

    def __init__(
        self,
        poller: Poller,
        protocol_factory: Callable[[], Protocol | BufferedProtocol],
        host: str | None = None,
        port: int | None = None,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        idle_timeout: float | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        reuse_port: bool = False,
        backlog: int = socket.SOMAXCONN,
        socket_buffer: int | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        if port is not None:
            check_port("port", port)
        if not callable(protocol_factory):
            raise InvalidArgumentError(f"protocol_factory = {protocol_factory!r} is not callable")
        self._max_clients = positive_int("max_clients", max_clients)
        self._max_buffer = positive_int("max_buffer", max_buffer)
        self._low_water = self._max_buffer // 4
        self._limits = (self._low_water, self._max_buffer)
        self._idle_timeout = (
            None
            if idle_timeout is None
            else seconds("idle_timeout", idle_timeout, allow_zero=False)
        )
        self._grace_period = seconds("grace_period", grace_period)
        positive_int("backlog", backlog)
        if socket_buffer is not None:
            positive_int("socket_buffer", socket_buffer)
        self._protocol_factory = protocol_factory
        sock, made = open_server_socket(
            host, port, sock, udp=False, reuse_port=bool(reuse_port), backlog=backlog
        )
        try:
            if socket_buffer is not None:
                for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                    sock.setsockopt(socket.SOL_SOCKET, option, socket_buffer)
            self._address: tuple[str, int] = sock.getsockname()[:2]
            super().__init__(poller)
        except BaseException:
            if made:  # a socket the caller gave stays the caller's
                sock.close()
            raise
        sock.setblocking(False)  # nothing fails from here on: the socket is the server's
        self._listener = Listener(self, sock)
        self._track_time = self._idle_timeout is not None
        # Read into and dropped: input a closing connection must not leave unread.
        self._scratch = bytearray(READ_SIZE)
        self._lingering: set[Transport] = set()
        self._linger_timer: Timer | None = None
        # Transports closed by the application: each one's grace deadline.
        self._deadlines: dict[Transport, Timer] = {}
        self._idle_timer: Timer | None = None
        # Counters for stats().
        self._accepted = 0
        self._rejected_max_clients = 0
        self._rejected_fd_range = 0
        self._closed_idle = 0
        self._dropped = 0
        self._accept_pauses = 0

    # -- public surface --------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` (the socket's ``getsockname()``); the real port
        when 0 was asked for."""
        return self._address

    @property
    def max_clients(self) -> int:
        """Connections served at once."""
        return self._max_clients

    @property
    def max_buffer(self) -> int:
        """The default per-connection output high-water mark, in bytes."""
        return self._max_buffer

    @property
    def idle_timeout(self) -> float | None:
        """The default idle timeout in seconds (``None``: none)."""
        return self._idle_timeout

    @property
    def grace_period(self) -> float:
        """Seconds a graceful close or shutdown waits."""
        return self._grace_period

    def stats(self) -> ServerStats:
        """A snapshot of the server's state; safe to call from any thread."""
        transports = list(self._connections.values())
        pending = 0
        paused = 0
        for transport in transports:
            out = transport._out
            if out is not None:
                pending += len(out)
            if (
                transport._state < _CLOSING
                and not transport._flags & _EOF_IN
                and transport._flags & (_APP_PAUSED | _WRITE_PAUSED)
            ):
                paused += 1
        return ServerStats(
            connections=len(transports),
            pending_bytes=pending,
            paused=paused,
            accepting=self._listener.registered,
            accepted=self._accepted,
            rejected_max_clients=self._rejected_max_clients,
            rejected_fd_range=self._rejected_fd_range,
            closed_idle=self._closed_idle,
            dropped=self._dropped,
            accept_pauses=self._accept_pauses,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving" if self._serving else "idle"
        return f"<Server {format_address(self._address)} {self._poller.name} {state}>"

    # -- admission -------------------------------------------------------------------

    def _start(self) -> None:
        if not self._stop_requested:
            self._listener.start()

    def _admit(self, sock: socket.socket, peer: Any) -> None:
        if self._stop_requested:
            # shutdown() came between the listener's check and this accept():
            # such a connection is refused (closed), never made.
            sock.close()
            return
        if len(self._connections) >= self._max_clients:
            self._rejected_max_clients += 1
            sock.close()
            log.debug("refused %s: %d clients already", format_address(peer), self._max_clients)
            return
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # the peer reset it already, say
            sock.close()
            log.debug("could not set up the connection from %s: %s", format_address(peer), exc)
            return
        try:
            protocol = self._protocol_factory()
        except Exception:  # that connection only
            sock.close()
            log.exception("protocol_factory() raised; closed the connection from %s", peer)
            return
        fd = sock.fileno()
        try:
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
        except OSError as exc:
            sock.close()
            log.debug("could not watch the connection from %s: %s", format_address(peer), exc)
            return
        now = time.monotonic() if self._track_time else self._now
        transport = Transport(self, sock, fd, protocol, now)
        self._connections[fd] = transport
        self._accepted += 1
        log.debug("fd %d: accepted %s", fd, format_address(peer))
        if transport._idle is not None:
            self._schedule_sweep(now + transport._idle)
        try:
            protocol.connection_made(transport)
        except Exception as exc:  # noqa: BLE001  # aborts this connection only
            transport._callback_failed(exc, "connection_made")
            return
        transport._bind_data_received()  # what connection_made() installed, if anything

    def _connection_closed(self, transport: Transport) -> None:
        self._lingering.discard(transport)
        self._listener.connection_closed()
        if self._draining and not self._connections:
            self._attention = True

    # -- idle sweeps -----------------------------------------------------------------

    def _watch_idle(self, transport: Transport, timeout: float) -> None:
        self._track_time = True
        now = time.monotonic()
        transport._last_active = now
        self._schedule_sweep(now + timeout)

    def _schedule_sweep(self, when: float) -> None:
        timer = self._idle_timer
        if timer is not None:
            if timer.when <= when:
                return
            timer.cancel()
        self._idle_timer = self.call_later(max(0.0, when - time.monotonic()), self._sweep_idle)

    def _sweep_idle(self) -> None:
        self._idle_timer = None
        now = time.monotonic()
        next_at: float | None = None
        granularity = 1.0
        for transport in list(self._connections.values()):
            # Closing connections too: one whose peer neither reads nor closes
            # makes no progress, and nothing else would end it.
            timeout = transport._idle
            if timeout is None:
                continue
            expires = transport._last_active + timeout
            if expires <= now:
                self._closed_idle += 1
                transport._discard_input()
                transport._finish(None, "idle timeout")
                continue
            if next_at is None or expires < next_at:
                next_at = expires
            granularity = min(granularity, timeout / 4)
        if next_at is not None:
            self._schedule_sweep(max(next_at, now + granularity))

    # -- lingering and the drain ------------------------------------------------------

    def _linger(self, transport: Transport) -> None:
        self._lingering.add(transport)
        if self._linger_timer is None:
            self._linger_timer = self.call_later(_LINGER_TICK, self._linger_tick)

    def _linger_tick(self) -> None:
        self._linger_timer = None
        for transport in list(self._lingering):
            transport._linger_check()
        if self._lingering:
            self._linger_timer = self.call_later(_LINGER_TICK, self._linger_tick)

    def _begin_drain(self) -> None:
        self._listener.close()  # new connections are refused from now on
        connections = self._connections
        for transport in list(connections.values()):
            if transport._state < _CLOSING:
                transport._begin_close()
        if connections:
            # Flushing: those with output still to send; the others only wait,
            # half-closed, for the peer's acknowledgement (a round trip).
            flushing = sum(1 for transport in connections.values() if transport._out is not None)
            if flushing:
                log.info(
                    "shutting down: flushing %d connections (at most %g s)",
                    flushing,
                    self._grace_period,
                )
            else:
                log.info("shutting down: closing %d connections", len(connections))
            self.call_later(self._grace_period, self._drain_expired)

    def _drain_expired(self) -> None:
        if self._connections:
            pending = self.stats().pending_bytes
            log.warning(
                "grace period over: closing %d connections with %d bytes unsent",
                len(self._connections),
                pending,
            )
        self._aborting = True
        self._attention = True

    def _drain_finished(self) -> bool:
        return not self._connections

    def _close_resources(self) -> None:
        try:
            self._listener.close()
        finally:
            for transport in list(self._connections.values()):
                transport._discard_input()
                transport._finish(None, "server closed")
            self._lingering.clear()
