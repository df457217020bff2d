"""chaos: each fault breaks a program that relies on the accident it takes away.

Each program below relies on something one driver happens to do and the
contract does not promise.  It passes on the plain driver; under
``chaos:`` with only that fault on, at its default rate, it fails for at
least one of the first :data:`SEEDS` seeds -- which is what makes the fault
useful: a bug shows within a few seeds.  Every program unregisters what it
registered, so it also runs clean under ``debug:``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from conftest import READ, WRITE, SocketPair, drain, fill_send_buffer
from pollkit import Poller, open_poller
from pollkit._backends import parse_backend
from pollkit._chaos import DEFAULT_RATES, FAULTS, ChaosPoller

#: How many seeds a fault gets to show.
SEEDS = 20

Program = Callable[[Poller], None]


def plain_spec(backend: str) -> str:
    """``backend`` without its ``chaos:`` prefix (``chaos:debug:poll`` -> ``debug:poll``)."""
    spec = parse_backend(backend)
    return str(spec._replace(prefixes=tuple(p for p in spec.prefixes if p != "chaos")))


def bare_driver(backend: str) -> str:
    """Only the driver of ``backend``, for programs that misuse it on purpose.

    ``debug:`` would rightly warn about the misuse (a blocking fd, a change
    from another thread with no ``wakeup()``), and warnings are errors here.
    """
    return parse_backend(backend).driver


def only(fault: str) -> dict[str, float]:
    """Rates with every fault off but ``fault``, which keeps its default rate."""
    return {name: (DEFAULT_RATES[name] if name == fault else 0.0) for name in FAULTS}


def seeds_that_break(backend: str, fault: str, program: Program) -> list[int]:
    """The seeds (of the first :data:`SEEDS`) under which ``program`` fails; stops at the first."""
    for seed in range(SEEDS):
        with ChaosPoller(open_poller(plain_spec(backend)), seed=seed, rates=only(fault)) as chaos:
            try:
                program(chaos)
            except (AssertionError, BlockingIOError):
                return [seed]
    return []


def check_fault_catches(backend: str, fault: str, program: Program) -> None:
    with open_poller(plain_spec(backend)) as plain:
        program(plain)  # relies on the accident: fine on the plain driver
    assert seeds_that_break(backend, fault, program), (
        f"no seed of {SEEDS} broke the program with {fault!r} on"
    )


@contextlib.contextmanager
def registered(poller: Poller, sock: socket.socket, events: int, **flags: bool) -> Iterator[None]:
    poller.register(sock, events, **flags)
    try:
        yield
    finally:
        poller.unregister(sock)


@pytest.mark.timeout(60)
def test_split_breaks_code_that_expects_every_ready_fd_at_once(
    poller_backend: str, make_socketpair: Callable[[], SocketPair]
) -> None:
    pairs = [make_socketpair() for _ in range(4)]
    for _, peer in pairs:
        peer.send(b"x")

    def program(poller: Poller) -> None:
        with contextlib.ExitStack() as stack:
            for sock, _ in pairs:
                stack.enter_context(registered(poller, sock, READ))
            ready = {fd for fd, _ in poller.poll(1.0)}
            assert ready == {sock.fileno() for sock, _ in pairs}, "one poll() missed a ready fd"

    check_fault_catches(poller_backend, "split", program)


@pytest.mark.timeout(60)
def test_shuffle_breaks_code_that_expects_an_order(
    poller_backend: str, make_socketpair: Callable[[], SocketPair]
) -> None:
    pairs = [make_socketpair() for _ in range(4)]

    def program(poller: Poller) -> None:
        with contextlib.ExitStack() as stack:
            # Registered and made ready in fd order: every plain driver keeps that order.
            for sock, peer in pairs:
                stack.enter_context(registered(poller, sock, READ))
                peer.send(b"x")
            order = [fd for fd, _ in poller.poll(1.0)]
        for sock, _ in pairs:
            drain(sock)
        assert order == sorted(order), f"reported out of order: {order}"

    check_fault_catches(poller_backend, "shuffle", program)


@pytest.mark.timeout(60)
def test_early_return_breaks_code_that_takes_an_empty_result_for_the_timeout(
    poller_backend: str, socketpair: SocketPair
) -> None:
    sock, _ = socketpair
    timeout = 0.05

    def program(poller: Poller) -> None:
        with registered(poller, sock, READ):
            started = time.monotonic()
            assert poller.poll(timeout) == []
            assert time.monotonic() - started >= timeout, "poll() returned before its timeout"

    check_fault_catches(poller_backend, "early", program)


@pytest.mark.timeout(60)
def test_spurious_read_breaks_code_that_assumes_a_read_report_means_data(
    poller_backend: str, socketpair: SocketPair
) -> None:
    sock, _ = socketpair  # non-blocking: a spurious report raises BlockingIOError

    def program(poller: Poller) -> None:
        with registered(poller, sock, READ):
            for _ in range(10):
                for _fd, mask in poller.poll(0):
                    if mask & READ:
                        sock.recv(1)  # "READ was reported, so there is data"

    check_fault_catches(poller_backend, "spurious", program)


@pytest.mark.timeout(60)
def test_spurious_write_breaks_code_that_assumes_a_write_report_means_room(
    poller_backend: str, socketpair: SocketPair
) -> None:
    sock, _ = socketpair
    fill_send_buffer(sock)

    def program(poller: Poller) -> None:
        with registered(poller, sock, WRITE):
            for _ in range(10):
                for _fd, mask in poller.poll(0):
                    if mask & WRITE:
                        sock.send(b"x" * 65536)  # "WRITE was reported, so there is room"

    check_fault_catches(poller_backend, "spurious", program)


@pytest.mark.timeout(60)
def test_strict_edges_break_code_that_relies_on_a_rereport_without_draining(
    poller_backend: str, socketpair: SocketPair
) -> None:
    with open_poller(plain_spec(poller_backend)) as probe:
        if "edge" not in probe.features:
            pytest.skip(f"{poller_backend} has no edge mode (epoll only)")
    sock, peer = socketpair

    def program(poller: Poller) -> None:
        drain(sock)
        with registered(poller, sock, READ, edge=True):
            peer.send(b"a")
            assert [fd for fd, _ in poller.poll(1.0)] == [sock.fileno()]
            sock.recv(1)  # reads one byte per report, never until EAGAIN
            for _ in range(3):
                peer.send(b"bc")
                # epoll re-reports on new data; the contract does not promise it.
                assert [fd for fd, _ in poller.poll(0.3)] == [sock.fileno()], "no re-report"
                sock.recv(1)
        drain(sock)

    check_fault_catches(poller_backend, "edge", program)


@pytest.mark.timeout(60)
def test_hold_breaks_code_that_registers_from_another_thread_without_wakeup(
    poller_backend: str, socketpair: SocketPair
) -> None:
    sock, peer = socketpair
    peer.send(b"x")  # ready from the start: only the registration is missing
    timeout = 0.3

    def program(poller: Poller) -> None:
        # The other thread waits a little so that the poll() below is blocked
        # by then; no event can say "blocked in poll()".  If it is late,
        # the registration is simply seen at once and the run passes.
        go = threading.Event()

        def register_later() -> None:
            go.wait(0.05)
            poller.register(sock, READ)  # and no wakeup(): the bug

        thread = threading.Thread(target=register_later)
        thread.start()
        try:
            ready = poller.poll(timeout)
        finally:
            thread.join()
            poller.unregister(sock)
        assert [fd for fd, _ in ready] == [sock.fileno()], "the blocked poll() missed it"

    # The bug itself, which debug: warns about on poll and select: use the bare driver.
    backend = bare_driver(poller_backend)
    with open_poller(backend) as plain:
        kernel_object = "fileno" in plain.features
        if not kernel_object:
            # poll and select see the change only at their next call: the
            # plain driver already shows the bug, as chaos: does on epoll.
            with pytest.raises(AssertionError, match="missed it"):
                program(plain)
    if kernel_object:
        check_fault_catches(backend, "hold", program)
    else:
        assert seeds_that_break(backend, "hold", program)


@pytest.mark.timeout(60)
def test_register_then_wakeup_works_under_hold(poller_backend: str, socketpair: SocketPair) -> None:
    """The right way -- register from another thread, then ``wakeup()`` -- works under chaos."""
    sock, peer = socketpair
    peer.send(b"x")
    for seed in range(5):
        with ChaosPoller(
            open_poller(plain_spec(poller_backend)), seed=seed, rates=only("hold")
        ) as chaos:

            def register_then_wake(poller: Poller = chaos) -> None:
                poller.register(sock, READ)
                poller.wakeup()

            thread = threading.Thread(target=register_then_wake)
            thread.start()
            seen: list[int] = []
            deadline = time.monotonic() + 5.0
            while not seen and time.monotonic() < deadline:
                seen = [fd for fd, _ in chaos.poll(5.0)]
            thread.join()
            chaos.unregister(sock)
            assert seen == [sock.fileno()], f"seed {seed}"
