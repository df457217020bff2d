"""epoll-only behaviour: ``fromfd()``, ``fileno()``, regular files, dup and close.

These are facts of epoll(7) that the other drivers do not share; the
behaviour every driver shows is tested elsewhere on every driver.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import select
import socket
import tempfile
from collections.abc import Callable, Iterator

import pytest

from conftest import HANGUP, READ, WRITE, SocketPair, masks_by_fd, open_fds
from pollkit import (
    AlreadyRegisteredError,
    EpollPoller,
    Poller,
    PollkitError,
    Registration,
)

pytestmark = [pytest.mark.pollkit_backends("epoll"), pytest.mark.pollkit_exact]


@pytest.fixture
def raw_epoll() -> Iterator[select.epoll]:
    epoll = select.epoll()
    yield epoll
    epoll.close()


@pytest.fixture
def adopt(raw_epoll: select.epoll) -> Iterator[Callable[[], EpollPoller]]:
    """Adopt a duplicate of ``raw_epoll``'s fd (the same epoll set) into an EpollPoller."""
    adopted: list[EpollPoller] = []

    def make() -> EpollPoller:
        poller = EpollPoller.fromfd(os.dup(raw_epoll.fileno()))
        adopted.append(poller)
        return poller

    yield make
    for poller in adopted:
        poller.close()


# -- fromfd -----------------------------------------------------------------------


def test_fromfd_adopts_an_empty_set(adopt: Callable[[], EpollPoller]) -> None:
    poller = adopt()
    assert len(poller) == 0
    assert poller.poll(0) == []
    poller.wakeup()
    assert poller.poll(1.0) == []


def test_fromfd_adopts_earlier_registrations(
    raw_epoll: select.epoll,
    adopt: Callable[[], EpollPoller],
    make_socketpair: Callable[[], SocketPair],
) -> None:
    """Also a regression test: the data word was compared with the fd in all
    64 bits, but CPython's ``epoll.register()`` sets only the low 32 (the rest
    is stack garbage), so registrations were needlessly re-registered, and
    exclusive ones, which refuse ``EPOLL_CTL_MOD``, were not adopted at all."""
    plain, plain_peer = make_socketpair()
    once, once_peer = make_socketpair()
    edge, edge_peer = make_socketpair()
    writer, _ = make_socketpair()
    raw_epoll.register(plain.fileno(), select.EPOLLIN)
    raw_epoll.register(once.fileno(), select.EPOLLIN | select.EPOLLONESHOT)
    raw_epoll.register(edge.fileno(), select.EPOLLIN | select.EPOLLET)
    raw_epoll.register(writer.fileno(), select.EPOLLOUT | select.EPOLLEXCLUSIVE)

    poller = adopt()
    assert len(poller) == 4
    assert poller.get_registration(plain) == Registration(READ)
    assert poller.get_registration(once) == Registration(READ, oneshot=True)
    assert poller.get_registration(edge) == Registration(READ, edge=True)
    assert poller.get_registration(writer) == Registration(WRITE, exclusive=True)

    for peer in (plain_peer, once_peer, edge_peer):
        peer.send(b"x")
    expected = {
        plain.fileno(): READ,
        once.fileno(): READ,
        edge.fileno(): READ,
        writer.fileno(): WRITE,
    }
    assert masks_by_fd(poller.poll(1.0)) == expected
    # oneshot and edge behave as registered before the adoption.
    assert masks_by_fd(poller.poll(1.0)) == {plain.fileno(): READ, writer.fileno(): WRITE}
    poller.modify(once, READ, oneshot=True)
    assert once.fileno() in masks_by_fd(poller.poll(1.0))
    # Adopted registrations are ordinary ones.
    with pytest.raises(AlreadyRegisteredError):
        poller.register(plain, READ)
    poller.unregister(plain)
    poller.unregister(writer)
    assert plain not in poller
    assert masks_by_fd(poller.poll(1.0)) == {}


def test_fromfd_leaves_out_entries_whose_number_names_another_file_now(
    raw_epoll: select.epoll,
    adopt: Callable[[], EpollPoller],
    make_socketpair: Callable[[], SocketPair],
) -> None:
    """Regression: such entries were adopted, so ``register()`` of the file
    that now has the number raised ``AlreadyRegisteredError``, and
    ``modify()`` reached the new file (ENOENT), not the watched one."""
    old, old_peer = make_socketpair()
    number = old.fileno()
    raw_epoll.register(number, select.EPOLLIN)
    keeper = old.dup()  # keeps the watched file, and so the kernel's entry, alive
    try:
        old.close()
        new, _ = make_socketpair()
        assert new.fileno() == number  # the lowest free number is reused
        poller = adopt()
        assert new not in poller
        assert len(poller) == 0
        poller.register(new, READ)  # a new entry: (new file, number)
        assert poller.get_registration(new) == Registration(READ)
    finally:
        keeper.close()
    old_peer.close()


def test_fromfd_leaves_out_entries_whose_number_is_closed(
    raw_epoll: select.epoll, adopt: Callable[[], EpollPoller], socketpair: SocketPair
) -> None:
    left, _ = socketpair
    number = left.fileno()
    raw_epoll.register(number, select.EPOLLIN)
    keeper = left.dup()
    try:
        left.close()
        with pytest.raises(OSError):  # noqa: PT011  # EBADF: the number is free
            os.fstat(number)
        poller = adopt()
        assert number not in poller
        assert len(poller) == 0
    finally:
        keeper.close()


def test_fromfd_makes_the_fd_its_own(raw_epoll: select.epoll) -> None:
    fd = os.dup(raw_epoll.fileno())
    os.set_inheritable(fd, True)
    poller = EpollPoller.fromfd(fd)
    try:
        assert poller.fileno() == fd
        assert not os.get_inheritable(fd)
    finally:
        poller.close()
    with pytest.raises(OSError):  # noqa: PT011  # EBADF: close() closed the adopted fd
        os.fstat(fd)


_X86_64 = platform.machine() in ("x86_64", "AMD64")


class _EpollEvent(ctypes.Structure):
    # struct epoll_event is packed on x86-64 only (__EPOLL_PACKED).
    _pack_ = 1 if _X86_64 else 0
    _fields_ = [("events", ctypes.c_uint32), ("data", ctypes.c_uint64)]


@pytest.mark.skipif(not _X86_64, reason="struct epoll_event layout written for x86-64")
def test_fromfd_adopts_registrations_with_a_foreign_data_word(
    raw_epoll: select.epoll, adopt: Callable[[], EpollPoller], socketpair: SocketPair
) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    left, right = socketpair
    event = _EpollEvent(select.EPOLLIN, 0xDEADBEEF)  # a pointer, as C programs store
    assert libc.epoll_ctl(raw_epoll.fileno(), 1, left.fileno(), ctypes.byref(event)) == 0
    poller = adopt()
    assert poller.get_registration(left) == Registration(READ)
    right.send(b"x")
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}


@pytest.mark.parametrize("kind", ["socket", "pipe", "regular-file"])
def test_fromfd_refuses_a_non_epoll_fd_and_leaves_it_open(kind: str) -> None:
    """Regression: ``select.epoll.fromfd()`` accepts any fd, so the driver's
    constructor failed with a bare ``OSError(EINVAL)`` and closed the fd the
    caller still owned."""
    with tempfile.TemporaryFile() as regular:
        read_end, write_end = os.pipe()
        with socket.socket() as sock:
            try:
                fd = {"socket": sock.fileno(), "pipe": read_end, "regular-file": regular.fileno()}[
                    kind
                ]
                inheritable = os.get_inheritable(fd)
                fds_before = open_fds()
                with pytest.raises(ValueError, match=str(fd)) as caught:
                    EpollPoller.fromfd(fd)
                assert isinstance(caught.value, PollkitError)
                # The caller still owns the fd: a failed adoption must not close it.
                os.fstat(fd)
                assert os.get_inheritable(fd) == inheritable
                assert open_fds() == fds_before
            finally:
                os.close(read_end)
                os.close(write_end)


def test_fromfd_refuses_a_closed_fd() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    with pytest.raises(ValueError, match=str(read_end)):
        EpollPoller.fromfd(read_end)


def test_fromfd_refuses_a_negative_fd() -> None:
    with pytest.raises(ValueError, match="-1"):
        EpollPoller.fromfd(-1)


# -- fileno -------------------------------------------------------------------------


def test_fileno_nests_in_another_poller(
    poller: Poller, poller_factory: Callable[[], Poller], socketpair: SocketPair
) -> None:
    outer = poller_factory()
    left, right = socketpair
    poller.register(left, READ)
    outer.register(poller.fileno(), READ)
    assert outer.poll(0) == []
    right.send(b"x")
    assert masks_by_fd(outer.poll(1.0)) == {poller.fileno(): READ}
    assert masks_by_fd(poller.poll(0)) == {left.fileno(): READ}


# -- regular files and directories ----------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_regular_files_are_refused_clearly(
    poller: Poller, socketpair: SocketPair, kind: str
) -> None:
    left, _ = socketpair
    poller.register(left, READ)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "f") if kind == "file" else directory
        if kind == "file":
            with open(path, "wb"):
                pass
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(PermissionError) as caught:
                poller.register(fd, READ)
        finally:
            os.close(fd)
    message = str(caught.value)
    assert str(fd) in message
    assert "poll or select" in message
    assert fd not in poller
    assert len(poller) == 1


# -- dup and close: epoll watches open file descriptions ---------------------------------


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_close_with_a_duplicate_open_keeps_reporting_the_closed_number(
    poller: Poller, socketpair: SocketPair
) -> None:
    """The documented pitfall: close() of a registered fd does not remove the
    registration while a duplicate keeps the description open, and epoll
    goes on reporting the old number.  unregister() first avoids it."""
    left, right = socketpair
    poller.register(left, READ)
    stale = left.fileno()
    duplicate = left.dup()
    try:
        left.close()
        right.send(b"x")
        assert masks_by_fd(poller.poll(1.0)) == {stale: READ}
        # A late unregister() is quiet (EBADF), as on every driver...
        poller.unregister(stale)
        assert stale not in poller
        # ...but the kernel still has the entry: it cannot be reached by number.
        assert masks_by_fd(poller.poll(1.0)) == {stale: READ}
    finally:
        duplicate.close()
    # Once the last duplicate is closed, the description and the entry go.
    assert poller.poll(0.02) == []


def test_unregister_before_close_with_a_duplicate_open(
    poller: Poller, socketpair: SocketPair
) -> None:
    left, right = socketpair
    poller.register(left, READ)
    with left.dup():
        poller.unregister(left)
        left.close()
        right.send(b"x")
        assert poller.poll(0.02) == []


@pytest.mark.pollkit_misuse  # closes a registered fd on purpose
def test_closed_fd_stays_in_the_registry_until_unregistered(
    poller: Poller, socketpair: SocketPair
) -> None:
    # epoll says nothing of a closed fd, so the driver cannot know: documented.
    left, right = socketpair
    poller.register(left, READ)
    fd = left.fileno()
    left.close()
    right.close()
    assert poller.poll(0) == []
    assert fd in poller
    poller.unregister(fd)
    assert fd not in poller


def test_hangup_reported_without_asking(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    poller.register(left, WRITE)
    right.close()
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): WRITE | HANGUP}
