"""Differential test: the three drivers agree on readiness, step by step.

Random sequences of register / modify / unregister / send / recv / fill /
drain / shutdown on a few socket pairs are applied to an epoll, a poll and a
select poller at once (opened directly, so this runs whatever driver
``POLLKIT_BACKEND`` forces).  After every step ``poll(0)`` on each must give
the same ``READ``/``WRITE`` readiness, and every call must succeed or fail
alike.  Readiness is the kernel's, identical for all three; what differs is
each driver's bookkeeping (oneshot emulation, masks, the registry), which
is exactly what this compares.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Callable, Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import READ, WRITE, drain, fill_send_buffer
from pollkit import EpollPoller, Poller, PollPoller, SelectPoller

PAIRS = 3
MASKS = [READ, WRITE, READ | WRITE]

Register = tuple[str, int, int, bool]  # ("register" | "modify", pair, mask, oneshot)
Simple = tuple[str, int]  # (action, pair)
Step = Register | Simple

steps: st.SearchStrategy[Step] = st.one_of(
    st.tuples(
        st.sampled_from(["register", "modify"]),
        st.integers(0, PAIRS - 1),
        st.sampled_from(MASKS),
        st.booleans(),
    ),
    st.tuples(
        st.sampled_from(
            ["unregister", "peer_send", "recv", "fill", "peer_drain", "peer_shutdown", "poll"]
        ),
        st.integers(0, PAIRS - 1),
    ),
)


@contextlib.contextmanager
def three_drivers() -> Iterator[list[Poller]]:
    pollers: list[Poller] = []
    try:
        for driver in (EpollPoller, PollPoller, SelectPoller):
            pollers.append(driver())
        yield pollers
    finally:
        for poller in pollers:
            poller.close()


@contextlib.contextmanager
def socket_pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    pairs: list[tuple[socket.socket, socket.socket]] = []
    try:
        for _ in range(PAIRS):
            left, right = socket.socketpair()
            pairs.append((left, right))
            left.setblocking(False)
            right.setblocking(False)
            # A small buffer keeps "fill" fast.
            left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        yield pairs
    finally:
        for left, right in pairs:
            left.close()
            right.close()


def outcome(call: Callable[[], object]) -> str:
    try:
        call()
    except Exception as exc:  # noqa: BLE001  # compared across drivers, whatever it is
        return type(exc).__name__
    return "ok"


def read_write(ready: set[tuple[int, int]]) -> set[tuple[int, int]]:
    return {(fd, mask & (READ | WRITE)) for fd, mask in ready}


def apply(
    step: Step,
    pollers: list[Poller],
    pairs: list[tuple[socket.socket, socket.socket]],
    shut: set[int],
) -> None:
    action, index = step[0], step[1]
    left, right = pairs[index]
    if action in ("register", "modify"):
        assert len(step) == 4
        mask, oneshot = step[2], step[3]
        outcomes = [
            outcome(functools.partial(getattr(p, action), left, mask, oneshot=oneshot))
            for p in pollers
        ]
        assert len(set(outcomes)) == 1, (
            f"{step}: {dict(zip(('epoll', 'poll', 'select'), outcomes, strict=False))}"
        )
    elif action == "unregister":
        outcomes = [outcome(functools.partial(p.unregister, left)) for p in pollers]
        assert len(set(outcomes)) == 1, f"{step}: {outcomes}"
    elif action == "peer_send":
        if index not in shut:
            with contextlib.suppress(BlockingIOError):
                right.send(b"data")
    elif action == "recv":
        with contextlib.suppress(BlockingIOError):
            left.recv(3)
    elif action == "fill":
        fill_send_buffer(left)
    elif action == "peer_drain":
        drain(right)
    elif action == "peer_shutdown" and index not in shut:
        right.shutdown(socket.SHUT_WR)
        shut.add(index)
    # "poll" does nothing more: the comparison below polls.


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(steps, min_size=1, max_size=25))
def test_drivers_agree_on_readiness(sequence: list[Step]) -> None:
    with three_drivers() as pollers, socket_pairs() as pairs:
        shut: set[int] = set()
        for number, step in enumerate(sequence):
            apply(step, pollers, pairs, shut)
            full = [set(poller.poll(0)) for poller in pollers]
            where = f"after step {number} {step}: " + ", ".join(
                f"{p.name}={r}" for p, r in zip(pollers, full, strict=False)
            )
            results = [read_write(ready) for ready in full]
            assert results[0] == results[1] == results[2], where
            # epoll and poll pass the kernel's bits through: even HANGUP agrees.
            assert full[0] == full[1], where
            lengths = {len(poller) for poller in pollers}
            assert len(lengths) == 1, f"after step {number} {step}: registry sizes {lengths}"
