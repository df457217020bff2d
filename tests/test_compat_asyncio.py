"""asyncio's streams, subprocesses and datagram endpoints on every pollkit driver.

Each test runs a whole asyncio program on ``pollkit.compat.new_event_loop``
with the driver the ``poller_backend`` fixture names, everything on loopback
and every wait bounded by ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import pytest

from conftest import PROMPT
from pollkit.compat import PollerSelector, _run_without_runner, new_event_loop, run

_T = TypeVar("_T")

#: Bound on one whole asyncio program in a test.
DEADLINE = 20.0


def _run_on(backend: str, main: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main`` with ``backend``, bounded, failing on errors asyncio only logs."""
    logged: list[dict[str, Any]] = []

    async def guarded() -> _T:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: logged.append(context)
        )
        return await asyncio.wait_for(main, DEADLINE)

    result = run(guarded(), backend=backend)
    assert logged == []
    return result


def _selector_backend() -> str:
    """The driver behind the running loop (asserting it is a ``PollerSelector``)."""
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]  # SelectorEventLoop's own attribute
    assert isinstance(selector, PollerSelector)
    return selector.backend


# -- the loop factory -----------------------------------------------------------------


def test_new_event_loop_is_a_selector_loop_on_the_driver(poller_backend: str) -> None:
    loop = new_event_loop(poller_backend)
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)

        async def backend() -> str:
            return _selector_backend()

        assert loop.run_until_complete(backend()) == poller_backend
    finally:
        loop.close()


def test_new_event_loop_reads_pollkit_backend(
    poller_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLLKIT_BACKEND", poller_backend)

    async def backend() -> str:
        return _selector_backend()

    assert run(backend()) == poller_backend


def test_asyncio_runner_takes_new_event_loop_as_loop_factory(poller_backend: str) -> None:
    async def backend() -> str:
        await asyncio.sleep(0)
        return _selector_backend()

    # A version branch, not skipif, so that mypy for Python 3.10 skips the body.
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=lambda: new_event_loop(poller_backend)) as runner:
            assert runner.run(backend()) == poller_backend
    else:
        pytest.skip("asyncio.Runner is new in Python 3.11")


@pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is new in Python 3.12"
)
def test_asyncio_run_takes_new_event_loop_as_loop_factory(
    poller_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLLKIT_BACKEND", poller_backend)

    async def backend() -> str:
        return _selector_backend()

    # Through Any so that mypy for 3.10-3.11, whose asyncio.run has no
    # loop_factory, accepts the file; the skip above covers the runtime.
    asyncio_run: Any = asyncio.run
    assert asyncio_run(backend(), loop_factory=new_event_loop) == poller_backend


def test_run_without_runner_runs_and_cleans_up(poller_backend: str) -> None:
    """The Python 3.10 path of ``run()``, exercised on every Python."""
    loops: list[asyncio.AbstractEventLoop] = []
    leftovers: list[asyncio.Task[None]] = []

    def factory() -> asyncio.AbstractEventLoop:
        loops.append(new_event_loop(poller_backend))
        return loops[-1]

    async def main() -> str:
        leftovers.append(asyncio.ensure_future(asyncio.sleep(3600)))
        await asyncio.sleep(0)
        return _selector_backend()

    assert _run_without_runner(main(), factory, None) == poller_backend
    [loop] = loops
    assert loop.is_closed()
    assert leftovers[0].cancelled()


def test_run_refuses_a_non_coroutine() -> None:
    with pytest.raises(ValueError, match="coroutine was expected"):
        _run_without_runner(42, new_event_loop, None)  # type: ignore[arg-type]  # wrong on purpose


def test_run_refuses_to_nest(poller_backend: str) -> None:
    async def nested() -> None:
        inner = asyncio.sleep(0)
        try:
            with pytest.raises(RuntimeError, match="running event loop"):
                _run_without_runner(inner, new_event_loop, None)
        finally:
            inner.close()

    run(nested(), backend=poller_backend)


# -- streams ------------------------------------------------------------------------------


async def _echo_client_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


def _skip_unless_can_listen_on(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except OSError as exc:  # a container without an IPv6 loopback, say
        pytest.skip(f"cannot listen on {host}: {exc}")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_streams_server_and_client(poller_backend: str, host: str) -> None:
    _skip_unless_can_listen_on(host)

    async def main() -> list[bytes]:
        server = await asyncio.start_server(_echo_client_handler, host, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            replies = []
            clients = [await asyncio.open_connection(host, port) for _ in range(3)]
            for index, (reader, writer) in enumerate(clients):
                line = f"hello {index} from {_selector_backend()}\n".encode()
                writer.write(line)
                await writer.drain()
                replies.append(await reader.readline())
            for _, writer in clients:
                writer.close()
                await writer.wait_closed()
            return replies

    replies = _run_on(poller_backend, main())
    assert replies == [f"hello {index} from {poller_backend}\n".encode() for index in range(3)]


def test_tcp_streams_move_megabytes_through_backpressure(poller_backend: str) -> None:
    # Bigger than any socket buffer: the loop must add and remove write
    # interest (selector.modify) as buffers fill and drain.
    payload = bytes(range(256)) * 4096 * 4  # 4 MiB

    async def main() -> bytes:
        server = await asyncio.start_server(_echo_client_handler, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)

            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.ensure_future(send())
            received = await reader.read(-1)  # until the server's EOF
            await sender
            writer.close()
            await writer.wait_closed()
            return received

    assert _run_on(poller_backend, main()) == payload


def test_low_level_sock_api(poller_backend: str) -> None:
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        left, right = socket.socketpair()
        with left, right:
            left.setblocking(False)
            right.setblocking(False)
            await loop.sock_sendall(left, b"ping")
            return await loop.sock_recv(right, 4)

    assert _run_on(poller_backend, main()) == b"ping"


# -- subprocesses ----------------------------------------------------------------------------


def test_subprocess_with_pipes(poller_backend: str) -> None:
    code = (
        "import sys; data = sys.stdin.buffer.read(); "
        "sys.stdout.buffer.write(data.upper()); sys.stderr.write('done')"
    )

    async def main() -> tuple[bytes, bytes, int | None]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate(b"hello " * 100_000)
        return out, err, process.returncode

    out, err, status = _run_on(poller_backend, main())
    assert out == b"HELLO " * 100_000
    assert err == b"done"
    assert status == 0


def test_subprocess_exit_status_and_streamed_output(poller_backend: str) -> None:
    code = "import sys\nfor i in range(5): print(i, flush=True)\nsys.exit(3)"

    async def main() -> tuple[list[bytes], int]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        lines = [line async for line in process.stdout]
        return lines, await process.wait()

    lines, status = _run_on(poller_backend, main())
    assert lines == [f"{i}\n".encode() for i in range(5)]
    assert status == 3


# -- datagrams ----------------------------------------------------------------------------------


class _EchoDatagramProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (not a DatagramTransport subclass on 3.11).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.transport.sendto(data, addr)


class _CollectingProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.put_nowait(data)


def test_udp_echo_datagram_endpoints(poller_backend: str) -> None:
    messages = [f"datagram {index}".encode() for index in range(10)]

    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        server, _ = await loop.create_datagram_endpoint(
            _EchoDatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        try:
            address = server.get_extra_info("sockname")
            client, protocol = await loop.create_datagram_endpoint(
                _CollectingProtocol, remote_addr=address
            )
            try:
                replies = []
                for message in messages:  # one at a time: loopback drops none then
                    client.sendto(message)
                    replies.append(await asyncio.wait_for(protocol.received.get(), PROMPT))
                return replies
            finally:
                client.close()
        finally:
            server.close()

    assert _run_on(poller_backend, main()) == messages
