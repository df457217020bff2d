"""The RESP example on every driver, driven by clients nobody here wrote.

``examples/resp_server.py`` runs as a user runs it, one process per test,
with this run's driver spec as ``--backend``.  Debian's ``redis-cli`` checks
the replies (``--no-raw`` where the reply's type matters) and
``redis-benchmark`` puts pipelined load on it; raw sockets do what those
clients never do: pipelining in one write, malformed input, oversized
requests, beside a well-behaved client that must not notice.  Tests that
need ``redis-tools`` skip with the reason where it is not installed.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from conftest import PROMPT
from resp_helpers import (
    EXAMPLE,
    RunningServer,
    receive_all,
    receive_until,
    receive_until_closed,
    running_resp_server,
)

REDIS_CLI = shutil.which("redis-cli")
REDIS_BENCHMARK = shutil.which("redis-benchmark")

needs_redis_cli = pytest.mark.skipif(
    REDIS_CLI is None, reason="redis-cli (Debian's redis-tools) is not installed"
)
needs_redis_benchmark = pytest.mark.skipif(
    REDIS_BENCHMARK is None, reason="redis-benchmark (Debian's redis-tools) is not installed"
)

#: ``redis-cli`` shows an empty array so since 6.0, ``(empty list or set)`` before.
_EMPTY = {"(empty array)", "(empty list or set)"}


def encode(*args: bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    parts.extend(b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in args)
    return b"".join(parts)


def redis_cli(server: RunningServer, *command: str, no_raw: bool = True) -> str:
    """``redis-cli`` with one command; its output without the final newlines."""
    assert REDIS_CLI is not None
    options = ["--no-raw"] if no_raw else []
    result = subprocess.run(
        [REDIS_CLI, "-h", server.host, "-p", str(server.port), *options, *command],
        capture_output=True,
        text=True,
        timeout=PROMPT * 2,
        check=False,
    )
    assert result.stderr == "", result.stderr
    if not result.stdout.startswith("(error)"):
        # (An error reply's exit status changed between redis-cli versions.)
        assert result.returncode == 0, result
    return result.stdout.rstrip("\n")


def assert_stops_cleanly(server: RunningServer, signum: int = signal.SIGTERM) -> None:
    status, out, err = server.stop(signum)
    assert (status, out, err) == (0, b"", b"")


# -- replies, through redis-cli ----------------------------------------------------------


@needs_redis_cli
@pytest.mark.timeout(90)
def test_redis_cli_gets_every_commands_reply(poller_backend: str) -> None:
    with running_resp_server(poller_backend) as server:
        expected = [
            (["PING"], "PONG"),
            (["ping", "hi"], '"hi"'),
            (["ECHO", "hello world"], '"hello world"'),
            (["SET", "key", "value"], "OK"),
            (["GET", "key"], '"value"'),
            (["get", "missing"], "(nil)"),
            (["SET", "other", "x"], "OK"),
            (["EXISTS", "key", "missing", "other", "key"], "(integer) 3"),
            (["DEL", "key", "missing", "key"], "(integer) 1"),
            (["EXISTS", "key"], "(integer) 0"),
            (["INCR", "counter"], "(integer) 1"),
            (["incr", "counter"], "(integer) 2"),
            (["INCR", "other"], "(error) ERR value is not an integer or out of range"),
            (["SET", "big", str(2**63 - 1)], "OK"),
            (["INCR", "big"], "(error) ERR increment or decrement would overflow"),
            (
                ["FOO", "bar", "baz"],
                "(error) ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' ",
            ),
            (["GET"], "(error) ERR wrong number of arguments for 'get' command"),
            (["QUIT"], "OK"),
        ]
        for command, reply in expected:
            assert redis_cli(server, *command) == reply, command
        assert redis_cli(server, "CONFIG", "GET", "save") in _EMPTY
        assert redis_cli(server, "COMMAND") in _EMPTY
        # Raw output (redis-cli's default when not on a terminal): the bare values.
        assert redis_cli(server, "GET", "counter", no_raw=False) == "2"
        assert redis_cli(server, "PING", "hi there", no_raw=False) == "hi there"
        assert redis_cli(server, "INCR", "counter", no_raw=False) == "3"
        assert_stops_cleanly(server)


@needs_redis_cli
@pytest.mark.timeout(60)
def test_redis_cli_runs_commands_from_stdin_in_order(poller_backend: str) -> None:
    assert REDIS_CLI is not None
    commands = "".join(f"SET k{i} {i}\nINCR k{i}\nGET k{i}\n" for i in range(50))
    with running_resp_server(poller_backend) as server:
        result = subprocess.run(
            [REDIS_CLI, "-h", server.host, "-p", str(server.port), "--no-raw"],
            input=commands,
            capture_output=True,
            text=True,
            timeout=PROMPT * 4,
            check=False,
        )
        assert result.returncode == 0, result
        expected = "".join(f'OK\n(integer) {i + 1}\n"{i + 1}"\n' for i in range(50))
        assert result.stdout == expected
        assert_stops_cleanly(server)


# -- load, through redis-benchmark -------------------------------------------------------


@needs_redis_benchmark
@pytest.mark.timeout(180)
def test_redis_benchmark_pipelined_load(poller_backend: str) -> None:
    assert REDIS_BENCHMARK is not None
    with running_resp_server(poller_backend) as server:
        # A correctness run, not a measurement: small -n, no figure asserted.
        result = subprocess.run(
            [
                REDIS_BENCHMARK,
                "-h",
                server.host,
                "-p",
                str(server.port),
                "-t",
                "ping,set,get",
                "-P",
                "16",
                "-n",
                "2000",
                "-c",
                "10",
                "-q",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        assert result.returncode == 0, result
        # -q redraws a progress line with \r; the final result of each test follows the last.
        lines = [line.rsplit("\r", 1)[-1].strip() for line in result.stdout.splitlines()]
        reported = {
            match.group(1)
            for line in lines
            if (match := re.match(r"(\w+): [\d.]+ requests per second", line))
        }
        assert reported == {"PING_INLINE", "PING_MBULK", "SET", "GET"}, result.stdout
        # It set a key to a 3-byte value (-d's default); GET finds it.
        with server.connect() as client:
            client.sendall(encode(b"GET", b"key:__rand_int__"))
            assert re.fullmatch(rb"\$3\r\n...\r\n", receive_until(client, 9), re.DOTALL)
        assert_stops_cleanly(server)


# -- raw sockets: pipelining, malformed and oversized input ----------------------------


@pytest.mark.timeout(60)
def test_pipelined_requests_in_one_write_are_answered_in_order(poller_backend: str) -> None:
    count = 2000
    requests = b"".join(
        encode(b"SET", b"k%d" % i, b"v%d" % i) + b"INCR n\r\n" + encode(b"GET", b"k%d" % i)
        for i in range(count)
    )
    expected = b"".join(
        b"+OK\r\n:%d\r\n$%d\r\nv%d\r\n" % (i + 1, len(b"v%d" % i), i) for i in range(count)
    )
    with running_resp_server(poller_backend) as server:
        with server.connect() as client:
            client.sendall(requests + b"PING\r\n")
            assert receive_until(client, len(expected) + 7) == expected + b"+PONG\r\n"
        assert_stops_cleanly(server)


@pytest.mark.timeout(60)
def test_a_request_sent_a_byte_at_a_time_is_answered_once(poller_backend: str) -> None:
    request = encode(b"ECHO", b"split\r\nme") + b"PING\r\n"
    with running_resp_server(poller_backend) as server:
        with server.connect() as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for byte in request:
                client.sendall(bytes([byte]))
            assert receive_until(client, 22) == b"$9\r\nsplit\r\nme\r\n+PONG\r\n"
        assert_stops_cleanly(server)


def _exchange(client: socket.socket, request: bytes, reply: bytes) -> None:
    client.sendall(request)
    assert receive_until(client, len(reply)) == reply


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("garbage", "error"),
    [
        (b"*x\r\n", b"invalid multibulk length"),
        (b"*2\r\n$3\r\nGET\r\nfoo\r\n", b"expected '$', got 'f'"),
        (b"*1\r\n$-5\r\n", b"invalid bulk length"),
        (b'ECHO "unbalanced\r\n', b"unbalanced quotes in request"),
    ],
)
def test_malformed_input_gets_a_protocol_error_and_is_closed(
    poller_backend: str, garbage: bytes, error: bytes
) -> None:
    with running_resp_server(poller_backend) as server:
        with server.connect() as bystander, server.connect() as client:
            _exchange(bystander, b"SET shared 1\r\n", b"+OK\r\n")
            client.sendall(b"PING\r\n" + garbage + b"PING\r\n")
            # The good request before it is answered, then the error, then EOF.
            assert receive_all(client) == b"+PONG\r\n-ERR Protocol error: " + error + b"\r\n"
            _exchange(bystander, b"INCR shared\r\n", b":2\r\n")
        assert_stops_cleanly(server)


@pytest.mark.timeout(60)
def test_an_oversized_bulk_length_closes_that_client_only(poller_backend: str) -> None:
    with running_resp_server(poller_backend) as server:
        with server.connect() as bystander, server.connect() as client:
            _exchange(bystander, b"PING\r\n", b"+PONG\r\n")
            # Refused at the header: the 2 MiB are never waited for.
            client.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2097152\r\n")
            assert receive_all(client) == (
                b"-ERR Protocol error: request larger than max-request (1048576 bytes)\r\n"
            )
            _exchange(bystander, encode(b"ECHO", b"still here"), b"$10\r\nstill here\r\n")
        assert_stops_cleanly(server)


@pytest.mark.timeout(60)
def test_oversized_buffered_input_closes_that_client_only(poller_backend: str) -> None:
    with running_resp_server(poller_backend, "--max-request", "65536") as server:
        with server.connect() as bystander, server.connect() as client:
            _exchange(bystander, b"SET k v\r\n", b"+OK\r\n")
            # An inline line with no end: refused once more than the bound is buffered.
            try:
                client.sendall(b"SET k " + b"x" * 300_000)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed while we still sent: the kernel refuses the rest, with RST
            # The reply was sent and acknowledged before the close: it arrives whole.
            reply = receive_until_closed(client)
            assert (
                reply == b"-ERR Protocol error: request larger than max-request (65536 bytes)\r\n"
            )
            _exchange(bystander, b"GET k\r\n", b"$1\r\nv\r\n")
        assert_stops_cleanly(server)


@pytest.mark.timeout(60)
def test_a_large_value_within_the_bound_round_trips(poller_backend: str) -> None:
    value = bytes(range(256)) * 3000  # 768000 bytes, CRLFs inside
    with running_resp_server(poller_backend) as server:
        with server.connect() as client:
            _exchange(client, encode(b"SET", b"blob", value), b"+OK\r\n")
            reply = b"$%d\r\n%b\r\n" % (len(value), value)
            _exchange(client, encode(b"GET", b"blob") * 3, reply * 3)
        assert_stops_cleanly(server)


# -- the layer's defences through the example's options ---------------------------------


@pytest.mark.timeout(60)
def test_idle_timeout_closes_a_silent_client(poller_backend: str) -> None:
    with running_resp_server(poller_backend, "--idle-timeout", "0.2") as server:
        with server.connect() as silent:
            assert receive_all(silent) == b""  # EOF, well within the socket's timeout
        assert_stops_cleanly(server)


@pytest.mark.timeout(60)
def test_max_clients_turns_away_the_extra_client(poller_backend: str) -> None:
    with running_resp_server(poller_backend, "--max-clients", "1") as server:
        with server.connect() as first:
            _exchange(first, b"PING\r\n", b"+PONG\r\n")
            with server.connect() as extra:
                extra.sendall(b"PING\r\n")
                try:
                    assert receive_all(extra) == b""
                except ConnectionResetError:
                    pass  # closed with our PING unread: the kernel says so with RST
            _exchange(first, b"PING\r\n", b"+PONG\r\n")
        assert_stops_cleanly(server)


# -- stopping ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_it_gracefully_with_clients_connected(
    poller_backend: str, signum: int
) -> None:
    with (
        running_resp_server(poller_backend) as server,
        server.connect() as idle,
        server.connect() as midway,
    ):
        # Each is answered once, so the server has accepted both (the kernel
        # resets a connection still in the accept queue when the listener closes).
        _exchange(idle, b"PING\r\n", b"+PONG\r\n")
        _exchange(midway, b"PING\r\n", b"+PONG\r\n")
        midway.sendall(b"*2\r\n$4\r\nECHO\r\n$10\r\nhal")  # an unfinished request
        assert_stops_cleanly(server, signum)
        # The drain closed both: EOF, nothing lost that was answered.
        assert receive_all(idle) == b""
        assert receive_all(midway) == b""


def _refuses_connections(server: RunningServer) -> bool:
    try:
        with server.connect():
            return False
    except ConnectionResetError:
        return False  # queued as the listening socket closed: ask again
    except ConnectionRefusedError:
        return True


@pytest.mark.timeout(60)
def test_a_second_signal_stops_it_at_once(poller_backend: str) -> None:
    value = b"v" * 900_000
    with (
        running_resp_server(poller_backend, "--grace-period", "120") as server,
        server.connect() as reader_who_never_reads,
    ):
        _exchange(reader_who_never_reads, encode(b"SET", b"big", value), b"+OK\r\n")
        # Far more reply than the kernel's buffers and the layer's high-water
        # mark hold: the drain would wait the whole grace period for this client.
        reader_who_never_reads.sendall(encode(b"GET", b"big") * 100)
        server.process.send_signal(signal.SIGTERM)
        for _ in range(1000):  # the graceful stop closes the listening socket first
            if _refuses_connections(server):
                break
        else:
            pytest.fail("the listening socket stayed open after SIGTERM")
        assert server.process.poll() is None, "stopped before the grace period for the replies"
        status, out, err = server.stop(signal.SIGTERM)  # well before the 120 s grace period
        assert (status, out, err) == (128 + signal.SIGTERM, b"", b"")


# -- the command line ---------------------------------------------------------------------


def _run_example(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *arguments],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROMPT * 4,
        check=False,
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "arguments",
    [
        ["--port", "70000"],
        ["--port", "http"],
        ["--backend", "nosuch"],
        ["--max-clients", "0"],
        ["--idle-timeout", "-1"],
        ["--max-request", "1.5"],
        ["--nosuch"],
    ],
)
def test_a_bad_command_line_is_one_line_and_status_2(arguments: list[str]) -> None:
    result = _run_example(*arguments)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("resp_server: error: ")


@pytest.mark.timeout(60)
def test_a_busy_port_is_one_line_and_status_1(poller_backend: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = _run_example("--port", str(port), "--backend", poller_backend)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"resp_server: error: cannot listen on 127.0.0.1:{port}: ")
    assert len(result.stderr.splitlines()) == 1, result.stderr
