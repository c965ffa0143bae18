"""The bounds of an HTTP/1.1 RPC channel: nothing may follow its body however the reads
cut it, a ClientKeepalive below the spec's floor cannot make us ping in a loop, a
request head (and a rejected body) gets one deadline for all its reads, and a successor
IN channel that times out leaves no cancel scope behind.

End to end against a real tunnel on loopback where practical; every test is bounded by
``trio.fail_after``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing
from tunnel_helpers import (
    AUTH,
    FAST,
    SERVER_NAME,
    USER,
    Tunnel,
    check_password,
    connect,
    make_backend,
    read_out_pdus,
    read_until_closed,
    start_tunnel,
    still_serving,
)

from tunnel import rts, rts_recycling
from tunnel.autodiscover import Site
from tunnel.channel import BodyEnded, ChannelError, PeerClosed, RequestReceived, ServerChannel
from tunnel.drivers.context import ProxyContext
from tunnel.drivers.h1_server import _H1Connection
from tunnel.drivers.h1_vc import Closed
from tunnel.drivers.vc_table import Side, VirtualConnection
from tunnel.policy import AllowList, Target

VC, OUT, IN, GROUP = b"k" * 16, b"o" * 16, b"i" * 16, b"a" * 16
OUT_SUCCESSOR = b"p" * 16
JUNK = b"\x00" * 65536


@pytest.fixture
async def tunnel(nursery: trio.Nursery, tmp_path: Path) -> Tunnel:
    backend = await make_backend(nursery)
    return await start_tunnel(nursery, backend, tmp_path / "data")


def request(method: str, path: str, length: int, *, auth: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", f"Content-Length: {length}"]
    if auth:
        lines.append(f"Authorization: {AUTH}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def rpc_path(tunnel: Tunnel) -> str:
    return f"/rpc/rpcproxy.dll?localhost:{tunnel.backend.epm_port}"


async def closed_by_peer(stream: trio.abc.Stream, junk_bytes: int = 0) -> bool:
    """Send ``junk_bytes``, then read: True once the peer closed (within 3 s)."""
    with trio.move_on_after(3):
        try:
            for _ in range(junk_bytes // len(JUNK)):
                await stream.send_all(JUNK)
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False


async def open_vc(
    tunnel: Tunnel, *, keepalive_ms: int = 300000
) -> tuple[trio.SSLStream[trio.SocketStream], trio.SSLStream[trio.SocketStream]]:
    """A raw VC whose OUT request head and CONN/A1 go in one write (h11 reads the whole
    76-byte body with the head), established (CONN/A3 and CONN/C2 read)."""
    out_s, in_s = await connect(tunnel), await connect(tunnel)
    await out_s.send_all(
        request("RPC_OUT_DATA", rpc_path(tunnel), 76) + rts.conn_a1(VC, OUT, 262144)
    )
    await in_s.send_all(
        request("RPC_IN_DATA", rpc_path(tunnel), 1 << 30)
        + rts.conn_b1(VC, IN, GROUP, keepalive_ms=keepalive_ms)
    )
    kinds = [rts.classify(rts.decode_rts(p)) for p in await read_out_pdus(out_s, 2)]
    assert kinds == [rts.Kind.CONN_A3, rts.Kind.CONN_C2]
    return out_s, in_s


# -- 1. nothing after an RPC channel's body, however the reads cut it ----------------------


def _out_successor_body() -> bytes:
    return rts_recycling.out_r2_a3(VC, OUT, OUT_SUCCESSOR, 262144) + rts_recycling.out_r2_c1()


@pytest.mark.parametrize(
    "body", [rts.conn_a1(VC, OUT, 262144), _out_successor_body()], ids=["out", "out_successor"]
)
@pytest.mark.parametrize("same_read", [True, False], ids=["same_read", "later_read"])
def test_channel_refuses_bytes_after_a_body_h11_read_with_the_head(
    body: bytes, same_read: bool
) -> None:
    ch = ServerChannel(FAST)
    head = request("RPC_OUT_DATA", "/rpc/rpcproxy.dll?localhost:1", len(body))
    (req,) = ch.receive_data(head + body + (JUNK if same_read else b""))
    assert isinstance(req, RequestReceived)
    ch.accept_rpc()
    if same_read:
        with pytest.raises(ChannelError, match="after the RPC channel's request body"):
            ch.next_events()
        return
    assert isinstance(ch.next_events()[-1], BodyEnded)
    with pytest.raises(ChannelError, match="after the RPC channel's request body"):
        ch.receive_data(JUNK)
    assert ch.h11.trailing_data[0] == b""  # h11 never got (and buffered) the junk
    assert ch.receive_data(JUNK) == []


def test_channel_whose_body_h11_read_still_sees_the_eof() -> None:
    ch = ServerChannel(FAST)
    body = rts.conn_a1(VC, OUT, 262144)
    ch.receive_data(request("RPC_OUT_DATA", "/rpc/rpcproxy.dll?localhost:1", 76) + body)
    ch.accept_rpc()
    assert isinstance(ch.next_events()[-1], BodyEnded)
    assert ch.receive_data(b"") == [PeerClosed()]


@pytest.mark.parametrize("same_write", [True, False], ids=["same_write", "later_write"])
async def test_bytes_after_the_out_body_close_the_channel(tunnel: Tunnel, same_write: bool) -> None:
    with trio.fail_after(10):
        if same_write:
            async with await connect(tunnel) as out_s, await connect(tunnel) as in_s:
                head = request("RPC_OUT_DATA", rpc_path(tunnel), 76)
                await out_s.send_all(head + rts.conn_a1(VC, OUT, 262144) + JUNK)
                await in_s.send_all(
                    request("RPC_IN_DATA", rpc_path(tunnel), 1 << 30) + rts.conn_b1(VC, IN, GROUP)
                )
                assert await closed_by_peer(out_s, 4 << 20)
        else:
            out_s, in_s = await open_vc(tunnel)
            async with out_s, in_s:
                # Before the fix h11 buffered all of it, for as long as the VC lived.
                assert await closed_by_peer(out_s, 4 << 20)
                assert await closed_by_peer(in_s)  # the VC ended with its OUT channel
        await still_serving(tunnel)


@pytest.mark.parametrize("same_write", [True, False], ids=["same_write", "later_write"])
async def test_bytes_after_a_successor_out_body_close_the_channel(
    tunnel: Tunnel, same_write: bool
) -> None:
    with trio.fail_after(10):
        out_s, in_s = await open_vc(tunnel)
        async with out_s, in_s, await connect(tunnel) as successor:
            body = _out_successor_body()
            head = request("RPC_OUT_DATA", rpc_path(tunnel), len(body))
            await successor.send_all(head + body + (JUNK if same_write else b""))
            if not same_write:
                # The proxy took the successor: OUT_R2/A6 on the predecessor.
                (a6,) = await read_out_pdus(out_s, 1)
                assert rts.classify(rts.decode_rts(a6)) is rts.Kind.OUT_R2_A6
            assert await closed_by_peer(successor, 4 << 20)
        await still_serving(tunnel)


# -- 2. ClientKeepalive below 60000 ms -------------------------------------------------------


async def test_a_one_millisecond_keepalive_does_not_flood_the_out_channel(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    backend = await make_backend(nursery)
    # keepalive_interval well above a second: only the client's value could make us ping.
    tunnel = await start_tunnel(nursery, backend, tmp_path, replace(FAST, keepalive_interval=60))
    with trio.fail_after(10):
        out_s, in_s = await open_vc(tunnel, keepalive_ms=1)
        async with out_s, in_s:
            received = b""
            with trio.move_on_after(1.0):  # before the fix: a Ping every 0.5 ms
                while chunk := await out_s.receive_some(65536):
                    received += chunk
            assert received == b""
        await still_serving(tunnel)


# -- 3. one deadline for a request head, and for a rejected body ----------------------------


async def _drip(stream: trio.abc.SendStream, data: bytes) -> None:
    try:
        for i in range(len(data)):
            await stream.send_all(data[i : i + 1])
            await trio.sleep(0.3)  # well inside head_timeout (1.0) and idle_timeout (5.0)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def test_a_head_dripped_byte_by_byte_times_out(tunnel: Tunnel) -> None:
    head = request("RPC_IN_DATA", "/rpc/rpcproxy.dll?localhost:1", 0, auth=False)
    with trio.fail_after(4):
        async with await connect(tunnel) as s, trio.open_nursery() as nursery:
            nursery.start_soon(_drip, s, head[:-4] + b"X-Filler: " + b"a" * 100)
            reply = await read_until_closed(s)
            nursery.cancel_scope.cancel()
        assert reply == b""  # closed after head_timeout, the head still incomplete
    with trio.fail_after(10):
        await still_serving(tunnel)


async def test_a_rejected_body_dripped_byte_by_byte_times_out(tunnel: Tunnel) -> None:
    with trio.fail_after(4):
        async with await connect(tunnel) as s, trio.open_nursery() as nursery:
            # Small enough to be drained (the connection would be kept), but it never ends.
            await s.send_all(request("RPC_IN_DATA", rpc_path(tunnel), 65536, auth=False))
            nursery.start_soon(_drip, s, b"x" * 100)
            reply = await read_until_closed(s)
            nursery.cancel_scope.cancel()
        assert reply.startswith(b"HTTP/1.1 401 ")
    with trio.fail_after(10):
        await still_serving(tunnel)


# -- driver-level: a handler on a memory stream, a VC made by hand --------------------------


def _handler(**changes: float) -> tuple[_H1Connection, VirtualConnection, Target]:
    config = replace(FAST, **changes)
    ctx = ProxyContext(
        config,
        AllowList([SERVER_NAME], lambda: [1]),
        check_password,
        Site("example.test", SERVER_NAME, "https://localhost/", ""),
    )
    target = Target("localhost", 1)
    vc = ctx.vc_table.join(VC, Side.OUT, USER, target)
    assert vc is not None and ctx.vc_table.join(VC, Side.IN, USER, target) is vc
    vc.in_cookie, vc.out_cookie = IN, OUT
    vc.established.set()
    stream, _ = trio.testing.memory_stream_pair()
    return _H1Connection(ctx, stream, "test"), vc, target


@pytest.mark.parametrize(
    ("value", "applied"), [(1, 60000), (59999, 60000), (0, 0), (60000, 60000), (90000, 90000)]
)
async def test_a_keep_alive_below_the_floor_is_raised(value: int, applied: int) -> None:
    conn, vc, _ = _handler()
    conn._in_rts(vc, rts.decode_rts(rts.keep_alive(value)))
    assert vc.keepalive_ms == applied


async def test_a_successor_in_channel_that_times_out_leaves_no_scope_behind() -> None:
    conn, vc, target = _handler(recycle_timeout=0.1)
    first = rts.decode_rts(rts_recycling.in_r2_a1(VC, IN, b"j" * 16))
    with trio.fail_after(5), pytest.raises(Closed, match="did not complete in time"):
        await conn._in_successor(USER, target, first)
    assert not vc.ended.is_set()  # the VC goes on with its current IN channel
    assert vc._scopes == []


@pytest.mark.parametrize("pieces", [1, 3], ids=["one_read", "three_reads"])
def test_a_head_past_max_header_bytes_is_431_even_when_it_arrives_whole(pieces: int) -> None:
    """h11 checks its bound only while a head is incomplete; one read holding a whole
    oversized head must be refused too."""
    ch = ServerChannel(FAST)
    filler = b"X-Filler: " + b"a" * (2 * FAST.max_header_bytes) + b"\r\n"
    head = b"GET /autodiscover HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n"
    step = -(-len(head) // pieces)
    with pytest.raises(ChannelError):
        for start in range(0, len(head), step):
            ch.receive_data(head[start : start + step])
    assert ch.data_to_send().startswith(b"HTTP/1.1 431 ")
