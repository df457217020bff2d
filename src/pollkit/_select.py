"""The select driver.

Facts about select(2) and what they mean here:

* **FD_SETSIZE.**  An ``fd_set`` is a fixed bitmap of 1024 bits; glibc does
  not check the bound, and writing past it corrupts memory.  CPython refuses
  such fds when ``select()`` is *called*, which in a server means the whole
  loop dies at the first busy moment.  This driver refuses them at
  ``register()`` instead, with :class:`FdOutOfRangeError` naming the
  drivers that have no such limit.
* **EBADF poisons the whole call.**  If any fd in the sets is closed,
  ``select()`` fails for every fd.  The driver then finds the closed ones
  (``fcntl(F_GETFD)``), reports each once with ``INVALID``, drops it, and
  polls the rest without waiting, so one forgotten ``unregister()`` never
  stops the loop.
* **Three sets, three meanings.**  Readable (``READ``; also end of file and
  a pending socket error), writable (``WRITE``), exceptional (``PRIORITY``:
  TCP urgent data).  select cannot tell a hang-up or an error apart from
  readability, so it never reports ``HANGUP`` or ``ERROR``, and
  ``READ_HANGUP`` interest is refused with :class:`UnsupportedFeatureError`.
* **No kernel object, O(registered) per call, no oneshot or edge.**  The
  sets are rebuilt by CPython on every call from lists this driver keeps up
  to date; oneshot is emulated by taking a reported fd out of the lists
  until ``modify()``; edge triggering is refused.
* **Timeouts** have microsecond resolution, rounded up by CPython, with
  ``EINTR`` retried on the remaining time (PEP 475).
"""

from __future__ import annotations

import errno
import select
from collections.abc import Sequence

from ._base import DriverBase, Registration, check_open
from ._events import Events
from .errors import FdOutOfRangeError

__all__ = ["FD_SETSIZE", "SelectPoller"]

#: select(2)'s fd limit on Linux (glibc's ``FD_SETSIZE``).
FD_SETSIZE = 1024

_READ = int(Events.READ)
_WRITE = int(Events.WRITE)
_PRIORITY = int(Events.PRIORITY)
_INVALID = int(Events.INVALID)

# Every (fd, READ) pair select can report, made once: the common result, only
# reads, becomes a lookup per fd with no tuple built.  Shared by every poller.
_READ_PAIRS = [(fd, _READ) for fd in range(FD_SETSIZE)]
_read_pair = _READ_PAIRS.__getitem__


def _is_closed(fd: int) -> bool:
    try:
        check_open(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


class SelectPoller(DriverBase):
    """The select(2) driver: fds below 1024 only, O(registered) per call."""

    name: str = "select"
    features: frozenset[str] = frozenset({"oneshot"})

    def __init__(self) -> None:
        super().__init__()
        if self._waker.read_fd >= FD_SETSIZE:
            self._waker.close()
            raise FdOutOfRangeError(
                f"the select driver cannot even watch its own waker fd {self._waker.read_fd} "
                f"(>= FD_SETSIZE {FD_SETSIZE}); use the epoll or poll driver"
            )
        # The lists handed to select(); the waker's fd is always read-watched.
        self._readers: list[int] = [self._waker.read_fd]
        self._writers: list[int] = []
        self._urgent: list[int] = []
        self._kernel = select
        self._armed_oneshots: set[int] = set()

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        try:
            fast = max_events is None and (
                timeout is None or (timeout >= 0 and timeout is not True and timeout is not False)
            )
        except TypeError:  # not a number: the slow path says so, naming it
            fast = False
        if fast:
            try:
                readable, writable, urgent = self._kernel.select(
                    self._readers, self._writers, self._urgent, timeout
                )
            except OverflowError:
                return self._poll_slow(timeout, max_events)
            except OSError as exc:
                # Only EBADF is ours to recover from; anything else, such as a
                # TimeoutError raised by a signal handler, belongs to the caller.
                if exc.errno != errno.EBADF:
                    raise
                return self._recover_from_ebadf(exc, None)
            if writable or urgent or self._wake_tokens or self._armed_oneshots:
                return self._settle(readable, writable, urgent, None)
            return list(map(_read_pair, readable))
        return self._poll_slow(timeout, max_events)

    def _poll_checked(self, timeout: float | None, max_events: int | None) -> list[tuple[int, int]]:
        try:
            readable, writable, urgent = self._kernel.select(
                self._readers, self._writers, self._urgent, timeout
            )
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
            return self._recover_from_ebadf(exc, max_events)
        return self._settle(readable, writable, urgent, max_events)

    def _settle(
        self,
        readable: list[int],
        writable: list[int],
        urgent: list[int],
        max_events: int | None,
        closed: Sequence[int] = (),
    ) -> list[tuple[int, int]]:
        """Merge the three lists into masks, drop the waker, disarm oneshots.

        ``closed`` fds (already taken out of the lists) are reported with
        ``INVALID`` and dropped; those that ``max_events`` leaves out go back
        in the lists, so the next call reports them.
        """
        masks = dict.fromkeys(readable, _READ)
        for fd in writable:
            masks[fd] = masks.get(fd, 0) | _WRITE
        for fd in urgent:
            masks[fd] = masks.get(fd, 0) | _PRIORITY
        if self._wake_tokens:
            self._waker.drain()
        masks.pop(self._waker.read_fd, None)
        for fd in closed:
            masks[fd] = _INVALID
        ready = list(masks.items())
        if max_events is not None:
            ready = self._fair_slice(ready, max_events)
        armed = self._armed_oneshots
        if armed:
            for fd, _ in ready:
                if fd in armed:
                    armed.discard(fd)
                    self._unlist(fd)
        if closed:
            self._drop_reported(ready, closed)
        return ready

    def _drop_reported(self, ready: list[tuple[int, int]], closed: Sequence[int]) -> None:
        reported = {fd for fd, mask in ready if mask & _INVALID}
        for fd in closed:
            if fd in reported:
                del self._registry[fd]
                self._dropped.add(fd)
            else:
                registration = self._registry[fd]
                # A disarmed oneshot fd was not in the lists; leave it out.
                if not registration.oneshot or fd in self._armed_oneshots:
                    self._list(fd, registration.events)

    def _recover_from_ebadf(self, exc: OSError, max_events: int | None) -> list[tuple[int, int]]:
        closed = [fd for fd in self._registry if _is_closed(fd)]
        if not closed:
            raise exc  # not one of ours: a kernel failure worth seeing
        for fd in closed:
            self._unlist(fd)
        # Report the others too, without waiting: the caller learns of the
        # closed fds at once, as poll's POLLNVAL would tell it.  One _settle()
        # for both, so that max_events disarms only oneshots it returns.
        readable, writable, urgent = self._kernel.select(
            self._readers, self._writers, self._urgent, 0
        )
        return self._settle(readable, writable, urgent, max_events, closed)

    def _check_fd_range(self, fd: int) -> None:
        if fd >= FD_SETSIZE:
            raise FdOutOfRangeError(
                f"fd {fd} is >= FD_SETSIZE ({FD_SETSIZE}), which select() cannot watch; "
                "use the epoll or poll driver (POLLKIT_BACKEND=epoll)"
            )

    def _list(self, fd: int, events: int) -> None:
        if events & _READ:
            self._readers.append(fd)
        if events & _WRITE:
            self._writers.append(fd)
        if events & _PRIORITY:
            self._urgent.append(fd)

    def _unlist(self, fd: int) -> None:
        for fds in (self._readers, self._writers, self._urgent):
            if fd in fds:
                fds.remove(fd)

    def _kernel_add(self, fd: int, registration: Registration) -> None:
        check_open(fd)
        self._list(fd, registration.events)
        if registration.oneshot:
            self._armed_oneshots.add(fd)

    def _kernel_modify(self, fd: int, old: Registration, new: Registration) -> None:
        check_open(fd)
        self._unlist(fd)
        self._list(fd, new.events)
        if new.oneshot:
            self._armed_oneshots.add(fd)
        else:
            self._armed_oneshots.discard(fd)

    def _kernel_remove(self, fd: int, registration: Registration) -> None:
        self._unlist(fd)
        self._armed_oneshots.discard(fd)

    def _kernel_close(self) -> None:
        self._readers.clear()
        self._writers.clear()
        self._urgent.clear()
        self._armed_oneshots.clear()
