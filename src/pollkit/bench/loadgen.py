"""The load generator: a separate process that drives one echo server.

``python -m pollkit.bench.loadgen pingpong ...`` opens N connections and runs
a closed loop on each (send one message, read every byte of its echo, send
the next), for a warm-up and then a measured window.  It reads the server's
CPU time from ``/proc`` itself at the edges of the window, so the window is
exactly the span its message count covers, and prints one JSON object.

``python -m pollkit.bench.loadgen hold --stages 50,5000 ...`` opens idle
connections in stages; after each stage it prints ``{"held": N}`` and waits
for a line on stdin, so that the parent can read the server's memory while
the connections are held, then closes them all.

Connections are opened in batches, each batch proven served by a one-byte
round trip before the next is opened, so a server's accept backlog never
overflows (an overflow costs a one-second SYN retransmit).
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import select
import socket
import sys
import time
from array import array
from collections.abc import Sequence
from typing import Any

from .procfs import cpu_seconds_from_stat, descendants, schedstat_ns
from .stats import percentile

__all__ = ["connect_many", "main", "raise_fd_limit", "run_hold", "run_pingpong"]

_BATCH = 64


def raise_fd_limit(needed: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to ``needed`` fds if it is lower.

    Raises ``OSError`` if the hard limit is below ``needed``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise OSError(
                f"{needed} fds are needed but RLIMIT_NOFILE's hard limit is {hard}; "
                "raise it (ulimit -Hn) or ask for fewer connections"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def connect_many(
    host: str, port: int, count: int, *, deadline: float, into: list[socket.socket] | None = None
) -> list[socket.socket]:
    """Open ``count`` TCP connections, each proven served by a one-byte echo.

    Returns them non-blocking with ``TCP_NODELAY``; appends to ``into`` as it
    goes, so that the caller can close what was opened if this raises.
    Raises ``TimeoutError`` past ``deadline`` (a ``time.monotonic()`` value),
    ``ConnectionError`` if the server closes or echoes the wrong byte.
    """
    opened = [] if into is None else into
    raise_fd_limit(len(opened) + count + 64)
    remaining = count
    while remaining:
        batch = []
        for _ in range(min(_BATCH, remaining)):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"could not open {count} connections in time")
            sock = socket.create_connection((host, port), timeout=left)
            opened.append(sock)
            batch.append(sock)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"!")
        for sock in batch:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            if sock.recv(1) != b"!":
                raise ConnectionError(f"{host}:{port} did not echo a one-byte ping")
            sock.setblocking(False)
        remaining -= len(batch)
    return opened


def _server_cpu(pids: Sequence[int]) -> tuple[int | None, float | None]:
    """Summed CPU time of ``pids``: (schedstat ns or None, stat seconds); (None, None) if none."""
    if not pids:
        return None, None
    total_ns: int | None = 0
    total_s = 0.0
    for pid in pids:
        ns = schedstat_ns(pid)
        total_ns = None if ns is None or total_ns is None else total_ns + ns
        total_s += cpu_seconds_from_stat(pid)
    return total_ns, total_s


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def run_pingpong(
    host: str,
    port: int,
    connections: int,
    size: int,
    *,
    warmup: float,
    duration: float,
    server_pid: int | None = None,
    server_tree: bool = False,
) -> dict[str, Any]:
    """Closed-loop ping-pong on ``connections`` connections with ``size``-byte messages.

    Returns messages, the window's length, latency percentiles (ns), the
    server's CPU time over the window (schedstat ns and stat seconds, when
    ``server_pid`` is given) and this process's own CPU time, which tells
    whether the load generator itself was saturated.  ``server_tree`` adds
    the CPU time of the server's descendants (``--workers`` processes).  Raises
    ``ConnectionError`` if the server closes a connection or echoes more
    than it was sent, ``TimeoutError`` if connecting takes too long.
    """
    if connections < 1 or size < 1 or warmup < 0 or duration <= 0:
        raise ValueError(
            f"need connections >= 1, size >= 1, warmup >= 0, duration > 0; got "
            f"{connections}, {size}, {warmup}, {duration}"
        )
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    sockets: list[socket.socket] = []
    epoll = select.epoll()
    try:
        connect_many(host, port, connections, deadline=time.monotonic() + 60.0, into=sockets)
        pids = [] if server_pid is None else [server_pid]
        if server_pid is not None and server_tree:
            pids += descendants(server_pid)
        return _pingpong_loop(epoll, sockets, payload, warmup, duration, pids)
    finally:
        epoll.close()
        for sock in sockets:
            sock.close()


def _pingpong_loop(
    epoll: select.epoll,
    sockets: list[socket.socket],
    payload: bytes,
    warmup: float,
    duration: float,
    server_pids: Sequence[int],
) -> dict[str, Any]:
    size = len(payload)
    clock = time.perf_counter_ns
    epollin, epollout = select.EPOLLIN, select.EPOLLOUT
    by_fd = {sock.fileno(): sock for sock in sockets}
    received = dict.fromkeys(by_fd, 0)
    sent_at = dict.fromkeys(by_fd, 0)
    unsent: dict[int, memoryview] = {}
    completed = dict.fromkeys(by_fd, 0)
    buffer = bytearray(max(size, 65536))
    latencies = array("q")

    def send(fd: int, sock: socket.socket) -> None:
        try:
            sent = sock.send(payload)
        except BlockingIOError:
            sent = 0
        if sent < size:
            unsent[fd] = memoryview(payload)[sent:]
            epoll.modify(fd, epollin | epollout)

    for fd in by_fd:
        epoll.register(fd, epollin)
    start = clock()
    for fd, sock in by_fd.items():
        sent_at[fd] = start
        send(fd, sock)
    window_start = start + int(warmup * 1e9)
    window_end = window_start + int(duration * 1e9)
    measuring = False
    messages = 0
    cpu_before: tuple[int | None, float | None] = (None, None)
    own_before = 0
    now = start
    while True:
        now = clock()
        if not measuring and now >= window_start:
            cpu_before = _server_cpu(server_pids)
            own_before = time.process_time_ns()
            window_start = now = clock()
            window_end = now + int(duration * 1e9)
            completed = dict.fromkeys(by_fd, 0)
            measuring = True
        elif measuring and now >= window_end:
            break
        for fd, events in epoll.poll(0.05):
            sock = by_fd[fd]
            if events & epollout:
                rest = unsent[fd]
                try:
                    sent = sock.send(rest)
                except BlockingIOError:
                    sent = 0
                if sent < len(rest):
                    unsent[fd] = rest[sent:]
                else:
                    del unsent[fd]
                    epoll.modify(fd, epollin)
            if not events & ~epollout:
                continue
            try:
                count = sock.recv_into(buffer)
            except BlockingIOError:
                continue
            if not count:
                raise ConnectionError(f"the server closed connection fd {fd} mid-benchmark")
            got = received[fd] + count
            if got < size:
                received[fd] = got
                continue
            if got > size:
                raise ConnectionError(f"the server echoed {got} bytes for a {size}-byte message")
            finished = clock()
            if measuring:
                latencies.append(finished - sent_at[fd])
                messages += 1
                completed[fd] += 1
            received[fd] = 0
            sent_at[fd] = finished
            send(fd, sock)
    cpu_after = _server_cpu(server_pids)
    own_cpu_ns = time.process_time_ns() - own_before
    seconds = (now - window_start) / 1e9
    ordered = sorted(latencies)
    server_ns = _delta(cpu_after[0], cpu_before[0])
    server_stat_s = _delta(cpu_after[1], cpu_before[1])
    return {
        "connections": len(sockets),
        "server_processes": len(server_pids),
        "size": size,
        "messages": messages,
        "seconds": seconds,
        "messages_per_second": messages / seconds if seconds > 0 else 0.0,
        "latency_ns": {
            "p50": percentile(ordered, 0.5) if ordered else None,
            "p99": percentile(ordered, 0.99) if ordered else None,
            "max": ordered[-1] if ordered else None,
        },
        "idle_connections": sum(1 for n in completed.values() if n == 0),
        "server_cpu_ns": server_ns,
        "server_cpu_stat_seconds": server_stat_s,
        "server_cpu_ns_per_message": server_ns / messages if server_ns and messages else None,
        "server_cpu_stat_ns_per_message": (
            server_stat_s * 1e9 / messages if server_stat_s is not None and messages else None
        ),
        "server_utilisation": server_ns / 1e9 / seconds if server_ns and seconds > 0 else None,
        "client_utilisation": own_cpu_ns / 1e9 / seconds if seconds > 0 else None,
    }


def run_hold(host: str, port: int, stages: Sequence[int]) -> None:
    """Hold idle connections in growing ``stages``; print ``{"held": N}`` after each.

    After each stage, waits for a line on stdin (EOF ends early), then goes on;
    closes everything at the end.
    """
    if not stages or any(b <= a for a, b in itertools.pairwise(stages)) or stages[0] < 1:
        raise ValueError(f"stages must be increasing positive counts, not {list(stages)!r}")
    sockets: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 120.0
        for target in stages:
            connect_many(host, port, target - len(sockets), deadline=deadline, into=sockets)
            print(json.dumps({"held": len(sockets)}), flush=True)
            if not sys.stdin.readline():
                break
    finally:
        for sock in sockets:
            sock.close()


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass  # not allowed here: run unpinned


def main(argv: Sequence[str] | None = None) -> int:
    from ..cli import ArgumentParser

    parser = ArgumentParser(
        prog="python -m pollkit.bench.loadgen", description="Drive an echo server."
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    pingpong = modes.add_parser("pingpong", help="closed-loop ping-pong; prints one JSON object")
    hold = modes.add_parser("hold", help="hold idle connections in stages")
    for sub in (pingpong, hold):
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, required=True)
        sub.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    pingpong.add_argument("--connections", type=int, default=50)
    pingpong.add_argument("--size", type=int, default=1024)
    pingpong.add_argument("--warmup", type=float, default=0.3)
    pingpong.add_argument("--duration", type=float, default=1.0)
    pingpong.add_argument("--server-pid", type=int, default=None)
    pingpong.add_argument(
        "--server-tree", action="store_true", help="count the server's child processes too"
    )
    hold.add_argument("--stages", required=True, help="comma-separated increasing counts")
    args = parser.parse_args(argv)
    _pin(args.cpu)
    try:
        if args.mode == "pingpong":
            result = run_pingpong(
                args.host,
                args.port,
                args.connections,
                args.size,
                warmup=args.warmup,
                duration=args.duration,
                server_pid=args.server_pid,
                server_tree=args.server_tree,
            )
            print(json.dumps(result), flush=True)
        else:
            run_hold(args.host, args.port, [int(s) for s in args.stages.split(",")])
    except (OSError, ValueError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
