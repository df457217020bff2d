"""The ``chaos:`` wrapper: seeded faults that the contract allows.

One kernel facility hides bugs that another shows: epoll sees a change made
from another thread at once, poll and select only at their next call;
poll returns fds in array order; a quiet kernel never returns early.  Code
written against one driver comes to rely on such accidents.  A
:class:`ChaosPoller` wraps any :class:`~pollkit.Poller` and takes the
accidents away, from a seeded :class:`random.Random`, so that such code
fails in its tests -- replayably -- instead of in production.

The faults, by the name ``POLLKIT_CHAOS`` and ``rates=`` use:

``spurious``
    A ``READ`` or ``WRITE`` bit that was registered is reported on an fd
    that is not ready.  Only on fds in non-blocking mode (``O_NONBLOCK`` is
    read at ``register()``/``modify()`` and again before the report): on a
    blocking fd a spurious report hangs the program, which is the bug
    ``debug:`` names.  Only for a direction the fd is open for (no READ on
    the write end of a pipe, where READ means "the reader closed" and no
    read can tell a false report).  Never on a oneshot registration.
``split``
    Part of the ready set is withheld until the next call (which then does
    not block, and withholds nothing that was owed).
``shuffle``
    The result comes in a random order.  (Without it, in fd order.)
``early``
    ``poll()`` with a timeout other than ``0`` returns ``[]`` at once, as
    after a :meth:`~pollkit.Poller.wakeup`.
``edge``
    Strict edges: after an edge-triggered fd is reported, a re-report with
    no new bit is held back until the fd has been seen not ready (drained
    to ``EAGAIN``) or for :data:`EDGE_HOLD_SECONDS`.  epoll usually
    re-reports on new data; the contract does not promise it.
``hold``
    ``register()``/``modify()`` from another thread while ``poll()`` waits
    take effect only at the next ``poll()`` (what poll and select do),
    on drivers whose kernel object would see them at once (epoll).  Call
    :meth:`~pollkit.Poller.wakeup` after such a change; that always works.

What it never does (each is a test in ``tests/test_chaos_contract.py``):
report a bit that was not registered (``ERROR``, ``HANGUP`` and ``INVALID``
from the kernel aside); report an fd after ``unregister()`` has returned;
return more than ``max_events``; repeat a oneshot report; lose an event or
an edge -- what it withholds comes back at the next call while still true
(a withheld oneshot or edge report is kept here, since the driver has
consumed it, and probed with ``poll(2)`` before it is delivered); block
while it owes a report; wait past the timeout while something is ready.

Determinism: every decision comes from the poller's own generator, drawn in
the thread that calls ``poll()``, and every choice among fds is made over a
sorted list, so the same seed and the same calls (with the same readiness)
give the same results.  The seed (:attr:`ChaosPoller.seed`) comes from
``seed=``, else ``POLLKIT_CHAOS_SEED`` read when the poller is opened, else
one drawn at random once per process and logged at INFO on the
``pollkit.chaos`` logger.  The *k*-th poller opened with a seed from the
environment (or the process) draws from ``Random(f"{seed}:{k}")``, so that
two pollers in one program do not fault in lockstep; ``seed=S`` given
explicitly always draws from stream 0, ``Random(f"{S}:0")``.  The pytest
plugin sets ``POLLKIT_CHAOS_SEED`` for each test to
:func:`derive_seed` ``(session seed, test id)`` and restarts the count, so
one test rerun alone with ``--pollkit-chaos-seed`` sees what it saw in the
whole run.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import random
import select
import stat
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from ._base import (
    FileDescriptorLike,
    Poller,
    Registration,
    check_max_events,
    check_timeout,
    state_error,
    to_fd,
)
from ._events import INPUT_EVENTS, OUTPUT_ONLY_EVENTS, Events
from ._validate import int_at_least
from ._wrap import WrapperBase
from .errors import InvalidArgumentError, PollkitError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "DEFAULT_RATES",
    "EDGE_HOLD_SECONDS",
    "FAULTS",
    "RATES_ENV",
    "SEED_ENV",
    "ChaosPoller",
    "derive_seed",
    "parse_rates",
    "parse_seed",
    "seed_from_environment",
]

logger = logging.getLogger("pollkit.chaos")

#: The environment variable that gives the seed.
SEED_ENV = "POLLKIT_CHAOS_SEED"
#: The environment variable that tunes the rates: ``split=0.3,early=0.2``.
RATES_ENV = "POLLKIT_CHAOS"

#: The fault names, in the order the docs list them.
FAULTS: tuple[str, ...] = ("spurious", "split", "shuffle", "early", "edge", "hold")

#: The chance, per call where a fault applies, that it fires.  Each is at
#: least one in ten, so every fault shows within a few seeds.
DEFAULT_RATES: Mapping[str, float] = {
    "spurious": 0.1,
    "split": 0.2,
    "shuffle": 0.5,
    "early": 0.1,
    "edge": 0.5,
    "hold": 0.5,
}

#: How long a strict edge holds back a re-report that has no new bit.
EDGE_HOLD_SECONDS = 1.0

_READ = int(Events.READ)
_WRITE = int(Events.WRITE)
_INVALID = int(Events.INVALID)
_SPURIOUS_BITS = (_READ, _WRITE)
# An upper bound on kernel calls in one poll(): each further call waits for
# a new edge, so this is never reached by a spin, only a guard against one.
_MAX_INNER_CALLS = 1000

# -- seeds ------------------------------------------------------------------------

_seed_lock = threading.Lock()
_process_seed: int | None = None
# How many pollers each seed from the environment (or the process) has opened.
_streams_opened: dict[int, int] = {}
#: Chaos pollers opened in this process so far (the pytest plugin reads it to
#: tell whether a test used one).
opened_total = 0


def parse_seed(text: str, source: str = SEED_ENV) -> int:
    """``text`` as a seed (a whole number >= 0), or :class:`InvalidArgumentError`
    naming ``source`` and the value."""
    stripped = text.strip()
    try:
        value: object = int(stripped, 10)
    except ValueError:
        value = text
    try:
        return int_at_least(source, value, 0)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{exc}; give a chaos seed such as {source}=1234") from None


def seed_from_environment() -> int:
    """``POLLKIT_CHAOS_SEED``, or the process's seed (drawn and logged once) when unset."""
    text = os.environ.get(SEED_ENV, "").strip()
    if text:
        return parse_seed(text)
    global _process_seed
    with _seed_lock:
        if _process_seed is None:
            _process_seed = random.SystemRandom().randrange(2**32)
            logger.info(
                "no %s set: chaos seed %d drawn for this process; replay it with %s=%d",
                SEED_ENV,
                _process_seed,
                SEED_ENV,
                _process_seed,
            )
        return _process_seed


def derive_seed(seed: int, label: str) -> int:
    """A seed for one part of a run (a test, by its id) from the run's seed.

    Stable across processes and Python versions (SHA-256, not ``hash()``).
    """
    digest = hashlib.sha256(f"{seed}:{label}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def restart_streams() -> None:
    """Forget how many pollers each seed opened (the pytest plugin, per test)."""
    with _seed_lock:
        _streams_opened.clear()


def _count_opened() -> None:
    global opened_total
    with _seed_lock:
        opened_total += 1


def _next_stream(seed: int) -> int:
    _count_opened()
    with _seed_lock:
        stream = _streams_opened.get(seed, 0)
        _streams_opened[seed] = stream + 1
        return stream


def _valid_names() -> str:
    return ", ".join(FAULTS)


def _check_rate(source: str, name: str, value: object) -> float:
    shown = repr(value) if not isinstance(value, (int, float)) else f"{value:g}"
    if name not in FAULTS:
        raise InvalidArgumentError(
            f"{source}: {name!r} is not a chaos fault; the faults are {_valid_names()}"
        )
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise InvalidArgumentError(
            f"{source}: {name} = {shown} is not a rate from 0 to 1 "
            f"(the faults are {_valid_names()}, e.g. {RATES_ENV}=split=0.3,early=0.2)"
        )
    return float(value)


def check_rates(rates: Mapping[str, float], source: str = "rates") -> dict[str, float]:
    """Every fault's rate: the defaults, overridden by ``rates`` (each checked)."""
    checked = dict(DEFAULT_RATES)
    for name, value in rates.items():
        checked[name] = _check_rate(source, name, value)
    return checked


def parse_rates(text: str, source: str = RATES_ENV) -> dict[str, float]:
    """``split=0.3,early=0.2`` as every fault's rate (the rest default)."""
    given: dict[str, float] = {}
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        name, sep, rate_text = part.partition("=")
        name = name.strip().lower()
        if not sep:
            raise InvalidArgumentError(
                f"{source} = {text!r}: {part!r} is not name=rate; "
                f"the faults are {_valid_names()}, e.g. {RATES_ENV}=split=0.3,early=0.2"
            )
        try:
            rate: object = float(rate_text)
        except ValueError:
            rate = rate_text.strip()
        given[name] = _check_rate(f"{source} = {text!r}", name, rate)
    return check_rates(given, source)


# -- fork ---------------------------------------------------------------------------

_live: weakref.WeakSet[ChaosPoller] = weakref.WeakSet()


def _forget_parent_pollers() -> None:
    for poller in list(_live):
        poller._forked = True


os.register_at_fork(after_in_child=_forget_parent_pollers)


# -- the wrapper ----------------------------------------------------------------------


class _Pending(NamedTuple):
    """A ``register()``/``modify()`` held until the next ``poll()``."""

    is_register: bool
    fileobj: FileDescriptorLike
    registration: Registration


class _EdgeMark:
    """A strict edge: what was reported, until when a re-report is held back."""

    __slots__ = ("bits", "deadline", "held")

    def __init__(self, bits: int, deadline: float) -> None:
        self.bits = bits
        self.deadline = deadline
        self.held = 0  # re-reported bits held back, delivered at the deadline if still true


def _testable_bits(fd: int) -> int:
    """The bits a spurious report may carry on ``fd``: those a call could prove false.

    Only on a non-blocking fd (a read or write there fails with ``EAGAIN``
    instead of hanging), and only for a direction the fd is open for: READ
    on the write end of a pipe is no data report but the "reader closed"
    signal (asyncio's pipe transports read it so), which no read can test.
    """
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        return 0
    if not flags & os.O_NONBLOCK:
        return 0
    access = flags & os.O_ACCMODE
    bits = 0
    if access != os.O_WRONLY:
        bits |= _READ
    if access != os.O_RDONLY:
        bits |= _WRITE
    return bits


def _is_stream_like(fd: int) -> bool:
    """A socket, pipe or character device: what every driver watches alike."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


class ChaosPoller(WrapperBase):
    """A :class:`~pollkit.Poller` that injects the faults the contract allows.

    ``inner`` is the poller to wrap (any, a ``DebugPoller`` included); the
    chaos poller owns it and closes it.  ``seed``: see the module's
    docstring; ``None`` reads ``POLLKIT_CHAOS_SEED``.  ``rates``: a fault
    name to a chance from 0 to 1 (missing names keep their defaults, listed
    on the "Testing with debug: and chaos:" page); ``None`` reads
    ``POLLKIT_CHAOS``.

    Raises:
        InvalidArgumentError: a seed or rate that is not valid, naming the
            variable or argument, the value and the valid names.
    """

    def __init__(
        self,
        inner: Poller,
        *,
        seed: int | None = None,
        rates: Mapping[str, float] | None = None,
    ) -> None:
        if rates is None:
            self.rates: dict[str, float] = parse_rates(os.environ.get(RATES_ENV, ""))
        else:
            self.rates = check_rates(rates)
        if seed is None:
            #: The seed this poller's faults come from: set it as
            #: ``POLLKIT_CHAOS_SEED`` to replay them.
            self.seed: int = seed_from_environment()
            #: Which stream of that seed this poller draws from (see above).
            self.stream: int = _next_stream(self.seed)
        else:
            self.seed = int_at_least("seed", seed, 0)
            self.stream = 0
            _count_opened()
        super().__init__(inner, f"chaos:{inner.name}")
        self._rng = random.Random(f"{self.seed}:{self.stream}")
        self._spurious_rate = self.rates["spurious"]
        self._split_rate = self.rates["split"]
        self._shuffle_rate = self.rates["shuffle"]
        self._early_rate = self.rates["early"]
        self._edge_rate = self.rates["edge"]
        self._hold_rate = self.rates["hold"]
        # Changes from another thread see the kernel at once only on drivers
        # with a kernel object; poll and select hold them by nature.
        self._can_hold = "fileno" in inner.features
        self._closed = False
        self._forked = False
        # Guards everything below against register()/modify()/unregister()
        # from other threads.  Reentrant: a signal handler in the thread that
        # holds it may register.  wakeup() never takes it.
        self._lock = threading.RLock()
        # The user's view of each fd registered through this wrapper (held
        # changes included); fds registered on ``inner`` beforehand are
        # learnt when first reported.
        self._regs: dict[int, Registration] = {}
        # fd -> the bits a spurious report may carry (see _testable_bits)
        self._testable: dict[int, int] = {}
        # Bumped by every change of an fd: a kept report for an older
        # generation is stale and dropped.
        self._generation: dict[int, int] = {}
        self._pending: dict[int, _Pending] = {}
        # fds whose held change failed when applied: reported once with
        # INVALID, then unregister() succeeds quietly.
        self._failed: list[int] = []
        self._dropped: set[int] = set()
        self._owed: set[int] = set()  # level-triggered fds withheld by the last call
        self._kept: dict[int, tuple[int, int]] = {}  # oneshot/edge: fd -> (mask, generation)
        self._edges: dict[int, _EdgeMark] = {}
        self._poll_thread: int | None = None
        self._holding = False
        self._prober: select.poll | None = None
        _live.add(self)

    # -- introspection ------------------------------------------------------------

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"seed={self.seed} stream={self.stream}"
        return f"<ChaosPoller {self.name} {state}>"

    # -- state ----------------------------------------------------------------------
    # This wrapper has a state of its own, so it overrides WrapperBase's
    # forwarding: each method tests it first (the error names this chaos
    # poller), and len(), ``in`` and get_registration() count held changes.

    def _check_usable(self) -> None:
        if self._closed or self._forked:
            raise state_error(self.name, self._closed)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        with self._lock:
            self._pending.clear()
            self._regs.clear()
            self._kept.clear()
            self._edges.clear()
            self._owed.clear()
        self._inner.close()

    def fileno(self) -> int:
        self._check_usable()
        return self._inner.fileno()

    def __enter__(self) -> Self:
        self._check_usable()
        return self

    def wakeup(self) -> None:
        # No lock and nothing of ours: safe from a signal handler.
        if self._closed or self._forked:
            self._check_usable()
        self._inner.wakeup()

    def __len__(self) -> int:
        self._check_usable()
        with self._lock:
            held = sum(1 for op in self._pending.values() if op.is_register)
            return len(self._inner) + held

    def __contains__(self, fd: object) -> bool:
        self._check_usable()
        with self._lock:
            try:
                number = to_fd(fd)  # type: ignore[arg-type]  # to_fd refuses what has no fileno()
            except InvalidArgumentError:
                return False
            if number in self._pending:
                return True
            return number in self._inner

    def get_registration(self, fd: FileDescriptorLike) -> Registration:
        self._check_usable()
        with self._lock:
            op = self._pending.get(to_fd(fd))
            if op is not None:
                return op.registration
            return self._inner.get_registration(fd)

    # -- registration ---------------------------------------------------------------

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
        with self._lock:
            number = self._number_or_none(fd)
            if number is not None and self._holds_now():
                registration = self._plain_registration(number, events, oneshot, edge, exclusive)
                if (
                    registration is not None
                    and number not in self._pending
                    and number not in self._inner
                    and _is_stream_like(number)
                ):
                    self._pending[number] = _Pending(True, fd, registration)
                    self._registered(number, registration)
                    return
            if number is not None:
                self._apply_pending(number)
            self._inner.register(fd, events, oneshot=oneshot, edge=edge, exclusive=exclusive)
            number = to_fd(fd)
            self._registered(number, self._inner.get_registration(number))

    def modify(
        self,
        fd: FileDescriptorLike,
        events: int,
        *,
        oneshot: bool = False,
        edge: bool = False,
    ) -> None:
        self._check_usable()
        with self._lock:
            number = self._number_or_none(fd)
            if number is not None and self._holds_now():
                old = self._regs.get(number)
                registration = self._plain_registration(number, events, oneshot, edge, False)
                if (
                    old is not None
                    and not old.exclusive
                    and registration is not None
                    and (number in self._pending or number in self._inner)
                    and _is_stream_like(number)
                ):
                    earlier = self._pending.get(number)
                    is_register = earlier is not None and earlier.is_register
                    self._pending[number] = _Pending(is_register, fd, registration)
                    self._registered(number, registration)
                    return
            if number is not None:
                self._apply_pending(number)
            self._inner.modify(fd, events, oneshot=oneshot, edge=edge)
            number = to_fd(fd)
            self._registered(number, self._inner.get_registration(number))

    def unregister(self, fd: FileDescriptorLike) -> None:
        self._check_usable()
        with self._lock:
            number = to_fd(fd)
            op = self._pending.pop(number, None)
            if op is None or not op.is_register:
                try:
                    self._inner.unregister(fd)
                except KeyError:  # NotRegisteredError
                    if number not in self._dropped:
                        raise
            self._dropped.discard(number)
            self._forget(number)

    def _number_or_none(self, fd: FileDescriptorLike) -> int | None:
        try:
            return to_fd(fd)
        except InvalidArgumentError:
            return None  # the inner poller raises, naming it

    def _holds_now(self) -> bool:
        """Whether a change made now, in this thread, waits for the next ``poll()``."""
        return (
            self._holding
            and self._poll_thread is not None
            and self._poll_thread != threading.get_ident()
        )

    def _plain_registration(
        self, fd: int, events: object, oneshot: bool, edge: bool, exclusive: bool
    ) -> Registration | None:
        """The registration, if the inner poller would surely accept it; else ``None``.

        A change is held only when nothing about it can fail later, where
        no caller would see the error: anything unusual is applied at once.
        """
        if not isinstance(events, int) or isinstance(events, bool):
            return None
        if not events or events & ~INPUT_EVENTS or exclusive:
            return None
        if events & Events.READ_HANGUP and "read_hangup" not in self.features:
            return None
        if (oneshot and "oneshot" not in self.features) or (edge and "edge" not in self.features):
            return None
        if not _is_stream_like(fd):
            return None
        return Registration(int(events), oneshot, edge, False)

    def _registered(self, fd: int, registration: Registration) -> None:
        """Record a successful register()/modify() of ``fd`` (held or applied)."""
        self._regs[fd] = registration
        self._testable[fd] = _testable_bits(fd)
        self._dropped.discard(fd)
        self._changed(fd)

    def _forget(self, fd: int) -> None:
        self._regs.pop(fd, None)
        self._testable.pop(fd, None)
        self._changed(fd)
        self._generation.pop(fd, None)

    def _changed(self, fd: int) -> None:
        """``fd``'s registration changed: what is kept or held for it is stale."""
        self._generation[fd] = self._generation.get(fd, 0) + 1
        self._kept.pop(fd, None)
        self._edges.pop(fd, None)
        self._owed.discard(fd)

    def _apply_pending(self, fd: int) -> None:
        """Give the inner poller the held change of ``fd``, if any (lock held)."""
        op = self._pending.pop(fd, None)
        if op is None:
            return
        registration = op.registration
        try:
            if op.is_register:
                self._inner.register(
                    op.fileobj,
                    registration.events,
                    oneshot=registration.oneshot,
                    edge=registration.edge,
                )
            else:
                self._inner.modify(
                    op.fileobj,
                    registration.events,
                    oneshot=registration.oneshot,
                    edge=registration.edge,
                )
        except (OSError, PollkitError) as exc:
            # The fd was closed (or replaced) while the change was held.  As
            # poll(2) does with POLLNVAL: report it once with INVALID, drop it.
            logger.debug("held change of fd %d failed when applied: %s", fd, exc)
            if not op.is_register:
                try:
                    self._inner.unregister(fd)
                except (OSError, PollkitError):
                    pass
            self._failed.append(fd)

    def _apply_all_pending(self) -> None:
        for fd in list(self._pending):
            self._apply_pending(fd)

    # -- waiting ----------------------------------------------------------------------

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        self._check_usable()
        check_timeout(timeout)
        if max_events is not None:
            check_max_events(max_events)
        me = threading.get_ident()
        with self._lock:
            if self._poll_thread is not None:
                raise RuntimeError(
                    f"concurrent poll() invocation on this {self.name} poller: a poller "
                    "serves one thread's loop"
                )
            self._apply_all_pending()
            self._poll_thread = me
            self._holding = self._can_hold and self._chance(self._hold_rate)
        try:
            return self._poll(timeout, max_events)
        finally:
            with self._lock:
                self._poll_thread = None
                self._holding = False

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def _poll(self, timeout: float | None, max_events: int | None) -> list[tuple[int, int]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            # What the last call withheld goes out in this one, if still true.
            must_go = self._owed
            self._owed = set()
            due = self._take_due(max_events)
        must_go |= {fd for fd, _ in due}
        if not must_go and timeout != 0 and self._chance(self._early_rate):
            return []
        ready: dict[int, int] = dict(due)
        try:
            return self._wait(ready, must_go, timeout, deadline, max_events)
        except BaseException:
            # A signal handler raised in the driver's wait: what this call
            # took over from earlier ones must not be lost with it.
            with self._lock:
                self._owed |= must_go
                for fd, mask in due:
                    if fd in self._regs and not mask & _INVALID:
                        self._kept[fd] = (mask, self._generation.get(fd, 0))
            raise

    def _wait(
        self,
        ready: dict[int, int],
        must_go: set[int],
        timeout: float | None,
        deadline: float | None,
        max_events: int | None,
    ) -> list[tuple[int, int]]:
        """Ask the inner poller until something may go out, the timeout or a wakeup."""
        must_not_block = bool(must_go)
        for _ in range(_MAX_INNER_CALLS):
            room = None if max_events is None else max_events - len(ready)
            if room == 0:
                break
            wait = 0.0 if must_not_block else self._wait_time(deadline)
            started = time.monotonic()
            reported = self._inner.poll(wait, room)
            with self._lock:
                fresh, held_back = self._sift(reported)
                if not fresh and not reported:
                    fresh = self._take_expired_edges(room)
            for fd, mask in fresh:
                ready[fd] = ready.get(fd, 0) | mask
            if ready:
                break
            if must_not_block:
                # What was owed is no longer ready: now wait as asked.
                must_not_block = False
                if timeout == 0:
                    break
                continue
            if reported and not held_back:
                break  # only stale reports (a held modify narrowed the mask): return early
            if not reported:
                elapsed = time.monotonic() - started
                remaining = None if deadline is None else deadline - time.monotonic()
                if wait is None or elapsed < wait or (remaining is not None and remaining <= 0):
                    break  # a wakeup(), or the timeout
        return self._finish(ready, must_go, max_events)

    def _wait_time(self, deadline: float | None) -> float | None:
        """The rest of the timeout, cut short by the first strict edge due."""
        now = time.monotonic()
        wait = None if deadline is None else max(0.0, deadline - now)
        with self._lock:
            held = [mark.deadline for mark in self._edges.values() if mark.held]
        if held:
            until_edge = max(0.0, min(held) - now)
            wait = until_edge if wait is None else min(wait, until_edge)
        return wait

    def _take_due(self, max_events: int | None) -> list[tuple[int, int]]:
        """What earlier calls owe that the inner poller will not report again (lock held).

        Failed held changes (``INVALID``), kept oneshot/edge reports still
        true, strict edges whose hold ran out.  Probed, so nothing stale goes
        out; a kept oneshot report that is no longer true re-arms the fd.
        """
        due: list[tuple[int, int]] = []

        def room() -> bool:
            return max_events is None or len(due) < max_events

        while self._failed and room():
            fd = self._failed.pop(0)
            if fd in self._regs and fd not in self._pending:
                self._forget(fd)
                self._dropped.add(fd)
                due.append((fd, _INVALID))
        for fd in sorted(self._edges):
            mark = self._edges[fd]
            still = self._probe(fd, mark.bits)
            if not still & (mark.bits | OUTPUT_ONLY_EVENTS):
                del self._edges[fd]  # seen not ready: the next edge goes out at once
        due.extend(self._take_expired_edges(None if max_events is None else max_events - len(due)))
        for fd in sorted(self._kept):
            if not room():
                break
            mask, generation = self._kept.pop(fd)
            registration = self._regs.get(fd)
            if registration is None or generation != self._generation.get(fd):
                continue
            still = self._probe(fd, mask) & (mask | OUTPUT_ONLY_EVENTS)
            if still:
                due.append((fd, still))
            elif registration.oneshot:
                self._rearm(fd, registration)
        return due

    def _take_expired_edges(self, room: int | None) -> list[tuple[int, int]]:
        """Held-back edge re-reports whose hold ran out, if still true (lock held)."""
        now = time.monotonic()
        due: list[tuple[int, int]] = []
        for fd in sorted(self._edges):
            if room is not None and len(due) >= room:
                break
            mark = self._edges[fd]
            if mark.deadline > now:
                continue
            del self._edges[fd]
            if mark.held:
                still = self._probe(fd, mark.held) & (mark.held | OUTPUT_ONLY_EVENTS)
                if still:
                    due.append((fd, still))
        return due

    def _rearm(self, fd: int, registration: Registration) -> None:
        try:
            self._inner.modify(
                fd, registration.events, oneshot=registration.oneshot, edge=registration.edge
            )
        except (OSError, PollkitError):
            pass  # closed meanwhile: the inner poller reports or forgets it

    def _probe(self, fd: int, mask: int) -> int:
        """``fd``'s readiness now for ``mask``'s bits, by ``poll(2)`` with no wait."""
        prober = self._prober
        if prober is None:
            prober = self._prober = select.poll()
        prober.register(fd, mask & INPUT_EVENTS)
        try:
            result = prober.poll(0)
        finally:
            prober.unregister(fd)
        if not result or result[0][1] & _INVALID:
            return 0
        revents: int = result[0][1]
        return revents

    def _sift(self, reported: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], bool]:
        """The inner poller's reports that may go out now (lock held).

        Drops fds not registered (unregistered meanwhile) and bits not
        registered (a held modify narrowed the mask); holds back strict-edge
        re-reports.  Returns what may go out and whether anything was held back.
        """
        fresh: list[tuple[int, int]] = []
        held_back = False
        for fd, mask in reported:
            registration = self._regs.get(fd)
            if registration is None:
                registration = self._learn(fd)
                if registration is None:
                    continue
            if mask & _INVALID:
                if fd not in self._inner:
                    self._forget(fd)  # the driver dropped it, as the contract says
                fresh.append((fd, mask))
                continue
            mask &= registration.events | OUTPUT_ONLY_EVENTS
            if not mask:
                continue
            if registration.edge and not registration.oneshot:
                mark = self._edges.get(fd)
                if mark is not None:
                    if not mask & ~mark.bits:
                        mark.held |= mask
                        held_back = True
                        continue
                    del self._edges[fd]  # a new bit: a new edge, reported at once
            fresh.append((fd, mask))
        return fresh, held_back

    def _learn(self, fd: int) -> Registration | None:
        """The registration of an fd registered on the inner poller before we wrapped it."""
        if fd in self._pending:
            return None
        try:
            registration = self._inner.get_registration(fd)
        except KeyError:  # NotRegisteredError: unregistered meanwhile
            return None
        self._regs[fd] = registration
        self._testable[fd] = _testable_bits(fd)
        return registration

    def _finish(
        self, ready: dict[int, int], must_go: set[int], max_events: int | None
    ) -> list[tuple[int, int]]:
        """Split, spurious readiness, strict-edge marks and shuffle, in that order."""
        with self._lock:
            # Filtered again: another thread may have unregistered or
            # narrowed an fd since the inner poller reported it.
            result = []
            for fd, mask in sorted(ready.items()):
                registration = self._regs.get(fd)
                if registration is not None:
                    mask &= registration.events | OUTPUT_ONLY_EVENTS
                elif not mask & _INVALID or fd in self._pending:
                    continue
                if mask:
                    result.append((fd, mask))
            if max_events is None and len(result) >= 2 and self._chance(self._split_rate):
                result = self._split(result, must_go)
            if self._chance(self._spurious_rate):
                self._add_spurious(result, max_events)
            if self._edge_rate:
                now = time.monotonic()
                for fd, mask in result:
                    registration = self._regs.get(fd)
                    if (
                        registration is not None
                        and registration.edge
                        and not registration.oneshot
                        and fd not in self._edges
                        and self._chance(self._edge_rate)
                    ):
                        self._edges[fd] = _EdgeMark(mask, now + EDGE_HOLD_SECONDS)
        if len(result) >= 2 and self._chance(self._shuffle_rate):
            self._rng.shuffle(result)
        return result

    def _split(self, result: list[tuple[int, int]], must_go: set[int]) -> list[tuple[int, int]]:
        """Withhold some of ``result`` until the next call (lock held).

        What was owed (``must_go``), and ``INVALID`` reports, always go out; at least one
        report goes out.
        """
        movable = [
            index
            for index, (fd, mask) in enumerate(result)
            if fd not in must_go and not mask & _INVALID
        ]
        if not movable:
            return result
        most = min(len(movable), len(result) - 1)
        if most < 1:
            return result
        count = self._rng.randint(1, most)
        withheld = set(self._rng.sample(movable, count))
        kept: list[tuple[int, int]] = []
        for index, (fd, mask) in enumerate(result):
            if index not in withheld:
                kept.append((fd, mask))
                continue
            registration = self._regs[fd]
            if registration.oneshot or registration.edge:
                # The driver has consumed this report: keep it to deliver later.
                self._kept[fd] = (mask, self._generation.get(fd, 0))
            else:
                self._owed.add(fd)  # level-triggered: the driver reports it again
        return kept

    def _add_spurious(self, result: list[tuple[int, int]], max_events: int | None) -> None:
        """Report a registered READ or WRITE bit that is not ready (lock held)."""
        reported = dict(result)
        full = max_events is not None and len(result) >= max_events
        candidates = []
        for fd, testable in sorted(self._testable.items()):
            registration = self._regs.get(fd)
            if (
                registration is None
                or registration.oneshot
                or fd in self._pending
                or fd in self._owed
                or fd in self._kept
                or (full and fd not in reported)
            ):
                continue
            for bit in _SPURIOUS_BITS:
                if registration.events & testable & bit and not reported.get(fd, 0) & bit:
                    candidates.append((fd, bit))
        if not candidates:
            return
        fd, bit = self._rng.choice(candidates)
        # Checked again now: the fd may have been closed, or made blocking.
        if not _testable_bits(fd) & bit:
            return
        if fd in reported:
            result[:] = [(f, m | bit if f == fd else m) for f, m in result]
        else:
            result.append((fd, bit))
            result.sort()
