"""``Events``: values equal to Linux's poll/epoll bits, so no translation is needed."""

from __future__ import annotations

import enum
import select

import pytest

from pollkit import Events

PAIRS = [
    ("READ", 0x001, "POLLIN", "EPOLLIN"),
    ("PRIORITY", 0x002, "POLLPRI", "EPOLLPRI"),
    ("WRITE", 0x004, "POLLOUT", "EPOLLOUT"),
    ("ERROR", 0x008, "POLLERR", "EPOLLERR"),
    ("HANGUP", 0x010, "POLLHUP", "EPOLLHUP"),
    ("INVALID", 0x020, "POLLNVAL", None),
    ("READ_HANGUP", 0x2000, "POLLRDHUP", "EPOLLRDHUP"),
]


def test_events_is_an_int_flag() -> None:
    assert issubclass(Events, enum.IntFlag)
    assert {member.name for member in Events} == {name for name, *_ in PAIRS}


@pytest.mark.parametrize(("name", "value", "poll_name", "epoll_name"), PAIRS)
def test_values_equal_the_kernel_bits(
    name: str, value: int, poll_name: str, epoll_name: str | None
) -> None:
    member = Events[name]
    assert member == value
    assert member == getattr(select, poll_name)
    if epoll_name is not None:
        assert member == getattr(select, epoll_name)


def test_a_plain_mask_reads_back_as_flags() -> None:
    assert Events(select.POLLIN | select.POLLHUP) == Events.READ | Events.HANGUP
    assert repr(Events(0x11)) == repr(Events.READ | Events.HANGUP)


def test_every_driver_lists_only_known_features() -> None:
    from pollkit import EpollPoller, PollPoller, SelectPoller
    from pollkit._events import ALL_FEATURES

    for driver in (EpollPoller, PollPoller, SelectPoller):
        assert driver.features <= ALL_FEATURES, driver.name
    assert EpollPoller.features == ALL_FEATURES
