"""Echo servers under load: messages/s, latency, and the server's CPU per message.

Each server runs in its own process pinned to one CPU, the load generator in
another pinned to another.  The figure of merit is the server's CPU time per
message: every system call a server adds shows in it, and it hardly depends
on the load generator (whose own CPU use is recorded: near 1.0, it was the
limit).  The load generator (``python -m pollkit.bench.echo``, or the caller's)
runs a closed loop on each connection (send a message, read all its echo,
send the next) and reads the server's CPU time from ``/proc`` around it.
"""

from __future__ import annotations

import glob
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._backends import parse_backend
from .._select import FD_SETSIZE, SelectPoller
from . import harness
from .harness import Progress, cell, paired_ratios, percentile, serpentine, summarize, table

__all__ = ["Contender", "ServerProcess", "choose_cpus", "connect_many", "describe",
           "pingpong", "pollkit_contenders", "python_generator", "raise_fd_limit", "run",
           "server_cpu"]  # fmt: skip

#: A load generator: (host, port, connections, size, warmup, duration, server
#: pids, CPU to pin to or None) -> the argv of a process that prints one result.
Generator = Callable[[str, int, int, int, float, float, list[int], int | None], list[str]]
CPU = "server_cpu_ns_per_message"


@dataclass(frozen=True)
class Contender:
    """A server to measure: a name, the argv that runs it (``{host}``/``{port}`` filled in).

    ``max_connections``: the most it can serve at once (``None``: no known
    limit), with ``limit_reason`` saying why; a point past it is skipped.
    """

    name: str
    argv: tuple[str, ...]
    max_connections: int | None = None
    limit_reason: str = ""


#: fds a select-driven server needs below FD_SETSIZE besides its connections
#: (stdio, the listening socket, the waker's and the signal wakeup's pipes, a log).
_SELECT_RESERVE = 16


def pollkit_contenders(specs: Sequence[str], *extra: str) -> list[Contender]:
    """``pollkit echo --backend SPEC`` for each spec, with no client limit, plus ``extra``."""
    argv = (sys.executable, "-m", "pollkit", "echo", "--host", "{host}", "--port", "{port}",
            "--max-clients", "1000000", *extra)  # fmt: skip
    found = []
    for spec in specs:
        limit, why = None, ""
        if parse_backend(spec).driver == SelectPoller.name:
            limit = FD_SETSIZE - _SELECT_RESERVE
            why = f"select watches only fds below FD_SETSIZE ({FD_SETSIZE})"
        found.append(Contender(f"pollkit-{spec}", (*argv, "--backend", spec), limit, why))
    return found


def choose_cpus() -> tuple[int | None, int | None]:
    """(server CPU, load generator CPU): the first and last usable, or no pinning on one."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[-1]) if len(cpus) > 1 else (None, None)


def _refused(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) != 0


class ServerProcess:
    """A contender's server in its own process, pinned to ``cpu``, accepting connections."""

    def __init__(self, contender: Contender, cpu: int | None, host: str = "127.0.0.1") -> None:
        self.name: str = contender.name
        self.host: str = host
        with socket.socket() as probe:
            probe.bind((host, 0))
            self.port: int = probe.getsockname()[1]
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  # closed by stop()
        argv = [arg.format(host=host, port=self.port) for arg in contender.argv]
        self.process: subprocess.Popen[bytes] = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)  # fmt: skip
        self.pid: int = self.process.pid
        try:
            if cpu is not None:
                os.sched_setaffinity(self.pid, {cpu})
            deadline = time.monotonic() + 20
            while _refused(host, self.port):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise harness.BenchError(f"{self.name} did not start: {self.log_tail()}")
                time.sleep(0.05)  # a port that is not open yet gives no event to wait on
        except BaseException:
            self.stop()
            raise

    def log_tail(self) -> str:
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").splitlines()
        return " | ".join(lines[-3:]) or "no output"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def python_generator(host: str, port: int, connections: int, size: int, warmup: float,
                     duration: float, pids: list[int], cpu: int | None) -> list[str]:  # fmt: skip
    """The argv of this module's own load generator."""
    args = (host, port, connections, size, warmup, duration, ",".join(map(str, pids)), cpu)
    return [sys.executable, "-m", __name__, *(str(-1 if a is None else a) for a in args)]


def raise_fd_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to ``needed``; ``OSError`` if the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise OSError(f"{needed} fds are needed; RLIMIT_NOFILE's hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def server_cpu(pids: Sequence[int]) -> tuple[int | None, float]:
    """CPU time of ``pids``: (schedstat's exact ns, or ``None``; stat's ``utime + stime`` in s)."""
    ns: int | None = 0
    seconds = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after the name
        seconds += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        tasks = [Path(t).read_text() for t in glob.glob(f"/proc/{pid}/task/*/schedstat")]
        ns = None if ns is None or not tasks else ns + sum(int(t.split()[0]) for t in tasks)
    return ns, seconds


def connect_many(host: str, port: int, count: int, into: list[socket.socket]) -> None:
    """Open ``count`` connections into ``into``, each proven served, then left non-blocking."""
    raise_fd_limit(len(into) + count + 64)
    while count > 0:
        batch = []
        for _ in range(min(64, count)):
            sock = socket.create_connection((host, port), timeout=30)
            into.append(sock)
            batch.append(sock)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"!")
        for sock in batch:
            if sock.recv(1) != b"!":
                raise ConnectionError(f"{host}:{port} did not echo a one-byte ping")
            sock.setblocking(False)
        count -= len(batch)


def pingpong(host: str, port: int, connections: int, size: int, warmup: float, duration: float,
             pids: Sequence[int]) -> dict[str, Any]:  # fmt: skip
    """Closed-loop ping-pong: messages, latency, server CPU; ``ConnectionError`` on a bad echo."""
    payload = memoryview(bytes(range(256)) * (size // 256) + bytes(size % 256))
    sockets: list[socket.socket] = []
    epoll = select.epoll()
    latencies: list[int] = []
    try:
        connect_many(host, port, connections, sockets)
        by_fd = {sock.fileno(): sock for sock in sockets}
        got = dict.fromkeys(by_fd, 0)
        sent_at = dict.fromkeys(by_fd, time.perf_counter_ns())
        unsent: dict[int, memoryview] = {}
        buffer = bytearray(max(size, 65536))

        def send(fd: int, data: memoryview) -> None:
            try:
                sent = by_fd[fd].send(data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):  # the rest when the socket is writable again
                unsent[fd] = data[sent:]
                epoll.modify(fd, select.EPOLLIN | select.EPOLLOUT)

        def run_until(end: float) -> None:
            while time.monotonic() < end:
                for fd, events in epoll.poll(0.05):
                    if events & select.EPOLLOUT and fd in unsent:
                        epoll.modify(fd, select.EPOLLIN)
                        send(fd, unsent.pop(fd))
                    try:
                        count = by_fd[fd].recv_into(buffer)
                    except BlockingIOError:
                        continue
                    if not count or got[fd] + count > size:
                        raise ConnectionError(f"the server closed fd {fd} or echoed too much")
                    got[fd] += count
                    if got[fd] == size:
                        now = time.perf_counter_ns()
                        latencies.append(now - sent_at[fd])
                        got[fd], sent_at[fd] = 0, now
                        send(fd, payload)

        for fd in by_fd:
            epoll.register(fd, select.EPOLLIN)
            send(fd, payload)
        run_until(time.monotonic() + warmup)
        latencies.clear()
        before, own = server_cpu(pids), time.process_time()
        start = time.monotonic()
        run_until(start + duration)
        seconds = time.monotonic() - start
        after, own = server_cpu(pids), time.process_time() - own
    finally:
        epoll.close()
        for sock in sockets:
            sock.close()
    messages, ordered = len(latencies), sorted(latencies)
    ns = None if after[0] is None or before[0] is None else after[0] - before[0]
    stat_s = after[1] - before[1]
    latency = {"p50": percentile(ordered, 0.5), "p99": percentile(ordered, 0.99)} if ordered else {}
    return {
        "connections": connections, "size": size, "messages": messages, "seconds": seconds,
        "messages_per_second": messages / seconds, "latency_ns": latency,
        "server_cpu_ns": ns, "server_cpu_stat_seconds": stat_s,
        "server_cpu_ns_per_message": ns / messages if ns and messages else None,
        "server_cpu_stat_ns_per_message": stat_s * 1e9 / messages if messages else None,
        "client_utilisation": own / seconds, "generator": "python",
    }  # fmt: skip


def _drive(argv: list[str], server: ServerProcess, seconds: float) -> dict[str, Any]:
    """One load generator run against ``server``: its result, or an ``error``."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        return {"error": "the load generator timed out"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["the load generator failed"])[-1]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if server.process.poll() is not None:
        result["error"] = f"the server exited: {server.log_tail()}"
    return result


def run(study: str, contenders: Sequence[Contender], points: Sequence[tuple[int, int]],
        rounds: int, progress: Progress, *, warmup: float = 0.2, duration: float = 1.0,
        base: str | None = None, generator: Generator = python_generator, pin: bool = True,
        pids_of: Callable[[int], list[int]] = lambda pid: [pid]) -> dict[str, Any]:  # fmt: skip
    """Drive each contender at each ``(connections, size)`` point, in serpentine rounds.

    Ratios are to ``base`` (default: the first); ``pids_of`` says whose CPU counts.  A failed
    round is recorded with an ``error`` and left out of the figures.
    """
    cpus = choose_cpus() if pin else (None, None)
    serves = [[c for c in contenders if (c.max_connections or n) >= n] for n, _ in points]
    progress.start(study, rounds * sum(map(len, serves)))
    servers: list[ServerProcess] = []
    found = []
    try:
        for contender in contenders:
            servers.append(ServerProcess(contender, cpus[0]))
        for (conns, size), able in zip(points, serves, strict=True):
            skipped = {c.name: c.limit_reason for c in contenders if c not in able}
            serving = [server for server in servers if server.name not in skipped]
            runs: dict[str, list[dict[str, Any]]] = {server.name: [] for server in serving}
            for number in range(rounds):
                for server in serpentine(serving, number):
                    argv = generator(server.host, server.port, conns, size, warmup, duration,
                                     pids_of(server.pid), cpus[1])  # fmt: skip
                    runs[server.name].append(_drive(argv, server, warmup + duration))
                    progress.step(f"{conns}x{size} {server.name} round {number + 1}")
            runs_by_name = {name: {"rounds": found_runs} for name, found_runs in runs.items()}
            point = {"connections": conns, "size": size, "contenders": runs_by_name}
            found.append(point | ({"skipped": skipped} if skipped else {}))
    finally:
        for server in servers:
            server.stop()
    return describe(study, {"base": base or contenders[0].name, "points": found})


def describe(study: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each contender's figures (medians [p25-p75]) and its table filled in."""
    rows: list[list[object]] = []
    for point in data["points"]:
        where = f"{point['connections']}x{point['size']}"
        base = point["contenders"].get(data["base"], {}).get("rounds", [])
        for name, entry in point["contenders"].items():
            good = [r for r in entry["rounds"] if "error" not in r]
            for key in ("messages_per_second", CPU, "client_utilisation"):
                entry[key] = summarize([r[key] for r in good if r.get(key) is not None])
            for key in ("p50", "p99"):  # a round without messages has no latency
                latency = [(r.get("latency_ns") or {}).get(key) for r in good]
                entry[key] = summarize([value for value in latency if value is not None])
            ratios = paired_ratios(entry["rounds"], base, CPU)
            entry["cpu_per_message_ratio_to_base"] = summarize(ratios)
            entry["errors"] = [r["error"] for r in entry["rounds"] if "error" in r]
            util = entry["client_utilisation"]
            rows.append([
                where, name, cell(entry["messages_per_second"], digits=0),
                cell(entry["p50"], 1e-3, 1), cell(entry["p99"], 1e-3, 1),
                cell(entry[CPU], 1e-3),
                cell(entry["cpu_per_message_ratio_to_base"], digits=3),
                "-" if util is None else f"{util['median']:.2f}", "; ".join(entry["errors"][-1:]),
            ])  # fmt: skip
        rows += [[where, name, "skipped: " + why] for name, why in point.get("skipped", {}).items()]
    headers = ["conns x size", "contender", "msgs/s", "p50 us", "p99 us", "server CPU us/msg"]
    headers += [f"CPU/msg vs {data['base']}", "client util", "errors"]
    title = f"{study}: closed-loop ping-pong; medians of rounds [p25-p75], ratios paired by round"
    return data | {"table": table(title, headers, rows), "targets": data.get("targets", [])}


def main(argv: Sequence[str]) -> int:
    """The load generator: ``HOST PORT CONNECTIONS SIZE WARMUP DURATION PIDS CPU``, as C's."""
    host, port, connections, size, warmup, duration, pids, cpu = argv
    if int(cpu) >= 0:
        os.sched_setaffinity(0, {int(cpu)})
    try:
        found = pingpong(host, int(port), int(connections), int(size), float(warmup),
                         float(duration), [int(p) for p in pids.split(",") if p])  # fmt: skip
    except OSError as exc:
        print(f"load generator: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(found), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
