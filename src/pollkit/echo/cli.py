"""``pollkit echo`` and ``pollkit client``.

Signals: the first SIGINT or SIGTERM stops the server gracefully (stop
accepting, flush pending echo within ``--grace-period``, exit 0); a second
one exits at once with status 128 + the signal number.

``--workers N`` forks N processes, each with its own poller and its own
listening socket on the same port (``SO_REUSEPORT``: the kernel spreads new
connections over them).  The parent first binds the port itself, without
listening, so a busy port fails once, before any fork, and ``--port 0``
becomes one concrete port for every worker.  (For UDP it lets go of the port
before forking: a bound UDP socket would take its share of the datagrams.)
The parent talks to each worker through a pipe: it writes ``g`` for a
graceful stop and ``a`` to abort; when the parent dies, however it dies, the
pipe reaches end of file and the worker stops gracefully, so no worker
outlives it by more than the grace period.  In the worker the pipe is one
more reader on its server's loop, not a thread (``pollkit/server/_workers.py``
holds the supervisor and the worker's side).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import IO

from .._backends import open_poller
from .._base import Poller
from .._events import Events
from .._validate import port_arg, positive_int_arg, seconds_arg
from ..cli import backend_argument
from ..errors import FdOutOfRangeError
from ..server._workers import READY, SUPERVISOR_SIGNALS, Supervisor, watch_parent
from ._client import DEFAULT_TIMEOUT, EchoClient
from ._net import DEFAULT_HOST, DEFAULT_PORT, bind_socket, format_address
from ._server import DEFAULT_GRACE_PERIOD, DEFAULT_MAX_BUFFER, DEFAULT_MAX_CLIENTS, EchoServer
from ._signals import SignalWakeup

__all__ = ["add_commands"]

log: logging.Logger = logging.getLogger("pollkit.echo")

_LOG_LEVELS = ("debug", "info", "warning", "error")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# -- argument types: pollkit._validate's; each error is one line through ArgumentParser.error()

_positive_seconds = seconds_arg(allow_zero=False)
_seconds_or_zero = seconds_arg(allow_zero=True)


def _address_arguments(parser: argparse.ArgumentParser, action: str) -> None:
    backend_argument(parser)
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to {action} (default: {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port", type=port_arg, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})"
    )
    parser.add_argument("--udp", action="store_true", help="datagrams instead of TCP")


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``echo`` and ``client`` to the ``pollkit`` command line."""
    echo = subparsers.add_parser(
        "echo",
        help="serve RFC 862 echo over TCP or UDP",
        description="Serve RFC 862 echo. SIGINT/SIGTERM stop gracefully; a second one "
        "exits at once.",
    )
    _address_arguments(echo, "listen on")
    echo.add_argument(
        "--max-clients",
        type=positive_int_arg,
        default=None,
        metavar="N",
        help=f"TCP connections served at once; more are closed at once (default: "
        f"{DEFAULT_MAX_CLIENTS})",
    )
    echo.add_argument(
        "--idle-timeout",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="close TCP clients that make no progress this long (default: never)",
    )
    echo.add_argument(
        "--max-buffer",
        type=positive_int_arg,
        default=DEFAULT_MAX_BUFFER,
        metavar="BYTES",
        help="per-connection unsent echo above which the client is not read; reading "
        f"resumes below a quarter of it (default: {DEFAULT_MAX_BUFFER})",
    )
    echo.add_argument(
        "--grace-period",
        type=_seconds_or_zero,
        default=DEFAULT_GRACE_PERIOD,
        metavar="SECONDS",
        help=f"how long a graceful stop flushes pending echo (default: {DEFAULT_GRACE_PERIOD:g})",
    )
    echo.add_argument(
        "--workers",
        type=positive_int_arg,
        default=1,
        metavar="N",
        help="processes sharing the port through SO_REUSEPORT (default: 1)",
    )
    echo.add_argument(
        "--log-level",
        type=str.lower,
        choices=_LOG_LEVELS,
        default="info",
        help="default: info (debug logs connection events)",
    )
    # usage_error: for the checks that span options, made after parsing.
    echo.set_defaults(func=run_echo, usage_error=echo.error)

    client = subparsers.add_parser(
        "client",
        help="send lines (or --message, --file) to an echo server and print the echo",
        description="Without --message or --file, send each line read from stdin and "
        "print its echo; end with EOF (Ctrl-D) or Ctrl-C.",
    )
    _address_arguments(client, "connect to")
    what = client.add_mutually_exclusive_group()
    what.add_argument("--message", metavar="TEXT", help="send TEXT once and print its echo")
    what.add_argument(
        "--file", metavar="PATH", help="send the file's bytes ('-': stdin); the echo goes to stdout"
    )
    client.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this long without progress (default: {DEFAULT_TIMEOUT:g})",
    )
    client.set_defaults(func=run_client)


def _fail(command: str, message: object) -> int:
    print(f"pollkit {command}: error: {message}", file=sys.stderr)
    return 1


def _describe(exc: OSError) -> str:
    return exc.strerror if exc.strerror and exc.errno is not None else str(exc)


@contextmanager
def _logging_to_stderr(level: str) -> Iterator[None]:
    logger = logging.getLogger("pollkit")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s pollkit[%(process)d]: %(message)s")
    )
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


class _Stopper:
    """SIGINT/SIGTERM: the first stops the server gracefully, a second exits at once."""

    def __init__(self) -> None:
        self.server: EchoServer | None = None
        self.signals = 0

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1:
            # At once: not even logging, which could block on a full stderr pipe.
            os._exit(128 + signum)
        if self.server is not None:
            self.server.shutdown()

    def attach(self, server: EchoServer) -> None:
        self.server = server
        if self.signals:
            server.shutdown()


@contextmanager
def _signals_to(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    previous = {signum: signal.signal(signum, handler) for signum in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _make_server(args: argparse.Namespace, poller: Poller, *, reuse_port: bool) -> EchoServer:
    return EchoServer(
        poller,
        args.host,
        args.port,
        udp=args.udp,
        max_clients=DEFAULT_MAX_CLIENTS if args.max_clients is None else args.max_clients,
        idle_timeout=args.idle_timeout,
        max_buffer=args.max_buffer,
        grace_period=args.grace_period,
        reuse_port=reuse_port,
    )


def run_echo(args: argparse.Namespace) -> int:
    """``pollkit echo``: serve until SIGINT/SIGTERM; 0 after a graceful stop."""
    tcp_only = [
        option
        for option, value in (
            ("--max-clients", args.max_clients),
            ("--idle-timeout", args.idle_timeout),
        )
        if value is not None
    ]
    if args.udp and tcp_only:
        # A usage error (exit 2) through the parser, rather than an option quietly ignored.
        args.usage_error(
            f"{' and '.join(tcp_only)} limit TCP clients; a UDP server has none "
            "(drop them or --udp)"
        )
    with _logging_to_stderr(args.log_level):
        if args.workers > 1:
            return _run_workers(args)
        stopper = _Stopper()
        with _signals_to(stopper.handle), open_poller(args.backend) as poller:
            try:
                server = _make_server(args, poller, reuse_port=False)
            except OSError as exc:
                return _fail("echo", _describe(exc))
            stopper.attach(server)
            server.serve_forever()
    return 0


# -- workers --------------------------------------------------------------------


def _run_workers(args: argparse.Namespace) -> int:
    with open_poller(args.backend) as probe:  # a bad --backend fails here, once, not in N workers
        driver = probe.name
    try:
        placeholder = bind_socket(args.host, args.port, udp=args.udp, reuse_port=True, backlog=None)
    except OSError as exc:
        return _fail("echo", _describe(exc))
    with placeholder:
        address = placeholder.getsockname()[:2]
        args.port = address[1]
        if args.udp:
            # A bound UDP socket receives its share of the port's datagrams;
            # nobody would read them.  (A TCP socket that never listens gets
            # no connections, and keeps the port reserved.)
            placeholder.close()

        def on_ready() -> None:
            log.info(
                "%d workers serving echo over %s on %s with the %s driver",
                args.workers,
                "udp" if args.udp else "tcp",
                format_address(address),
                driver,
            )

        def body(index: int, control_read: int, ready_write: int) -> None:
            _worker_process(args, index, control_read, ready_write)

        supervisor = Supervisor(args.workers, body, on_ready)
        status = supervisor.run()
        if supervisor.ready < args.workers:
            return _fail("echo", f"only {supervisor.ready} of {args.workers} workers started")
        return status


def _worker_process(
    args: argparse.Namespace, index: int, control_read: int, ready_write: int
) -> None:  # pragma: no cover  # runs in a forked child
    stopper = _Stopper()
    status = 1
    try:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, stopper.handle)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISOR_SIGNALS)  # blocked by the parent
        with open_poller(args.backend) as poller:
            server = _make_server(args, poller, reuse_port=True)
            stopper.attach(server)
            # The parent's control pipe is one more reader on the server's loop.
            watch_parent(server.server, control_read)
            os.write(ready_write, READY)
            os.close(ready_write)
            server.serve_forever()
        status = 0
    except BaseException as exc:  # noqa: BLE001  # a child must never return into the parent's code
        print(f"pollkit echo: error: worker {index}: {exc}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


# -- client ---------------------------------------------------------------------


def run_client(args: argparse.Namespace) -> int:
    """``pollkit client``: one-shot with --message/--file, else interactive."""
    source: IO[bytes] | None = None
    try:
        if args.file == "-":
            source = sys.stdin.buffer
        elif args.file is not None:
            try:
                source = open(args.file, "rb")  # noqa: SIM115  # closed in the finally below
            except OSError as exc:
                return _fail("client", f"cannot read {args.file}: {_describe(exc)}")
        with open_poller(args.backend) as poller:
            try:
                client = EchoClient(
                    poller, args.host, args.port, udp=args.udp, timeout=args.timeout
                )
            except OSError as exc:
                return _fail("client", _describe(exc))
            with client:
                try:
                    return _converse(args, client, source)
                except OSError as exc:
                    return _fail("client", _describe(exc))
    finally:
        if source is not None and source is not sys.stdin.buffer:
            source.close()


def _converse(args: argparse.Namespace, client: EchoClient, source: IO[bytes] | None) -> int:
    out = sys.stdout.buffer
    if args.message is not None:
        out.write(client.echo(args.message.encode()) + b"\n")
        out.flush()
        return 0
    if source is not None:
        client.stream(source, out.write)
        out.flush()
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print(
            f"connected to {format_address(client.peer)}: type lines; Ctrl-D or Ctrl-C ends",
            file=sys.stderr,
        )
    try:
        for line in _stdin_lines(args.backend):
            out.write(client.echo(line))
            out.flush()
    except KeyboardInterrupt:
        if interactive:
            print(file=sys.stderr)
    return 0


def _stdin_lines(backend: str | None) -> Iterator[bytes]:
    """The lines of standard input, the last one perhaps without a newline.

    A terminal or a pipe is read through a poller that watches a
    ``signal.set_wakeup_fd()`` pipe too (see ``_signals.py``): a blocking
    ``readline()`` would not return for a Ctrl-C that lands just before it
    blocks, until the next line came.  A regular file never blocks (and
    epoll refuses one): it is read line by line.
    """
    stdin = sys.stdin.buffer
    fd = stdin.fileno()
    with open_poller(backend) as poller:
        try:
            poller.register(fd, Events.READ)
        except (OSError, FdOutOfRangeError):  # a regular file (epoll: EPERM); select: fd >= 1024
            yield from iter(stdin.readline, b"")
            return
        signals = SignalWakeup()
        try:
            signals.install(poller)
            buffer = bytearray()
            while True:
                ready = {ready_fd for ready_fd, _ in poller.poll()}
                if signals.read_fd in ready:
                    signals.drain()  # the handler (KeyboardInterrupt) runs on its own
                if fd not in ready:
                    continue
                try:
                    chunk = os.read(fd, 65536)  # readable, so this returns at once
                except BlockingIOError:  # a spurious report on a non-blocking stdin
                    continue
                if not chunk:
                    if buffer:
                        yield bytes(buffer)
                    return
                start = len(buffer)
                buffer += chunk
                end = 0
                while True:
                    newline = buffer.find(b"\n", start)
                    if newline < 0:
                        break
                    yield bytes(buffer[end : newline + 1])
                    start = end = newline + 1
                del buffer[:end]
        finally:
            signals.close()
            poller.unregister(fd)  # unregister before close, as debug: checks
