"""Readiness-based I/O in seven steps, with pollkit: a small echo server.

Run it with ``python3 docs/examples/tutorial.py`` (add ``--backend poll`` or
``--backend select`` to change the driver).  It starts the server in a
thread, talks to it as a client, prints the echoes and stops.
``tests/test_docs_examples.py`` runs it on every driver.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Sequence

from pollkit import Events, open_poller

#: How long the demo waits for anything before giving up, in seconds.
PATIENCE = 10.0


def serve(listener: socket.socket, backend: str | None = None, *, clients: int = 1) -> None:
    """Echo every byte each client sends, until ``clients`` clients have come and gone."""
    # Step 1: create a poller.  None picks $POLLKIT_BACKEND, else the best driver.
    with open_poller(backend) as poller:
        # Step 2: register fds and the events to watch them for.
        listener.setblocking(False)
        poller.register(listener, Events.READ)
        connections: dict[int, socket.socket] = {}
        unsent: dict[int, bytes] = {}  # what each client sent that is not echoed yet
        finished = 0

        # Step 6: repeat steps 3 to 5 until done.
        deadline = time.monotonic() + PATIENCE
        while finished < clients:
            # Step 3: ask which fds are ready.  An empty list is no proof that
            # the time is up (poll() may return early): only the clock is.
            ready = poller.poll(timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"nothing happened for {PATIENCE} s")
                continue
            deadline = time.monotonic() + PATIENCE

            # Step 4: act on each ready fd.
            for fd, mask in ready:
                if fd == listener.fileno():
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        continue  # readiness is a hint: the client may not be there yet
                    conn.setblocking(False)
                    poller.register(conn, Events.READ)
                    connections[conn.fileno()] = conn
                    unsent[conn.fileno()] = b""
                    continue
                conn = connections[fd]
                try:
                    if mask & Events.WRITE:
                        sent = conn.send(unsent[fd])
                        unsent[fd] = unsent[fd][sent:]
                        if not unsent[fd]:
                            # Step 5: modify interest -- all echoed, listen again.
                            poller.modify(conn, Events.READ)
                        continue
                    # READ, or HANGUP/ERROR: recv() tells which (data, EOF or an error).
                    data = conn.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue  # readiness is a hint: try again on the next report
                except OSError:
                    data = b""  # reset by the peer: treat it like a close
                if data:
                    unsent[fd] += data
                    # Step 5: modify interest -- stop reading until the echo is out.
                    poller.modify(conn, Events.WRITE)
                else:
                    # The client is gone: unregister *before* closing the fd.
                    poller.unregister(conn)
                    conn.close()
                    del connections[fd], unsent[fd]
                    finished += 1

        poller.unregister(listener)
    # Step 7: close.  Leaving the ``with`` block closed the poller.


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes from blocking ``sock`` (one recv() may return fewer)."""
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("the server closed the connection early")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def main(argv: Sequence[str] | None = None) -> list[bytes]:
    """Serve one client in a thread, be that client, and return what came back."""
    parser = argparse.ArgumentParser(description="An echo server in seven steps, with pollkit.")
    parser.add_argument("--backend", help="epoll, poll, select or auto")
    args = parser.parse_args(argv)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=serve, args=(listener, args.backend))
        server.start()
        echoes = []
        try:
            with socket.create_connection(listener.getsockname(), timeout=PATIENCE) as client:
                # The long line arrives in pieces and is echoed in pieces.
                for line in (b"hello\n", b"readiness\n", b"x" * 50_000 + b"\n"):
                    client.sendall(line)
                    echoes.append(receive_exactly(client, len(line)))
        finally:
            server.join(PATIENCE)
    for echo in echoes:
        print(f"echoed {len(echo)} bytes: {echo[:20]!r}")
    return echoes


if __name__ == "__main__":
    main()
