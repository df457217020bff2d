"""A line server on pollkit.server: every line comes back upper-cased; ``quit`` ends it.

Run ``python3 docs/examples/server_example.py --backend poll --port 8000`` and
talk to it with ``nc 127.0.0.1 8000``; Ctrl-C stops it gracefully.
``tests/test_docs_server_example.py`` runs it on every driver.
"""

from __future__ import annotations

import argparse
import signal

from pollkit import open_poller
from pollkit.server import Protocol, Server, Transport

MAX_LINE = 64 * 1024  # longer lines are refused, so a connection's memory stays bounded


class Shout(Protocol):
    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        self.partial = b""  # the start of a line whose end has not arrived yet

    def data_received(self, data: bytes) -> None:
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            if line.strip() == b"quit":
                self.transport.close()  # sends what was written first
                return
            self.transport.write(line.upper() + b"\n")
        if len(self.partial) > MAX_LINE:
            self.transport.write(b"line too long\n")
            self.transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Upper-cases every line it is sent.")
    parser.add_argument("--backend", help="epoll, poll, select or auto (default: auto)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free one")
    args = parser.parse_args()
    with open_poller(args.backend) as poller, Server(poller, Shout, port=args.port) as server:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, frame: server.shutdown())
        print("listening on {}:{}".format(*server.address), flush=True)
        server.serve_forever()  # returns once shutdown() has drained every connection


if __name__ == "__main__":
    main()
