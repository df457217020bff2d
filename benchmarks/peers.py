"""The echo servers pollkit's ``EchoServer`` is measured against.

Run one as its own process: ``python benchmarks/peers.py NAME --port P``.
It serves until killed (SIGTERM or SIGINT).  Every peer sets ``TCP_NODELAY``
on its connections, as asyncio and uvloop do by default, so no peer waits on
Nagle's algorithm.

* ``raw-epoll``: the hand-written floor.  A level-triggered ``select.epoll``
  loop that reads into one reused buffer, writes straight away, and asks for
  ``EPOLLOUT`` only while output is pending (and stops reading that client
  meanwhile, so memory stays bounded).  No ``epoll_ctl`` per message.
* ``protocol-floor``: the least any asyncio-style ``Protocol`` layer does,
  with none of a server's defences: the same epoll loop, but each read is
  ``os.read()`` into a new ``bytes`` handed to ``data_received()``, whose
  ``transport.write()`` (Python code) sends at once and keeps what the
  kernel did not take.  No limits, timeouts, states or error isolation.  It
  shows what the ``Protocol`` contract itself costs over ``raw-epoll`` (a
  bytes object per read, a Python call per write), apart from what
  pollkit's defences add.
* ``selectors``: the same loop on stdlib ``selectors.DefaultSelector``.
* ``asyncio-protocol``: ``asyncio.Protocol`` whose ``data_received`` writes
  the data back.
* ``asyncio-streams``: ``asyncio.start_server`` with a read / write / drain
  coroutine per client.
* ``uvloop-protocol``: the same Protocol on uvloop's event loop (needs
  ``uvloop``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import select
import selectors
import socket
import sys
from collections.abc import Callable, Sequence

from pollkit.cli import ArgumentParser, port_arg

_BUFFER_SIZE = 65536


def open_listener(host: str, port: int) -> socket.socket:
    """A non-blocking TCP listening socket on ``host:port`` with a deep backlog."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(4096)  # the kernel clamps it to net.core.somaxconn
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


def _accept_all(listener: socket.socket) -> list[socket.socket]:
    accepted: list[socket.socket] = []
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return accepted
        except OSError:  # EMFILE, ECONNABORTED: take what we have, retry on the next event
            return accepted
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        accepted.append(conn)


def serve_raw_epoll(listener: socket.socket) -> None:
    """The hand-written level-triggered epoll echo loop (never returns)."""
    epoll = select.epoll()
    poll = epoll.poll
    listen_fd = listener.fileno()
    epoll.register(listen_fd, select.EPOLLIN)
    sockets: dict[int, socket.socket] = {}
    pending: dict[int, bytes] = {}
    buffer = bytearray(_BUFFER_SIZE)
    view = memoryview(buffer)
    epollin, epollout = select.EPOLLIN, select.EPOLLOUT

    def drop(fd: int) -> None:
        epoll.unregister(fd)
        sockets.pop(fd).close()
        pending.pop(fd, None)

    while True:
        for fd, events in poll():
            if fd == listen_fd:
                for conn in _accept_all(listener):
                    sockets[conn.fileno()] = conn
                    epoll.register(conn.fileno(), epollin)
                continue
            sock = sockets[fd]
            if events & epollout:
                data = pending[fd]
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    continue
                except OSError:
                    drop(fd)
                    continue
                if sent < len(data):
                    pending[fd] = data[sent:]
                else:
                    del pending[fd]
                    epoll.modify(fd, epollin)
                continue
            try:
                received = sock.recv_into(buffer)
            except BlockingIOError:
                continue
            except OSError:
                received = 0
            if not received:
                drop(fd)
                continue
            try:
                sent = sock.send(view[:received])
            except BlockingIOError:
                sent = 0
            except OSError:
                drop(fd)
                continue
            if sent < received:
                pending[fd] = bytes(view[sent:received])
                epoll.modify(fd, epollout)


class _FloorTransport:
    """``protocol-floor``'s transport: send at once, buffer the rest, nothing more."""

    __slots__ = ("_epoll", "_fd", "_out", "_protocol", "_sock")

    def __init__(self, epoll: select.epoll, sock: socket.socket, protocol: _FloorEcho) -> None:
        self._epoll = epoll
        self._sock = sock
        self._fd = sock.fileno()
        self._out: bytearray | None = None
        self._protocol = protocol

    def write(self, data: bytes) -> None:
        if self._out is not None:
            self._out += data
            return
        try:
            sent = self._sock.send(data, socket.MSG_NOSIGNAL)
        except BlockingIOError:
            sent = 0
        if sent != len(data):
            self._out = bytearray(data[sent:])
            self._epoll.modify(self._fd, select.EPOLLOUT)  # and stop reading meanwhile

    def flush(self) -> None:
        out = self._out
        assert out is not None
        sent = self._sock.send(out, socket.MSG_NOSIGNAL)
        del out[:sent]
        if not out:
            self._out = None
            self._epoll.modify(self._fd, select.EPOLLIN)


class _FloorEcho:
    """An echo ``Protocol`` as pollkit's is written: the transport's write is data_received."""

    __slots__ = ("data_received",)

    def connection_made(self, transport: _FloorTransport) -> None:
        self.data_received = transport.write


def serve_protocol_floor(listener: socket.socket) -> None:
    """``raw-epoll``'s loop handing each read to a Protocol as bytes (never returns)."""
    epoll = select.epoll()
    poll = epoll.poll
    listen_fd = listener.fileno()
    epoll.register(listen_fd, select.EPOLLIN)
    transports: dict[int, _FloorTransport] = {}
    read = os.read
    epollin, epollout = select.EPOLLIN, select.EPOLLOUT
    while True:
        for fd, events in poll():
            if fd == listen_fd:
                for conn in _accept_all(listener):
                    protocol = _FloorEcho()
                    transport = transports[conn.fileno()] = _FloorTransport(epoll, conn, protocol)
                    protocol.connection_made(transport)
                    epoll.register(conn.fileno(), epollin)
                continue
            transport = transports[fd]
            try:
                if events & epollout:
                    transport.flush()
                    continue
                data = read(fd, _BUFFER_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                epoll.unregister(fd)
                transports.pop(fd)._sock.close()
                continue
            transport._protocol.data_received(data)


def serve_selectors(listener: socket.socket) -> None:
    """The same loop on ``selectors.DefaultSelector`` (never returns)."""
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    pending: dict[socket.socket, bytes] = {}
    buffer = bytearray(_BUFFER_SIZE)
    view = memoryview(buffer)
    event_read, event_write = selectors.EVENT_READ, selectors.EVENT_WRITE

    def drop(sock: socket.socket) -> None:
        selector.unregister(sock)
        pending.pop(sock, None)
        sock.close()

    while True:
        for key, events in selector.select():
            sock = key.data
            if sock is None:
                for conn in _accept_all(listener):
                    selector.register(conn, event_read, conn)
                continue
            if events & event_write:
                data = pending[sock]
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    continue
                except OSError:
                    drop(sock)
                    continue
                if sent < len(data):
                    pending[sock] = data[sent:]
                else:
                    del pending[sock]
                    selector.modify(sock, event_read, sock)
                continue
            try:
                received = sock.recv_into(buffer)
            except BlockingIOError:
                continue
            except OSError:
                received = 0
            if not received:
                drop(sock)
                continue
            try:
                sent = sock.send(view[:received])
            except BlockingIOError:
                sent = 0
            except OSError:
                drop(sock)
                continue
            if sent < received:
                pending[sock] = bytes(view[sent:received])
                selector.modify(sock, event_write, sock)


class EchoProtocol(asyncio.Protocol):
    """Writes back whatever arrives; closes when the client does."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP server's transports are Transports

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _serve_protocol(listener: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, sock=listener, backlog=4096)
    async with server:
        await server.serve_forever()


async def _echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(_BUFFER_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _serve_streams(listener: socket.socket) -> None:
    server = await asyncio.start_server(_echo_stream, sock=listener, backlog=4096)
    async with server:
        await server.serve_forever()


def serve_asyncio_protocol(listener: socket.socket) -> None:
    asyncio.run(_serve_protocol(listener))


def serve_asyncio_streams(listener: socket.socket) -> None:
    asyncio.run(_serve_streams(listener))


def serve_uvloop_protocol(listener: socket.socket) -> None:
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(_serve_protocol(listener))


#: Peer name -> the function that serves on a listening socket.
PEERS: dict[str, Callable[[socket.socket], None]] = {
    "raw-epoll": serve_raw_epoll,
    "protocol-floor": serve_protocol_floor,
    "selectors": serve_selectors,
    "asyncio-protocol": serve_asyncio_protocol,
    "asyncio-streams": serve_asyncio_streams,
    "uvloop-protocol": serve_uvloop_protocol,
}


def available_peers() -> dict[str, str | None]:
    """Each peer's name and ``None`` if it can run here, else why not."""
    status: dict[str, str | None] = dict.fromkeys(PEERS)
    if importlib.util.find_spec("uvloop") is None:
        status["uvloop-protocol"] = "uvloop is not installed (pip install uvloop)"
    if not hasattr(select, "epoll"):
        status["raw-epoll"] = "this platform has no select.epoll"
        status["protocol-floor"] = "this platform has no select.epoll"
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="peers.py", description="Run one benchmark peer echo server.")
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port_arg, required=True)
    args = parser.parse_args(argv)
    reason = available_peers()[args.peer]
    if reason is not None:
        print(f"{parser.prog}: error: {args.peer}: {reason}", file=sys.stderr)
        return 1
    try:
        listener = open_listener(args.host, args.port)
    except OSError as exc:
        print(
            f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    try:
        PEERS[args.peer](listener)
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
