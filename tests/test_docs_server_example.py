"""The "Writing a server" page's example runs on every driver and does what the page says.

``docs/server.md`` includes ``docs/examples/server_example.py``; these tests
run its protocol in-process on this run's poller, and the file as a script
the way the page tells a reader to, stopped by a signal.
"""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pollkit import Poller
from resp_helpers import receive_all, receive_until
from server_helpers import serving

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "server_example.py"
STARTUP = 20.0


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_server_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load()


@pytest.mark.timeout(60)
def test_lines_come_back_upper_cased_however_they_are_split(poller: Poller) -> None:
    with (
        serving(poller, example.Shout) as server,
        socket.create_connection(server.address, timeout=10) as client,
    ):
        client.sendall(b"hello\nwor")
        assert receive_until(client, 6) == b"HELLO\n"
        client.sendall(b"ld\n\nlast")
        assert receive_until(client, 7) == b"WORLD\n\n"
        client.sendall(b" one\nquit\nnot answered\n")
        assert receive_all(client) == b"LAST ONE\n"  # then EOF: quit closed it


@pytest.mark.timeout(60)
def test_a_line_too_long_is_refused_and_the_others_go_on(poller: Poller) -> None:
    with (
        serving(poller, example.Shout) as server,
        socket.create_connection(server.address, timeout=10) as bystander,
        socket.create_connection(server.address, timeout=10) as client,
    ):
        client.sendall(b"x" * (example.MAX_LINE + 1))
        assert receive_all(client) == b"line too long\n"
        bystander.sendall(b"still here\n")
        assert receive_until(bystander, 11) == b"STILL HERE\n"


@pytest.mark.timeout(60)
def test_the_script_serves_until_a_signal(poller_backend: str) -> None:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--backend", poller_backend, "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()  # the process flushes it, or exits
        assert banner.startswith("listening on 127.0.0.1:"), banner
        port = int(banner.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"pollkit\n")
            assert receive_until(client, 8) == b"POLLKIT\n"
            process.send_signal(signal.SIGTERM)
            assert receive_all(client) == b""  # the drain closes it
        out, err = process.communicate(timeout=STARTUP)
        assert (process.returncode, out, err) == (0, "", "")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=STARTUP)
