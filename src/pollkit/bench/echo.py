"""Echo servers under load: throughput, latency, server CPU per message, memory per connection.

Every contender is a server in its own process, pinned to the first CPU this
process may use; the load generator is another process, pinned to the last
one, so on a 2-core machine neither steals the other's core.  The figure of
merit is the **server's CPU time per echoed message**, read from ``/proc``
over the measured window (``schedstat`` nanoseconds; ``stat`` ticks are
recorded too): every system call a server adds shows in it at once.

The load generator is ``loadgen.c`` beside this module, compiled on first use
where a C compiler exists, else :mod:`pollkit.bench.loadgen`.  On loopback
most of a message's cost is the kernel's, paid alike by both ends, so a Python
generator needs about as much CPU per message as the server and becomes the
bottleneck; the C one needs about two thirds of that, which lets a Python
server run near saturation.  Each result records which generator ran and
both processes' CPU utilisation, so a saturated generator shows.

Contenders: pollkit's ``EchoServer`` on each driver (``pollkit-epoll``,
``pollkit-poll``, ``pollkit-select``), run as ``python -m pollkit echo`` (or
through the library where that command is missing), and the peers of
:mod:`pollkit.bench.peers` (``raw-epoll``, ``selectors``,
``asyncio-protocol``, ``asyncio-streams``, ``uvloop-protocol``).

Throughput runs all servers at once (idle ones sleep in their poll) and then
drives them in alternating rounds, A B C ... A B C ...; each round of each
contender is a fresh load generator process.  Ratios to ``raw-epoll`` are
medians of each round's own ratio.

Memory starts one fresh server per contender and round, holds ``warm``
connections, reads the server's ``VmRSS`` (and ``Pss``), holds N in all,
reads again: bytes per connection = growth / (N - warm).  Every connection is
proven served by a one-byte echo first, so the server has accepted and
registered it.  The ``warm`` connections keep one-time costs (the first
connection's imports and buffers) out of the figure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from .._select import FD_SETSIZE
from .peers import available_peers
from .procfs import descendants, pss_bytes, rss_bytes, schedstat_ns
from .report import Progress, format_table
from .stats import Spread, summarize

__all__ = [
    "BASELINE",
    "DEFAULT_PEERS",
    "GENERATORS",
    "Contender",
    "EchoPoint",
    "MemoryResult",
    "ServerProcess",
    "choose_cpus",
    "echo_contenders",
    "echo_table",
    "memory_table",
    "paired_ratio",
    "resolve_generator",
    "run_echo",
    "run_memory",
    "workers_contenders",
]

#: The contender every ratio is taken against: the hand-written raw epoll loop.
BASELINE = "raw-epoll"
DEFAULT_PEERS = ("raw-epoll", "selectors", "asyncio-protocol", "asyncio-streams", "uvloop-protocol")
DEFAULT_BACKENDS = ("epoll", "poll", "select")

#: Issue targets, checked where the study measured the point they are for.
CPU_TARGET_POINT = (50, 1024)
CPU_TARGET_RATIO = 1.05
MEMORY_TARGET_BYTES = 512
MEMORY_TARGET_CONNECTIONS = 5000

# select(2) stops at fd 1023; leave room for the server's own fds.
_SELECT_MAX_CONNECTIONS = FD_SETSIZE - 24


@dataclass(frozen=True)
class Contender:
    """One server to measure: a name and the command that runs it on a port."""

    name: str
    argv: tuple[str, ...]  # "{host}" and "{port}" are filled in
    backend: str | None = None
    via: str = "peer"

    @property
    def max_connections(self) -> int | None:
        return _SELECT_MAX_CONNECTIONS if self.backend == "select" else None

    def command(self, host: str, port: int) -> list[str]:
        return [arg.format(host=host, port=port) for arg in self.argv]


def _pollkit_echo_cli() -> str | None:
    """Why ``python -m pollkit echo`` cannot be used, or ``None`` if it can."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pollkit", "echo", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        return (
            "`pollkit echo` is not available yet: "
            + (done.stderr.strip().splitlines() or ["?"])[-1]
        )
    return None


def echo_contenders(
    backends: Sequence[str] = DEFAULT_BACKENDS,
    peers: Sequence[str] = DEFAULT_PEERS,
) -> tuple[list[Contender], dict[str, str]]:
    """The contenders that can run here, and the reason for each that cannot.

    ``BASELINE`` comes first when asked for, then ``pollkit-epoll`` and
    ``uvloop-protocol``, then the rest in the order asked for.
    """
    from .. import available_backends

    runnable: list[Contender] = []
    skipped: dict[str, str] = {}
    status = available_peers()
    for peer in peers:
        if peer not in status:
            raise ValueError(f"unknown peer {peer!r}; choose from {', '.join(status)}")
        reason = status[peer]
        if reason is None:
            argv: tuple[str, ...] = (
                sys.executable,
                "-m",
                "pollkit.bench.peers",
                peer,
                "--host",
                "{host}",
                "--port",
                "{port}",
            )
            runnable.append(Contender(peer, argv))
        else:
            skipped[peer] = reason
    usable = available_backends()
    cli_problem = _pollkit_echo_cli() if backends else None
    for backend in backends:
        name = f"pollkit-{backend}"
        if backend not in DEFAULT_BACKENDS:
            raise ValueError(
                f"unknown backend {backend!r}; choose from {', '.join(DEFAULT_BACKENDS)}"
            )
        if backend not in usable:
            skipped[name] = f"the {backend} driver is not available here"
            continue
        if cli_problem is None:
            runnable.append(Contender(name, _echo_command(backend), backend, via="cli"))
        else:
            argv = (
                sys.executable,
                "-m",
                "pollkit.bench.peers",
                "pollkit",
                "--backend",
                backend,
                "--host",
                "{host}",
                "--port",
                "{port}",
            )
            runnable.append(Contender(name, argv, backend, via="library"))
    # The pairs the targets compare run next to each other in every round, so
    # that a change of load on a shared machine falls between rounds, not
    # between the two halves of a ratio.
    first = (BASELINE, "pollkit-epoll", "uvloop-protocol")
    runnable.sort(key=lambda c: first.index(c.name) if c.name in first else len(first))
    return runnable, skipped


def _echo_command(backend: str, *extra: str) -> tuple[str, ...]:
    """``pollkit echo`` on ``backend``, as a contender's argv template.

    ``{host}`` and ``{port}`` are filled in when the server starts; the client
    limit is lifted so that the sweep's largest point is served, not refused.
    """
    return (
        *(sys.executable, "-m", "pollkit", "echo", "--backend", backend),
        *("--host", "{host}", "--port", "{port}", "--max-clients", "1000000"),
        *extra,
    )


def workers_contenders(backend: str, counts: Sequence[int]) -> list[Contender]:
    """``pollkit echo --workers N`` on ``backend``, one contender per N."""
    return [
        Contender(
            f"workers-{count}", _echo_command(backend, "--workers", str(count)), backend, via="cli"
        )
        for count in counts
    ]


def choose_cpus() -> tuple[int | None, int | None]:
    """(server CPU, load generator CPU): the first and last usable CPUs, or no pinning."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[-1]


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class ServerProcess:
    """A contender's server running in its own process, pinned, accepting connections."""

    def __init__(
        self, contender: Contender, host: str, cpu: int | None, *, start_timeout: float = 20.0
    ) -> None:
        self.contender = contender
        self.host = host
        self.port = _free_port(host)
        # Kept open for the server's lifetime, closed by stop().
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            contender.command(host, self.port),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        try:
            if cpu is not None:
                try:
                    os.sched_setaffinity(self.process.pid, {cpu})
                except OSError:
                    pass  # not allowed: run unpinned
            self._wait_until_listening(start_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.contender.name} exited with status {self.process.returncode}: "
                    f"{self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.contender.name} did not listen within {timeout} s")
            time.sleep(delay)  # polling a port that is not open yet: nothing to wait on
            delay = min(delay * 2, 0.2)

    def log_tail(self, lines: int = 3) -> str:
        self._log.seek(0)
        text = self._log.read().decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5.0)
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


GENERATORS = ("auto", "c", "python")


def c_generator(*, compiler: str | None = None) -> tuple[str | None, str | None]:
    """(path of the compiled C load generator, None), or (None, why it cannot be had).

    The C source ships beside this module; it is compiled once per source
    version with ``$CC`` (default ``cc``) into ``$XDG_CACHE_HOME/pollkit``
    (default ``~/.cache/pollkit``), or the temporary directory if that is not
    writable.  The Python generator costs about 1.5 times as much CPU per
    message, which on a 2-core machine makes it the bottleneck.
    """
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loadgen.c")
    try:
        with open(source, "rb") as file:
            digest = hashlib.sha256(file.read()).hexdigest()[:16]
    except OSError as exc:
        return None, f"no C source: {exc}"
    cache_root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    problem = "no directory to build in"
    for directory in (os.path.join(cache_root, "pollkit"), tempfile.gettempdir()):
        binary = os.path.join(directory, f"pollkit-loadgen-{digest}")
        if os.access(binary, os.X_OK):
            return binary, None
        cc = compiler or os.environ.get("CC") or "cc"
        if shutil.which(cc) is None:
            return None, f"no C compiler ({cc!r} not found)"
        try:
            os.makedirs(directory, exist_ok=True)
            partial = f"{binary}.{os.getpid()}.tmp"
            done = subprocess.run(
                [cc, "-O2", "-o", partial, source],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = str(exc)
            continue
        if done.returncode != 0:
            return None, f"{cc} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
        os.replace(partial, binary)  # atomic: concurrent runs never see half a binary
        return binary, None
    return None, f"cannot write the C load generator anywhere: {problem}"


def resolve_generator(generator: str) -> tuple[str | None, str]:
    """(C binary or None for Python, a note saying which and why).

    Raises ``ValueError`` for an unknown name, ``RuntimeError`` if ``"c"`` is
    asked for and cannot be built.
    """
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r}; choose from {', '.join(GENERATORS)}")
    if generator == "python":
        return None, "python"
    binary, problem = c_generator()
    if binary is None:
        if generator == "c":
            raise RuntimeError(f"the C load generator is not available: {problem}")
        return None, f"python (C generator unavailable: {problem})"
    return binary, "c"


def _loadgen_argv(mode: str, host: str, port: int, cpu: int | None) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "pollkit.bench.loadgen",
        mode,
        "--host",
        host,
        "--port",
        str(port),
    ]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    return argv


def _pingpong(
    server: ServerProcess,
    connections: int,
    size: int,
    warmup: float,
    duration: float,
    cpu: int | None,
    server_tree: bool,
    binary: str | None,
) -> dict[str, Any]:
    if binary is not None:
        pids = [server.pid]
        if server_tree:
            pids += descendants(server.pid)
        argv = [
            binary,
            server.host,
            str(server.port),
            str(connections),
            str(size),
            str(warmup),
            str(duration),
            ",".join(map(str, pids)),
            str(-1 if cpu is None else cpu),
        ]
        return _run_generator(argv, server, warmup + duration)
    argv = [
        *_loadgen_argv("pingpong", server.host, server.port, cpu),
        *("--connections", str(connections), "--size", str(size), "--warmup", str(warmup)),
        *("--duration", str(duration), "--server-pid", str(server.pid)),
    ]
    if server_tree:
        argv.append("--server-tree")
    return _run_generator(argv, server, warmup + duration)


def _run_generator(argv: list[str], server: ServerProcess, seconds: float) -> dict[str, Any]:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 120, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": "the load generator timed out"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["load generator failed"])[-1]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result.setdefault("generator", "python")
    if server.process.poll() is not None:
        result["error"] = f"the server exited: {server.log_tail()}"
    return result


def paired_ratio(
    mine: Sequence[dict[str, Any]],
    theirs: Sequence[dict[str, Any]],
    key: str = "server_cpu_ns_per_message",
) -> Spread | None:
    """Median and spread of round-by-round ratios ``mine / theirs`` of ``key``.

    Round *i* of one contender ran next to round *i* of the other, so each
    ratio compares two runs under the same load on a shared machine; rounds
    where either side failed, or lacks the figure, are left out.  ``None``
    when no pair is left.
    """
    ratios = []
    for a_round, b_round in zip(mine, theirs, strict=False):
        a = a_round.get(key)
        b = b_round.get(key)
        if a and b and "error" not in a_round and "error" not in b_round:
            ratios.append(float(a) / float(b))
    return summarize(ratios) if ratios else None


@dataclass
class EchoPoint:
    """One (connections, size) point: every contender's rounds and their summaries."""

    connections: int
    size: int
    rounds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def _values(self, name: str, key: str) -> list[float]:
        return [
            float(result[key])
            for result in self.rounds.get(name, [])
            if "error" not in result and isinstance(result.get(key), (int, float))
        ]

    def summary(self, name: str, key: str) -> Spread | None:
        """Median and spread of ``key`` over the contender's good rounds.

        ``key`` is a figure of the load generator's result, or ``"p50"`` /
        ``"p99"`` for latency; ``None`` when no round measured it.
        """
        values = self._latency(name, key) if key in ("p50", "p99") else self._values(name, key)
        return summarize(values) if values else None

    def _latency(self, name: str, which: str) -> list[float]:
        return [
            float(r["latency_ns"][which])
            for r in self.rounds.get(name, [])
            if "error" not in r and r.get("latency_ns", {}).get(which) is not None
        ]

    def cpu_ratio(self, name: str, base: str = BASELINE) -> Spread | None:
        """Median and spread of each round's CPU-per-message ratio ``name / base``."""
        return paired_ratio(self.rounds.get(name, []), self.rounds.get(base, []))

    def errors(self, name: str) -> list[str]:
        return [r["error"] for r in self.rounds.get(name, []) if "error" in r]

    def as_dict(self) -> dict[str, Any]:
        contenders: dict[str, Any] = {}
        for name in self.rounds:
            entry: dict[str, Any] = {"rounds": self.rounds[name], "errors": self.errors(name)}
            for key in (
                "messages_per_second",
                "server_cpu_ns_per_message",
                "server_cpu_stat_ns_per_message",
                "server_utilisation",
                "client_utilisation",
                "p50",
                "p99",
            ):
                spread = self.summary(name, key)
                entry[key] = None if spread is None else spread.as_dict()
            ratio = self.cpu_ratio(name)
            entry["cpu_per_message_ratio_to_raw"] = None if ratio is None else ratio.as_dict()
            contenders[name] = entry
        return {
            "connections": self.connections,
            "size": self.size,
            "contenders": contenders,
            "skipped": self.skipped,
        }


def _rounds_at(point: tuple[int, int], rounds: int, target_rounds: int | None) -> int:
    return target_rounds if target_rounds is not None and point == CPU_TARGET_POINT else rounds


def run_echo(
    contenders: Sequence[Contender],
    points: Sequence[tuple[int, int]] = (CPU_TARGET_POINT,),
    *,
    rounds: int = 5,
    target_rounds: int | None = None,
    warmup: float = 0.3,
    duration: float = 1.0,
    host: str = "127.0.0.1",
    pin: bool = True,
    server_tree: bool = False,
    study: str = "echo",
    generator: str = "auto",
    progress: Progress | None = None,
) -> list[EchoPoint]:
    """Drive every contender at each ``(connections, size)`` point in alternating rounds.

    ``target_rounds`` (default ``rounds``) is the number of rounds at
    :data:`CPU_TARGET_POINT`, where the targets compare contenders a few
    percent apart and more rounds narrow the median.

    ``pin=False`` leaves servers and load generator to the scheduler (the
    workers study, whose servers need every core); ``server_tree`` counts the
    CPU time of each server's child processes too.  ``generator`` picks the
    load generator: ``"c"`` (compiled on first use), ``"python"``, or
    ``"auto"``, C where a compiler is found.  A failed round (a server that
    dies, a load generator error) is recorded with an ``error`` and left out
    of the summaries; it does not stop the run.
    Raises ``RuntimeError``/``TimeoutError`` if a server cannot be started.
    """
    server_cpu, client_cpu = choose_cpus() if pin else (None, None)
    binary, _ = resolve_generator(generator)
    if progress is not None:
        total = sum(_rounds_at(point, rounds, target_rounds) for point in points)
        progress.start(study, total * len(contenders))
    servers: list[ServerProcess] = []
    try:
        for contender in contenders:
            servers.append(ServerProcess(contender, host, server_cpu))
        results = []
        for connections, size in points:
            point = EchoPoint(connections, size)
            active = []
            for server in servers:
                limit = server.contender.max_connections
                if limit is not None and connections > limit:
                    point.skipped[server.contender.name] = (
                        f"select cannot watch fds >= FD_SETSIZE ({FD_SETSIZE})"
                    )
                else:
                    active.append(server)
                    point.rounds[server.contender.name] = []
            point_rounds = _rounds_at((connections, size), rounds, target_rounds)
            for round_number in range(point_rounds):
                # Serpentine order (A B C, then C B A, ...): every contender
                # spends as many rounds early as late in a round, so a drift
                # within rounds cannot favour a fixed position, and the pairs
                # the targets compare stay next to each other.
                ordered = servers if round_number % 2 == 0 else servers[::-1]
                for server in ordered:
                    name = server.contender.name
                    if server in active:
                        point.rounds[name].append(
                            _pingpong(
                                server,
                                connections,
                                size,
                                warmup,
                                duration,
                                client_cpu,
                                server_tree,
                                binary,
                            )
                        )
                    if progress is not None:
                        progress.step(
                            f"{connections} conns x {size} B, {name}, "
                            f"round {round_number + 1}/{point_rounds}"
                        )
            results.append(point)
        return results
    finally:
        for server in servers:
            server.stop()


@dataclass
class MemoryResult:
    """Server memory per held idle connection, per contender and connection count."""

    name: str
    connections: int
    warm: int
    bytes_per_connection: list[float] = field(default_factory=list)
    pss_bytes_per_connection: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        rss = summarize(self.bytes_per_connection) if self.bytes_per_connection else None
        pss = summarize(self.pss_bytes_per_connection) if self.pss_bytes_per_connection else None
        return {
            "contender": self.name,
            "connections": self.connections,
            "warm": self.warm,
            "rss_bytes_per_connection": None if rss is None else rss.as_dict(),
            "pss_bytes_per_connection": None if pss is None else pss.as_dict(),
            "rounds_rss": self.bytes_per_connection,
            "rounds_pss": self.pss_bytes_per_connection,
            "errors": self.errors,
            "skipped": self.skipped,
        }


def _wait_until_idle(pid: int, timeout: float = 5.0) -> None:
    """Wait (bounded) until the server stops using CPU, so its memory has settled."""
    deadline = time.monotonic() + timeout
    last = schedstat_ns(pid)
    while time.monotonic() < deadline:
        time.sleep(0.05)  # sampling a counter: there is no event to wait on
        now = schedstat_ns(pid)
        if now is None or now == last:
            return
        last = now


def _memory_round(
    contender: Contender,
    counts: Sequence[int],
    warm: int,
    host: str,
    cpus: tuple[int | None, int | None],
) -> dict[int, tuple[float, float | None]]:
    """One fresh server: bytes per connection (RSS, Pss) at each count."""
    server_cpu, client_cpu = cpus
    stages = [warm, *counts]
    found: dict[int, tuple[float, float | None]] = {}
    with ServerProcess(contender, host, server_cpu) as server:
        argv = _loadgen_argv("hold", host, server.port, client_cpu)
        argv += ["--stages", ",".join(map(str, stages))]
        holder = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert holder.stdin is not None  # a PIPE
        assert holder.stdout is not None  # a PIPE
        try:
            base_rss = 0
            base_pss: int | None = None
            for stage in stages:
                line = holder.stdout.readline()  # the holder's own deadline bounds this
                if not line:
                    error = holder.stderr.read().strip() if holder.stderr else ""
                    raise RuntimeError(f"the load generator stopped: {error or 'no output'}")
                held = json.loads(line)["held"]
                _wait_until_idle(server.pid)
                rss, pss = rss_bytes(server.pid), pss_bytes(server.pid)
                if stage == warm:
                    base_rss, base_pss = rss, pss
                else:
                    added = held - warm
                    found[stage] = (
                        (rss - base_rss) / added,
                        None if pss is None or base_pss is None else (pss - base_pss) / added,
                    )
                holder.stdin.write("\n")
                holder.stdin.flush()
        finally:
            holder.stdin.close()
            try:
                holder.wait(60)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
            holder.stdout.close()
            if holder.stderr is not None:
                holder.stderr.close()
    return found


def run_memory(
    contenders: Sequence[Contender],
    counts: Sequence[int] = (MEMORY_TARGET_CONNECTIONS,),
    *,
    rounds: int = 1,
    warm: int = 50,
    host: str = "127.0.0.1",
    progress: Progress | None = None,
) -> list[MemoryResult]:
    """Server memory per held idle connection at each count, fresh servers each round.

    Contenders alternate within each round.  Counts a contender cannot hold
    (select past FD_SETSIZE) are reported as skipped.
    """
    counts = sorted(counts)
    if not counts or counts[0] <= warm:
        raise ValueError(f"connection counts must exceed warm ({warm}), not {list(counts)!r}")
    cpus = choose_cpus()
    results = {(c.name, n): MemoryResult(c.name, n, warm) for c in contenders for n in counts}
    if progress is not None:
        progress.start("memory", rounds * len(contenders))
    for round_number in range(rounds):
        for contender in contenders:
            limit = contender.max_connections
            usable = [n for n in counts if limit is None or n <= limit]
            for n in counts:
                if n not in usable:
                    reason = f"select cannot watch fds >= FD_SETSIZE ({FD_SETSIZE})"
                    results[contender.name, n].skipped = reason
            if usable:
                try:
                    found = _memory_round(contender, usable, warm, host, cpus)
                except (OSError, RuntimeError, ValueError) as exc:
                    for n in usable:
                        results[contender.name, n].errors.append(str(exc))
                else:
                    for n, (rss, pss) in found.items():
                        results[contender.name, n].bytes_per_connection.append(rss)
                        if pss is not None:
                            results[contender.name, n].pss_bytes_per_connection.append(pss)
            if progress is not None:
                progress.step(f"{contender.name}, round {round_number + 1}/{rounds}")
    return list(results.values())


def _us(spread: Spread | None) -> str:
    return "-" if spread is None else f"{spread.median / 1000:.1f}"


def _spread_cell(spread: Spread | None, scale: float = 1.0, digits: int = 2) -> str:
    if spread is None:
        return "-"
    return (
        f"{spread.median * scale:.{digits}f} "
        f"[{spread.p25 * scale:.{digits}f}-{spread.p75 * scale:.{digits}f}]"
    )


def echo_table(points: Sequence[EchoPoint]) -> str:
    """Per point and contender: msgs/s, p50/p99 latency, server CPU per message, ratio to raw."""
    rows: list[list[object]] = []
    for point in points:
        uvloop = point.summary("uvloop-protocol", "server_cpu_ns_per_message")
        for name in point.rounds:
            cpu = point.summary(name, "server_cpu_ns_per_message")
            ratio = point.cpu_ratio(name)
            util = point.summary(name, "client_utilisation")
            notes = []
            if errors := point.errors(name):
                notes.append(f"{len(errors)} failed: {errors[-1]}")
            if name == "pollkit-epoll" and (point.connections, point.size) == CPU_TARGET_POINT:
                if ratio is not None:
                    ok = ratio.median <= CPU_TARGET_RATIO
                    notes.append(f"<= {CPU_TARGET_RATIO} raw: {'ok' if ok else 'MISS'}")
                if uvloop is not None and cpu is not None:
                    ok = cpu.median < uvloop.median
                    notes.append(f"< uvloop: {'ok' if ok else 'MISS'}")
            rate = point.summary(name, "messages_per_second")
            rows.append(
                [
                    f"{point.connections}x{point.size}",
                    name,
                    "-" if rate is None else f"{rate.median:,.0f}",
                    _us(point.summary(name, "p50")),
                    _us(point.summary(name, "p99")),
                    _spread_cell(cpu, 1 / 1000),
                    _spread_cell(ratio, 1.0, 3),
                    "-" if util is None else f"{util.median:.2f}",
                    "; ".join(notes),
                ]
            )
        for name, reason in point.skipped.items():
            label = f"{point.connections}x{point.size}"
            rows.append([label, name, "-", "-", "-", "-", "-", "-", "skipped: " + reason])
    headers = [
        "conns x size",
        "contender",
        "msgs/s",
        "p50 us",
        "p99 us",
        "server CPU us/msg",
        "CPU/msg vs raw",
        "client util",
        "",
    ]
    return format_table(headers, [row + [""] * (len(headers) - len(row)) for row in rows])


def memory_table(results: Sequence[MemoryResult]) -> str:
    """Per contender and count: server RSS (and Pss) bytes per held idle connection."""
    rows: list[list[object]] = []
    for result in results:
        if result.skipped:
            rows.append([result.name, result.connections, "-", "-", "skipped: " + result.skipped])
            continue
        rss = summarize(result.bytes_per_connection) if result.bytes_per_connection else None
        pss = (
            summarize(result.pss_bytes_per_connection) if result.pss_bytes_per_connection else None
        )
        note = f"{len(result.errors)} failed: {result.errors[-1]}" if result.errors else ""
        if (
            result.name == "pollkit-epoll"
            and result.connections == MEMORY_TARGET_CONNECTIONS
            and rss is not None
        ):
            verdict = "ok" if rss.median <= MEMORY_TARGET_BYTES else "MISS"
            note = f"<= {MEMORY_TARGET_BYTES} B: {verdict}" + (f"; {note}" if note else "")
        rows.append(
            [
                result.name,
                result.connections,
                _spread_cell(rss, 1.0, 0),
                _spread_cell(pss, 1.0, 0),
                note,
            ]
        )
    return format_table(["contender", "connections", "RSS B/conn", "Pss B/conn", ""], rows)
