"""Contract 1: readiness is level-triggered by default on every driver."""

from __future__ import annotations

import socket

import pytest

from conftest import READ, WRITE, drain, masks_by_fd
from pollkit import Poller

# Each test asserts one poll() call's exact result, which chaos: varies on purpose.
pytestmark = pytest.mark.pollkit_exact


def test_read_readiness_is_reported_until_drained(
    poller: Poller, socketpair: tuple[socket.socket, socket.socket]
) -> None:
    left, right = socketpair
    poller.register(left, READ)
    right.send(b"ping")
    for _ in range(3):
        assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}
    assert left.recv(2) == b"pi"
    # Partly drained is still ready.
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}
    assert drain(left) == 2
    assert poller.poll(0) == []


def test_write_readiness_is_reported_on_every_call(
    poller: Poller, socketpair: tuple[socket.socket, socket.socket]
) -> None:
    left, _ = socketpair
    poller.register(left, WRITE)
    for _ in range(3):
        assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): WRITE}


def test_readiness_reported_with_max_events_and_zero_timeout_alike(
    poller: Poller, socketpair: tuple[socket.socket, socket.socket]
) -> None:
    left, right = socketpair
    poller.register(left, READ)
    right.send(b"x")
    assert poller.poll(0) == [(left.fileno(), READ)]
    assert poller.poll(0, max_events=1) == [(left.fileno(), READ)]
    assert poller.poll(None) == [(left.fileno(), READ)]
