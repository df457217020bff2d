"""Event flags and feature names shared by every driver."""

from __future__ import annotations

import enum

__all__ = [
    "ALL_FEATURES",
    "INPUT_EVENTS",
    "OUTPUT_ONLY_EVENTS",
    "Events",
]


class Events(enum.IntFlag):
    """Readiness bits.

    The values equal Linux's ``poll(2)``/``epoll(7)`` bits, so the epoll and
    poll drivers hand masks to the kernel and back with no translation.
    ``poller.poll()`` returns plain ``int`` masks for speed; wrap one in
    ``Events(mask)`` for a readable form.
    """

    #: Data can be read (``POLLIN``/``EPOLLIN``); also set at end of file.
    READ = 0x001
    #: Urgent data can be read (``POLLPRI``): TCP out-of-band data, sysfs changes.
    PRIORITY = 0x002
    #: Data can be written without blocking (``POLLOUT``/``EPOLLOUT``).
    WRITE = 0x004
    #: Output only: an error condition, such as a socket's pending error.
    ERROR = 0x008
    #: Output only: the peer hung up; both directions are closed.
    HANGUP = 0x010
    #: Output only: the fd was closed while registered (``POLLNVAL``).
    INVALID = 0x020
    #: The peer shut down its writing half (``POLLRDHUP``/``EPOLLRDHUP``).
    READ_HANGUP = 0x2000


# Plain ints, not Events: from Python 3.11 ``~`` of a flag keeps only the
# flag's own bits, so ``mask & ~INPUT_EVENTS`` would miss unknown high bits.
#: Bits a caller may ask for in ``register()``/``modify()``.
INPUT_EVENTS: int = int(Events.READ | Events.PRIORITY | Events.WRITE | Events.READ_HANGUP)
#: Bits the kernel reports on its own; asking for them is an error.
OUTPUT_ONLY_EVENTS: int = int(Events.ERROR | Events.HANGUP | Events.INVALID)

#: Every optional feature a driver may list in ``Poller.features``.
ALL_FEATURES: frozenset[str] = frozenset({"oneshot", "edge", "exclusive", "read_hangup", "fileno"})
