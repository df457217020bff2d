"""A bad command line or a busy port: one clear line on stderr, a non-zero
exit, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pollkit.cli import main

BAD_COMMAND_LINES = {
    "port-out-of-range": (["echo", "--port", "70000"], "out of range"),
    "port-negative": (["echo", "--port", "-1"], "out of range"),
    "port-not-a-number": (["echo", "--port", "http"], "not a port number"),
    "negative-idle-timeout": (["echo", "--idle-timeout", "-1"], "-1 seconds"),
    "zero-idle-timeout": (["echo", "--idle-timeout", "0"], "more than 0"),
    "nan-idle-timeout": (["echo", "--idle-timeout", "nan"], "finite"),
    "zero-clients": (["echo", "--max-clients", "0"], "at least 1"),
    "zero-buffer": (["echo", "--max-buffer", "0"], "at least 1"),
    "zero-workers": (["echo", "--workers", "0"], "at least 1"),
    "bad-log-level": (["echo", "--log-level", "loud"], "invalid choice"),
    "client-port": (["client", "--port", "99999"], "out of range"),
    # An unknown name is a usage error; a known driver that cannot open here is not.
    "unknown-backend": (
        ["echo", "--backend", "kqueue"],
        "argument --backend: 'kqueue' is not a driver; choose epoll, poll, select or auto",
    ),
    "client-unknown-backend": (["client", "--backend", "kqueue"], "is not a driver"),
    "client-message-and-file": (["client", "--message", "a", "--file", "b"], "not allowed"),
}


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        yield listener.getsockname()[1]


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    assert "Traceback" not in text
    return lines[0]


@pytest.mark.parametrize(("argv", "expected"), BAD_COMMAND_LINES.values(), ids=BAD_COMMAND_LINES)
def test_bad_command_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = one_line(captured.err)
    assert line.startswith(f"pollkit {argv[0]}: error:")
    assert expected in line


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--max-clients", "5"], "--max-clients limit"),
        (["--idle-timeout", "5"], "--idle-timeout limit"),
        (["--max-clients", "5", "--idle-timeout", "5"], "--max-clients and --idle-timeout limit"),
    ],
    ids=["max-clients", "idle-timeout", "both"],
)
def test_tcp_only_options_with_udp_are_a_usage_error(
    options: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: they were quietly ignored with --udp."""
    with pytest.raises(SystemExit) as exit_info:
        main(["echo", "--udp", "--port", "0", *options])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = one_line(captured.err)
    assert line.startswith("pollkit echo: error:")
    assert named in line


def test_an_unknown_backend_from_the_environment_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not on the command line, so a runtime error (exit 1) that lists what is available.
    monkeypatch.setenv("POLLKIT_BACKEND", "kqueue")
    assert main(["echo", "--port", "0"]) == 1
    line = one_line(capsys.readouterr().err)
    assert "'kqueue'" in line
    assert "available" in line


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_busy_port(
    busy_port: int, udp: bool, poller_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp_holder:
        udp_holder.bind(("127.0.0.1", busy_port))  # the same number, taken for UDP too
        argv = ["echo", "--backend", poller_backend, "--port", str(busy_port)]
        assert main(argv + (["--udp"] if udp else [])) == 1
    line = one_line(capsys.readouterr().err)
    assert line == (
        f"pollkit echo: error: cannot listen on 127.0.0.1:{busy_port}: Address already in use"
    )


def test_busy_port_with_workers(busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["echo", "--workers", "2", "--port", str(busy_port)]) == 1
    assert "Address already in use" in one_line(capsys.readouterr().err)


def test_unresolvable_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["echo", "--host", "no such host.invalid", "--port", "0"]) == 1
    assert "cannot resolve host 'no such host.invalid'" in one_line(capsys.readouterr().err)


def test_client_cannot_connect(busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        assert main(["client", "--port", str(port), "--message", "hi"]) == 1
    line = one_line(capsys.readouterr().err)
    assert line == f"pollkit client: error: cannot connect to 127.0.0.1:{port}: Connection refused"


def test_client_missing_file(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"{tmp_path}/missing.bin"
    assert main(["client", "--file", missing]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"pollkit client: error: cannot read {missing}: No such file or directory"
    )


@pytest.mark.parametrize(
    "argv",
    [["echo", "--port", "65536"], ["echo", "--backend", "nope"], ["echo", "--idle-timeout", "-5"]],
    ids=["port", "backend", "timeout"],
)
def test_the_real_command_prints_one_line(argv: list[str]) -> None:
    """The same through ``python -m pollkit``: nothing but the one line."""
    result = subprocess.run(
        [sys.executable, "-m", "pollkit", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert one_line(result.stderr).startswith("pollkit echo: error:")
