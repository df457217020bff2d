"""``PollerSelector`` against the :mod:`selectors` documentation, on every driver.

Each test states one sentence of the ``selectors`` docs (or of the stdlib's
behaviour where the docs are silent) and checks it on the driver the
``poller_backend`` fixture names.  Where the stdlib's own
``DefaultSelector`` can show the expected answer, the test asks it too, so the
expectation is the stdlib's, not ours.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from selectors import EVENT_READ, EVENT_WRITE

import pytest

import pollkit
from conftest import CLOCK_EPSILON, PROMPT, SocketPair, drain, fill_send_buffer
from pollkit import BackendUnavailableError, FdOutOfRangeError, PollerClosedError
from pollkit._backends import parse_backend
from pollkit.compat import PollerSelector

# Each test asserts one poll() call's exact result, which chaos: varies on purpose.
pytestmark = pytest.mark.pollkit_exact

AnySelector = PollerSelector | selectors.BaseSelector


@pytest.fixture
def selector(poller_backend: str) -> Iterator[PollerSelector]:
    with PollerSelector(poller_backend) as sel:
        yield sel


@pytest.fixture
def stdlib_selector() -> Iterator[selectors.BaseSelector]:
    with selectors.DefaultSelector() as sel:
        yield sel


class _FilenoObject:
    """An object whose ``fileno()`` returns whatever it was given."""

    def __init__(self, fileno: object) -> None:
        self._fileno = fileno

    def fileno(self) -> object:
        return self._fileno


def _outcome(action: Callable[[], object]) -> type[BaseException] | None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001  # the type is what is compared
        return type(exc)
    return None


# -- the backend argument -------------------------------------------------------


def test_selector_uses_the_driver_named(selector: PollerSelector, poller_backend: str) -> None:
    assert selector.backend == poller_backend
    assert selector.poller.name == poller_backend
    assert poller_backend in repr(selector)


def test_selector_without_argument_reads_the_environment(
    poller_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLLKIT_BACKEND", poller_backend)
    with PollerSelector() as sel:
        assert sel.backend == poller_backend


def test_selector_adopts_and_closes_a_poller(poller_backend: str) -> None:
    poller = pollkit.open_poller(poller_backend)
    with PollerSelector(poller) as sel:
        assert sel.poller is poller
    assert poller.closed


def test_unknown_backend_raises_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailableError, match="no-such-driver"):
        PollerSelector("no-such-driver")


# -- register ------------------------------------------------------------------------


def test_register_returns_a_key_naming_fileobj_fd_events_and_data(
    selector: PollerSelector, socketpair: SocketPair
) -> None:
    left, _ = socketpair
    data = object()
    key = selector.register(left, EVENT_READ, data)
    assert isinstance(key, selectors.SelectorKey)
    assert key.fileobj is left
    assert key.fd == left.fileno()
    assert key.events == EVENT_READ
    assert key.data is data
    assert selector.get_key(left) is key


def test_register_accepts_an_int_fd(selector: PollerSelector, socketpair: SocketPair) -> None:
    left, right = socketpair
    key = selector.register(left.fileno(), EVENT_READ)
    assert key.fileobj == left.fileno()
    assert key.data is None
    right.send(b"x")
    assert selector.select(PROMPT) == [(key, EVENT_READ)]


@pytest.mark.parametrize("events", [0, 4, EVENT_READ | 4, -1, 1 << 20])
def test_register_invalid_events_raise_value_error(
    selector: PollerSelector,
    stdlib_selector: selectors.BaseSelector,
    socketpair: SocketPair,
    events: int,
) -> None:
    left, _ = socketpair
    with pytest.raises(ValueError, match="Invalid events"):
        stdlib_selector.register(left, events)
    with pytest.raises(ValueError, match="Invalid events"):
        selector.register(left, events)
    assert len(selector.get_map() or {}) == 0


@pytest.mark.parametrize(
    "fileobj",
    [object(), -1, _FilenoObject(-5), _FilenoObject("three"), _FilenoObject(None)],
    ids=["no-fileno", "negative-int", "negative-fileno", "str-fileno", "none-fileno"],
)
def test_register_invalid_file_object_raises_value_error(
    selector: PollerSelector, stdlib_selector: selectors.BaseSelector, fileobj: object
) -> None:
    with pytest.raises(ValueError, match="Invalid file"):
        stdlib_selector.register(fileobj, EVENT_READ)  # type: ignore[arg-type]  # invalid on purpose
    with pytest.raises(ValueError, match="Invalid file"):
        selector.register(fileobj, EVENT_READ)  # type: ignore[arg-type]  # invalid on purpose


def test_register_of_a_closed_socket_raises_value_error(selector: PollerSelector) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.close()  # fileno() is now -1
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        selector.register(sock, EVENT_READ)


def test_register_twice_raises_key_error(
    selector: PollerSelector, stdlib_selector: selectors.BaseSelector, socketpair: SocketPair
) -> None:
    left, _ = socketpair
    for sel in (stdlib_selector, selector):
        first = sel.register(left, EVENT_READ)
        with pytest.raises(KeyError, match="already registered"):
            sel.register(left, EVENT_WRITE)
        # The same fd through another object is the same registration.
        with pytest.raises(KeyError, match="already registered"):
            sel.register(left.fileno(), EVENT_READ)
        assert sel.get_key(left) is first


def test_register_of_a_closed_fd_raises_oserror_and_registers_nothing(
    selector: PollerSelector, stdlib_selector: selectors.BaseSelector
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        fd = sock.fileno()
    for sel in (stdlib_selector, selector):
        with pytest.raises(OSError, match=r"\[Errno 9\]") as caught:
            sel.register(fd, EVENT_READ)
        assert caught.value.errno == errno.EBADF
        assert len(sel.get_map() or {}) == 0


# -- unregister ---------------------------------------------------------------------------


def test_unregister_returns_the_key_and_forgets_the_fileobj(
    selector: PollerSelector, socketpair: SocketPair
) -> None:
    left, right = socketpair
    key = selector.register(left, EVENT_READ, "data")
    assert selector.unregister(left) is key
    assert left not in (selector.get_map() or {})
    with pytest.raises(KeyError, match="is not registered"):
        selector.get_key(left)
    right.send(b"x")
    assert selector.select(0) == []
    assert len(selector.poller) == 0


def test_unregister_of_an_unknown_fileobj_raises_key_error(
    selector: PollerSelector, stdlib_selector: selectors.BaseSelector, socketpair: SocketPair
) -> None:
    left, _ = socketpair
    for sel in (stdlib_selector, selector):
        with pytest.raises(KeyError, match="is not registered"):
            sel.unregister(left)
        sel.register(left, EVENT_READ)
        sel.unregister(left)
        with pytest.raises(KeyError, match="is not registered"):
            sel.unregister(left)


def test_unregister_of_an_invalid_fileobj_raises_value_error(
    selector: PollerSelector, stdlib_selector: selectors.BaseSelector
) -> None:
    for sel in (stdlib_selector, selector):
        with pytest.raises(ValueError, match="Invalid file object"):
            sel.unregister(object())  # type: ignore[arg-type]  # invalid on purpose


def test_unregister_by_fd_of_a_fileobj_registered_by_object(
    selector: PollerSelector, socketpair: SocketPair
) -> None:
    left, _ = socketpair
    key = selector.register(left, EVENT_READ)
    assert selector.unregister(left.fileno()) is key


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_unregister_of_a_fileobj_closed_while_registered(
    selector: PollerSelector, stdlib_selector: selectors.BaseSelector
) -> None:
    # "A file object shall be unregistered prior to being closed" -- but the
    # stdlib finds a closed object by identity, so a late unregister works.
    for sel in (stdlib_selector, selector):
        left, right = socket.socketpair()
        with left, right:
            key = sel.register(left, EVENT_READ)
            left.close()
            assert sel.unregister(left) is key
            assert len(sel.get_map() or {}) == 0


# -- modify -----------------------------------------------------------------------------------


def test_modify_changes_events_and_data(selector: PollerSelector, socketpair: SocketPair) -> None:
    left, _ = socketpair  # writable, nothing to read
    selector.register(left, EVENT_READ, "old")
    assert selector.select(0) == []
    key = selector.modify(left, EVENT_WRITE, "new")
    assert (key.fileobj, key.fd, key.events, key.data) == (left, left.fileno(), EVENT_WRITE, "new")
    assert selector.get_key(left) is key
    assert selector.select(PROMPT) == [(key, EVENT_WRITE)]


def test_modify_of_data_only_keeps_events(selector: PollerSelector, socketpair: SocketPair) -> None:
    left, right = socketpair
    old = selector.register(left, EVENT_READ, "old")
    key = selector.modify(left, EVENT_READ, "new")
    assert key is not old
    assert (key.events, key.data) == (EVENT_READ, "new")
    right.send(b"x")
    assert selector.select(PROMPT) == [(key, EVENT_READ)]


def test_modify_with_nothing_changed_returns_the_same_key(
    selector: PollerSelector, socketpair: SocketPair
) -> None:
    left, _ = socketpair
    data = ("reader", None)
    key = selector.register(left, EVENT_READ, data)
    assert selector.modify(left, EVENT_READ, data) is key


def test_modify_with_the_same_events_makes_no_kernel_call(
    selector: PollerSelector, socketpair: SocketPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # asyncio calls modify() with unchanged events for every new callback.
    left, _ = socketpair
    selector.register(left, EVENT_READ, "old")

    def no_kernel_call(*args: object, **kwargs: object) -> None:
        raise AssertionError("modify() with unchanged events reached the driver")

    monkeypatch.setattr(selector.poller, "modify", no_kernel_call)
    assert selector.modify(left, EVENT_READ, "new").data == "new"


def test_modify_of_an_unknown_fileobj_raises_key_error(
    selector: PollerSelector, stdlib_selector: selectors.BaseSelector, socketpair: SocketPair
) -> None:
    left, _ = socketpair
    for sel in (stdlib_selector, selector):
        with pytest.raises(KeyError, match="is not registered"):
            sel.modify(left, EVENT_READ)


@pytest.mark.parametrize("events", [0, 4, -1])
def test_modify_with_invalid_events_raises_value_error_and_keeps_the_key(
    selector: PollerSelector, socketpair: SocketPair, events: int
) -> None:
    left, right = socketpair
    key = selector.register(left, EVENT_READ)
    with pytest.raises(ValueError, match="Invalid events"):
        selector.modify(left, events)
    assert selector.get_key(left) is key
    right.send(b"x")
    assert selector.select(PROMPT) == [(key, EVENT_READ)]


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_modify_of_a_closed_fd_raises_oserror_and_unregisters(
    selector: PollerSelector, stdlib_selector: selectors.BaseSelector
) -> None:
    for sel in (stdlib_selector, selector):
        left, right = socket.socketpair()
        with left, right:
            sel.register(left, EVENT_READ)
            fd = left.fileno()
            left.close()
            with pytest.raises(OSError, match=r"\[Errno 9\]") as caught:
                sel.modify(fd, EVENT_WRITE)
            assert caught.value.errno == errno.EBADF
            assert len(sel.get_map() or {}) == 0


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_modify_after_a_closed_fd_was_reported_raises_oserror_and_unregisters(
    selector: PollerSelector,
) -> None:
    # poll and select report the closed fd once and drop it; epoll never
    # reports it.  Either way modify() answers as epoll does for a closed fd.
    left, right = socket.socketpair()
    with left, right:
        selector.register(left, EVENT_READ)
        fd = left.fileno()
        left.close()
        selector.select(0)
        with pytest.raises(OSError, match=r"\[Errno 9\]") as caught:
            selector.modify(fd, EVENT_WRITE)
        assert caught.value.errno == errno.EBADF
        assert len(selector.get_map() or {}) == 0
        assert len(selector.poller) == 0


# -- select -----------------------------------------------------------------------------------


def test_select_reports_each_ready_fileobj_with_its_key(
    selector: PollerSelector, make_socketpair: Callable[[], SocketPair]
) -> None:
    pairs = [make_socketpair() for _ in range(20)]
    keys = [selector.register(left, EVENT_READ, index) for index, (left, _) in enumerate(pairs)]
    for _, right in pairs[::2]:
        right.send(b"x")
    ready = selector.select(PROMPT)
    assert sorted(key.data for key, _ in ready) == list(range(0, 20, 2))
    for key, events in ready:
        assert key is keys[key.data]
        assert events == EVENT_READ


def test_select_reports_only_registered_events(
    selector: PollerSelector, socketpair: SocketPair
) -> None:
    left, right = socketpair
    key = selector.register(left, EVENT_READ)
    assert selector.select(0) == []  # writable, but WRITE was not asked for
    right.send(b"x")
    assert selector.select(PROMPT) == [(key, EVENT_READ)]
    key = selector.modify(left, EVENT_READ | EVENT_WRITE)
    assert selector.select(PROMPT) == [(key, EVENT_READ | EVENT_WRITE)]


def test_select_is_level_triggered(selector: PollerSelector, socketpair: SocketPair) -> None:
    left, right = socketpair
    key = selector.register(left, EVENT_READ)
    right.send(b"ping")
    for _ in range(3):
        assert selector.select(PROMPT) == [(key, EVENT_READ)]
    assert drain(left) == 4
    assert selector.select(0) == []


def test_select_write_readiness_follows_the_send_buffer(
    selector: PollerSelector, socketpair: SocketPair
) -> None:
    left, right = socketpair
    fill_send_buffer(left)
    key = selector.register(left, EVENT_WRITE)
    assert selector.select(0) == []
    drain(right)
    assert selector.select(PROMPT) == [(key, EVENT_WRITE)]


@pytest.mark.parametrize("timeout", [0, 0.0, -1, -0.5])
def test_select_with_timeout_at_most_zero_does_not_block(
    selector: PollerSelector, socketpair: SocketPair, timeout: float
) -> None:
    left, right = socketpair
    key = selector.register(left, EVENT_READ)
    assert selector.select(timeout) == []
    right.send(b"x")
    assert selector.select(timeout) == [(key, EVENT_READ)]


def test_select_with_nothing_registered(selector: PollerSelector) -> None:
    assert selector.select(0) == []
    assert selector.select(0.001) == []


def test_select_with_positive_timeout_waits_at_least_that_long(
    selector: PollerSelector, socketpair: SocketPair
) -> None:
    left, _ = socketpair
    selector.register(left, EVENT_READ)
    for timeout in (0.0001, 0.02):
        started = time.monotonic()
        assert selector.select(timeout) == []
        assert time.monotonic() - started >= timeout - CLOCK_EPSILON


def test_select_without_timeout_blocks_until_ready(
    selector: PollerSelector, socketpair: SocketPair
) -> None:
    left, right = socketpair
    key = selector.register(left, EVENT_READ)
    sender = threading.Thread(target=right.send, args=(b"x",))
    sender.start()
    try:
        assert selector.select(None) == [(key, EVENT_READ)]
    finally:
        sender.join(PROMPT)


def test_select_returns_the_same_key_objects_as_get_key(
    selector: PollerSelector, socketpair: SocketPair
) -> None:
    left, right = socketpair
    selector.register(left, EVENT_READ)
    selector.modify(left, EVENT_READ, "new data")
    right.send(b"x")
    [(key, _)] = selector.select(PROMPT)
    assert key is selector.get_key(left)


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_peer_close_wakes_read_interest_as_the_stdlib_does(
    selector: PollerSelector, stdlib_selector: selectors.BaseSelector
) -> None:
    for events in (EVENT_READ, EVENT_READ | EVENT_WRITE):
        left, right = socket.socketpair()
        with left:
            right.close()
            expected = [(k.events, e) for k, e in _select_once(stdlib_selector, left, events)]
            got = [(k.events, e) for k, e in _select_once(selector, left, events)]
            assert got == expected == [(events, events)]


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_error_wakes_both_directions_as_the_stdlib_does(
    selector: PollerSelector, stdlib_selector: selectors.BaseSelector
) -> None:
    # A pipe's write end whose reader is gone reports ERROR: a read interest
    # wakes too (the read fails), as the stdlib's EpollSelector maps it.
    for events in (EVENT_READ, EVENT_WRITE, EVENT_READ | EVENT_WRITE):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            expected = [(k.events, e) for k, e in _select_once(stdlib_selector, write_end, events)]
            got = [(k.events, e) for k, e in _select_once(selector, write_end, events)]
        finally:
            os.close(write_end)
        assert got == expected == [(events, events)]


def _select_once(
    sel: AnySelector, fileobj: socket.socket | int, events: int
) -> list[tuple[selectors.SelectorKey, int]]:
    sel.register(fileobj, events)
    try:
        return sel.select(PROMPT)
    finally:
        sel.unregister(fileobj)


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_fd_closed_while_registered_never_stops_select(selector: PollerSelector) -> None:
    """A closed fd is reported ready for what it was registered for, at most once.

    poll and select learn of the close (``POLLNVAL``, ``EBADF``) and say so
    once; epoll forgets the fd silently, as the stdlib's epoll selector does.
    Either way ``select()`` neither raises nor spins, other fds are still
    reported, and ``unregister()`` of the closed object succeeds.
    """
    doomed, doomed_peer = socket.socketpair()
    live, live_peer = socket.socketpair()
    with doomed, doomed_peer, live, live_peer:
        doomed_key = selector.register(doomed, EVENT_READ | EVENT_WRITE)
        live_key = selector.register(live, EVENT_READ)
        live_peer.send(b"x")
        doomed.close()
        first = selector.select(PROMPT)
        second = selector.select(0)
        if parse_backend(selector.backend).driver == "epoll":
            assert first == [(live_key, EVENT_READ)]
        else:
            assert sorted(first, key=lambda item: item[0].fd) == sorted(
                [(doomed_key, EVENT_READ | EVENT_WRITE), (live_key, EVENT_READ)],
                key=lambda item: item[0].fd,
            )
        assert second == [(live_key, EVENT_READ)]
        assert selector.unregister(doomed) is doomed_key
        assert selector.select(0) == [(live_key, EVENT_READ)]


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_fd_closed_while_registered_with_one_event_reports_that_event(
    selector: PollerSelector,
) -> None:
    left, right = socket.socketpair()
    with left, right:
        key = selector.register(left, EVENT_WRITE)
        left.close()
        # poll and select learn of the close at once, whatever the timeout.
        reported = selector.select(0)
        assert reported in ([], [(key, EVENT_WRITE)])
        assert selector.unregister(left) is key


@pytest.mark.pollkit_backends("select")
def test_select_driver_refuses_fd_beyond_fd_setsize_at_register(
    selector: PollerSelector, make_high_socketpair: Callable[[int], SocketPair]
) -> None:
    high, _ = make_high_socketpair(pollkit.FD_SETSIZE)
    with pytest.raises(FdOutOfRangeError, match="FD_SETSIZE"):
        selector.register(high, EVENT_READ)
    assert len(selector.get_map() or {}) == 0
    assert selector.select(0) == []


@pytest.mark.pollkit_backends("epoll", "poll")
def test_fd_beyond_fd_setsize_works_on_epoll_and_poll(
    selector: PollerSelector, make_high_socketpair: Callable[[int], SocketPair]
) -> None:
    high, peer = make_high_socketpair(pollkit.FD_SETSIZE)
    key = selector.register(high, EVENT_READ)
    peer.send(b"x")
    assert selector.select(PROMPT) == [(key, EVENT_READ)]


# -- get_key and get_map ------------------------------------------------------------------------


def test_get_key_of_an_unknown_fileobj_raises_key_error(
    selector: PollerSelector, stdlib_selector: selectors.BaseSelector, socketpair: SocketPair
) -> None:
    left, _ = socketpair
    for sel in (stdlib_selector, selector):
        with pytest.raises(KeyError, match="is not registered"):
            sel.get_key(left)


def test_get_map_is_a_live_read_only_mapping(
    selector: PollerSelector, socketpair: SocketPair
) -> None:
    left, right = socketpair
    mapping = selector.get_map()
    assert isinstance(mapping, Mapping)
    assert len(mapping) == 0
    left_key = selector.register(left, EVENT_READ)
    right_key = selector.register(right.fileno(), EVENT_WRITE)
    assert len(mapping) == 2
    assert set(mapping) == {left.fileno(), right.fileno()}
    assert mapping[left] is left_key
    assert mapping[left.fileno()] is left_key
    assert mapping[right] is right_key
    assert left in mapping
    assert mapping.get(99999) is None
    with pytest.raises(KeyError, match="is not registered"):
        mapping[99999]
    assert not hasattr(mapping, "__setitem__")
    selector.unregister(left)
    assert left not in mapping
    assert dict(mapping.items()) == {right.fileno(): right_key}


def test_get_map_and_selectors_agree(
    selector: PollerSelector, stdlib_selector: selectors.BaseSelector, socketpair: SocketPair
) -> None:
    left, right = socketpair
    for sel in (stdlib_selector, selector):
        sel.register(left, EVENT_READ, "l")
        sel.register(right, EVENT_WRITE, "r")
        sel.modify(right, EVENT_READ | EVENT_WRITE, "r2")
    ours, theirs = selector.get_map(), stdlib_selector.get_map()
    assert ours is not None
    assert theirs is not None
    assert {fd: tuple(key) for fd, key in ours.items()} == {
        fd: tuple(key) for fd, key in theirs.items()
    }


# -- close and the context manager --------------------------------------------------------------


def test_close_is_idempotent_and_closes_the_driver(poller_backend: str) -> None:
    sel = PollerSelector(poller_backend)
    sel.close()
    sel.close()
    assert sel.poller.closed
    assert sel.get_map() is None
    assert "closed" in repr(sel)


def _closed_outcomes(sel: AnySelector, fileobj: socket.socket) -> list[type[BaseException] | None]:
    """What each method does once ``sel``, with ``fileobj`` registered, is closed."""
    sel.register(fileobj, EVENT_READ)
    sel.close()
    return [
        _outcome(lambda: sel.get_key(fileobj)),
        _outcome(lambda: sel.register(fileobj, EVENT_READ)),
        _outcome(lambda: sel.modify(fileobj, EVENT_WRITE)),
        _outcome(lambda: sel.unregister(fileobj)),
        _outcome(lambda: sel.select(0)),
    ]


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_a_closed_selector_answers_as_the_stdlibs_does(
    poller_backend: str, socketpair: SocketPair
) -> None:
    left, _ = socketpair
    stdlib = _closed_outcomes(selectors.DefaultSelector(), left)
    ours = _closed_outcomes(PollerSelector(poller_backend), left)
    assert stdlib == [RuntimeError, ValueError, KeyError, KeyError, ValueError]
    for theirs, mine in zip(stdlib, ours, strict=False):
        assert mine is not None
        assert theirs is not None
        assert issubclass(mine, theirs)
    # Closed pollers say so by name (PollerClosedError is a ValueError).
    assert ours[1] is PollerClosedError
    assert ours[4] is PollerClosedError


def test_context_manager_closes(poller_backend: str, socketpair: SocketPair) -> None:
    left, _ = socketpair
    with PollerSelector(poller_backend) as sel:
        sel.register(left, EVENT_READ)
    assert sel.get_map() is None
    assert sel.poller.closed


def test_fileno_where_the_driver_has_a_kernel_object(selector: PollerSelector) -> None:
    # As in the stdlib: EpollSelector has fileno(), PollSelector and SelectSelector do not.
    if "fileno" in selector.poller.features:
        assert selector.fileno() == selector.poller.fileno() >= 0  # type: ignore[attr-defined]  # present exactly on kernel-fd drivers
    else:
        assert not hasattr(selector, "fileno")
