"""The echo server (RFC 862): one small protocol on :mod:`pollkit.server`.

Everything that makes it survive slow, broken and hostile clients is the
server layer's, not echo's: backpressure by output watermark, ``max_clients``,
idle timeouts, ``accept()`` out of fds, half-close, ``MSG_NOSIGNAL``, the
graceful drain with linger, signal wakeup, ``SO_REUSEPORT`` workers.  Read the
essays at the top of ``pollkit/server/_*.py`` for how and why.  What is left
here is the protocol and the public face that predates the layer:

* **TCP**: :class:`_Echo` writes back what it receives.  The layer reads at
  most one buffer per readiness report and ``write()`` tries ``send()`` at
  once, so an echo that fits in the socket buffer costs one ``recv`` and one
  ``send`` and never a ``modify()``.  Past ``max_buffer`` of unsent echo the
  layer stops reading the client until it drains to a quarter.  End of input
  from a client (``shutdown(SHUT_WR)``): everything pending is echoed, then
  the connection closes (the protocol's ``eof_received()`` returns None).
* **UDP**: :class:`_DatagramEcho` sends each datagram (an empty one too) back
  to its sender; the layer queues it while the socket buffer is full and
  stops reading past ``max_buffer`` queued bytes.

:class:`EchoServer` keeps its signature, properties, :meth:`EchoServer.stats`
(an :class:`EchoStats`, the layer's :class:`~pollkit.server.ServerStats`
under its old name), its log lines (logger ``pollkit.echo``; the layer's on
``pollkit.server``) and its shutdown semantics.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

from .._validate import port as check_port
from .._validate import positive_int
from ..errors import InvalidArgumentError
from ..server import (
    DatagramProtocol,
    DatagramServer,
    DatagramTransport,
    Protocol,
    Server,
    ServerStats,
    Transport,
)
from ..server._server import DEFAULT_GRACE_PERIOD, DEFAULT_MAX_BUFFER, DEFAULT_MAX_CLIENTS
from ._net import DEFAULT_HOST, DEFAULT_PORT, format_address

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


class EchoStats(ServerStats):
    """A snapshot of an :class:`EchoServer`'s state and counters.

    The fields are :class:`~pollkit.server.ServerStats`'s: ``connections``,
    ``pending_bytes`` (echo read but not yet taken by the kernel; UDP: queued
    datagram bytes), ``paused``, ``accepting``, ``accepted``,
    ``rejected_max_clients``, ``rejected_fd_range``, ``closed_idle``,
    ``dropped``, ``accept_pauses``.
    """

    __slots__ = ()


class _Echo(Protocol):
    """TCP echo: every byte received is written back."""

    __slots__ = ("data_received",)

    def connection_made(self, transport: Transport) -> None:
        # Receiving *is* writing back: the transport's own write() serves as
        # data_received, which spares the loop one Python call per message.
        self.data_received = transport.write  # type: ignore[method-assign]  # an instance's own callable shadows the method, by design


class _DatagramEcho(DatagramProtocol):
    """UDP echo: every datagram goes back to its sender."""

    __slots__ = ("_transport",)

    def connection_made(self, transport: DatagramTransport) -> None:
        self._transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._transport.sendto(data, addr)

    def error_received(self, exc: OSError) -> None:
        log.debug("udp: %s", exc)


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
        check_port("port", port)
        self._udp = bool(udp)
        self._server: Server | DatagramServer
        if self._udp:
            if idle_timeout is not None:
                raise InvalidArgumentError(
                    f"idle_timeout={idle_timeout!r} closes TCP clients; a UDP server has none "
                    "(leave it None with udp=True)"
                )
            # Checked as the TCP server would, so that a bad value fails either way.
            positive_int("max_clients", max_clients)
            positive_int("backlog", backlog)
            if socket_buffer is not None:
                positive_int("socket_buffer", socket_buffer)
            self._server = DatagramServer(
                poller,
                _DatagramEcho,
                host,
                port,
                max_buffer=max_buffer,
                grace_period=grace_period,
                reuse_port=reuse_port,
            )
        else:
            self._server = Server(
                poller,
                _Echo,
                host,
                port,
                max_clients=max_clients,
                idle_timeout=idle_timeout,
                max_buffer=max_buffer,
                grace_period=grace_period,
                reuse_port=reuse_port,
                backlog=backlog,
                socket_buffer=socket_buffer,
            )
        self._server._on_serving = self._log_serving

    # -- public surface ---------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; the real port when 0 was asked for."""
        return self._server.address

    @property
    def udp(self) -> bool:
        """True for a datagram server."""
        return self._udp

    @property
    def backend(self) -> str:
        """The poller's driver name."""
        return self._server.poller.name

    @property
    def max_buffer(self) -> int:
        """The per-connection output high-water mark, in bytes."""
        return self._server.max_buffer

    @property
    def server(self) -> Server | DatagramServer:
        """The :mod:`pollkit.server` server it runs on (for ``add_reader``, ``call_later``)."""
        return self._server

    def stats(self) -> EchoStats:
        """A snapshot of the server's state; safe to call from any thread."""
        return EchoStats(*self._server.stats())

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
        if self._server.closed:
            raise RuntimeError("this EchoServer is closed; make a new one")
        if self._server.serving:
            raise RuntimeError("this EchoServer is already serving")
        self._server.serve_forever()
        log.info("stopped")

    def _log_serving(self) -> None:
        log.info(
            "serving echo over %s on %s with the %s driver",
            "udp" if self._udp else "tcp",
            format_address(self.address),
            self.backend,
        )

    def shutdown(self, *, graceful: bool = True) -> None:
        """Ask :meth:`serve_forever` to stop; returns at once.

        Safe from any thread and from a signal handler (it sets a flag and
        calls ``Poller.wakeup()``).  Graceful: stop accepting, push pending
        echo to the kernel for up to ``grace_period`` seconds, close every
        client once its echo is delivered.  ``graceful=False`` (or a second
        call with it) skips the flushing.  Before :meth:`serve_forever` runs
        it makes it return at once.
        """
        self._server.shutdown(graceful=graceful)

    def close(self) -> None:
        """Close every client and the listening socket.

        Idempotent; :meth:`serve_forever` calls it on its way out.  Call it
        yourself only for a server that is not serving.

        Raises:
            RuntimeError: :meth:`serve_forever` is running (use :meth:`shutdown`).
        """
        self._server.close()

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
        server = self._server
        state = "closed" if server.closed else "serving" if server.serving else "idle"
        kind = "udp" if self._udp else "tcp"
        return f"<EchoServer {kind} {format_address(self.address)} {self.backend} {state}>"

    # White-box access for tests: the socket the server serves on.
    @property
    def _listener(self) -> socket.socket:
        server = self._server
        if isinstance(server, DatagramServer):
            return server._sock
        return server._listener.sock

    @_listener.setter
    def _listener(self, sock: socket.socket) -> None:
        server = self._server
        if not isinstance(server, DatagramServer):
            raise AttributeError("only a UDP EchoServer's socket can be replaced")
        server._sock = sock
