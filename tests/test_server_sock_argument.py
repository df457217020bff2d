"""``Server(sock=...)`` and ``DatagramServer(sock=...)``: serving on the caller's socket.

As asyncio's ``create_server(sock=...)`` and ``create_datagram_endpoint(sock=...)``:

* The server serves real traffic on a socket the caller bound (listening or
  not: ``Server`` calls ``listen(backlog)``, which on a listening socket only
  sets the backlog anew), on one wrapped from an inherited fd as systemd's
  socket activation hands it over, over IPv6, and, for datagrams, on an
  ``AF_UNIX`` socket.  ``address`` is the socket's ``getsockname()``; on an
  ``AF_UNIX`` socket it raises, naming the path (a path is no
  ``(host, port)``).
* Once the constructor returns, the server owns the socket: non-blocking,
  closed by ``close()`` and when ``serve_forever()`` returns.
* ``sock`` excludes ``host``, ``port`` and ``reuse_port``; with any of them
  the error names both.  The defaults (``None``, ``False``) given explicitly
  are no conflict.
* A socket the layer cannot serve is refused with an
  ``InvalidArgumentError`` that names it and says what is wrong; the socket
  is left as it was (open, in its blocking mode), nothing is registered and
  no fd is left open.  A ``listen()`` the kernel refuses is an ``OSError``
  naming the address, the socket left open too.

Every test runs on every driver; loopback only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import open_fds
from echo_helpers import PROMPT, connect, exchange, ipv6_loopback_works
from pollkit import InvalidArgumentError, Poller
from pollkit.server import DatagramProtocol, DatagramServer, DatagramTransport, Server
from server_helpers import UpperLines, lines_payload, on_loop, running

ServerClass = type[Server] | type[DatagramServer]


needs_ipv6 = pytest.mark.skipif(
    not ipv6_loopback_works(), reason="no IPv6 loopback (::1) on this machine"
)


# -- sockets the test makes, all closed at its end ---------------------------------------


class Sockets:
    """Makes the test's sockets and closes every one at teardown (a no-op for
    those a server has closed already)."""

    def __init__(self) -> None:
        self.made: list[socket.socket] = []

    def keep(self, sock: socket.socket) -> socket.socket:
        self.made.append(sock)
        return sock

    def new(
        self,
        family: int = socket.AF_INET,
        kind: int = socket.SOCK_STREAM,
        *,
        bind: Any = ("127.0.0.1", 0),
        listen: int | None = None,
    ) -> socket.socket:
        sock = self.keep(socket.socket(family, kind))
        if bind is not None:
            sock.bind(bind)
        if listen is not None:
            sock.listen(listen)
        return sock

    def close(self) -> None:
        for sock in self.made:
            sock.close()


@pytest.fixture
def sockets() -> Iterator[Sockets]:
    made = Sockets()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def directory() -> Iterator[str]:
    """A directory for Unix socket paths, short enough for ``sun_path`` (108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="pollkit-sock-") as path:
        assert len(path) < 80, path
        yield path


def listen_backlog(sock: socket.socket) -> int:
    """A listening TCP socket's backlog: Linux's ``TCP_INFO`` reports it as ``tcpi_sacked``."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    (sacked,) = struct.unpack_from("=I", info, 28)
    return int(sacked)


# -- a datagram protocol that is not echo -------------------------------------------------


class Reverser(DatagramProtocol):
    """Answers each datagram with ``re:`` and its bytes reversed; notes what it saw."""

    def __init__(self) -> None:
        self.transport: DatagramTransport | None = None
        self.sockname: Any = None
        self.senders: list[Any] = []
        self.lost = threading.Event()

    def connection_made(self, transport: DatagramTransport) -> None:
        self.transport = transport
        self.sockname = transport.get_extra_info("sockname")

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        self.senders.append(addr)
        self.transport.sendto(b"re:" + data[::-1], addr)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


def ask(client: socket.socket, address: Any, data: bytes) -> bytes:
    """Send one datagram to ``address``; the reply, which must come from there."""
    client.sendto(data, address)
    reply, sender = client.recvfrom(65536)
    assert sender == address
    return reply


def upper_lines_served(server: Server, poller: Poller) -> None:
    """Serve two connections of lines through ``server``; each comes back upper-cased."""
    payloads = [lines_payload(seed, 20_000) for seed in (1, 2)]
    with running(server, poller), connect(server.address) as one, connect(server.address) as two:
        assert exchange([one, two], payloads) == [payload.upper() for payload in payloads]


# -- serving --------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_server_listens_on_a_bound_socket_and_serves_it(poller: Poller, sockets: Sockets) -> None:
    sock = sockets.new()
    with pytest.raises(ConnectionRefusedError):  # bound only: nobody listens yet
        connect(sock.getsockname()).close()
    with Server(poller, UpperLines, sock=sock, backlog=7) as server:
        assert server.address == sock.getsockname()
        assert listen_backlog(sock) == 7
        # Listening from the constructor on, before serving: the kernel
        # completes the handshake and the connection waits in the backlog.
        connect(server.address).close()
        upper_lines_served(server, poller)
    assert len(poller) == 0


@pytest.mark.timeout(30)
def test_server_sets_the_backlog_anew_on_a_socket_already_listening(
    poller: Poller, sockets: Sockets
) -> None:
    sock = sockets.new(listen=3)
    with Server(poller, UpperLines, sock=sock, backlog=11) as server:
        assert listen_backlog(sock) == 11
        upper_lines_served(server, poller)


@pytest.mark.timeout(30)
def test_server_serves_an_inherited_fd_as_socket_activation_hands_it_over(
    poller: Poller, sockets: Sockets
) -> None:
    # systemd passes a listening socket as a bare fd; the service wraps it.
    original = sockets.new(listen=socket.SOMAXCONN)
    address = original.getsockname()
    inherited = sockets.keep(socket.socket(fileno=os.dup(original.fileno())))
    original.close()
    with Server(poller, UpperLines, sock=inherited) as server:
        assert server.address == address
        upper_lines_served(server, poller)
    assert inherited.fileno() == -1


@needs_ipv6
@pytest.mark.timeout(30)
def test_server_serves_an_ipv6_socket(poller: Poller, sockets: Sockets) -> None:
    sock = sockets.new(socket.AF_INET6, bind=("::1", 0))
    with Server(poller, UpperLines, sock=sock) as server:
        assert server.address == sock.getsockname()[:2]
        assert server.address[0] == "::1"
        assert f"[::1]:{server.address[1]}" in repr(server)
        upper_lines_served(server, poller)


@pytest.mark.timeout(30)
def test_datagram_server_serves_a_udp_socket(poller: Poller, sockets: Sockets) -> None:
    sock = sockets.new(kind=socket.SOCK_DGRAM)
    client = sockets.new(kind=socket.SOCK_DGRAM)
    client.settimeout(PROMPT)
    protocol = Reverser()
    with DatagramServer(poller, lambda: protocol, sock=sock) as server:
        assert server.address == sock.getsockname()
        with running(server, poller):
            for number in range(5):
                data = b"datagram %d" % number
                assert ask(client, server.address, data) == b"re:" + data[::-1]
        assert protocol.sockname == server.address
        assert protocol.senders == [client.getsockname()] * 5
    assert protocol.lost.is_set()
    assert sock.fileno() == -1
    assert len(poller) == 0


@needs_ipv6
@pytest.mark.timeout(30)
def test_datagram_server_serves_an_ipv6_socket(poller: Poller, sockets: Sockets) -> None:
    sock = sockets.new(socket.AF_INET6, socket.SOCK_DGRAM, bind=("::1", 0))
    client = sockets.new(socket.AF_INET6, socket.SOCK_DGRAM, bind=("::1", 0))
    client.settimeout(PROMPT)
    with (
        DatagramServer(poller, Reverser, sock=sock) as server,
        running(server, poller),
    ):
        assert server.address == sock.getsockname()[:2]
        assert ask(client, sock.getsockname(), b"six") == b"re:xis"


@pytest.mark.timeout(30)
def test_datagram_server_serves_a_unix_socket_whose_address_is_a_path(
    poller: Poller, sockets: Sockets, directory: str
) -> None:
    path = os.path.join(directory, "server")
    sock = sockets.new(socket.AF_UNIX, socket.SOCK_DGRAM, bind=path)
    client = sockets.new(socket.AF_UNIX, socket.SOCK_DGRAM, bind=os.path.join(directory, "c"))
    client.settimeout(PROMPT)
    protocol = Reverser()
    with DatagramServer(poller, lambda: protocol, sock=sock) as server:
        assert path in repr(server)
        with pytest.raises(AttributeError) as caught:
            _ = server.address
        message = str(caught.value)
        assert repr(path) in message, message
        assert "AF_UNIX" in message, message
        with running(server, poller):
            assert ask(client, path, b"over a path") == b"re:htap a revo"
            shown = on_loop(server, lambda: repr(protocol.transport))
            assert shown == f"<DatagramTransport {path}>"
        assert protocol.sockname == path
        assert protocol.senders == [client.getsockname()]
    assert sock.fileno() == -1
    assert len(poller) == 0


@pytest.mark.timeout(30)
def test_datagram_server_serves_an_abstract_unix_socket(poller: Poller, sockets: Sockets) -> None:
    name = b"\0pollkit-test-%d" % os.getpid()
    sock = sockets.new(socket.AF_UNIX, socket.SOCK_DGRAM, bind=name)
    client = sockets.new(socket.AF_UNIX, socket.SOCK_DGRAM, bind=name + b"-client")
    client.settimeout(PROMPT)
    with DatagramServer(poller, Reverser, sock=sock) as server:
        assert f"@pollkit-test-{os.getpid()}" in repr(server)
        with running(server, poller):
            assert ask(client, name, b"abstract") == b"re:tcartsba"


# -- ownership ------------------------------------------------------------------------------


def a_socket_for(cls: ServerClass, sockets: Sockets) -> socket.socket:
    return sockets.new(kind=socket.SOCK_STREAM if cls is Server else socket.SOCK_DGRAM)


def made(cls: ServerClass, poller: Poller, sock: socket.socket, **options: Any) -> Any:
    if cls is Server:
        return Server(poller, UpperLines, sock=sock, **options)
    return DatagramServer(poller, Reverser, sock=sock, **options)


@pytest.mark.parametrize("cls", [Server, DatagramServer])
@pytest.mark.timeout(30)
def test_the_server_owns_the_socket_non_blocking_and_closes_it(
    poller: Poller, sockets: Sockets, cls: ServerClass
) -> None:
    sock = a_socket_for(cls, sockets)
    assert sock.getblocking()
    server = made(cls, poller, sock)
    with server:
        assert not sock.getblocking()
        assert sock.fileno() != -1
    assert sock.fileno() == -1
    assert len(poller) == 0


@pytest.mark.parametrize("cls", [Server, DatagramServer])
@pytest.mark.timeout(30)
def test_serve_forever_closes_the_socket_on_its_way_out(
    poller: Poller, sockets: Sockets, cls: ServerClass
) -> None:
    sock = a_socket_for(cls, sockets)
    server = made(cls, poller, sock)
    with running(server, poller) as thread:
        on_loop(server, lambda: None)  # serving
        server.shutdown()
        thread.join(PROMPT)
    assert sock.fileno() == -1
    assert server.closed
    assert len(poller) == 0


@pytest.mark.parametrize("cls", [Server, DatagramServer])
@pytest.mark.timeout(30)
def test_none_for_host_and_port_means_the_defaults(poller: Poller, cls: ServerClass) -> None:
    # None is the documented default; port 0 keeps the test off a fixed port.
    factory: Callable[[], Any] = UpperLines if cls is Server else Reverser
    with cls(poller, factory, None, 0) as server:
        assert server.address[0] == "127.0.0.1"
        assert server.address[1] != 0


# -- what sock excludes ------------------------------------------------------------------------

CONFLICTS: list[dict[str, Any]] = [
    {"host": "127.0.0.1"},
    {"host": "::1"},
    {"port": 0},
    {"port": 8888},  # the old default value, given explicitly: still a second address
    {"host": "127.0.0.1", "port": 9},
    {"reuse_port": True},
]


def conflict_shown(name: str, value: object) -> str:
    return f"{name} = {value!r}"


@pytest.mark.parametrize("cls", [Server, DatagramServer])
@pytest.mark.parametrize("options", CONFLICTS, ids=lambda options: ",".join(options))
@pytest.mark.timeout(30)
def test_sock_with_host_port_or_reuse_port_is_refused_naming_both(
    poller: Poller, sockets: Sockets, cls: ServerClass, options: dict[str, Any]
) -> None:
    sock = a_socket_for(cls, sockets)
    shown = repr(sock)
    before = open_fds()
    with pytest.raises(InvalidArgumentError) as caught:
        made(cls, poller, sock, **options)
    message = str(caught.value)
    assert f"sock = {shown}" in message, message
    for name, value in options.items():
        assert conflict_shown(name, value) in message, message
    if "reuse_port" in options:
        assert "SO_REUSEPORT" in message, message
    assert sock.fileno() != -1, "a refused socket was closed: it is still the caller's"
    assert sock.getblocking(), "a refused socket's mode was changed"
    assert len(poller) == 0
    assert open_fds() <= before


@pytest.mark.parametrize("cls", [Server, DatagramServer])
@pytest.mark.timeout(30)
def test_the_defaults_given_explicitly_are_no_conflict(
    poller: Poller, sockets: Sockets, cls: ServerClass
) -> None:
    sock = a_socket_for(cls, sockets)
    with made(cls, poller, sock, host=None, port=None, reuse_port=False) as server:
        assert server.address == sock.getsockname()


# -- sockets the layer cannot serve ----------------------------------------------------------

BadSocket = Callable[[Sockets, str], Any]


def closed(sock: socket.socket) -> socket.socket:
    sock.close()
    return sock


def connected_tcp(sockets: Sockets, directory: str) -> socket.socket:
    listener = sockets.new(listen=1)
    return sockets.keep(connect(listener.getsockname()))


def tls_wrapped(sockets: Sockets, directory: str) -> socket.socket:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    plain = sockets.new()
    wrapped = context.wrap_socket(plain, server_hostname="localhost", do_handshake_on_connect=False)
    return sockets.keep(wrapped)


def replaced_by_a_pipe(sockets: Sockets, directory: str, kind: int) -> socket.socket:
    """A bound socket object whose fd number now holds a pipe (``dup2()`` behind its back)."""
    sock = sockets.new(kind=kind)
    read_end, write_end = os.pipe()
    try:
        os.dup2(read_end, sock.fileno())
    finally:
        os.close(read_end)
        os.close(write_end)
    return sock  # closing it closes the pipe's copy


def netlink(sockets: Sockets, directory: str) -> socket.socket:
    return sockets.keep(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0))


# (id, how to make it, words its message must hold)
BAD_FOR_SERVER: list[tuple[str, BadSocket, list[str]]] = [
    ("an int fd", lambda sockets, directory: 3, ["not a socket.socket"]),
    ("a str", lambda sockets, directory: "fd:3", ["not a socket.socket"]),
    ("closed", lambda sockets, directory: closed(sockets.new()), ["closed"]),
    (
        "udp",
        lambda sockets, directory: sockets.new(kind=socket.SOCK_DGRAM),
        ["SOCK_STREAM", "DatagramServer"],
    ),
    (
        "unix stream",
        lambda sockets, directory: sockets.new(
            socket.AF_UNIX, bind=os.path.join(directory, "stream")
        ),
        ["AF_UNIX", "TCP_NODELAY", "AF_INET"],
    ),
    ("unbound", lambda sockets, directory: sockets.new(bind=None), ["not bound", "bind()"]),
    ("connected", connected_tcp, ["connected to 127.0.0.1:", "not a connection"]),
    ("tls", tls_wrapped, ["ssl.SSLSocket", "TLS"]),
    (
        "fd replaced",
        lambda sockets, directory: replaced_by_a_pipe(sockets, directory, socket.SOCK_STREAM),
        ["getsockname() failed", "no longer an open socket"],
    ),
]

BAD_FOR_DATAGRAM_SERVER: list[tuple[str, BadSocket, list[str]]] = [
    ("an int fd", lambda sockets, directory: 3, ["not a socket.socket"]),
    ("an object", lambda sockets, directory: object(), ["not a socket.socket"]),
    (
        "closed",
        lambda sockets, directory: closed(sockets.new(kind=socket.SOCK_DGRAM)),
        ["closed"],
    ),
    ("tcp", lambda sockets, directory: sockets.new(), ["SOCK_DGRAM", "use Server"]),
    ("netlink", netlink, ["AF_NETLINK", "AF_INET, AF_INET6 or AF_UNIX"]),
    (
        "unbound udp",
        lambda sockets, directory: sockets.new(kind=socket.SOCK_DGRAM, bind=None),
        ["not bound", "bind()"],
    ),
    (
        "unbound unix",
        lambda sockets, directory: sockets.new(socket.AF_UNIX, socket.SOCK_DGRAM, bind=None),
        ["not bound", "bind() it to a path"],
    ),
    (
        "fd replaced",
        lambda sockets, directory: replaced_by_a_pipe(sockets, directory, socket.SOCK_DGRAM),
        ["getsockname() failed", "no longer an open socket"],
    ),
]


def check_refused(
    poller: Poller, cls: ServerClass, value: Any, words: list[str], before: set[int]
) -> None:
    shown = repr(value)
    was_open = isinstance(value, socket.socket) and value.fileno() != -1
    blocking = value.getblocking() if was_open else None
    with pytest.raises(InvalidArgumentError) as caught:
        made(cls, poller, value)
    message = str(caught.value)
    assert f"sock = {shown}" in message, message
    for word in words:
        assert word in message, message
    if was_open:
        assert value.fileno() != -1, "a refused socket was closed: it is still the caller's"
        assert value.getblocking() == blocking, "a refused socket's mode was changed"
    assert len(poller) == 0
    assert open_fds() <= before, "a refused server left fds open"


@pytest.mark.parametrize(
    ("make", "words"),
    [(make, words) for _, make, words in BAD_FOR_SERVER],
    ids=[name for name, _, _ in BAD_FOR_SERVER],
)
@pytest.mark.timeout(30)
def test_server_refuses_a_socket_it_cannot_serve_and_leaves_it_open(
    poller: Poller, sockets: Sockets, directory: str, make: BadSocket, words: list[str]
) -> None:
    value = make(sockets, directory)
    check_refused(poller, Server, value, words, open_fds())


@pytest.mark.parametrize(
    ("make", "words"),
    [(make, words) for _, make, words in BAD_FOR_DATAGRAM_SERVER],
    ids=[name for name, _, _ in BAD_FOR_DATAGRAM_SERVER],
)
@pytest.mark.timeout(30)
def test_datagram_server_refuses_a_socket_it_cannot_serve_and_leaves_it_open(
    poller: Poller, sockets: Sockets, directory: str, make: BadSocket, words: list[str]
) -> None:
    value = make(sockets, directory)
    check_refused(poller, DatagramServer, value, words, open_fds())


@pytest.mark.timeout(30)
def test_a_listen_the_kernel_refuses_names_the_address_and_leaves_the_socket_open(
    poller: Poller, sockets: Sockets
) -> None:
    # Two sockets may bind one port with SO_REUSEADDR; only one may listen on it.
    first = sockets.keep(socket.socket())
    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    first.bind(("127.0.0.1", 0))
    address = first.getsockname()
    second = sockets.keep(socket.socket())
    second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    second.bind(address)
    first.listen(1)
    before = open_fds()
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{address[1]}") as caught:
        Server(poller, UpperLines, sock=second)
    assert not isinstance(caught.value, InvalidArgumentError)
    assert second.fileno() != -1
    assert len(poller) == 0
    assert open_fds() <= before


@pytest.mark.timeout(30)
def test_other_arguments_are_still_checked_with_a_sock(poller: Poller, sockets: Sockets) -> None:
    sock = sockets.new()
    with pytest.raises(InvalidArgumentError, match="max_clients = -1"):
        Server(poller, UpperLines, sock=sock, max_clients=-1)
    with pytest.raises(InvalidArgumentError, match="backlog = 0"):
        Server(poller, UpperLines, sock=sock, backlog=0)
    assert sock.fileno() != -1
    assert sock.getblocking()
    with contextlib.closing(Server(poller, UpperLines, sock=sock)) as server:
        assert server.address == sock.getsockname()
