"""The ``debug:`` wrapper as a :class:`Poller`: it changes nothing.

Its name is the whole spec and its features the wrapped driver's; every call
returns the very object the wrapped driver returned and raises the very
exception it raised, on any sequence of calls; a busy, correct echo server
draws no warning.  (Each check has its own module: test_debug_<check>.py.)
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ERROR, PROMPT, READ, WRITE, drain
from debug_helpers import Delegating, PollkitDebugWarning, debug_poller, debug_spec
from pollkit import (
    FileDescriptorLike,
    InvalidArgumentError,
    Poller,
    Registration,
    UnsupportedFeatureError,
    available_backends,
    open_poller,
)
from pollkit._backends import parse_backend
from pollkit._debug import DebugPoller
from pollkit.echo import EchoServer


def _driver(backend: str) -> str:
    return parse_backend(backend).driver


# -- what it is ------------------------------------------------------------------


def test_name_and_features_are_the_wrapped_drivers(poller_backend: str) -> None:
    driver = _driver(poller_backend)
    with open_poller(driver) as plain, debug_poller(poller_backend) as poller:
        assert poller.name == f"debug:{driver}"
        assert poller.features == plain.features
        assert isinstance(poller, Poller)
        assert isinstance(poller, DebugPoller)
        assert poller.inner.name == driver
        assert repr(poller).startswith("<DebugPoller around <")


def test_debug_auto_names_the_driver_it_chose() -> None:
    with open_poller("debug:auto") as poller:
        assert poller.name == f"debug:{available_backends()[0]}"


def test_fileno_is_the_wrapped_drivers(poller_backend: str) -> None:
    with debug_poller(poller_backend) as poller:
        if "fileno" in poller.features:
            assert os.readlink(f"/proc/self/fd/{poller.fileno()}") == "anon_inode:[eventpoll]"
        else:
            with pytest.raises(UnsupportedFeatureError):
                poller.fileno()


def test_context_manager_closes(poller_backend: str) -> None:
    with debug_poller(poller_backend) as poller, poller as entered:
        assert entered is poller
        assert not poller.closed
    assert poller.closed


def test_spin_threshold_is_checked(poller_backend: str) -> None:
    with (
        open_poller(_driver(poller_backend)) as inner,
        pytest.raises(InvalidArgumentError, match="spin_threshold"),
    ):
        DebugPoller(inner, spin_threshold=0)


# -- exactly what the driver returns and raises ----------------------------------------


class Recording(Delegating):
    """Keeps the object each call returned or raised."""

    def __init__(self, inner: Poller) -> None:
        super().__init__(inner)
        self.outcome: object = None

    def forget(self) -> None:
        self.outcome = None

    def _record(self, call: Callable[[], Any]) -> Any:
        try:
            self.outcome = call()
        except Exception as exc:
            self.outcome = exc
            raise
        return self.outcome

    def register(
        self,
        fd: FileDescriptorLike,
        events: int,
        *,
        oneshot: bool = False,
        edge: bool = False,
        exclusive: bool = False,
    ) -> None:
        self._record(lambda: self.inner.register(fd, events, oneshot=oneshot))

    def modify(
        self, fd: FileDescriptorLike, events: int, *, oneshot: bool = False, edge: bool = False
    ) -> None:
        self._record(lambda: self.inner.modify(fd, events, oneshot=oneshot))

    def unregister(self, fd: FileDescriptorLike) -> None:
        self._record(lambda: self.inner.unregister(fd))

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        result: list[tuple[int, int]] = self._record(lambda: self.inner.poll(timeout, max_events))
        return result

    def get_registration(self, fd: FileDescriptorLike) -> Registration:
        result: Registration = self._record(lambda: self.inner.get_registration(fd))
        return result


_PAIRS = 3
_pair = st.integers(0, _PAIRS - 1)
# Valid masks, and ones every driver refuses (empty, output-only, unknown).
_mask = st.sampled_from([READ, WRITE, READ | WRITE, READ, WRITE, 0, ERROR, 0x40])
_operation = st.one_of(
    st.tuples(st.just("register"), _pair, _mask, st.booleans()),
    st.tuples(st.just("modify"), _pair, _mask, st.booleans()),
    st.tuples(st.just("unregister"), _pair, st.just(0), st.just(False)),
    st.tuples(st.just("poll"), st.sampled_from([0, 1, 2]), st.just(0), st.just(False)),
    st.tuples(st.just("send"), _pair, st.just(0), st.just(False)),
    st.tuples(st.just("drain"), _pair, st.just(0), st.just(False)),
    st.tuples(st.just("lookup"), _pair, st.just(0), st.just(False)),
)


def _apply(poller: Poller, operation: tuple[str, int, int, bool], fd: int) -> object:
    name, arg, mask, oneshot = operation
    if name == "register":
        poller.register(fd, mask, oneshot=oneshot)
    elif name == "modify":
        poller.modify(fd, mask, oneshot=oneshot)
    elif name == "unregister":
        poller.unregister(fd)
    elif name == "poll":
        return poller.poll(0, arg or None)
    elif name == "lookup":
        return (len(poller), fd in poller, poller.get_registration(fd))
    return None


def _outcome(
    poller: Poller, operation: tuple[str, int, int, bool], fd: int
) -> tuple[object, Exception | None]:
    """``(result, None)``, or ``(None, the exception raised)``."""
    try:
        return _apply(poller, operation, fd), None
    except Exception as exc:  # noqa: BLE001  # every error is compared with the driver's
        return None, exc


# The fixture is only the driver's name, the same for every example; each
# example opens and closes its own pollers and sockets.
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=st.lists(_operation, max_size=40))
@pytest.mark.timeout(60)
def test_returns_and_raises_exactly_what_the_driver_does(
    poller_backend: str, operations: list[tuple[str, int, int, bool]]
) -> None:
    driver = _driver(poller_backend)
    pairs = [socket.socketpair() for _ in range(_PAIRS)]
    recording = Recording(open_poller(driver))
    poller = DebugPoller(recording)
    reference = open_poller(driver)  # the same calls on a plain driver: the same answers
    try:
        for ours, peer in pairs:
            ours.setblocking(False)
            peer.setblocking(False)
        for operation in operations:
            name, index = operation[0], operation[1]
            ours, peer = pairs[index]
            if name == "send":
                peer.send(b"x")
                continue
            if name == "drain":
                drain(ours)
                continue
            fd = ours.fileno()
            recording.forget()
            got, error = _outcome(poller, operation, fd)
            if error is not None:
                assert error is recording.outcome  # the driver's own exception object
                with pytest.raises(type(error)):
                    _apply(reference, operation, fd)
                continue
            expected = _apply(reference, operation, fd)
            if name == "poll":
                assert got is recording.outcome
                assert isinstance(got, list)
                assert isinstance(expected, list)
                assert sorted(got) == sorted(expected)
            else:
                assert got == expected
    finally:
        for ours, peer in pairs:
            for each in (poller, reference):
                if ours in each:
                    each.unregister(ours)
            ours.close()
            peer.close()
        poller.close()
        reference.close()


# -- a busy, correct program draws nothing ------------------------------------------------

_CLIENTS = 4
_BYTES_PER_CLIENT = 1024 * 1024


@pytest.mark.parametrize("wrappers", ["debug", "chaos:debug", "debug:chaos"])
@pytest.mark.timeout(60)
def test_busy_echo_server_draws_nothing(
    poller_backend: str, wrappers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several clients stream megabytes through an echo server on a debug poller.

    Also with chaos around it (debug sees the driver's results) and inside
    it (debug sees chaos's spurious, split and early results).
    """
    monkeypatch.setenv("POLLKIT_CHAOS_SEED", "862")
    payload = os.urandom(_BYTES_PER_CLIENT)
    failures: list[BaseException] = []
    poller = open_poller(f"{wrappers}:{_driver(poller_backend)}")
    with poller, EchoServer(poller, "127.0.0.1", 0) as server:

        def serve() -> None:
            try:
                server.serve_forever()
            except BaseException as exc:  # noqa: BLE001  # re-raised in the test's thread
                failures.append(exc)

        thread = threading.Thread(target=serve, name="echo-server", daemon=True)
        thread.start()
        try:
            echoed = _stream(server.address, payload, _driver(poller_backend))
        finally:
            server.shutdown()
            thread.join(PROMPT)
        assert not thread.is_alive()
        assert len(poller) == 0
    for failure in failures:
        raise failure
    assert all(data == payload for data in echoed)


def _stream(address: tuple[str, int], payload: bytes, driver: str) -> list[bytes]:
    """Send ``payload`` on each of several connections at once and read every echo back."""
    clients = [socket.create_connection(address, timeout=PROMPT) for _ in range(_CLIENTS)]
    sent = dict.fromkeys(range(len(clients)), 0)
    received = [bytearray() for _ in clients]
    by_fd = {client.fileno(): index for index, client in enumerate(clients)}
    deadline = time.monotonic() + 30
    with open_poller(driver) as pump:
        try:
            for client in clients:
                client.setblocking(False)
                pump.register(client, READ | WRITE)
            while len(pump) and time.monotonic() < deadline:
                for fd, mask in pump.poll(PROMPT):
                    index = by_fd[fd]
                    client = clients[index]
                    if mask & WRITE:
                        start = sent[index]
                        sent[index] += client.send(payload[start : start + 65536])
                        if sent[index] == len(payload):
                            pump.modify(client, READ)
                    if mask & READ:
                        received[index] += client.recv(65536)
                        if len(received[index]) == len(payload):
                            pump.unregister(client)
        finally:
            for client in clients:
                if client in pump:
                    pump.unregister(client)
                client.close()
    return [bytes(data) for data in received]


def test_debug_spec_wraps_the_plain_driver() -> None:
    assert debug_spec("chaos:debug:poll") == "debug:poll"
    assert debug_spec("select") == "debug:select"


def test_the_warning_is_a_user_warning() -> None:
    """So ``-W error::UserWarning`` and default filters treat it as users expect."""
    assert issubclass(PollkitDebugWarning, UserWarning)
