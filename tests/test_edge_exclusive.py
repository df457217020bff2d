"""Contract 8: edge and exclusive modes exist only where the kernel has them.

``features`` says so in advance; asking a driver without them raises
``UnsupportedFeatureError`` at ``register()`` (and ``modify()``), leaving
the registry as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import READ, WRITE, SocketPair, drain, driver_of, masks_by_fd
from pollkit import Poller, Registration, UnsupportedFeatureError

# Each test asserts one poll() call's exact result, which chaos: varies on purpose.
pytestmark = pytest.mark.pollkit_exact

#: The drivers whose kernel facility has each mode.
NATIVE = {"edge": {"epoll"}, "exclusive": {"epoll"}}


@pytest.mark.parametrize("feature", ["edge", "exclusive"])
def test_features_say_in_advance(poller: Poller, feature: str) -> None:
    assert (feature in poller.features) == (driver_of(poller) in NATIVE[feature])


@pytest.mark.parametrize("feature", ["edge", "exclusive"])
def test_register_refuses_a_missing_feature(
    poller: Poller, socketpair: SocketPair, feature: str
) -> None:
    if feature in poller.features:
        pytest.skip(f"{poller.name} has {feature}")
    left, _ = socketpair
    with pytest.raises(UnsupportedFeatureError) as caught:
        poller.register(left, READ, **{feature: True})
    message = str(caught.value)
    assert feature in message
    assert str(left.fileno()) in message
    assert "epoll" in message, "the error should say which driver has it"
    assert left not in poller
    assert len(poller) == 0


def test_modify_refuses_edge_without_the_feature(poller: Poller, socketpair: SocketPair) -> None:
    if "edge" in poller.features:
        pytest.skip(f"{poller.name} has edge")
    left, _ = socketpair
    poller.register(left, READ)
    with pytest.raises(UnsupportedFeatureError):
        poller.modify(left, WRITE, edge=True)
    assert poller.get_registration(left) == Registration(READ)


def test_edge_reports_once_per_new_data(poller: Poller, socketpair: SocketPair) -> None:
    if "edge" not in poller.features:
        pytest.skip(f"{poller.name} has no edge mode")
    left, right = socketpair
    poller.register(left, READ, edge=True)
    assert poller.poll(0) == []
    right.send(b"one")
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}
    # The data is still there, but nothing changed: no report.
    assert poller.poll(0) == []
    assert poller.poll(0.02) == []
    right.send(b"two")
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}
    assert poller.poll(0) == []
    assert drain(left) == 6
    right.send(b"three")
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}
    assert poller.get_registration(left) == Registration(READ, edge=True)


def test_modify_switches_between_edge_and_level(poller: Poller, socketpair: SocketPair) -> None:
    if "edge" not in poller.features:
        pytest.skip(f"{poller.name} has no edge mode")
    left, right = socketpair
    poller.register(left, READ)
    right.send(b"x")
    assert poller.poll(0) == poller.poll(0) == [(left.fileno(), READ)]
    poller.modify(left, READ, edge=True)
    assert poller.poll(1.0) == [(left.fileno(), READ)]
    assert poller.poll(0) == []
    poller.modify(left, READ)
    assert poller.poll(0) == poller.poll(0) == [(left.fileno(), READ)]


def test_exclusive_registration_reports_and_modifies(
    poller: Poller, socketpair: SocketPair
) -> None:
    if "exclusive" not in poller.features:
        pytest.skip(f"{poller.name} has no exclusive mode")
    left, right = socketpair
    poller.register(left, READ, exclusive=True)
    right.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}
    # epoll refuses EPOLL_CTL_MOD on exclusive registrations; modify() must work anyway.
    poller.modify(left, WRITE)
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): WRITE}
    assert poller.get_registration(left) == Registration(WRITE, exclusive=True)
    poller.unregister(left)
    assert len(poller) == 0


def test_exclusive_wakes_one_of_several_pollers(
    poller: Poller, poller_factory: Callable[[], Poller], socketpair: SocketPair
) -> None:
    if "exclusive" not in poller.features:
        pytest.skip(f"{poller.name} has no exclusive mode")
    left, right = socketpair
    others = [poller_factory() for _ in range(3)]
    for each in [poller, *others]:
        each.register(left, READ, exclusive=True)
    right.send(b"x")
    # Every set sees the level-triggered readiness when it looks; exclusivity
    # is about wakeups of blocked waiters, which one thread cannot observe,
    # so this only checks that several exclusive registrations coexist.
    for each in [poller, *others]:
        assert masks_by_fd(each.poll(1.0)) == {left.fileno(): READ}


def test_exclusive_refuses_oneshot_and_other_bits(poller: Poller, socketpair: SocketPair) -> None:
    if "exclusive" not in poller.features:
        pytest.skip(f"{poller.name} has no exclusive mode")
    left, _ = socketpair
    with pytest.raises(ValueError, match=str(left.fileno())):
        poller.register(left, READ, exclusive=True, oneshot=True)
    assert left not in poller
