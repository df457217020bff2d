"""Server layer, line 8: timers and threads, and the application's own fds.

``call_later`` callbacks run on the loop's thread, in deadline order, no
earlier than their delay (measured on the monotonic clock; never an upper
bound, which a loaded machine cannot promise); the nearest deadline becomes
the ``poll()`` timeout, so there is no busy loop and no helper thread.
``call_soon_threadsafe`` wakes a blocked loop with ``wakeup()``.
``add_reader``/``remove_reader`` watch the application's own fds on the
same poller.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Iterator

import pytest

from echo_helpers import PROMPT, wait_until
from pollkit import Poller
from pollkit.server import Server
from server_helpers import (
    LOOP_THREAD,
    UpperLines,
    counting,
    on_loop,
    running,
    serving,
    settle,
    thread_sleeps,
)

Fired = tuple[str, float, str]  # (tag, when, thread name)


class Timeline:
    """Callbacks that note when and where they ran."""

    def __init__(self) -> None:
        self.fired: list[Fired] = []
        self.condition = threading.Condition()

    def note(self, tag: str) -> None:
        with self.condition:
            self.fired.append((tag, time.monotonic(), threading.current_thread().name))
            self.condition.notify_all()

    def wait(self, count: int) -> list[Fired]:
        with self.condition:
            assert self.condition.wait_for(lambda: len(self.fired) >= count, PROMPT), self.fired
            return list(self.fired)

    def tags(self) -> list[str]:
        with self.condition:
            return [tag for tag, _, _ in self.fired]


@pytest.mark.timeout(30)
def test_call_later_runs_in_deadline_order_no_earlier_than_asked(poller: Poller) -> None:
    delays = {"d60": 0.06, "d0": 0.0, "d30": 0.03, "d10": 0.01, "d45": 0.045, "d20": 0.02}
    timeline = Timeline()
    scheduled: dict[str, float] = {}
    with serving(poller, UpperLines) as server:

        def schedule() -> None:
            for tag, delay in delays.items():
                scheduled[tag] = time.monotonic()
                server.call_later(delay, timeline.note, tag)

        on_loop(server, schedule)
        fired = timeline.wait(len(delays))
    assert [tag for tag, _, _ in fired] == sorted(delays, key=delays.__getitem__)
    for tag, when, thread in fired:
        assert when - scheduled[tag] >= delays[tag], f"{tag} ran early"
        assert thread == LOOP_THREAD


@pytest.mark.timeout(30)
def test_a_timer_may_reschedule_itself(poller: Poller) -> None:
    """A periodic timer reschedules itself from its own callback, each tick no
    earlier than the one before plus its delay.  (The test thread schedules
    the first through ``call_soon_threadsafe``: ``call_later`` belongs to
    the loop's thread.)"""
    timeline = Timeline()
    ticks = 5
    interval = 0.01
    with serving(poller, UpperLines) as server:

        def tick(left: int) -> None:
            timeline.note(f"tick {left}")
            if left > 1:
                server.call_later(interval, tick, left - 1)

        server.call_soon_threadsafe(server.call_later, interval, tick, ticks)
        fired = timeline.wait(ticks)
    assert [tag for tag, _, _ in fired] == [f"tick {left}" for left in range(ticks, 0, -1)]
    for (_, before, _), (_, after, _) in itertools.pairwise(fired):
        assert after - before >= interval


@pytest.mark.timeout(30)
def test_cancelled_timers_never_run(poller: Poller) -> None:
    timeline = Timeline()
    with serving(poller, UpperLines) as server:

        def schedule() -> None:
            server.call_later(0.01, timeline.note, "first")
            doomed = server.call_later(0.02, timeline.note, "cancelled")
            doomed.cancel()
            doomed.cancel()  # twice is harmless
            victim = server.call_later(0.04, timeline.note, "cancelled by a timer")
            server.call_later(0.02, victim.cancel)
            done = server.call_later(0, timeline.note, "at once")
            server.call_later(0.03, done.cancel)  # after it ran: harmless
            server.call_later(0.06, timeline.note, "last")

        on_loop(server, schedule)
        timeline.wait(3)
        settle(server)
    assert timeline.tags() == ["at once", "first", "last"]


@pytest.mark.timeout(30)
def test_the_nearest_deadline_is_the_poll_timeout(poller: Poller) -> None:
    """While a timer is pending and nothing else happens, the loop makes a
    handful of ``poll()`` calls, not thousands; no thread is started but
    the one that serves."""
    wrapper = counting(poller)
    delay = 0.3
    fired = threading.Event()
    tasks_before = set(os.listdir("/proc/self/task"))
    with (
        Server(wrapper, UpperLines, "127.0.0.1", 0) as server,
        running(server, wrapper) as thread,
    ):
        on_loop(server, lambda: None)
        before = wrapper.polls
        on_loop(server, lambda: server.call_later(delay, fired.set))
        assert fired.wait(PROMPT)
        polls = wrapper.polls - before
        new_tasks = set(os.listdir("/proc/self/task")) - tasks_before
        assert new_tasks <= {str(thread.native_id)}, "the layer started a thread of its own"
    # One poll() to run the scheduling call, one (or a few, after a signal
    # or rounding) waiting for the deadline, one after it.
    assert polls <= 10, f"{polls} poll() calls while waiting {delay} s for a timer"
    assert any(timeout is not None and 0 < timeout <= delay for timeout in wrapper.timeouts), (
        f"no poll() waited for the timer: timeouts {wrapper.timeouts}"
    )
    assert len(poller) == 0


@pytest.mark.timeout(30)
def test_call_soon_threadsafe_wakes_a_blocked_loop(poller: Poller) -> None:
    wrapper = counting(poller)
    ran = threading.Event()
    where: list[str] = []

    def callback(tag: str) -> None:
        where.append(f"{tag} on {threading.current_thread().name}")
        ran.set()

    with (
        Server(wrapper, UpperLines, "127.0.0.1", 0) as server,
        running(server, wrapper) as thread,
    ):
        wait_until(
            lambda: wrapper.blocked.is_set() and thread_sleeps(thread),
            what="the loop blocked in poll()",
        )
        assert wrapper.timeouts[-1] is None, "an idle loop should block without a timeout"
        server.call_soon_threadsafe(callback, "woken")
        assert ran.wait(PROMPT), "call_soon_threadsafe() did not wake the blocked loop"
    assert where == [f"woken on {LOOP_THREAD}"]


@pytest.mark.timeout(30)
def test_call_soon_threadsafe_from_many_threads_runs_each_call_once_in_order(
    poller: Poller,
) -> None:
    threads = 6
    calls = 50
    seen: list[tuple[int, int]] = []
    with serving(poller, UpperLines) as server:

        def caller(index: int) -> None:
            for number in range(calls):
                server.call_soon_threadsafe(seen.append, (index, number))

        workers = [threading.Thread(target=caller, args=(index,)) for index in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(PROMPT)
        settle(server, 1)
    assert sorted(seen) == [(index, number) for index in range(threads) for number in range(calls)]
    for index in range(threads):
        assert [number for who, number in seen if who == index] == list(range(calls))


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):  # a test may have closed it
            os.close(fd)


@pytest.mark.timeout(30)
def test_add_reader_and_remove_reader_for_the_applications_own_pipe(
    poller: Poller, pipe: tuple[int, int]
) -> None:
    read_fd, write_fd = pipe
    got: list[tuple[bytes, str]] = []
    condition = threading.Condition()

    def on_readable() -> None:
        with condition:
            got.append((os.read(read_fd, 1024), threading.current_thread().name))
            condition.notify_all()

    with serving(poller, UpperLines) as server:
        on_loop(server, lambda: server.add_reader(read_fd, on_readable))
        assert read_fd in poller
        os.write(write_fd, b"one")
        with condition:
            assert condition.wait_for(lambda: got, PROMPT)
        assert got == [(b"one", LOOP_THREAD)]
        on_loop(server, lambda: server.remove_reader(read_fd))
        assert read_fd not in poller
        os.write(write_fd, b"two")
        settle(server)
        assert len(got) == 1, "the callback ran after remove_reader()"
    # The application's fd is its own: the server never closed it.
    assert os.read(read_fd, 1024) == b"two"


@pytest.mark.timeout(30)
def test_a_reader_may_remove_itself_at_eof(poller: Poller, pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    chunks: list[bytes] = []
    finished = threading.Event()

    with serving(poller, UpperLines) as server:

        def on_readable() -> None:
            data = os.read(read_fd, 1024)
            chunks.append(data)
            if not data:
                server.remove_reader(read_fd)
                finished.set()

        on_loop(server, lambda: server.add_reader(read_fd, on_readable))
        os.write(write_fd, b"last words")
        os.close(write_fd)
        assert finished.wait(PROMPT)
        settle(server)
    assert b"".join(chunks) == b"last words"
    assert chunks[-1] == b""
    assert chunks.count(b"") == 1, "the reader ran again after removing itself"
