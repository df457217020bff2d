"""Worker processes sharing one port through ``SO_REUSEPORT``.

Each worker is a forked process with its own poller and its own listening
socket bound to the same port with ``reuse_port=True``; the kernel spreads
new connections (for UDP: senders) over them.  The parent talks to each
worker through a pipe: it writes ``g`` for a graceful stop and ``a`` to
abort.  When the parent dies, however it dies (``SIGKILL`` included), the
kernel closes its end, the worker's read end reaches end of file and the
worker stops gracefully, so no worker outlives it by more than the grace
period.

In the worker the pipe is one more reader on the server's loop
(:func:`watch_parent`), not a thread: the loop already waits on every fd the
worker cares about, and a thread would need its own way to wake the loop.

The parent (:class:`Supervisor`) blocks SIGINT, SIGTERM and SIGCHLD and takes
them with ``sigwaitinfo()``: a handler could miss the moment (a signal
landing just before a blocking ``waitpid()`` waits for a child to exit).
The first stop signal asks every worker for a graceful stop, a second one
for an abort; a worker that exits with a failure stops the others.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._loop import LoopBase

__all__ = [
    "ABORT",
    "GRACEFUL",
    "READY",
    "STOP_SIGNALS",
    "SUPERVISOR_SIGNALS",
    "Supervisor",
    "watch_parent",
]

log = logging.getLogger("pollkit.server")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: What the parent waits for with sigwaitinfo(), blocked meanwhile.
SUPERVISOR_SIGNALS = frozenset({*STOP_SIGNALS, signal.SIGCHLD})
#: Parent to worker: stop gracefully.
GRACEFUL = b"g"
#: Parent to worker: exit at once.
ABORT = b"a"
#: Worker to parent: serving (the server is bound and listening).
READY = b"r"

#: A worker's body: ``(index, control_read, ready_write)``; runs in the child
#: and must end with ``os._exit()``, never return into the parent's code.
WorkerBody = Callable[[int, int, int], None]


def watch_parent(server: LoopBase, control_read: int) -> None:
    """Make ``server`` obey the parent's control pipe: a reader on its loop.

    ``g`` or end of file (the parent is gone) stops it gracefully; ``a``
    exits the process at once with status 128 + SIGTERM.
    """
    os.set_blocking(control_read, False)  # a spurious readiness must not hang the loop

    def on_message() -> None:
        try:
            message = os.read(control_read, 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            message = b""
        if message == ABORT:
            os._exit(128 + signal.SIGTERM)
        server.shutdown()
        if not message:
            # The parent is gone: its end closed with it.  End of file stays
            # readable forever; stop watching it.
            server.remove_reader(control_read)

    server.add_reader(control_read, on_message)


@contextmanager
def _signals_to(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def _blocked(signals: frozenset[signal.Signals]) -> Iterator[None]:
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Supervisor:
    """The parent of ``count`` workers: forks them, forwards stop requests, reaps them.

    ``body(index, control_read, ready_write)`` runs in each child (with the
    supervisor's signals still blocked: unblock :data:`SUPERVISOR_SIGNALS`
    there); it writes :data:`READY` to ``ready_write`` once serving, then
    watches ``control_read`` (:func:`watch_parent`).  ``on_ready()`` runs in
    the parent once every worker is ready.
    """

    def __init__(self, count: int, body: WorkerBody, on_ready: Callable[[], None]) -> None:
        self.count = count
        self.body = body
        self.on_ready = on_ready
        self.controls: dict[int, int] = {}  # worker pid -> the write end of its control pipe
        self.signals: list[int] = []
        self.failed = False
        self.ready = 0

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        self.tell_all()

    def tell_all(self) -> None:
        """Tell every worker what the signals so far ask for: stop, or abort."""
        message = GRACEFUL if len(self.signals) <= 1 else ABORT
        for control in self.controls.values():
            try:
                os.write(control, message)
            except OSError:
                pass  # that worker is gone already

    def run(self) -> int:
        """Fork, serve until every worker has exited; the exit status.

        0 after a graceful stop, 128 + the signal after a second one, 1 if a
        worker failed (or fewer than ``count`` started: see :attr:`ready`).
        """
        ready_read, ready_write = os.pipe()
        with _signals_to(self.on_signal), _blocked(SUPERVISOR_SIGNALS):
            try:
                for index in range(self.count):
                    self._fork(index, ready_read, ready_write)
            finally:
                os.close(ready_write)
                self.ready = _count_ready(ready_read)
            if self.ready < self.count:
                self.failed = True
                self.signals.append(signal.SIGTERM)
            if self.signals:  # asked to stop while forking, or a worker failed to start
                self.tell_all()
            else:
                self.on_ready()
            self._reap()
        if len(self.signals) > 1 and self.ready == self.count:
            return 128 + self.signals[-1]
        return 1 if self.failed else 0

    def _fork(self, index: int, ready_read: int, ready_write: int) -> None:
        control_read, control_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover  # the child; the tests see its effects
            os.close(ready_read)
            os.close(control_write)
            for inherited in self.controls.values():
                os.close(inherited)  # a sibling's pipe: the parent alone may hold it open
            self.body(index, control_read, ready_write)
            os._exit(1)  # the body must not return; if it does, this child is done
        os.close(control_read)
        self.controls[pid] = control_write

    def _reap(self) -> None:
        while self.controls:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:  # none has exited: wait for a stop signal or SIGCHLD
                signum = signal.sigwaitinfo(SUPERVISOR_SIGNALS).si_signo
                if signum != signal.SIGCHLD:
                    self.on_signal(signum, None)
                continue
            control = self.controls.pop(pid, None)
            if control is None:
                continue
            os.close(control)
            code = os.waitstatus_to_exitcode(wait_status)
            if code != 0 and not self.signals and not self.failed:
                log.error("worker %d exited with status %d; stopping the others", pid, code)
                self.failed = True
                self.tell_all()


def _count_ready(ready_read: int) -> int:
    """Read the workers' ready bytes until every worker has written or died."""
    count = 0
    try:
        while True:
            data = os.read(ready_read, 64)
            if not data:
                return count
            count += data.count(READY)
    finally:
        os.close(ready_read)
