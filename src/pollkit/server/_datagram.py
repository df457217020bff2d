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
* A send or receive error goes to ``error_received()``, once; serving goes
  on.  Linux tells an unconnected UDP socket of an ICMP error (a "port
  unreachable" for an earlier datagram) only when the application has set
  ``IP_RECVERR`` (``IPV6_RECVERR``) on it.  The kernel then both sets the
  socket's pending error, which the next ``recvfrom()`` or ``sendto()``
  raises, and keeps the error on the socket's error queue, and poll reports
  ``ERROR`` (select: readable) until the queue is read.  So the server reads
  the queue (``recvmsg(MSG_ERRQUEUE)``, bounded per readiness report) on an
  ``ERROR`` report, on a report that found nothing to do, and when a call
  fails; an error that a call raised and the queue holds too (that ICMP
  error, a local ``EMSGSIZE``) is reported from the queue only.  Entries that
  are not errors (timestamps, zero-copy completions) are dropped.
* A graceful stop stops reading and sends the queued datagrams first, for up
  to ``grace_period`` seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
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

# The socket's error queue (ip(7), linux/errqueue.h).  Each entry carries a
# struct sock_extended_err in an IP_RECVERR or IPV6_RECVERR control message;
# its first fields are ee_errno (u32) and ee_origin (u8).
_MSG_ERRQUEUE: int = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_RECVERR_MESSAGES = frozenset(
    {
        (socket.IPPROTO_IP, getattr(socket, "IP_RECVERR", 11)),
        (socket.IPPROTO_IPV6, getattr(socket, "IPV6_RECVERR", 25)),
    }
)
_EXTENDED_ERR = struct.Struct("=IB")
# Origins of entries that are notifications, not errors: SO_EE_ORIGIN_TIMESTAMPING
# (SO_TIMESTAMPING) and SO_EE_ORIGIN_ZEROCOPY (MSG_ZEROCOPY completions).
_NOT_ERRORS = frozenset({4, 5})
# Room for the extended error with the offender's address, and for the
# IP_PKTINFO-like messages the application may have asked for.
_ERRQUEUE_ANCILLARY = 512


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
        # Only IP sockets have an error queue: an AF_UNIX socket ignores
        # MSG_ERRQUEUE and would hand over a datagram instead.
        self._has_errqueue = sock.family in (socket.AF_INET, socket.AF_INET6)
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
        failure = mask & _FAILURE
        if failure:
            # The error queue is not empty: poll() reports ERROR until it is
            # read.  (A pending error alone is raised by the next call.)
            self._drain_errors()
        acted = False
        if mask & _WRITE_OR_FAILURE and self._queue:
            acted = self._flush()
        if mask & _READ_OR_FAILURE and self._events & _READ:
            acted = self._receive() or acted
        if not acted and not failure:
            # select reports a non-empty error queue as READ (and WRITE): a
            # report that found nothing to do may be one.
            self._drain_errors()

    def _receive(self) -> bool:
        """Read a batch; False if the first read found nothing."""
        sock = self._sock
        protocol = self._protocol
        assert protocol is not None
        for count in range(DATAGRAM_BATCH):
            try:
                data, peer = sock.recvfrom(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return count > 0
            except OSError as exc:  # an ICMP error reported for an earlier datagram
                self._error(exc)
                continue
            try:
                protocol.datagram_received(data, peer)
            except Exception:  # logged; the server goes on
                log.exception("%s.datagram_received() raised", type(protocol).__name__)
            if not self._events & _READ or self._stop_requested:
                return True  # the queue passed max_buffer, or a stop began
        return True

    def _error(self, exc: OSError) -> None:
        """A call on the socket raised ``exc``: report it, once.

        With ``IP_RECVERR`` the error queue may hold it too (the ICMP error
        behind a pending error, a local ``EMSGSIZE``): the queue is read first,
        and an entry with the same errno stands for ``exc``.
        """
        if not self._drain_errors(exc.errno):
            self._report(exc)

    def _drain_errors(self, twin: int | None = None) -> bool:
        """Report each error on the error queue; True if one has errno ``twin``.

        At most ``DATAGRAM_BATCH`` entries per call: what is left keeps the
        socket reported, and the next turn goes on.  (The kernel queues no
        more than the socket's receive buffer takes.)
        """
        if not self._has_errqueue:
            return False
        sock = self._sock
        found = False
        for _ in range(DATAGRAM_BATCH):
            try:
                _, ancillary, _, addr = sock.recvmsg(0, _ERRQUEUE_ANCILLARY, _MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break  # empty
            except OSError as exc:
                log.debug("datagram socket: reading the error queue failed: %s", exc)
                break
            for level, kind, data in ancillary:
                if (level, kind) not in _RECVERR_MESSAGES or len(data) < _EXTENDED_ERR.size:
                    continue
                code, origin = _EXTENDED_ERR.unpack_from(data)
                if not code or origin in _NOT_ERRORS:
                    continue
                found = found or code == twin
                where = f" (a datagram to {format_address(addr)})" if addr else ""
                self._report(OSError(code, os.strerror(code) + where))
        return found

    def _report(self, exc: OSError) -> None:
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

    def _flush(self) -> bool:
        """Send from the queue; False if the first send found the socket full."""
        sock = self._sock
        queue = self._queue
        sent = False
        while queue:
            data, peer = queue[0]
            try:
                sock.sendto(data, peer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._error(exc)
            sent = True
            queue.popleft()
            self._queued_bytes -= len(data)
        if self._flow_paused and self._queued_bytes <= self._low_water:
            self._flow_paused = False
        self._update_events()
        if self._draining and not queue:
            self._attention = True
        return sent

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
