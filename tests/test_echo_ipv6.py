"""IPv6: the server listens on ::1 and echoes, over TCP and UDP."""

from __future__ import annotations

import socket

import pytest

from echo_helpers import connect, exchange, ipv6_loopback_works, serving
from pollkit import Poller

pytestmark = pytest.mark.skipif(
    not ipv6_loopback_works(), reason="no IPv6 loopback (::1) on this machine"
)


def test_tcp_over_ipv6(poller: Poller) -> None:
    payload = bytes(range(256)) * 1000
    with serving(poller, host="::1") as server, connect(server.address) as sock:
        assert server.address[0] == "::1"
        assert sock.family == socket.AF_INET6
        assert exchange([sock], [payload]) == [payload]


def test_udp_over_ipv6(poller: Poller) -> None:
    with (
        serving(poller, host="::1", udp=True) as server,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock,
    ):
        sock.settimeout(10)
        sock.sendto(b"over six", server.address)
        data, peer = sock.recvfrom(100)
    assert data == b"over six"
    assert peer[:2] == server.address
