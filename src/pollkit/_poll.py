"""The poll driver.

Facts about poll(2) and what they mean here:

* **No kernel object.**  Every call hands the kernel the whole ``pollfd``
  array (CPython keeps it and rebuilds it only after a registration change),
  so one call costs O(registered fds), and there is no fd to nest in another
  poller: ``fileno()`` raises :class:`UnsupportedFeatureError`.
* **POLLNVAL.**  A registered fd that was closed is reported with ``POLLNVAL``
  on *every* call, at once, whatever the timeout: left alone it turns an
  event loop into a busy loop.  The driver reports it once with ``INVALID``
  and drops it from the registry and the array; ``unregister()`` of it later
  succeeds quietly.  Finding it costs one pass over the results, which is
  why ``poll()`` loops over what it returns.
* **Fd numbers, not files.**  If the closed fd's number is reused before the
  next call, poll watches the new file under the old registration; nothing
  can detect that.  Unregister before you close.
* **The kernel filters for us.**  poll reports only the bits asked for plus
  ``POLLERR``/``POLLHUP``/``POLLNVAL``, and ``POLLRDHUP`` (Linux) only when
  asked, so masks pass through untranslated.
* **No oneshot, no edge.**  Oneshot is emulated: after an fd is reported it
  is taken out of the array (so not even ``POLLERR`` wakes it) until
  ``modify()`` puts it back.  Edge triggering cannot be emulated faithfully
  and is refused.
* **No result bound.**  poll fills in every ready fd, in array order, so
  ``max_events`` is applied here, round-robin by fd number so that fds late
  in the array are not starved.
* **Timeouts** are whole milliseconds, rounded up by CPython; ``EINTR`` is
  retried with the remaining time (PEP 475).
"""

from __future__ import annotations

import select

from ._base import DriverBase, Registration, check_open
from ._events import Events

__all__ = ["PollPoller"]

_INVALID = int(Events.INVALID)


class PollPoller(DriverBase):
    """The poll(2) driver: no fd limit, O(registered) per call."""

    name: str = "poll"
    features: frozenset[str] = frozenset({"oneshot", "read_hangup"})

    def __init__(self) -> None:
        super().__init__()
        self._poll = select.poll()
        self._poll.register(self._waker.read_fd, select.POLLIN)
        self._kernel = self._poll
        # oneshot fds that are armed: reported once, then taken out of the array
        self._armed_oneshots: set[int] = set()

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        if max_events is None:
            if timeout is None:
                ready: list[tuple[int, int]] = self._kernel.poll()
            else:
                try:
                    waits = timeout >= 0 and timeout is not True and timeout is not False
                except TypeError:  # not a number: the slow path says so, naming it
                    waits = False
                if not waits:
                    return self._poll_slow(timeout, max_events)
                try:
                    ready = self._kernel.poll(timeout * 1000.0)
                except OverflowError:
                    return self._poll_slow(timeout, max_events)
            if self._wake_tokens or self._armed_oneshots:
                return self._settle(ready, None)
            for _, mask in ready:
                # Linux reports a closed fd as POLLNVAL alone, so an equality
                # test, cheaper than a bit test, finds it.
                if mask == _INVALID:
                    return self._settle(ready, None)
            return ready
        return self._poll_slow(timeout, max_events)

    def _poll_checked(self, timeout: float | None, max_events: int | None) -> list[tuple[int, int]]:
        ready: list[tuple[int, int]] = (
            self._kernel.poll() if timeout is None else self._kernel.poll(timeout * 1000.0)
        )
        return self._settle(ready, max_events)

    def _settle(
        self, ready: list[tuple[int, int]], max_events: int | None
    ) -> list[tuple[int, int]]:
        """Drop the waker, apply ``max_events``, disarm oneshots, drop closed fds."""
        if self._wake_tokens:
            ready = self._without_waker(ready)
        if max_events is not None:
            ready = self._fair_slice(ready, max_events)
        armed = self._armed_oneshots
        for fd, mask in ready:
            if mask & _INVALID:
                self._drop_closed(fd)
            elif fd in armed:
                armed.discard(fd)
                self._poll.unregister(fd)
        return ready

    def _drop_closed(self, fd: int) -> None:
        if self._registry.pop(fd, None) is not None:
            self._dropped.add(fd)
        self._armed_oneshots.discard(fd)
        try:
            self._poll.unregister(fd)
        except KeyError:
            pass

    def _kernel_add(self, fd: int, registration: Registration) -> None:
        check_open(fd)
        self._poll.register(fd, registration.events)
        if registration.oneshot:
            self._armed_oneshots.add(fd)

    def _kernel_modify(self, fd: int, old: Registration, new: Registration) -> None:
        check_open(fd)
        # register() replaces the entry, and puts back a disarmed oneshot fd.
        self._poll.register(fd, new.events)
        if new.oneshot:
            self._armed_oneshots.add(fd)
        else:
            self._armed_oneshots.discard(fd)

    def _kernel_remove(self, fd: int, registration: Registration) -> None:
        self._armed_oneshots.discard(fd)
        try:
            self._poll.unregister(fd)
        except KeyError:  # a disarmed oneshot fd is not in the array
            pass

    def _kernel_close(self) -> None:
        self._armed_oneshots.clear()
