"""Redis-protocol (RESP2) servers as asyncio Protocols: the RESP study's peers.

    python benchmarks/resp_asyncio_server.py --loop uvloop --port 6380
    python benchmarks/resp_asyncio_server.py --loop asyncio --port 6380
    python benchmarks/resp_asyncio_server.py --loop uvloop --protocol example --port 6380

``--protocol minimal`` (the default) is the server below; ``--protocol
example`` serves ``examples/resp_server.py``'s own ``RespProtocol`` -- the
same parser, commands and reply batching as the pollkit rows -- on the
asyncio loop, so that the two rows differ in their loops only.  (The
example's protocol uses only what asyncio's transports also have:
``write()``, ``close()``, ``is_closing()``, ``pause_writing()``.)

The minimal server:
It answers what ``redis-benchmark -t ping,set,get`` sends, pipelined or not:
``PING`` (inline and array form), ``ECHO``, ``SET``, ``GET``, and the
``CONFIG GET`` and ``COMMAND`` it asks at start (an empty array each);
``QUIT`` closes; anything else is ``-ERR``.  It parses every complete request
in what arrived and writes all their replies in one ``write()``, as a server
written for throughput would.  It prints a "listening" line once it accepts.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from pollkit.cli import port_arg

_MAX_REQUEST = 1 << 20  # a request larger than this is refused, then the connection closed


class RespProtocol(asyncio.Protocol):
    """One connection: parse RESP2 requests, answer them from the shared ``store``."""

    def __init__(self, store: dict[bytes, bytes]) -> None:
        self.store = store
        self.pending = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP server's are Transports (uvloop's are not subclasses)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None  # connection_made came first
        buffer = self.pending + data if self.pending else data
        replies: list[bytes] = []
        position = 0
        reply: bytes | None = b""
        while position < len(buffer):
            parsed = _parse(buffer, position)
            if parsed is None:
                break
            request, position = parsed
            reply = self._execute(request) if request else b""
            if reply is None:
                break
            replies.append(reply)
        self.pending = buffer[position:]
        if replies:
            self.transport.write(b"".join(replies))
        if reply is None or len(self.pending) > _MAX_REQUEST:
            if len(self.pending) > _MAX_REQUEST:
                self.transport.write(b"-ERR request too large\r\n")
            self.transport.close()

    def _execute(self, request: list[bytes]) -> bytes | None:
        command = request[0].upper()
        if command == b"GET" and len(request) == 2:
            value = self.store.get(request[1])
            return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)
        if command == b"SET" and len(request) >= 3:
            self.store[request[1]] = request[2]
            return b"+OK\r\n"
        if command == b"PING":
            return b"+PONG\r\n" if len(request) == 1 else _bulk(request[1])
        if command == b"ECHO" and len(request) == 2:
            return _bulk(request[1])
        if command in (b"CONFIG", b"COMMAND"):
            return b"*0\r\n"
        if command == b"QUIT":
            assert self.transport is not None  # connection_made came first
            self.transport.write(b"+OK\r\n")
            return None
        return b"-ERR unknown command or wrong number of arguments\r\n"


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _parse(buffer: bytes, start: int) -> tuple[list[bytes], int] | None:
    """One request from ``buffer[start:]`` and where the next begins; ``None`` if incomplete.

    A malformed request parses as ``[b"?"]``, which is answered ``-ERR``.
    """
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return None
    if buffer[start] != 0x2A:  # not '*': an inline command
        return buffer[start:end].split(), end + 2
    try:
        count = int(buffer[start + 1 : end])
        request = []
        position = end + 2
        for _ in range(count):
            end = buffer.find(b"\r\n", position)
            if end < 0:
                return None
            if buffer[position] != 0x24:  # not '$'
                return [b"?"], end + 2
            size = int(buffer[position + 1 : end])
            if end + 2 + size + 2 > len(buffer):
                return None
            request.append(buffer[end + 2 : end + 2 + size])
            position = end + 2 + size + 2
    except ValueError:
        return [b"?"], end + 2
    return request, position


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "resp_server.py"


def _example_factory(store: dict[bytes, bytes]) -> Callable[[], asyncio.BaseProtocol]:
    """``examples/resp_server.py``'s protocol, loaded by path (it is a script, not a module)."""
    spec = importlib.util.spec_from_file_location("resp_server_example", EXAMPLE)
    if spec is None or spec.loader is None:
        raise SystemExit(f"resp_asyncio_server: error: cannot load {EXAMPLE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    protocol: Callable[[dict[bytes, bytes]], asyncio.BaseProtocol] = module.RespProtocol
    return lambda: protocol(store)


async def serve(host: str, port: int, which: str) -> None:
    loop = asyncio.get_running_loop()
    store: dict[bytes, bytes] = {}
    factory: Callable[[], asyncio.BaseProtocol]
    factory = _example_factory(store) if which == "example" else (lambda: RespProtocol(store))
    server = await loop.create_server(factory, host, port, backlog=4096)
    print(f"listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port_arg, required=True)
    parser.add_argument("--protocol", choices=("minimal", "example"), default="minimal")
    args = parser.parse_args()
    run = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        run = uvloop.run
    try:
        run(serve(args.host, args.port, args.protocol))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
