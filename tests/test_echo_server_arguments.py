"""EchoServer refuses bad arguments at the door, naming the value, and
reports its real address."""

from __future__ import annotations

import errno
import math
import socket
from typing import Any

import pytest

from pollkit import InvalidArgumentError, Poller
from pollkit.echo import EchoServer

BAD = {
    "port-too-large": ({"port": 70000}, "port"),
    "port-negative": ({"port": -1}, "port"),
    "port-a-string": ({"port": "80"}, "port"),
    "zero-clients": ({"max_clients": 0}, "max_clients"),
    "zero-buffer": ({"max_buffer": 0}, "max_buffer"),
    "zero-idle-timeout": ({"idle_timeout": 0}, "idle_timeout"),
    "negative-idle-timeout": ({"idle_timeout": -1.0}, "idle_timeout"),
    "infinite-idle-timeout": ({"idle_timeout": math.inf}, "idle_timeout"),
    "nan-grace-period": ({"grace_period": math.nan}, "grace_period"),
    "negative-grace-period": ({"grace_period": -1}, "grace_period"),
    "zero-socket-buffer": ({"socket_buffer": 0}, "socket_buffer"),
    # Regression: ignored before; a UDP server has no clients to time out.
    "udp-idle-timeout": ({"udp": True, "idle_timeout": 5.0}, "idle_timeout=5.0 closes TCP"),
}


@pytest.mark.parametrize(("options", "name"), BAD.values(), ids=BAD)
def test_bad_arguments(poller: Poller, options: dict[str, Any], name: str) -> None:
    arguments: dict[str, Any] = {"port": 0, **options}
    with pytest.raises(InvalidArgumentError, match=name):
        EchoServer(poller, "127.0.0.1", **arguments)


def test_port_zero_reports_the_real_port(poller: Poller) -> None:
    with EchoServer(poller, "127.0.0.1", 0) as server:
        host, port = server.address
        assert host == "127.0.0.1"
        assert 0 < port < 65536
        assert f"127.0.0.1:{port}" in repr(server)


def test_busy_port(poller: Poller) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}") as info:
            EchoServer(poller, "127.0.0.1", port)
    assert info.value.errno == errno.EADDRINUSE
    assert len(poller) == 0
