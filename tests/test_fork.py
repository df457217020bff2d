"""Contract 12: a poller after ``fork()``.

In the child, every method of the parent's poller except ``close()`` raises
``PollerForkedError``; ``close()`` in the child never changes what the
parent's poller watches.
"""

from __future__ import annotations

import functools
import json
import os
import select
import time
from collections.abc import Callable

import pytest

from conftest import PROMPT, READ, WRITE, SocketPair, masks_by_fd
from pollkit import Poller, PollerClosedError, open_poller

ChildReport = dict[str, str]


def run_in_child(body: Callable[[], ChildReport]) -> ChildReport:
    """Run ``body`` in a forked child and return what it reported.

    The child reports through a pipe as JSON and leaves with ``os._exit`` so
    that none of pytest's clean-up runs twice.  The parent waits at most
    ``PROMPT`` seconds for the report and for the child's exit.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            os.close(read_fd)
            try:
                report = body()
            except BaseException as exc:  # noqa: BLE001  # anything must reach the parent
                report = {"child crashed": repr(exc)}
            os.write(write_fd, json.dumps(report).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + PROMPT
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([read_fd], [], [], deadline - time.monotonic())
            if not readable:
                continue
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        else:
            raise AssertionError("the child did not report in time")
    finally:
        os.close(read_fd)
        _reap(pid)
    received: ChildReport = json.loads(b"".join(chunks))
    return received


def _reap(pid: int) -> None:
    deadline = time.monotonic() + PROMPT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.WIFEXITED(status)
            assert os.WEXITSTATUS(status) == 0
            return
        time.sleep(0.01)  # no event to await for a child's exit without SIGCHLD handling
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not exit in time")


CALLS: dict[str, Callable[[Poller, int], object]] = {
    "register": lambda p, fd: p.register(fd, READ),
    "modify": lambda p, fd: p.modify(fd, WRITE),
    "unregister": lambda p, fd: p.unregister(fd),
    "poll(0)": lambda p, fd: p.poll(0),
    "poll(None)": lambda p, fd: p.poll(None),
    "poll(max_events)": lambda p, fd: p.poll(0, max_events=1),
    "wakeup": lambda p, fd: p.wakeup(),
    "fileno": lambda p, fd: p.fileno(),
    "len": lambda p, fd: len(p),
    "contains": lambda p, fd: fd in p,
    "enter": lambda p, fd: p.__enter__(),
    "get_registration": lambda p, fd: p.get_registration(fd),
}


def _outcome(call: Callable[[], object]) -> str:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001  # the child reports whatever happened
        return type(exc).__name__
    return "returned"


@pytest.mark.timeout(30)
@pytest.mark.pollkit_exact  # asserts one poll() call's exact result
def test_child_can_only_close_the_parents_poller(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    poller.register(left, READ)

    def child() -> ChildReport:
        report = {
            name: _outcome(functools.partial(call, poller, left.fileno()))
            for name, call in CALLS.items()
        }
        report["close"] = _outcome(poller.close)
        report["close again"] = _outcome(poller.close)
        report["closed"] = str(poller.closed)
        return report

    report = run_in_child(child)
    expected = dict.fromkeys(CALLS, "PollerForkedError")
    expected.update({"close": "returned", "close again": "returned", "closed": "True"})
    assert report == expected
    # The parent's poller is untouched.
    assert not poller.closed
    right.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}


@pytest.mark.pollkit_exact  # asserts one poll() call's exact result
@pytest.mark.timeout(30)
def test_child_close_does_not_change_what_the_parent_watches(
    poller: Poller, make_socketpair: Callable[[], SocketPair]
) -> None:
    watched, watched_peer = make_socketpair()
    once, once_peer = make_socketpair()
    poller.register(watched, READ)
    poller.register(once, READ, oneshot=True)

    def child() -> ChildReport:
        poller.close()
        # A child that keeps going: its own traffic must not reach the parent.
        watched_peer.send(b"from the child")
        watched.recv(65536)
        return {"closed": str(poller.closed)}

    assert run_in_child(child) == {"closed": "True"}
    assert len(poller) == 2
    assert poller.poll(0) == []
    watched_peer.send(b"x")
    once_peer.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {watched.fileno(): READ, once.fileno(): READ}
    assert masks_by_fd(poller.poll(1.0)) == {watched.fileno(): READ}
    poller.modify(once, READ, oneshot=True)
    assert masks_by_fd(poller.poll(1.0)) == {watched.fileno(): READ, once.fileno(): READ}
    poller.wakeup()
    poller.poll(1.0)
    assert masks_by_fd(poller.poll(1.0)) == {watched.fileno(): READ}


@pytest.mark.timeout(30)
def test_parent_wakeup_still_works_after_the_child_closed(poller: Poller) -> None:
    assert run_in_child(lambda: {"close": _outcome(poller.close)}) == {"close": "returned"}
    poller.wakeup()
    started = time.monotonic()
    assert poller.poll(None) == []
    assert time.monotonic() - started < PROMPT


@pytest.mark.pollkit_exact  # asserts one poll() call's exact result
@pytest.mark.timeout(30)
def test_child_can_open_its_own_poller(
    poller: Poller, poller_backend: str, socketpair: SocketPair
) -> None:
    left, right = socketpair
    poller.register(left, READ)

    def child() -> ChildReport:
        with open_poller(poller_backend) as own:
            own.register(left, READ)
            right.send(b"x")
            ready = own.poll(PROMPT)
            own.unregister(left)
        return {"ready": repr(ready), "parent's": _outcome(lambda: poller.poll(0))}

    report = run_in_child(child)
    assert report == {"ready": repr([(left.fileno(), READ)]), "parent's": "PollerForkedError"}
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}


@pytest.mark.timeout(30)
def test_poller_closed_before_fork_stays_closed_in_the_child(
    poller_factory: Callable[[], Poller],
) -> None:
    poller = poller_factory()
    poller.close()
    report = run_in_child(lambda: {"poll": _outcome(lambda: poller.poll(0))})
    assert report == {"poll": "PollerClosedError"}
    with pytest.raises(PollerClosedError):
        poller.poll(0)
