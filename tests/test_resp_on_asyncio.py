"""The RESP example's protocol runs unchanged on asyncio's loop (the ``-example`` RESP rows).

``benchmarks/resp_asyncio_server.py --protocol example`` serves
``examples/resp_server.py``'s ``RespProtocol`` on asyncio and uvloop, so that
those rows differ from pollkit's in the loop only.  That holds only while the
protocol uses nothing asyncio's transports lack: these tests drive it there.
"""

from __future__ import annotations

import asyncio

import pytest

from resp_helpers import load_resp_server

resp = load_resp_server()


async def _exchange(payload: bytes, replies: int) -> tuple[bytes, bytes]:
    """Serve the example's protocol on a loopback asyncio server; send ``payload``.

    Returns what came back before the ``replies``-th CRLF, and what came after
    the client half-closed (EOF: ``b""``).
    """
    loop = asyncio.get_running_loop()
    store: dict[bytes, bytes] = {}
    server = await loop.create_server(lambda: resp.RespProtocol(store), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(payload)
            await writer.drain()
            got = b""
            for _ in range(replies):
                got += await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
            writer.write_eof()
            rest = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
            await writer.wait_closed()
    return got, rest


@pytest.mark.timeout(30)
def test_pipelined_requests_are_answered_in_order_on_asyncio() -> None:
    requests = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n41\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\nPING\r\n"
    got, rest = asyncio.run(_exchange(requests, 3))
    assert got == b"+OK\r\n:42\r\n+PONG\r\n"
    assert rest == b""  # EOF from the client: the protocol closes, losing nothing


@pytest.mark.timeout(30)
def test_quit_replies_then_closes_on_asyncio() -> None:
    got, rest = asyncio.run(_exchange(b"QUIT\r\n", 1))
    assert got == b"+OK\r\n"
    assert rest == b""  # closed after the reply
