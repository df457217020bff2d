"""The datagram server's send queue and its errors, through the layer on every driver.

* A ``sendto()`` the kernel refuses (``EAGAIN``) is queued, not dropped:
  ``get_write_buffer_size()`` counts it, every later datagram queues behind
  it, ``WRITE`` is asked for while the queue is not empty, and the queue
  leaves in order once the socket is writable.
* Past ``max_buffer`` queued bytes the server stops reading (even in the
  middle of a batch of reads) until the queue drains to a quarter of it.
  ``DatagramProtocol`` has no ``pause_writing()``: reading is the only switch
  (the module docstring of ``_datagram.py`` and DESIGN.md's table agree).
* A failed send, at once or from the queue, and a failed receive go to
  ``error_received()``; one that raises is logged with its traceback and the
  server goes on serving.
* A graceful stop sends the queue within ``grace_period``; past it the rest
  is dropped and a warning counts it; an abort drops it at once.

**Why a Unix datagram socket.**  Loopback UDP never refuses a ``sendto()``,
whatever ``SO_SNDBUF`` says: the loopback device releases a datagram's
send-buffer charge as it passes it on, and a receiver that does not read
makes the kernel drop, not block.  A Unix datagram socket keeps the charge
until the receiver reads, refuses with ``EAGAIN`` once ``SO_SNDBUF`` is
used up, and its ``poll()`` reports ``WRITE`` only once there is room again:
the kernel behaviour the queue exists for, deterministic and local.
:func:`unix_datagram_server` binds such a socket and hands it to the server
(``sock=``).  The error tests that need no queue run on plain loopback UDP.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import pytest

from echo_helpers import PROMPT, wait_until
from pollkit import Events, Poller
from pollkit.server import DatagramProtocol, DatagramServer, DatagramTransport
from server_helpers import on_loop, running

_T = TypeVar("_T")

READ = int(Events.READ)
WRITE = int(Events.WRITE)

#: The size of a burst's datagrams: a few of them use up the smallest SO_SNDBUF.
SIZE = 1000
#: One byte more than an IPv4 UDP datagram can carry (65,535 - 20 - 8).
OVERSIZE = 65508
#: How many times the ICMP test sends its probe (one reply is enough).
PROBES = 50


def numbered(number: int) -> bytes:
    """Datagram ``number`` of a burst: its number, then a fill that differs per number."""
    return b"%06d" % number + bytes([number % 251]) * (SIZE - 6)


# -- the protocol ----------------------------------------------------------------------


class Queueing(DatagramProtocol):
    """Answers commands and records what the layer showed it.

    * ``burst N`` sends N :func:`numbered` datagrams to the sender and keeps
      ``get_write_buffer_size()`` after each ``sendto()`` (one list per burst);
      ``burst N via K`` sends number K to :attr:`nowhere` instead.
    * ``oversize`` sends a datagram too large for IPv4, then ``after``.
    * ``close then send`` calls ``transport.close()``, then ``sendto()``;
      ``abort then send`` the same with ``abort()``.
    * anything else is answered with ``re:`` and the datagram.

    ``raising``: ``error_received()`` records the error, then raises.
    ``on_made`` and ``on_error`` add behaviour (on the loop's thread).
    """

    def __init__(
        self,
        *,
        raising: bool = False,
        nowhere: str | None = None,
        on_made: Callable[[DatagramTransport], object] | None = None,
        on_error: Callable[[DatagramTransport, OSError], object] | None = None,
    ) -> None:
        self.transport: DatagramTransport | None = None
        self.raising = raising
        self.nowhere = nowhere
        self.on_made = on_made
        self.on_error = on_error
        self.condition = threading.Condition()
        self.received: list[bytes] = []
        #: ``get_write_buffer_size()`` as each datagram arrived.
        self.buffered_on_receipt: list[int] = []
        #: Per burst: ``get_write_buffer_size()`` after each of its sendto() calls.
        self.bursts: list[list[int]] = []
        #: ``get_write_buffer_size()`` right after each oversized sendto().
        self.buffered_after_oversize: list[int] = []
        #: ``(is_closing(), get_write_buffer_size())`` after ``close/abort then send``.
        self.after_close: list[tuple[bool, int]] = []
        self.errors: list[OSError] = []
        self.lost = threading.Event()

    def connection_made(self, transport: DatagramTransport) -> None:
        self.transport = transport
        if self.on_made is not None:
            self.on_made(transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        transport = self.transport
        assert transport is not None
        with self.condition:
            self.received.append(data)
            self.buffered_on_receipt.append(transport.get_write_buffer_size())
            self.condition.notify_all()
        words = data.split()
        if words[:1] == [b"burst"]:
            via = int(words[3]) if words[2:3] == [b"via"] else None
            sizes = []
            for number in range(int(words[1])):
                # Any: a Unix socket's address is a path, not the tuple UDP's is.
                target: Any = self.nowhere if number == via else addr
                transport.sendto(numbered(number), target)
                sizes.append(transport.get_write_buffer_size())
            with self.condition:
                self.bursts.append(sizes)
                self.condition.notify_all()
        elif data == b"oversize":
            transport.sendto(b"x" * OVERSIZE, addr)
            with self.condition:
                self.buffered_after_oversize.append(transport.get_write_buffer_size())
            transport.sendto(b"after", addr)
        elif data in (b"close then send", b"abort then send"):
            if data.startswith(b"close"):
                transport.close()
            else:
                transport.abort()
            transport.sendto(b"sent after close()", addr)
            with self.condition:
                self.after_close.append((transport.is_closing(), transport.get_write_buffer_size()))
                self.condition.notify_all()
        else:
            transport.sendto(b"re:" + data, addr)

    def error_received(self, exc: OSError) -> None:
        with self.condition:
            self.errors.append(exc)
            self.condition.notify_all()
        if self.on_error is not None:
            assert self.transport is not None
            self.on_error(self.transport, exc)
        if self.raising:
            raise RuntimeError("error_received() fails on purpose")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()

    # -- from the test's thread ----------------------------------------------------------

    def wait(self, predicate: Callable[[], object], what: str) -> None:
        with self.condition:
            if not self.condition.wait_for(predicate, PROMPT):
                raise AssertionError(f"{what}: not within {PROMPT} s; received {self.received}")

    def wait_burst(self) -> list[int]:
        """The buffer sizes the first burst saw, once it has been sent."""
        self.wait(lambda: self.bursts, "a burst sent")
        with self.condition:
            return list(self.bursts[0])

    def snapshot_errors(self) -> list[OSError]:
        with self.condition:
            return list(self.errors)


# -- servers and clients ---------------------------------------------------------------


@pytest.fixture
def directory() -> Iterator[str]:
    """A directory for Unix socket paths, short enough for ``sun_path`` (108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="pollkit-dgram-") as path:
        assert len(path) < 80, path
        yield path


def server_path(directory: str) -> str:
    return os.path.join(directory, "server")


def client_path(directory: str) -> str:
    return os.path.join(directory, "client")


@contextlib.contextmanager
def unix_datagram_server(
    poller: Poller, protocol: Queueing, directory: str, **options: Any
) -> Iterator[DatagramServer]:
    """A :class:`DatagramServer` whose socket is a Unix datagram socket at :func:`server_path`.

    Its ``SO_SNDBUF`` is the kernel's minimum, so a burst of :data:`SIZE`
    datagrams that nobody reads is refused after a few (see the module
    docstring).  The server owns the socket once made, and closes it; a
    constructor that raises leaves it to be closed here.  Not serving yet:
    wrap it in ``running()``.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # raised to the minimum
        sock.bind(server_path(directory))
        server = DatagramServer(poller, lambda: protocol, sock=sock, **options)
    except BaseException:
        sock.close()
        raise
    with server:
        yield server


@contextlib.contextmanager
def unix_client(directory: str) -> Iterator[socket.socket]:
    """A Unix datagram socket at :func:`client_path` that reads only when the test does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(client_path(directory))
        sock.settimeout(PROMPT)
        yield sock
    finally:
        sock.close()


@contextlib.contextmanager
def udp_client() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(PROMPT)
        yield sock
    finally:
        sock.close()


def receive(sock: socket.socket, count: int, sender: Any) -> list[bytes]:
    """The next ``count`` datagrams on ``sock``, each within its timeout, all from ``sender``."""
    datagrams = []
    for _ in range(count):
        data, address = sock.recvfrom(65536)
        assert address == sender
        datagrams.append(data)
    return datagrams


def left_over(sock: socket.socket, limit: int = 1000) -> list[bytes]:
    """What ``sock`` holds already, without waiting (at most ``limit`` datagrams)."""
    sock.setblocking(False)
    datagrams = []
    for _ in range(limit):
        try:
            datagrams.append(sock.recv(65536))
        except BlockingIOError:
            break
    return datagrams


class State(NamedTuple):
    """What the layer shows of its queue, read on the loop's thread."""

    buffered: int  # transport.get_write_buffer_size()
    pending_bytes: int  # stats().pending_bytes
    paused: int  # stats().paused: 1 while reading is held
    events: int  # what the server's socket is registered for


def state(server: DatagramServer, protocol: Queueing) -> State:
    def read() -> State:
        transport = protocol.transport
        assert transport is not None
        stats = server.stats()
        fd = transport.get_extra_info("socket").fileno()
        return State(
            transport.get_write_buffer_size(),
            stats.pending_bytes,
            stats.paused,
            int(server.poller.get_registration(fd).events),
        )

    return on_loop(server, read)


def wait_state(server: DatagramServer, protocol: Queueing, expected: State) -> None:
    seen: list[State] = []

    def reached() -> bool:
        seen.append(state(server, protocol))
        return seen[-1] == expected

    try:
        wait_until(reached, what=f"the layer in {expected}")
    except AssertionError:
        raise AssertionError(f"the layer never reached {expected}; last {seen[-1:]}") from None


def settle(server: DatagramServer, turns: int = 3) -> None:
    """Let the loop go round ``turns`` times: what waited in the kernel was offered to it."""
    for _ in range(turns):
        on_loop(server, lambda: None)


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "pollkit.server" and record.levelno == level
    ]


# -- the queue and max_buffer ----------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_refused_sendto_is_queued_counted_and_sent_in_order_once_writable(
    poller: Poller, directory: str
) -> None:
    count = 30
    protocol = Queueing()
    with (
        unix_client(directory) as client,
        unix_datagram_server(poller, protocol, directory) as server,
        running(server, poller),
    ):
        address = server_path(directory)
        client.sendto(b"burst %d" % count, address)
        sizes = protocol.wait_burst()
        direct = sizes.count(0)
        assert 1 <= direct < count, f"the kernel took {direct} of {count} at once: {sizes}"
        # From the first refusal on, every datagram is queued (never sent past
        # the queue), and each one is counted.
        assert sizes == [0] * direct + [SIZE * n for n in range(1, count - direct + 1)]
        queued = sizes[-1]
        assert state(server, protocol) == State(queued, queued, 0, READ | WRITE)
        settle(server)  # nobody reads: nothing is sent, nothing is dropped
        assert state(server, protocol) == State(queued, queued, 0, READ | WRITE)

        assert receive(client, count, address) == [numbered(n) for n in range(count)]
        wait_state(server, protocol, State(0, 0, 0, READ))  # WRITE dropped with the queue
        client.sendto(b"ping", address)
        assert receive(client, 1, address) == [b"re:ping"]
    assert protocol.snapshot_errors() == []
    assert protocol.lost.is_set()
    assert len(poller) == 0


@pytest.mark.timeout(30)
def test_past_max_buffer_reading_stops_until_the_queue_drains_to_a_quarter(
    poller: Poller, directory: str
) -> None:
    count = 10
    max_buffer = 5 * SIZE
    protocol = Queueing()
    with (
        unix_client(directory) as client,
        unix_datagram_server(poller, protocol, directory, max_buffer=max_buffer) as server,
    ):
        address = server_path(directory)
        # Both wait in the kernel before the server reads at all: the burst
        # passes max_buffer inside one batch of reads, which must stop there.
        client.sendto(b"burst %d" % count, address)
        client.sendto(b"ping", address)
        with running(server, poller):
            sizes = protocol.wait_burst()
            queued = sizes[-1]
            assert queued > max_buffer, f"the kernel took too many at once: {sizes}"
            settle(server)
            assert protocol.received == [b"burst %d" % count]  # the ping waits, unread
            assert state(server, protocol) == State(queued, queued, 1, WRITE)

            # Reading the burst lets the queue drain; the ping is read once
            # the queue is at a quarter of max_buffer, and answered last.
            replies = receive(client, count + 1, address)
            assert replies == [*(numbered(n) for n in range(count)), b"re:ping"]
            wait_state(server, protocol, State(0, 0, 0, READ))
        with protocol.condition:
            assert protocol.received == [b"burst %d" % count, b"ping"]
            assert protocol.buffered_on_receipt[1] <= server.max_buffer // 4
    assert len(poller) == 0


# -- errors ----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_failed_sendto_goes_to_error_received_and_is_not_queued(poller: Poller) -> None:
    protocol = Queueing()
    with (
        udp_client() as client,
        DatagramServer(poller, lambda: protocol, "127.0.0.1", 0) as server,
        running(server, poller),
    ):
        client.sendto(b"oversize", server.address)
        assert receive(client, 1, server.address) == [b"after"]
        client.sendto(b"ping", server.address)
        assert receive(client, 1, server.address) == [b"re:ping"]
    (error,) = protocol.snapshot_errors()
    assert isinstance(error, OSError)
    assert error.errno == errno.EMSGSIZE
    assert protocol.buffered_after_oversize == [0]
    assert len(poller) == 0


@pytest.mark.timeout(30)
def test_an_error_received_that_raises_is_logged_with_its_traceback_and_serving_goes_on(
    poller: Poller, caplog: pytest.LogCaptureFixture
) -> None:
    protocol = Queueing(raising=True)
    with (
        udp_client() as client,
        DatagramServer(poller, lambda: protocol, "127.0.0.1", 0) as server,
        running(server, poller),
    ):
        for number in range(2):
            client.sendto(b"oversize", server.address)
            assert receive(client, 1, server.address) == [b"after"]
            client.sendto(b"ping %d" % number, server.address)
            assert receive(client, 1, server.address) == [b"re:ping %d" % number]
    assert [error.errno for error in protocol.snapshot_errors()] == [errno.EMSGSIZE] * 2
    records = [
        record
        for record in caplog.records
        if record.name == "pollkit.server" and "error_received() raised" in record.getMessage()
    ]
    assert len(records) == 2, caplog.text
    for record in records:
        assert record.levelno == logging.ERROR
        assert record.getMessage() == "Queueing.error_received() raised"
        assert record.exc_info is not None
        assert record.exc_info[0] is RuntimeError
        assert "fails on purpose" in str(record.exc_info[1])
    assert "Traceback (most recent call last)" in caplog.text
    assert "in error_received" in caplog.text
    assert len(poller) == 0


def closed_udp_port() -> tuple[str, int]:
    """A loopback UDP address nobody listens on (bound, then closed): it answers ICMP."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        address: tuple[str, int] = sock.getsockname()
    return address


@pytest.mark.timeout(30)
def test_an_error_reported_by_recvfrom_goes_to_error_received(poller: Poller) -> None:
    # Only a connected UDP socket hears of an ICMP "port unreachable": its
    # next recvfrom() raises ECONNREFUSED.  The protocol connects the server's
    # socket to a closed port and probes it (ICMP may be rate-limited, so
    # again on a timer until the error comes); error_received() connects
    # the socket to the test's client, which the server then serves.
    dead = closed_udp_port()
    servers: list[DatagramServer] = []
    probes: list[int] = []
    reconnected = threading.Event()

    with udp_client() as client:

        def probe(transport: DatagramTransport) -> None:
            if protocol.errors or len(probes) >= PROBES:
                return
            probes.append(1)
            transport.sendto(b"probe", dead)
            servers[0].call_later(0.1, probe, transport)

        def made(transport: DatagramTransport) -> None:
            transport.get_extra_info("socket").connect(dead)
            probe(transport)

        def on_error(transport: DatagramTransport, exc: OSError) -> None:
            transport.get_extra_info("socket").connect(client.getsockname())
            reconnected.set()

        protocol = Queueing(on_made=made, on_error=on_error)
        with DatagramServer(poller, lambda: protocol, "127.0.0.1", 0) as server:
            servers.append(server)
            with running(server, poller):
                assert reconnected.wait(PROMPT), "error_received() not called"
                client.sendto(b"ping", server.address)
                assert receive(client, 1, server.address) == [b"re:ping"]
    (error,) = protocol.snapshot_errors()
    assert isinstance(error, ConnectionRefusedError)
    assert protocol.received == [b"ping"]
    assert len(poller) == 0


@pytest.mark.timeout(30)
def test_a_queued_datagram_that_fails_goes_to_error_received_and_the_rest_follow_in_order(
    poller: Poller, directory: str
) -> None:
    count, via = 10, 6
    protocol = Queueing(nowhere=os.path.join(directory, "nobody"))
    with (
        unix_client(directory) as client,
        unix_datagram_server(poller, protocol, directory) as server,
        running(server, poller),
    ):
        address = server_path(directory)
        client.sendto(b"burst %d via %d" % (count, via), address)
        sizes = protocol.wait_burst()
        assert sizes[via] > 0, f"datagram {via} was not queued: {sizes}"
        assert protocol.snapshot_errors() == []  # not tried yet
        replies = receive(client, count - 1, address)
        assert replies == [numbered(n) for n in range(count) if n != via]
        wait_state(server, protocol, State(0, 0, 0, READ))
        (error,) = protocol.snapshot_errors()
        assert isinstance(error, FileNotFoundError)
        client.sendto(b"ping", address)
        assert receive(client, 1, address) == [b"re:ping"]
    assert len(poller) == 0


# -- stopping --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_graceful_stop_sends_the_queue_within_the_grace_period(
    poller: Poller, directory: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pollkit.server")
    count = 20
    protocol = Queueing()
    with (
        unix_client(directory) as client,
        unix_datagram_server(poller, protocol, directory) as server,
    ):
        address = server_path(directory)
        with running(server, poller) as thread:
            client.sendto(b"burst %d" % count, address)
            queued = protocol.wait_burst()[-1]
            assert queued > 0
            server.shutdown()
            # The drain cannot end while the client reads nothing: the loop
            # goes on, no longer reading, and the queue waits.
            wait_state(server, protocol, State(queued, queued, 0, WRITE))
            replies = receive(client, count, address)
            thread.join(PROMPT)
            assert not thread.is_alive()
        assert replies == [numbered(n) for n in range(count)]
        assert left_over(client) == []
    assert protocol.lost.is_set()
    assert messages(caplog, logging.INFO) == [
        f"shutting down: flushing {queued // SIZE} queued datagrams (at most 5 s)"
    ]
    assert messages(caplog, logging.WARNING) == []
    assert len(poller) == 0


@pytest.mark.timeout(30)
def test_past_the_grace_period_the_queue_is_dropped_and_the_warning_counts_it(
    poller: Poller, directory: str, caplog: pytest.LogCaptureFixture
) -> None:
    grace_period = 0.2
    count = 20
    protocol = Queueing()
    with (
        unix_client(directory) as client,
        unix_datagram_server(poller, protocol, directory, grace_period=grace_period) as server,
    ):
        address = server_path(directory)
        with running(server, poller) as thread:
            client.sendto(b"burst %d" % count, address)
            sizes = protocol.wait_burst()
            direct, queued = sizes.count(0), sizes[-1]
            asked = time.monotonic()
            server.shutdown()
            thread.join(PROMPT)
            stopped = time.monotonic()
            assert not thread.is_alive()
        assert stopped - asked >= grace_period
        assert left_over(client) == [numbered(n) for n in range(direct)]
    assert protocol.lost.is_set()
    assert messages(caplog, logging.WARNING) == [
        f"grace period over: dropping {queued // SIZE} queued datagrams ({queued} bytes)"
    ]
    assert len(poller) == 0


@pytest.mark.timeout(30)
def test_an_abort_drops_the_queue_at_once(poller: Poller, directory: str) -> None:
    count = 20
    protocol = Queueing()
    with (
        unix_client(directory) as client,
        # A grace period longer than the test: only an abort ends it in time.
        unix_datagram_server(poller, protocol, directory, grace_period=3600) as server,
    ):
        address = server_path(directory)
        with running(server, poller) as thread:
            client.sendto(b"burst %d" % count, address)
            direct = protocol.wait_burst().count(0)
            server.shutdown(graceful=False)
            thread.join(PROMPT)
            assert not thread.is_alive()
        assert left_over(client) == [numbered(n) for n in range(direct)]
    assert protocol.lost.is_set()
    assert len(poller) == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["close", "abort"])
def test_sendto_after_close_is_a_no_op(poller: Poller, directory: str, how: str) -> None:
    # close() and abort() ask for a stop; from then on is_closing() is true
    # and sendto() is a no-op, in the same callback too (before the drain).
    protocol = Queueing()
    with (
        unix_client(directory) as client,
        unix_datagram_server(poller, protocol, directory) as server,
    ):
        with running(server, poller) as thread:
            client.sendto(b"%s then send" % how.encode(), server_path(directory))
            thread.join(PROMPT)
            assert not thread.is_alive()
        assert left_over(client) == []
    assert protocol.after_close == [(True, 0)]
    assert protocol.lost.is_set()
    assert len(poller) == 0
