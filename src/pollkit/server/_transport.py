"""One TCP connection's transport: send now, buffer the rest, close without losing a byte.

* **Send at once.**  ``write()`` calls ``send()`` straight away
  (``MSG_NOSIGNAL``: a dead peer is an ``EPIPE`` error, never a ``SIGPIPE``
  that kills the process).  Only what the kernel does not take is kept, in
  one ``bytearray``, and only then does the poller watch for ``WRITE``; once
  it drains, ``WRITE`` is dropped again.  A connection whose output always
  fits in the socket buffer costs one ``send()`` per write and never a
  ``modify()``.  (Deleting from the front of a ``bytearray`` is O(1): it
  moves its start.)
* **Backpressure both ways.**  Past the high-water mark (the server's
  ``max_buffer`` unless :meth:`Transport.set_write_buffer_limits` says
  otherwise) the protocol's ``pause_writing()`` is called and the connection
  is not read any more, so the kernel's flow control slows the peer; at the
  low-water mark (a quarter) ``resume_writing()`` is called and reading
  resumes.  Once per crossing.  Memory per connection stays below the
  high-water mark plus one read.  The application's ``pause_reading()`` is a
  separate switch: the connection is read only when neither holds it.
* **Closing without RST.**  Closing a socket while the peer's input is
  unread, or still on its way, makes the kernel answer with RST and throw
  away output it has not delivered yet.  So ``close()`` first sends what is
  buffered, then half-closes (the peer sees EOF right after the last byte),
  reads and drops what the peer still sends, and closes once the peer's
  kernel has acknowledged everything (``SIOCOUTQ`` is 0) or the peer has
  closed too, at the latest after ``grace_period``.  ``abort()`` drops the
  buffer and closes at once.  End of input from the peer calls
  ``eof_received()``; unless that returns true, the connection closes once
  its output is sent (input has ended: a plain close loses nothing).
* **Callbacks never see a half-dead transport.**  The socket is unregistered
  and closed when the connection ends, but ``connection_lost()`` is queued
  and runs after the callback that ended it returns; exactly once.  A
  callback that raises aborts its own connection: logged with the
  traceback, passed to ``connection_lost()``.
* **Errors belong to one connection.**  A reset, ``EPIPE`` or any other
  error on a socket closes that connection only.

A transport is small (``__slots__``, no dict): a server holding thousands of
idle connections pays for the socket object, this object and the protocol.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._events import Events
from .._validate import int_at_least, seconds
from ..errors import InvalidArgumentError, PollerClosedError, PollerForkedError
from ._loop import FIRST_READ_SIZE, READ_SIZE
from ._net import unsent_bytes
from ._protocols import BufferedProtocol

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._protocols import BaseProtocol
    from ._server import Server

__all__ = ["NotBytesError", "Transport"]

log = logging.getLogger("pollkit.server")

_READ = int(Events.READ)
_WRITE = int(Events.WRITE)
_FAILURE = int(Events.ERROR | Events.HANGUP | Events.INVALID)
_READ_OR_FAILURE = _READ | _FAILURE
_WRITE_OR_FAILURE = _WRITE | _FAILURE
_MSG_NOSIGNAL: int = getattr(socket, "MSG_NOSIGNAL", 0)
#: Reads of unwanted input per look while closing (16 MiB), so that one peer
#: flooding the server cannot hold up the loop.
_DISCARD_READS = 256

# The transport's state.  Writes go straight to send() only in _OPEN.
_OPEN = 0
_EOF_WRITTEN = 1  # write_eof() asked for: pending output, then SHUT_WR; no more write()
_CLOSING = 2  # close() or a shutdown: send what is pending, then half-close and linger
_LINGER = 3  # half-closed: dropping input until the peer's kernel acknowledged everything
_CLOSED = 4

# _flags bits: what holds reading back, besides the state.
_EOF_IN = 1  # the peer's end of input was seen
_APP_PAUSED = 2  # pause_reading()
_WRITE_PAUSED = 4  # backpressure: output above the high-water mark

# _slow bits: the reasons a connection cannot take the loop's inline read
# path, so that the loop tests one attribute.  _SLOW_OUTPUT and
# _SLOW_NOT_READING mirror _out and _events: set where those change.  The
# bits above _WRITE_FAST_MAX are also every reason write() cannot send at
# once (output pending, or the state is not open), so that write() tests one
# comparison; the two lowest do not stop a write.
_SLOW_BUFFERED = 1
_SLOW_NOT_READING = 2  # READ is not registered
_WRITE_FAST_MAX = _SLOW_BUFFERED | _SLOW_NOT_READING
_SLOW_OUTPUT = 4  # output waits in _out
_SLOW_CLOSING = 8  # closing, lingering or closed
_SLOW_EOF_WRITTEN = 16  # write_eof() was called

#: Errors a peer causes; anything else is logged louder.
_PEER_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.ENOTCONN,
    }
)


class NotBytesError(InvalidArgumentError, TypeError):
    """``write()`` of something that is not bytes-like (a ``str``, say).

    Also a :class:`TypeError`, as the socket module would raise.
    """


def _as_bytes(data: object) -> memoryview:
    """``data`` as a flat view of bytes; :class:`NotBytesError` naming its type otherwise."""
    if isinstance(data, str):
        raise NotBytesError(
            f"write() takes bytes-like data, not str ({data[:20]!r}...): encode it first"
        )
    try:
        view = memoryview(data)  # type: ignore[arg-type]  # anything else is refused just below
    except TypeError:
        raise NotBytesError(
            f"write() takes bytes-like data (bytes, bytearray, memoryview), "
            f"not {type(data).__name__}"
        ) from None
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _no_data_received(data: bytes) -> None:
    """What a read calls for a protocol without ``data_received`` (that connection fails)."""
    raise AttributeError("the protocol has no data_received() method")


class Transport:
    """The server's side of one TCP connection, handed to ``connection_made()``.

    Made by the server, never by the application.  Every method is safe
    inside every protocol callback; call them on the loop's thread (from
    another thread, go through ``Server.call_soon_threadsafe()``).
    """

    __slots__ = (
        "_data_received",
        "_events",
        "_fd",
        "_flags",
        "_idle",
        "_last_active",
        "_limits",
        "_out",
        "_protocol",
        "_read_size",
        "_server",
        "_slow",
        "_sock",
        "_state",
    )

    def __init__(
        self,
        server: Server,
        sock: socket.socket,
        fd: int,
        protocol: BaseProtocol,
        now: float,
    ) -> None:
        self._server = server
        self._sock = sock
        self._fd = fd
        self._protocol = protocol
        self._out: bytearray | None = None
        self._events = _READ  # registered by the server before it makes the transport
        self._state = _OPEN
        self._slow = _SLOW_BUFFERED if isinstance(protocol, BufferedProtocol) else 0
        self._flags = 0
        self._limits = server._limits  # (low, high): the server's until set per connection
        self._idle: float | None = server._idle_timeout
        self._last_active = now
        self._read_size = FIRST_READ_SIZE  # see FIRST_READ_SIZE: grows on a full read
        # Bound by the server once connection_made() has returned (no read
        # comes before): see _bind_data_received().
        self._data_received: Callable[[bytes], object] = _no_data_received

    def _bind_data_received(self) -> None:
        """Look up the protocol's ``data_received`` once, as uvloop does.

        Called when ``connection_made()`` has returned, so that a protocol
        may install its own callable there (the echo protocol
        installs the transport's ``write``).  Every read calls what was found:
        an attribute lookup per read is a measurable share of a small message.
        """
        if not self._slow & _SLOW_BUFFERED:
            found = getattr(self._protocol, "data_received", None)
            if found is not None:
                self._data_received = found

    # -- writing -----------------------------------------------------------------

    def write(self, data: Buffer) -> None:
        """Send ``data`` (bytes-like): at once what the kernel takes, the rest later.

        A no-op once the transport is closing.  Past the high-water mark the
        protocol's ``pause_writing()`` is called (and reading stops).

        Raises:
            NotBytesError: ``data`` is not bytes-like (a ``str``, say); also
                a ``TypeError`` and an ``InvalidArgumentError``.
            RuntimeError: after :meth:`write_eof`.
        """
        # One comparison stands for "output pending or not open" (see _slow).
        if self._slow > _WRITE_FAST_MAX or type(data) is not bytes:
            self._write_slow(data)
            return
        if not data:
            return
        try:
            sent = self._sock.send(data, _MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fail(exc)
            return
        self._last_active = self._server._now
        if sent != len(data):
            self._hold(memoryview(data)[sent:])

    def _write_slow(self, data: object) -> None:
        view: bytes | memoryview = data if type(data) is bytes else _as_bytes(data)
        state = self._state
        if state >= _CLOSING:
            return  # closing: later writes are no-ops, as asyncio's are
        if state == _EOF_WRITTEN:
            raise RuntimeError("write() after write_eof(): the sending side is shut down")
        if not len(view):
            return
        out = self._out
        if out is not None:
            out += view
            if len(out) > self._limits[1] and not self._flags & _WRITE_PAUSED:
                self._pause_writing()
            return
        try:
            sent = self._sock.send(view, _MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fail(exc)
            return
        self._last_active = self._server._now
        if sent != len(view):
            self._hold(memoryview(view)[sent:])

    def writelines(self, list_of_data: Any) -> None:
        """Write each bytes-like item of the iterable, as one ``write()`` of them joined.

        Raises:
            NotBytesError: an item is not bytes-like.
        """
        items = [item if type(item) is bytes else _as_bytes(item) for item in list_of_data]
        self.write(b"".join(items))

    def _hold(self, rest: memoryview) -> None:
        """Keep the part the kernel did not take (copied: the caller may reuse its buffer)."""
        self._out = bytearray(rest)
        self._slow |= _SLOW_OUTPUT
        if len(rest) > self._limits[1] and not self._flags & _WRITE_PAUSED:
            self._pause_writing()  # also updates the registration
        else:
            self._update_events()

    def _pause_writing(self) -> None:
        self._flags |= _WRITE_PAUSED
        self._update_events()  # stop reading: backpressure
        try:
            self._protocol.pause_writing()
        except Exception as exc:  # noqa: BLE001  # aborts this connection only
            self._callback_failed(exc, "pause_writing")

    def _resume_writing(self) -> None:
        self._flags &= ~_WRITE_PAUSED
        try:
            self._protocol.resume_writing()
        except Exception as exc:  # noqa: BLE001  # aborts this connection only
            self._callback_failed(exc, "resume_writing")

    def _flush(self) -> None:
        """Send pending output (WRITE was reported); move on when it is all out."""
        out = self._out
        assert out is not None
        try:
            sent = self._sock.send(out, _MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        self._last_active = self._server._now
        del out[:sent]  # O(1): a bytearray moves its start on deletion at the front
        if out:
            if (
                self._flags & _WRITE_PAUSED
                and len(out) <= self._limits[0]
                and self._state < _CLOSING
            ):
                self._resume_writing()
                self._update_events()
            return
        self._out = None
        self._slow &= ~_SLOW_OUTPUT
        if self._flags & _WRITE_PAUSED and self._state < _CLOSING:
            self._resume_writing()  # may write again
        self._output_sent()

    def _output_sent(self) -> None:
        """Pending output is all sent (or there was none): do what waited for it."""
        state = self._state
        if state == _CLOSED or self._out is not None:
            if state != _CLOSED:
                self._update_events()
            return
        if state == _CLOSING:
            if self._flags & _EOF_IN:
                self._finish(None, "closed after the peer's end of input")
            else:
                self._start_linger()
            return
        if state == _EOF_WRITTEN:
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # reset meanwhile: the next read reports it
            if self._flags & _EOF_IN:  # both sides done
                self._finish(None, "both sides closed")
                return
        self._update_events()

    def write_eof(self) -> None:
        """Half-close: shut down the sending side once pending output is sent.

        Reading goes on.  Later ``write()`` calls raise ``RuntimeError``.
        """
        if self._state != _OPEN:
            return
        self._state = _EOF_WRITTEN
        self._slow |= _SLOW_EOF_WRITTEN
        if self._out is None:
            self._output_sent()

    def can_write_eof(self) -> bool:
        """True: TCP can half-close."""
        return True

    # -- closing -------------------------------------------------------------------

    def close(self) -> None:
        """Close after sending what is buffered; the peer loses no byte.

        Stops reading, sends pending output, half-closes, lingers while the
        peer's kernel has not acknowledged everything (reading and dropping
        what the peer still sends), then closes; at the latest after the
        server's ``grace_period``.  ``connection_lost(None)`` follows.
        Idempotent; later ``write()`` calls are no-ops.
        """
        if self._state >= _CLOSING:
            return
        self._begin_close()
        deadlines = self._server._deadlines
        if self._state < _CLOSED and self not in deadlines:
            deadlines[self] = self._server.call_later(
                self._server._grace_period, self._deadline_passed
            )

    def _begin_close(self) -> None:
        self._state = _CLOSING
        self._slow |= _SLOW_CLOSING
        self._output_sent()

    def _deadline_passed(self) -> None:
        self._server._deadlines.pop(self, None)
        if self._state < _CLOSED:
            if self._out:
                log.debug("fd %d: grace period over with %d bytes unsent", self._fd, len(self._out))
            self._discard_input()
            self._finish(None, "grace period over")

    def abort(self) -> None:
        """Close at once, dropping buffered output; ``connection_lost(None)`` follows."""
        if self._state < _CLOSED:
            self._out = None
            self._finish(None, "aborted")

    def is_closing(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called, or the connection ended."""
        return self._state >= _CLOSING

    def _start_linger(self) -> None:
        """Output sent: half-close, then close once no byte of it can be lost."""
        if self._discard_input():
            self._finish(None, "closed by the peer")
            return
        # Always half-close first, even with everything acknowledged: input
        # may land between the last read and close(), and closing with unread
        # input sends RST instead of FIN.  Once the peer's kernel has
        # acknowledged the FIN too (SIOCOUTQ counts it), an RST costs the
        # peer nothing: it has read, or will read, every byte and the EOF.
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # reset meanwhile: the next read reports it
        self._state = _LINGER
        self._update_events()
        # Nothing signals the peer's acknowledgement: the server looks again
        # on every event on the socket and on a short tick.
        self._server._linger(self)

    def _linger_check(self) -> None:
        if self._discard_input():
            self._finish(None, "closed by the peer")
        elif not unsent_bytes(self._sock):
            self._finish(None, "closed")

    def _discard_input(self) -> bool:
        """Read and drop what the peer sent, so that close() sends FIN, not RST.

        True if the input ended (EOF, or the connection failed).  At most
        ``_DISCARD_READS`` reads, so a flooding peer cannot hold up the loop.
        """
        sock = self._sock
        buffer = self._server._scratch
        for _ in range(_DISCARD_READS):
            try:
                if not sock.recv_into(buffer):
                    return True
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                return True
        return False

    def _finish(self, exc: Exception | None, reason: str) -> None:
        """The end: unregister, close the socket, queue ``connection_lost(exc)``."""
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._slow |= _SLOW_CLOSING
        self._out = None
        server = self._server
        fd = self._fd
        if server._connections.get(fd) is self:
            del server._connections[fd]
        try:
            if self._events:
                self._events = 0
                server._poller.unregister(fd)
        except (PollerClosedError, PollerForkedError):
            pass  # the caller closed the poller first: its registrations are gone
        finally:
            self._sock.close()
        deadline = server._deadlines.pop(self, None)
        if deadline is not None:
            deadline.cancel()
        log.debug("fd %d: %s", fd, reason)
        server._lost.append((self._protocol.connection_lost, exc))
        server._connection_closed(self)

    def _fail(self, exc: OSError) -> None:
        self._server._dropped += 1
        if exc.errno in _PEER_ERRNOS:
            self._finish(exc, f"dropped: {exc}")
        else:
            log.warning("fd %d: unexpected error, closing the connection: %s", self._fd, exc)
            self._finish(exc, "unexpected error")

    def _callback_failed(self, exc: Exception, name: str) -> None:
        log.error(
            "fd %d: %s.%s() raised; aborting this connection",
            self._fd,
            type(self._protocol).__name__,
            name,
            exc_info=exc,
        )
        if self._state < _CLOSED:
            self._server._dropped += 1
            self._out = None
            self._finish(exc, f"{name}() raised")

    # -- reading ---------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading` (independent of backpressure)."""
        if not self._flags & _APP_PAUSED:
            self._flags |= _APP_PAUSED
            if self._state < _CLOSING:
                self._update_events()

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading` (unless backpressure holds it)."""
        if self._flags & _APP_PAUSED:
            self._flags &= ~_APP_PAUSED
            if self._state < _CLOSING:
                self._update_events()

    def is_reading(self) -> bool:
        """False after :meth:`pause_reading` (until :meth:`resume_reading`) or once closing.

        Backpressure is not shown here: it pauses the protocol's writing, and
        ``pause_writing()`` says so.
        """
        return not self._flags & _APP_PAUSED and self._state < _CLOSING

    def _ready(self, mask: int) -> None:
        """Everything but the loop's inline read path."""
        if self._out is not None and mask & _WRITE_OR_FAILURE:
            self._flush()
        if not mask & _READ_OR_FAILURE or not self._events & _READ:
            return
        state = self._state
        if state == _LINGER:
            self._linger_check()
            return
        if state >= _CLOSING:
            return
        protocol = self._protocol
        if self._slow & _SLOW_BUFFERED:
            self._read_into_buffer(self._sock, protocol)
            return
        size = self._read_size
        try:
            data = os.read(self._fd, size)  # as the loop's inline read (see _loop.py)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        if not data:
            self._end_of_input()
            return
        if len(data) == size:
            self._read_size = READ_SIZE
        self._last_active = self._server._now
        try:
            received = self._data_received  # an attribute load: see the loop's read
            received(data)
        except Exception as exc:  # noqa: BLE001  # aborts this connection only
            self._callback_failed(exc, "data_received")

    def _read_into_buffer(self, sock: socket.socket, protocol: Any) -> None:
        """A buffered protocol's read: ``get_buffer()``, ``recv_into()``, ``buffer_updated()``."""
        view: memoryview | None = None
        try:
            buffer = protocol.get_buffer(READ_SIZE)
            if type(buffer) is bytearray:
                target: bytearray | memoryview = buffer
                size = len(buffer)
            else:
                view = memoryview(buffer)
                if view.readonly:
                    raise RuntimeError(f"get_buffer() returned a read-only {type(buffer).__name__}")
                target = view if view.format == "B" and view.ndim == 1 else view.cast("B")
                size = target.nbytes
            if not size:
                raise RuntimeError("get_buffer() returned an empty buffer")
        except Exception as exc:  # noqa: BLE001  # aborts this connection only
            if view is not None:
                view.release()
            self._callback_failed(exc, "get_buffer")
            return
        try:
            received = sock.recv_into(target, min(size, READ_SIZE))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        finally:
            # Released at once: a view left alive would stop the protocol
            # from resizing its own bytearray (BufferError).
            if target is not buffer:
                target.release()  # type: ignore[union-attr]  # only views get here
            if view is not None:
                view.release()
        if not received:
            self._end_of_input()
            return
        self._last_active = self._server._now
        try:
            protocol.buffer_updated(received)
        except Exception as exc:  # noqa: BLE001  # aborts this connection only
            self._callback_failed(exc, "buffer_updated")

    def _end_of_input(self) -> None:
        self._flags |= _EOF_IN
        try:
            keep_open = self._protocol.eof_received()
        except Exception as exc:  # noqa: BLE001  # aborts this connection only
            self._callback_failed(exc, "eof_received")
            return
        state = self._state
        if state == _CLOSED:
            return
        if state == _EOF_WRITTEN and self._out is None:
            self._finish(None, "both sides closed")
            return
        if keep_open and state < _CLOSING:
            self._update_events()  # no more reading; writing goes on
            return
        if state < _CLOSING:
            self._begin_close()  # send what is pending, then close
        elif state == _LINGER:
            self._finish(None, "closed by the peer")

    def _update_events(self) -> None:
        """Register exactly what is wanted now: READ unless held, WRITE while output waits."""
        state = self._state
        if state == _CLOSED:
            return
        want = 0
        if state == _LINGER or (state < _CLOSING and not self._flags):
            want = _READ
        if self._out is not None:
            want |= _WRITE
        current = self._events
        if want == current:
            return
        poller = self._server._poller
        if not current:
            poller.register(self._fd, want)
        elif not want:
            poller.unregister(self._fd)
        else:
            poller.modify(self._fd, want)
        self._events = want
        if want & _READ:
            self._slow &= ~_SLOW_NOT_READING
        else:
            self._slow |= _SLOW_NOT_READING

    # -- limits, timeouts, information ---------------------------------------------

    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        out = self._out
        return 0 if out is None else len(out)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """``(low, high)``: the water marks, in bytes."""
        return self._limits

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the water marks: ``high`` (default: the server's ``max_buffer``, or
        4 x ``low``) and ``low`` (default: ``high // 4``).

        Raises:
            InvalidArgumentError: a negative mark, or ``low > high``.
        """
        if high is None:
            high = self._server._max_buffer if low is None else 4 * int_at_least("low", low, 0)
        high = int_at_least("high", high, 0)
        low = high // 4 if low is None else int_at_least("low", low, 0)
        if low > high:
            raise InvalidArgumentError(f"low = {low} is above high = {high}")
        self._limits = (low, high)
        if self._state >= _CLOSING:
            return
        size = self.get_write_buffer_size()
        if not self._flags & _WRITE_PAUSED and size > high:
            self._pause_writing()
        elif self._flags & _WRITE_PAUSED and size <= low:
            self._resume_writing()
            self._update_events()

    def set_idle_timeout(self, timeout: float | None) -> None:
        """Close this connection after ``timeout`` seconds without progress either way.

        Counted from now; ``None`` never closes it for idleness.  Overrides
        the server's ``idle_timeout`` for this connection.

        Raises:
            InvalidArgumentError: ``timeout`` is not a finite number of
                seconds ``> 0`` (or ``None``).
        """
        if timeout is not None:
            timeout = seconds("timeout", timeout, allow_zero=False)
        self._idle = timeout
        if timeout is not None and self._state < _CLOSED:
            self._server._watch_idle(self, timeout)

    def get_idle_timeout(self) -> float | None:
        """The idle timeout in force for this connection (``None``: none)."""
        return self._idle

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``"peername"``, ``"sockname"`` (addresses) or ``"socket"``; else ``default``.

        Keep the socket's use to reading and setting options: reading,
        writing or closing it behind the transport's back breaks the
        transport.  The transport reads with ``os.read()`` on the fd it was
        given, so after a ``close()`` here it would read whatever file next
        gets that fd number (``debug:`` reports such a reuse).
        """
        sock = self._sock
        try:
            if name == "peername":
                return sock.getpeername()
            if name == "sockname":
                return sock.getsockname()
        except OSError:
            return default
        if name == "socket":
            return sock
        return default

    def get_protocol(self) -> BaseProtocol:
        """The protocol this transport calls."""
        return self._protocol

    def __repr__(self) -> str:
        names = {_OPEN: "open", _EOF_WRITTEN: "eof written", _CLOSING: "closing"}
        state = names.get(self._state, "lingering" if self._state == _LINGER else "closed")
        return f"<Transport fd={self._fd} {state} pending={self.get_write_buffer_size()}>"
