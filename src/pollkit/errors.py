"""The exception hierarchy.

Every error pollkit raises on purpose derives from :class:`PollkitError`, and
also from the builtin type a caller would already catch (``KeyError`` for
registry lookups, ``ValueError`` for bad values), so code written for
:mod:`selectors` keeps working.  Kernel failures are raised unchanged as
:class:`OSError`.
"""

from __future__ import annotations

__all__ = [
    "AlreadyRegisteredError",
    "BackendUnavailableError",
    "FdOutOfRangeError",
    "InvalidArgumentError",
    "NotRegisteredError",
    "PollerClosedError",
    "PollerForkedError",
    "PollkitDebugWarning",
    "PollkitError",
    "UnsupportedFeatureError",
]


class PollkitError(Exception):
    """Base class of every error pollkit raises on purpose."""


class InvalidArgumentError(PollkitError, ValueError):
    """An argument was refused at the door: a negative fd, an empty or unknown
    event mask, a negative timeout.  The message names the value."""


class BackendUnavailableError(PollkitError, LookupError):
    """The driver asked for is unknown or cannot be opened on this system.

    The message lists the drivers that are available and why the others are
    not.
    """


class UnsupportedFeatureError(PollkitError, ValueError):
    """The driver has no such facility (edge triggering on poll, say).

    ``Poller.features`` tells in advance what a driver supports.
    """


class AlreadyRegisteredError(PollkitError, KeyError):
    """``register()`` of an fd that this poller already watches."""

    def __str__(self) -> str:
        # KeyError.__str__ would quote the message like a dict key.
        return str(self.args[0]) if self.args else ""


class NotRegisteredError(PollkitError, KeyError):
    """``modify()`` or a lookup of an fd that this poller does not watch."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class FdOutOfRangeError(PollkitError, ValueError):
    """The fd cannot be watched by this driver (select stops at ``FD_SETSIZE``)."""


class PollerClosedError(PollkitError, ValueError):
    """The poller was closed; only ``close()`` and ``closed`` still work."""


class PollerForkedError(PollkitError, RuntimeError):
    """The poller was made by the parent of this forked process.

    Its kernel object is shared with the parent, so using it here would
    change what the parent watches.  Only ``close()`` is allowed; open a new
    poller in the child.
    """


class PollkitDebugWarning(UserWarning):
    """Misuse of a poller, found by the ``debug:`` wrapper.

    The message names the fd, what was seen, what to do, and the
    ``file:line`` of the fd's ``register()``.  Turn it into an error in a
    test suite with ``-W error::pollkit.PollkitDebugWarning``.
    """
