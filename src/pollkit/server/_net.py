"""Socket helpers of the server layer: resolve and bind, format an address, and
read how much of a socket's output the peer's kernel has not acknowledged."""

from __future__ import annotations

import fcntl
import socket
import sys
import termios
from typing import Any

from .._validate import port as check_port

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "bind_socket",
    "format_address",
    "resolve",
    "unsent_bytes",
]

#: Loopback only: listening on every interface must be asked for.
DEFAULT_HOST = "127.0.0.1"
#: The seed tutorial's port; RFC 862's own port 7 needs root.
DEFAULT_PORT = 8888

#: SIOCOUTQ, the ioctl that reads a socket's unacknowledged output (Linux).
_TIOCOUTQ: int | None = getattr(termios, "TIOCOUTQ", None)


def resolve(host: str, port: int, socktype: int, *, passive: bool) -> tuple[int, Any]:
    """The address family and socket address for ``host``, ``port``.

    The first address ``getaddrinfo()`` gives wins, as ``socket.create_server``
    does.  Raises ``socket.gaierror`` (an ``OSError``) for a name that does not
    resolve, :class:`~pollkit.InvalidArgumentError` for a bad port.
    """
    flags = socket.AI_PASSIVE if passive else 0
    infos = socket.getaddrinfo(host, check_port("port", port), socket.AF_UNSPEC, socktype, 0, flags)
    family, _, _, _, sockaddr = infos[0]
    return int(family), sockaddr


def format_address(address: tuple[Any, ...]) -> str:
    """``host:port``, with IPv6 hosts in brackets: ``[::1]:8888``."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def bind_socket(
    host: str, port: int, *, udp: bool, reuse_port: bool, backlog: int | None
) -> socket.socket:
    """A non-blocking socket bound to ``host``, ``port`` (listening if ``backlog``).

    Raises:
        InvalidArgumentError: a port outside 0-65535.
        OSError: the host does not resolve, or the address cannot be bound
            (``EADDRINUSE`` for a busy port); the message names the address.
    """
    socktype = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    try:
        family, sockaddr = resolve(host, port, socktype, passive=True)
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot resolve host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, socktype)
    try:
        if not udp:
            # Rebind at once after a restart despite TIME_WAIT; for TCP this
            # never lets two listeners share a port.  (For UDP it would, and a
            # busy port would go unnoticed: not set there.)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen on {format_address(sockaddr)}: {exc.strerror}"
            ) from None
        if backlog is not None:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes in ``sock``'s send queue the peer's kernel has not acknowledged (SIOCOUTQ)."""
    if _TIOCOUTQ is None:
        return 0  # cannot tell: closing at once is what a plain close() does
    try:
        queued = fcntl.ioctl(sock.fileno(), _TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0  # a broken connection: nothing more will be delivered anyway
    return int.from_bytes(queued, sys.byteorder)
