"""A user's test file: it only asks for the ``poller`` fixture.

With pollkit installed, pytest runs each test below once per driver:
``test_ping_is_readable[epoll]``, ``[poll]``, ``[select]``.
"""

from __future__ import annotations

import socket

import pytest

from pollkit import Events, Poller


def test_ping_is_readable(poller: Poller) -> None:
    left, right = socket.socketpair()
    with left, right:
        poller.register(left, Events.READ)
        right.send(b"ping")
        assert poller.poll(timeout=5.0) == [(left.fileno(), Events.READ)]


@pytest.mark.pollkit_backends("epoll")
def test_edge_triggering(poller: Poller) -> None:
    # Only epoll has edge triggering: this test runs on it alone.
    left, right = socket.socketpair()
    with left, right:
        poller.register(left, Events.READ, edge=True)
        right.send(b"ping")
        assert poller.poll(timeout=5.0) == [(left.fileno(), Events.READ)]
        assert poller.poll(timeout=0) == []  # no new edge, no report


def test_driver_name(poller: Poller, poller_backend: str) -> None:
    assert poller.name == poller_backend
