"""Sans-IO cores of the tunnel: the HTTP/1.1 channel, the h2 glue, flow-control windows
and the policy, driven with bytes only (no sockets, no trio)."""

from __future__ import annotations

import base64

import h2.connection
import h2.events
import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcerpc.errors import DecodeError, RemoteProtocolError
from dcerpc.pdu import ShutdownPdu
from tunnel import rts
from tunnel.channel import (
    BodyEnded,
    ChannelError,
    ChannelState,
    PeerClosed,
    RequestReceived,
    RpcPduReceived,
    RtsReceived,
    ServerChannel,
)
from tunnel.config import TunnelConfig
from tunnel.h2_glue import DataReceived, H2Glue, HeaderBlockScan, StreamEnded
from tunnel.h2_glue import RequestReceived as H2Request
from tunnel.policy import AllowList, Quota, Target, parse_authorization, parse_rpc_target
from tunnel.vc import ReceiveWindow, SendWindow

CFG = TunnelConfig(port=0)
IN_HEAD = (
    b"RPC_IN_DATA /rpc/rpcproxy.dll?localhost:135 HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 1073741824\r\nExpect: 100-continue\r\n\r\n"
)


def feed_three_ways(data: bytes) -> list[list[object]]:
    """h11's tr(): whole, byte by byte; the events must agree."""
    results = []
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        ch = ServerChannel(CFG)
        events: list[object] = []
        for chunk in chunks:
            events += ch.receive_data(chunk)
            if ch.state is ChannelState.DECIDING:
                ch.accept_rpc()
                events += ch.next_events()
        results.append(events)
    return results


def test_in_channel_yields_rts_and_rpc_pdus() -> None:
    b1 = rts.conn_b1(b"v" * 16, b"i" * 16, b"a" * 16)
    pdu = ShutdownPdu().encode()
    whole, bytewise = feed_three_ways(IN_HEAD + b1 + pdu)
    assert whole == bytewise
    request, rts_event, rpc_event = whole
    assert isinstance(request, RequestReceived) and request.expects_continue
    assert request.content_length == 1073741824
    assert (
        isinstance(rts_event, RtsReceived) and rts.classify(rts_event.message) is rts.Kind.CONN_B1
    )
    assert isinstance(rpc_event, RpcPduReceived) and rpc_event.data == pdu


def test_accept_sends_100_continue_and_out_response_is_exact() -> None:
    ch = ServerChannel(CFG)
    ch.receive_data(IN_HEAD.replace(b"RPC_IN_DATA", b"RPC_OUT_DATA"))
    ch.accept_rpc()
    assert ch.data_to_send() == b"HTTP/1.1 100 Continue\r\n\r\n"
    ch.start_out_response(1073741824)
    head = ch.data_to_send()
    assert head.startswith(b"HTTP/1.1 200 Success\r\n")
    assert b"Content-Length: 1073741824\r\n" in head and b"Content-Type: application/rpc" in head


def test_reject_keeps_a_small_request_connection_and_cycles() -> None:
    ch = ServerChannel(CFG)
    head = b"RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    assert isinstance(ch.receive_data(head + head)[0], RequestReceived)
    ch.reject(401, "Unauthorized", [("WWW-Authenticate", 'Basic realm="x"')])
    assert ch.data_to_send().startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    events = ch.next_events()  # the pipelined second request
    assert isinstance(events[0], RequestReceived)


def test_reject_closes_when_the_body_is_huge() -> None:
    ch = ServerChannel(CFG)
    ch.receive_data(IN_HEAD)
    ch.reject(401, "Unauthorized")
    assert b"Connection: close" in ch.data_to_send()
    assert ch.state is ChannelState.CLOSED


def test_refuse_rpc_is_the_http10_503_form() -> None:
    ch = ServerChannel(CFG)
    ch.receive_data(IN_HEAD)
    ch.refuse_rpc(0x6BA)
    assert ch.data_to_send().startswith(b"HTTP/1.0 503 RPC Error: 6ba\r\n")
    assert ch.state is ChannelState.CLOSED


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 20000, b"431"),
        (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
    ],
)
def test_bad_heads_queue_an_error_and_raise(data: bytes, status: bytes) -> None:
    ch = ServerChannel(CFG)
    with pytest.raises(ChannelError):
        ch.receive_data(data)
    assert ch.data_to_send().split(b" ")[1] == status
    assert ch.state is ChannelState.CLOSED


def test_eof_mid_body_is_a_close_not_an_error() -> None:
    ch = ServerChannel(CFG)
    ch.receive_data(IN_HEAD)
    ch.accept_rpc()
    events = ch.receive_data(b"")
    assert [type(e).__name__ for e in events] == ["PeerClosed"]


def test_body_ending_inside_a_pdu_is_an_error() -> None:
    ch = ServerChannel(CFG)
    ch.receive_data(IN_HEAD.replace(b"1073741824", b"30"))
    ch.accept_rpc()
    with pytest.raises(ChannelError):
        ch.receive_data(rts.conn_a3(120000)[:20] + b"\x00" * 10)


@pytest.mark.parametrize("split", [1, 7, 40])
def test_a_body_read_past_h11_ends_exactly_and_nothing_may_follow(split: int) -> None:
    """Past h11's buffer the RPC body is read by counting (channel.py's raw reads): the
    PDUs, the end of the body at its Content-Length, then only the EOF."""
    pdus = [ShutdownPdu(call_id=i).encode() for i in range(3)]
    body = b"".join(pdus)
    ch = ServerChannel(CFG)
    ch.receive_data(IN_HEAD.replace(b"1073741824", str(len(body)).encode()))
    ch.accept_rpc()
    assert ch.next_events() == []
    events: list[object] = []
    for start in range(0, len(body), split):
        events += ch.receive_data(body[start : start + split])
    assert [e.data for e in events if isinstance(e, RpcPduReceived)] == pdus
    assert isinstance(events[-1], BodyEnded)
    assert isinstance(ch.receive_data(b"")[0], PeerClosed)
    extra = ServerChannel(CFG)
    extra.receive_data(IN_HEAD.replace(b"1073741824", str(len(body)).encode()))
    extra.accept_rpc()
    extra.next_events()
    with pytest.raises(ChannelError, match="after the RPC channel"):
        extra.receive_data(body + b"GET / HTTP/1.1\r\n\r\n")


def test_the_body_count_survives_the_drivers_repeated_event_polls() -> None:
    """The proxy's driver asks next_events() whenever its queue is empty: that must not
    reset the count of a body read past h11 (bytes past Content-Length are refused)."""
    pdu = ShutdownPdu().encode()
    length = 3 * len(pdu)
    ch = ServerChannel(CFG)
    ch.receive_data(IN_HEAD.replace(b"1073741824", str(length).encode()))
    ch.accept_rpc()
    got: list[object] = []
    for _ in range(3):
        assert ch.next_events() == []
        got += ch.receive_data(pdu)
        assert ch.next_events() == []
    assert isinstance(got[-1], BodyEnded)
    with pytest.raises(ChannelError):
        ch.receive_data(pdu)


def test_a_body_with_transfer_encoding_is_left_to_h11() -> None:
    """A Transfer-Encoding: chunked body is read as chunks, by h11 (RFC 9112 6.3)."""
    pdu = ShutdownPdu().encode()
    head = IN_HEAD.replace(b"Content-Length: 1073741824\r\n", b"Transfer-Encoding: chunked\r\n")
    ch = ServerChannel(CFG)
    ch.receive_data(head)
    ch.accept_rpc()
    assert ch.next_events() == []
    chunk = b"%x\r\n" % len(pdu) + pdu + b"\r\n"
    events = ch.receive_data(chunk) + ch.receive_data(b"0\r\n\r\n")
    assert [type(e).__name__ for e in events] == ["RpcPduReceived", "BodyEnded"]


def test_out_body_is_bounded_by_its_content_length() -> None:
    ch = ServerChannel(CFG)
    ch.receive_data(IN_HEAD.replace(b"RPC_IN_DATA", b"RPC_OUT_DATA"))
    ch.accept_rpc()
    with pytest.raises(h11.LocalProtocolError):
        ch.send_body(b"early")  # before the response head
    ch.start_out_response(10)
    ch.data_to_send()
    ch.send_body(b"0123456")
    assert ch.data_to_send() == b"0123456"  # the body bytes as they are
    with pytest.raises(h11.LocalProtocolError):
        ch.send_body(b"789!")
    ch.send_body(b"789")
    assert ch.data_to_send() == b"789"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_channel_body_gives_events_or_remote_errors(body: bytes) -> None:
    ch = ServerChannel(CFG)
    ch.receive_data(IN_HEAD)
    ch.accept_rpc()
    try:
        events = ch.receive_data(body)
    except RemoteProtocolError:
        return
    assert all(isinstance(e, RtsReceived | RpcPduReceived | BodyEnded | PeerClosed) for e in events)


# -- flow control ----------------------------------------------------------------------------


def test_send_window_follows_acks() -> None:
    w = SendWindow(1000, 5000)
    assert w.can_send(1000)
    w.sent(600, rpc=True)
    assert w.can_send(400) and not w.can_send(401)
    w.acknowledged(600, 1000)
    assert w.available() == 1000
    w.sent(20, rpc=False)  # RTS: not flow controlled, but counts against the body
    assert w.available() == 1000 and w.fits_body(4380) and not w.fits_body(4381)
    with pytest.raises(DecodeError):
        w.acknowledged(601, 1000)
    lax = SendWindow(10, 5000, strict=False)
    lax.sent(100, rpc=True)
    assert lax.can_send(1000)


def test_receive_window_acks_every_half_window() -> None:
    r = ReceiveWindow(1000)
    assert r.received(400) is None
    ack = r.received(200)
    assert ack is not None and (ack.bytes_received, ack.available_window) == (600, 1000)
    assert r.received(100) is None


# -- h2 glue ---------------------------------------------------------------------------------


def _pair() -> tuple[H2Glue, h2.connection.H2Connection]:
    server = H2Glue(CFG)
    client = h2.connection.H2Connection()
    client.initiate_connection()
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    return server, client


def test_h2_credit_returns_only_when_consumed() -> None:
    server, client = _pair()
    sid = client.get_next_available_stream_id()
    headers = [(":method", "POST"), (":scheme", "https"), (":authority", "x"), (":path", "/p")]
    client.send_headers(sid, headers)
    assert client.local_flow_control_window(sid) == CFG.h2_window
    size = CFG.h2_window - 1000
    while size:
        chunk = min(size, 16384)
        client.send_data(sid, b"x" * chunk)
        size -= chunk
    client.end_stream(sid)
    events = server.receive_data(client.data_to_send())
    assert isinstance(events[0], H2Request) and events[0].path == "/p"
    received = sum(len(e.data) for e in events if isinstance(e, DataReceived))
    assert received == CFG.h2_window - 1000 and isinstance(events[-1], StreamEnded)
    client.receive_data(server.data_to_send())
    assert client.outbound_flow_control_window == 1000  # nothing handed back yet
    server.consumed(sid, received)
    client.receive_data(server.data_to_send())
    assert client.outbound_flow_control_window == CFG.h2_window


def test_h2_send_stops_at_the_peer_window() -> None:
    server, client = _pair()
    sid = client.get_next_available_stream_id()
    client.send_headers(
        sid, [(":method", "POST"), (":scheme", "https"), (":authority", "x"), (":path", "/p")]
    )
    server.receive_data(client.data_to_send())
    server.respond(sid, 200, [("content-type", "application/rpc")])
    assert server.sendable(sid) == 65535
    assert server.send_data(sid, b"y" * 100_000) == 65535
    assert server.sendable(sid) == 0 and server.send_data(sid, b"z") == 0


def test_h2_protocol_error_becomes_connection_ended_with_goaway() -> None:
    server, _ = _pair()
    events = server.receive_data(
        b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    )  # WINDOW_UPDATE 0
    assert type(events[-1]).__name__ == "ConnectionEnded" and server.closed
    assert server.data_to_send()  # the GOAWAY


# -- policy ----------------------------------------------------------------------------------


def test_parse_authorization() -> None:
    token = base64.b64encode(b"alice:pa:ss").decode()
    creds = parse_authorization(f"Basic {token}")
    assert creds is not None and (creds.username, creds.password) == ("alice", "pa:ss")
    assert parse_authorization(None) is None
    assert parse_authorization("NTLM TlRMTVNTUAAB") is None
    assert parse_authorization("Basic !!!") is None
    assert parse_authorization("Basic " + base64.b64encode(b"nocolon").decode()) is None
    assert parse_authorization(b"Basic \xff") is None


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/rpc/rpcproxy.dll?SRV01:593", Target("srv01", 593)),
        ("/RPC/RpcProxy.dll?[::1]:6001", Target("::1", 6001)),
        ("/rpc/rpcproxy.dll?a@b.c:6001", Target("a@b.c", 6001)),
        ("/rpc/rpcproxy.dll", None),
        ("/rpc/rpcproxy.dll?host", None),
        ("/rpc/rpcproxy.dll?host:0", None),
        ("/rpc/rpcproxy.dll?host:65536", None),
        ("/rpc/rpcproxy.dll?ho st:135", None),
        ("/other?host:135", None),
        ("/rpc/rpcproxy.dll?" + "a" * 300 + ":135", None),
    ],
)
def test_parse_rpc_target(path: str, target: Target | None) -> None:
    assert parse_rpc_target(path) == target


def test_allow_list_maps_to_the_backend_only() -> None:
    allow = AllowList.static(["Mail.Example.Test"], [135, 49152], backend_host="10.0.0.5")
    assert allow.resolve(Target("mail.example.test", 135)) == ("10.0.0.5", 135)
    assert allow.resolve(Target("localhost", 49152)) == ("10.0.0.5", 49152)
    assert allow.resolve(Target("localhost", 22)) is None
    assert allow.resolve(Target("intranet.example.test", 135)) is None
    pairs = AllowList.from_pairs(lambda: {("localhost", 135)})
    assert pairs.resolve(Target("localhost", 135)) == ("127.0.0.1", 135)
    assert pairs.resolve(Target("127.0.0.1", 135)) is None


def test_quota() -> None:
    q = Quota(2)
    assert q.acquire("a") and q.acquire("a") and not q.acquire("a") and q.acquire("b")
    q.release("a")
    assert q.acquire("a") and not q.acquire("a", 2)


def test_an_accepted_out_channel_can_still_be_refused_until_its_response_starts() -> None:
    """The OUT channel learns only after CONN/A1 that its backend is unreachable: a 503
    is still the right answer then, but not once the 200 head is out."""
    out_head = IN_HEAD.replace(b"RPC_IN_DATA", b"RPC_OUT_DATA").replace(b"1073741824", b"76")
    ch = ServerChannel(CFG)
    ch.receive_data(out_head)
    ch.next_events()
    ch.accept_rpc()
    ch.data_to_send()
    ch.refuse_rpc(0x6BA)
    assert ch.data_to_send().startswith(b"HTTP/1.0 503 RPC Error: 6ba\r\n")
    assert ch.state is ChannelState.CLOSED

    late = ServerChannel(CFG)
    late.receive_data(out_head)
    late.next_events()
    late.accept_rpc()
    late.start_out_response(1024)
    with pytest.raises(Exception, match="decision"):
        late.refuse_rpc(0x6BA)


def test_the_cheap_frame_body_repr_gives_hyperframes_string() -> None:
    import binascii

    import hyperframe.frame

    from tunnel import h2_glue

    def original(data: bytes | None) -> str:  # hyperframe 6.1's, verbatim in effect
        if not data:
            return "None"
        r = binascii.hexlify(data).decode("ascii")
        if len(r) > 20:
            r = r[:20] + "..."
        return "<hex:" + r + ">"

    assert hyperframe.frame._raw_data_repr is h2_glue.prefix_hex_repr
    for data in [None, b"", *(bytes(range(n)) for n in range(1, 25)), b"\xab" * (256 << 10)]:
        assert h2_glue.prefix_hex_repr(data) == original(data)
    frame = hyperframe.frame.DataFrame(1, data=b"\x01" * 300000)
    assert repr(frame).endswith(": <hex:01010101010101010101...>")


def test_the_h1_client_counts_only_a_plain_content_length_body() -> None:
    """The client reads an OUT response body past h11 only when Content-Length alone
    frames it; with Transfer-Encoding too (or no 200), h11 keeps the body."""
    from tunnel.client_channel import content_length as _content_length

    def response(status: int, *headers: tuple[str, str]) -> h11.Response:
        return h11.Response(status_code=status, headers=list(headers))

    assert _content_length(response(200, ("Content-Length", "1073741824"))) == 1073741824
    chunked = response(200, ("Content-Length", "100"), ("Transfer-Encoding", "chunked"))
    assert _content_length(chunked) is None
    assert _content_length(response(503, ("Content-Length", "0"))) is None
    assert _content_length(response(200)) is None


# -- the header block scan ---------------------------------------------------------------

_FRAME = st.tuples(
    st.sampled_from([0x0, 0x1, 0x5, 0x8, 0x9]),  # DATA, HEADERS, PUSH_PROMISE, WINDOW_UPDATE, CONT.
    st.booleans(),  # END_HEADERS
    st.integers(0, 3000),
)


def _frames(spec: list[tuple[int, bool, int]]) -> tuple[bytes, list[int], int | None]:
    """The wire bytes of ``spec``, the sizes a header block reached (one per frame of
    a block), and the size of the block still open at the end (None)."""
    wire, peaks, block = b"", [], None
    for kind, end, length in spec:
        wire += length.to_bytes(3, "big") + bytes([kind, 0x4 if end else 0]) + b"\0\0\0\1"
        wire += b"\xaa" * length
        if kind in (0x1, 0x5):
            block = length
        elif kind == 0x9 and block is not None:
            block += length
        else:
            continue
        peaks.append(block)
        if end:
            block = None
    return wire, peaks, block


@settings(max_examples=200, deadline=None)
@given(st.lists(_FRAME, max_size=12), st.lists(st.integers(1, 5000), max_size=20))
def test_header_block_scan_follows_frames_however_cut(spec, cuts):
    """The scan sees the same blocks whatever the reads' sizes, skips payloads, and
    refuses a block exactly when its encoded size passes the limit."""
    wire, peaks, still_open = _frames(spec)
    limit = 4000
    scan = HeaderBlockScan(limit, preface=3)
    data, at = b"pre" + wire, 0
    refused = False
    for cut in [*cuts, len(data)]:
        if at >= len(data):
            break
        if not scan.feed(data[at : at + cut]):
            refused = True
            break
        at += cut
    assert refused == any(size > limit for size in peaks)
    if not refused:
        assert scan.block == still_open


def test_glue_refuses_a_long_header_block_before_h2_holds_it():
    glue = H2Glue(TunnelConfig(max_header_bytes=4096))
    client = h2.connection.H2Connection()
    client.initiate_connection()
    glue.receive_data(client.data_to_send())
    head = (1).to_bytes(4, "big")
    wire = (100).to_bytes(3, "big") + b"\x01\x00" + head + b"\0" * 100  # HEADERS, no END
    assert glue.receive_data(wire) == [] and glue.header_block_open
    flood = (8192).to_bytes(3, "big") + b"\x09\x00" + head + b"\0" * 8192  # CONTINUATION
    (ended,) = glue.receive_data(flood)
    assert ended.error_code == 11  # ENHANCE_YOUR_CALM, with a GOAWAY queued
    goaway = [e for e in client.receive_data(glue.data_to_send()) if "Terminated" in repr(e)]
    assert goaway and goaway[0].error_code == 11
