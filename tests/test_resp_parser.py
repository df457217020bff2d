"""The RESP example's parser and commands, without a socket.

``examples/resp_server.py`` keeps its parser importable; these tests feed it
byte streams split every way, malformed input and requests past the bound,
and drive :class:`RespProtocol` with a transport that pauses its writing.
The replies' exact bytes are Redis 7's (checked against ``redis-server``).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resp_helpers import load_resp_server

resp = load_resp_server()


def encode(*args: bytes) -> bytes:
    """A request as clients send it: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    parts.extend(b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in args)
    return b"".join(parts)


def feed_in_pieces(pieces: list[bytes], max_request: int = resp.DEFAULT_MAX_REQUEST) -> list[Any]:
    """Feed ``pieces`` one at a time, taking every complete request after each."""
    parser = resp.RequestParser(max_request)
    requests = []
    for piece in pieces:
        parser.feed(piece)
        while (request := parser.next_request()) is not None:
            requests.append(request)
    return requests


# -- well-formed input -----------------------------------------------------------------


def test_an_array_request_is_its_bulk_strings() -> None:
    assert resp.parse_requests(encode(b"SET", b"key", b"va\r\nlue")) == [
        [b"SET", b"key", b"va\r\nlue"]
    ]


def test_an_inline_request_is_split_on_blanks() -> None:
    assert resp.parse_requests(b"PING\r\nSET  k\tv\nget k\r\n") == [
        [b"PING"],
        [b"SET", b"k", b"v"],
        [b"get", b"k"],
    ]


def test_pipelined_requests_come_out_in_order() -> None:
    stream = b"".join(encode(b"INCR", b"n%d" % i) for i in range(500)) + b"PING\r\n"
    requests = resp.parse_requests(stream)
    assert requests == [[b"INCR", b"n%d" % i] for i in range(500)] + [[b"PING"]]


def test_empty_requests_are_skipped() -> None:
    assert resp.parse_requests(b"\r\n*0\r\n*-1\r\n  \r\nPING\r\n") == [[b"PING"]]


def test_a_partial_request_waits_for_the_rest() -> None:
    parser = resp.RequestParser()
    stream = encode(b"ECHO", b"x" * 1000)
    parser.feed(stream[:500])
    assert parser.next_request() is None
    assert parser.buffered() == 500
    parser.feed(stream[500:])
    assert parser.next_request() == [b"ECHO", b"x" * 1000]
    assert parser.next_request() is None
    assert parser.buffered() == 0


def test_a_bulk_string_split_inside_its_crlf_waits() -> None:
    stream = encode(b"GET", b"k")
    for cut in range(1, len(stream)):
        assert feed_in_pieces([stream[:cut], stream[cut:]]) == [[b"GET", b"k"]], cut


def test_every_split_of_a_mixed_stream_gives_the_same_requests() -> None:
    stream = encode(b"SET", b"a", b"") + b"PING hi\r\n" + encode(b"") + b'ECHO "x y"\n'
    expected = [[b"SET", b"a", b""], [b"PING", b"hi"], [b""], [b"ECHO", b"x y"]]
    assert resp.parse_requests(stream) == expected
    for cut in range(len(stream) + 1):
        for second in range(cut, len(stream) + 1, 7):
            pieces = [stream[:cut], stream[cut:second], stream[second:]]
            assert feed_in_pieces(pieces) == expected, (cut, second)


def test_one_byte_at_a_time() -> None:
    stream = encode(b"SET", b"key", b"v" * 300) + b"GET key\r\n"
    assert feed_in_pieces([bytes([byte]) for byte in stream]) == [
        [b"SET", b"key", b"v" * 300],
        [b"GET", b"key"],
    ]


_arg = st.binary(max_size=40)
_word = st.from_regex(rb"\A[A-Za-z0-9_:.-]{1,12}\Z")
_array_request = st.lists(_arg, min_size=1, max_size=6)
_inline_request = st.lists(_word, min_size=1, max_size=5)


@st.composite
def _stream(draw: st.DrawFn) -> tuple[bytes, list[list[bytes]], list[int]]:
    """Requests (arrays and inline lines), their bytes, and where to cut them."""
    encoded: list[bytes] = []
    requests: list[list[bytes]] = []
    for request, inline in draw(
        st.lists(
            st.one_of(
                _array_request.map(lambda r: (r, False)), _inline_request.map(lambda r: (r, True))
            ),
            max_size=12,
        )
    ):
        if inline:
            encoded.append(b" ".join(request) + draw(st.sampled_from([b"\r\n", b"\n"])))
        else:
            encoded.append(encode(*request))
        requests.append(request)
    stream = b"".join(encoded)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    return stream, requests, cuts


@settings(max_examples=300, deadline=None)
@given(_stream())
def test_splitting_a_stream_anywhere_gives_the_same_requests(
    case: tuple[bytes, list[list[bytes]], list[int]],
) -> None:
    stream, requests, cuts = case
    bounds = [0, *cuts, len(stream)]
    pieces = [stream[start:stop] for start, stop in itertools.pairwise(bounds)]
    assert feed_in_pieces(pieces) == requests
    assert resp.parse_requests(stream) == requests


# -- inline quoting, as Redis's sdssplitargs() -----------------------------------------


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"SET \"a b\" 'c\\'d'", [b"SET", b"a b", b"c'd"]),
        (b'ECHO "\\x41\\x4"', [b"ECHO", b"Ax4"]),
        (b'ECHO "a\\n\\r\\t\\b\\a\\qb"', [b"ECHO", b"a\n\r\t\b\aqb"]),
        (b"ECHO '' \"\"", [b"ECHO", b"", b""]),
        (b"  PING\t ", [b"PING"]),
        (b"a\x0bb", [b"a\x0bb"]),  # \v separates words only before one starts
    ],
)
def test_inline_quotes_and_escapes(line: bytes, words: list[bytes]) -> None:
    assert resp.split_inline(line) == words


@pytest.mark.parametrize("line", [b'GET "a', b"GET 'a", b'ECHO "a"b', b"ECHO 'a'b"])
def test_unbalanced_quotes_are_a_protocol_error(line: bytes) -> None:
    with pytest.raises(resp.ProtocolError, match="unbalanced quotes in request"):
        resp.split_inline(line)


# -- malformed input and the size bound ------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"*x\r\n", "invalid multibulk length"),
        (b"*01\r\n", "invalid multibulk length"),
        (b"*+1\r\n", "invalid multibulk length"),
        (b"*1 \r\n", "invalid multibulk length"),
        (b"*2\r\nfoo\r\n", "expected '$', got 'f'"),
        (b"*1\r\n$x\r\n", "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$04\r\nPING\r\n", "invalid bulk length"),
        (b"*1\r\n$3\r\nabcde\r\n", "expected CRLF after a bulk string"),
        (b'GET "a\r\n', "unbalanced quotes in request"),
    ],
)
def test_malformed_input_is_a_protocol_error(stream: bytes, message: str) -> None:
    parser = resp.RequestParser()
    parser.feed(stream)
    with pytest.raises(resp.ProtocolError) as caught:
        parser.next_request()
    assert str(caught.value) == message
    assert not isinstance(caught.value, resp.RequestTooLargeError)


def test_requests_before_the_malformed_one_are_parsed() -> None:
    parser = resp.RequestParser()
    parser.feed(b"PING\r\n" + encode(b"GET", b"k") + b"*x\r\n")
    assert parser.next_request() == [b"PING"]
    assert parser.next_request() == [b"GET", b"k"]
    with pytest.raises(resp.ProtocolError):
        parser.next_request()


def _too_large(pieces: list[bytes], max_request: int) -> None:
    with pytest.raises(resp.RequestTooLargeError, match=f"max-request \\({max_request} bytes\\)"):
        feed_in_pieces(pieces, max_request)


def test_a_declared_bulk_length_past_the_bound_is_refused_at_its_header() -> None:
    _too_large([b"*2\r\n$3\r\nSET\r\n$2000\r\n"], 1000)


def test_a_declared_element_count_past_the_bound_is_refused_at_its_header() -> None:
    _too_large([b"*200\r\n"], 1000)


def test_buffered_bytes_past_the_bound_are_refused() -> None:
    _too_large([b"GET " + b"k" * 600, b"k" * 600], 1000)  # an inline line, no end yet
    _too_large([b"*1\r\n$" + b"1" * 600, b"1" * 600], 1000)  # a bulk header, no end yet


def test_a_request_whose_parts_add_up_past_the_bound_is_refused() -> None:
    _too_large([encode(b"SET", b"k" * 400, b"v" * 400, b"x" * 400)], 1000)


def test_a_request_at_the_bound_is_accepted() -> None:
    request = next(
        request for size in range(1000) if len(request := encode(b"ECHO", b"x" * size)) == 1000
    )
    assert feed_in_pieces([request[:500], request[500:]], 1000) == [[b"ECHO", b"x" * 978]]
    _too_large([request[:-1]], 998)  # one byte more than the bound, still incomplete


def test_the_bound_counts_one_request_not_the_pipeline() -> None:
    stream = encode(b"SET", b"k", b"v" * 500) * 10
    assert len(feed_in_pieces([stream], 600)) == 10


# -- commands --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_words", "reply"),
    [
        ([b"PING"], b"+PONG\r\n"),
        ([b"ping", b"hi"], b"$2\r\nhi\r\n"),
        ([b"PING", b"a", b"b"], b"-ERR wrong number of arguments for 'ping' command\r\n"),
        ([b"ECHO", b""], b"$0\r\n\r\n"),
        ([b"ECHO"], b"-ERR wrong number of arguments for 'echo' command\r\n"),
        ([b"SET", b"k"], b"-ERR wrong number of arguments for 'set' command\r\n"),
        ([b"SET", b"k", b"v", b"EX"], b"-ERR syntax error\r\n"),
        ([b"GET", b"missing"], b"$-1\r\n"),
        ([b"DEL"], b"-ERR wrong number of arguments for 'del' command\r\n"),
        ([b"EXISTS"], b"-ERR wrong number of arguments for 'exists' command\r\n"),
        ([b"INCR", b"a", b"b"], b"-ERR wrong number of arguments for 'incr' command\r\n"),
        ([b"CONFIG"], b"-ERR wrong number of arguments for 'config' command\r\n"),
        ([b"CONFIG", b"GET"], b"-ERR wrong number of arguments for 'config|get' command\r\n"),
        ([b"config", b"get", b"save", b"appendonly"], b"*0\r\n"),
        ([b"CONFIG", b"FOO"], b"-ERR unknown subcommand 'FOO'. Try CONFIG HELP.\r\n"),
        ([b"COMMAND"], b"*0\r\n"),
        ([b"COMMAND", b"DOCS"], b"*0\r\n"),
        ([b"foo"], b"-ERR unknown command 'foo', with args beginning with: \r\n"),
        (
            [b"foo", b"a", b"b"],
            b"-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n",
        ),
        (
            [b"fo\r\no", b"x\ny"],
            b"-ERR unknown command 'fo  o', with args beginning with: 'x y' \r\n",
        ),
        (
            [b"foo", b"x" * 200, b"y"],
            b"-ERR unknown command 'foo', with args beginning with: '" + b"x" * 128 + b"' \r\n",
        ),
    ],
)
def test_command_replies(request_words: list[bytes], reply: bytes) -> None:
    assert resp.execute({}, request_words) == reply


def test_set_get_del_exists() -> None:
    store: dict[bytes, bytes] = {}
    assert resp.execute(store, [b"SET", b"k", b"v\r\n"]) == b"+OK\r\n"
    assert resp.execute(store, [b"get", b"k"]) == b"$3\r\nv\r\n\r\n"
    assert resp.execute(store, [b"EXISTS", b"k", b"k", b"nope"]) == b":2\r\n"
    assert resp.execute(store, [b"DEL", b"k", b"k", b"nope"]) == b":1\r\n"
    assert resp.execute(store, [b"GET", b"k"]) == b"$-1\r\n"


@pytest.mark.parametrize(
    ("value", "reply"),
    [
        (None, b":1\r\n"),
        (b"41", b":42\r\n"),
        (b"-1", b":0\r\n"),
        (b"-9223372036854775808", b":-9223372036854775807\r\n"),
        (b"9223372036854775806", b":9223372036854775807\r\n"),
        (b"9223372036854775807", b"-ERR increment or decrement would overflow\r\n"),
        (b"9223372036854775808", b"-ERR value is not an integer or out of range\r\n"),
        (b"-9223372036854775809", b"-ERR value is not an integer or out of range\r\n"),
        (b"abc", b"-ERR value is not an integer or out of range\r\n"),
        (b"", b"-ERR value is not an integer or out of range\r\n"),
        (b"01", b"-ERR value is not an integer or out of range\r\n"),
        (b"+1", b"-ERR value is not an integer or out of range\r\n"),
        (b"-0", b"-ERR value is not an integer or out of range\r\n"),
        (b" 1", b"-ERR value is not an integer or out of range\r\n"),
        (b"1_0", b"-ERR value is not an integer or out of range\r\n"),
        (b"9" * 5000, b"-ERR value is not an integer or out of range\r\n"),
    ],
)
def test_incr(value: bytes | None, reply: bytes) -> None:
    store = {} if value is None else {b"n": value}
    assert resp.execute(store, [b"INCR", b"n"]) == reply
    if reply.startswith(b":"):
        assert store[b"n"] == reply[1:-2]  # stored as its decimal text, as Redis does
    else:
        assert store.get(b"n") == value  # an error changes nothing


# -- the protocol on a transport ---------------------------------------------------------


class FakeTransport:
    """Records writes; calls ``pause_writing()`` past ``high`` unsent bytes, as the layer does."""

    def __init__(self, protocol: Any, high: int) -> None:
        self.protocol = protocol
        self.high = high
        self.written = bytearray()
        self.unsent = 0
        self.paused = False
        self.closed = False

    def write(self, data: bytes) -> None:
        assert type(data) is bytes
        if self.closed:
            return
        self.written += data
        self.unsent += len(data)
        if self.unsent > self.high and not self.paused:
            self.paused = True
            self.protocol.pause_writing()

    def drain(self) -> None:
        self.unsent = 0
        if self.paused:
            self.paused = False
            self.protocol.resume_writing()

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _connected(high: int = 1 << 30, max_request: int = resp.DEFAULT_MAX_REQUEST) -> Any:
    protocol = resp.RespProtocol({}, max_request)
    transport = FakeTransport(protocol, high)
    protocol.connection_made(transport)
    return protocol, transport


def test_pipelined_replies_are_one_write_in_order() -> None:
    protocol, transport = _connected()
    protocol.data_received(b"SET a 1\r\nINCR a\r\n" + encode(b"GET", b"a") + b"PING\r\n")
    assert bytes(transport.written) == b"+OK\r\n:2\r\n$1\r\n2\r\n+PONG\r\n"


def test_quit_replies_then_closes_and_ignores_the_rest() -> None:
    protocol, transport = _connected()
    protocol.data_received(b"PING\r\nquit\r\nSET a 1\r\n")
    assert bytes(transport.written) == b"+PONG\r\n+OK\r\n"
    assert transport.closed


def test_a_protocol_error_replies_after_the_good_requests_then_closes() -> None:
    protocol, transport = _connected()
    protocol.data_received(b"PING\r\n*2\r\n\xffoo\r\nPING\r\n")
    assert bytes(transport.written) == b"+PONG\r\n-ERR Protocol error: expected '$', got '\xff'\r\n"
    assert transport.closed


def test_a_request_past_the_bound_gets_an_error_then_closes() -> None:
    protocol, transport = _connected(max_request=100)
    protocol.data_received(b"*2\r\n$4\r\nECHO\r\n$200\r\n")
    assert bytes(transport.written) == (
        b"-ERR Protocol error: request larger than max-request (100 bytes)\r\n"
    )
    assert transport.closed


def test_no_request_runs_while_writing_is_paused() -> None:
    value = b"v" * 100_000
    protocol, transport = _connected(high=150_000)
    protocol.data_received(encode(b"SET", b"big", value))
    gets = encode(b"GET", b"big") * 10
    protocol.data_received(gets + b"PING\r\n")
    reply = b"$100000\r\n" + value + b"\r\n"
    # The layer paused writing after the second reply: the rest wait unparsed.
    assert bytes(transport.written) == b"+OK\r\n" + reply * 2
    assert transport.paused
    transport.drain()  # resume_writing(): two more, then paused again
    assert bytes(transport.written) == b"+OK\r\n" + reply * 4
    for _ in range(10):
        if not transport.paused:
            break
        transport.drain()
    assert bytes(transport.written) == b"+OK\r\n" + reply * 10 + b"+PONG\r\n"


def test_one_request_per_read_is_answered_in_order_and_waits_while_paused() -> None:
    value = b"v" * 100_000
    reply = b"$100000\r\n" + value + b"\r\n"
    protocol, transport = _connected(high=50_000)
    protocol.data_received(encode(b"SET", b"big", value))
    protocol.data_received(encode(b"GET", b"big"))  # this one reply passes the high-water mark
    assert transport.paused
    protocol.data_received(b"PING\r\n")  # held until resume_writing()
    assert bytes(transport.written) == b"+OK\r\n" + reply
    transport.drain()
    protocol.data_received(b"get big\r\n")  # a lower-case name takes the general loop
    transport.drain()
    protocol.data_received(b"NOPE\r\n")
    assert bytes(transport.written) == (
        b"+OK\r\n"
        + reply
        + b"+PONG\r\n"
        + reply
        + b"-ERR unknown command 'NOPE', with args beginning with: \r\n"
    )
    assert not transport.closed
    protocol.data_received(b"QUIT\r\n")
    assert transport.closed
    assert bytes(transport.written).endswith(b"+OK\r\n")


def test_max_request_is_read_only() -> None:
    parser = resp.RequestParser(100)
    assert parser.max_request == 100
    with pytest.raises(AttributeError):
        parser.max_request = 200
