"""Make a signal end a blocked ``poll()`` in the main thread, every time.

CPython runs a Python signal handler in the main thread, between two
bytecodes; the C-level handler only sets a flag.  Two cases leave that flag
unseen while the main thread sleeps in ``epoll_wait()``/``poll()``/
``select()``:

* the signal lands after the main thread's last look at the flag and before
  it enters the system call, so the call is not interrupted;
* the kernel delivers the signal to another thread (any thread that does not
  block it may take a process-directed signal).

Either way the handler, and the ``Server.shutdown()`` it calls, waits for the
next event, which for an idle server never comes.  ``signal.set_wakeup_fd``
closes the gap: the C-level handler also writes the signal number to a
non-blocking fd, and the server's poller watches that fd, so the blocked call
returns and the handler runs.  asyncio and trio do the same.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import TYPE_CHECKING

from .._events import Events
from ..errors import FdOutOfRangeError, PollerClosedError, PollerForkedError

if TYPE_CHECKING:
    from .._base import Poller

__all__ = ["SignalWakeup"]


class SignalWakeup:
    """A pipe that ``signal.set_wakeup_fd`` writes to, watched by a poller."""

    __slots__ = ("_poller", "_write_fd", "read_fd")

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()  # non-inheritable (PEP 446)
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)  # set_wakeup_fd requires it
        self._poller: Poller | None = None

    def install(self, poller: Poller) -> bool:
        """Route signals to the pipe and watch it with ``poller``.

        Returns False, and changes nothing, where that cannot be done: off the
        main thread (``set_wakeup_fd`` is the main thread's alone), when
        another wakeup fd is set already (say, an asyncio loop's: it keeps
        it), or when ``poller`` cannot watch the pipe.
        """
        if threading.current_thread() is not threading.main_thread():
            return False
        try:
            previous = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        except ValueError:  # the main thread of a subinterpreter
            return False
        if previous != -1:
            # Somebody else's; put it back.  (Its warn_on_full_buffer setting
            # cannot be read, so it returns to the default, True.)
            signal.set_wakeup_fd(previous)
            return False
        try:
            poller.register(self.read_fd, Events.READ)
        except (FdOutOfRangeError, OSError):
            signal.set_wakeup_fd(-1)
            return False
        self._poller = poller
        return True

    def uninstall(self) -> None:
        """Undo :meth:`install` (if it succeeded); idempotent."""
        poller = self._poller
        if poller is None:
            return
        self._poller = None
        current = signal.set_wakeup_fd(-1)
        if current != self._write_fd:
            signal.set_wakeup_fd(current)  # replaced meanwhile: not ours to clear
        try:
            poller.unregister(self.read_fd)
        except (PollerClosedError, PollerForkedError):
            pass  # the caller closed the poller first: its registrations are gone

    def drain(self) -> None:
        """Read every signal number written so far (the handlers run regardless)."""
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Uninstall, then close both fds.  Idempotent."""
        self.uninstall()
        for fd in (self.read_fd, self._write_fd):
            if fd >= 0:
                os.close(fd)
        self.read_fd = self._write_fd = -1
