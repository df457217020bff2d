"""pollkit under the stdlib: a :mod:`selectors` selector and an :mod:`asyncio` loop.

:class:`PollerSelector` is a complete :class:`selectors.BaseSelector` on top
of any pollkit driver, so code written for ``selectors.DefaultSelector`` --
including asyncio's ``SelectorEventLoop`` -- runs unchanged on epoll, poll or
select, picked by an argument or the ``POLLKIT_BACKEND`` environment
variable::

    import asyncio
    import pollkit.compat

    asyncio.run(main(), loop_factory=pollkit.compat.new_event_loop)  # Python 3.12+
    pollkit.compat.run(main(), backend="poll")                       # Python 3.10+

How it maps pollkit onto :mod:`selectors`, and why:

* **The same keys and errors.**  ``register()``, ``unregister()``,
  ``modify()``, ``get_key()`` and ``get_map()`` follow CPython's
  ``selectors`` module line by line: the same :class:`~selectors.SelectorKey`
  tuples, ``ValueError`` for bad events or file objects, ``KeyError`` for
  unknown or duplicate ones, a closed file object found by identity, and a
  ``modify()`` that fails at the kernel leaves the file object unregistered.
* **Errors and hang-ups wake both directions.**  A reported ``ERROR``,
  ``HANGUP`` or ``INVALID`` bit counts as both ``EVENT_READ`` and
  ``EVENT_WRITE`` (masked by what was registered), as the stdlib's
  ``EpollSelector`` and ``PollSelector`` do, so the application's next read or
  write fails and it cleans up.
* **A closed fd never stops the loop.**  The poll and select drivers report a
  registered fd that was closed once, with ``INVALID``; the selector reports
  it ready for everything it was registered for, and a later
  ``unregister()`` succeeds.  (The stdlib's ``PollSelector`` reports it on
  every call and ``SelectSelector`` raises ``EBADF`` from every call; epoll,
  both here and in the stdlib, forgets it silently.)
* **Timeouts as the stdlib reads them.**  ``select(None)`` blocks,
  ``select(t)`` with ``t <= 0`` never blocks, a positive ``t`` waits at least
  ``t`` seconds.
"""

from __future__ import annotations

import asyncio
import errno
import selectors
import sys
from collections.abc import Coroutine, Iterator, Mapping
from selectors import EVENT_READ, EVENT_WRITE, SelectorKey
from typing import TYPE_CHECKING, Any, TypeVar

from ._backends import open_poller
from ._base import FileDescriptorLike, Poller, check_open
from ._events import Events
from .errors import NotRegisteredError

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import Self

__all__ = ["PollerSelector", "new_event_loop", "run"]

_T = TypeVar("_T")

_POLLKIT_READ = int(Events.READ)
_POLLKIT_WRITE = int(Events.WRITE)
_SELECTOR_EVENTS = EVENT_READ | EVENT_WRITE

#: selectors events -> the pollkit mask to register, indexed by the events value.
_TO_POLLKIT = (0, _POLLKIT_READ, _POLLKIT_WRITE, _POLLKIT_READ | _POLLKIT_WRITE)


def _fileobj_to_fd(fileobj: FileDescriptorLike) -> int:
    """The fd of ``fileobj``, raising ``ValueError`` exactly as :mod:`selectors` does."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class _SelectorMapping(Mapping[FileDescriptorLike, SelectorKey]):
    """The read-only view ``get_map()`` returns: file objects (or fds) to keys."""

    def __init__(self, selector: PollerSelector) -> None:
        self._selector = selector

    def __len__(self) -> int:
        return len(self._selector._fd_to_key)

    def __getitem__(self, fileobj: FileDescriptorLike) -> SelectorKey:
        try:
            return self._selector._fd_to_key[self._selector._fileobj_lookup(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self) -> Iterator[FileDescriptorLike]:
        return iter(self._selector._fd_to_key)


class PollerSelector(selectors.BaseSelector):
    """A :class:`selectors.BaseSelector` that waits with a pollkit driver.

    ``backend`` is a driver name (``"epoll"``, ``"poll"``, ``"select"``),
    ``"auto"``, ``None`` (read ``POLLKIT_BACKEND``, else ``"auto"``), or an
    open :class:`~pollkit.Poller`, which the selector then owns and closes.

    Everything :mod:`selectors` documents holds: ``register()`` raises
    ``ValueError`` for an empty or unknown events mask or an invalid file
    object and ``KeyError`` for a file object registered already;
    ``unregister()`` and ``modify()`` raise ``KeyError`` for one that is not
    registered; ``get_key()`` raises ``KeyError``, or ``RuntimeError`` once the
    selector is closed, when ``get_map()`` returns ``None``.  A kernel refusal
    raises ``OSError`` (``EBADF`` for a closed fd) and registers nothing; the
    select driver refuses an fd at or above ``FD_SETSIZE`` with
    :class:`~pollkit.FdOutOfRangeError` (a ``ValueError``) at ``register()``
    rather than failing every later ``select()``.  After :meth:`close`,
    ``register()`` and ``select()`` raise :class:`~pollkit.PollerClosedError`
    (a ``ValueError``, as the stdlib's epoll selector raises).

    ``fileno()`` exists exactly where the driver has a kernel fd (epoll, and
    a checking wrapper around it), as the stdlib's ``EpollSelector`` has it
    and its ``PollSelector`` and ``SelectSelector`` do not: code that asks
    ``hasattr(selector, "fileno")`` gets the stdlib's answer.  (Such a
    selector is an instance of a private subclass that adds the method.)

    Raises:
        BackendUnavailableError: ``backend`` names no driver that opens here.
    """

    _poller: Poller

    def __new__(cls, backend: str | Poller | None = None) -> Self:
        poller = backend if isinstance(backend, Poller) else open_poller(backend)
        chosen: type[PollerSelector] = cls
        if "fileno" in poller.features and not issubclass(cls, _PollerSelectorWithFileno):
            chosen = _PollerSelectorWithFileno
        self = object.__new__(chosen)  # BaseSelector has no __new__ of its own
        self._poller = poller
        return self  # type: ignore[return-value]  # a subclass of cls, chosen by the driver

    def __init__(self, backend: str | Poller | None = None) -> None:
        # __new__ opened the poller (it decides the class).
        self._fd_to_key: dict[int, SelectorKey] = {}
        self._map: _SelectorMapping | None = _SelectorMapping(self)

    @property
    def poller(self) -> Poller:
        """The pollkit driver this selector waits with."""
        return self._poller

    @property
    def backend(self) -> str:
        """The driver's name: ``"epoll"``, ``"poll"`` or ``"select"``."""
        return self._poller.name

    def _fileobj_lookup(self, fileobj: FileDescriptorLike) -> int:
        """The fd of ``fileobj``; a closed file object is found by identity.

        That lets ``unregister()`` take a socket whose ``fileno()`` is now -1.
        """
        try:
            return _fileobj_to_fd(fileobj)
        except ValueError:
            for key in self._fd_to_key.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise

    def register(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> SelectorKey:
        """Watch ``fileobj`` for ``events`` (``EVENT_READ``, ``EVENT_WRITE`` or both)."""
        if not events or events & ~_SELECTOR_EVENTS:
            raise ValueError(f"Invalid events: {events!r}")
        key = SelectorKey(fileobj, self._fileobj_lookup(fileobj), events, data)
        if key.fd in self._fd_to_key:
            raise KeyError(f"{fileobj!r} (FD {key.fd}) is already registered")
        self._poller.register(key.fd, _TO_POLLKIT[events])
        self._fd_to_key[key.fd] = key
        return key

    def unregister(self, fileobj: FileDescriptorLike) -> SelectorKey:
        """Stop watching ``fileobj``; succeeds for one closed since it was registered."""
        try:
            key = self._fd_to_key.pop(self._fileobj_lookup(fileobj))
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        try:
            self._poller.unregister(key.fd)
        except (OSError, NotRegisteredError):
            # The fd was closed since it was registered (the stdlib ignores the
            # same OSError); the key is gone either way.
            pass
        return key

    def modify(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> SelectorKey:
        """Change the events and data of a registered file object.

        Costs no system call when ``events`` is unchanged.  If the kernel
        refuses the change (``OSError``: the fd was closed), ``fileobj`` is
        unregistered, as the stdlib does, and the error propagates.
        """
        try:
            key = self._fd_to_key[self._fileobj_lookup(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        if events != key.events:
            # Checked before touching the kernel, so a bad mask leaves the old
            # registration in place (the stdlib would drop it).
            if not events or events & ~_SELECTOR_EVENTS:
                raise ValueError(f"Invalid events: {events!r}")
            try:
                self._poller.modify(key.fd, _TO_POLLKIT[events])
            except NotRegisteredError:
                # Only a driver that reported the fd INVALID (closed) drops it
                # on its own: answer as epoll answers for a closed fd.
                del self._fd_to_key[key.fd]
                raise OSError(
                    errno.EBADF, f"fd {key.fd} was closed while registered; unregister it"
                ) from None
            except BaseException:
                del self._fd_to_key[key.fd]
                try:
                    self._poller.unregister(key.fd)
                except (OSError, NotRegisteredError):
                    pass  # the kernel may have forgotten it already; the key is gone
                raise
            key = key._replace(events=events, data=data)
            self._fd_to_key[key.fd] = key
        elif data is not key.data and data != key.data:
            key = key._replace(data=data)
            self._fd_to_key[key.fd] = key
        return key

    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        """Wait for registered file objects to become ready, or for ``timeout``.

        ``None`` blocks; ``timeout <= 0`` polls without blocking; a positive
        ``timeout`` waits at least that many seconds.  Returns ``(key,
        events)`` pairs, ``events`` holding only bits that ``key`` asked for.
        An empty list means the timeout expired (or a signal handler ran, as
        the stdlib allows).
        """
        if timeout is not None and timeout <= 0:
            timeout = 0
        try:
            fd_event_list = self._poller.poll(timeout)
        except InterruptedError:
            return []
        ready = []
        fd_to_key = self._fd_to_key
        for fd, mask in fd_event_list:
            key = fd_to_key.get(fd)
            if key is None:
                continue
            # As the stdlib's poll-like selectors: any bit but READ (WRITE,
            # ERROR, HANGUP, INVALID) can mean "a write will not block", any
            # but WRITE that a read will not.
            events = 0
            if mask & ~_POLLKIT_READ:
                events |= EVENT_WRITE
            if mask & ~_POLLKIT_WRITE:
                events |= EVENT_READ
            events &= key.events
            if events:
                ready.append((key, events))
        return ready

    def close(self) -> None:
        """Unregister everything and close the driver.  Idempotent."""
        if self._map is not None:
            # The stdlib's selectors forget their keys on close; pollkit's rule
            # is unregister before close (debug: checks it).  A file object
            # the program closed first is left for close() to forget.
            for fd in self._fd_to_key:
                try:
                    check_open(fd)
                    self._poller.unregister(fd)
                except (KeyError, OSError):
                    pass  # closed already, or the driver or the kernel had dropped it
        self._fd_to_key.clear()
        self._map = None
        self._poller.close()

    def get_map(self) -> Mapping[FileDescriptorLike, SelectorKey] | None:  # type: ignore[override]  # the stdlib returns None once closed; typeshed leaves that out
        """A read-only mapping of registered file objects to keys; ``None`` once closed."""
        return self._map

    def __repr__(self) -> str:
        state = "closed" if self._map is None else f"{len(self._fd_to_key)} registered"
        return f"<PollerSelector {self._poller.name} {state}>"


class _PollerSelectorWithFileno(PollerSelector):
    """A :class:`PollerSelector` on a driver with a kernel fd: it has ``fileno()``."""

    def fileno(self) -> int:
        """The driver's kernel fd, as ``EpollSelector.fileno()``."""
        return self._poller.fileno()


def new_event_loop(backend: str | None = None) -> asyncio.AbstractEventLoop:
    """A new :class:`asyncio.SelectorEventLoop` waiting with a pollkit driver.

    Pass it as a loop factory, ``asyncio.run(main(),
    loop_factory=pollkit.compat.new_event_loop)`` (Python 3.12+) or
    ``asyncio.Runner(loop_factory=...)`` (3.11+); or use :func:`run`, which
    works on every supported Python.  ``backend`` is read as
    :class:`PollerSelector` reads it, so with no argument ``POLLKIT_BACKEND``
    picks the driver.

    Raises:
        BackendUnavailableError: ``backend`` names no driver that opens here.
    """
    return asyncio.SelectorEventLoop(PollerSelector(backend))


def run(
    main: Coroutine[Any, Any, _T], *, backend: str | None = None, debug: bool | None = None
) -> _T:
    """:func:`asyncio.run` on a loop from :func:`new_event_loop`, on any Python.

    On Python 3.11+ this is ``asyncio.Runner(loop_factory=...)``; before,
    it follows ``asyncio.run()`` step by step: run ``main``, cancel the tasks
    left over, finish async generators and the default executor, close the
    loop.

    Raises:
        RuntimeError: called while an event loop is running in this thread.
        ValueError: ``main`` is not a coroutine.
        BackendUnavailableError: ``backend`` names no driver that opens here.
    """

    def loop_factory() -> asyncio.AbstractEventLoop:
        return new_event_loop(backend)

    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=loop_factory) as runner:
            return runner.run(main)
    else:  # not "if ...: return" then code: mypy would call that code unreachable on 3.11+
        return _run_without_runner(main, loop_factory, debug)


def _run_without_runner(
    main: Coroutine[Any, Any, _T],
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    debug: bool | None,
) -> _T:
    """``asyncio.run()`` of Python 3.10 with a loop factory (which 3.10 lacks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("pollkit.compat.run() cannot be called from a running event loop")
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = loop_factory()
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    to_cancel = asyncio.all_tasks(loop)
    if not to_cancel:
        return
    for task in to_cancel:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))
    for task in to_cancel:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during pollkit.compat.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
