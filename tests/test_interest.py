"""Contract 2: interest in, interest out.

A reported mask holds only registered bits plus ``ERROR``, ``HANGUP`` and
``INVALID`` when the kernel reports them, and a peer's close always wakes a
``READ`` interest (select reports it as plain ``READ``).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest

from conftest import (
    ERROR,
    HANGUP,
    OUTPUT_ONLY,
    PRIORITY,
    READ,
    READ_HANGUP,
    WRITE,
    SocketPair,
    driver_of,
    fill_send_buffer,
    masks_by_fd,
)
from pollkit import Events, Poller, UnsupportedFeatureError

# Each test asserts one poll() call's exact result, which chaos: varies on purpose.
pytestmark = pytest.mark.pollkit_exact


def _only_registered_bits(mask: int, registered: int) -> None:
    assert mask & ~(registered | OUTPUT_ONLY) == 0, (
        f"reported {Events(mask)!r} for an fd registered for {Events(registered)!r}"
    )


def test_read_interest_does_not_report_write(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    right.send(b"data")  # left is now readable and writable
    poller.register(left, READ)
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}


def test_write_interest_does_not_report_read(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    right.send(b"data")
    poller.register(left, WRITE)
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): WRITE}


def test_both_interests_report_both(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    right.send(b"data")
    poller.register(left, READ | WRITE)
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ | WRITE}


def test_modify_changes_what_is_reported(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    right.send(b"data")
    poller.register(left, READ)
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ}
    poller.modify(left, WRITE)
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): WRITE}
    poller.modify(left, READ | WRITE)
    assert masks_by_fd(poller.poll(1.0)) == {left.fileno(): READ | WRITE}


def test_full_send_buffer_is_not_write_ready(poller: Poller, socketpair: SocketPair) -> None:
    left, _ = socketpair
    fill_send_buffer(left)
    poller.register(left, WRITE)
    assert poller.poll(0) == []


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_peer_close_wakes_read_interest(
    poller: Poller,
    make_socketpair: Callable[[], SocketPair],
    make_tcp_pair: Callable[[], SocketPair],
    transport: str,
) -> None:
    left, right = make_socketpair() if transport == "unix" else make_tcp_pair()
    poller.register(left, READ)
    assert poller.poll(0) == []
    right.close()
    ready = masks_by_fd(poller.poll(1.0))
    assert list(ready) == [left.fileno()]
    assert ready[left.fileno()] & READ, f"peer close reported as {Events(ready[left.fileno()])!r}"
    _only_registered_bits(ready[left.fileno()], READ)
    assert left.recv(16) == b""  # the READ really meant end of file


def test_peer_close_hangup_where_the_driver_can_tell(
    poller: Poller, socketpair: SocketPair
) -> None:
    left, right = socketpair
    poller.register(left, READ)
    right.close()
    mask = masks_by_fd(poller.poll(1.0))[left.fileno()]
    if driver_of(poller) == "select":
        assert mask == READ  # select cannot tell a hang-up from readability
    else:
        assert mask == READ | HANGUP


def test_peer_close_with_only_write_interest(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    poller.register(left, WRITE)
    right.close()
    mask = masks_by_fd(poller.poll(1.0))[left.fileno()]
    _only_registered_bits(mask, WRITE)
    if driver_of(poller) != "select":
        assert mask & HANGUP


def test_reset_reports_error_where_the_driver_can_tell(
    poller: Poller, make_tcp_pair: Callable[[], SocketPair]
) -> None:
    client, server = make_tcp_pair()
    poller.register(client, READ)
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()
    mask = masks_by_fd(poller.poll(1.0))[client.fileno()]
    assert mask & READ
    _only_registered_bits(mask, READ)
    if driver_of(poller) == "select":
        assert mask == READ
    else:
        assert mask & ERROR
        assert mask & HANGUP
    with pytest.raises(ConnectionResetError):
        client.recv(16)


def test_priority_interest_reports_urgent_data_only(
    poller: Poller, make_tcp_pair: Callable[[], SocketPair]
) -> None:
    client, server = make_tcp_pair()
    poller.register(client, PRIORITY)
    assert poller.poll(0) == []
    server.send(b"!", socket.MSG_OOB)
    assert masks_by_fd(poller.poll(1.0)) == {client.fileno(): PRIORITY}


def test_read_hangup_where_supported(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    if "read_hangup" not in poller.features:
        with pytest.raises(UnsupportedFeatureError, match=str(left.fileno())):
            poller.register(left, READ | READ_HANGUP)
        assert left not in poller
        return
    poller.register(left, READ_HANGUP)
    assert poller.poll(0) == []
    right.send(b"data")
    assert poller.poll(0) == []  # data alone is not a read hang-up
    right.shutdown(socket.SHUT_WR)
    mask = masks_by_fd(poller.poll(1.0))[left.fileno()]
    assert mask & READ_HANGUP
    _only_registered_bits(mask, READ_HANGUP)


def test_results_are_plain_ints(poller: Poller, socketpair: SocketPair) -> None:
    left, right = socketpair
    poller.register(left, READ | WRITE)
    right.send(b"x")
    for ready in (poller.poll(0), poller.poll(1.0), poller.poll(0, max_events=4)):
        assert ready
        for fd, mask in ready:
            assert type(fd) is int
            assert type(mask) is int  # no IntFlag built per event on the hot path
