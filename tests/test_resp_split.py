"""The RESP parser's split path against its careful path, and the ``take()`` contract.

``RequestParser`` parses a read either by one ``bytes.split()`` and table
lookups (the split path, the default) or byte by byte (the careful path,
``split=False``).  The two must be indistinguishable: the same requests, the
same ``buffered()`` after every read, the same error at the same point.
These tests feed both the same streams -- well-formed ones built of every
kind of request the split path takes or must leave to the careful one, and
malformed ones -- cut into arbitrary reads, and drain them every way a
caller can (``next_request()``, ``take()`` while ``more``, ``put_back()``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resp_helpers import load_resp_server
from test_resp_parser import FakeTransport, encode

resp = load_resp_server()

#: Calls one read may need: far more than any stream here holds requests.
_MAX_CALLS = 10_000

Request = list[bytes]
#: What one parser did with a stream: per read, the requests then buffered(), or the error.
Events = list[tuple[Any, ...]]


# -- streams ---------------------------------------------------------------------------

#: Bytes that make a value interesting to a parser that splits at CRLF.
_value_piece = st.sampled_from([b"x", b"\r", b"\n", b"\r\n", b"$1", b"*2", b" ", b"\x00", b"ab"])
_short_value = st.one_of(st.binary(max_size=12), st.lists(_value_piece, max_size=6).map(b"".join))

#: Lengths around the split path's table bound (1024) and a few ordinary ones.
_long_size = st.one_of(
    st.sampled_from([0, 1, 99, 1000, 1022, 1023, 1024, 1025, 1026, 1100]),
    st.integers(0, 1100),
)


@st.composite
def _long_value(draw: st.DrawFn) -> bytes:
    """A value of 0..1100 bytes, maybe holding CR, LF or CRLF somewhere."""
    size = draw(_long_size)
    value = bytearray(b"v" * size)
    if size:
        for _ in range(draw(st.integers(0, 3))):
            where = draw(st.integers(0, size - 1))
            mark = draw(st.sampled_from([b"\r\n", b"\r", b"\n"]))[: size - where]
            value[where : where + len(mark)] = mark
    assert len(value) == size
    return bytes(value)


@st.composite
def _array(draw: st.DrawFn) -> tuple[bytes, list[Request]]:
    """An array of 1..70 bulk strings (the split path's tables stop at 64)."""
    count = draw(st.one_of(st.integers(1, 5), st.sampled_from([6, 63, 64, 65, 70])))
    if count <= 5 and draw(st.booleans()):
        values = [
            draw(_long_value() if draw(st.integers(0, 2)) == 0 else _short_value)
            for _ in range(count)
        ]
    else:
        values = draw(st.lists(_short_value, min_size=count, max_size=count))
    return encode(*values), [values]


_empty_array = st.sampled_from([b"*0\r\n", b"*-1\r\n", b"*-2\r\n"]).map(
    lambda encoded: (encoded, list[Request]())
)

_line_end = st.sampled_from([b"\r\n", b"\r\n", b"\n"])
# A plain word: no blank, quote or NUL; it may hold '*' or '$' past the line's start.
_plain_word = st.from_regex(rb"\A[A-Za-z0-9_:.*$-]{1,8}\Z")
_command_word = st.from_regex(rb"\A[A-Za-z]{1,8}\Z")
_separator = st.sampled_from([b" ", b"  ", b"\t", b" \t", b"\r"])
_quoted_word = st.sampled_from(
    [b'"a b"', b"'c d'", b'"x\\ny"', b'""', b"''", b'"\\x41\\x4"', b"'it\\'s'", b'"q\\"r"']
)


@st.composite
def _inline(draw: st.DrawFn) -> tuple[bytes, list[Request]]:
    """An inline line: plain, quoted, with rare blanks, blank, LF- or CRLF-ended."""
    kind = draw(st.sampled_from(["plain", "quoted", "rare", "blank", "star", "long"]))
    if kind == "blank":
        line = draw(st.sampled_from([b"", b" ", b"   ", b"\t", b"\r", b" \t "]))
    elif kind == "star":
        line = b" *3 " + draw(_plain_word)  # a leading blank: inline, not an array
    elif kind == "long":
        line = b"ECHO " + b"w" * draw(_long_size)
    else:
        words = [draw(_command_word)]
        words += draw(
            st.lists(
                _quoted_word if kind == "quoted" and draw(st.booleans()) else _plain_word,
                max_size=4,
            )
        )
        if kind == "quoted":
            words.append(draw(_quoted_word))
        line = words[0]
        for word in words[1:]:
            line += draw(_separator) + word
        if kind == "rare":
            line = draw(st.sampled_from([b"\x0b", b"\x0c", b" ", b""])) + line
            line += draw(st.sampled_from([b"\x0b", b"\x0c", b"\x00"])) + draw(_plain_word)
    # The careful path's own splitter is the reference for the words (it is
    # tested against Redis's sdssplitargs() in test_resp_parser.py).
    words = resp.split_inline(line)
    if kind in ("plain", "blank", "star", "long"):
        assert words == line.split()
    return line + draw(_line_end), [words] if words else []


_quit = st.sampled_from(
    [
        (b"QUIT\r\n", [[b"QUIT"]]),
        (b"quit\n", [[b"quit"]]),
        (b"QuIt now\r\n", [[b"QuIt", b"now"]]),
        (encode(b"QUIT"), [[b"QUIT"]]),
        (encode(b"quit", b"x"), [[b"quit", b"x"]]),
    ]
)
_request = st.one_of(_array(), _array(), _inline(), _inline(), _empty_array, _quit)


@st.composite
def _stream(draw: st.DrawFn) -> tuple[bytes, list[Request], list[bytes], list[bytes]]:
    """Requests of every kind, their bytes, those bytes cut into reads, and each one's bytes.

    Cuts fall anywhere, between the requests, and between a CR and its LF.
    """
    encoded: list[bytes] = []
    requests: list[Request] = []
    starts: list[int] = []
    size = 0
    for request_bytes, request in draw(st.lists(_request, max_size=16)):
        starts.append(size)
        encoded.append(request_bytes)
        requests.extend(request)
        size += len(request_bytes)
    stream = b"".join(encoded)
    lfs = [i for i in range(1, len(stream)) if stream[i - 1 : i + 1] == b"\r\n"]
    places = st.integers(0, len(stream))
    if starts:
        places = st.one_of(places, st.sampled_from(starts))
    if lfs:
        places = st.one_of(places, st.sampled_from(lfs))
    cuts = sorted(set(draw(st.lists(places, max_size=12))))
    bounds = [0, *cuts, len(stream)]
    pieces = [stream[start:stop] for start, stop in itertools.pairwise(bounds)]
    return stream, requests, [piece for piece in pieces if piece] or [stream], encoded


# -- draining a parser every way a caller can ------------------------------------------


def _drain_next(parser: Any, piece: bytes, out: list[Request]) -> None:
    """``feed()``, then ``next_request()`` until None."""
    parser.feed(piece)
    for _ in range(_MAX_CALLS):
        request = parser.next_request()
        if request is None:
            return
        out.append(request)
    raise AssertionError("next_request() never returned None")


def _drain_take(parser: Any, piece: bytes, out: list[Request]) -> None:
    """``take(piece)``, then ``take()`` while ``more``; checks ``more`` on the way."""
    batch = parser.take(piece)
    out += batch
    assert batch or not parser.more, "take() returned [] with more still true"
    for _ in range(_MAX_CALLS):
        if not parser.more:
            break
        batch = parser.take()
        assert batch or not parser.more, "take() returned [] with more still true"
        out += batch
    else:
        raise AssertionError("more never became false")
    assert parser.take() == [], "more was false, yet take() returned requests"
    assert not parser.more


Drain = Callable[[Any, bytes, list[Request]], None]


def _drainer(choices: Any) -> Drain:
    """A caller mixing ``take()``, ``next_request()`` and ``put_back()``, as ``choices`` say."""

    def drain(parser: Any, piece: bytes, out: list[Request]) -> None:
        if choices.draw(st.booleans(), label="take(piece)"):
            batch = parser.take(piece)
        else:
            parser.feed(piece)
            batch = []
        for _ in range(_MAX_CALLS):
            if batch:
                # Handle some, put the rest back, as RespProtocol does when paused.
                done = choices.draw(st.integers(0, len(batch)), label="handled")
                out += batch[:done]
                parser.put_back(batch[done:])
            if choices.draw(st.booleans(), label="take()"):
                batch = parser.take()
                if not batch:
                    assert not parser.more
                    return
            else:
                request = parser.next_request()
                if request is None:
                    return
                batch = [request]
        raise AssertionError("the parser never ran dry")

    return drain


def _run(parser: Any, pieces: list[bytes], drain: Drain) -> Events:
    """Per read: the requests drained then ``buffered()``; an error ends it.

    Every request before a malformed one is returned first, so the requests
    drained from the read that failed are compared too.
    """
    events: Events = []
    for index, piece in enumerate(pieces):
        out: list[Request] = []
        try:
            drain(parser, piece, out)
        except resp.ProtocolError as exc:
            events.append(("requests", index, out))
            events.append(("error", index, type(exc).__name__, str(exc)))
            return events
        events.append(("requests", index, out))
        events.append(("buffered", index, parser.buffered()))
    return events


def _careful(max_request: int) -> Any:
    return resp.RequestParser(max_request, split=False)


def _split(max_request: int) -> Any:
    return resp.RequestParser(max_request)


def _all_ways(pieces: list[bytes], max_request: int) -> dict[str, Events]:
    return {
        "careful next_request": _run(_careful(max_request), pieces, _drain_next),
        "split next_request": _run(_split(max_request), pieces, _drain_next),
        "careful take": _run(_careful(max_request), pieces, _drain_take),
        "split take": _run(_split(max_request), pieces, _drain_take),
    }


# -- the differential tests ------------------------------------------------------------


@pytest.mark.timeout(60)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_stream(), st.data())
def test_both_paths_give_the_same_requests_and_buffered_after_every_read(
    case: tuple[bytes, list[Request], list[bytes], list[bytes]], choices: st.DataObject
) -> None:
    _, requests, pieces, encoded = case
    # Each request alone, as a read: the split path sees it first, whatever follows.
    for request_bytes in encoded:
        alone = [request_bytes]
        reference = _run(_careful(resp.DEFAULT_MAX_REQUEST), alone, _drain_next)
        assert _run(_split(resp.DEFAULT_MAX_REQUEST), alone, _drain_take) == reference
    ways = _all_ways(pieces, resp.DEFAULT_MAX_REQUEST)
    reference = ways.pop("careful next_request")
    parsed = [request for event in reference if event[0] == "requests" for request in event[2]]
    assert parsed == requests
    assert reference[-1] == ("buffered", len(pieces) - 1, 0)
    for way, events in ways.items():
        assert events == reference, way
    # A caller that handles part of each batch and puts the rest back.
    for parser in (_split, _careful):
        mixed = _run(parser(resp.DEFAULT_MAX_REQUEST), pieces, _drainer(choices))
        assert mixed == reference, parser.__name__


_interesting_byte = st.sampled_from(b"\r\n*$0123-: \"'\\\x00\x0b\x0cxA")


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A well-formed stream with a few bytes replaced, inserted or deleted."""
    stream, *_ = draw(_stream())
    data = bytearray(stream)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(data)))
        byte = draw(st.one_of(_interesting_byte, st.integers(0, 255)))
        # Headers: a '*' or '$' that starts a line.
        headers = [
            i + 1
            for i, char in enumerate(data)
            if char in b"*$" and (i == 0 or data[i - 1] == 0x0A)
        ]
        match draw(st.sampled_from(["replace", "insert", "delete", "respell"])):
            case "respell" if headers:
                # A non-canonical number: "$03", "*+2", "$ 1", "$-0"...
                where = draw(st.sampled_from(headers))
                data[where:where] = draw(st.sampled_from([b"0", b"+", b"-", b" ", b"-0"]))
            case "insert":
                data.insert(where, byte)
            case "replace" if where < len(data):
                data[where] = byte
            case "delete" if where < len(data):
                del data[where]
            case _:
                data.append(byte)
    return bytes(data)


_noise = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.sampled_from(
            [
                b"\r\n",
                b"*",
                b"*1",
                b"*2",
                b"*01",
                b"$",
                b"$0",
                b"$3",
                b"$01",
                b"$+1",
                b"$-1",
                b"1 ",
                b"abc",
                b" ",
                b'"',
            ]
        ),
        max_size=40,
    ).map(b"".join),
)


@st.composite
def _cut(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=8))))
    bounds = [0, *cuts, len(data)]
    pieces = [data[start:stop] for start, stop in itertools.pairwise(bounds)]
    return [piece for piece in pieces if piece] or [data]


@pytest.mark.timeout(60)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(_mutated(), _noise).flatmap(_cut),
    st.one_of(st.integers(10, 2000), st.just(resp.DEFAULT_MAX_REQUEST)),
    st.data(),
)
def test_both_paths_fail_the_same_way_at_the_same_point(
    pieces: list[bytes], max_request: int, choices: st.DataObject
) -> None:
    ways = _all_ways(pieces, max_request)
    reference = ways.pop("careful next_request")
    for way, events in ways.items():
        assert events == reference, way
    for parser in (_split, _careful):
        mixed = _run(parser(max_request), pieces, _drainer(choices))
        assert mixed == reference, parser.__name__


# -- the take() contract ---------------------------------------------------------------


def _sets(count: int, start: int = 0) -> list[Request]:
    return [[b"SET", b"key:%d" % i, b"value-%d" % i] for i in range(start, start + count)]


def _encoded(requests: list[Request]) -> bytes:
    return b"".join(encode(*request) for request in requests)


@pytest.mark.timeout(10)
def test_one_take_returns_every_pipelined_request() -> None:
    parser = resp.RequestParser()
    assert parser.take(_encoded(_sets(16))) == _sets(16)
    assert not parser.more
    assert parser.buffered() == 0
    assert parser.take() == []


@pytest.mark.timeout(10)
def test_a_crlf_in_a_value_hands_the_rest_to_the_careful_path() -> None:
    requests = [*_sets(7), [b"SET", b"crlf", b"a\r\nb"], *_sets(8, 8)]
    parser = resp.RequestParser()
    assert parser.take(_encoded(requests)) == requests[:7]
    assert parser.more
    assert parser.buffered() == len(_encoded(requests[7:]))  # exactly the requests not taken
    assert parser.take() == [requests[7]]  # the careful path's
    assert parser.more
    assert parser.buffered() == len(_encoded(requests[8:]))
    rest: list[Request] = []
    for _ in range(len(requests)):
        if not parser.more:
            break
        rest += parser.take()
    assert rest == requests[8:]
    assert not parser.more
    assert parser.buffered() == 0


@pytest.mark.timeout(10)
def test_an_empty_take_leaves_more_false() -> None:
    parser = resp.RequestParser()
    assert parser.take() == []
    assert not parser.more
    stream = _encoded(_sets(3))
    assert parser.take(stream[:-1]) == _sets(2)  # the third lacks its last LF
    assert parser.more  # the tail may hold an LF-ended line: look again
    assert parser.take() == []
    assert not parser.more
    assert parser.take(b"") == []
    assert not parser.more
    assert parser.take(stream[-1:]) == _sets(1, 2)


@pytest.mark.timeout(10)
def test_put_back_requests_come_first_in_their_order() -> None:
    parser = resp.RequestParser()
    batch = parser.take(_encoded(_sets(16)))
    parser.put_back(batch[10:])
    parser.put_back(batch[4:10])  # put back later, yet earlier in the stream
    parser.feed(_encoded(_sets(2, 16)))
    assert parser.more or parser.buffered()
    taken: list[Request] = []
    for _ in range(10):
        got = parser.take()
        if not got:
            break
        taken += got
    assert taken == _sets(14, 4)
    assert not parser.more
    parser.put_back([])
    assert parser.take() == []


@pytest.mark.timeout(10)
def test_more_is_true_after_put_back() -> None:
    parser = resp.RequestParser()
    batch = parser.take(_encoded(_sets(16)))
    assert not parser.more
    parser.put_back(batch[5:])
    assert parser.more  # take() returns them without new bytes
    assert parser.take() == _sets(11, 5)


@pytest.mark.timeout(10)
def test_more_is_true_while_next_request_holds_requests_parsed_ahead() -> None:
    parser = resp.RequestParser()
    parser.feed(_encoded(_sets(16)))
    assert parser.next_request() == _sets(1)[0]
    assert parser.more  # take() returns the other 15 without new bytes
    assert parser.take() == _sets(15, 1)


@pytest.mark.timeout(10)
def test_next_request_after_a_batch_from_take() -> None:
    requests = [*_sets(7), [b"ECHO", b"x\r\ny"], *_sets(5, 8)]
    stream = _encoded(requests)
    parser = resp.RequestParser()
    assert parser.take(stream) == requests[:7]
    one_by_one = []
    while (request := parser.next_request()) is not None:
        one_by_one.append(request)
        assert len(one_by_one) <= len(requests)
    assert one_by_one == requests[7:]
    # next_request() first: the split path parses the read ahead, take() gets the rest.
    parser = resp.RequestParser()
    assert parser.next_request() is None
    parser.feed(_encoded(_sets(16)))
    assert parser.next_request() == _sets(1)[0]
    assert parser.buffered() == 0  # parsed ahead counts as parsed
    assert parser.take() == _sets(15, 1)
    assert parser.next_request() is None


@pytest.mark.timeout(10)
def test_buffered_counts_exactly_the_unparsed_tail() -> None:
    parser = resp.RequestParser()
    assert parser.take(_encoded(_sets(16))) == _sets(16)
    assert parser.buffered() == 0
    tail = encode(b"SET", b"k", b"v" * 100)
    for cut in (1, 10, len(tail) - 1):
        parser = resp.RequestParser()
        assert parser.take(_encoded(_sets(16)) + tail[:cut]) == _sets(16)
        while parser.more:
            assert parser.take() == []
        assert parser.buffered() == cut
        parser.feed(tail[cut:-1])  # the careful path now holds part of the request
        assert parser.take() == []
        assert parser.buffered() == len(tail) - 1
        assert parser.take(tail[-1:]) == [[b"SET", b"k", b"v" * 100]]
        assert parser.buffered() == 0


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "stream",
    [
        _encoded(_sets(3)) + b"*x\r\n" + _encoded(_sets(2)),
        _encoded(_sets(3)) + b"*1\r\n$3\r\nabcd\r\n",
        _encoded(_sets(3)) + b'GET "a\r\n',
        _encoded(_sets(3)) + b"*1\r\n$2000\r\n",
    ],
)
def test_the_requests_before_a_malformed_one_come_first(stream: bytes) -> None:
    parser = resp.RequestParser(1000)
    assert parser.take(stream) == _sets(3)
    assert parser.more
    with pytest.raises(resp.ProtocolError):
        parser.take()


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("request_bytes", "message"),
    [
        (b"*01\r\n$1\r\nx\r\n", "invalid multibulk length"),
        (b"*+1\r\n$1\r\nx\r\n", "invalid multibulk length"),
        (b"*1 \r\n$1\r\nx\r\n", "invalid multibulk length"),
        (b"*1\r\n$01\r\nx\r\n", "invalid bulk length"),
        (b"*1\r\n$+1\r\nx\r\n", "invalid bulk length"),
        (b"*1\r\n$ 1\r\nx\r\n", "invalid bulk length"),
        (b"*1\r\n$-0\r\n\r\n", "invalid bulk length"),
        (b"*2\r\n$1\r\nx\r\n$001\r\ny\r\n", "invalid bulk length"),
    ],
)
def test_a_header_spelled_non_canonically_is_refused_by_both_paths(
    request_bytes: bytes, message: str
) -> None:
    stream = _encoded(_sets(2)) + request_bytes + _encoded(_sets(2, 2))
    for parser in (_split(resp.DEFAULT_MAX_REQUEST), _careful(resp.DEFAULT_MAX_REQUEST)):
        taken: list[Request] = []
        with pytest.raises(resp.ProtocolError) as caught:
            _drain_take(parser, stream, taken)
        assert taken == _sets(2)
        assert str(caught.value) == message


# -- the protocol, paused mid-batch ----------------------------------------------------


def _paused(transport: FakeTransport) -> bool:
    return transport.paused  # a call: mypy would keep an assert's narrowing across drain()


@pytest.mark.timeout(20)
def test_a_batch_paused_mid_way_runs_each_request_once_in_order_after_resume() -> None:
    values = [b"%04d" % i + b"e" * 996 for i in range(100)]
    stream = b"".join(encode(b"ECHO", value) for value in values)
    assert len(resp.RequestParser().take(stream)) == 100  # one batch: the split path
    store: dict[bytes, bytes] = {}
    protocol = resp.RespProtocol(store)
    transport = FakeTransport(protocol, high=50_000)
    protocol.connection_made(transport)
    protocol.data_received(stream)
    replies = [b"$1000\r\n" + value + b"\r\n" for value in values]
    written = bytes(transport.written)
    # Paused by the first write of a 64 KiB batch: the rest wait in the parser.
    assert transport.paused
    assert 0 < len(written) < len(b"".join(replies))
    assert b"".join(replies).startswith(written)
    assert written.endswith(b"\r\n")
    # More arrives while paused: nothing runs, nothing is written.
    protocol.data_received(encode(b"SET", b"late", b"1") + b"PING\r\n")
    assert bytes(transport.written) == written
    assert store == {}
    for _ in range(100):
        transport.drain()  # resume_writing(), once the layer sent what it held
        if not _paused(transport):
            break
    assert not _paused(transport)
    assert bytes(transport.written) == b"".join(replies) + b"+OK\r\n+PONG\r\n"
    assert store == {b"late": b"1"}
    assert not transport.closed
