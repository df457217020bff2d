"""chaos: never breaks the contract, whatever it injects.

A differential fuzz: random register / modify / unregister / send / recv /
fill / drain steps on a few socket pairs, with every fault at a high rate,
and after each step a ``poll()`` whose result is checked against a model of
what is registered and against the kernel's readiness (``poll(2)`` with no
wait, on each fd alone):

* no fd that is not registered, no bit that was not registered (``ERROR``,
  ``HANGUP``, ``INVALID`` aside), no fd twice in one result;
* never more than ``max_events``;
* a oneshot registration reported at most once per arming;
* spurious readiness only on a non-blocking fd: on the one blocking fd,
  every report is true;
* nothing lost: at the end, every fd the kernel says is ready (level),
  armed (oneshot) or newly ready (edge) is reported within a few calls.

Plus the thread cases: a held change is never lost, and an fd is never
reported after ``unregister()`` has returned.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import OUTPUT_ONLY, READ, WRITE, drain, fill_send_buffer
from pollkit import Poller, _chaos, open_poller
from pollkit._chaos import FAULTS, ChaosPoller
from test_chaos_faults import bare_driver, plain_spec

PAIRS = 4
#: Pair 0's end is blocking: chaos must never report it spuriously.
BLOCKING = 0
#: Calls within which anything ready must be reported (a withheld report
#: comes back at the next call).
K = 3
#: Every fault far above its default.
HIGH_RATES = dict.fromkeys(FAULTS, 0.5)


def just(fault: str, rate: float = 1.0) -> dict[str, float]:
    """Every fault off but ``fault``."""
    return {**dict.fromkeys(FAULTS, 0.0), fault: rate}


Step = tuple[str, int, int, int]  # (action, pair, mask, mode) -- mode: 0 level, 1 oneshot, 2 edge

steps: st.SearchStrategy[Step] = st.tuples(
    st.sampled_from(
        [
            "register",
            "modify",
            "unregister",
            "peer_send",
            "recv",
            "fill",
            "peer_drain",
            "poll",
            "poll",
            "poll",
        ]
    ),
    st.integers(0, PAIRS - 1),
    st.sampled_from([READ, WRITE, READ | WRITE]),
    st.integers(0, 2),
)


def kernel_ready(fd: int, events: int) -> int:
    """What ``poll(2)`` says of ``fd`` now, for ``events``."""
    probe = select.poll()
    probe.register(fd, events)
    result = probe.poll(0)
    return result[0][1] if result else 0


@dataclass
class Model:
    """What the test registered, and what each oneshot/edge registration still owes."""

    regs: dict[int, tuple[int, int]] = field(default_factory=dict)  # fd -> (mask, mode)
    armed: set[int] = field(default_factory=set)  # oneshot fds not yet reported
    new_edge: set[int] = field(default_factory=set)  # edge fds with an edge not yet reported


@contextlib.contextmanager
def socket_pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    pairs: list[tuple[socket.socket, socket.socket]] = []
    try:
        for index in range(PAIRS):
            left, right = socket.socketpair()
            pairs.append((left, right))
            left.setblocking(index == BLOCKING)
            right.setblocking(False)
            left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        yield pairs
    finally:
        for left, right in pairs:
            left.close()
            right.close()


def check_result(
    result: list[tuple[int, int]],
    model: Model,
    max_events: int | None,
    blocking_fd: int,
    where: str,
) -> None:
    fds = [fd for fd, _ in result]
    assert len(fds) == len(set(fds)), f"{where}: an fd twice in {result}"
    if max_events is not None:
        assert len(result) <= max_events, f"{where}: {result} is over max_events={max_events}"
    for fd, mask in result:
        assert fd in model.regs, f"{where}: fd {fd} is not registered: {result}"
        registered, mode = model.regs[fd]
        assert not mask & ~(registered | OUTPUT_ONLY), (
            f"{where}: fd {fd} reported {mask:#x}, registered {registered:#x}"
        )
        if mode == 1:
            assert fd in model.armed, f"{where}: oneshot fd {fd} reported twice"
            model.armed.discard(fd)
        if mode == 2:
            model.new_edge.discard(fd)
        if fd == blocking_fd:
            really = kernel_ready(fd, registered)
            assert mask & ~OUTPUT_ONLY & ~really == 0, (
                f"{where}: blocking fd {fd} reported {mask:#x}, kernel says {really:#x}"
            )


def expected_now(model: Model) -> set[int]:
    """The registered fds that a poll() must report soon."""
    owed = set()
    for fd, (mask, mode) in model.regs.items():
        if not kernel_ready(fd, mask) & (mask | OUTPUT_ONLY):
            continue
        if mode == 0 or (mode == 1 and fd in model.armed) or (mode == 2 and fd in model.new_edge):
            owed.add(fd)
    return owed


def run(
    poller: Poller, sequence: list[Step], pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    model = Model()
    has_edge = "edge" in poller.features
    blocking_fd = pairs[BLOCKING][0].fileno()
    for number, (action, index, mask, mode) in enumerate(sequence):
        left, right = pairs[index]
        fd = left.fileno()
        where = f"step {number} {(action, index, mask, mode)}"
        if mode == 2 and (not has_edge or index == BLOCKING):
            mode = 0
        if mode == 2:
            mask = READ  # edges are modelled for input only
        if action == "register" and fd not in model.regs:
            poller.register(left, mask, oneshot=mode == 1, edge=mode == 2)
            model.regs[fd] = (mask, mode)
            if mode == 1:
                model.armed.add(fd)
            if mode == 2:
                model.new_edge.add(fd)
        elif action == "modify" and fd in model.regs:
            poller.modify(left, mask, oneshot=mode == 1, edge=mode == 2)
            model.regs[fd] = (mask, mode)
            model.armed.discard(fd)
            model.new_edge.discard(fd)
            if mode == 1:
                model.armed.add(fd)
            if mode == 2:
                model.new_edge.add(fd)
        elif action == "unregister" and fd in model.regs:
            poller.unregister(left)
            del model.regs[fd]
        elif action == "peer_send":
            with contextlib.suppress(BlockingIOError):
                right.send(b"data")
                if fd in model.regs and model.regs[fd][1] == 2:
                    model.new_edge.add(fd)
        elif action == "recv" and index != BLOCKING:
            drain(left)
        elif action == "fill" and index != BLOCKING:
            fill_send_buffer(left)
        elif action == "peer_drain":
            drain(right)
        max_events = None if number % 3 else 1 + number % 2
        result = poller.poll(0, max_events)
        check_result(result, model, max_events, blocking_fd, where)

    # Nothing lost: what is ready now comes out within K quick calls; a
    # strict edge's held-back report within its (shortened) hold.
    owed = expected_now(model)
    seen: set[int] = set()

    def collect(timeout: float) -> None:
        result = poller.poll(timeout)
        check_result(result, model, None, blocking_fd, "liveness")
        seen.update(fd for fd, _ in result)

    for _ in range(K):
        collect(0)
    late = {fd for fd in owed - seen if model.regs[fd][1] != 2}
    assert not late, f"not reported within {K} calls, though ready: {sorted(late)}"
    deadline = time.monotonic() + 2.0
    while owed - seen and time.monotonic() < deadline:
        collect(0.05)
    lost = {fd for fd in owed - seen if kernel_ready(fd, model.regs[fd][0])}
    assert not lost, f"an edge never reported, though ready: {sorted(lost)}"
    for fd in list(model.regs):
        poller.unregister(fd)


@pytest.fixture
def short_edge_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_chaos, "EDGE_HOLD_SECONDS", 0.05)


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("short_edge_hold")
def test_chaos_never_breaks_the_contract(poller_backend: str) -> None:
    # One pair is blocking on purpose, which debug: would rightly warn about.
    backend = bare_driver(poller_backend)

    @settings(max_examples=40, deadline=None, database=None)
    @given(st.lists(steps, min_size=1, max_size=30), st.integers(0, 2**32 - 1))
    def fuzz(sequence: list[Step], seed: int) -> None:
        with (
            socket_pairs() as pairs,
            ChaosPoller(open_poller(backend), seed=seed, rates=HIGH_RATES) as poller,
        ):
            run(poller, sequence, pairs)

    fuzz()


@pytest.mark.timeout(60)
def test_spurious_readiness_never_on_a_blocking_fd(poller_backend: str) -> None:
    left, right = socket.socketpair()  # blocking
    with (
        left,
        right,
        ChaosPoller(
            open_poller(bare_driver(poller_backend)), seed=1, rates=just("spurious")
        ) as poller,
    ):
        poller.register(left, READ)  # not readable: any READ would be spurious
        for _ in range(200):
            assert poller.poll(0) == []
        poller.unregister(left)


@pytest.mark.timeout(60)
def test_spurious_readiness_never_on_a_oneshot_registration(poller_backend: str) -> None:
    left, right = socket.socketpair()
    left.setblocking(False)
    with (
        left,
        right,
        ChaosPoller(
            open_poller(plain_spec(poller_backend)), seed=1, rates=just("spurious")
        ) as poller,
    ):
        poller.register(left, READ, oneshot=True)
        for _ in range(50):
            assert poller.poll(0) == []
        right.send(b"x")
        assert [fd for fd, _ in poller.poll(1.0)] == [left.fileno()]
        for _ in range(50):
            assert poller.poll(0) == []  # reported once: never again until modify()
        poller.unregister(left)


@pytest.mark.timeout(60)
def test_a_withheld_oneshot_report_comes_once_at_the_next_call(poller_backend: str) -> None:
    pairs = [socket.socketpair() for _ in range(6)]
    try:
        for left, right in pairs:
            left.setblocking(False)
            right.send(b"x")
        for seed in range(10):
            with ChaosPoller(
                open_poller(plain_spec(poller_backend)), seed=seed, rates=just("split")
            ) as poller:
                for left, _ in pairs:
                    poller.register(left, READ, oneshot=True)
                first = [fd for fd, _ in poller.poll(1.0)]
                assert 1 <= len(first) < len(pairs)
                second = [fd for fd, _ in poller.poll(5.0)]  # must not block: reports are owed
                assert sorted(first + second) == sorted(left.fileno() for left, _ in pairs)
                assert poller.poll(0) == []
                for left, _ in pairs:
                    poller.unregister(left)
    finally:
        for left, right in pairs:
            left.close()
            right.close()


@pytest.mark.timeout(60)
def test_strict_edge_hold_is_bounded(poller_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_poller(plain_spec(poller_backend)) as probe:
        if "edge" not in probe.features:
            pytest.skip(f"{poller_backend} has no edge mode (epoll only)")
    # A hold long enough to tell "held" from "prompt" on a loaded machine.
    hold = 2.0
    monkeypatch.setattr(_chaos, "EDGE_HOLD_SECONDS", hold)
    left, right = socket.socketpair()
    left.setblocking(False)
    with (
        left,
        right,
        ChaosPoller(open_poller(plain_spec(poller_backend)), seed=3, rates=just("edge")) as poller,
    ):
        poller.register(left, READ, edge=True)
        right.send(b"a")
        assert [fd for fd, _ in poller.poll(1.0)] == [left.fileno()]
        right.send(b"b")  # a re-report with no drain in between: held back...
        started = time.monotonic()
        assert [fd for fd, _ in poller.poll(hold * 5)] == [left.fileno()]
        # ... for the hold, then delivered, well before the timeout.
        assert hold / 2 <= time.monotonic() - started < hold * 4
        # Drained to EAGAIN, seen not ready by a poll(): the next edge goes out at once.
        drain(left)
        assert poller.poll(0) == []
        right.send(b"c")
        started = time.monotonic()
        assert [fd for fd, _ in poller.poll(hold * 5)] == [left.fileno()]
        assert time.monotonic() - started < hold / 2
        poller.unregister(left)


@pytest.mark.timeout(60)
def test_a_held_change_is_applied_at_the_next_poll(poller_backend: str) -> None:
    left, right = socket.socketpair()
    left.setblocking(False)
    fill_send_buffer(left)  # WRITE is not ready: only the modify's READ can be reported
    right.send(b"x")
    with (
        left,
        right,
        ChaosPoller(open_poller(plain_spec(poller_backend)), seed=0, rates=just("hold")) as poller,
    ):
        done = threading.Event()

        def change() -> None:
            poller.register(left, WRITE)
            poller.modify(left, READ)
            assert left in poller
            assert len(poller) == 1
            assert poller.get_registration(left).events == READ
            done.set()
            poller.wakeup()

        thread = threading.Thread(target=change)
        thread.start()
        ready: list[tuple[int, int]] = []
        deadline = time.monotonic() + 5.0
        while not ready and time.monotonic() < deadline:
            ready = poller.poll(5.0)
        thread.join()
        assert done.is_set()
        assert ready == [(left.fileno(), READ)]  # register and modify, both applied
        poller.unregister(left)
        assert poller.poll(0) == []


@pytest.mark.timeout(60)
def test_never_an_fd_after_unregister_returned_from_another_thread(poller_backend: str) -> None:
    pairs = [socket.socketpair() for _ in range(8)]
    try:
        for left, right in pairs:
            left.setblocking(False)
            right.send(b"x")
        with ChaosPoller(
            open_poller(plain_spec(poller_backend)), seed=5, rates=HIGH_RATES
        ) as poller:
            for left, _ in pairs:
                poller.register(left, READ)
            gone: set[int] = set()
            lock = threading.Lock()

            def unregister_all() -> None:
                for left, _ in pairs:
                    poller.unregister(left)
                    with lock:
                        gone.add(left.fileno())

            thread = threading.Thread(target=unregister_all)
            thread.start()
            for _ in range(200):
                with lock:
                    before = set(gone)
                reported = {fd for fd, _ in poller.poll(0)}
                assert not reported & before, f"reported after unregister(): {reported & before}"
            thread.join()
            assert poller.poll(0) == []
            assert len(poller) == 0
    finally:
        for left, right in pairs:
            left.close()
            right.close()
