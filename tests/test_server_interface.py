"""Server layer, line 9: only the interface.

The layer imports no driver, and it runs on any :class:`~pollkit.Poller`:
here on :class:`ShufflingPoller`, a delegating wrapper that is not a driver
and does what the contract allows and drivers rarely do (results shuffled,
the ready set split across calls, stale reports, early empty returns) --
the layer must still be byte-exact and its timers never early.  It also runs
on the ``debug:`` and ``chaos:`` wrappers, where those can be opened.
"""

from __future__ import annotations

import ast
import random
import socket
import threading
import time
from pathlib import Path

import pytest

import pollkit
from echo_helpers import PROMPT, connect, exchange, read_to_eof
from pollkit import Poller, open_poller
from pollkit._backends import DRIVERS, PREFIXES, parse_backend
from pollkit.server import Server
from server_helpers import (
    BufferedFrameCounter,
    Producer,
    ShufflingPoller,
    UpperLines,
    frame,
    frame_replies,
    lines_payload,
    on_loop,
    pattern,
    serving,
)

SERVER_PACKAGE = Path(pollkit.__file__).resolve().parent / "server"

#: What the layer's source must not name: the driver modules and classes,
#: the registry of them, and the kernel facilities that would bypass Poller.
FORBIDDEN_MODULES = frozenset(
    {driver.__module__ for driver in DRIVERS.values()} | {"select", "selectors"}
)
FORBIDDEN_NAMES = frozenset({driver.__name__ for driver in DRIVERS.values()} | {"DRIVERS"})


def imported_modules(path: Path, *, as_if: Path | None = None) -> list[tuple[int, str]]:
    """``(line, module)`` for each module or name the file imports, relative ones resolved.

    ``as_if``: resolve relative imports as if the file were there.
    """
    # The package the file belongs to, e.g. pollkit.server (or a subpackage of it).
    where = (as_if or path).resolve().parent
    parts = ["pollkit", *where.relative_to(SERVER_PACKAGE.parent).parts]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            for alias in node.names:
                found.append((node.lineno, f"{module}.{alias.name}"))
                found.append((node.lineno, alias.name))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))  # importlib.import_module("...")
    return found


def test_the_layer_imports_no_driver() -> None:
    sources = sorted(SERVER_PACKAGE.rglob("*.py"))
    assert sources, f"no source files under {SERVER_PACKAGE}"
    offences = [
        f"{path.relative_to(SERVER_PACKAGE.parent)}:{line}: {name}"
        for path in sources
        for line, name in imported_modules(path)
        if name in FORBIDDEN_MODULES or name in FORBIDDEN_NAMES
    ]
    assert offences == [], "the server layer must use only the Poller interface"


def test_the_import_check_sees_relative_imports(tmp_path: Path) -> None:
    """The checker itself: a relative import of a driver is caught."""
    bad = SERVER_PACKAGE / "_not_there.py"  # only its path is used; the text is in tmp_path
    source = tmp_path / "bad.py"
    source.write_text(
        "from .._epoll import EpollPoller\nfrom .. import _select\nimport selectors\n"
    )
    names = {name for _, name in imported_modules(source, as_if=bad)}
    assert names & FORBIDDEN_MODULES >= {"pollkit._epoll", "pollkit._select", "selectors"}
    assert "EpollPoller" in names & FORBIDDEN_NAMES


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.timeout(60)
def test_byte_exact_on_a_poller_that_is_not_a_driver(poller: Poller, seed: int) -> None:
    wrapper = ShufflingPoller(poller, seed=seed)
    assert not isinstance(wrapper, tuple(DRIVERS.values()))
    payloads = [lines_payload(seed * 10 + index, 300_000) for index in range(4)]
    rng = random.Random(seed)
    # Small socket buffers on both sides: many turns of the loop, many faults.
    with serving(wrapper, UpperLines, max_buffer=32 * 1024, socket_buffer=8192) as server:
        socks = [connect(server.address, rcvbuf=8192, sndbuf=8192) for _ in payloads]
        try:
            replies = exchange(socks, payloads, chunk_sizes=lambda: rng.randrange(1, 20000))
        finally:
            for sock in socks:
                sock.close()
    assert replies == [payload.upper() for payload in payloads]
    assert wrapper.split_returns > 0, "the split fault never fired"
    assert wrapper.early_returns > 0, "the early-return fault never fired"


@pytest.mark.timeout(60)
def test_large_replies_and_tiny_buffers_on_a_poller_that_is_not_a_driver(poller: Poller) -> None:
    wrapper = ShufflingPoller(poller, seed=9)
    size = 2 * 1024 * 1024
    frames = [random.Random(index).randbytes(1000 + index) for index in range(50)]
    with (
        serving(wrapper, Producer, max_buffer=64 * 1024, socket_buffer=8192) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"%d\n" % size)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == pattern(0, size)
    with (
        serving(wrapper, BufferedFrameCounter, socket_buffer=8192) as server,
        connect(server.address) as sock,
    ):
        sock.sendall(b"".join(frame(payload) for payload in frames))
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == frame_replies(frames)


@pytest.mark.timeout(30)
def test_timers_are_never_early_on_a_poller_that_returns_early(poller: Poller) -> None:
    wrapper = ShufflingPoller(poller, seed=4, early=0.5)
    delay = 0.1
    fired = threading.Event()
    when: list[float] = []
    with serving(wrapper, UpperLines) as server:

        def fire() -> None:
            when.append(time.monotonic())
            fired.set()

        def schedule() -> float:
            start = time.monotonic()
            server.call_later(delay, fire)
            return start

        scheduled = on_loop(server, schedule)
        assert fired.wait(PROMPT)
    assert when[0] - scheduled >= delay
    assert wrapper.early_returns > 0


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.timeout(60)
def test_the_layer_runs_on_the_checking_wrappers(poller_backend: str, prefix: str) -> None:
    """On ``debug:`` a correct program draws no warning (warnings are errors
    in this suite); on ``chaos:`` the bytes still come back exact."""
    spec = f"{prefix}:{parse_backend(poller_backend).driver}"
    try:
        wrapped = open_poller(spec)
    except (pollkit.BackendUnavailableError, ImportError) as exc:
        pytest.skip(f"{spec} cannot be opened here: {exc}")
    payloads = [lines_payload(index, 60_000) for index in range(3)]
    with wrapped, serving(wrapped, UpperLines, max_buffer=32 * 1024) as server:
        socks = [connect(server.address, rcvbuf=16384) for _ in payloads]
        try:
            replies = exchange(socks, payloads)
        finally:
            for sock in socks:
                sock.close()
    assert replies == [payload.upper() for payload in payloads]


def test_server_accepts_any_poller_subclass(poller: Poller) -> None:
    """The constructor takes the wrapper as it takes a driver (no type check on drivers)."""
    wrapper = ShufflingPoller(poller, split=0.0, early=0.0)
    with Server(wrapper, UpperLines, "127.0.0.1", 0) as server:
        host, port = server.address
        assert host == "127.0.0.1"
        assert port > 0
    assert len(poller) == 0
