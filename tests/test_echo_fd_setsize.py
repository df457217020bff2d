"""Connections whose fd is >= FD_SETSIZE (1024): the select driver cannot
watch them, so the server closes each with one warning and keeps running;
epoll and poll serve them.

The server runs in a subprocess that opens its poller and listening socket
first, then fills every fd below 1024 with duplicates of /dev/null; a line on
its stdin frees a few of them.
"""

from __future__ import annotations

import resource
import signal
import subprocess

import pytest

from echo_helpers import ServerProcess, connect, recv_exactly, sees_eof
from pollkit._backends import parse_backend

SCRIPT = """
import logging, os, resource, signal, sys, threading
from pollkit import open_poller
from pollkit.echo import EchoServer

_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2048), hard))
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
poller = open_poller(sys.argv[1])
server = EchoServer(poller, "127.0.0.1", 0)
signal.signal(signal.SIGTERM, lambda signum, frame: server.shutdown())
null = os.open(os.devnull, os.O_RDONLY)
fillers = []
while not fillers or fillers[-1] < 1023:
    fillers.append(os.dup(null))

def control():
    for line in sys.stdin:
        for fd in fillers[:8]:
            os.close(fd)
        del fillers[:8]
        print("freed", file=sys.stderr, flush=True)

threading.Thread(target=control, daemon=True).start()
server.serve_forever()
"""


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1100,
    reason="the hard RLIMIT_NOFILE is below 1100: no fds >= 1024 to be had",
)
@pytest.mark.timeout(60)
def test_fd_above_fd_setsize(poller_backend: str) -> None:
    with ServerProcess(
        [poller_backend], backend=poller_backend, script=SCRIPT, stdin=subprocess.PIPE
    ) as server:
        address = server.wait_listening()
        if parse_backend(poller_backend).driver == "select":
            for _ in range(2):
                with connect(address) as refused:
                    refused.sendall(b"hello")
                    assert sees_eof(refused)
            server.tell("free")
            server.wait_for("freed")
        with connect(address) as served:
            served.sendall(b"served")
            assert recv_exactly(served, 6) == b"served"
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.output()
    warnings = [line for line in server.stderr if line.startswith("WARNING")]
    if parse_backend(poller_backend).driver == "select":
        assert len(warnings) == 1, server.output()
        assert "FD_SETSIZE" in warnings[0]
    else:
        assert warnings == []
