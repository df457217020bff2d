"""Server layer, line 5: limits by default.

``max_clients``: more are accepted and closed at once.  ``accept()``
failing with EMFILE backs off without a busy loop and resumes when a
connection closes.  A driver's ``FdOutOfRangeError`` closes that connection
only.  ``idle_timeout`` (per server, overridable per connection with
``set_idle_timeout``) closes a connection with no progress either way.
Fairness: bounded accepts and bytes per readiness report, so one busy
socket cannot hold up the rest.

Fairness is shown with counts, never with clocks: the loop is held (a
callback waits on an event) while work piles up in the kernel, then
released; a counting poller wrapper numbers the loop's turns, and the tests
look at which turn served what.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from echo_helpers import (
    PROMPT,
    ServerProcess,
    connect,
    recv_exactly,
    sees_eof,
    unread_by_server,
    wait_until,
)
from pollkit import FD_SETSIZE, FdOutOfRangeError, Poller
from pollkit.server import Server, Transport
from pollkit.server._loop import FIRST_READ_SIZE, READ_SIZE
from server_helpers import (
    CallLog,
    Made,
    Producer,
    Recorder,
    check_lifecycle,
    counting,
    on_loop,
    pattern,
    serving,
    wait_unread,
)

TESTS = Path(__file__).resolve().parent


def round_trip(sock: socket.socket, line: bytes = b"ping\n") -> None:
    sock.sendall(line)
    assert recv_exactly(sock, len(line)) == line.upper()


# -- max_clients ------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_max_clients_accepts_and_closes_the_rest(poller: Poller) -> None:
    log = CallLog()
    with serving(poller, log.factory, max_clients=2) as server:
        first = connect(server.address)
        second = connect(server.address)
        try:
            log.wait_protocols(2)
            with connect(server.address) as refused:
                assert sees_eof(refused)
            wait_until(lambda: server.stats().rejected_max_clients == 1, what="a rejection")
            assert len(log.protocols) == 2, "a protocol was made for a refused connection"
            assert on_loop(server, lambda: server.stats().connections) == 2
            # A slot frees up: the next client is served.
            first.close()
            log.protocols[0].wait_for("connection_lost")
            with connect(server.address) as later:
                later.sendall(b"in")
                (_, _, third) = log.wait_protocols(3)
                assert third.wait_received(2) == b"in"
                stats = on_loop(server, server.stats)
                assert (stats.accepted, stats.rejected_max_clients) == (3, 1)
        finally:
            first.close()
            second.close()
    for protocol in log.protocols:
        check_lifecycle(protocol)


# -- out of fds --------------------------------------------------------------------

#: Fds left to the server for connections once its rlimit is lowered.
SPARE_FDS = 8
CLIENTS = 24
#: poll() calls the server may make in WINDOW seconds while accept() keeps
#: failing: a back-off makes a handful, a busy loop many thousands.
MAX_POLLS_IN_WINDOW = 60
WINDOW = 0.5

EMFILE_SCRIPT = """
import os, resource, sys, threading
sys.path.insert(0, sys.argv[1])
from pollkit import open_poller
from pollkit.server import Server
from server_helpers import UpperLines, counting

poller = counting(open_poller())
server = Server(poller, UpperLines, "127.0.0.1", 0)
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
limit = max(int(fd) for fd in os.listdir("/proc/self/fd")) + 1 + SPARE
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))

def control():
    for line in sys.stdin:
        if line.strip() == "stop":
            server.shutdown()
            return
        s = server.stats()
        print(f"polls={poller.polls} pauses={s.accept_pauses} connections={s.connections}",
              file=sys.stderr, flush=True)

threading.Thread(target=control, daemon=True).start()
print(f"listening on port {server.address[1]}", file=sys.stderr, flush=True)
server.serve_forever()
server.close()
poller.close()
""".replace("SPARE", str(SPARE_FDS))

_STATS = re.compile(r"polls=(\d+) pauses=(\d+) connections=(\d+)")


def ask_stats(server: ServerProcess) -> tuple[int, int, int]:
    server.tell("stats")
    match = server.wait_for(_STATS)
    polls, pauses, connections = (int(group) for group in match.groups())
    return polls, pauses, connections


@pytest.mark.timeout(60)
def test_out_of_fds_backs_off_without_a_busy_loop_and_resumes(poller_backend: str) -> None:
    with ServerProcess(
        [str(TESTS)], backend=poller_backend, script=EMFILE_SCRIPT, stdin=subprocess.PIPE
    ) as server:
        port = int(server.wait_for(r"listening on port (\d+)").group(1))
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(connect(("127.0.0.1", port))) for _ in range(CLIENTS)]
            deadline = time.monotonic() + PROMPT
            while ask_stats(server)[1] == 0:
                assert time.monotonic() < deadline, f"accept() never backed off: {server.output()}"
            # The connections accepted before the limit are still served.
            round_trip(clients[0])

            before, _, connections = ask_stats(server)
            assert connections < CLIENTS
            time.sleep(WINDOW)  # a measurement window, not a synchronisation
            after, _, _ = ask_stats(server)
            assert after - before <= MAX_POLLS_IN_WINDOW, (
                f"{after - before} poll() calls in {WINDOW} s while accept() failed: a busy loop"
            )

            # Closing connections frees fds: clients waiting in the backlog get in.
            for sock in clients[:SPARE_FDS]:
                sock.close()
            for index, sock in enumerate(clients[SPARE_FDS : SPARE_FDS + SPARE_FDS // 2]):
                round_trip(sock, b"client %d\n" % index)
        server.tell("stop")
        assert server.wait() == 0, server.output()


# -- fds a driver cannot watch ---------------------------------------------------------


@contextlib.contextmanager
def every_low_fd_taken() -> Iterator[list[int]]:
    """Fill every free fd below FD_SETSIZE with /dev/null; yields the fillers."""
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    fillers = [null]
    try:
        while True:
            fd = os.dup(null)
            if fd >= FD_SETSIZE:
                os.close(fd)
                break
            fillers.append(fd)
        yield fillers
    finally:
        for fd in fillers:
            with contextlib.suppress(OSError):
                os.close(fd)


def refuses_high_fds(poller: Poller) -> bool:
    """Whether this driver raises FdOutOfRangeError for an fd >= FD_SETSIZE."""
    with socket.socket() as low:
        low.setblocking(False)
        high = fcntl.fcntl(low.fileno(), fcntl.F_DUPFD_CLOEXEC, FD_SETSIZE)
        try:
            try:
                poller.register(high, 1)
            except FdOutOfRangeError:
                return True
            poller.unregister(high)  # before the close, as the contract asks
            return False
        finally:
            os.close(high)


@pytest.mark.skipif(
    os.sysconf("SC_OPEN_MAX") < FD_SETSIZE + 100,
    reason="RLIMIT_NOFILE leaves no fds above FD_SETSIZE",
)
@pytest.mark.timeout(30)
def test_an_fd_the_driver_cannot_watch_closes_that_connection_only(
    poller: Poller, poller_factory: Callable[[], Poller]
) -> None:
    refused = refuses_high_fds(poller_factory())
    log = CallLog()
    with serving(poller, log.factory) as server, connect(server.address) as low_client:
        low_client.sendall(b"low")
        (first,) = log.wait_protocols(1)
        with every_low_fd_taken() as fillers:
            with connect(server.address) as high_client:
                high_client.sendall(b"high")
                if refused:
                    assert sees_eof(high_client)
                    wait_until(lambda: server.stats().rejected_fd_range == 1, what="a refusal")
                else:
                    assert log.wait_protocols(2)[1].wait_received(4) == b"high"
            for fd in fillers[1:SPARE_FDS]:
                os.close(fd)
            del fillers[1:SPARE_FDS]
            with connect(server.address) as later:
                later.sendall(b"later")
                assert log.wait_protocols(3 - refused)[-1].wait_received(5) == b"later"
        # The connection made before is untouched.
        assert first.wait_received(3) == b"low"
        assert not first.lost()
    assert server.stats().rejected_fd_range == (1 if refused else 0)


# -- idle timeout ----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_idle_timeout_closes_a_silent_connection_no_earlier_than_asked(poller: Poller) -> None:
    idle = 0.3
    log = CallLog()
    with serving(poller, log.factory, idle_timeout=idle) as server:
        started = time.monotonic()
        with connect(server.address) as sock:
            (protocol,) = log.wait_protocols(1)
            assert sees_eof(sock)
            assert time.monotonic() - started >= idle
            protocol.wait_for("connection_lost")
        assert server.stats().closed_idle == 1
    check_lifecycle(protocol)


@pytest.mark.timeout(30)
def test_idle_timeout_spares_a_connection_making_progress_either_way(poller: Poller) -> None:
    """A client that keeps sending, and one that keeps reading a long reply,
    both outlive the idle timeout several times over.  (The timeout is long
    enough that no stall of a loaded machine between two steps reaches it.)"""
    idle = 0.5
    made = Made(Producer)
    # Small kernel buffers, so that the reader's progress is the layer's progress too.
    with (
        serving(poller, made, idle_timeout=idle, socket_buffer=16384) as server,
        connect(server.address) as talker,
        connect(server.address, rcvbuf=4096) as reader,
    ):
        reader.sendall(b"%d\n" % (1 << 30))  # far more than it will read
        offset = 0
        end = time.monotonic() + 3 * idle
        for _ in range(100_000):
            if time.monotonic() > end:
                break
            talker.sendall(b"1\n")
            assert len(recv_exactly(talker, 1)) == 1
            chunk = recv_exactly(reader, 4096)
            assert chunk == pattern(offset, 4096)
            offset += 4096
            time.sleep(0.002)  # pacing the clients, not a synchronisation
        assert server.stats().closed_idle == 0


@pytest.mark.parametrize("own_timeout", [None, 60.0], ids=["none", "longer"])
@pytest.mark.timeout(30)
def test_set_idle_timeout_overrides_the_servers(poller: Poller, own_timeout: float | None) -> None:
    idle = 0.2

    def override(protocol: Recorder, transport: Transport) -> None:
        if protocol is protocol.log.protocols[0]:
            transport.set_idle_timeout(own_timeout)

    log = CallLog(connection_made=override)
    with serving(poller, log.factory, idle_timeout=idle) as server:
        with connect(server.address) as kept:
            (first,) = log.wait_protocols(1)
            # Two more connections come and are closed for idling, one after the other.
            for count in (2, 3):
                with connect(server.address) as idler:
                    assert sees_eof(idler)
                log.wait_protocols(count)[-1].wait_for("connection_lost")
            assert not first.lost()
            kept.sendall(b"still")
            assert first.wait_received(5) == b"still"
        assert server.stats().closed_idle == 2


@pytest.mark.timeout(30)
def test_set_idle_timeout_on_one_connection_of_a_server_without(poller: Poller) -> None:
    idle = 0.2

    def shorten(protocol: Recorder, transport: Transport) -> None:
        if protocol is protocol.log.protocols[0]:
            transport.set_idle_timeout(idle)

    log = CallLog(connection_made=shorten)
    with serving(poller, log.factory) as server:
        started = time.monotonic()
        with connect(server.address) as short, connect(server.address) as other:
            first, second = log.wait_protocols(2)
            assert sees_eof(short)
            assert time.monotonic() - started >= idle
            first.wait_for("connection_lost")
            other.sendall(b"here")
            assert second.wait_received(4) == b"here"
            assert not second.lost()
        assert server.stats().closed_idle == 1


# -- fairness ---------------------------------------------------------------------------

#: What "bounded" must at least mean for one readiness report of one
#: connection: far above any sensible read size, far below what the test queues.
READ_BOUND = 1024 * 1024


@contextlib.contextmanager
def loop_held(server: Server) -> Iterator[None]:
    """Hold the loop inside a callback for the block; work piles up in the kernel."""
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        held.set()
        release.wait(PROMPT)

    server.call_soon_threadsafe(hold)
    assert held.wait(PROMPT)
    try:
        yield
    finally:
        release.set()


@pytest.mark.timeout(60)
def test_accepts_per_readiness_report_are_bounded(poller: Poller) -> None:
    """A burst of connections waiting in the backlog does not hold up a
    client that is already connected: it is served before the burst is
    all accepted."""
    wrapper = counting(poller)
    burst = 300

    def note_turn(protocol: Recorder, *arguments: object) -> None:
        protocol.notes.setdefault("turns", []).append(wrapper.polls)

    log = CallLog(connection_made=note_turn, data_received=note_turn)
    with serving(wrapper, log.factory, backlog=1024) as server, contextlib.ExitStack() as stack:
        quiet = stack.enter_context(connect(server.address))
        (quiet_protocol,) = log.wait_protocols(1)
        with loop_held(server):
            quiet.sendall(b"ping")
            for _ in range(burst):
                stack.enter_context(connect(server.address))
        quiet_protocol.wait_received(4)
        log.wait_protocols(1 + burst)
        quiet_turn = quiet_protocol.notes["turns"][1]
        made_turns = [protocol.notes["turns"][0] for protocol in log.protocols[1:]]
    per_turn = max(made_turns.count(turn) for turn in set(made_turns))
    assert per_turn < burst, "the whole backlog was accepted in one readiness report"
    assert quiet_turn < max(made_turns), (
        f"the connected client was served at turn {quiet_turn}, after the whole burst "
        f"(turns {min(made_turns)}..{max(made_turns)})"
    )


@pytest.mark.timeout(60)
def test_bytes_per_readiness_report_are_bounded(poller: Poller) -> None:
    """A client with megabytes waiting in the server's kernel does not hold
    up one with four bytes: each readiness report reads a bounded amount
    from the busy one, and the quiet one is served after at most that."""
    wrapper = counting(poller)
    reads: list[tuple[int, int, int]] = []  # (turn, connection index, bytes)

    def note(protocol: Recorder, data: bytes) -> None:
        reads.append((wrapper.polls, protocol.log.protocols.index(protocol), len(data)))

    log = CallLog(data_received=note)
    with (
        # Large server buffers, so that far more than the bound waits in its kernel.
        serving(wrapper, log.factory, socket_buffer=4 * READ_BOUND) as server,
        connect(server.address) as busy,
        connect(server.address) as quiet,
    ):
        log.wait_protocols(2)
        with loop_held(server):
            busy.setblocking(False)
            busy_sent = 0
            chunk = b"b" * 65536
            with contextlib.suppress(BlockingIOError):
                for _ in range(10_000):
                    busy_sent += busy.send(chunk)
            quiet.sendall(b"ping")
            wait_unread(quiet, 4)
            queued = unread_by_server(busy)
        log.protocols[1].wait_received(4)
        log.protocols[0].wait_received(busy_sent, timeout=30)
    if queued <= 2 * READ_BOUND:
        pytest.skip(f"the kernel queued only {queued} bytes for the server (net.core.rmem_max?)")
    before_quiet = 0
    for _, index, count in reads:
        if index == 1:
            break
        before_quiet += count
    assert before_quiet <= READ_BOUND, (
        f"{before_quiet} bytes of the busy client were read before the quiet one's 4"
    )
    per_turn: dict[int, int] = {}
    for turn, index, count in reads:
        if index == 0:
            per_turn[turn] = per_turn.get(turn, 0) + count
    assert max(per_turn.values()) <= READ_BOUND, "a readiness report read without bound"


@pytest.mark.timeout(60)
def test_reads_start_small_and_grow_at_the_first_full_one(poller: Poller) -> None:
    """A connection's first read takes at most FIRST_READ_SIZE bytes (small
    requests get small bytes objects); one that fills it moves the connection
    to READ_SIZE reads, still bounded, and no byte is lost or reordered."""
    sizes: list[int] = []

    def note(protocol: Recorder, data: bytes) -> None:
        sizes.append(len(data))

    log = CallLog(data_received=note)
    payload = pattern(0, 3 * READ_SIZE)
    with (
        serving(poller, log.factory, socket_buffer=4 * READ_BOUND) as server,
        connect(server.address) as small,
        connect(server.address) as bulk,
    ):
        first, second = log.wait_protocols(2)
        small.sendall(b"PING\r\n")
        first.wait_received(6)
        assert bytes(first.received) == b"PING\r\n"
        with loop_held(server):
            bulk.sendall(payload)
            wait_unread(bulk, len(payload))
        second.wait_received(len(payload))
        assert bytes(second.received) == payload
    bulk_sizes = sizes[1:]
    assert bulk_sizes[0] == FIRST_READ_SIZE
    assert bulk_sizes[1] == READ_SIZE, f"reads did not grow after a full one: {bulk_sizes[:4]}"
    assert max(bulk_sizes) == READ_SIZE
