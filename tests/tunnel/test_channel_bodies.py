"""Channel bodies counted past h11 (:mod:`tunnel.bodies`) and the client's channel core
(:mod:`tunnel.client_channel`) with bytes only: a proxy's OUT answer fed whole, byte by
byte, with trailing bytes and cut at random (hypothesis) gives the same body, ends
exactly at its Content-Length and refuses what follows; the IN body stops at its own."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel import rts
from tunnel.bodies import BodyReader, BodyWriter, framing_length
from tunnel.client_channel import ClientChannel, channel_request, error_from
from tunnel.errors import TunnelError

OUT_HEAD = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nContent-Length: %d\r\n\r\n"
)
BODY = rts.conn_a3(120000) + rts.conn_c2(65536, 120000) + b"\x05" * 300


def out_channel() -> ClientChannel:
    channel = ClientChannel()
    channel.send(channel_request("RPC_OUT_DATA", "/rpc/rpcproxy.dll?x:1", "x", "Basic eA==", 76))
    return channel


def read_out(channel: ClientChannel, chunks: list[bytes]) -> bytes:
    """The response body read from ``chunks`` as the driver reads them."""
    chunks = list(chunks)
    events: list[object] = []
    while not any(isinstance(e, h11.Response) for e in events):
        event = channel.next_event()
        if event is None:
            channel.receive_data(chunks.pop(0))
        else:
            events.append(event)
    body = b""
    while True:
        data = channel.next_body()
        if data is None:
            channel.receive_data(chunks.pop(0) if chunks else b"")
        elif data == b"":
            return body
        else:
            body += data


def test_framing_length_is_content_length_alone() -> None:
    assert framing_length({"content-length": "76"}) == 76
    assert framing_length({"content-length": "76", "transfer-encoding": "chunked"}) is None
    assert framing_length({"content-length": "7x"}) is None
    assert framing_length({}) is None


def test_a_body_reader_splits_at_the_end() -> None:
    conn = h11.Connection(h11.CLIENT)
    reader = BodyReader(10)
    reader.delivered(4)
    assert not reader.bypass(conn)  # h11 is not inside a body
    reader.left = 6
    assert reader.split(b"abc") == (b"abc", b"") and reader.left == 3
    assert reader.split(b"defgh") == (b"def", b"gh") and reader.left == 0
    writer = BodyWriter(5)
    assert writer.take(5) and not writer.take(1)


@pytest.mark.parametrize("cuts", ["whole", "bytewise"])
def test_the_out_body_is_the_same_however_it_is_cut(cuts: str) -> None:
    wire = OUT_HEAD % len(BODY) + BODY
    chunks = [wire] if cuts == "whole" else [wire[i : i + 1] for i in range(len(wire))]
    assert read_out(out_channel(), chunks) == BODY


def test_bytes_after_the_out_body_are_refused() -> None:
    channel = out_channel()
    head = OUT_HEAD % len(BODY)
    with pytest.raises(TunnelError, match="after the response body"):
        read_out(channel, [head + BODY[:10], BODY[10:] + b"junk"])


def test_the_end_of_the_connection_inside_the_out_body_is_an_error() -> None:
    channel = out_channel()
    with pytest.raises(TunnelError, match="inside the response body"):
        read_out(channel, [OUT_HEAD % len(BODY) + BODY[:10]])


def test_a_chunked_out_body_stays_with_h11() -> None:
    head = (
        b"HTTP/1.1 200 Success\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    # h11 frames it by Transfer-Encoding (RFC 9112 6.3) and takes the chunks apart.
    assert read_out(out_channel(), [head]) == b"hello"


def test_the_in_body_stops_at_its_content_length() -> None:
    channel = ClientChannel()
    head = channel.send(channel_request("RPC_IN_DATA", "/rpc", "x", "Basic eA==", 100))
    assert head.startswith(b"RPC_IN_DATA /rpc HTTP/1.1\r\n") and b"Content-Length: 100" in head
    channel.send_body_directly(100)
    assert channel.send_body(b"a" * 60) == b"a" * 60  # as is: no h11 framing
    with pytest.raises(TunnelError, match="full"):
        channel.send_body(b"a" * 41)


def test_refusals_carry_the_rpc_status() -> None:
    error = error_from(h11.Response(status_code=503, reason=b"RPC Error: 6ba", headers=[]))
    assert (error.status, error.rpc_error) == (503, 0x6BA)
    assert error_from(h11.Response(status_code=401, headers=[])).rpc_error is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 120), max_size=30), st.binary(max_size=20))
def test_random_cuts_give_the_body_or_refuse_what_follows(cuts: list[int], extra: bytes) -> None:
    wire, chunks, at = OUT_HEAD % len(BODY) + BODY + extra, [], 0
    for cut in cuts:
        chunks.append(wire[at : at + cut])
        at += cut
    chunks = [c for c in [*chunks, wire[at:]] if c]
    try:
        assert read_out(out_channel(), chunks) == BODY
    except TunnelError as exc:
        assert extra and "after the response body" in str(exc)
