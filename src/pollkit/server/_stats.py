"""What a server reports about itself: :class:`ServerStats`."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ServerStats"]


class ServerStats(NamedTuple):
    """A snapshot of a server's state and counters (``Server.stats()``)."""

    #: Connections open now (a :class:`~pollkit.server.DatagramServer`: always 0).
    connections: int
    #: Output written but not yet taken by the kernel, summed over connections
    #: (datagrams: the queued datagrams' bytes).
    pending_bytes: int
    #: Connections (datagrams: the socket) not being read, because of
    #: backpressure or because the application paused them.
    paused: int
    #: Whether the listening socket is watched (False while ``accept()``
    #: backs off, after a shutdown, and always for datagrams).
    accepting: bool
    #: Connections admitted since the start.
    accepted: int
    #: Connections closed at once because ``max_clients`` were open.
    rejected_max_clients: int
    #: Connections closed at once because the driver cannot watch their fd.
    rejected_fd_range: int
    #: Connections closed by their idle timeout.
    closed_idle: int
    #: Connections dropped on an error (reset, ``EPIPE``, a callback that raised).
    dropped: int
    #: Times ``accept()`` backed off for lack of fds or memory.
    accept_pauses: int
