"""Server layer, line 1: bytes are never lost, reordered or duplicated;
``write()`` sends at once what the kernel takes and buffers the rest; WRITE
interest is asked for only while output is pending.

Driven through the layer with protocols that are not echo: upper-cased
lines, length-prefixed frames answered with their CRC (through
``data_received`` and through ``BufferedProtocol`` with tiny buffers), and a
producer of large replies.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable

import pytest

from echo_helpers import connect, exchange, ipv6_loopback_works, read_to_eof, recv_exactly
from pollkit import Events, Poller
from pollkit.server import BufferedProtocol, Protocol, Server, Transport
from server_helpers import (
    BufferedFrameCounter,
    CallLog,
    FrameCounter,
    Producer,
    Recorder,
    UpperLines,
    check_lifecycle,
    frame,
    frame_replies,
    lines_payload,
    on_loop,
    pattern,
    running,
    serving,
    settle,
)

WRITE = int(Events.WRITE)
CLIENTS = 4


def random_sizes(seed: int, largest: int) -> Callable[[], int]:
    rng = random.Random(seed)
    return lambda: rng.randrange(1, largest + 1)


@pytest.mark.timeout(60)
def test_lines_come_back_upper_cased_byte_for_byte(poller: Poller) -> None:
    payloads = [lines_payload(seed, 150_000) for seed in range(CLIENTS)]
    with serving(poller, UpperLines) as server:
        socks = [connect(server.address) for _ in payloads]
        try:
            replies = exchange(
                socks,
                payloads,
                chunk_sizes=random_sizes(1, 9000),
                recv_sizes=random_sizes(2, 5000),
            )
        finally:
            for sock in socks:
                sock.close()
    for payload, reply in zip(payloads, replies, strict=True):
        assert reply == payload.upper()


def frames_for(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    # At least 4 bytes each, so that no reply (8 bytes) is longer than its request.
    return [rng.randbytes(rng.randrange(4, 5000)) for _ in range(count)]


@pytest.mark.parametrize(
    "factory",
    [FrameCounter, BufferedFrameCounter],
    ids=["data_received", "buffered"],
)
@pytest.mark.timeout(60)
def test_frames_are_answered_in_order_byte_for_byte(
    poller: Poller, factory: Callable[[], Protocol | BufferedProtocol]
) -> None:
    frames = [frames_for(seed, 60) for seed in range(CLIENTS)]
    requests = [b"".join(frame(payload) for payload in group) for group in frames]
    with serving(poller, factory) as server:
        socks = [connect(server.address) for _ in requests]
        try:
            replies = exchange(socks, requests, chunk_sizes=random_sizes(3, 3000))
        finally:
            for sock in socks:
                sock.close()
    for group, reply in zip(frames, replies, strict=True):
        assert reply == frame_replies(group)


@pytest.mark.timeout(60)
def test_buffered_protocol_sizes_are_honoured(poller: Poller) -> None:
    made: list[BufferedFrameCounter] = []

    def factory() -> BufferedFrameCounter:
        made.append(BufferedFrameCounter(seed=5, largest=13))
        return made[-1]

    payloads = frames_for(11, 40)
    with serving(poller, factory) as server, connect(server.address) as sock:
        sock.sendall(b"".join(frame(payload) for payload in payloads))
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == frame_replies(payloads)
    (protocol,) = made
    assert protocol.reads, "get_buffer() was never called"
    for sizehint, offered, written in protocol.reads:
        assert isinstance(sizehint, int)
        assert 0 < written <= offered or written == -1  # -1: asked, but EOF came
    # Every byte went through a buffer of at most 13 bytes.
    total = sum(written for _, _, written in protocol.reads if written > 0)
    assert total == sum(len(frame(payload)) for payload in payloads)


@pytest.mark.timeout(60)
def test_large_replies_arrive_whole_and_in_order(poller: Poller) -> None:
    asks = [1, 3_000_000, 0, 17, 2_500_000, 65536]
    with (
        serving(poller, Producer, max_buffer=128 * 1024) as server,
        connect(server.address, rcvbuf=16384) as sock,
    ):
        sock.sendall(b"".join(b"%d\n" % count for count in asks))
        sock.shutdown(socket.SHUT_WR)
        reply = read_to_eof(sock)
    assert len(reply) == sum(asks)
    assert reply == pattern(0, sum(asks))


@pytest.mark.timeout(30)
def test_write_sends_at_once_what_the_kernel_takes(poller: Poller) -> None:
    def reply(protocol: Recorder, data: bytes) -> None:
        assert protocol.transport is not None
        protocol.transport.write(b"seen %d\n" % len(data))
        protocol.notes["buffered after write"] = protocol.transport.get_write_buffer_size()

    log = CallLog(data_received=reply)
    with serving(poller, log.factory) as server, connect(server.address) as sock:
        sock.sendall(b"hello")
        assert recv_exactly(sock, 7) == b"seen 5\n"
        (protocol,) = log.wait_protocols(1)
    # A short write to an idle socket is in the kernel before write() returns.
    assert protocol.notes["buffered after write"] == 0
    check_lifecycle(protocol)


@pytest.mark.timeout(60)
def test_write_interest_only_while_output_is_pending(poller: Poller) -> None:
    made: list[Producer] = []

    def factory() -> Producer:
        made.append(Producer())
        return made[-1]

    with (
        serving(poller, factory, max_buffer=64 * 1024, socket_buffer=16384) as server,
        connect(server.address, rcvbuf=8192) as sock,
    ):
        sock.sendall(b"10\n")
        assert recv_exactly(sock, 10) == pattern(0, 10)
        (protocol,) = made

        def interest() -> tuple[int, int]:
            transport = protocol.transport
            assert transport is not None
            fd = transport.get_extra_info("socket").fileno()
            return poller.get_registration(fd).events, transport.get_write_buffer_size()

        settle(server)
        events, pending = on_loop(server, interest)
        assert pending == 0
        assert not events & WRITE, f"WRITE interest with nothing to send: {Events(events)!r}"

        # A reply far larger than the socket buffers: the rest waits in the layer.
        big = 4 * 1024 * 1024
        sock.sendall(b"%d\n" % big)
        first = recv_exactly(sock, 1)  # the reply has started
        events, pending = on_loop(server, interest)
        assert pending > 0
        assert events & WRITE, f"output pending but no WRITE interest: {Events(events)!r}"

        rest = recv_exactly(sock, big - 1)
        assert first + rest == pattern(10, big)
        settle(server)
        events, pending = on_loop(server, interest)
        assert pending == 0
        assert not events & WRITE, f"WRITE interest kept after the drain: {Events(events)!r}"


@pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback (::1) here")
@pytest.mark.timeout(30)
def test_ipv6_lines_come_back_byte_for_byte(poller: Poller) -> None:
    payload = lines_payload(21, 200_000)
    with serving(poller, UpperLines, host="::1") as server:
        assert server.address[0] == "::1"
        with connect(server.address) as sock:
            (reply,) = exchange([sock], [payload])
    assert reply == payload.upper()


@pytest.mark.timeout(30)
def test_extra_info_names_both_ends(poller: Poller) -> None:
    def note(protocol: Recorder, transport: Transport) -> None:
        protocol.notes["peername"] = transport.get_extra_info("peername")
        protocol.notes["sockname"] = transport.get_extra_info("sockname")
        protocol.notes["socket"] = transport.get_extra_info("socket").getsockname()
        protocol.notes["other"] = transport.get_extra_info("no such thing", "default")

    log = CallLog(connection_made=note)
    with serving(poller, log.factory) as server, connect(server.address) as sock:
        (protocol,) = log.wait_protocols(1)
        log.wait(lambda: len(protocol.notes) == 4, "connection_made() has returned")
        assert protocol.notes == {
            "peername": sock.getsockname(),
            "sockname": server.address,
            "socket": server.address,
            "other": "default",
        }


@pytest.mark.timeout(30)
def test_two_servers_share_a_port_with_reuse_port(poller_factory: Callable[[], Poller]) -> None:
    first_poller, second_poller = poller_factory(), poller_factory()
    with (
        serving(first_poller, UpperLines, reuse_port=True) as first,
        Server(second_poller, UpperLines, "127.0.0.1", first.address[1], reuse_port=True) as second,
        running(second, second_poller),
    ):
        assert second.address == first.address
        for index in range(8):  # whichever server the kernel picks answers
            with connect(first.address) as sock:
                sock.sendall(b"line %d\n" % index)
                assert recv_exactly(sock, 7) == b"LINE %d\n" % index
        assert first.stats().accepted + second.stats().accepted == 8
