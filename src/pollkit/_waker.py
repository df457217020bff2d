"""A wakeup channel that is safe from any thread and from signal handlers.

The poller watches ``read_fd`` like any other fd; :meth:`Waker.wake` makes it
readable.  Two facts shape the code:

* The hot path of ``Poller.poll()`` must not scan its results for the waker's
  fd.  So every ``wake()`` first appends a token to :attr:`Waker.tokens` and
  only then writes to the fd, and :meth:`Waker.drain` removes exactly as many
  tokens as writes it consumed.  Hence *the fd is readable only while the list
  is non-empty*, and ``poll()`` needs one truth test of the list to know
  whether the waker can be among its results.  ``list.append`` and
  ``del lst[:n]`` are single operations under the GIL, so no lock is needed
  (a lock would deadlock a signal handler that interrupts its holder).
* Many calls before one ``poll()`` coalesce: a ``wake()`` that finds a token
  already pending writes nothing.  That token's write has not been drained
  yet, so the next ``poll()`` (or the one in progress) returns anyway.

eventfd is used where the platform has it (one fd, an 8-byte counter), a
non-blocking pipe otherwise.  Both are close-on-exec.
"""

from __future__ import annotations

import os
import sys

__all__ = ["Waker"]

_EVENTFD_ONE = (1).to_bytes(8, "little")


class Waker:
    """The fd pair behind ``Poller.wakeup()``."""

    __slots__ = ("_eventfd", "_write_fd", "read_fd", "tokens")

    def __init__(self) -> None:
        self.tokens: list[None] = []
        # hasattr: some Linux builds (and tests) have no eventfd.
        if sys.platform == "linux" and hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self.read_fd = self._write_fd = fd
            self._eventfd = True
        else:  # a platform or build without eventfd
            self.read_fd, self._write_fd = os.pipe()  # non-inheritable (PEP 446)
            os.set_blocking(self.read_fd, False)
            os.set_blocking(self._write_fd, False)
            self._eventfd = False

    def wake(self) -> None:
        tokens = self.tokens
        if tokens:
            return  # a write is pending or in flight: coalesce
        tokens.append(None)
        try:
            os.write(self._write_fd, _EVENTFD_ONE if self._eventfd else b"\0")
        except BlockingIOError:
            pass  # a full pipe is readable already, so the poll returns anyway

    def drain(self) -> None:
        """Consume every pending write and the tokens that announced them."""
        consumed = 0
        try:
            if self._eventfd:
                consumed = int.from_bytes(os.read(self.read_fd, 8), "little")
            else:
                while True:
                    chunk = os.read(self.read_fd, 4096)
                    if not chunk:
                        break
                    consumed += len(chunk)
        except BlockingIOError:
            pass
        if consumed:
            del self.tokens[:consumed]

    def close(self) -> None:
        """Close the fds.  Idempotent: a second call must never close a
        number the process has since reused (a poller whose constructor
        failed closes its waker, and its ``__del__`` closes it again)."""
        read_fd, write_fd = self.read_fd, self._write_fd
        if read_fd < 0:
            return
        self.read_fd = self._write_fd = -1
        os.close(read_fd)
        if write_fd != read_fd:
            os.close(write_fd)
