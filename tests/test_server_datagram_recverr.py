"""The datagram server and ICMP errors, with and without ``IP_RECVERR``.

A protocol that sends to a closed UDP port on loopback makes the kernel
answer with an ICMP "port unreachable".  What the server's socket then sees
depends on ``IP_RECVERR`` (``IPV6_RECVERR``), which an application may set on
``transport.get_extra_info("socket")`` in ``connection_made()``:

* Without it, an unconnected UDP socket hears nothing of the error (Linux
  reports ICMP errors to an unconnected socket only with ``IP_RECVERR``):
  no ``error_received()``, and the socket stays quiet.  A connected socket
  (``DatagramServer(sock=...)``) gets it as its pending error, raised once.
* With it, the kernel sets the socket's pending error (which the next
  ``recvfrom()`` or ``sendto()`` raises, once) *and* queues the error on the
  socket's error queue, where it stays until read with
  ``recvmsg(..., MSG_ERRQUEUE)``.  While the queue is not empty, poll
  reports ``ERROR`` (select: readable and writable) on every call, so a
  server that never reads the queue is called again and again and never
  blocks: a busy loop.  A local send error (``EMSGSIZE`` with
  ``IPV6_DONTFRAG``) is raised by ``sendto()`` and queued as well.

A spin is counted, not timed: after the error, the test makes the loop go
round a fixed number of times (each ``on_loop()`` call is one ``poll()``
that returns) and counts how many of those returns reported the server's
socket.  An idle server reports it on none of them (a few under ``chaos:``,
whose spurious reports are allowed); a spinning one on every one.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import PROMPT, Delegating
from echo_helpers import wait_until
from pollkit import Poller
from pollkit.server import DatagramProtocol, DatagramServer, DatagramTransport
from server_helpers import on_loop, running

# Linux's values, for a Python whose socket module lacks the names.
IP_RECVERR: int = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR: int = getattr(socket, "IPV6_RECVERR", 25)
IPV6_DONTFRAG: int = getattr(socket, "IPV6_DONTFRAG", 67)

#: Turns of the loop over which an idle server's socket is watched.
TURNS = 30
#: Reports of the server's socket in those turns that still count as idle.
IDLE_REPORTS = 10
#: Datagrams sent to the closed port, one per client request.
PROBES = 3
#: The largest UDP payload over IPv6: with its headers, past loopback's MTU.
TOO_BIG_FOR_LOOPBACK = 65527

LOOPBACK = {"ipv4": "127.0.0.1", "ipv6": "::1"}


def _loopback_usable(host: str) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


@pytest.fixture(params=list(LOOPBACK))
def host(request: pytest.FixtureRequest) -> str:
    address = LOOPBACK[request.param]
    if not _loopback_usable(address):
        pytest.skip(f"no {request.param} loopback ({address}) here")
    return address


def closed_address(host: str) -> tuple[Any, ...]:
    """A UDP address on ``host`` that nothing listens on (bound once, then closed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        address: tuple[Any, ...] = sock.getsockname()
    return address


class ReportCounter(Delegating):
    """Counts, per fd, the ``poll()`` returns that reported it (read it on the loop)."""

    def __init__(self, inner: Poller) -> None:
        super().__init__(inner)
        self.reports: dict[int, int] = {}

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        ready = self.inner.poll(timeout, max_events)
        for fd, _ in ready:
            self.reports[fd] = self.reports.get(fd, 0) + 1
        return ready


class Prober(DatagramProtocol):
    """Answers each request, then acts on it: ``probe`` sends to a closed port.

    ``big`` sends a datagram too large for loopback with ``IPV6_DONTFRAG``
    set (a local ``EMSGSIZE``); anything else is answered ``re:`` + data.
    The answer goes first: a ``sendto()`` made while the socket holds a
    pending ICMP error fails with that error instead of sending -- which
    ``probe first`` does on purpose (the ICMP error for a loopback datagram
    is in before its ``sendto()`` returns, as a rule).
    """

    def __init__(self, recverr: bool, closed: tuple[Any, ...]) -> None:
        self.recverr = recverr
        self.closed = closed
        self.transport: DatagramTransport | None = None
        self.fd = -1
        self.errors: list[Exception] = []
        self.condition = threading.Condition()

    def connection_made(self, transport: DatagramTransport) -> None:
        self.transport = transport
        sock: socket.socket = transport.get_extra_info("socket")
        self.fd = sock.fileno()
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
            if self.recverr:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        elif self.recverr:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        if data == b"probe first":
            self.transport.sendto(b"to nobody", self.closed)
            self.transport.sendto(b"re:" + data, addr)
            return
        self.transport.sendto(b"re:" + data, addr)
        if data == b"probe":
            self.transport.sendto(b"to nobody", self.closed)
        elif data == b"big":
            self.transport.sendto(b"x" * TOO_BIG_FOR_LOOPBACK, self.closed)

    def error_received(self, exc: Exception) -> None:
        with self.condition:
            self.errors.append(exc)
            self.condition.notify_all()

    def wait_errors(self, count: int) -> list[Exception]:
        with self.condition:
            arrived = self.condition.wait_for(lambda: len(self.errors) >= count, PROMPT)
            assert arrived, f"{count} x error_received(): only {self.errors} in {PROMPT} s"
            return list(self.errors)

    def error_list(self) -> list[Exception]:
        with self.condition:
            return list(self.errors)


class Setup:
    """A served :class:`Prober`, a client socket, and the counter under the server."""

    def __init__(
        self,
        server: DatagramServer,
        protocol: Prober,
        client: socket.socket,
        counter: ReportCounter,
    ) -> None:
        self.server = server
        self.protocol = protocol
        self.client = client
        self.counter = counter

    def ask(self, data: bytes) -> None:
        """Send ``data``; the answer must come back (the server serves)."""
        self.client.sendto(data, self.server.address)
        reply, sender = self.client.recvfrom(65536)
        assert sender[:2] == self.server.address
        assert reply == b"re:" + data

    def idle_reports(self) -> int:
        return idle_reports(self.server, self.counter, self.protocol.fd)


def idle_reports(server: DatagramServer, counter: ReportCounter, fd: int) -> int:
    """Reports of ``fd`` over :data:`TURNS` turns of the server's loop."""
    before = on_loop(server, lambda: counter.reports.get(fd, 0))
    for _ in range(TURNS):
        on_loop(server, lambda: None)
    after = on_loop(server, lambda: counter.reports.get(fd, 0))
    return after - before


@contextlib.contextmanager
def prober(poller: Poller, host: str, *, recverr: bool) -> Iterator[Setup]:
    counter = ReportCounter(poller)
    protocols: list[Prober] = []
    closed = closed_address(host)

    def factory() -> Prober:
        protocols.append(Prober(recverr, closed))
        return protocols[-1]

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with (
        DatagramServer(counter, factory, host, 0) as server,
        socket.socket(family, socket.SOCK_DGRAM) as client,
    ):
        client.bind((host, 0))
        client.settimeout(PROMPT)
        with running(server, counter):
            wait_until(lambda: protocols, what="the datagram protocol made")
            protocol = protocols[0]
            # connection_made() has returned once the loop runs a callback.
            on_loop(server, lambda: None)
            yield Setup(server, protocol, client, counter)
    assert len(poller) == 0, "the server left registrations in the caller's poller"


def _refused(errors: list[Exception]) -> None:
    for error in errors:
        assert isinstance(error, ConnectionRefusedError), errors
        assert error.errno == errno.ECONNREFUSED, errors


# -- with IP_RECVERR -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_with_recverr_each_icmp_error_reaches_error_received_once(
    poller: Poller, host: str
) -> None:
    with prober(poller, host, recverr=True) as setup:
        for number in range(1, PROBES + 1):
            setup.ask(b"probe")
            _refused(setup.protocol.wait_errors(number))
        setup.idle_reports()  # time for a second report of any of them
        setup.ask(b"after the errors")
        errors = setup.protocol.error_list()
    assert len(errors) == PROBES, errors
    _refused(errors)


@pytest.mark.timeout(30)
def test_with_recverr_an_icmp_error_a_sendto_raises_is_reported_once(
    poller: Poller, host: str
) -> None:
    """The error queue holds the error the next ``sendto()`` raised: one report, not two."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with (
        prober(poller, host, recverr=True) as setup,
        socket.socket(family, socket.SOCK_DGRAM) as other,
    ):
        other.bind((host, 0))
        # The answer is lost when its sendto() raises the probe's error: not awaited.
        other.sendto(b"probe first", setup.server.address)
        _refused(setup.protocol.wait_errors(1))
        setup.idle_reports()  # time for a second report of the same error
        setup.ask(b"after the error")
        errors = setup.protocol.error_list()
    assert len(errors) == 1, errors
    _refused(errors)


@pytest.mark.timeout(30)
def test_with_recverr_the_server_is_idle_after_an_icmp_error(poller: Poller, host: str) -> None:
    with prober(poller, host, recverr=True) as setup:
        setup.ask(b"probe")
        setup.protocol.wait_errors(1)
        reports = setup.idle_reports()
        setup.ask(b"after the error")
    assert reports < IDLE_REPORTS, (
        f"the server's socket was reported on {reports} of {TURNS} turns of an idle loop"
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("recverr", [True, False], ids=["recverr", "no-recverr"])
def test_a_local_send_error_is_reported_once_and_not_again(poller: Poller, recverr: bool) -> None:
    """``sendto()`` raises EMSGSIZE; with IP_RECVERR the kernel queues it as well
    (origin LOCAL), and the queued copy must not be reported a second time."""
    if not _loopback_usable("::1"):
        pytest.skip("no IPv6 loopback here")
    with prober(poller, "::1", recverr=recverr) as setup:
        setup.ask(b"big")
        setup.protocol.wait_errors(1)
        reports = setup.idle_reports()
        setup.ask(b"after the error")
        errors = setup.protocol.error_list()
    assert [getattr(error, "errno", None) for error in errors] == [errno.EMSGSIZE], errors
    assert reports < IDLE_REPORTS, (
        f"the server's socket was reported on {reports} of {TURNS} turns of an idle loop"
    )


# -- without IP_RECVERR ----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_without_recverr_an_icmp_error_is_not_heard_and_the_server_stays_idle(
    poller: Poller, host: str
) -> None:
    with prober(poller, host, recverr=False) as setup:
        for _ in range(PROBES):
            setup.ask(b"probe")
        reports = setup.idle_reports()
        setup.ask(b"after the probes")
        errors = setup.protocol.error_list()
    # The kernel reports no ICMP error to an unconnected UDP socket without
    # IP_RECVERR: the layer must not make one up either.
    assert errors == []
    assert reports < IDLE_REPORTS, (
        f"the server's socket was reported on {reports} of {TURNS} turns of an idle loop"
    )


@pytest.mark.timeout(30)
def test_without_recverr_a_connected_socket_reports_an_icmp_error_once(
    poller: Poller, host: str
) -> None:
    """A connected socket hears of the error without IP_RECVERR: once, as its pending error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    closed = closed_address(host)
    counter = ReportCounter(poller)
    protocols: list[Prober] = []

    def factory() -> Prober:
        protocols.append(Prober(False, closed))
        return protocols[-1]

    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        sock.connect(closed)
        server = DatagramServer(counter, factory, sock=sock)
    except BaseException:
        sock.close()  # the server owns it only once its constructor has returned
        raise
    with server, running(server, counter):
        wait_until(lambda: protocols, what="the datagram protocol made")
        protocol = protocols[0]

        def send() -> None:
            assert protocol.transport is not None
            protocol.transport.sendto(b"to nobody", closed)

        on_loop(server, send)
        _refused(protocol.wait_errors(1))
        reports = idle_reports(server, counter, protocol.fd)
        errors = protocol.error_list()
    assert len(poller) == 0, "the server left registrations in the caller's poller"
    assert len(errors) == 1, errors
    _refused(errors)
    assert reports < IDLE_REPORTS, (
        f"the server's socket was reported on {reports} of {TURNS} turns of an idle loop"
    )
