"""The epoll driver.

Facts about epoll(7) and what they mean here:

* **epoll watches open file descriptions, not fd numbers.**  A registration
  is keyed by the pair (fd number, open file description) and lives as long
  as the *description* is open.  Closing an fd removes its registration only
  if no duplicate (``dup()``, ``fork()``, ``SCM_RIGHTS``) keeps the
  description open; otherwise epoll goes on reporting the closed fd number,
  and ``epoll_ctl(DEL)`` on it fails with ``EBADF``.  So: unregister *before*
  closing.  pollkit makes the late ``unregister()`` succeed quietly (``EBADF``
  and ``ENOENT`` both mean "the kernel no longer has this pair"), but it
  cannot stop events for a still-open duplicate.
* **A closed fd vanishes silently.**  Unlike poll's ``POLLNVAL``, epoll says
  nothing when a watched fd is closed, so this driver never reports
  ``INVALID``; the registry keeps the stale entry until ``unregister()``.
* **The kernel filters for us.**  epoll reports only the bits asked for plus
  ``EPOLLERR``/``EPOLLHUP``, and ``EPOLLRDHUP``/``EPOLLPRI`` only when asked,
  which is exactly pollkit's "interest in, interest out" rule; ``poll()`` can
  return the kernel's list untouched.  The waker's fd is the only thing to
  remove, and its token list says when that is needed (see ``_waker.py``).
* **EPOLLEXCLUSIVE** may be given only at ``EPOLL_CTL_ADD``, with ``EPOLLIN``,
  ``EPOLLOUT``, ``EPOLLET`` (and ``EPOLLWAKEUP``), and ``EPOLL_CTL_MOD`` of
  such a registration fails with ``EINVAL``.  ``modify()`` therefore deletes
  and re-adds it, restoring the old registration if the add fails.
* **Regular files and directories** cannot be watched (``EPERM``): they are
  always ready.  The error says to use the poll or select driver.
* **One call returns every ready fd.**  ``epoll_wait()`` returns at most
  ``maxevents`` events, and CPython's ``epoll.poll()`` defaults that to
  ``FD_SETSIZE - 1``.  While the kernel's set holds fewer entries than that
  (registered fds, the waker, and entries ``fromfd()`` could not adopt), the
  default loses nothing and the hot path passes no bound.  Once it may hold
  more, ``_kernel`` becomes a :class:`_Bounded` stand-in that passes a bound
  larger than the set, so one call still returns everything -- the same
  result poll and select give.  The bound only grows; CPython allocates the
  event array per call, so a larger bound costs memory only while the call
  runs.
* **Timeouts** are whole milliseconds; CPython rounds up, so a 0.1 ms timeout
  waits 1 ms instead of spinning, and it retries after ``EINTR`` with the
  remaining time (PEP 475).
* **fork()** shares the epoll instance with the child: a child's
  ``epoll_ctl`` would change the parent's set.  The base class refuses every
  call but ``close()`` in the child; closing the child's copy of the epoll fd
  leaves the parent's set alone.
"""

from __future__ import annotations

import errno
import os
import select
from typing import TYPE_CHECKING

from ._base import DriverBase, Registration, to_fd
from ._events import INPUT_EVENTS
from .errors import AlreadyRegisteredError, InvalidArgumentError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["EpollPoller"]

# Flags pollkit adds to an event mask; select has them on Linux only.
_EPOLLONESHOT: int = getattr(select, "EPOLLONESHOT", 1 << 30)
_EPOLLET: int = getattr(select, "EPOLLET", 1 << 31)
_EPOLLEXCLUSIVE: int = getattr(select, "EPOLLEXCLUSIVE", 1 << 28)
_GONE = (errno.EBADF, errno.ENOENT)
#: CPython's own default bound (FD_SETSIZE - 1), the smallest one we pass.
_DEFAULT_MAX_EVENTS = 1023


def _kernel_mask(registration: Registration) -> int:
    mask = registration.events
    if registration.oneshot:
        mask |= _EPOLLONESHOT
    if registration.edge:
        mask |= _EPOLLET
    if registration.exclusive:
        mask |= _EPOLLEXCLUSIVE
    return mask


def _check_epoll_fd(fd: int) -> None:
    """Raise ``InvalidArgumentError`` unless ``fd`` is an open epoll fd; never close it."""
    try:
        # Probe a duplicate, so that closing the probe leaves ``fd`` open.
        probe = select.epoll.fromfd(os.dup(fd))
    except OSError as exc:
        raise InvalidArgumentError(f"fd {fd} cannot be adopted as an epoll fd: {exc}") from exc
    read_end, write_end = os.pipe()
    try:
        # EPOLL_CTL_DEL of a fresh pipe fails with ENOENT on an epoll fd and
        # with EINVAL on anything else, and changes nothing either way.
        probe.unregister(read_end)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise InvalidArgumentError(
            f"fd {fd} is not an epoll fd ({exc}); it was left open; pass an epoll fd"
        ) from exc
    finally:
        probe.close()
        os.close(read_end)
        os.close(write_end)


def _names_the_watched_file(fd: int, fields: list[str]) -> bool:
    """Whether ``fd`` is open and names the file an fdinfo ``tfd:`` line watches.

    The line's ``ino:`` is the watched file's inode number (hex).  Without
    one (an fdinfo format we do not know), an open fd is taken as the file.
    """
    try:
        inode = os.fstat(fd).st_ino
    except OSError:
        return False
    # "ino:49bbcb" is one field (events: and data: are followed by a space).
    for field in fields:
        if field.startswith("ino:"):
            try:
                return int(field[4:], 16) == inode
            except ValueError:
                break
    return True


class _Bounded:
    """Stands in for the epoll object once its set may outgrow the default bound.

    ``poll(timeout)`` passes ``maxevents`` larger than the set, so one call
    returns every ready fd; an explicit ``maxevents`` (``max_events``) wins.
    """

    __slots__ = ("_bound", "_epoll")

    def __init__(self, epoll: select.epoll, bound: int) -> None:
        self._epoll = epoll
        self._bound = bound

    def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
        return self._epoll.poll(timeout, self._bound if maxevents == -1 else maxevents)


class EpollPoller(DriverBase):
    """The epoll(7) driver: O(ready) per call, native oneshot, edge and exclusive."""

    name: str = "epoll"
    features: frozenset[str] = frozenset({"oneshot", "edge", "exclusive", "read_hangup", "fileno"})

    def __init__(self) -> None:
        # CPython opens the epoll fd with EPOLL_CLOEXEC.
        self._setup(select.epoll())

    def _setup(self, epoll: select.epoll) -> None:
        self._epoll = epoll
        try:
            super().__init__()
            self._epoll.register(self._waker.read_fd, select.EPOLLIN)
        except BaseException:
            self._epoll.close()
            raise
        # What poll() calls: the epoll object itself, so that CPython's method
        # call needs no bound-method object; a _Bounded one for large sets.
        self._kernel = epoll
        # Always more than the kernel set's entries: see "One call returns
        # every ready fd" above.
        self._max_kernel_events = _DEFAULT_MAX_EVENTS
        # Entries of a fromfd() set that no fd number here can reach.
        self._unadopted = 0

    @classmethod
    def fromfd(cls, fd: int) -> Self:
        """Adopt an existing epoll fd, e.g. one inherited across ``exec``.

        The poller takes ownership: ``close()`` closes ``fd``, which is made
        non-inheritable.  Linux has no system call that lists an epoll set,
        so pollkit reads ``/proc/self/fdinfo/<fd>`` and adopts every fd
        registered there, with its events and oneshot/edge/exclusive flags;
        entries registered with a ``data`` word other than the fd number are
        re-registered so that ``poll()`` reports their fd.  Without ``/proc``
        the registry starts empty: events of earlier registrations are still
        reported, and ``register()`` of one of them raises
        :class:`AlreadyRegisteredError`.

        An entry whose fd number is closed in this process, or now names
        another file than the one the entry watches (a registered fd closed
        while a duplicate kept its file open, and the number reused), is not
        adopted: no call through that number can reach the entry, so pollkit
        could neither modify nor remove it.  The kernel keeps it while the
        old file is open, and ``poll()`` reports its events under that
        number; the number itself can be registered afresh.
        """
        fd = to_fd(fd)
        # select.epoll.fromfd() accepts any fd, and the constructor's first
        # epoll_ctl() would then fail and close it: check first.
        _check_epoll_fd(fd)
        epoll = select.epoll.fromfd(fd)
        os.set_inheritable(fd, False)
        poller = cls.__new__(cls)
        poller._setup(epoll)
        poller._adopt_existing()
        return poller

    def _adopt_existing(self) -> None:
        try:
            with open(f"/proc/self/fdinfo/{self._epoll.fileno()}") as info:
                lines = info.read().splitlines()
        except OSError:
            return
        waker_fd = self._waker.read_fd
        entries = [fields for fields in map(str.split, lines) if fields and fields[0] == "tfd:"]
        for fields in entries:
            try:
                target = int(fields[1])
                mask = int(fields[fields.index("events:") + 1], 16)
                data = int(fields[fields.index("data:") + 1], 16)
            except (ValueError, IndexError):  # an fdinfo format we do not know
                continue
            if target == waker_fd or not _names_the_watched_file(target, fields):
                continue
            registration = Registration(
                mask & INPUT_EVENTS,
                oneshot=bool(mask & _EPOLLONESHOT),
                edge=bool(mask & _EPOLLET),
                exclusive=bool(mask & _EPOLLEXCLUSIVE),
            )
            # poll() reads only the low 32 bits (epoll_data.fd); CPython's own
            # register() leaves the upper ones as whatever was on its stack.
            if data & 0xFFFFFFFF != target:
                try:
                    # This stores the fd number as the data word; an exclusive
                    # entry refuses EPOLL_CTL_MOD, and _kernel_modify re-adds it.
                    self._kernel_modify(target, registration, registration)
                except OSError:
                    continue
            self._registry[target] = registration
        # The waker's entry is counted by _make_room() itself.
        self._unadopted = max(0, len(entries) - len(self._registry) - 1)
        self._make_room(len(self._registry) + self._unadopted)

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        # The hot path: three tests before the system call and one after it.
        # ``not timeout`` passes None (block) and 0 (never block); a bool is
        # refused like any other non-number, by the slow path, which names it.
        # ``try`` costs nothing on CPython 3.11+ until something raises.
        if max_events is None:
            if not timeout and timeout is not False:
                try:
                    ready: list[tuple[int, int]] = self._kernel.poll(timeout)
                except TypeError:  # falsy but not a number, such as ""
                    return self._poll_slow(timeout, max_events)
                if self._wake_tokens:
                    return self._without_waker(ready)
                return ready
            try:
                waits = timeout > 0 and timeout is not True
            except TypeError:  # not a number: the slow path says so, naming it
                waits = False
            if waits:
                try:
                    ready = self._kernel.poll(timeout)
                except OverflowError:  # longer than epoll_wait() can take
                    return self._poll_slow(timeout, max_events)
                if self._wake_tokens:
                    return self._without_waker(ready)
                return ready
        return self._poll_slow(timeout, max_events)

    def _poll_checked(self, timeout: float | None, max_events: int | None) -> list[tuple[int, int]]:
        ready: list[tuple[int, int]] = self._kernel.poll(
            timeout, -1 if max_events is None else max_events
        )
        if self._wake_tokens:
            return self._without_waker(ready)
        return ready

    def fileno(self) -> int:
        self._check_usable()
        return self._epoll.fileno()

    def _kernel_add(self, fd: int, registration: Registration) -> None:
        self._make_room(len(self._registry) + 1 + self._unadopted)
        try:
            self._epoll.register(fd, _kernel_mask(registration))
        except FileExistsError:
            raise AlreadyRegisteredError(
                f"fd {fd} is in the kernel's epoll set but not in this poller's registry "
                "(registered before fromfd(), or a duplicate of a closed fd is still open)"
            ) from None
        except PermissionError as exc:
            raise PermissionError(
                exc.errno,
                f"epoll cannot watch fd {fd}: regular files and directories are always "
                "ready and epoll refuses them; use the poll or select driver",
            ) from None

    def _make_room(self, entries: int) -> None:
        """Make the per-call bound exceed ``entries`` registrations plus the waker."""
        if entries + 1 >= self._max_kernel_events:
            self._max_kernel_events = max(2 * self._max_kernel_events, entries + 2)
            if not (self._closed or self._forked):
                self._kernel = _Bounded(self._epoll, self._max_kernel_events)

    def _kernel_modify(self, fd: int, old: Registration, new: Registration) -> None:
        if not old.exclusive:
            self._epoll.modify(fd, _kernel_mask(new))
            return
        # EPOLL_CTL_MOD refuses exclusive registrations: delete and add again.
        self._epoll.unregister(fd)
        try:
            self._epoll.register(fd, _kernel_mask(new))
        except BaseException:
            self._epoll.register(fd, _kernel_mask(old))
            raise

    def _kernel_remove(self, fd: int, registration: Registration) -> None:
        try:
            self._epoll.unregister(fd)
        except OSError as exc:
            if exc.errno not in _GONE:
                raise

    def _kernel_close(self) -> None:
        self._epoll.close()
