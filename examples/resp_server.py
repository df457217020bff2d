"""A Redis-protocol (RESP2) server on :mod:`pollkit.server`: the layer is not echo-specific.

Run it as::

    python examples/resp_server.py --host 127.0.0.1 --port 6379 --backend poll

and talk to it with ``redis-cli`` or ``redis-benchmark -t ping,set,get``.  It
prints ``listening on HOST:PORT`` once it accepts connections (``--port 0``
picks a free port and prints it), and stops gracefully on SIGINT or SIGTERM,
exiting 0; a second signal stops it at once, with status 128 + its number
(as ``pollkit echo`` does).

Commands (names in any case): ``PING [message]``, ``ECHO message``,
``SET key value``, ``GET key``, ``DEL key [key ...]``, ``EXISTS key [key
...]``, ``INCR key``, ``CONFIG GET parameter [...]`` and ``COMMAND [...]``
(both an empty array: ``redis-cli`` and ``redis-benchmark`` ask them at the
start and cope), ``QUIT``.  Every key lives in one dict shared by all
connections.  Replies and error texts are Redis 7's.

Requests come in both of Redis's forms -- arrays of bulk strings (what
clients send) and inline lines (what a person types into ``nc``) -- and may
be pipelined: every complete request in what arrived is answered, in order,
with one ``write()``.  :class:`RequestParser` parses incrementally, keeping an
offset into its buffer and its place inside a request that is not complete
yet, so a large request arriving in many reads is never parsed again from
its start.

Defences, besides the layer's own (``--max-clients``, ``--idle-timeout``,
output backpressure, the graceful drain):

* malformed input gets ``-ERR Protocol error: ...`` and the connection is
  closed, as Redis does (after the reply and anything before it are sent);
* one request is bounded by ``--max-request`` bytes (default 1 MiB): a
  longer one -- by its declared bulk length or element count, or by the
  bytes buffered for it -- gets ``-ERR Protocol error: ...`` naming the limit
  and the connection is closed; other connections never notice;
* while the layer holds this connection's output above its high-water mark
  (``pause_writing()``), no more requests are executed, so a client that
  pipelines reads of large values without reading replies cannot make the
  server build replies without bound; they run again at
  ``resume_writing()``.

Where it is stricter than Redis: a bulk string must be followed by CRLF
(Redis skips two bytes unchecked), and the bound above replaces Redis's
separate ones (64 KiB inline lines, 512 MiB bulk strings).
"""

from __future__ import annotations

import logging
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from pollkit import open_poller
from pollkit.cli import ArgumentParser, backend_argument, port_arg, positive_int_arg, seconds_arg
from pollkit.errors import PollkitError
from pollkit.server import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_MAX_CLIENTS,
    Protocol,
    Server,
    Transport,
)

__all__ = [
    "DEFAULT_MAX_REQUEST",
    "ProtocolError",
    "RequestParser",
    "RequestTooLargeError",
    "RespProtocol",
    "execute",
    "main",
    "parse_requests",
    "split_inline",
]

#: Bytes one request may take, by default: its declared sizes and its bytes on the wire.
DEFAULT_MAX_REQUEST = 1024 * 1024

#: The smallest encoding of one array element, ``$0\r\n\r\n``: an array whose
#: header declares more elements than ``max_request // 6`` cannot fit.
_MIN_ELEMENT = 6

#: Reply bytes collected before they are written: one ``write()`` per batch
#: of pipelined requests, without building an unbounded reply first.
_WRITE_BATCH = 64 * 1024

_CRLF = b"\r\n"
_STAR = 0x2A  # b"*"
_DOLLAR = 0x24  # b"$"
_CR = 0x0D
_LF = 0x0A
_ZERO = 0x30  # b"0"
_MINUS = 0x2D  # b"-"

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
#: A signed 64-bit integer has at most 19 digits and a sign.
_INT64_DIGITS = 20


class ProtocolError(Exception):
    """The input is not RESP; the text is what follows ``-ERR Protocol error:``."""


class RequestTooLargeError(ProtocolError):
    """One request passes ``max_request`` bytes."""


# -- parsing ------------------------------------------------------------------------


def _strict_int(text: bytes | bytearray) -> int | None:
    """``text`` as Redis's ``string2ll`` reads it: no sign but ``-``, no blanks, no leading 0."""
    if len(text) > _INT64_DIGITS:
        return None  # also keeps int() away from very long digit strings
    if text.isdigit():
        if text[0] == _ZERO and len(text) > 1:
            return None
        value = int(text)
    elif len(text) > 1 and text[0] == _MINUS and text[1] != _ZERO and text[1:].isdigit():
        value = -int(text[1:])
    else:
        return None
    if not _INT64_MIN <= value <= _INT64_MAX:
        return None
    return value


#: Inline lines without these split as ``bytes.split()`` does; with them they
#: take the quote-aware path (``\v`` and ``\f`` separate words only between them).
_INLINE_SPECIAL = re.compile(rb"[\"'\x00\x0b\x0c]")
_INLINE_BLANKS = b" \n\r\t\x0b\x0c"
_ESCAPES = {ord("n"): 0x0A, ord("r"): 0x0D, ord("t"): 0x09, ord("b"): 0x08, ord("a"): 0x07}
_HEX = frozenset(b"0123456789abcdefABCDEF")

#: The split path (in :meth:`RequestParser.take`) reads arrays of at most
#: this many elements, each at most ``_SPLIT_BULK`` bytes long; it checks
#: their headers against these tables, which hold only the canonical
#: spellings: an array's count is looked up by its header, a value's header
#: is found by the value's length (an index: no hashing of the header).
_SPLIT_COUNT = 64
_SPLIT_BULK = 1024
_COUNTS = {b"*%d" % n: n for n in range(1, _SPLIT_COUNT + 1)}
_HEADERS = [b"$%d" % n for n in range(_SPLIT_BULK + 1)]
#: An inline line the split path leaves to the careful one: quotes and the
#: rarer blanks need split_inline(), an LF alone ends a line there.
_INLINE_CAREFUL = re.compile(rb"[\"'\x00\x0b\x0c\n]")


def split_inline(line: bytes) -> list[bytes]:
    """An inline request's words, as Redis's ``sdssplitargs()`` splits them.

    Words are separated by blanks; ``"..."`` quotes with C escapes (``\\n``,
    ``\\x41``...) and ``'...'`` quotes with ``\\'`` make one word each.  A
    closing quote must end the word.

    Raises:
        ProtocolError: unbalanced quotes.
    """
    if _INLINE_SPECIAL.search(line) is None:
        return line.split()
    words: list[bytes] = []
    size = len(line)
    i = 0
    while True:
        while i < size and line[i] in _INLINE_BLANKS:
            i += 1
        if i >= size:
            return words
        word = bytearray()
        quote = 0  # the open quote character, or 0
        while True:
            if quote == 0x22:  # inside "..."
                if i >= size:
                    raise ProtocolError("unbalanced quotes in request")
                char = line[i]
                if (
                    char == 0x5C
                    and i + 3 < size
                    and line[i + 1] == ord("x")
                    and line[i + 2] in _HEX
                    and line[i + 3] in _HEX
                ):
                    word.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif char == 0x5C and i + 1 < size:
                    i += 1
                    word.append(_ESCAPES.get(line[i], line[i]))
                elif char == 0x22:
                    if i + 1 < size and line[i + 1] not in _INLINE_BLANKS:
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    word.append(char)
            elif quote == 0x27:  # inside '...'
                if i >= size:
                    raise ProtocolError("unbalanced quotes in request")
                char = line[i]
                if char == 0x5C and i + 1 < size and line[i + 1] == 0x27:
                    i += 1
                    word.append(0x27)
                elif char == 0x27:
                    if i + 1 < size and line[i + 1] not in _INLINE_BLANKS:
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    word.append(char)
            else:
                if i >= size:
                    break
                char = line[i]
                if char in b" \n\r\t\x00":
                    i += 1
                    break
                if char in (0x22, 0x27):
                    quote = char
                else:
                    word.append(char)
            i += 1
        words.append(bytes(word))


class RequestParser:
    """Incremental RESP parsing: :meth:`feed` it bytes, take requests from :meth:`next_request`.

    The parser keeps what arrived in one buffer and an offset into it; the
    bytes before the offset are dropped only when the next bytes arrive.  A
    request still incomplete keeps its place (the elements parsed, the bulk
    length awaited), so each byte is looked at once however the stream is
    split.  After a :class:`ProtocolError` the parser is unusable: the
    connection must close.

    Two paths give the same requests and the same errors.  The split path
    cuts what arrived at every CRLF with one ``bytes.split()`` and takes
    the complete requests it can check by table lookups (see
    :meth:`take`); what it cannot -- an incomplete request, a value
    holding CRLF, a long value, a malformed request -- it leaves to the
    careful path, byte by byte.  It runs at most once per :meth:`feed`, so
    input that defeats it costs one extra pass over each read, never more.
    """

    __slots__ = (
        "_args",
        "_buffer",
        "_bulk",
        "_consumed",
        "_idle",
        "_max_request",
        "_missing",
        "_pos",
        "_ready",
        "_scan",
        "_split_max",
        "_split_ok",
        "more",
    )

    def __init__(self, max_request: int = DEFAULT_MAX_REQUEST, *, split: bool = True) -> None:
        """``split=False``: the careful path only (to compare the two)."""
        self._max_request = max_request
        # The longest read the split path takes whole: one that fits in the
        # bound (then no complete request in it can pass the bound); -1: none.
        self._split_max = max_request if split else -1
        # Either the bytes of the last read, parsed in place while nothing is
        # left over (no copy), or a bytearray holding a tail plus new reads.
        self._buffer: bytes | bytearray = b""
        self._pos = 0  # where parsing goes on in _buffer
        self._scan = 0  # where the search for the next line end goes on
        self._args: list[bytes] | None = None  # elements of an unfinished array
        self._missing = 0  # elements it still lacks
        self._bulk = -1  # the awaited bulk string's length, or -1 before its header
        self._consumed = 0  # bytes of the unfinished request before _pos
        # Requests parsed but not yet returned (put back, or held by
        # next_request()), in order: take() returns them first.
        self._ready: list[list[bytes]] = []
        self._split_ok = split  # the split path has not given up on this read
        # Nothing buffered, nothing parsed ahead, no request begun.
        self._idle = True
        #: True when :meth:`take` may return more requests without new bytes.
        self.more = False

    @property
    def max_request(self) -> int:
        """The bound on one request's size, in bytes (fixed at construction)."""
        return self._max_request

    def feed(self, data: bytes) -> None:
        """Add bytes that arrived."""
        self._split_ok = self._split_max >= 0
        self._idle = False
        buffer = self._buffer
        pos = self._pos
        if pos >= len(buffer):
            self._buffer = data  # nothing left over: parse the read where it is
            self._scan -= pos
            self._pos = 0
        elif type(buffer) is bytearray:
            if pos:
                del buffer[:pos]  # O(1): a bytearray moves its start
                self._scan -= pos
                self._pos = 0
            buffer += data
        else:
            tail = bytearray(memoryview(buffer)[pos:])
            tail += data
            self._buffer = tail
            self._scan -= pos
            self._pos = 0

    def buffered(self) -> int:
        """Bytes fed and not yet parsed as part of a request (parsed ahead counts as parsed)."""
        return self._consumed + len(self._buffer) - self._pos

    def _incomplete(self, pos: int) -> None:
        """Wait for more bytes; but refuse a request that has outgrown the bound."""
        self._pos = pos
        if self._consumed + len(self._buffer) - pos > self._max_request:
            raise self._too_large()

    def _too_large(self) -> RequestTooLargeError:
        return RequestTooLargeError(f"request larger than max-request ({self._max_request} bytes)")

    def next_request(self) -> list[bytes] | None:
        """The next complete request's words (command first), or None until more bytes come.

        Empty requests (a blank inline line, ``*0``, ``*-1``) are skipped, as
        Redis skips them.

        Raises:
            ProtocolError: malformed input (the message is Redis's wording).
            RequestTooLargeError: the request passes ``max_request`` bytes.
        """
        ready = self.take()
        if not ready:
            return None
        if len(ready) > 1:
            self._ready = ready[1:]
            self._idle = False
            self.more = True
        return ready[0]

    def put_back(self, requests: list[list[bytes]]) -> None:
        """Requests :meth:`take` returned but the caller did not handle: they come first again."""
        if requests:
            self._ready = requests + self._ready
            self._idle = False
            self.more = True

    def take(self, data: bytes = b"") -> list[list[bytes]]:
        """:meth:`feed` ``data`` (if any), then return requests complete now, in order.

        ``[]`` until more bytes come.  Several when the split path took
        them at once, else one; while :attr:`more` is true afterwards, call
        again (without data) for the rest.  A malformed request is raised on
        only once it is the first one left, so every request before it is
        returned first.

        Raises:
            ProtocolError: malformed input (the message is Redis's wording).
            RequestTooLargeError: the request passes ``max_request`` bytes.
        """
        # The split path takes the bytes from ``pos`` on (``tail``) only at a
        # fresh request (the careful path has not begun to scan it), and only
        # when they fit in the bound: then no complete request in them can
        # pass it, and the split path need not check.
        tail: bytes | None = None
        pos = 0
        fresh = self._idle  # nothing buffered: the read is split as it is
        if fresh:
            if len(data) <= self._split_max:
                tail = data
            elif not data:
                return []
            else:
                self.feed(data)
        else:
            ready = self._ready
            if ready:
                if data:
                    self.feed(data)
                self._ready = []
                self.more = True  # what follows them is not parsed yet
                return ready
            if data:
                self.feed(data)
            buffer = self._buffer
            pos = self._pos
            left = len(buffer) - pos
            if (
                left
                and self._split_ok
                and self._args is None
                and self._scan <= pos
                and left <= self._split_max
            ):
                tail = (
                    buffer if not pos and type(buffer) is bytes else bytes(memoryview(buffer)[pos:])
                )
        if tail is not None:
            # An array whose headers are all in _COUNTS/_HEADERS (so they are
            # well-formed), and each of whose values is as long as declared
            # (so it holds no CRLF and is followed by CRLF), is taken as its
            # values; an inline line without quotes, rare blanks or a lone LF
            # as its words (a blank one is skipped).  Anything else stops the
            # split path: the careful path takes over at that request.
            parts = tail.split(_CRLF)
            last = len(parts) - 1  # parts[last] follows the last CRLF: never a whole line
            headers = _HEADERS
            found: list[list[bytes]] = []
            i = 0
            while i < last:
                token = parts[i]
                count = _COUNTS.get(token)
                if count is not None:
                    end = i + 2 * count  # the last value's index
                    if end >= last:
                        break  # incomplete
                    # A mismatch (an unusual header, a value holding CRLF) or
                    # an IndexError (a long value) leaves the request to the
                    # careful path.
                    # The commonest sizes are written out: a loop costs more.
                    try:
                        if count == 1:
                            value = parts[i + 2]
                            if headers[len(value)] != parts[i + 1]:
                                break
                            found.append([value])
                        elif count == 2:
                            _, h1, v1, h2, v2 = parts[i : end + 1]
                            if headers[len(v1)] != h1 or headers[len(v2)] != h2:
                                break
                            found.append([v1, v2])
                        elif count == 3:
                            _, h1, v1, h2, v2, h3, v3 = parts[i : end + 1]
                            if (
                                headers[len(v1)] != h1
                                or headers[len(v2)] != h2
                                or headers[len(v3)] != h3
                            ):
                                break
                            found.append([v1, v2, v3])
                        else:
                            values = parts[i + 2 : end + 1 : 2]
                            header = i + 1
                            for value in values:
                                if headers[len(value)] != parts[header]:
                                    break
                                header += 2
                            else:
                                found.append(values)
                                i = end + 1
                                continue
                            break
                    except IndexError:
                        break
                    i = end + 1
                elif token.isalpha():
                    found.append([token])  # a bare command (PING, say): letters only
                    i += 1
                elif token[:1] == b"*" or _INLINE_CAREFUL.search(token) is not None:
                    break  # *0, *-1, a long or malformed array, an unusual inline line
                else:
                    words = token.split()
                    if words:
                        found.append(words)
                    i += 1
            if fresh and i == last and not parts[last]:
                return found  # every byte taken: still nothing buffered
            if fresh:
                self.feed(data)  # the split path left some of the read to the careful one
            # Each line taken ended with CRLF.
            self._pos = pos + (
                len(tail) - len(parts[last]) if i == last else sum(map(len, parts[:i])) + 2 * i
            )
            if i < last:
                self._split_ok = False  # the careful path takes the next request
            # What follows the last CRLF may still hold an LF-ended inline line.
            self.more = i < last or bool(parts[last])
            if found:
                return found
        request = self._next_careful()
        if self._pos >= len(self._buffer) and self._args is None:
            self._idle = True  # every byte taken: let go of the buffer
            self._buffer = b""
            self._pos = self._scan = 0
            self.more = False
        else:
            self.more = request is not None
        return [] if request is None else [request]

    def _next_careful(self) -> list[bytes] | None:
        """:meth:`next_request` byte by byte, keeping its place in an incomplete request."""
        buffer = self._buffer
        size = len(buffer)
        pos = self._pos
        args = self._args
        # A failed search for a line end remembers where it stopped (_scan),
        # so that the next one, with more bytes, does not look again at the
        # bytes before: a line is searched once however it is split.  A
        # successful one moves pos past _scan, which then no longer matters.
        while True:
            if args is None:
                if pos >= size:
                    self._pos = pos
                    return None
                if buffer[pos] != _STAR:
                    # An inline request: one line, LF or CRLF ended.
                    line_end = buffer.find(b"\n", max(pos, self._scan))
                    if line_end < 0:
                        self._scan = size
                        self._incomplete(pos)
                        return None
                    if line_end + 1 - pos > self._max_request:
                        raise self._too_large()
                    stop = (
                        line_end - 1 if line_end > pos and buffer[line_end - 1] == _CR else line_end
                    )
                    words = split_inline(bytes(buffer[pos:stop]))
                    pos = line_end + 1
                    if words:
                        self._pos = pos
                        return words
                    continue
                line_end = buffer.find(_CRLF, max(pos, self._scan))
                if line_end < 0:
                    self._scan = size - 1  # a CR at the end may meet its LF later
                    self._incomplete(pos)
                    return None
                count = _strict_int(buffer[pos + 1 : line_end])
                if count is None:
                    raise ProtocolError("invalid multibulk length")
                header = line_end + 2 - pos
                pos = line_end + 2
                if count <= 0:
                    continue
                if header + _MIN_ELEMENT * count > self._max_request:
                    raise self._too_large()
                args = self._args = []
                self._missing = count
                self._bulk = -1
                self._consumed = header
            # Inside an array: bulk strings, each a header and its bytes.
            missing = self._missing
            bulk = self._bulk
            consumed = self._consumed
            while missing:
                if bulk < 0:
                    if pos >= size:
                        break
                    if buffer[pos] != _DOLLAR:
                        raise ProtocolError(f"expected '$', got '{chr(buffer[pos])}'")
                    line_end = buffer.find(_CRLF, max(pos, self._scan))
                    if line_end < 0:
                        self._scan = size - 1
                        break
                    length = _strict_int(buffer[pos + 1 : line_end])
                    if length is None or length < 0:
                        raise ProtocolError("invalid bulk length")
                    consumed += line_end + 2 - pos
                    pos = line_end + 2
                    if consumed + length + 2 > self._max_request:
                        raise self._too_large()
                    bulk = length
                stop = pos + bulk
                if stop + 2 > size:
                    break
                if buffer[stop] != _CR or buffer[stop + 1] != _LF:
                    raise ProtocolError("expected CRLF after a bulk string")
                args.append(bytes(buffer[pos:stop]))
                consumed += bulk + 2
                pos = stop + 2
                bulk = -1
                missing -= 1
            if missing:
                self._missing = missing
                self._bulk = bulk
                self._consumed = consumed
                self._incomplete(pos)
                return None
            self._args = None
            self._consumed = 0
            self._pos = pos
            return args


def parse_requests(data: bytes, max_request: int = DEFAULT_MAX_REQUEST) -> list[list[bytes]]:
    """Every complete request in ``data`` (an incomplete tail is ignored)."""
    parser = RequestParser(max_request)
    parser.feed(data)
    requests = []
    while (request := parser.next_request()) is not None:
        requests.append(request)
    return requests


# -- commands -------------------------------------------------------------------------

Store = dict[bytes, bytes]

_OK = b"+OK\r\n"
_PONG = b"+PONG\r\n"
_NULL = b"$-1\r\n"
_EMPTY_ARRAY = b"*0\r\n"


def _error(text: bytes) -> bytes:
    # A reply line must not hold CR or LF: Redis blanks them.
    return b"-ERR " + text.replace(b"\r", b" ").replace(b"\n", b" ") + _CRLF


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _integer(value: int) -> bytes:
    return b":%d\r\n" % value


def _arity(name: bytes) -> bytes:
    return _error(b"wrong number of arguments for '%b' command" % name)


def _unknown_command(args: list[bytes]) -> bytes:
    """Redis's text: the name, then the arguments quoted, up to about 128 bytes of them."""
    shown = b""
    for arg in args[1:]:
        if len(shown) >= 128:
            break
        shown += b"'%b' " % arg[: 128 - len(shown)]
    return _error(b"unknown command '%b', with args beginning with: %b" % (args[0][:128], shown))


def _ping(store: Store, args: list[bytes]) -> bytes:
    if len(args) == 1:
        return _PONG
    if len(args) == 2:
        return _bulk(args[1])
    return _arity(b"ping")


def _echo(store: Store, args: list[bytes]) -> bytes:
    return _bulk(args[1]) if len(args) == 2 else _arity(b"echo")


def _set(store: Store, args: list[bytes]) -> bytes:
    if len(args) == 3:
        store[args[1]] = args[2]
        return _OK
    # Redis's SET takes options (EX, NX...) after the value; this one takes none.
    return _arity(b"set") if len(args) < 3 else _error(b"syntax error")


def _get(store: Store, args: list[bytes]) -> bytes:
    if len(args) != 2:
        return _arity(b"get")
    value = store.get(args[1])
    return _NULL if value is None else _bulk(value)


def _del(store: Store, args: list[bytes]) -> bytes:
    if len(args) < 2:
        return _arity(b"del")
    deleted = 0
    for key in args[1:]:
        if store.pop(key, None) is not None:
            deleted += 1
    return _integer(deleted)


def _exists(store: Store, args: list[bytes]) -> bytes:
    if len(args) < 2:
        return _arity(b"exists")
    return _integer(sum(key in store for key in args[1:]))  # a key named twice counts twice


def _incr(store: Store, args: list[bytes]) -> bytes:
    if len(args) != 2:
        return _arity(b"incr")
    key = args[1]
    old = store.get(key)
    value = 0 if old is None else _strict_int(old)
    if value is None:
        return _error(b"value is not an integer or out of range")
    if value == _INT64_MAX:
        return _error(b"increment or decrement would overflow")
    value += 1
    store[key] = b"%d" % value
    return _integer(value)


def _config(store: Store, args: list[bytes]) -> bytes:
    if len(args) < 2:
        return _arity(b"config")
    if args[1].upper() != b"GET":
        return _error(b"unknown subcommand '%b'. Try CONFIG HELP." % args[1][:128])
    # No parameter is known: every pattern matches nothing.
    return _EMPTY_ARRAY if len(args) >= 3 else _arity(b"config|get")


def _command(store: Store, args: list[bytes]) -> bytes:
    return _EMPTY_ARRAY  # no command documentation; clients fall back to their own


_QUIT = b"QUIT"

#: Command handlers by upper-case name.  QUIT is the protocol's own (it closes).
_COMMANDS: dict[bytes, Callable[[Store, list[bytes]], bytes]] = {
    b"PING": _ping,
    b"ECHO": _echo,
    b"SET": _set,
    b"GET": _get,
    b"DEL": _del,
    b"EXISTS": _exists,
    b"INCR": _incr,
    b"CONFIG": _config,
    b"COMMAND": _command,
}


def execute(store: Store, args: list[bytes]) -> bytes:
    """The reply to one request (``args``: command name first) against ``store``.

    ``QUIT`` is not handled here: it is a connection's business.
    """
    handler = _COMMANDS.get(args[0]) or _COMMANDS.get(args[0].upper())
    if handler is None:
        return _unknown_command(args)
    return handler(store, args)


# -- the protocol ---------------------------------------------------------------------


class RespProtocol(Protocol):
    """One RESP connection on a :class:`pollkit.server.Server`; ``store`` is shared."""

    __slots__ = ("_blocked", "_parser", "_store", "_transport")

    def __init__(self, store: Store, max_request: int = DEFAULT_MAX_REQUEST) -> None:
        self._store = store
        self._parser = RequestParser(max_request)
        self._transport: Transport | None = None
        self._blocked = False  # the layer holds our output above its high-water mark

    def connection_made(self, transport: Transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        """Execute every complete request buffered, writing the replies in order.

        Stops early at QUIT, at a protocol error (both close the connection)
        and when the layer pauses our writing (the rest waits for
        :meth:`resume_writing`).
        """
        parser = self._parser
        if self._blocked:
            parser.feed(data)
            return
        try:
            batch = parser.take(data)
        except ProtocolError as exc:
            self._refuse(exc, [])
            return
        transport = self._transport
        assert transport is not None, "data before connection_made()"
        if len(batch) == 1 and not parser.more:
            # One request and nothing after it (a client waiting for each
            # reply): its reply goes out as it is.
            args = batch[0]
            handler = _COMMANDS.get(args[0])
            if handler is not None:
                transport.write(handler(self._store, args))
                return
        store = self._store
        commands = _COMMANDS
        write_batch = _WRITE_BATCH
        replies: list[bytes] = []
        pending = 0
        while True:
            for done, args in enumerate(batch, 1):
                handler = commands.get(args[0])
                if handler is not None:
                    reply = handler(store, args)
                else:
                    name = args[0].upper()
                    if name == _QUIT:
                        replies.append(_OK)
                        transport.write(b"".join(replies))
                        transport.close()
                        return
                    handler = commands.get(name)
                    reply = _unknown_command(args) if handler is None else handler(store, args)
                replies.append(reply)
                pending += len(reply)
                if pending >= write_batch:
                    transport.write(b"".join(replies))
                    replies.clear()
                    pending = 0
                    if self._blocked or transport.is_closing():
                        parser.put_back(batch[done:])
                        return  # the rest waits in the parser for resume_writing()
            if not parser.more:
                break
            try:
                batch = parser.take()
            except ProtocolError as exc:
                self._refuse(exc, replies)
                return
        if pending:
            transport.write(replies[0] if len(replies) == 1 else b"".join(replies))

    def pause_writing(self) -> None:
        self._blocked = True

    def resume_writing(self) -> None:
        self._blocked = False
        self.data_received(b"")  # the requests that waited in the parser

    def _refuse(self, exc: ProtocolError, replies: list[bytes]) -> None:
        """Malformed input: the replies so far, the error, then close, as Redis does."""
        # latin-1: a byte quoted in the message goes back as that byte.
        replies.append(_error(b"Protocol error: " + str(exc).encode("latin-1")))
        transport = self._transport
        assert transport is not None, "data before connection_made()"
        transport.write(b"".join(replies))
        transport.close()


# -- the command line -----------------------------------------------------------------

_PROG = "resp_server"


def _build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=_PROG, description="A Redis-protocol server on pollkit.server.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=port_arg, default=6379, help="port (0 picks one; default: 6379)"
    )
    backend_argument(parser)
    parser.add_argument(
        "--max-clients",
        type=positive_int_arg,
        default=DEFAULT_MAX_CLIENTS,
        metavar="N",
        help=f"connections served at once (default: {DEFAULT_MAX_CLIENTS})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=seconds_arg(allow_zero=False),
        default=None,
        metavar="SECONDS",
        help="close a connection idle this long (default: never)",
    )
    parser.add_argument(
        "--grace-period",
        type=seconds_arg(allow_zero=True),
        default=DEFAULT_GRACE_PERIOD,
        metavar="SECONDS",
        help="how long a stop waits for pending replies to be sent "
        f"(default: {DEFAULT_GRACE_PERIOD:g})",
    )
    parser.add_argument(
        "--max-request",
        type=positive_int_arg,
        default=DEFAULT_MAX_REQUEST,
        metavar="BYTES",
        help=f"largest request accepted (default: {DEFAULT_MAX_REQUEST})",
    )
    return parser


@contextmanager
def _stop_on_signals(server: Server) -> Iterator[list[int]]:
    """SIGINT/SIGTERM: the first drains gracefully, a second stops at once.

    Yields the signals received, in order.
    """
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        server.shutdown(graceful=len(received) == 1)

    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, handle) for signum in stop_signals}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; 0 after a graceful stop, 1 when the server cannot start."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format=f"{_PROG}: %(levelname)s %(name)s: %(message)s"
    )
    store: Store = {}
    max_request: int = args.max_request

    def protocol() -> RespProtocol:
        return RespProtocol(store, max_request)

    try:
        with open_poller(args.backend) as poller:
            try:
                server = Server(
                    poller,
                    protocol,
                    args.host,
                    args.port,
                    max_clients=args.max_clients,
                    idle_timeout=args.idle_timeout,
                    grace_period=args.grace_period,
                )
            except OSError as exc:
                where = _format_address(args.host, args.port)
                print(f"{_PROG}: error: cannot listen on {where}: {exc}", file=sys.stderr)
                return 1
            with server, _stop_on_signals(server) as received:
                print(f"listening on {_format_address(*server.address)}", flush=True)
                server.serve_forever()
    except PollkitError as exc:  # the driver cannot be opened here, say
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 1
    return 128 + received[-1] if len(received) > 1 else 0


if __name__ == "__main__":
    sys.exit(main())
