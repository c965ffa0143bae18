"""Hostile and broken clients: each gets a correct status or a close, bounded in time,
and the proxy keeps serving (checked with a normal request after each)."""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import socket
from collections.abc import Callable
from dataclasses import replace

import h2.connection
import h2.errors
import h2.events
import h2.settings
import hyperframe.frame
import pytest
import trio
from tunnel_helpers import (
    AUTH,
    ECHO,
    FAST,
    PASSWORD,
    SERVER_NAME,
    USER,
    Backend,
    Tunnel,
    connect,
    make_backend,
    read_out_pdus,
    read_until_closed,
    rpc_stream,
    start_tunnel,
    still_serving,
)

from dcerpc.client import open_rpc_client
from dcerpc.config import RpcConfig
from dcerpc.errors import BindRejected, ConnectionClosed
from dcerpc.events import ResponseReceived
from tunnel import rts, rts_recycling
from tunnel.policy import AllowList


async def read_head(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return data


def request(method: str, path: str, length: int, *, auth: bool = True, extra: str = "") -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: localhost",
        "Accept: application/rpc",
        f"Content-Length: {length}",
    ]
    if auth:
        lines.append(f"Authorization: {AUTH}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


async def test_malformed_request_line_gets_400(tunnel: Tunnel) -> None:
    with trio.fail_after(10):
        async with await connect(tunnel) as s:
            await s.send_all(b"THIS IS NOT HTTP\r\n\r\n")
            reply = await read_until_closed(s)
        assert reply.startswith(b"HTTP/1.1 400 ")
        await still_serving(tunnel)


async def test_oversized_head_gets_431(tunnel: Tunnel) -> None:
    with trio.fail_after(10):
        async with await connect(tunnel) as s:
            head = request("RPC_IN_DATA", "/rpc/rpcproxy.dll?localhost:1", 0).rstrip(b"\r\n")
            with pytest.raises(trio.BrokenResourceError):
                # The proxy answers and closes while we are still sending: fine too.
                for _ in range(100):
                    await s.send_all(head + b"\r\nX-Filler: " + b"a" * 1000)
                raise trio.BrokenResourceError
            reply = await read_until_closed(s)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 431 ")
        await still_serving(tunnel)


async def test_slowloris_head_times_out(tunnel: Tunnel) -> None:
    with trio.fail_after(10):
        async with await connect(tunnel) as s:
            await s.send_all(b"RPC_IN_DATA /rpc/rpcproxy.dll?localhost:1 HTTP/1.1\r\nHost: x")
            assert await read_until_closed(s) == b""  # closed after head_timeout
        await still_serving(tunnel)


async def test_missing_credentials_get_401_and_keep_the_connection(tunnel: Tunnel) -> None:
    with trio.fail_after(10):
        async with await connect(tunnel) as s:
            # impacket's first leg: no query, an NTLM type 1, Content-Length 0.
            await s.send_all(
                request(
                    "RPC_IN_DATA",
                    "/rpc/rpcproxy.dll",
                    0,
                    auth=False,
                    extra="Authorization: NTLM TlRMTVNTUAABAAAA\r\n",
                )
            )
            head = await read_head(s)
            assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
            assert b'WWW-Authenticate: Basic realm="mapi-anywhere"' in head
            assert b"NTLM" not in head
            # Same connection, now an echo request with credentials.
            await s.send_all(
                request("RPC_IN_DATA", "/rpc/rpcproxy.dll?localhost:135", 4) + b"\0" * 4
            )
            head = await read_head(s)
            assert head.startswith(b"HTTP/1.1 200 Success\r\n")
            assert head.endswith(rts.echo())
        await still_serving(tunnel)


async def test_bad_rts_pdu_on_the_in_channel_closes_it(tunnel: Tunnel) -> None:
    path = f"/rpc/rpcproxy.dll?localhost:{tunnel.backend.epm_port}"
    with trio.fail_after(10):
        async with await connect(tunnel) as s:
            await s.send_all(
                request("RPC_IN_DATA", path, 1 << 30, extra="Expect: 100-continue\r\n")
            )
            assert (await read_head(s)).startswith(b"HTTP/1.1 100 Continue\r\n")
            bad = bytearray(rts.conn_b1(b"v" * 16, b"i" * 16, b"a" * 16))
            bad[22] = 0x7F  # NumberOfCommands beyond the limit
            await s.send_all(bytes(bad))
            assert await read_until_closed(s) == b""
        await still_serving(tunnel)


async def test_out_channel_without_in_channel_times_out(tunnel: Tunnel) -> None:
    path = f"/rpc/rpcproxy.dll?localhost:{tunnel.backend.epm_port}"
    with trio.fail_after(10):
        async with await connect(tunnel) as s:
            await s.send_all(request("RPC_OUT_DATA", path, 76))
            await s.send_all(rts.conn_a1(os.urandom(16), os.urandom(16), 262144))
            reply = await read_until_closed(s)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 Success\r\n")
        assert b"Content-Length: 1073741824" in head
        assert rts.classify(rts.decode_rts(body)) is rts.Kind.CONN_A3  # then a clean close
        await still_serving(tunnel)


async def test_wrong_cookie_on_the_second_channel(tunnel: Tunnel) -> None:
    path = f"/rpc/rpcproxy.dll?localhost:{tunnel.backend.epm_port}"
    with trio.fail_after(10):
        async with await connect(tunnel) as out_s, await connect(tunnel) as in_s:
            await out_s.send_all(request("RPC_OUT_DATA", path, 76))
            await out_s.send_all(rts.conn_a1(b"1" * 16, b"o" * 16, 262144))
            await in_s.send_all(request("RPC_IN_DATA", path, 1 << 30))
            await in_s.send_all(rts.conn_b1(b"2" * 16, b"i" * 16, b"a" * 16))
            out_reply = await read_until_closed(out_s)
            in_reply = await read_until_closed(in_s)
        # Neither half found its partner: no CONN/C2, both closed after pair_timeout.
        body = out_reply.partition(b"\r\n\r\n")[2]
        assert len(body) == 28  # CONN/A3 only
        assert in_reply == b""
        await still_serving(tunnel)


async def test_a_second_user_cannot_join_a_foreign_virtual_connection(
    nursery: trio.Nursery, backend: Backend, tmp_path
) -> None:
    async def two_users(user: str, password: str, address: str | None) -> bool:
        await trio.lowlevel.checkpoint()
        return (user, password) in {(USER, PASSWORD), ("mallory", "x")}

    allow = AllowList.for_database(backend.database, backend.epm_port, [])
    tunnel = await start_tunnel(nursery, backend, tmp_path, allow=allow, authenticate=two_users)
    path = f"/rpc/rpcproxy.dll?localhost:{backend.epm_port}"
    mallory = "Basic " + base64.b64encode(b"mallory:x").decode()
    with trio.fail_after(10):
        async with await connect(tunnel) as out_s, await connect(tunnel) as in_s:
            await out_s.send_all(request("RPC_OUT_DATA", path, 76))
            await out_s.send_all(rts.conn_a1(b"1" * 16, b"o" * 16, 262144))
            await in_s.send_all(
                request(
                    "RPC_IN_DATA", path, 1 << 30, auth=False, extra=f"Authorization: {mallory}\r\n"
                )
            )
            await in_s.send_all(rts.conn_b1(b"1" * 16, b"i" * 16, b"a" * 16))
            assert await read_until_closed(in_s) == b""
            body = (await read_until_closed(out_s)).partition(b"\r\n\r\n")[2]
        # Whichever half came first owns the cookie; the other user's half is refused,
        # so there is never a CONN/C2 (at most the A3 of an OUT channel that came first).
        assert len(body) in (0, 28)


async def test_no_connection_attempt_to_a_target_off_the_allow_list(tunnel: Tunnel) -> None:
    bait = socket.socket()
    bait.bind(("127.0.0.1", 0))
    bait.listen(8)
    bait.setblocking(False)
    port = bait.getsockname()[1]
    try:
        with trio.fail_after(10):
            for target in (f"localhost:{port}", f"10.9.9.9:{tunnel.backend.epm_port}", "x:99999"):
                async with await connect(tunnel) as s:
                    await s.send_all(request("RPC_IN_DATA", f"/rpc/rpcproxy.dll?{target}", 1 << 30))
                    reply = await read_until_closed(s)
                assert reply.startswith(b"HTTP/1.0 503 RPC Error: 6ba\r\n")
        with pytest.raises(BlockingIOError):
            bait.accept()  # nobody ever connected
    finally:
        bait.close()
    await still_serving(tunnel)


async def test_unknown_path_and_method(tunnel: Tunnel) -> None:
    with trio.fail_after(10):
        async with await connect(tunnel) as s:
            await s.send_all(request("GET", "/etc/passwd", 0))
            assert (await read_head(s)).startswith(b"HTTP/1.1 404 ")
            await s.send_all(request("DELETE", "/rpc/rpcproxy.dll?localhost:135", 0))
            assert (await read_head(s)).startswith(b"HTTP/1.1 405 ")
        await still_serving(tunnel)


# -- HTTP/2 ----------------------------------------------------------------------------------


class H2Raw:
    """A bare h2 client over TLS, for misbehaving on purpose."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection()
        self.conn.initiate_connection()

    async def flush(self) -> None:
        await self.stream.send_all(self.conn.data_to_send())

    async def open(self, path: str, auth: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", path),
        ]
        if auth:
            headers.append(("authorization", AUTH))
        self.conn.send_headers(sid, headers)
        await self.flush()
        return sid

    async def events(self) -> list[h2.events.Event]:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError
        events = self.conn.receive_data(data)
        await self.flush()
        return events

    async def status(self, sid: int) -> int:
        while True:
            for ev in await self.events():
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    return int(dict(ev.headers)[b":status"])


async def test_h2_statuses(tunnel: Tunnel) -> None:
    with trio.fail_after(10):
        async with await connect(tunnel, "h2") as s:
            c = H2Raw(s)
            assert (
                await c.status(await c.open("/rpc/rpcproxy.dll?localhost:135", auth=False)) == 401
            )
            assert await c.status(await c.open("/rpc/rpcproxy.dll?10.0.0.1:135")) == 403
            assert await c.status(await c.open("/nothing")) == 404
            assert await c.status(await c.open("/rpc/rpcproxy.dll?localhost")) == 403
        await still_serving(tunnel)


async def test_h2_reset_and_goaway_end_cleanly(
    nursery: trio.Nursery, backend: Backend, tmp_path
) -> None:
    """A reset stream and a GOAWAY end cleanly; a stream the client opens after its own
    GOAWAY is not served: the connection is going away ([RFC 9113] 6.8), so the proxy
    neither answers it nor connects to its target (an allowed one), and closes."""
    bait = socket.socket()
    bait.bind(("127.0.0.1", 0))
    bait.listen(8)
    bait.setblocking(False)
    bait_port = bait.getsockname()[1]
    allow = AllowList.static([SERVER_NAME], [backend.epm_port, bait_port])
    tunnel = await start_tunnel(nursery, backend, tmp_path, allow=allow)
    path = f"/rpc/rpcproxy.dll?localhost:{backend.epm_port}"
    try:
        with trio.fail_after(10):
            async with await connect(tunnel, "h2") as s:
                c = H2Raw(s)
                sid = await c.open(path)
                assert await c.status(sid) == 200
                c.conn.reset_stream(sid)
                sid2 = await c.open(path)
                assert await c.status(sid2) == 200
                # Our GOAWAY and, in the same write, a request on a new stream (written
                # by hand: h2 sends nothing after its GOAWAY).
                c.conn.close_connection()
                late = sid2 + 2
                headers = [
                    *REQUEST_HEADERS[:3],
                    (":path", f"/rpc/rpcproxy.dll?localhost:{bait_port}"),
                    ("authorization", AUTH),
                ]
                frame = hyperframe.frame.HeadersFrame(
                    late, _header_block(c, headers), flags=["END_HEADERS"]
                )
                with contextlib.suppress(trio.BrokenResourceError):
                    await s.send_all(c.conn.data_to_send() + frame.serialize())
                # Up to the proxy's close, or to a first answer on the late stream.
                frames = await _frames_until_closed(s, lambda f: _answers(f, late))
            assert not any(_answers(f, late) for f in frames), frames
        with pytest.raises(BlockingIOError):
            bait.accept()  # the late stream's target never saw a connection
    finally:
        bait.close()
    await still_serving(tunnel)


def _answers(frame: hyperframe.frame.Frame, stream_id: int) -> bool:
    """``frame`` serves ``stream_id``: anything on it but RST_STREAM(REFUSED_STREAM), the
    one answer a stream opened after a GOAWAY may get."""
    if frame.stream_id != stream_id:
        return False
    return not (
        isinstance(frame, hyperframe.frame.RstStreamFrame)
        and frame.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
    )


async def _frames_until_closed(
    stream: trio.abc.ReceiveStream, stop: Callable[[hyperframe.frame.Frame], bool]
) -> list[hyperframe.frame.Frame]:
    """The HTTP/2 frames the peer sends until it closes (a reset counts as a close), or
    up to the first frame ``stop`` accepts."""
    frames: list[hyperframe.frame.Frame] = []
    buffer = b""
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            chunk = b""
        if not chunk:
            return frames
        buffer += chunk
        while len(buffer) >= 9:
            frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(buffer[9 : 9 + length]))
            buffer = buffer[9 + length :]
            frames.append(frame)
            if stop(frame):
                return frames


async def test_h2_client_that_never_reads_bounds_our_buffering(
    nursery: trio.Nursery, backend: Backend, tmp_path
) -> None:
    written = 0
    stalled = trio.Event()

    async def firehose(stream: trio.SocketStream) -> None:
        nonlocal written
        chunk = b"x" * 65536
        while True:
            with trio.move_on_after(0.5) as scope:
                await stream.send_all(chunk)
                written += len(chunk)
            if scope.cancelled_caught:
                stalled.set()
                await trio.sleep_forever()

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, firehose, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    allow = AllowList.static([SERVER_NAME], [backend.epm_port, port])
    tunnel = await start_tunnel(nursery, backend, tmp_path, allow=allow)
    with trio.fail_after(20):
        async with await connect(tunnel, "h2") as s:
            c = H2Raw(s)
            sid = await c.open(f"/rpc/rpcproxy.dll?localhost:{port}")
            assert await c.status(sid) == 200
            # Now read nothing more (no WINDOW_UPDATE either): the proxy must stop
            # reading the backend once our 64 KiB window and the socket buffers are full.
            await stalled.wait()
            assert written < 32 * 1024 * 1024
            # Reading the socket but never opening the window is not reading either:
            # the stream is reset after send_timeout (2 s), not kept forever.
            with trio.fail_after(FAST.send_timeout + 5):
                while not any(
                    isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid
                    for ev in await c.events()
                ):
                    pass
        await still_serving(tunnel)


def _goaway_code(c: H2Raw, data: bytes) -> int | None:
    for ev in c.conn.receive_data(data):
        if isinstance(ev, h2.events.ConnectionTerminated):
            return int(ev.error_code or 0)
    return None


async def _until_goaway(c: H2Raw) -> int | None:
    """Read until the proxy closes; the error code of its GOAWAY (None without one)."""
    return _goaway_code(c, await read_until_closed(c.stream))


def _header_block(c: H2Raw, headers: list[tuple[str, str]]) -> bytes:
    """An HPACK block from the client's encoder (for frames sent by hand)."""
    return bytes(c.conn.encoder.encode(headers))


REQUEST_HEADERS = [
    (":method", "POST"),
    (":scheme", "https"),
    (":authority", "localhost"),
    (":path", "/rpc/rpcproxy.dll?localhost:1"),
]


async def test_h2_continuation_flood_is_refused_early(tunnel: Tunnel) -> None:
    """h2 would hold 64 CONTINUATION frames of 256 KiB before decoding: the proxy
    refuses a header block once it passes twice max_header_bytes (32 KiB), without
    credentials being needed to try."""
    with trio.fail_after(10):
        async with await connect(tunnel, "h2") as s:
            c = H2Raw(s)
            await c.flush()
            block = _header_block(c, REQUEST_HEADERS)
            frames = [hyperframe.frame.HeadersFrame(1, block).serialize()]
            for _ in range(4):
                frames.append(hyperframe.frame.ContinuationFrame(1, b"\x00" * 16384).serialize())
            with contextlib.suppress(trio.BrokenResourceError):
                await s.send_all(b"".join(frames))
            assert await _until_goaway(c) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        await still_serving(tunnel)


async def test_h2_header_list_limit_is_the_advertised_one(tunnel: Tunnel) -> None:
    with trio.fail_after(10):
        async with await connect(tunnel, "h2") as s:
            c = H2Raw(s)
            sid = c.conn.get_next_available_stream_id()
            headers = [*REQUEST_HEADERS, ("authorization", AUTH), ("x-filler", "a" * 20000)]
            c.conn.send_headers(sid, headers)
            with contextlib.suppress(trio.BrokenResourceError):
                await c.flush()
            assert await _until_goaway(c) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        await still_serving(tunnel)


async def test_h2_connection_without_credentials_is_closed_despite_pings(
    tunnel: Tunnel,
) -> None:
    """Pings restart the idle timeout; they do not buy an unauthenticated connection
    more than head_timeout (1 s here)."""
    with trio.fail_after(FAST.head_timeout + 5):
        async with await connect(tunnel, "h2") as s:
            c = H2Raw(s)
            assert await c.status(await c.open("/nothing", auth=False)) == 401

            async def ping() -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    while True:
                        c.conn.ping(b"12345678")
                        await c.flush()
                        await trio.sleep(0.2)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ping)
                assert await _until_goaway(c) == h2.errors.ErrorCodes.NO_ERROR
                nursery.cancel_scope.cancel()
        await still_serving(tunnel)


async def test_h2_authenticated_connection_outlives_head_timeout(tunnel: Tunnel) -> None:
    with trio.fail_after(10):
        async with await connect(tunnel, "h2") as s:
            c = H2Raw(s)
            assert await c.status(await c.open("/nothing")) == 404
            for _ in range(int(FAST.head_timeout * 3 / 0.2)):
                c.conn.ping(b"12345678")
                await c.flush()
                await trio.sleep(0.2)
            assert await c.status(await c.open("/nothing")) == 404


async def test_h2_dripped_header_block_times_out(tunnel: Tunnel) -> None:
    """Even after authenticating, a header block must be complete within head_timeout."""
    with trio.fail_after(FAST.head_timeout + 5):
        async with await connect(tunnel, "h2") as s:
            c = H2Raw(s)
            assert await c.status(await c.open("/nothing")) == 404
            sid = c.conn.get_next_available_stream_id()
            block = _header_block(c, [*REQUEST_HEADERS, ("authorization", AUTH)])
            await s.send_all(hyperframe.frame.HeadersFrame(sid, block[:1]).serialize())

            async def drip() -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    for i in range(1, len(block) - 1):
                        frame = hyperframe.frame.ContinuationFrame(sid, block[i : i + 1])
                        await s.send_all(frame.serialize())
                        await trio.sleep(0.2)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drip)
                assert await _until_goaway(c) is not None
                nursery.cancel_scope.cancel()
        await still_serving(tunnel)


async def test_h2_error_body_waits_for_a_shut_window(tunnel: Tunnel) -> None:
    """A client may start with a window of 0: the 401 body is sent once it opens,
    never cut short under its Content-Length."""
    with trio.fail_after(10):
        async with await connect(tunnel, "h2") as s:
            c = H2Raw(s)
            c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
            await c.flush()
            for _ in range(3):  # the proxy's SETTINGS ACK
                if any(isinstance(ev, h2.events.SettingsAcknowledged) for ev in await c.events()):
                    break
            sid = await c.open("/nothing", auth=False)
            assert await c.status(sid) == 401
            c.conn.increment_flow_control_window(1000, sid)
            await c.flush()
            body = b""
            ended = False
            while not ended:
                for ev in await c.events():  # InvalidBodyLengthError here if cut short
                    if isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                        body += ev.data
                    ended |= isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid
            assert body == b"authentication required\n"


async def test_h2_autodiscover_body_must_arrive_in_time(tunnel: Tunnel) -> None:
    with trio.fail_after(FAST.head_timeout + 5):
        async with await connect(tunnel, "h2") as s:
            c = H2Raw(s)
            sid = await c.open("/autodiscover/autodiscover.xml")  # and no body, no end
            assert await c.status(sid) == 408


async def test_credential_checks_per_address_are_bounded(
    nursery: trio.Nursery, backend: Backend, tmp_path
) -> None:
    """However many streams one address opens, at most max_auth_checks_per_address
    (expensive) credential checks are in progress at once; the others are refused at
    once with 503 and Retry-After (not checked, so not 401), the checked ones get 401."""
    running = peak = 0

    async def slow(user: str, password: str, address: str | None) -> bool:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(0.1)  # a scrypt derivation's worth
        running -= 1
        return (user, password) == (USER, PASSWORD)

    config = replace(FAST, max_auth_checks_per_address=3, max_auth_checks=8)
    allow = AllowList.for_database(backend.database, backend.epm_port, [])
    tunnel = await start_tunnel(nursery, backend, tmp_path, config, allow, authenticate=slow)
    with trio.fail_after(10):
        async with await connect(tunnel, "h2") as s:
            c = H2Raw(s)
            sids = []
            for i in range(12):
                guess = "Basic " + base64.b64encode(f"{USER}:guess{i}".encode()).decode()
                sid = c.conn.get_next_available_stream_id()
                c.conn.send_headers(sid, [*REQUEST_HEADERS, ("authorization", guess)])
                sids.append(sid)
            await c.flush()
            statuses: dict[int, int] = {}
            retry: dict[int, bytes | None] = {}
            while len(statuses) < len(sids):
                for ev in await c.events():
                    if isinstance(ev, h2.events.ResponseReceived):
                        headers = dict(ev.headers)
                        statuses[ev.stream_id] = int(headers[b":status"])
                        retry[ev.stream_id] = headers.get(b"retry-after")
            assert sorted(statuses.values()) == [401] * 3 + [503] * 9
            assert all(retry[sid] == b"1" for sid in sids if statuses[sid] == 503)
    assert peak == 3
    await still_serving(tunnel)


async def _raw_vc(
    tunnel: Tunnel,
) -> tuple[trio.SSLStream[trio.SocketStream], trio.SSLStream[trio.SocketStream]]:
    path = f"/rpc/rpcproxy.dll?localhost:{tunnel.backend.epm_port}"
    out_s, in_s = await connect(tunnel), await connect(tunnel)
    await out_s.send_all(request("RPC_OUT_DATA", path, 76))
    await out_s.send_all(rts.conn_a1(b"k" * 16, b"o" * 16, 262144))
    await in_s.send_all(request("RPC_IN_DATA", path, 1 << 30))
    await in_s.send_all(rts.conn_b1(b"k" * 16, b"i" * 16, b"a" * 16, keepalive_ms=300000))
    return out_s, in_s


async def _out_kinds(stream: trio.abc.ReceiveStream, count: int) -> list[rts.Kind]:
    """The kinds of the first ``count`` RTS PDUs on a raw OUT channel."""
    pdus = await read_out_pdus(stream, count)
    return [rts.classify(rts.decode_rts(p)) for p in pdus]


async def test_idle_out_channel_gets_pings(
    nursery: trio.Nursery, backend: Backend, tmp_path
) -> None:
    tunnel = await start_tunnel(
        nursery, backend, tmp_path, config=replace(FAST, keepalive_interval=0.05)
    )
    with trio.fail_after(10):
        out_s, in_s = await _raw_vc(tunnel)
        async with out_s, in_s:
            kinds = await _out_kinds(out_s, 4)
        assert kinds == [rts.Kind.CONN_A3, rts.Kind.CONN_C2, rts.Kind.PING, rts.Kind.PING]
        await still_serving(tunnel)


async def test_recycling_an_unknown_virtual_connection_is_refused(tunnel: Tunnel) -> None:
    path = f"/rpc/rpcproxy.dll?localhost:{tunnel.backend.epm_port}"
    recycle = rts_recycling.in_r2_a1(b"k" * 16, b"i" * 16, b"j" * 16)
    with trio.fail_after(10):
        async with await connect(tunnel) as s:
            await s.send_all(request("RPC_IN_DATA", path, 1 << 30))
            await s.send_all(recycle)
            answer = await read_until_closed(s)
        assert answer.startswith(b"HTTP/1.0 503 RPC Error: 6c0\r\n")
        await still_serving(tunnel)


async def test_out_content_length_is_never_exceeded(
    nursery: trio.Nursery, backend: Backend, tmp_path
) -> None:
    # A PDU larger than a whole OUT channel can never be sent, recycling or not.
    config = replace(FAST, out_content_length=8192, out_recycle_threshold=2048)
    tunnel = await start_tunnel(nursery, backend, tmp_path, config=config)
    with trio.fail_after(10):
        async with rpc_stream(tunnel, "h1") as stream, open_rpc_client(stream) as rpc:
            ctx = await rpc.bind(ECHO)
            assert await rpc.call(ctx, 0, b"small") == b"small"
            with pytest.raises(ConnectionClosed):
                await rpc.call(ctx, 1, (20000).to_bytes(4, "little"))  # needs > 8 KiB on OUT
        await still_serving(tunnel)


async def test_h2_connection_left_idle_after_its_last_stream_is_closed(tunnel: Tunnel) -> None:
    """The idle deadline restarts when the last stream ends, not only after a read: a
    client that got its 401 and then says nothing is dropped after FAST's idle time."""
    async with await connect(tunnel, "h2") as stream:
        raw = H2Raw(stream)
        await raw.flush()
        await raw.events()  # the proxy's SETTINGS, acknowledged now
        await trio.sleep(0.5)  # the proxy has read our ACK
        await raw.open("/nothing", auth=False)
        status = None
        with trio.fail_after(10):
            while status is None:  # read without ever sending again
                data = await stream.receive_some(65536)
                for event in raw.conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"]
        assert status == b"401"
        closed = False
        with trio.move_on_after(FAST.idle_timeout + 5):
            try:
                while await stream.receive_some(65536):
                    pass
                closed = True
            except trio.BrokenResourceError:
                closed = True
        assert closed, "the proxy kept an idle h2 connection with no stream open"


async def test_a_silent_virtual_connection_ends_after_its_idle_timeout(
    nursery: trio.Nursery, backend: Backend, tmp_path
) -> None:
    tunnel = await start_tunnel(
        nursery, backend, tmp_path, config=replace(FAST, vc_idle_timeout=0.5)
    )
    with trio.fail_after(10):
        out_s, in_s = await _raw_vc(tunnel)
        async with out_s, in_s:
            assert await _out_kinds(out_s, 2) == [rts.Kind.CONN_A3, rts.Kind.CONN_C2]
            await read_until_closed(out_s)  # the VC ends: the proxy closes its OUT channel
        await still_serving(tunnel)


async def test_a_caller_that_pauses_reading_keeps_its_virtual_connection(tunnel: Tunnel) -> None:
    # Our HTTP/1.1 client acknowledges OUT data on receipt, and stops receiving while
    # the caller does not read: a pause longer than the proxy's send timeout must stop
    # the proxy by flow control, not block it on a full socket (which ends the VC).
    size = 12 << 20
    with trio.fail_after(60):
        async with rpc_stream(tunnel, "h1") as stream, open_rpc_client(stream) as rpc:
            ctx = await rpc.bind(ECHO)
            call_id = rpc.core.request(ctx, 1, size.to_bytes(4, "little"))  # "expand"
            await stream.send_all(rpc.core.data_to_send())
            await trio.sleep(tunnel.config.send_timeout * 1.5)
            stub = None
            while stub is None:
                data = await stream.receive_some()
                assert data, "the virtual connection ended"
                for event in rpc.core.receive_data(data):
                    assert isinstance(event, ResponseReceived) and event.call_id == call_id
                    stub = event.stub
            assert stub == bytes(i & 0xFF for i in range(size))
            assert await rpc.call(ctx, 0, b"still here") == b"still here"


@pytest.mark.parametrize("transport", ["h1", "h2"])
async def test_a_failing_call_ends_its_connection_only(tunnel: Tunnel, transport: str) -> None:
    # With an attached backend the call runs in the proxy's nursery: a bug there must not
    # stop the proxy (over TCP the service's own connection handler contains it).
    with trio.fail_after(20):
        async with rpc_stream(tunnel, transport) as stream, open_rpc_client(stream) as rpc:
            ctx = await rpc.bind(ECHO)
            with pytest.raises(ConnectionClosed):
                await rpc.call(ctx, 2, b"")
        await still_serving(tunnel)


@pytest.mark.parametrize("transport", ["h1", "h2"])
async def test_a_bind_nak_reaches_the_client(tunnel: Tunnel, transport: str) -> None:
    with trio.fail_after(20):
        async with rpc_stream(tunnel, transport) as stream, open_rpc_client(stream) as rpc:
            rpc.core.assoc_group_id = 0x5EED  # no such association group: bind_nak
            with pytest.raises(BindRejected):
                await rpc.bind(ECHO)
        await still_serving(tunnel)


async def test_an_incomplete_pdu_through_the_tunnel_ends_after_the_receive_timeout(
    nursery: trio.Nursery, tmp_path
) -> None:
    """The attached RPC server judges a relayed connection as it judges a stream: an
    incomplete PDU ends it after ``receive_timeout``, however long the idle limit.
    (HTTP/2 only: the HTTP/1.1 proxy frames PDUs itself, so a partial one stays in its
    channel, under the virtual connection's idle timeout.)"""
    transport = "h2"
    config = RpcConfig(idle_timeout=600, receive_timeout=0.5)
    for attached in (False, True):
        backend = await make_backend(nursery, attached=attached, config=config)
        tunnel = await start_tunnel(nursery, backend, tmp_path / str(attached))
        with trio.fail_after(20):
            async with rpc_stream(tunnel, transport) as stream:
                await stream.send_all(b"\x05\x00\x0b\x03\x10\x00\x00\x00")  # half a header
                while not backend.server.active_connections:  # noqa: ASYNC110 (a counter)
                    await trio.sleep(0.05)
                while backend.server.active_connections:  # noqa: ASYNC110 (a counter)
                    await trio.sleep(0.1)
        await still_serving(tunnel)


@pytest.mark.parametrize("transport", ["h1", "h2"])
async def test_the_rpc_servers_idle_timeout_applies_through_the_tunnel(
    nursery: trio.Nursery, tmp_path, transport: str
) -> None:
    for attached in (False, True):
        backend = await make_backend(nursery, attached=attached, config=RpcConfig(idle_timeout=0.5))
        tunnel = await start_tunnel(nursery, backend, tmp_path / str(attached))
        with trio.fail_after(20):
            async with rpc_stream(tunnel, transport) as stream, open_rpc_client(stream) as rpc:
                ctx = await rpc.bind(ECHO)
                assert await rpc.call(ctx, 0, b"hi") == b"hi"
                assert backend.server.active_connections == 1
                while backend.server.active_connections:  # noqa: ASYNC110 (a counter)
                    await trio.sleep(0.1)
                with pytest.raises(ConnectionClosed):
                    await rpc.call(ctx, 0, b"hi")
