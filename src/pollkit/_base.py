"""The :class:`Poller` interface and the bookkeeping every driver shares.

The base class owns the registry, every argument check, the closed and forked
states, ``wakeup()`` and the context manager.  A driver only translates flags
and makes system calls: ``_kernel_add``, ``_kernel_modify``,
``_kernel_remove``, ``_kernel_close`` and its own flat ``poll()``.
"""

from __future__ import annotations

import fcntl
import math
import os
import time
import weakref
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeAlias

from ._events import INPUT_EVENTS, OUTPUT_ONLY_EVENTS, Events
from ._waker import Waker
from .errors import (
    AlreadyRegisteredError,
    InvalidArgumentError,
    NotRegisteredError,
    PollerClosedError,
    PollerForkedError,
    UnsupportedFeatureError,
)

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["FileDescriptorLike", "HasFileno", "Poller", "Registration"]


class HasFileno(Protocol):
    def fileno(self) -> int: ...


#: An fd number, or any object with a ``fileno()`` method (a socket, a file).
FileDescriptorLike: TypeAlias = int | HasFileno


class Registration(NamedTuple):
    """What a poller watches for one fd."""

    events: int
    oneshot: bool = False
    edge: bool = False
    exclusive: bool = False


#: The longest single kernel wait, in seconds.  epoll_wait() and poll() take
#: a C int of milliseconds; longer timeouts are waited out in chunks.
_MAX_KERNEL_WAIT = (2**31 - 1) / 1000.0

_live_pollers: weakref.WeakSet[DriverBase] = weakref.WeakSet()


def _forget_parent_pollers() -> None:
    for poller in list(_live_pollers):
        poller._mark_forked()


os.register_at_fork(after_in_child=_forget_parent_pollers)


def to_fd(fileobj: FileDescriptorLike) -> int:
    """The fd number of ``fileobj``; raises ``InvalidArgumentError`` if there is none."""
    if isinstance(fileobj, int) and not isinstance(fileobj, bool):
        fd = fileobj
    else:
        try:
            fd = fileobj.fileno()  # type: ignore[union-attr]  # anything without fileno() is refused just below
        except AttributeError:
            raise InvalidArgumentError(
                f"{fileobj!r} is not a file descriptor: pass an int or an object with fileno()"
            ) from None
        if not isinstance(fd, int) or isinstance(fd, bool):
            raise InvalidArgumentError(f"{fileobj!r}.fileno() returned {fd!r}, not an int")
    if fd < 0:
        raise InvalidArgumentError(
            f"fd {fd} is negative (a closed socket's fileno() is -1): "
            "unregister before closing, or pass the fd number"
        )
    return fd


def check_open(fd: int) -> None:
    """Raise ``OSError(EBADF)`` for a closed fd, as epoll's ``register()`` does."""
    fcntl.fcntl(fd, fcntl.F_GETFD)


class Unusable:
    """Stands in for a driver's kernel object once the poller is closed or forked.

    Hot paths call ``self._kernel.poll(...)`` (select: ``.select(...)``)
    with no state test of their own; after ``close()`` or ``fork()`` that
    call raises the right error.
    """

    __slots__ = ("_error",)

    def __init__(self, error: BaseException) -> None:
        self._error = error

    def _raise(self, *args: object) -> Any:
        raise self._error

    poll = select = _raise


def check_timeout(timeout: float | None) -> None:
    """Refuse a negative or non-numeric timeout.  (``poll()`` inlines the common case.)

    A bool is refused, as it is for an fd or a mask: ``True`` is an int to
    Python, but nobody means one second by it.  The drivers' fast paths send
    a bool here with one identity test.
    """
    if timeout is None:
        return
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise InvalidArgumentError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if timeout < 0 or math.isnan(timeout):
        raise InvalidArgumentError(f"timeout must be >= 0 seconds or None (block), not {timeout!r}")


def check_max_events(max_events: int) -> int:
    if not isinstance(max_events, int) or isinstance(max_events, bool) or max_events < 1:
        raise InvalidArgumentError(
            f"max_events must be a positive int or None (no bound), not {max_events!r}"
        )
    return max_events


def state_error(name: str, closed: bool) -> PollerClosedError | PollerForkedError:
    """The error of a poller named ``name`` that is closed, or (``closed`` false) forked."""
    if closed:
        return PollerClosedError(f"this {name} poller is closed")
    return PollerForkedError(
        f"this {name} poller was made by the parent process (pid changed "
        "after fork); only close() works here: open a new poller in the child"
    )


class Poller(ABC):
    """Readiness notification for a set of file descriptors.

    Every driver shows the same behaviour; where a kernel facility cannot do
    something, the driver raises a typed error when you ask for it.

    **Level-triggered by default.**  An fd is reported by every ``poll()`` for
    as long as it stays ready.

    **Interest in, interest out.**  A reported mask holds only bits that were
    registered, plus ``ERROR``, ``HANGUP`` and ``INVALID`` when the kernel
    reports them.  A peer's close wakes a ``READ`` interest on every driver.

    **Spurious wakeups.**  ``poll()`` may return an empty list before its
    timeout when ``wakeup()`` was called.  It never returns early otherwise.

    **Closed fds.**  Unregister an fd *before* you close it.  If you do not,
    ``poll()`` still never raises or spins because of it: the poll and select
    drivers report it once with ``INVALID`` and drop it; epoll forgets it
    silently (and keeps reporting it if a duplicate of the fd is still open,
    since epoll watches open file descriptions, not fd numbers).
    ``unregister()`` of such an fd succeeds quietly afterwards.

    A poller is a context manager; leaving the block closes it.  It is not
    inheritable across ``exec`` and, after ``fork()``, only ``close()`` works
    in the child.
    """

    #: The backend's name: ``"epoll"``, ``"poll"``, ``"select"``, or a
    #: checking wrapper's whole spec such as ``"debug:epoll"``.
    name: str
    #: Optional facilities this poller has: a subset of
    #: ``{"oneshot", "edge", "exclusive", "read_hangup", "fileno"}``.
    features: frozenset[str]

    @abstractmethod
    def register(
        self,
        fd: FileDescriptorLike,
        events: int,
        *,
        oneshot: bool = False,
        edge: bool = False,
        exclusive: bool = False,
    ) -> None:
        """Start watching ``fd`` for ``events``.

        ``oneshot``: report the fd once, then keep it registered but disarmed
        until :meth:`modify` re-arms it.  ``edge``: report only changes of
        readiness (epoll only).  ``exclusive``: wake only one of several
        epoll sets watching the same fd (epoll only; ``READ``/``WRITE`` only,
        no ``oneshot``).

        Raises:
            InvalidArgumentError: a negative fd, an empty mask, unknown bits,
                or an output-only bit (``ERROR``, ``HANGUP``, ``INVALID``).
            UnsupportedFeatureError: the driver lacks a requested facility.
            AlreadyRegisteredError: the fd is registered already.
            FdOutOfRangeError: the driver cannot watch an fd this large.
            OSError: the kernel refused (``EBADF`` for a closed fd); the
                registry is left as it was.
        """

    @abstractmethod
    def modify(
        self,
        fd: FileDescriptorLike,
        events: int,
        *,
        oneshot: bool = False,
        edge: bool = False,
    ) -> None:
        """Change what ``fd`` is watched for, and re-arm a oneshot registration.

        An ``exclusive`` registration stays exclusive.  Raises as
        :meth:`register` does, and :class:`NotRegisteredError` for an fd that
        is not registered.
        """

    @abstractmethod
    def unregister(self, fd: FileDescriptorLike) -> None:
        """Stop watching ``fd``.

        Succeeds quietly for an fd that was closed while registered, whether
        or not the driver had already dropped it.

        Raises:
            NotRegisteredError: the fd was never registered (or was
                unregistered already).
        """

    @abstractmethod
    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        """Wait for events and return ``(fd, mask)`` pairs.

        ``timeout`` is in seconds: ``None`` blocks until an event or
        :meth:`wakeup`, ``0`` never blocks, a positive value waits *at least*
        that long, rounded up to the driver's resolution (epoll and poll: 1 ms;
        select: 1 µs).  A signal does not shorten the wait; an exception
        raised by a signal handler propagates.

        ``max_events`` bounds the length of the result; fds left over come
        first in later calls, so none is starved.

        Each ``mask`` is a plain ``int`` of :class:`Events` bits.

        Raises:
            InvalidArgumentError: a negative timeout, or ``max_events < 1``.
            PollerClosedError, PollerForkedError: see :meth:`close`.
        """

    @abstractmethod
    def wakeup(self) -> None:
        """Make a blocked :meth:`poll` return, or the next one if none is blocked.

        Safe from any thread and from a signal handler.  Many calls before one
        ``poll()`` coalesce into one early return.
        """

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""

    @abstractmethod
    def close(self) -> None:
        """Release the kernel object and the waker.  Idempotent.

        Every other method raises :class:`PollerClosedError` afterwards.  In a
        forked child, ``close()`` releases only the child's copies of the
        fds: the parent's poller keeps watching everything it watched.
        """

    @abstractmethod
    def fileno(self) -> int:
        """The fd of the kernel object (epoll only; see ``features``)."""

    @abstractmethod
    def __len__(self) -> int:
        """How many fds are registered (the waker is not counted)."""

    @abstractmethod
    def __contains__(self, fd: object) -> bool:
        """Whether ``fd`` (a number or an object with ``fileno()``) is registered."""

    @abstractmethod
    def get_registration(self, fd: FileDescriptorLike) -> Registration:
        """What ``fd`` is registered for; raises :class:`NotRegisteredError`."""

    def __bool__(self) -> bool:
        return True  # a poller with nothing registered is still a poller

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class DriverBase(Poller):
    """The bookkeeping every driver shares: registry, argument checks, states, waker.

    A driver subclasses this, sets ``name`` and ``features``, and implements
    ``_kernel_add``, ``_kernel_modify``, ``_kernel_remove``, ``_kernel_close``,
    ``_poll_checked`` and its own flat ``poll()``.  Once the poller is closed
    or forked, ``_kernel`` -- the object whose method the hot path calls --
    is an :class:`Unusable` stand-in that raises the right error, so the hot
    path needs no state test of its own; every other method tests
    ``_check_usable()``.
    """

    #: What the hot path calls through: the kernel object (or, for select,
    #: the ``select`` module); an :class:`Unusable` once closed or forked.
    _kernel: Any

    def __init__(self) -> None:
        self._registry: dict[int, Registration] = {}
        # fds a driver dropped after reporting INVALID: unregister() accepts them once.
        self._dropped: set[int] = set()
        self._closed = False
        self._forked = False
        self._waker = Waker()
        self._wake_tokens = self._waker.tokens
        self._fair_cursor = -1
        _live_pollers.add(self)

    # -- registration ---------------------------------------------------------

    def register(
        self,
        fd: FileDescriptorLike,
        events: int,
        *,
        oneshot: bool = False,
        edge: bool = False,
        exclusive: bool = False,
    ) -> None:
        self._check_usable()
        fd = to_fd(fd)
        events = self._check_events(fd, events)
        self._check_flags(fd, events, oneshot, edge, exclusive)
        if fd in self._registry:
            raise AlreadyRegisteredError(
                f"fd {fd} is already registered with this {self.name} poller; use modify() "
                "to change its events"
            )
        self._check_fd_range(fd)
        registration = Registration(events, oneshot, edge, exclusive)
        self._kernel_add(fd, registration)
        self._registry[fd] = registration
        self._dropped.discard(fd)

    def modify(
        self,
        fd: FileDescriptorLike,
        events: int,
        *,
        oneshot: bool = False,
        edge: bool = False,
    ) -> None:
        self._check_usable()
        fd = to_fd(fd)
        events = self._check_events(fd, events)
        old = self._registry.get(fd)
        if old is None:
            raise NotRegisteredError(
                f"fd {fd} is not registered with this {self.name} poller; register() it first"
            )
        self._check_flags(fd, events, oneshot, edge, old.exclusive)
        new = Registration(events, oneshot, edge, old.exclusive)
        self._kernel_modify(fd, old, new)
        self._registry[fd] = new

    def unregister(self, fd: FileDescriptorLike) -> None:
        self._check_usable()
        fd = to_fd(fd)
        registration = self._registry.get(fd)
        if registration is None:
            if fd in self._dropped:
                self._dropped.discard(fd)
                return
            raise NotRegisteredError(f"fd {fd} is not registered with this {self.name} poller")
        self._kernel_remove(fd, registration)
        del self._registry[fd]

    # -- waiting --------------------------------------------------------------

    def wakeup(self) -> None:
        if self._closed or self._forked:
            self._check_usable()
        self._waker.wake()

    # -- life cycle -----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._make_unusable()
        self._registry.clear()
        self._dropped.clear()
        _live_pollers.discard(self)
        try:
            self._kernel_close()
        finally:
            self._waker.close()

    def fileno(self) -> int:
        self._check_usable()
        raise UnsupportedFeatureError(
            f"the {self.name} driver has no kernel object and so no fileno(); "
            "only drivers whose features include 'fileno' (epoll) have one"
        )

    def __enter__(self) -> Self:
        self._check_usable()
        return self

    def __len__(self) -> int:
        self._check_usable()
        return len(self._registry)

    def __contains__(self, fd: object) -> bool:
        self._check_usable()
        try:
            return to_fd(fd) in self._registry  # type: ignore[arg-type]  # to_fd refuses what has no fileno()
        except InvalidArgumentError:
            return False

    def get_registration(self, fd: FileDescriptorLike) -> Registration:
        self._check_usable()
        fd = to_fd(fd)
        try:
            return self._registry[fd]
        except KeyError:
            raise NotRegisteredError(
                f"fd {fd} is not registered with this {self.name} poller"
            ) from None

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._forked:
            state = "forked"
        else:
            state = f"{len(self._registry)} fds"
        return f"<{type(self).__name__} {state}>"

    def __del__(self) -> None:
        # Release fds of a poller that was never closed, as file objects do.
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:  # noqa: BLE001, S110  # at interpreter shutdown modules may be gone
                pass

    # -- what drivers implement -------------------------------------------------

    @abstractmethod
    def _kernel_add(self, fd: int, registration: Registration) -> None: ...

    @abstractmethod
    def _kernel_modify(self, fd: int, old: Registration, new: Registration) -> None: ...

    @abstractmethod
    def _kernel_remove(self, fd: int, registration: Registration) -> None:
        """Remove ``fd`` from the kernel's set; quiet if the fd was closed."""

    @abstractmethod
    def _kernel_close(self) -> None: ...

    # -- shared helpers ---------------------------------------------------------

    def _check_fd_range(self, fd: int) -> None:  # an optional hook, not abstract
        """Refuse an fd the driver cannot watch (select overrides this)."""

    def _check_events(self, fd: int, events: int) -> int:
        if not isinstance(events, int) or isinstance(events, bool):
            raise InvalidArgumentError(
                f"fd {fd}: events must be an int of Events bits, not {events!r}"
            )
        events = int(events)
        if not events:
            raise InvalidArgumentError(
                f"fd {fd}: events mask is empty; ask for READ, WRITE, PRIORITY or READ_HANGUP"
            )
        output_only = events & OUTPUT_ONLY_EVENTS
        if output_only:
            raise InvalidArgumentError(
                f"fd {fd}: events {events:#x} contains {Events(output_only)!r}, which the "
                "kernel reports on its own; register READ, WRITE, PRIORITY or READ_HANGUP"
            )
        unknown = events & ~INPUT_EVENTS
        if unknown:
            raise InvalidArgumentError(
                f"fd {fd}: events {events:#x} contains unknown bits {unknown:#x}; "
                "use Events.READ, WRITE, PRIORITY or READ_HANGUP"
            )
        if events & Events.READ_HANGUP and "read_hangup" not in self.features:
            raise UnsupportedFeatureError(
                f"fd {fd}: the {self.name} driver cannot report READ_HANGUP separately "
                "(a peer's shutdown shows as READ); use the epoll or poll driver"
            )
        return events

    def _check_flags(
        self, fd: int, events: int, oneshot: bool, edge: bool, exclusive: bool
    ) -> None:
        for wanted, feature in ((oneshot, "oneshot"), (edge, "edge"), (exclusive, "exclusive")):
            if wanted and feature not in self.features:
                raise UnsupportedFeatureError(
                    f"fd {fd}: the {self.name} driver has no {feature} mode; "
                    f"it supports {sorted(self.features)}; the epoll driver has it"
                )
        if exclusive:
            if oneshot:
                raise InvalidArgumentError(
                    f"fd {fd}: exclusive cannot be combined with oneshot (epoll refuses it)"
                )
            if events & ~(Events.READ | Events.WRITE):
                raise InvalidArgumentError(
                    f"fd {fd}: an exclusive registration may ask only for READ and WRITE, "
                    f"not {Events(events)!r}"
                )

    def _check_usable(self) -> None:
        if self._closed or self._forked:
            raise self._state_error()

    def _state_error(self) -> Exception:
        return state_error(self.name, self._closed)

    def _mark_forked(self) -> None:
        if not self._closed:
            self._forked = True
            self._make_unusable()

    def _make_unusable(self) -> None:
        """Make the hot path raise the closed/forked error with no test of its own."""
        self._kernel = Unusable(self._state_error())

    @abstractmethod
    def _poll_checked(self, timeout: float | None, max_events: int | None) -> list[tuple[int, int]]:
        """``poll()`` with arguments already checked and ``timeout`` kernel-sized."""

    def _poll_slow(self, timeout: float | None, max_events: int | None) -> list[tuple[int, int]]:
        """``poll()`` for the rare cases: ``max_events``, odd or very long timeouts."""
        self._check_usable()
        check_timeout(timeout)
        if max_events is not None:
            check_max_events(max_events)
        if timeout is None or timeout <= _MAX_KERNEL_WAIT:
            return self._poll_checked(timeout, max_events)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._poll_checked(0, max_events)
            chunk = min(remaining, _MAX_KERNEL_WAIT)
            started = time.monotonic()
            ready = self._poll_checked(chunk, max_events)
            # Events, or a wakeup (which returns before the chunk is over), end the wait.
            if ready or time.monotonic() - started < chunk:
                return ready

    def _without_waker(self, ready: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Drain the waker and drop its fd from ``ready`` (only when a token is pending)."""
        self._waker.drain()
        waker_fd = self._waker.read_fd
        return [event for event in ready if event[0] != waker_fd]

    def _fair_slice(self, ready: list[tuple[int, int]], max_events: int) -> list[tuple[int, int]]:
        """Take ``max_events`` of ``ready``, starting after the fd served last.

        Round-robin by fd number, so an fd that stays ready cannot starve the
        ones behind it (poll and select report in a fixed order).
        """
        if len(ready) <= max_events:
            return ready
        ready.sort()
        cursor = self._fair_cursor
        start = 0
        for index, (fd, _) in enumerate(ready):
            if fd > cursor:
                start = index
                break
        rotated = ready[start:] + ready[:start]
        taken = rotated[:max_events]
        self._fair_cursor = taken[-1][0]
        return taken
