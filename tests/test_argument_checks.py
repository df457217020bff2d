"""Contract 3: argument checks at the door, and a failed kernel call changes nothing.

Also: an fd may be given as an int or as any object with ``fileno()``.
"""

from __future__ import annotations

import errno
import re

import pytest

from conftest import ERROR, HANGUP, INVALID, READ, WRITE, SocketPair, closed_fd_number
from pollkit import (
    AlreadyRegisteredError,
    Events,
    FdOutOfRangeError,
    InvalidArgumentError,
    NotRegisteredError,
    Poller,
    PollkitError,
    Registration,
)


class FilenoHolder:
    """Not a socket: only a ``fileno()`` method, as the contract allows."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def test_error_types_are_also_builtin_types() -> None:
    assert issubclass(AlreadyRegisteredError, KeyError)
    assert issubclass(NotRegisteredError, KeyError)
    assert issubclass(FdOutOfRangeError, ValueError)
    for error in (AlreadyRegisteredError, NotRegisteredError, FdOutOfRangeError):
        assert issubclass(error, PollkitError)


BAD_MASKS = [
    pytest.param(0, id="empty"),
    pytest.param(READ | 0x100, id="unknown-bit"),
    pytest.param(READ | 0x4000, id="unknown-bit-beyond-the-flags"),
    pytest.param(1 << 40, id="unknown-high-bit"),
    # epoll's own flag bits must not sneak in through the mask
    pytest.param(READ | (1 << 30), id="EPOLLONESHOT-bit"),
    pytest.param(READ | (1 << 31), id="EPOLLET-bit"),
    pytest.param(READ | ERROR, id="ERROR"),
    pytest.param(READ | HANGUP, id="HANGUP"),
    pytest.param(WRITE | INVALID, id="INVALID"),
    pytest.param(ERROR, id="only-ERROR"),
]


def _names_fd_and_mask(message: str, fd: int, mask: int) -> None:
    assert f"fd {fd}" in message, message
    if mask:
        assert f"{mask:#x}" in message or str(mask) in message, message
    else:
        assert "empty" in message or " 0" in message, message


@pytest.mark.parametrize("mask", BAD_MASKS)
def test_register_refuses_bad_masks(poller: Poller, socketpair: SocketPair, mask: int) -> None:
    left, _ = socketpair
    with pytest.raises(ValueError, match=r"\w") as caught:
        poller.register(left, mask)
    _names_fd_and_mask(str(caught.value), left.fileno(), mask)
    assert left not in poller
    assert len(poller) == 0


@pytest.mark.parametrize("mask", BAD_MASKS)
def test_modify_refuses_bad_masks(poller: Poller, socketpair: SocketPair, mask: int) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    with pytest.raises(ValueError, match=r"\w") as caught:
        poller.modify(left, mask)
    _names_fd_and_mask(str(caught.value), left.fileno(), mask)
    assert poller.get_registration(left) == Registration(READ)


@pytest.mark.parametrize("fd", [-1, -2, -1000])
def test_negative_fd_is_refused_everywhere(poller: Poller, fd: int) -> None:
    with pytest.raises(ValueError, match=str(fd)):
        poller.register(fd, READ)
    with pytest.raises(ValueError, match=str(fd)):
        poller.modify(fd, READ)
    with pytest.raises(ValueError, match=str(fd)):
        poller.unregister(fd)
    assert len(poller) == 0


def test_closed_socket_object_is_refused(poller: Poller, socketpair: SocketPair) -> None:
    left, _ = socketpair
    left.close()  # its fileno() is now -1
    with pytest.raises(ValueError, match="-1"):
        poller.register(left, READ)
    assert len(poller) == 0


@pytest.mark.parametrize("timeout", [-0.001, -1, -1e9, float("-inf")])
def test_negative_timeout_is_refused(poller: Poller, timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        poller.poll(timeout)
    with pytest.raises(ValueError, match="timeout"):
        poller.poll(timeout, max_events=1)


def test_nan_timeout_is_refused(poller: Poller) -> None:
    with pytest.raises(ValueError, match="timeout"):
        poller.poll(float("nan"))


@pytest.mark.pollkit_exact  # asserts one poll() call's exact result
@pytest.mark.parametrize("value", [False, True])
def test_a_bool_is_refused_as_a_timeout_as_it_is_as_an_fd_or_a_mask(
    poller: Poller, socketpair: SocketPair, value: bool
) -> None:
    """One rule for every argument: a bool is not a number to pollkit.

    (``poll(True)`` used to wait one second while ``register(True, ...)`` and
    a bool mask were refused.)
    """
    left, _ = socketpair
    poller.register(left, WRITE)
    for max_events in (None, 1):
        with pytest.raises(InvalidArgumentError, match=f"timeout must be .*not {value!r}"):
            poller.poll(value, max_events)
    with pytest.raises(InvalidArgumentError, match=repr(value)):
        poller.register(value, READ)
    with pytest.raises(InvalidArgumentError, match=repr(value)):
        poller.modify(left, value)
    assert poller.poll(0) == [(left.fileno(), WRITE)]


@pytest.mark.pollkit_exact  # asserts one poll() call's exact result
@pytest.mark.parametrize("timeout", ["1", b"0", [1], 1j], ids=["str", "bytes", "list", "complex"])
def test_a_timeout_that_is_not_a_number_is_refused_by_name(
    poller: Poller, socketpair: SocketPair, timeout: object
) -> None:
    """Regression: the drivers' fast paths compared it with 0 and let the
    comparison's TypeError out, which named neither the argument nor the value."""
    left, _ = socketpair
    poller.register(left, WRITE)
    for max_events in (None, 1):
        with pytest.raises(
            InvalidArgumentError, match=f"timeout must be .*not {re.escape(repr(timeout))}"
        ):
            poller.poll(timeout, max_events)  # type: ignore[arg-type]  # the wrong type is the test
    assert poller.poll(0) == [(left.fileno(), WRITE)]


@pytest.mark.parametrize("max_events", [0, -1])
def test_max_events_below_one_is_refused(poller: Poller, max_events: int) -> None:
    with pytest.raises(ValueError, match="max_events"):
        poller.poll(0, max_events=max_events)


def test_register_twice_raises_already_registered(poller: Poller, socketpair: SocketPair) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    with pytest.raises(AlreadyRegisteredError, match=str(left.fileno())):
        poller.register(left, WRITE)
    with pytest.raises(KeyError):
        poller.register(left.fileno(), WRITE)
    assert poller.get_registration(left) == Registration(READ)
    assert len(poller) == 1


def test_modify_unknown_fd_raises_not_registered(poller: Poller, socketpair: SocketPair) -> None:
    left, _ = socketpair
    with pytest.raises(NotRegisteredError, match=str(left.fileno())):
        poller.modify(left, READ)
    with pytest.raises(KeyError):
        poller.modify(left.fileno(), READ)
    assert left not in poller


def test_unregister_unknown_fd_raises_not_registered(
    poller: Poller, socketpair: SocketPair
) -> None:
    left, _ = socketpair
    with pytest.raises(NotRegisteredError, match=str(left.fileno())):
        poller.unregister(left)
    poller.register(left, READ)
    poller.unregister(left)
    with pytest.raises(KeyError):
        poller.unregister(left)
    assert len(poller) == 0


@pytest.mark.pollkit_exact  # asserts one poll() call's exact result
def test_register_closed_fd_raises_oserror_and_changes_nothing(
    poller: Poller, socketpair: SocketPair
) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    fd = closed_fd_number()
    with pytest.raises(OSError) as caught:  # noqa: PT011  # checked by errno just below
        poller.register(fd, READ)
    assert caught.value.errno == errno.EBADF
    assert not isinstance(caught.value, PollkitError)
    assert fd not in poller
    assert len(poller) == 1
    assert poller.poll(0) == []
    # The failed call left no trace: the number can be registered once it is open.
    with pytest.raises(NotRegisteredError):
        poller.unregister(fd)


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_modify_closed_fd_raises_oserror_and_keeps_the_registration(
    poller: Poller, socketpair: SocketPair
) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    fd = left.fileno()
    left.close()
    with pytest.raises(OSError):  # noqa: PT011  # EBADF, whichever OSError subclass the kernel call maps to
        poller.modify(fd, WRITE)
    assert poller.get_registration(fd) == Registration(READ)
    assert len(poller) == 1
    poller.unregister(fd)  # quiet: see the closed-fd contract
    assert len(poller) == 0


@pytest.mark.pollkit_exact  # asserts one poll() call's exact result
def test_fd_as_int_or_object_with_fileno(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    holder = FilenoHolder(right.fileno())
    poller.register(left, READ)  # a socket
    poller.register(holder, WRITE)  # any object with fileno()
    assert left.fileno() in poller
    assert left in poller
    assert right.fileno() in poller
    assert holder in poller
    assert right in poller
    right.send(b"x")
    assert sorted(poller.poll(1.0)) == sorted([(left.fileno(), READ), (right.fileno(), WRITE)])
    poller.modify(left.fileno(), WRITE)  # registered as an object, modified as an int
    poller.unregister(right.fileno())
    poller.unregister(left)
    assert len(poller) == 0


@pytest.mark.parametrize("not_an_fd", [None, "3", 3.0, object(), True])
def test_non_fd_is_refused_with_value_error(poller: Poller, not_an_fd: object) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        poller.register(not_an_fd, READ)  # type: ignore[arg-type]  # the wrong type is the point
    assert not_an_fd not in poller
    assert len(poller) == 0


def test_fileno_returning_a_non_int_is_refused(poller: Poller) -> None:
    class Liar:
        def fileno(self) -> object:
            return "five"

    with pytest.raises(ValueError, match="five"):
        poller.register(Liar(), READ)  # type: ignore[arg-type]  # fileno() returns the wrong type on purpose


@pytest.mark.parametrize("bit", [1 << 14, 1 << 15, 1 << 30, 1 << 31, 1 << 40])
def test_unknown_bits_above_the_events_flags_are_refused(
    poller: Poller, socketpair: SocketPair, bit: int
) -> None:
    """Regression: on Python 3.11+ ``~`` of an ``IntFlag`` keeps only the flag's
    own bits, so unknown bits above ``READ_HANGUP`` slipped through the check
    and reached the kernel (an ``OverflowError`` from poll, epoll flags such as
    ``EPOLLONESHOT`` smuggled in through the mask)."""
    left, _ = socketpair
    with pytest.raises(ValueError, match=f"{bit:#x}"):
        poller.register(left, READ | bit)
    assert left not in poller


@pytest.mark.pollkit_exact  # asserts one poll() call's exact result
def test_events_members_and_plain_ints_are_the_same_mask(
    poller: Poller, socketpair: SocketPair
) -> None:
    left, right = socketpair
    poller.register(left, Events.READ | Events.WRITE)
    assert poller.get_registration(left) == Registration(READ | WRITE)
    poller.modify(left, Events.READ)
    right.send(b"x")
    assert poller.poll(1.0) == [(left.fileno(), READ)]
