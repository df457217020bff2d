"""debug: check 4, closing a poller that still watches fds, or never closing it.

``close()`` with fds still registered draws one warning listing each fd with
its ``register()`` site; ``open_registrations()`` gives the same list, for a
fixture's teardown.  A debug poller garbage-collected without ``close()``
draws a ``ResourceWarning``, as an unclosed file does.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from conftest import READ, WRITE, SocketPair
from debug_helpers import PollkitDebugWarning, debug_poller, debug_spec, next_line
from pollkit import PollerClosedError, open_poller
from pollkit._debug import DebugPoller


@pytest.mark.timeout(30)
def test_close_lists_each_fd_still_registered(
    poller_backend: str, make_socketpair: Callable[[], SocketPair]
) -> None:
    first, _ = make_socketpair()
    second, _ = make_socketpair()
    poller = open_poller(debug_spec(poller_backend))
    assert isinstance(poller, DebugPoller)
    first_line = next_line()
    poller.register(first, READ)
    second_line = next_line()
    poller.register(second, READ | WRITE)
    assert [
        re.sub(r" registered at .*:", " at :", line) for line in poller.open_registrations()
    ] == [
        f"fd {first.fileno()} (READ) at :{first_line}",
        f"fd {second.fileno()} (READ|WRITE) at :{second_line}",
    ]
    with pytest.warns(PollkitDebugWarning, match="still watches 2 fd") as seen:
        poller.close()
    message = str(seen[0].message)
    for fd, line in ((first.fileno(), first_line), (second.fileno(), second_line)):
        assert re.search(rf"\bfd {fd} .*test_debug_close\.py:{line}\b", message)
    assert poller.closed
    with pytest.raises(PollerClosedError):
        poller.register(first, READ)
    poller.close()  # idempotent, and silent the second time


@pytest.mark.timeout(30)
def test_close_after_unregistering_draws_nothing(
    poller_backend: str, make_socketpair: Callable[[], SocketPair]
) -> None:
    ours, _ = make_socketpair()
    with debug_poller(poller_backend) as poller:
        assert isinstance(poller, DebugPoller)
        poller.register(ours, READ)
        poller.unregister(ours)
        assert poller.open_registrations() == []
    assert poller.closed


@pytest.mark.timeout(30)
def test_unclosed_poller_is_a_resource_warning(poller_backend: str) -> None:
    poller = open_poller(debug_spec(poller_backend))
    with pytest.warns(ResourceWarning, match="unclosed poller <DebugPoller"):
        del poller  # the last reference (no cycle holds it): finalized at once


@pytest.mark.timeout(30)
def test_closing_every_fd_then_the_poller_draws_nothing(
    poller_backend: str, make_socketpair: Callable[[], SocketPair]
) -> None:
    """A shutdown that closes the connections, then the poller, harms nothing."""
    poller = open_poller(debug_spec(poller_backend))
    assert isinstance(poller, DebugPoller)
    pairs = [make_socketpair() for _ in range(3)]
    for ours, _ in pairs:
        poller.register(ours, READ)
    for ours, _ in pairs:
        ours.close()
    assert poller.open_registrations() == []
    poller.close()


@pytest.mark.timeout(30)
def test_close_lists_a_bounded_number_of_fds(
    poller_backend: str, make_socketpair: Callable[[], SocketPair]
) -> None:
    pairs = [make_socketpair() for _ in range(25)]
    poller = open_poller(debug_spec(poller_backend))
    for ours, _ in pairs:
        poller.register(ours, READ)
    with pytest.warns(PollkitDebugWarning, match=r"still watches 25 fd\(s\): .*; and 5 more;"):
        poller.close()
