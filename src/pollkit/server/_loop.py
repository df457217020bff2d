"""The loop: one ``poll()`` at a time, dispatched to per-fd handlers, timed by a heap.

What it does each turn, and why:

1. **The ``poll()`` timeout comes from a timer heap.**  ``call_later()``
   pushes ``(when, seq, Timer)`` onto a ``heapq``; the nearest ``when``
   becomes the timeout, so an idle server sleeps until its next deadline
   and never spins; with no timer it blocks until an event or ``wakeup()``.
   ``Timer.cancel()`` only marks the entry (lazy deletion): removing it from
   the middle of a heap costs O(n), skipping it when it surfaces costs
   nothing; when most entries are cancelled the heap is rebuilt.  A timer
   runs no earlier than its delay (its deadline is compared with the clock
   read after ``poll()`` returns, and a driver rounds its timeout up).
2. **Dispatch.**  A ready fd is looked up first among the connections
   (``dict[int, Transport]``), then among the other handlers
   (``dict[int, handler(mask)]``: the listening socket, the signal pipe,
   the application's readers, a worker's control pipe).  An fd found in
   neither was closed earlier in the same batch: skipped.  A handler that
   raises is logged; the server goes on.
3. **Then timers due, then deferred callbacks**: ``connection_lost()`` for
   the connections closed during the turn (a close never calls the protocol
   from inside the callback that caused it), then what other threads handed
   to ``call_soon_threadsafe()`` (a ``deque``: ``append``/``popleft`` are
   atomic, then ``Poller.wakeup()`` ends a blocked ``poll()``).  Work left
   pending makes the next ``poll()`` not block.

The read path of a connection is written out in the loop itself rather than
behind a method call: it is the path every message takes (one read, one
call of ``data_received()``, whose ``write()`` tries ``send()`` at once),
and a call per message is a measurable share of an echo's cost.  Everything
else (pending output, a buffered protocol, a closing connection, reading
held) goes through ``Transport._ready()``.

The read is ``os.read()`` on the socket's fd: on a TCP socket read(2) is
recv(2) without flags, and ``os.read()`` skips what ``socket.recv()`` adds
(argument parsing by format string, timeout machinery a non-blocking socket
never uses).  A connection's reads start at ``FIRST_READ_SIZE`` and move to
``READ_SIZE`` at the first read that fills the small size: a client sending
small requests gets bytes objects from CPython's small-object allocator, a
bulk sender pays one extra read.

The loop reads the clock only when something needs it: once per turn for
idle timeouts (a connection's ``last_active`` is that turn's time, shared by
every connection served in it), and around ``poll()`` while timers are
pending.  An echo server without timeouts reads it never.

**No assumption about what ``poll()`` returns.**  The layer runs on any
:class:`~pollkit.Poller`, wrappers included (``debug:``, ``chaos:``): one
call may return part of the ready set, in any order, an early empty list, or
a readiness that is not there (on a non-blocking fd).  So every ``recv()``,
``send()`` and ``accept()`` tolerates ``BlockingIOError``, a handler never
expects to be called again for the same readiness, and WRITE interest is
registered only while there is output to send (else a level-triggered
driver would report it forever).

**Stopping.**  ``shutdown()`` sets flags and calls ``wakeup()``, so it works
from any thread and from a signal handler.  The loop checks one attribute per
turn (``_attention``); when it is set the loop looks at what is asked: a
graceful stop begins the drain (the subclass's ``_begin_drain()``) and the
loop goes on until the drain is finished or its deadline passes; an abort
ends the loop at once.  In the main thread, ``serve_forever()`` also points
``signal.set_wakeup_fd()`` at a pipe the poller watches (see
``_signals.py``), so a signal that misses the blocked system call still
wakes the loop and its handler runs at once.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._base import to_fd
from .._events import Events
from .._validate import seconds
from ..errors import (
    AlreadyRegisteredError,
    InvalidArgumentError,
    PollerClosedError,
    PollerForkedError,
)
from ._signals import SignalWakeup

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from .._base import FileDescriptorLike, Poller
    from ._transport import Transport

__all__ = ["Timer"]

log = logging.getLogger("pollkit.server")

#: One read's size: a loopback segment fits, and so does the largest datagram.
#: Reading at most this much per readiness report keeps one busy connection
#: from holding up the rest.
READ_SIZE = 65536
#: A connection's reads start this small: CPython makes a bytes object this
#: size (with its header) from its small-object allocator, far cheaper than
#: the general allocator a READ_SIZE buffer needs.  The first read that
#: fills it (the peer sends more than small requests) moves that connection
#: to READ_SIZE for good.
FIRST_READ_SIZE = 256
#: Rebuild the timer heap when this many entries are cancelled and they are
#: more than half of it.
_COMPACT_AT = 256

Handler = Callable[[int], None]


class Timer:
    """A callback :meth:`Server.call_later` will run; :meth:`cancel` it any time."""

    __slots__ = ("_args", "_callback", "_loop", "_when")

    def __init__(
        self, loop: LoopBase, when: float, callback: Callable[..., object], args: tuple[Any, ...]
    ) -> None:
        self._loop: LoopBase | None = loop
        self._when = when
        self._callback: Callable[..., object] | None = callback
        self._args = args

    @property
    def when(self) -> float:
        """The ``time.monotonic()`` time it runs at (or would have)."""
        return self._when

    def cancel(self) -> None:
        """Do not run the callback; idempotent, harmless after it ran."""
        if self._callback is None:
            return
        self._callback = None
        self._args = ()
        loop = self._loop
        self._loop = None
        if loop is not None:
            loop._timer_cancelled()

    def cancelled(self) -> bool:
        """True once cancelled or run."""
        return self._callback is None

    def _fire(self) -> None:
        callback, args = self._callback, self._args
        self._callback = None
        self._args = ()
        self._loop = None
        if callback is not None:
            callback(*args)

    def __repr__(self) -> str:
        state = "done" if self._callback is None else repr(self._callback)
        return f"<Timer at {self._when:.3f} {state}>"


class LoopBase:
    """What a stream server and a datagram server share: the loop and its services.

    Not public: :class:`~pollkit.server.Server` and
    :class:`~pollkit.server.DatagramServer` document the methods.
    """

    _kind = "server"

    def __init__(self, poller: Poller) -> None:
        self._poller = poller
        self._connections: dict[int, Transport] = {}
        self._handlers: dict[int, Handler] = {}
        self._readers: set[int] = set()
        self._timers: list[tuple[float, int, Timer]] = []
        self._timer_seq = 0
        self._cancelled_timers = 0
        self._soon: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        # (protocol's connection_lost, exception): delivered after the callback
        # that closed the connection has returned.
        self._lost: list[tuple[Callable[[Exception | None], object], Exception | None]] = []
        self._now = time.monotonic()
        self._track_time = False
        self._attention = False
        self._stop_requested = False
        self._aborting = False
        self._draining = False
        self._serving = False
        self._closed = False
        self._on_serving: Callable[[], object] | None = None
        # Only the main thread can route signals to a poller (see _signals.py).
        # Made here, next to the listening socket, so that its fds are as low
        # (select watches fds < 1024 only).  Out of fds, the server still
        # serves; a signal may then wait for the next event to be handled.
        self._signals: SignalWakeup | None = None
        if threading.current_thread() is threading.main_thread():
            try:
                self._signals = SignalWakeup()
            except OSError as exc:
                log.debug("no signal wakeup pipe: %s", exc)

    # -- public services -----------------------------------------------------------

    @property
    def poller(self) -> Poller:
        """The poller the server runs on (the caller's: never closed by the server)."""
        return self._poller

    @property
    def serving(self) -> bool:
        """True while :meth:`serve_forever` runs."""
        return self._serving

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run (``serve_forever()`` ends with it)."""
        return self._closed

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Run ``callback(*args)`` on the loop's thread, ``delay`` seconds from now or later.

        The nearest timer's deadline is the ``poll()`` timeout: no busy loop,
        no helper thread.  A callback that raises is logged (logger
        ``pollkit.server``, with its traceback); the server goes on.  Call
        it from the loop's thread (a callback, or before serving); from
        another thread use :meth:`call_soon_threadsafe`.

        Raises:
            InvalidArgumentError: ``delay`` is not a finite number of seconds
                ``>= 0``, or ``callback`` is not callable (the message names it).
        """
        when = time.monotonic() + seconds("delay", delay)
        if not callable(callback):
            raise InvalidArgumentError(f"callback = {callback!r} is not callable")
        timer = Timer(self, when, callback, args)
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, timer))
        return timer

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop's thread soon; safe from any thread.

        Callbacks run in the order given.  A callback that raises is logged;
        the server goes on.  Before :meth:`serve_forever`, it runs once that
        starts.

        Raises:
            InvalidArgumentError: ``callback`` is not callable.
        """
        if not callable(callback):
            raise InvalidArgumentError(f"callback = {callback!r} is not callable")
        self._soon.append((callback, args))
        try:
            self._poller.wakeup()
        except (PollerClosedError, PollerForkedError):
            pass  # no loop runs on this poller any more: nothing to wake

    def add_reader(
        self, fd: FileDescriptorLike, callback: Callable[..., object], *args: Any
    ) -> None:
        """Call ``callback(*args)`` on the loop whenever ``fd`` is readable.

        For the application's own fds on the server's poller (a pipe from
        another thread, a timerfd, a client socket).  Level-triggered: read
        what is there, or the callback runs again at once.  The fd should be
        non-blocking: a poller may report a readiness that is gone by the time
        the callback reads.  The server unregisters it on :meth:`close` but
        never closes it.  A callback that raises is logged; the server goes on.

        Raises:
            AlreadyRegisteredError: the server already watches ``fd`` (one of
                its own sockets, or a reader added before).
            InvalidArgumentError: ``callback`` is not callable, or a bad fd.
        """
        number = to_fd(fd)
        if not callable(callback):
            raise InvalidArgumentError(f"callback = {callback!r} is not callable")
        if number in self._handlers or number in self._connections:
            what = "a reader added before" if number in self._readers else "one of its own"
            raise AlreadyRegisteredError(
                f"fd {number} is already watched by this {self._kind} ({what}); "
                "remove_reader() it first, or use another fd"
            )

        def handle(mask: int) -> None:
            callback(*args)

        self._poller.register(number, Events.READ)
        self._handlers[number] = handle
        self._readers.add(number)

    def remove_reader(self, fd: FileDescriptorLike) -> bool:
        """Stop watching ``fd`` (added by :meth:`add_reader`); False if it was not a reader."""
        number = to_fd(fd)
        if number not in self._readers:
            return False
        self._readers.discard(number)
        del self._handlers[number]
        self._unregister(number)
        return True

    def shutdown(self, graceful: bool = True) -> None:
        """Ask :meth:`serve_forever` to stop; returns at once.

        Safe from any thread and from a signal handler (it sets flags and
        calls ``Poller.wakeup()``).  Graceful: stop accepting, stop reading,
        send pending output for up to ``grace_period`` seconds, half-close
        and linger until each peer's kernel has acknowledged everything, then
        close what is left; ``connection_lost()`` for each.
        ``graceful=False`` (also as a later call) closes everything at once.
        A repeated graceful call is harmless.  Before :meth:`serve_forever`
        runs, it makes it return at once.
        """
        if not graceful:
            self._aborting = True
        self._stop_requested = True
        self._attention = True
        try:
            self._poller.wakeup()
        except (PollerClosedError, PollerForkedError):
            pass  # the loop is not running on this poller any more: nothing to wake

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown`, then stop (gracefully unless asked not to) and close.

        An exception (say, from a signal handler) closes every socket on its
        way out.  In the main thread it sets ``signal.set_wakeup_fd()`` to a
        pipe its poller watches while it serves, so that a signal handler
        (calling :meth:`shutdown`, say) runs at once even when the signal
        missed the blocked ``poll()``; it restores the setting on return.  If
        a wakeup fd is set already (an asyncio loop's), it leaves it.

        Raises:
            RuntimeError: the server is closed, or already serving.
        """
        if self._closed:
            raise RuntimeError(f"this {self._kind} is closed; make a new one")
        if self._serving:
            raise RuntimeError(f"this {self._kind} is already serving")
        self._serving = True
        signals = self._signals
        try:
            if signals is not None and signals.install(self._poller):
                self._handlers[signals.read_fd] = self._drain_signals
            self._start()
            if self._on_serving is not None:
                self._on_serving()
            while True:
                self._run()
                self._attention = False  # first: a request made from now on sets it again
                if self._aborting:
                    break
                if self._stop_requested:
                    if not self._draining:
                        self._draining = True
                        self._begin_drain()
                    if self._drain_finished():
                        break
        finally:
            self._serving = False
            if signals is not None:
                self._handlers.pop(signals.read_fd, None)
                signals.uninstall()
            self.close()

    def close(self) -> None:
        """Close every connection and socket; unregister everything from the poller.

        Idempotent; :meth:`serve_forever` calls it on its way out.  Call it
        yourself only for a server that is not serving.  The application's
        readers are unregistered, not closed.  ``connection_lost()`` runs for
        each connection still open.

        Raises:
            RuntimeError: :meth:`serve_forever` is running (use :meth:`shutdown`).
        """
        if self._closed:
            return
        if self._serving:
            raise RuntimeError("close() while serve_forever() runs; call shutdown() instead")
        self._closed = True
        try:
            self._close_resources()
            for fd in list(self._readers):
                self.remove_reader(fd)
        finally:
            self._timers.clear()
            self._soon.clear()
            if self._signals is not None:
                self._signals.close()
            self._deliver_lost()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- for subclasses --------------------------------------------------------

    def _start(self) -> None:
        """Register the server's sockets (serve_forever() is starting)."""

    def _begin_drain(self) -> None:
        """A graceful stop was asked for: stop taking work, flush what is pending."""

    def _drain_finished(self) -> bool:
        return True

    def _close_resources(self) -> None:
        """Close connections and sockets (close())."""

    def _unregister(self, fd: int) -> None:
        try:
            self._poller.unregister(fd)
        except (PollerClosedError, PollerForkedError):
            pass  # the caller closed the poller first: its registrations are gone

    # -- the loop --------------------------------------------------------------

    def _run(self) -> None:
        """Serve until ``_attention`` is set."""
        # poller.poll(...) rather than a stored bound method: CPython 3.11
        # specialises the method call, not a bound method with defaults.
        poller = self._poller
        connections = self._connections
        handlers = self._handlers
        timers = self._timers
        soon = self._soon
        lost = self._lost
        monotonic = time.monotonic
        read_size = READ_SIZE
        read = os.read  # see the module docstring: not the socket's recv()
        now = self._now
        while True:
            # Timers, deferred connection_lost() calls and other threads'
            # callbacks ran at the end of the last turn; any of them may have
            # asked for the loop's attention, or left work that must not wait.
            if self._attention:
                return
            timeout: float | None = None
            if lost or soon:
                timeout = 0.0
            elif timers:
                while timers and timers[0][2]._callback is None:
                    heapq.heappop(timers)  # cancelled: lazy deletion
                    self._cancelled_timers -= 1
                if timers:
                    timeout = timers[0][0] - monotonic()
                    if timeout < 0.0:
                        timeout = 0.0
            ready = poller.poll(timeout)
            if self._track_time:
                now = self._now = monotonic()
            for fd, mask in ready:
                try:
                    conn = connections[fd]  # a subscript costs less than .get()
                except KeyError:
                    handler = handlers.get(fd)
                    if handler is not None:
                        try:
                            handler(mask)
                        except Exception:  # a handler's bug must not stop the server
                            log.exception("fd %d: the handler raised; the server goes on", fd)
                    continue  # else an fd closed earlier in this batch
                # _slow: output pending, not reading, closing, a buffered protocol.
                # Otherwise only READ is registered, so the report is READ or a
                # failure, which a read meets; a spurious one costs an EAGAIN.
                if conn._slow:
                    conn._ready(mask)
                    continue
                # The hot path: one read, the protocol's data_received(),
                # whose write() tries send() at once.
                size = conn._read_size
                try:
                    data = read(fd, size)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    conn._fail(exc)
                    continue
                if data:
                    conn._last_active = now
                    if size != read_size and len(data) == size:
                        conn._read_size = read_size  # see FIRST_READ_SIZE
                    # Looked up once (see Transport), and read as an attribute:
                    # CPython 3.11 specialises loading a slot, not calling
                    # one as a method (conn._data_received(data)).
                    received = conn._data_received
                    try:
                        received(data)
                    except Exception as exc:  # noqa: BLE001  # aborts this connection only
                        conn._callback_failed(exc, "data_received")
                else:
                    conn._end_of_input()
            if timers and timers[0][0] <= monotonic():
                self._run_timers(monotonic())
            if lost:
                self._deliver_lost()
            if soon:
                self._run_soon()

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if timer._callback is None:
                self._cancelled_timers -= 1
                continue
            try:
                timer._fire()
            except Exception:  # a timer's bug must not stop the server
                log.exception("timer %r raised; the server goes on", timer)

    def _timer_cancelled(self) -> None:
        self._cancelled_timers += 1
        timers = self._timers
        if self._cancelled_timers > _COMPACT_AT and self._cancelled_timers * 2 > len(timers):
            timers[:] = [entry for entry in timers if entry[2]._callback is not None]
            heapq.heapify(timers)
            self._cancelled_timers = 0

    def _run_soon(self) -> None:
        soon = self._soon
        for _ in range(len(soon)):  # those added meanwhile run next turn
            callback, args = soon.popleft()
            try:
                callback(*args)
            except Exception:  # a callback's bug must not stop the server
                log.exception(
                    "call_soon_threadsafe callback %r raised; the server goes on", callback
                )

    def _deliver_lost(self) -> None:
        lost = self._lost
        while lost:
            batch = lost[:]
            lost.clear()
            for connection_lost, exc in batch:
                try:
                    connection_lost(exc)
                except Exception:  # the connection is gone already
                    log.exception("%r raised", connection_lost)

    def _drain_signals(self, mask: int) -> None:
        """Empty the signal wakeup pipe; the handlers run on their own, between bytecodes."""
        if self._signals is not None:
            self._signals.drain()

    def _wake_for_drain(self) -> None:
        """The drain may be finished: have the loop look."""
        self._attention = True
