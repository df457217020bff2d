"""The callbacks a server calls: asyncio's protocol vocabulary, synchronously.

A protocol object belongs to one connection (a datagram protocol: to the one
socket of a :class:`~pollkit.server.DatagramServer`).  The server calls its
methods on the loop's thread, one at a time, never from inside another of
its callbacks; every method is optional, the bases do nothing.  The rules
that make them safe to write:

* ``write()``, ``close()``, ``abort()`` and ``pause_reading()`` may be called
  from any callback, ``connection_made()`` included.
* ``connection_lost()`` runs exactly once for each ``connection_made()``,
  after the callback that caused it has returned (never in the middle of
  it), with ``None`` for a close (by either side, by ``close()``,
  ``abort()``, the idle timeout or a shutdown) and the exception for a
  failure.
* A callback that raises aborts its own connection only: the server logs the
  exception with its traceback (logger ``pollkit.server``) and passes it to
  ``connection_lost()``.

:class:`BufferedProtocol` reads without a copy: the transport asks for a
buffer, ``recv_into()``\\ s it and reports how many bytes landed, as asyncio's
``BufferedProtocol`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._datagram import DatagramTransport
    from ._transport import Transport

__all__ = ["BaseProtocol", "BufferedProtocol", "DatagramProtocol", "Protocol"]


class BaseProtocol:
    """What every stream protocol has: the connection's life and write flow control."""

    __slots__ = ()

    def connection_made(self, transport: Transport) -> None:
        """The connection is set up; ``transport`` writes to it and controls it."""

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is closed; ``exc`` is ``None`` or what failed.

        Called once, last; the transport is closed by then.
        """

    def pause_writing(self) -> None:
        """Unsent output passed the transport's high-water mark.

        The server has stopped reading this connection too; it reads again,
        and calls :meth:`resume_writing`, once the output has drained to the
        low-water mark.  Called once per crossing.
        """

    def resume_writing(self) -> None:
        """Unsent output drained to the low-water mark after :meth:`pause_writing`."""

    def eof_received(self) -> bool | None:
        """The peer will send no more (it half-closed or closed).

        Return a true value to keep the connection open for writing (then
        call ``transport.close()`` yourself); otherwise it closes once its
        pending output is sent.
        """
        return None


class Protocol(BaseProtocol):
    """A stream protocol that receives ``bytes``."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        """Bytes arrived: at most one read's worth (the server bounds each read)."""


class BufferedProtocol(BaseProtocol):
    """A stream protocol that receives into its own buffer (no copy)."""

    __slots__ = ()

    def get_buffer(self, sizehint: int) -> Buffer:
        """A writable buffer for the next read (``sizehint``: the most it will take).

        Must not be empty.  The server reads at most ``sizehint`` bytes into
        it, then calls :meth:`buffer_updated`.
        """
        raise NotImplementedError("a BufferedProtocol must implement get_buffer()")

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` bytes were read into the start of the last buffer given."""


class DatagramProtocol:
    """What a :class:`~pollkit.server.DatagramServer` calls."""

    __slots__ = ()

    def connection_made(self, transport: DatagramTransport) -> None:
        """The server starts serving; ``transport`` sends datagrams."""

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """A datagram (perhaps empty) arrived from ``addr``."""

    def error_received(self, exc: OSError) -> None:
        """A send or receive failed (often an ICMP error for an earlier datagram)."""

    def connection_lost(self, exc: Exception | None) -> None:
        """The server stopped; the socket is closed.  Called once, last."""
