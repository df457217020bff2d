"""Socket helpers of the server layer: resolve and bind, or check a socket the
caller made (``sock=``); format an address; and read how much of a socket's
output the peer's kernel has not acknowledged.

**A caller's socket** (``Server(sock=...)``, ``DatagramServer(sock=...)``, as
asyncio's ``create_server(sock=...)``) is checked by :func:`check_socket`
before anything touches it, so that a refused one is left exactly as it was,
open and the caller's.  It must be what the layer can serve: the layer reads
and writes the fd itself (``os.read()``, ``send()``), sets ``TCP_NODELAY``
on every accepted connection, and answers datagrams with ``sendto()`` to the
address ``recvfrom()`` gave.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import sys
import termios
from typing import Any

from .._validate import port as check_port
from ..errors import InvalidArgumentError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "bind_socket",
    "check_socket",
    "format_address",
    "open_server_socket",
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


def format_address(address: tuple[Any, ...] | str | bytes) -> str:
    """``host:port``, with IPv6 hosts in brackets: ``[::1]:8888``.

    A Unix socket's address is its path; an abstract one (``b"\\0name"``)
    is shown as ``@name``, as ``ss`` shows it.
    """
    if isinstance(address, str):
        return address
    if isinstance(address, bytes):
        if address[:1] == b"\0":
            return "@" + address[1:].decode(errors="backslashreplace")
        return address.decode(errors="backslashreplace")
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


_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_DATAGRAM_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)


def check_socket(sock: object, *, udp: bool) -> socket.socket:
    """``sock`` if a server can serve on it; it is only looked at, never changed.

    ``udp``: for :class:`DatagramServer` (``SOCK_DGRAM``, ``AF_INET``,
    ``AF_INET6`` or ``AF_UNIX``); otherwise for :class:`Server`
    (``SOCK_STREAM`` over ``AF_INET`` or ``AF_INET6``, a protocol that takes
    ``TCP_NODELAY``, not a connection).  Either way it must be open and
    bound.

    Raises:
        InvalidArgumentError: naming ``sock`` and what is wrong with it; the
            socket is left as it was.
    """
    kind = "DatagramServer" if udp else "Server"
    if not isinstance(sock, socket.socket):
        raise InvalidArgumentError(
            f"sock = {sock!r} is not a socket.socket; pass the socket object "
            "(socket.socket(fileno=fd) wraps an inherited fd)"
        )
    subject = f"sock = {sock!r}"
    ssl = sys.modules.get("ssl")  # not imported: no SSLSocket can exist
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise InvalidArgumentError(
            f"{subject} is an ssl.SSLSocket: {kind} reads and writes the fd itself, "
            "so TLS would be bypassed; pass a plain socket"
        )
    if sock.fileno() == -1:
        raise InvalidArgumentError(f"{subject} is closed; pass an open socket")
    try:
        # First: it fails for an fd closed or replaced behind the object's back.
        sockname = sock.getsockname()
    except OSError as exc:
        raise InvalidArgumentError(
            f"{subject}: getsockname() failed ({exc.strerror}); its fd is no longer an open "
            "socket: pass an open, bound socket"
        ) from None
    family = sock.family
    if udp:
        if sock.type != socket.SOCK_DGRAM:
            raise InvalidArgumentError(
                f"{subject} is not a SOCK_DGRAM socket; DatagramServer serves datagrams "
                "(for a TCP socket, use Server)"
            )
        if family not in _DATAGRAM_FAMILIES:
            raise InvalidArgumentError(
                f"{subject} is an {_family_name(family)} socket; "
                "DatagramServer takes AF_INET, AF_INET6 or AF_UNIX"
            )
    else:
        if sock.type != socket.SOCK_STREAM:
            raise InvalidArgumentError(
                f"{subject} is not a SOCK_STREAM socket; Server serves TCP "
                "(for a UDP socket, use DatagramServer)"
            )
        if family == socket.AF_UNIX:
            raise InvalidArgumentError(
                f"{subject} is an AF_UNIX socket; Server serves TCP over AF_INET or "
                "AF_INET6 only (it sets TCP_NODELAY on every accepted connection, "
                "which a Unix socket has not)"
            )
        if family not in _INET_FAMILIES:
            raise InvalidArgumentError(
                f"{subject} is an {_family_name(family)} socket; Server takes AF_INET or AF_INET6"
            )
        try:
            # Read-only: another SOCK_STREAM protocol (SCTP) refuses the option
            # each accepted connection gets, and every connection would fail.
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        except OSError as exc:
            raise InvalidArgumentError(
                f"{subject} does not take TCP_NODELAY ({exc.strerror}); Server serves TCP only"
            ) from None
    if family == socket.AF_UNIX:
        if not sockname:
            raise InvalidArgumentError(f"{subject} is not bound; bind() it to a path first")
    elif sockname[1] == 0:
        raise InvalidArgumentError(
            f"{subject} is not bound; bind() it first (port 0 lets the kernel pick one)"
        )
    if not udp:
        try:
            peer = sock.getpeername()
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise InvalidArgumentError(
                    f"{subject}: getpeername() failed ({exc.strerror}); pass a bound socket"
                ) from None
        else:
            raise InvalidArgumentError(
                f"{subject} is connected to {format_address(peer)}; pass a bound or "
                "listening socket, not a connection"
            )
    return sock


def open_server_socket(
    host: str | None,
    port: int | None,
    sock: object,
    *,
    udp: bool,
    reuse_port: bool,
    backlog: int | None,
) -> tuple[socket.socket, bool]:
    """The socket a server serves on, and whether this call made it.

    With ``sock`` ``None``: a new non-blocking socket bound to ``host``,
    ``port`` (``None``: :data:`DEFAULT_HOST`, :data:`DEFAULT_PORT`), as
    :func:`bind_socket` makes it; the caller closes it if it fails later.
    Otherwise ``sock`` itself, checked by :func:`check_socket` and, with a
    ``backlog``, listening with it (``listen()`` again on a listening socket
    only sets the backlog anew).  It is not made non-blocking here: the
    server does that once nothing more can fail, so that a constructor that
    raises leaves the caller's socket in its mode (and open: the caller's).

    Raises:
        InvalidArgumentError: ``sock`` with a ``host``, ``port`` or
            ``reuse_port`` (naming both), or a socket :func:`check_socket`
            refuses; a bad port.
        OSError: binding, or ``listen()`` on ``sock``, failed; the message
            names the address.
    """
    if sock is None:
        made = bind_socket(
            DEFAULT_HOST if host is None else host,
            DEFAULT_PORT if port is None else port,
            udp=udp,
            reuse_port=reuse_port,
            backlog=backlog,
        )
        return made, True
    conflicts = [
        f"{name} = {value!r}"
        for name, value, given in (
            ("host", host, host is not None),
            ("port", port, port is not None),
            ("reuse_port", reuse_port, reuse_port),
        )
        if given
    ]
    if conflicts:
        hint = " (set SO_REUSEPORT on it before bind())" if reuse_port else ""
        raise InvalidArgumentError(
            f"sock = {sock!r} and {' and '.join(conflicts)}: pass one or the other; "
            f"a socket given is served where it is bound{hint}"
        )
    checked = check_socket(sock, udp=udp)
    if backlog is not None:
        try:
            checked.listen(backlog)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot listen on {format_address(checked.getsockname())}: {exc.strerror}",
            ) from None
    return checked, False


def _family_name(family: int) -> str:
    return getattr(family, "name", None) or f"address family {family}"


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes in ``sock``'s send queue the peer's kernel has not acknowledged (SIOCOUTQ)."""
    if _TIOCOUTQ is None:
        return 0  # cannot tell: closing at once is what a plain close() does
    try:
        queued = fcntl.ioctl(sock.fileno(), _TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0  # a broken connection: nothing more will be delivered anyway
    return int.from_bytes(queued, sys.byteorder)
