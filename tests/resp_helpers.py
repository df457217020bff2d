"""Run ``examples/resp_server.py``: imported for its parser, or as a subprocess for clients.

The example is a script, not a package module, so the tests load it by path;
the subprocess form is how a user runs it (``--backend`` is the test's
driver spec, ``--port 0`` and the ``listening on HOST:PORT`` line give the
port without a race).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from conftest import PROMPT

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "resp_server.py"

#: How long a server may take to start, or to stop after a signal.
STARTUP = 20.0


@functools.cache
def load_resp_server() -> ModuleType:
    """``examples/resp_server.py`` as a module (once per process)."""
    spec = importlib.util.spec_from_file_location("resp_server_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up here
    spec.loader.exec_module(module)
    return module


class RunningServer:
    """A ``resp_server.py`` process that printed its ``listening on`` line."""

    def __init__(self, process: subprocess.Popen[bytes], banner: bytes) -> None:
        self.process = process
        self.banner = banner
        address = banner.decode().removeprefix("listening on ").strip()
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def connect(self) -> socket.socket:
        """A blocking client connection with a timeout (the caller closes it)."""
        return socket.create_connection(self.address, timeout=PROMPT)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, bytes, bytes]:
        """Send ``signum``, wait for the exit; the status, the rest of stdout, stderr."""
        self.process.send_signal(signum)
        out, err = self.process.communicate(timeout=STARTUP)
        return self.process.returncode, out, err


def _read_banner(process: subprocess.Popen[bytes]) -> bytes:
    """The first stdout line, waiting at most ``STARTUP`` seconds."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    line = b""
    deadline = time.monotonic() + STARTUP
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no 'listening on' line within {STARTUP} s: {line!r}")
            if not selector.select(remaining):
                continue
            # os.read, not the buffered file: communicate() reads the rest later.
            chunk = os.read(fd, 1)
            if not chunk:
                process.wait(STARTUP)
                assert process.stderr is not None
                raise AssertionError(
                    f"the server exited ({process.returncode}) before listening: "
                    f"{line!r} {process.stderr.read()!r}"
                )
            line += chunk
    return line


@contextlib.contextmanager
def running_resp_server(backend: str, *options: str) -> Iterator[RunningServer]:
    """Start the example on ``backend`` on a free loopback port; always stop it."""
    process = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--backend",
            backend,
            *options,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        banner = _read_banner(process)
        assert banner.startswith(b"listening on 127.0.0.1:"), banner
        yield RunningServer(process, banner)
    finally:
        if process.returncode is None and process.poll() is None:
            process.kill()
            process.communicate(timeout=STARTUP)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        process.wait(STARTUP)


def receive_until(sock: socket.socket, expected_size: int) -> bytes:
    """Read from blocking ``sock`` until ``expected_size`` bytes came, or EOF, or its timeout."""
    received = bytearray()
    while len(received) < expected_size:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return bytes(received)


def receive_all(sock: socket.socket, limit: int = 64 * 1024 * 1024) -> bytes:
    """Read from blocking ``sock`` until EOF (its timeout bounds each wait, ``limit`` the size)."""
    received = bytearray()
    while chunk := sock.recv(65536):
        received += chunk
        assert len(received) <= limit, f"more than {limit} bytes and no EOF"
    return bytes(received)


def receive_until_closed(sock: socket.socket, limit: int = 64 * 1024 * 1024) -> bytes:
    """As :func:`receive_all`, but a reset after the data also ends it.

    For a peer that was still sending when the server closed: the server's
    kernel answers the late bytes with RST, and Linux still delivers what
    had arrived before it.
    """
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
            assert len(received) <= limit, f"more than {limit} bytes and no EOF"
    except ConnectionResetError:
        pass
    return bytes(received)
