"""The echo client: the seed tutorial's client done right, on any driver.

The seed's client sent a line with ``sendall()`` and then read once, 1024
bytes: a longer echo came back in pieces that it never read, and a message
larger than the socket buffers deadlocked it (blocked in ``sendall()`` while
the server, its output full, had stopped reading).  This client sends and
receives at the same time through a :class:`~pollkit.Poller` and reads until
every byte it sent has come back.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from .._events import Events
from ..errors import InvalidArgumentError, PollkitError
from ._net import DEFAULT_HOST, DEFAULT_PORT, MAX_DATAGRAM, format_address, resolve

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from .._base import Poller

__all__ = ["DEFAULT_TIMEOUT", "EchoClient", "EchoClientError"]

#: Seconds without any progress after which the client gives up.
DEFAULT_TIMEOUT = 10.0

_READ = int(Events.READ)
_READ_WRITE = int(Events.READ | Events.WRITE)
_MSG_NOSIGNAL: int = getattr(socket, "MSG_NOSIGNAL", 0)
_CHUNK = 65536


class EchoClientError(PollkitError):
    """The echo did not come back whole: the server closed early, sent bytes
    it was never sent, or made no progress within the timeout."""


class EchoClient:
    """A connection to an echo server (TCP, or UDP with ``udp=True``).

    The constructor connects (a blocking connect bounded by ``timeout``); the
    socket is registered with ``poller`` until :meth:`close`.  The poller
    stays the caller's.

    Raises:
        OSError: the address does not resolve or the connection fails
            (``ConnectionRefusedError``, ``TimeoutError``); the message names
            the address.
    """

    def __init__(
        self,
        poller: Poller,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        udp: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise InvalidArgumentError(f"timeout must be a number of seconds > 0, not {timeout!r}")
        self._poller = poller
        self._udp = bool(udp)
        self._timeout = float(timeout)
        socktype = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
        try:
            family, sockaddr = resolve(host, port, socktype, passive=False)
        except socket.gaierror as exc:
            raise OSError(exc.errno, f"cannot resolve host {host!r}: {exc.strerror}") from None
        sock = socket.socket(family, socktype)
        try:
            sock.settimeout(self._timeout)
            try:
                sock.connect(sockaddr)
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                raise type(exc)(
                    exc.errno, f"cannot connect to {format_address(sockaddr)}: {reason}"
                ) from None
            sock.setblocking(False)
            if not udp:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            poller.register(sock, _READ)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._fd = sock.fileno()
        self._events = _READ
        self._peer: tuple[str, int] = sockaddr[:2]

    @property
    def peer(self) -> tuple[str, int]:
        """The server's ``(host, port)``."""
        return self._peer

    def echo(self, data: bytes) -> bytes:
        """Send ``data`` and return its echo, read until every byte is back.

        Over UDP, ``data`` is one datagram (at most 65,507 bytes; empty is
        fine) and the reply is the next datagram.

        Raises:
            EchoClientError: the server closed the connection or sent more
                than ``data``, or nothing happened for ``timeout`` seconds.
            InvalidArgumentError: a datagram larger than 65,507 bytes.
            OSError: the connection failed (reset, refused).
        """
        if self._udp:
            return self._echo_datagram(data)
        reply = bytearray()
        chunks = iter((data, b""))
        self._exchange(chunks.__next__, reply.extend, half_close=False)
        return bytes(reply)

    def stream(self, source: IO[bytes], sink: Callable[[bytes], Any]) -> int:
        """Send everything ``source.read()`` gives, passing the echo to ``sink``.

        TCP: sending and receiving overlap, so a source of any size never
        deadlocks; at the source's end the client half-closes the connection
        and reads until the server closes it.  UDP: datagrams of up to
        65,507 bytes, one at a time (an empty source sends one empty
        datagram).  Returns the number of bytes echoed.

        Raises:
            EchoClientError: the echo differs in length from what was sent,
                or nothing happened for ``timeout`` seconds.
            OSError: the connection failed.
        """
        if not self._udp:
            return self._exchange(lambda: source.read(_CHUNK), sink, half_close=True)
        total = 0
        first = True
        while True:
            chunk = source.read(MAX_DATAGRAM)
            if not chunk and not first:
                return total
            first = False
            reply = self._echo_datagram(chunk)
            sink(reply)
            total += len(reply)

    def close(self) -> None:
        """Unregister and close the socket.  Idempotent."""
        if self._sock.fileno() < 0:
            return
        try:
            self._poller.unregister(self._fd)
        finally:
            self._sock.close()

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
        kind = "udp" if self._udp else "tcp"
        return f"<EchoClient {kind} {format_address(self._peer)}>"

    # -- internals ----------------------------------------------------------------

    def _wait(self) -> list[tuple[int, int]]:
        # poll() may return empty before its timeout (the contract allows it,
        # and chaos: does it): only the deadline says the peer is silent.
        deadline = time.monotonic() + self._timeout
        while True:
            ready = self._poller.poll(max(0.0, deadline - time.monotonic()))
            if ready:
                return ready
            if time.monotonic() >= deadline:
                raise EchoClientError(
                    f"no reply from {format_address(self._peer)} within {self._timeout:g} s"
                )

    def _watch(self, events: int) -> None:
        if events != self._events:
            self._poller.modify(self._fd, events)
            self._events = events

    def _exchange(
        self, next_chunk: Callable[[], bytes], sink: Callable[[bytes], Any], *, half_close: bool
    ) -> int:
        """Send what ``next_chunk()`` gives (``b""``: no more) while draining the echo.

        Without ``half_close`` it returns once the echo of everything sent is
        back; with it, it shuts down the sending side at the end and returns
        when the server closes the connection.
        """
        sock = self._sock
        pending = memoryview(b"")
        sent = received = 0
        source_done = False
        while True:
            # Send what the kernel takes now; ask for WRITE only if it balks.
            while not source_done:
                if not pending:
                    chunk = next_chunk()
                    if not chunk:
                        source_done = True
                        if half_close:
                            sock.shutdown(socket.SHUT_WR)
                        break
                    pending = memoryview(chunk)
                try:
                    count = sock.send(pending, _MSG_NOSIGNAL)
                except BlockingIOError:
                    break
                pending = pending[count:]
                sent += count
            if source_done and not half_close and received == sent:
                self._watch(_READ)
                return received
            self._watch(_READ if source_done else _READ_WRITE)
            for _, mask in self._wait():
                if not mask & ~int(Events.WRITE):
                    continue  # writable only: the send loop above handles it
                try:
                    data = sock.recv(_CHUNK)
                except BlockingIOError:
                    continue
                if not data:
                    if source_done and half_close and received == sent:
                        return received
                    raise EchoClientError(
                        f"{format_address(self._peer)} closed the connection after echoing "
                        f"{received} of {sent} bytes sent"
                    )
                received += len(data)
                if received > sent:
                    raise EchoClientError(
                        f"{format_address(self._peer)} echoed {received} bytes, "
                        f"more than the {sent} sent"
                    )
                sink(data)

    def _echo_datagram(self, data: bytes) -> bytes:
        if len(data) > MAX_DATAGRAM:
            raise InvalidArgumentError(
                f"a datagram of {len(data)} bytes is too large: UDP carries at most "
                f"{MAX_DATAGRAM}; use TCP (no --udp) for more"
            )
        self._sock.send(data)
        while True:
            self._wait()
            try:
                return self._sock.recv(_CHUNK)
            except BlockingIOError:
                continue
