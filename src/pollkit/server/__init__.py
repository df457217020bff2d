"""Hardened, portable servers in a few lines, on any :class:`~pollkit.Poller`.

What makes a server survive hostile peers is not specific to its protocol:
backpressure, connection limits, idle timeouts, ``accept()`` out of fds,
half-close, closing without losing the tail, graceful shutdown on a signal.
This package holds all of it, behind asyncio's vocabulary (``Protocol``,
``Transport``, ``call_later``...), with a synchronous loop that runs on any
driver and on the ``debug:`` and ``chaos:`` wrappers::

    from pollkit import open_poller
    from pollkit.server import Protocol, Server, Transport

    class Echo(Protocol):
        def connection_made(self, transport: Transport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    with open_poller() as poller, Server(poller, Echo, "127.0.0.1", 0) as server:
        server.serve_forever()  # until server.shutdown(), from anywhere

The modules, one concern each: ``_loop`` (the loop, timers, readers,
stopping), ``_listener`` (accept and its back-off), ``_transport`` (one
connection's writes, reads and closes), ``_server`` (admission, idle sweeps,
the drain), ``_datagram`` (UDP), ``_protocols`` (the callbacks),
``_signals`` (signal wakeup), ``_workers`` (processes sharing a port),
``_stats``.
"""

from __future__ import annotations

from ._datagram import DatagramServer as DatagramServer
from ._datagram import DatagramTransport as DatagramTransport
from ._loop import Timer as Timer
from ._protocols import BaseProtocol as BaseProtocol
from ._protocols import BufferedProtocol as BufferedProtocol
from ._protocols import DatagramProtocol as DatagramProtocol
from ._protocols import Protocol as Protocol
from ._server import DEFAULT_GRACE_PERIOD as DEFAULT_GRACE_PERIOD
from ._server import DEFAULT_MAX_BUFFER as DEFAULT_MAX_BUFFER
from ._server import DEFAULT_MAX_CLIENTS as DEFAULT_MAX_CLIENTS
from ._server import Server as Server
from ._stats import ServerStats as ServerStats
from ._transport import NotBytesError as NotBytesError
from ._transport import Transport as Transport

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MAX_BUFFER",
    "DEFAULT_MAX_CLIENTS",
    "BaseProtocol",
    "BufferedProtocol",
    "DatagramProtocol",
    "DatagramServer",
    "DatagramTransport",
    "NotBytesError",
    "Protocol",
    "Server",
    "ServerStats",
    "Timer",
    "Transport",
]
