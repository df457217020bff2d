"""An asyncio echo server and client, on the pollkit driver of your choice.

Run it with ``python3 docs/examples/asyncio_echo.py --backend poll``.  Nothing
in the asyncio code knows about pollkit: only the loop differs.
``tests/test_docs_examples.py`` runs it on every driver.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

import pollkit.compat


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo one client until it closes its side."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def echo_once(message: bytes) -> tuple[str, bytes]:
    """Start a server on a free loopback port, send ``message``, return (driver, echo)."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        host, port = server.sockets[0].getsockname()[:2]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(message)
        writer.write_eof()
        echo = await reader.read()  # everything, until the server closes
        writer.close()
        await writer.wait_closed()
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]  # to show which driver ran
    return selector.backend, echo


def main(argv: Sequence[str] | None = None) -> bytes:
    parser = argparse.ArgumentParser(description="asyncio echo on a pollkit driver")
    parser.add_argument("--backend", help="epoll, poll, select or auto")
    args = parser.parse_args(argv)
    # Any Python: pollkit.compat.run().  Python 3.11+ can also say
    #   with asyncio.Runner(loop_factory=pollkit.compat.new_event_loop) as runner: ...
    # and 3.12+: asyncio.run(coro, loop_factory=pollkit.compat.new_event_loop).
    driver, echo = pollkit.compat.run(
        asyncio.wait_for(echo_once(b"hello, asyncio\n"), 10), backend=args.backend
    )
    print(f"{driver}: {echo!r}")
    return echo


if __name__ == "__main__":
    main()
