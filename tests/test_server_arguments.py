"""Server layer: bad input gets a clear, typed error that names the value.

A negative limit or timeout, a timer delay that is not a number, ``write()``
of a ``str``, ``add_reader()`` of an fd the server already watches.  A
refused constructor leaves nothing behind (no registration, no open fd); a
refused call inside a callback leaves the connection as it was.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import open_fds
from echo_helpers import connect, recv_exactly, wait_until
from pollkit import InvalidArgumentError, Poller, PollkitError
from pollkit.server import DatagramProtocol, DatagramServer, Server, Transport
from server_helpers import CallLog, Recorder, UpperLines, on_loop, serving, transport_of


def shown(value: object) -> str:
    """How a message names the value (as pollkit._validate does)."""
    return f"{value:g}" if isinstance(value, float) else repr(value)


BAD_SERVER_OPTIONS = [
    ("max_clients", -1),
    ("max_clients", True),
    ("max_clients", 2.5),
    ("idle_timeout", -1.0),
    ("idle_timeout", math.nan),
    ("idle_timeout", "10"),
    ("max_buffer", -1),
    ("max_buffer", "big"),
    ("grace_period", -0.5),
    ("grace_period", math.inf),
    ("socket_buffer", -4096),
]


@pytest.mark.parametrize(("name", "value"), BAD_SERVER_OPTIONS)
def test_server_refuses_a_bad_option_by_name(poller: Poller, name: str, value: object) -> None:
    before = open_fds()
    options: dict[str, Any] = {name: value}  # the wrong types are the point
    with pytest.raises(InvalidArgumentError) as caught:
        Server(poller, UpperLines, "127.0.0.1", 0, **options)
    message = str(caught.value)
    assert name in message, message
    assert shown(value) in message, message
    assert len(poller) == 0
    assert open_fds() <= before, "a refused Server left fds open"


@pytest.mark.parametrize("port", [-1, 65536, "8888"])
def test_server_refuses_a_bad_port(poller: Poller, port: object) -> None:
    with pytest.raises(InvalidArgumentError, match=str(port)):
        Server(poller, UpperLines, "127.0.0.1", port)  # type: ignore[arg-type]  # the wrong type is the input under test
    assert len(poller) == 0


@pytest.mark.parametrize(("name", "value"), [("max_buffer", -1), ("grace_period", -1.0)])
def test_datagram_server_refuses_a_bad_option_by_name(
    poller: Poller, name: str, value: object
) -> None:
    before = open_fds()
    options: dict[str, Any] = {name: value}  # the wrong types are the point
    with pytest.raises(InvalidArgumentError) as caught:
        DatagramServer(poller, DatagramProtocol, "127.0.0.1", 0, **options)
    message = str(caught.value)
    assert name in message, message
    assert shown(value) in message, message
    assert len(poller) == 0
    assert open_fds() <= before


@pytest.fixture
def connected(poller: Poller) -> Iterator[tuple[Server, Recorder, socket.socket]]:
    """A server with one connection, its Recorder and the client's socket."""
    log = CallLog()
    with serving(poller, log.factory) as server, connect(server.address) as sock:
        (protocol,) = log.wait_protocols(1)
        yield server, protocol, sock


def still_served(server: Server, protocol: Recorder, sock: socket.socket) -> None:
    """After a refused call, the connection works as before."""
    sock.sendall(b"fine")
    assert protocol.wait_received(4).endswith(b"fine")
    on_loop(server, lambda: transport_of(protocol).write(b"back"))
    assert recv_exactly(sock, 4) == b"back"
    assert not protocol.lost()


@pytest.mark.parametrize("delay", ["1", None, [0.1], math.nan, -math.inf])
@pytest.mark.timeout(30)
def test_call_later_refuses_a_delay_that_is_not_a_number(
    connected: tuple[Server, Recorder, socket.socket], delay: Any
) -> None:
    server, protocol, sock = connected
    with pytest.raises(InvalidArgumentError) as caught:
        on_loop(server, lambda: server.call_later(delay, print))
    assert shown(delay) in str(caught.value), str(caught.value)
    still_served(server, protocol, sock)


@pytest.mark.parametrize(
    "call",
    [
        lambda transport: transport.write("text"),
        lambda transport: transport.writelines([b"ok", "text"]),
    ],
    ids=["write", "writelines"],
)
@pytest.mark.timeout(30)
def test_write_refuses_a_str(
    connected: tuple[Server, Recorder, socket.socket], call: Callable[[Transport], object]
) -> None:
    server, protocol, sock = connected
    with pytest.raises((TypeError, PollkitError)) as caught:
        on_loop(server, lambda: call(transport_of(protocol)))
    assert "str" in str(caught.value), str(caught.value)
    still_served(server, protocol, sock)


@pytest.mark.parametrize(
    ("call", "value"),
    [
        (lambda transport: transport.set_idle_timeout(-1.0), -1.0),
        (lambda transport: transport.set_idle_timeout("soon"), "soon"),
        (lambda transport: transport.set_write_buffer_limits(high=-1), -1),
        (lambda transport: transport.set_write_buffer_limits(high=100, low=-5), -5),
    ],
    ids=["idle negative", "idle not a number", "high negative", "low negative"],
)
@pytest.mark.timeout(30)
def test_transport_refuses_a_bad_limit_by_value(
    connected: tuple[Server, Recorder, socket.socket],
    call: Callable[[Transport], object],
    value: object,
) -> None:
    server, protocol, sock = connected
    with pytest.raises(InvalidArgumentError) as caught:
        on_loop(server, lambda: call(transport_of(protocol)))
    assert shown(value) in str(caught.value), str(caught.value)
    still_served(server, protocol, sock)


@pytest.mark.timeout(30)
def test_write_buffer_limits_refuse_low_above_high(
    connected: tuple[Server, Recorder, socket.socket],
) -> None:
    server, protocol, sock = connected
    with pytest.raises(InvalidArgumentError, match="100"):
        on_loop(server, lambda: transport_of(protocol).set_write_buffer_limits(high=100, low=200))
    still_served(server, protocol, sock)


@pytest.mark.timeout(30)
def test_add_reader_refuses_an_fd_the_server_already_watches(
    connected: tuple[Server, Recorder, socket.socket],
) -> None:
    server, protocol, sock = connected
    connection_fd = transport_of(protocol).get_extra_info("socket").fileno()
    with pytest.raises(PollkitError) as caught:
        on_loop(server, lambda: server.add_reader(connection_fd, print))
    assert str(connection_fd) in str(caught.value), str(caught.value)
    still_served(server, protocol, sock)


@pytest.mark.timeout(30)
def test_add_reader_refuses_an_fd_added_already(
    connected: tuple[Server, Recorder, socket.socket],
) -> None:
    server, protocol, sock = connected
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    calls: list[str] = []

    def reader(tag: str) -> Callable[[], None]:
        def on_readable() -> None:
            os.read(read_fd, 10)
            calls.append(tag)

        return on_readable

    try:
        on_loop(server, lambda: server.add_reader(read_fd, reader("first")))
        with pytest.raises(PollkitError) as caught:
            on_loop(server, lambda: server.add_reader(read_fd, reader("second")))
        assert str(read_fd) in str(caught.value), str(caught.value)
        # The first callback is still the one that runs.
        os.write(write_fd, b"x")
        wait_until(lambda: calls, what="the reader's callback")
        assert calls == ["first"]
        still_served(server, protocol, sock)
    finally:
        on_loop(server, lambda: server.remove_reader(read_fd))
        os.close(read_fd)
        os.close(write_fd)
