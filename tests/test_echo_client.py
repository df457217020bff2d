"""``pollkit client`` (one-shot with --message and --file, interactive
through a stdin pipe, Ctrl-C) and the EchoClient it is built on."""

from __future__ import annotations

import io
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from echo_helpers import CLI_MAIN, PROMPT, serving, signal_from_another_thread
from pollkit import Poller
from pollkit.echo import EchoClient, EchoClientError, EchoServer


def client_command(server: EchoServer, backend: str, *argv: str) -> list[str]:
    host, port = server.address
    return [
        sys.executable, "-m", "pollkit", "client",
        "--backend", backend, "--host", host, "--port", str(port), *argv,
    ]  # fmt: skip


def run(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=30, check=False)


def test_message(poller: Poller, poller_backend: str) -> None:
    with serving(poller) as server:
        result = run(client_command(server, poller_backend, "--message", "héllo, echo"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "héllo, echo\n".encode()
    assert result.stderr == b""


@pytest.mark.timeout(60)
def test_file_bytes_come_back_exactly(poller: Poller, poller_backend: str, tmp_path: Path) -> None:
    payload = random.Random(5).randbytes(2 * 1024 * 1024 + 17)
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    with serving(poller, max_buffer=64 * 1024) as server:
        result = run(client_command(server, poller_backend, "--file", str(path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload


def test_udp_message_and_empty_file(poller: Poller, poller_backend: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with serving(poller, udp=True) as server:
        message = run(client_command(server, poller_backend, "--udp", "--message", "dgram"))
        nothing = run(client_command(server, poller_backend, "--udp", "--file", str(empty)))
    assert (message.returncode, message.stdout) == (0, b"dgram\n"), message.stderr
    assert (nothing.returncode, nothing.stdout) == (0, b""), nothing.stderr


def test_interactive_through_a_pipe(poller: Poller, poller_backend: str) -> None:
    lines = b"first line\n" + b"x" * 300_000 + b"\nlast, without newline"
    with serving(poller) as server:
        result = run(client_command(server, poller_backend), stdin=lines)
    assert result.returncode == 0, result.stderr
    assert result.stdout == lines
    assert result.stderr == b""  # no prompt when stdin is not a terminal


def test_interactive_ctrl_c_exits_cleanly(poller: Poller, poller_backend: str) -> None:
    with serving(poller) as server:
        reader, writer = os.pipe()
        with (
            open(writer, "wb", buffering=0) as feed,
            subprocess.Popen(
                client_command(server, poller_backend),
                stdin=reader,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ) as process,
        ):
            os.close(reader)
            assert process.stdout is not None
            feed.write(b"before ctrl-c\n")
            assert process.stdout.readline() == b"before ctrl-c\n"
            process.send_signal(signal.SIGINT)  # it is now blocked reading stdin
            stdout, stderr = process.communicate(timeout=PROMPT)
    assert process.returncode == 0, stderr
    assert stdout == b""
    assert b"Traceback" not in stderr


# The main thread's read is not interrupted, as with a Ctrl-C landing just
# before it blocks; the client must still end at once, without another line
# of input.  The signal number comes on the fd in $CONTROL_FD.
_SIGINT_FROM_ANOTHER_THREAD = (
    signal_from_another_thread('os.read(int(os.environ["CONTROL_FD"]), 16)') + CLI_MAIN
)


def test_interactive_ctrl_c_that_misses_the_blocked_read(
    poller: Poller, poller_backend: str
) -> None:
    with serving(poller) as server:
        argv = client_command(server, poller_backend)
        argv[1:3] = ["-c", _SIGINT_FROM_ANOTHER_THREAD]  # in place of "-m pollkit"
        reader, writer = os.pipe()
        control_read, control_write = os.pipe()
        with (
            open(writer, "wb", buffering=0) as feed,
            open(control_write, "wb", buffering=0) as control,
            subprocess.Popen(
                argv,
                stdin=reader,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(os.environ, CONTROL_FD=str(control_read)),
                pass_fds=(control_read,),
            ) as process,
        ):
            os.close(reader)
            os.close(control_read)
            assert process.stdout is not None
            feed.write(b"before ctrl-c\n")
            assert process.stdout.readline() == b"before ctrl-c\n"
            control.write(b"%d\n" % signal.SIGINT)
            stdout, stderr = process.communicate(timeout=PROMPT)
    assert process.returncode == 0, stderr
    assert stdout == b""
    assert b"Traceback" not in stderr


def test_echo_client_library(poller: Poller, poller_factory: Callable[[], Poller]) -> None:
    """A message much larger than the socket buffers and max_buffer does not deadlock."""
    payload = random.Random(6).randbytes(4 * 1024 * 1024)
    with serving(poller, max_buffer=16 * 1024) as server:
        client_poller = poller_factory()
        with EchoClient(client_poller, *server.address) as client:
            assert client.echo(payload) == payload
            assert client.echo(b"") == b""
            out = io.BytesIO()
            assert client.stream(io.BytesIO(b"streamed"), out.write) == 8
            assert out.getvalue() == b"streamed"
        assert len(client_poller) == 0


def test_echo_client_reports_an_early_close(
    poller: Poller, poller_factory: Callable[[], Poller]
) -> None:
    with serving(poller, max_clients=1) as server:
        client_poller = poller_factory()
        with EchoClient(client_poller, *server.address) as first:
            assert first.echo(b"in") == b"in"
            with (
                EchoClient(client_poller, *server.address) as refused,
                pytest.raises((EchoClientError, ConnectionResetError)),
            ):
                refused.echo(b"x" * 100)


def test_echo_client_timeout(poller_factory: Callable[[], Poller]) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts into the backlog, never answers
        client_poller = poller_factory()
        with (
            EchoClient(client_poller, *silent.getsockname(), timeout=0.2) as client,
            pytest.raises(EchoClientError, match=r"no reply from 127\.0\.0\.1:\d+ within 0\.2 s"),
        ):
            client.echo(b"anyone?")
