"""Address helpers shared by the echo server, the client and their CLI.

Resolving, binding and formatting live in the server layer
(:mod:`pollkit.server._net`); this module adds what only echo needs.
"""

from __future__ import annotations

from ..server._net import DEFAULT_HOST as DEFAULT_HOST
from ..server._net import DEFAULT_PORT as DEFAULT_PORT
from ..server._net import bind_socket as bind_socket
from ..server._net import format_address as format_address
from ..server._net import resolve as resolve

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MAX_DATAGRAM",
    "bind_socket",
    "format_address",
    "resolve",
]

#: The largest UDP payload over IPv4 (65,535 - 20 bytes of IP header - 8 of UDP
#: header); IPv6 allows 65,527, but a client cannot know which one it will need.
MAX_DATAGRAM = 65507
