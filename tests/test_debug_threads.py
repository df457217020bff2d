"""debug: check 5, a poller used from two threads.

A poller serves one thread's loop.  ``poll()`` entered while another thread
is in it draws a warning (the poll driver itself refuses with CPython's
``RuntimeError``).  ``register()``/``modify()`` from another thread while
``poll()`` blocks, on a driver that sees the change only at its next call
(poll, select), with no ``wakeup()`` after it, draws one when that
``poll()`` returns.  Register, then ``wakeup()``: silence.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Callable

import pytest

from conftest import PROMPT, READ, WRITE, SocketPair
from debug_helpers import Delegating, PollkitDebugWarning, next_line, warning_about
from pollkit import Poller, open_poller
from pollkit._backends import parse_backend
from pollkit._debug import DebugPoller

#: Long enough past the debug wrapper's grace period for a change to count as unseen.
UNSEEN_WAIT = 0.6


class Announcing(Delegating):
    """A driver that sets :attr:`entered` when ``poll()`` is called: to know a thread is in it."""

    def __init__(self, inner: Poller) -> None:
        super().__init__(inner)
        self.entered = threading.Event()

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        self.entered.set()
        return self.inner.poll(timeout, max_events)


def _announcing(backend: str) -> tuple[DebugPoller, Announcing]:
    inner = Announcing(open_poller(parse_backend(backend).driver))
    return DebugPoller(inner), inner


@pytest.mark.timeout(30)
def test_poll_from_two_threads_is_named(poller_backend: str) -> None:
    poller, inner = _announcing(poller_backend)
    refused: list[RuntimeError] = []

    def loop() -> None:
        try:
            poller.poll(PROMPT)
        except RuntimeError as exc:  # the poll driver refuses the second of two calls
            refused.append(exc)

    with poller:
        thread = threading.Thread(target=loop, name="loop", daemon=True)
        thread.start()
        assert inner.entered.wait(PROMPT)
        match = "entered from thread 'MainThread' while thread 'loop' is in poll"

        def second_poll() -> None:
            try:
                poller.poll(0)
            except RuntimeError as exc:
                refused.append(exc)

        with pytest.warns(PollkitDebugWarning, match=match):
            second_poll()
        poller.wakeup()
        thread.join(PROMPT)
    assert not thread.is_alive()
    if poller.name != "debug:poll":
        assert not refused
    assert all("concurrent poll" in str(exc) for exc in refused)


@pytest.mark.parametrize("operation", ["register", "modify"])
@pytest.mark.timeout(30)
def test_change_from_another_thread_without_wakeup_is_named(
    poller_backend: str, make_socketpair: Callable[[], SocketPair], operation: str
) -> None:
    poller, inner = _announcing(poller_backend)
    ours, _ = make_socketpair()
    lines: list[int] = []

    def change() -> None:
        assert inner.entered.wait(PROMPT)
        if operation == "register":
            lines.append(next_line())
            poller.register(ours, READ)
        else:
            lines.append(next_line())
            poller.modify(ours, READ)

    with poller:
        if operation == "modify":
            poller.register(ours, WRITE)
            assert poller.poll(0) == [(ours.fileno(), WRITE)]
            poller.modify(ours, READ)  # nothing to read: the poll below waits
            inner.entered.clear()
        thread = threading.Thread(target=change, name="registrar", daemon=True)
        thread.start()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert poller.poll(UNSEEN_WAIT) == []
        thread.join(PROMPT)
        assert not thread.is_alive()
        poller.unregister(ours)
    messages = [str(w.message) for w in seen if w.category is PollkitDebugWarning]
    if poller.name == "debug:epoll":
        assert messages == []  # epoll sees another thread's change at once
        return
    assert len(messages) == 1, messages
    done = "registered" if operation == "register" else "modified"
    what = rf"was {done} from thread 'registrar' while thread 'MainThread' was blocked in poll.*"
    assert re.search(warning_about(ours.fileno(), what + r"call wakeup\(\)", lines[0]), messages[0])


@pytest.mark.timeout(30)
def test_register_then_wakeup_draws_nothing(
    poller_backend: str, make_socketpair: Callable[[], SocketPair]
) -> None:
    poller, inner = _announcing(poller_backend)
    ours, peer = make_socketpair()
    peer.send(b"x")

    def change() -> None:
        assert inner.entered.wait(PROMPT)
        poller.register(ours, READ)
        poller.wakeup()

    with poller:
        thread = threading.Thread(target=change, name="registrar", daemon=True)
        thread.start()
        # Woken at once: empty (poll, select: the change is seen next time) or
        # with the fd (epoll sees it at once).
        assert poller.poll(PROMPT) in ([], [(ours.fileno(), READ)])
        thread.join(PROMPT)
        assert poller.poll(PROMPT) == [(ours.fileno(), READ)]
        poller.unregister(ours)
    assert not thread.is_alive()
