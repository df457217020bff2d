"""The UDP server: one socket, one protocol, a queue for when the kernel is full.

* ``DatagramTransport.sendto()`` sends at once; when the socket buffer is
  full (``EAGAIN``) the datagram is queued, and so is every later one until
  the queue drains, so datagrams to one peer leave in the order sent.  The
  poller watches for ``WRITE`` only while the queue is not empty.
* Past ``max_buffer`` queued bytes the server stops reading (the kernel
  drops what arrives meanwhile, as UDP allows) until the queue drains to a
  quarter of it: memory stays bounded whatever the peers send.
* Reads are bounded per readiness report (``DATAGRAM_BATCH``), so that a
  flood on the socket cannot hold up timers and the application's readers.
* A send or receive error (often an ICMP "port unreachable" for an earlier
  datagram, reported on a later call) goes to ``error_received()``; serving
  goes on.
* A graceful stop stops reading and sends the queued datagrams first, for up
  to ``grace_period`` seconds.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._events import Events
from .._validate import port as check_port
from .._validate import positive_int, seconds
from ..errors import InvalidArgumentError
from ._loop import READ_SIZE, LoopBase
from ._net import format_address, open_server_socket
from ._server import DEFAULT_GRACE_PERIOD, DEFAULT_MAX_BUFFER
from ._stats import ServerStats
from ._transport import _as_bytes

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from .._base import Poller
    from ._protocols import DatagramProtocol

__all__ = ["DatagramServer", "DatagramTransport"]

log = logging.getLogger("pollkit.server")

#: recvfrom() calls per readiness report.
DATAGRAM_BATCH = 64

_READ = int(Events.READ)
_WRITE = int(Events.WRITE)
_FAILURE = int(Events.ERROR | Events.HANGUP | Events.INVALID)
_READ_OR_FAILURE = _READ | _FAILURE
_WRITE_OR_FAILURE = _WRITE | _FAILURE


class DatagramTransport:
    """The server's UDP socket, handed to ``DatagramProtocol.connection_made()``.

    Made by the server, never by the application; call it on the loop's thread.
    """

    __slots__ = ("_closing", "_server")

    def __init__(self, server: DatagramServer) -> None:
        self._server = server
        # Set by close() and abort(): later sendto() calls, in the same
        # callback too, are no-ops.  A shutdown() from another thread does
        # not cut short a callback that is running: its datagrams are sent
        # or queued until the drain begins.
        self._closing = False

    def sendto(self, data: Buffer, addr: tuple[Any, ...]) -> None:
        """Send one datagram to ``addr``: at once, or queued while the socket is full.

        A no-op after :meth:`close` or :meth:`abort`, and once a stop has
        begun sending the queue.  An error goes to the protocol's
        ``error_received()``.

        Raises:
            NotBytesError: ``data`` is not bytes-like (a ``str``, say).
        """
        payload: bytes | memoryview = data if type(data) is bytes else _as_bytes(data)
        server = self._server
        if self._closing or server._draining or server._closed:
            return
        if server._queue:
            server._enqueue(bytes(payload), addr)
            return
        try:
            server._sock.sendto(payload, addr)
        except (BlockingIOError, InterruptedError):
            server._enqueue(bytes(payload), addr)
        except OSError as exc:
            server._error(exc)

    def close(self) -> None:
        """Stop the server gracefully (queued datagrams are sent first)."""
        self._closing = True
        self._server.shutdown(graceful=True)

    def abort(self) -> None:
        """Stop the server at once, dropping queued datagrams."""
        self._closing = True
        self._server.shutdown(graceful=False)

    def is_closing(self) -> bool:
        """True once the server is stopping."""
        server = self._server
        return server._stop_requested or server._closed

    def get_write_buffer_size(self) -> int:
        """Bytes of queued datagrams."""
        return self._server._queued_bytes

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``"sockname"`` or ``"socket"``; else ``default``."""
        sock = self._server._sock
        if name == "sockname":
            try:
                return sock.getsockname()
            except OSError:
                return default
        if name == "socket":
            return sock
        return default

    def __repr__(self) -> str:
        return f"<DatagramTransport {format_address(self._server._sockname)}>"


class DatagramServer(LoopBase):
    """A UDP server on one :class:`~pollkit.Poller`, with one :class:`DatagramProtocol`.

    The constructor binds at once (``port=0`` picks a free port), or takes a
    socket the caller bound (``sock``);
    :meth:`serve_forever` calls ``protocol_factory()`` once, hands it the
    transport (``connection_made``), and serves until :meth:`shutdown`; the
    protocol's ``connection_lost()`` runs when the socket closes.

    Arguments:
        poller: any :class:`~pollkit.Poller`, wrappers included.
        protocol_factory: called once, with no arguments.
        host, port: where to bind; IPv4 or IPv6.  ``None`` (the defaults):
            ``"127.0.0.1"`` and port 8888, as :class:`Server`.
        max_buffer: queued bytes past which the server stops reading until
            the queue drains to a quarter of it.
        grace_period: seconds a graceful stop spends sending queued datagrams.
        reuse_port: set ``SO_REUSEPORT`` so that several servers (processes)
            share the port; the kernel spreads datagrams over them by sender.
        sock: serve on this socket instead of binding one, as asyncio's
            ``create_datagram_endpoint(sock=...)``: a ``SOCK_DGRAM`` socket,
            ``AF_INET``, ``AF_INET6`` or ``AF_UNIX``, open and bound (it may
            be connected: ``datagram_received()`` then hears only that
            peer).  It excludes ``host``, ``port`` and ``reuse_port``.  Once
            the constructor has returned the server owns the socket: it is
            made non-blocking, and closed by :meth:`close` (or when
            :meth:`serve_forever` returns).  A constructor that raises
            leaves it open, the caller's.  On an ``AF_UNIX`` socket
            :attr:`address` raises (a path is no ``(host, port)``).

    Raises:
        InvalidArgumentError: a bad port, limit or timeout, a
            ``protocol_factory`` that is not callable, a ``sock`` that is not
            an open, bound datagram socket, or ``sock`` with ``host``,
            ``port`` or ``reuse_port`` (the message names the value).
        OSError: the address does not resolve, or cannot be bound.
    """

    _kind = "DatagramServer"

    def __init__(
        self,
        poller: Poller,
        protocol_factory: Callable[[], DatagramProtocol],
        host: str | None = None,
        port: int | None = None,
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
    ) -> None:
        if port is not None:
            check_port("port", port)
        if not callable(protocol_factory):
            raise InvalidArgumentError(f"protocol_factory = {protocol_factory!r} is not callable")
        self._max_buffer = positive_int("max_buffer", max_buffer)
        self._low_water = self._max_buffer // 4
        self._grace_period = seconds("grace_period", grace_period)
        self._protocol_factory = protocol_factory
        sock, made = open_server_socket(
            host, port, sock, udp=True, reuse_port=bool(reuse_port), backlog=None
        )
        try:
            # A path (str, or bytes for an abstract name) for AF_UNIX.
            self._sockname: tuple[Any, ...] | str | bytes = sock.getsockname()
            self._address: tuple[str, int] | None = (
                None if sock.family == socket.AF_UNIX else self._sockname[:2]
            )
            super().__init__(poller)
        except BaseException:
            if made:  # a socket the caller gave stays the caller's
                sock.close()
            raise
        sock.setblocking(False)  # nothing fails from here on: the socket is the server's
        self._sock = sock
        self._fd = sock.fileno()
        self._events = 0
        self._flow_paused = False
        self._queue: deque[tuple[bytes, Any]] = deque()
        self._queued_bytes = 0
        self._protocol: DatagramProtocol | None = None
        self._transport = DatagramTransport(self)

    # -- public surface --------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` (the socket's ``getsockname()``); the real port
        when 0 was asked for.

        Raises:
            AttributeError: the server was given an ``AF_UNIX`` socket, whose
                address is a path, not a ``(host, port)``; the message names
                the path.
        """
        address = self._address
        if address is None:
            raise AttributeError(
                f"address: {self!r} serves on an AF_UNIX socket, bound to "
                f"{self._sockname!r}, which has no (host, port); use that path "
                "(the transport's get_extra_info('sockname') gives it too)"
            )
        return address

    @property
    def max_buffer(self) -> int:
        """Queued bytes past which the server stops reading."""
        return self._max_buffer

    @property
    def grace_period(self) -> float:
        """Seconds a graceful stop spends sending queued datagrams."""
        return self._grace_period

    def stats(self) -> ServerStats:
        """A snapshot: ``pending_bytes`` is the queue, ``paused`` 1 while reading is held."""
        return ServerStats(
            connections=0,
            pending_bytes=self._queued_bytes,
            paused=int(self._flow_paused),
            accepting=False,
            accepted=0,
            rejected_max_clients=0,
            rejected_fd_range=0,
            closed_idle=0,
            dropped=0,
            accept_pauses=0,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving" if self._serving else "idle"
        return f"<DatagramServer {format_address(self._sockname)} {self._poller.name} {state}>"

    # -- serving ---------------------------------------------------------------------

    def _start(self) -> None:
        self._handlers[self._fd] = self._ready
        self._update_events()
        protocol = self._protocol_factory()
        self._protocol = protocol
        try:
            protocol.connection_made(self._transport)
        except Exception:  # logged; the server goes on
            log.exception("%s.connection_made() raised", type(protocol).__name__)

    def _ready(self, mask: int) -> None:
        if mask & _WRITE_OR_FAILURE and self._queue:
            self._flush()
        if mask & _READ_OR_FAILURE and self._events & _READ:
            self._receive()

    def _receive(self) -> None:
        sock = self._sock
        protocol = self._protocol
        assert protocol is not None
        for _ in range(DATAGRAM_BATCH):
            try:
                data, peer = sock.recvfrom(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error reported for an earlier datagram
                self._error(exc)
                continue
            try:
                protocol.datagram_received(data, peer)
            except Exception:  # logged; the server goes on
                log.exception("%s.datagram_received() raised", type(protocol).__name__)
            if not self._events & _READ or self._stop_requested:
                return  # the queue passed max_buffer, or a stop began

    def _error(self, exc: OSError) -> None:
        log.debug("datagram socket error: %s", exc)
        protocol = self._protocol
        if protocol is None:
            return
        try:
            protocol.error_received(exc)
        except Exception:  # logged; the server goes on
            log.exception("%s.error_received() raised", type(protocol).__name__)

    def _enqueue(self, data: bytes, addr: Any) -> None:
        self._queue.append((data, addr))
        self._queued_bytes += len(data)
        if self._queued_bytes > self._max_buffer:
            self._flow_paused = True
        self._update_events()

    def _flush(self) -> None:
        sock = self._sock
        queue = self._queue
        while queue:
            data, peer = queue[0]
            try:
                sock.sendto(data, peer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._error(exc)
            queue.popleft()
            self._queued_bytes -= len(data)
        if self._flow_paused and self._queued_bytes <= self._low_water:
            self._flow_paused = False
        self._update_events()
        if self._draining and not queue:
            self._attention = True

    def _update_events(self) -> None:
        if self._closed:
            return
        want = 0
        if not self._draining and not self._flow_paused:
            want = _READ
        if self._queue:
            want |= _WRITE
        current = self._events
        if want == current:
            return
        if not current:
            self._poller.register(self._fd, want)
        elif not want:
            self._unregister(self._fd)
        else:
            self._poller.modify(self._fd, want)
        self._events = want

    def _begin_drain(self) -> None:
        self._update_events()  # stop reading
        if self._queue:
            log.info(
                "shutting down: flushing %d queued datagrams (at most %g s)",
                len(self._queue),
                self._grace_period,
            )
            self.call_later(self._grace_period, self._drain_expired)

    def _drain_expired(self) -> None:
        if self._queue:
            log.warning(
                "grace period over: dropping %d queued datagrams (%d bytes)",
                len(self._queue),
                self._queued_bytes,
            )
        self._aborting = True
        self._attention = True

    def _drain_finished(self) -> bool:
        return not self._queue

    def _close_resources(self) -> None:
        self._handlers.pop(self._fd, None)
        try:
            if self._events:
                self._events = 0
                self._unregister(self._fd)
        finally:
            self._queue.clear()
            self._queued_bytes = 0
            self._flow_paused = False
            self._sock.close()
            protocol = self._protocol
            if protocol is not None:
                self._protocol = None
                self._lost.append((protocol.connection_lost, None))
