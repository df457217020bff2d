"""What the server-layer tests share: a server in a thread, protocols that are
not echo, a recorder that logs every callback, and a poller wrapper that is
not a driver.

The protocols:

* :class:`UpperLines` upper-cases each line (and the unterminated rest at
  EOF), so its output is as long as its input and ``exchange()`` from
  ``echo_helpers`` can check it byte for byte.
* :class:`Producer` sends ``N`` bytes of :func:`pattern` for each request
  line ``N``, in chunks, and stops producing while the layer says
  ``pause_writing()``: a bulk sender that honours backpressure.
* :class:`FrameCounter` / :class:`BufferedFrameCounter` read length-prefixed
  frames and answer each with its number and CRC (the second through
  ``get_buffer()``/``buffer_updated()``, with tiny buffers).
* :class:`Recorder` logs every callback with its argument, the thread it ran
  on and whether it ran inside another callback; hooks add behaviour.
  :func:`check_lifecycle` asserts the rules every connection follows.

Every wait is bounded; none sleeps to let something happen that can be
awaited instead.  Transports are touched only on the loop's thread: a test
that needs one there uses :func:`on_loop`.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar
from typing import Protocol as TypingProtocol

from conftest import Delegating
from echo_helpers import PROMPT, unread_by_server, wait_until
from pollkit import Events, Poller
from pollkit.server import BufferedProtocol, Protocol, Server, Transport

__all__ = [
    "LOOP_THREAD",
    "BufferedFrameCounter",
    "CallLog",
    "FrameCounter",
    "Made",
    "Producer",
    "Recorder",
    "ShufflingPoller",
    "UpperLines",
    "check_lifecycle",
    "counting",
    "frame",
    "frame_replies",
    "lines_payload",
    "on_loop",
    "pattern",
    "read_until_eof",
    "running",
    "serving",
    "settle",
    "thread_sleeps",
    "transport_of",
    "wait_unread",
]

#: The name of the thread :func:`running` serves in.
LOOP_THREAD = "server-loop"

_T = TypeVar("_T")
_OUTPUT_ONLY = int(Events.ERROR | Events.HANGUP | Events.INVALID)


class HasTransport(TypingProtocol):
    """A protocol that keeps the transport ``connection_made()`` gave it."""

    @property
    def transport(self) -> Transport | None: ...


def transport_of(protocol: HasTransport) -> Transport:
    """The transport ``connection_made()`` gave ``protocol`` (it must have run)."""
    transport = protocol.transport
    assert transport is not None, f"{protocol!r}: connection_made() has not run"
    return transport


class Serves(TypingProtocol):
    """What :func:`running` needs of a server: ``Server`` and ``DatagramServer`` both."""

    def serve_forever(self) -> None: ...

    def shutdown(self, graceful: bool = True) -> None: ...

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None: ...


# -- a server in a thread ---------------------------------------------------------


@contextlib.contextmanager
def running(server: Serves, poller: Poller) -> Iterator[threading.Thread]:
    """Run ``server.serve_forever()`` in a thread named :data:`LOOP_THREAD` for the block.

    On exit the server is shut down (gracefully), the thread joined (bounded)
    and any exception ``serve_forever()`` raised re-raised in the test.  The
    thread is yielded so that a test can join it itself.
    """
    failures: list[BaseException] = []

    def run() -> None:
        try:
            server.serve_forever()
        except BaseException as exc:  # noqa: BLE001  # re-raised in the test's thread below
            failures.append(exc)

    thread = threading.Thread(target=run, name=LOOP_THREAD, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        server.shutdown()
        thread.join(PROMPT)
    assert not thread.is_alive(), "serve_forever() did not return after shutdown()"
    if failures:
        raise failures[0]


@contextlib.contextmanager
def serving(
    poller: Poller,
    factory: Callable[[], Protocol | BufferedProtocol],
    host: str = "127.0.0.1",
    **options: Any,
) -> Iterator[Server]:
    """A :class:`Server` on ``host``, port 0, serving in a thread for the block.

    After the block the server is shut down and closed, and it must have
    unregistered everything from ``poller`` (which its fixture closes).
    """
    with Server(poller, factory, host, 0, **options) as server, running(server, poller):
        yield server
    assert len(poller) == 0, "the server left registrations in the caller's poller"


def on_loop(server: Serves, function: Callable[[], _T], *, timeout: float = PROMPT) -> _T:
    """Run ``function()`` on the server's loop thread; return its result or raise its error.

    It goes through ``call_soon_threadsafe()``, so each call is also one more
    turn of the loop (one more ``poll()`` return).
    """
    done = threading.Event()
    results: list[_T] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(function())
        except BaseException as exc:  # noqa: BLE001  # re-raised in the test's thread below
            errors.append(exc)
        finally:
            done.set()

    server.call_soon_threadsafe(call)
    assert done.wait(timeout), "the loop did not run a call_soon_threadsafe() callback"
    if errors:
        raise errors[0]
    return results[0]


def settle(server: Server, turns: int = 3) -> None:
    """Let the loop go round ``turns`` times (each one a ``poll()`` that returns).

    After this, input that was already in the server's kernel buffers before
    the call has been offered to the layer at least ``turns - 1`` times: the
    way to show that something was *not* read, without sleeping.
    """
    for _ in range(turns):
        on_loop(server, lambda: None)


def read_until_eof(sock: socket.socket, limit: int = 1 << 30) -> bytes:
    """Read until EOF; a reset fails the test, saying how many bytes came before it."""
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            raise AssertionError(f"connection reset after {len(data)} bytes, not EOF") from None
        if not chunk:
            return bytes(data)
        data += chunk
        assert len(data) <= limit, f"more than {limit} bytes before EOF"


def wait_unread(sock: socket.socket, at_least: int) -> None:
    """Wait until the server's kernel holds ``at_least`` unread bytes from ``sock``."""
    wait_until(
        lambda: unread_by_server(sock) >= at_least,
        what=f"{at_least} bytes waiting in the server's receive queue",
    )


# -- data -----------------------------------------------------------------------------

_PERIOD = 251  # prime, so that no chunk size lines up with it
_BASE = bytes(range(_PERIOD))


def pattern(offset: int, count: int) -> bytes:
    """``count`` bytes of a fixed stream starting at ``offset``: any loss or
    reordering shows as a mismatch."""
    start = offset % _PERIOD
    repeats = (start + count) // _PERIOD + 1
    return (_BASE * repeats)[start : start + count]


def lines_payload(seed: int, size: int) -> bytes:
    """About ``size`` bytes of lower-case lines (random lengths), ending in a newline."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    total = 0
    letters = b"abcdefghijklmnopqrstuvwxyz0123456789 "
    while total < size:
        line = bytes(rng.choice(letters) for _ in range(rng.randrange(0, 200))) + b"\n"
        parts.append(line)
        total += len(line)
    return b"".join(parts)


_HEADER = struct.Struct(">I")
_REPLY = struct.Struct(">II")


def frame(payload: bytes) -> bytes:
    """One request for :class:`FrameCounter`: a 4-byte big-endian length, then the payload."""
    return _HEADER.pack(len(payload)) + payload


def frame_replies(payloads: Iterable[bytes]) -> bytes:
    """What :class:`FrameCounter` answers to these frames: number and CRC-32 of each."""
    return b"".join(
        _REPLY.pack(number, zlib.crc32(payload)) for number, payload in enumerate(payloads)
    )


# -- protocols ----------------------------------------------------------------------


class UpperLines(Protocol):
    """Upper-cases each line; at EOF the unterminated rest, then the layer closes."""

    def __init__(self) -> None:
        self.transport: Transport | None = None
        self.rest = b""

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        head, newline, self.rest = (self.rest + data).rpartition(b"\n")
        if newline:
            self.transport.writelines(line.upper() + b"\n" for line in head.split(b"\n"))

    def eof_received(self) -> bool | None:
        assert self.transport is not None
        if self.rest:
            self.transport.write(self.rest.upper())
            self.rest = b""
        return None


class Producer(Protocol):
    """Each request line ``N`` asks for the next ``N`` bytes of :func:`pattern`.

    Output is made in chunks and only while the layer has not said
    ``pause_writing()``.  At EOF the connection closes once everything asked
    for has been produced and sent.
    """

    chunk = 65536

    def __init__(self) -> None:
        self.transport: Transport | None = None
        self.rest = b""
        self.owed = 0
        self.offset = 0
        self.paused = False
        self.eof = False
        #: The largest write buffer seen after a write: the memory bound.
        self.max_buffered = 0
        self.pauses = 0
        self.resumes = 0
        #: The write buffer's size when the layer called pause_writing()/resume_writing().
        self.buffered_at_pause: list[int] = []
        self.buffered_at_resume: list[int] = []
        #: Bytes asked for so far (what data_received() parsed).
        self.asked = 0

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        head, newline, self.rest = (self.rest + data).rpartition(b"\n")
        if newline:
            asked = sum(int(line) for line in head.split(b"\n"))
            self.owed += asked
            self.asked += asked
        self.produce()

    def eof_received(self) -> bool | None:
        self.eof = True
        self.produce()
        return True  # produce() closes when the last byte owed is written

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.buffered_at_pause.append(self.transport.get_write_buffer_size())
        self.pauses += 1
        self.paused = True

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.buffered_at_resume.append(self.transport.get_write_buffer_size())
        self.resumes += 1
        self.paused = False
        self.produce()

    def produce(self) -> None:
        transport = self.transport
        assert transport is not None
        while self.owed and not self.paused and not transport.is_closing():
            count = min(self.chunk, self.owed)
            transport.write(pattern(self.offset, count))
            self.offset += count
            self.owed -= count
            self.max_buffered = max(self.max_buffered, transport.get_write_buffer_size())
        if self.eof and not self.owed and not transport.is_closing():
            transport.close()


class _Frames:
    """Parses length-prefixed frames; answers each with ``(number, crc32)``."""

    def __init__(self) -> None:
        self.transport: Transport | None = None
        self.pending = bytearray()
        self.frames = 0

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def feed(self, data: bytes | memoryview) -> None:
        assert self.transport is not None
        self.pending += data
        replies = []
        while len(self.pending) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self.pending)
            end = _HEADER.size + length
            if len(self.pending) < end:
                break
            replies.append(_REPLY.pack(self.frames, zlib.crc32(self.pending[_HEADER.size : end])))
            self.frames += 1
            del self.pending[:end]
        if replies:
            self.transport.write(b"".join(replies))


class FrameCounter(_Frames, Protocol):
    """Length-prefixed frames through ``data_received()``."""

    def data_received(self, data: bytes) -> None:
        self.feed(data)


class BufferedFrameCounter(_Frames, BufferedProtocol):
    """Length-prefixed frames through ``get_buffer()``/``buffer_updated()``.

    The buffers it hands out are small and of varying size (seeded), so a
    message arrives in many reads and the layer must honour every size.
    """

    def __init__(self, seed: int = 0, largest: int = 97) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self.largest = largest
        self.buffer = bytearray(largest)
        self.offered = 0
        #: (sizehint, size offered, bytes written) for each read.
        self.reads: list[tuple[int, int, int]] = []

    def get_buffer(self, sizehint: int) -> memoryview:
        self.offered = self.rng.randrange(1, self.largest + 1)
        self.reads.append((sizehint, self.offered, -1))
        return memoryview(self.buffer)[: self.offered]

    def buffer_updated(self, nbytes: int) -> None:
        sizehint, offered, _ = self.reads[-1]
        self.reads[-1] = (sizehint, offered, nbytes)
        assert 0 < nbytes <= offered, f"buffer_updated({nbytes}) for a {offered}-byte buffer"
        self.feed(memoryview(self.buffer)[:nbytes])


_P = TypeVar("_P", bound="Protocol | BufferedProtocol")


class Made(Generic[_P]):
    """A protocol factory that keeps every protocol it made, for the test to look at."""

    def __init__(self, make: Callable[[], _P]) -> None:
        self.make = make
        self.items: list[_P] = []

    def __call__(self) -> _P:
        item = self.make()
        self.items.append(item)
        return item

    def wait(self, count: int = 1) -> list[_P]:
        """The first ``count`` protocols, once they exist."""
        wait_until(lambda: len(self.items) >= count, what=f"{count} connections made")
        return self.items[:count]


# -- the recorder ---------------------------------------------------------------------

Hook = Callable[..., Any]


class CallLog:
    """Every :class:`Recorder` one factory made, and a condition to wait on."""

    def __init__(self, **hooks: Hook) -> None:
        self.hooks = hooks
        self.protocols: list[Recorder] = []
        self.condition = threading.Condition()

    def factory(self) -> Recorder:
        protocol = Recorder(self)
        with self.condition:
            self.protocols.append(protocol)
        return protocol

    def wait(self, predicate: Callable[[], object], what: str, timeout: float = PROMPT) -> None:
        with self.condition:
            if not self.condition.wait_for(predicate, timeout):
                raise AssertionError(f"{what}: not within {timeout} s; calls: {self.summary()}")

    def wait_protocols(self, count: int) -> list[Recorder]:
        """Wait until ``count`` connections were made; return their recorders."""
        self.wait(lambda: len(self.made()) >= count, f"{count} connections made")
        return self.made()[:count]

    def made(self) -> list[Recorder]:
        """The protocols whose ``connection_made()`` has returned (hooks included)."""
        with self.condition:
            return [p for p in self.protocols if "connection_made" in p.returned]

    def summary(self) -> list[list[str]]:
        return [p.names() for p in self.protocols]


class Recorder(Protocol):
    """Logs each callback as ``(name, argument)``; ``CallLog`` hooks add behaviour.

    A hook is called as ``hook(recorder, *arguments)`` after the call is
    logged; ``eof_received``'s hook's result is returned to the layer.
    """

    def __init__(self, log: CallLog) -> None:
        self.log = log
        self.transport: Transport | None = None
        self.calls: list[tuple[str, Any]] = []
        #: Names of the callbacks that have returned (or raised), in order.
        self.returned: list[str] = []
        self.received = bytearray()
        self.threads: set[str] = set()
        self.depth = 0
        #: Callbacks that were entered while another one was still running.
        self.nested: list[str] = []
        #: What the test asked to keep (results of checks made inside callbacks).
        self.notes: dict[str, Any] = {}

    def _call(self, name: str, *arguments: Any) -> Any:
        with self.log.condition:
            self.calls.append((name, arguments[0] if arguments else None))
            self.threads.add(threading.current_thread().name)
            if self.depth:
                self.nested.append(name)
            self.log.condition.notify_all()
        hook = self.log.hooks.get(name)
        self.depth += 1
        try:
            return hook(self, *arguments) if hook is not None else None
        finally:
            self.depth -= 1
            with self.log.condition:
                self.returned.append(name)
                self.log.condition.notify_all()

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        self._call("connection_made", transport)

    def data_received(self, data: bytes) -> None:
        with self.log.condition:
            self.received += data
        self._call("data_received", data)

    def eof_received(self) -> bool | None:
        result = self._call("eof_received")
        return bool(result) if result is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._call("connection_lost", exc)

    def pause_writing(self) -> None:
        self._call("pause_writing")

    def resume_writing(self) -> None:
        self._call("resume_writing")

    # -- looking at what happened (from any thread) ------------------------------

    def names(self) -> list[str]:
        with self.log.condition:
            return [name for name, _ in self.calls]

    def count(self, name: str) -> int:
        return self.names().count(name)

    def argument(self, name: str) -> Any:
        """The argument of the one call ``name`` (fails unless there was exactly one)."""
        with self.log.condition:
            found = [argument for called, argument in self.calls if called == name]
        assert len(found) == 1, f"{name} called {len(found)} times: {self.names()}"
        return found[0]

    def wait_for(self, name: str, count: int = 1, timeout: float = PROMPT) -> None:
        """Wait until ``name`` has been called, and has returned, ``count`` times."""
        self.log.wait(
            lambda: self.returned.count(name) >= count, f"{count} x {name} returned", timeout
        )

    def wait_received(self, size: int, timeout: float = PROMPT) -> bytes:
        self.log.wait(lambda: len(self.received) >= size, f"{size} bytes received", timeout)
        with self.log.condition:
            return bytes(self.received)

    def lost(self) -> bool:
        return "connection_lost" in self.names()


def check_lifecycle(protocol: Recorder, *, loop_thread: str = LOOP_THREAD) -> None:
    """The rules every connection follows (DESIGN.md, server layer lines 3 and 6).

    ``connection_made`` first; ``connection_lost`` exactly once and last,
    never inside another callback; no ``data_received`` after
    ``eof_received``; ``pause_writing``/``resume_writing`` alternate,
    starting with a pause; every callback on the loop's thread.
    """
    names = protocol.names()
    assert names[:1] == ["connection_made"], names
    assert names.count("connection_made") == 1, names
    assert names.count("connection_lost") == 1, names
    assert names[-1] == "connection_lost", names
    assert "connection_lost" not in protocol.nested, (
        f"connection_lost() ran inside another callback: {names}"
    )
    if "eof_received" in names:
        after = names[names.index("eof_received") + 1 :]
        assert "data_received" not in after, names
        assert after.count("eof_received") == 0, names
    flow = [name for name in names if name in ("pause_writing", "resume_writing")]
    assert flow == ["pause_writing", "resume_writing"] * (len(flow) // 2) + (
        ["pause_writing"] if len(flow) % 2 else []
    ), flow
    assert protocol.threads == {loop_thread}, protocol.threads


# -- a poller that is not a driver ------------------------------------------------------


class ShufflingPoller(Delegating):
    """A delegating :class:`Poller` that does what the contract allows and drivers rarely do.

    From a seeded generator, ``poll()`` shuffles its result, withholds part
    of the ready set until later calls (``split``), and returns an empty list
    at once now and then (``early``), as after a ``wakeup()``.  What it
    withholds comes back later only while still registered and only with
    bits still asked for, so the wrapper never reports an fd after
    ``unregister()`` or a bit after ``modify()`` dropped it; a withheld report
    may be stale, which the contract allows for non-blocking fds (a
    spurious readiness report).  It counts its ``poll()`` calls and knows
    when one is blocked in the wrapped poller.

    With ``split=0`` and ``early=0`` it only counts.
    """

    def __init__(
        self, inner: Poller, *, seed: int = 0, split: float = 0.5, early: float = 0.2
    ) -> None:
        super().__init__(inner)
        self.name = f"shuffling:{inner.name}"
        self.rng = random.Random(seed)
        self.split = split
        self.early = early
        self.withheld: dict[int, int] = {}
        self._lock = threading.Lock()
        self.polls = 0
        self.early_returns = 0
        self.split_returns = 0
        #: Set while a ``poll()`` that may block is inside the wrapped poller.
        self.blocked = threading.Event()
        #: The timeouts passed to the last few ``poll()`` calls.
        self.timeouts: list[float | None] = []

    # -- registration: register() is delegated as is ---------------------------------

    def modify(self, fd: Any, events: int, *, oneshot: bool = False, edge: bool = False) -> None:
        self.inner.modify(fd, events, oneshot=oneshot, edge=edge)
        with self._lock:
            self._trim(_fd_of(fd))

    def unregister(self, fd: Any) -> None:
        self.inner.unregister(fd)
        with self._lock:
            self.withheld.pop(_fd_of(fd), None)

    def _trim(self, fd: int) -> None:
        mask = self.withheld.get(fd)
        if mask is None:
            return
        try:
            wanted = self.inner.get_registration(fd).events | _OUTPUT_ONLY
        except KeyError:
            wanted = 0
        if mask & wanted:
            self.withheld[fd] = mask & wanted
        else:
            del self.withheld[fd]

    # -- waiting ---------------------------------------------------------------------

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        self.polls += 1
        self.timeouts = [*self.timeouts[-99:], timeout]
        early = bool(self.early) and self.rng.random() < self.early
        with self._lock:
            withheld = bool(self.withheld)
        wait = 0 if withheld or early else timeout
        if wait != 0:
            self.blocked.set()
        try:
            # Even an early return asks the wrapped poller (with timeout 0) and
            # keeps what it reports: a oneshot or edge report must not be lost.
            fresh = self.inner.poll(wait, max_events)
        finally:
            self.blocked.clear()
        with self._lock:
            merged = dict(self.withheld)
            for fd, mask in fresh:
                merged[fd] = merged.get(fd, 0) | mask
            self.withheld = merged
            for fd in list(merged):
                self._trim(fd)
            if early:
                self.early_returns += 1
                return []
            ready = list(self.withheld.items())
            self.rng.shuffle(ready)
            keep = len(ready)
            if keep > 1 and self.rng.random() < self.split:
                keep = self.rng.randrange(1, keep)
                self.split_returns += 1
            if max_events is not None:
                keep = min(keep, max_events)
            given = ready[:keep]
            for fd, _ in given:
                del self.withheld[fd]
        return given


def counting(inner: Poller) -> ShufflingPoller:
    """A wrapper that only counts ``poll()`` calls (no faults)."""
    return ShufflingPoller(inner, split=0.0, early=0.0)


def thread_sleeps(thread: threading.Thread) -> bool:
    """True while ``thread`` sleeps in a system call (state ``S`` in ``/proc``)."""
    with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "S"


def _fd_of(fd: Any) -> int:
    return fd if isinstance(fd, int) else int(fd.fileno())
