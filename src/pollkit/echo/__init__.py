"""The echo server and client (RFC 862), written only against :class:`~pollkit.Poller`.

:class:`EchoServer` serves TCP (or UDP) on any driver and survives slow,
broken and hostile clients: it is one small protocol on :mod:`pollkit.server`,
whose defences it uses as they are.  :class:`EchoClient` sends and receives at
once and reads every byte of the echo.  ``pollkit echo`` and ``pollkit
client`` are their command lines.
"""

from __future__ import annotations

from ._client import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._client import EchoClient as EchoClient
from ._client import EchoClientError as EchoClientError
from ._net import DEFAULT_HOST as DEFAULT_HOST
from ._net import DEFAULT_PORT as DEFAULT_PORT
from ._net import MAX_DATAGRAM as MAX_DATAGRAM
from ._server import DEFAULT_GRACE_PERIOD as DEFAULT_GRACE_PERIOD
from ._server import DEFAULT_MAX_BUFFER as DEFAULT_MAX_BUFFER
from ._server import DEFAULT_MAX_CLIENTS as DEFAULT_MAX_CLIENTS
from ._server import EchoServer as EchoServer
from ._server import EchoStats as EchoStats

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_HOST",
    "DEFAULT_MAX_BUFFER",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "MAX_DATAGRAM",
    "EchoClient",
    "EchoClientError",
    "EchoServer",
    "EchoStats",
]
