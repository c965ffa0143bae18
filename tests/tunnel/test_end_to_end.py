"""Our DCE/RPC client reaches a real endpoint mapper through our tunnel, over HTTP/2 and
over HTTP/1.1 (RPC over HTTP v2), with real TLS on loopback."""

from __future__ import annotations

import os

import pytest
import trio
from tunnel_helpers import ECHO, PASSWORD, USER, Tunnel

from dcerpc.client import open_rpc_client
from endpoint_mapper import EPM_SYNTAX, lookup_on
from tunnel.transport import TunnelError, open_tunnel_stream

pytestmark = pytest.mark.parametrize("http2", [True, False], ids=["h2", "http1.1"])


async def test_endpoint_mapper_lookup_through_the_tunnel(tunnel: Tunnel, http2: bool) -> None:
    with trio.fail_after(20):
        async with (
            open_tunnel_stream(
                tunnel.url,
                "127.0.0.1",
                tunnel.backend.epm_port,
                username=USER,
                password=PASSWORD,
                http2=http2,
                fingerprint=tunnel.info.fingerprint,
            ) as stream,
            open_rpc_client(stream) as rpc,
        ):
            entries = await lookup_on(rpc)
    interfaces = {e.interface for e in entries}
    assert EPM_SYNTAX in interfaces and ECHO in interfaces
    assert {e.tower.port for e in entries} == {tunnel.backend.epm_port}


async def test_multi_fragment_stubs_both_ways(tunnel: Tunnel, http2: bool) -> None:
    payload = os.urandom(300_000)
    with trio.fail_after(30):
        async with (
            open_tunnel_stream(
                tunnel.url,
                "mail.example.test",
                tunnel.backend.epm_port,
                username=USER,
                password=PASSWORD,
                http2=http2,
                fingerprint=tunnel.info.fingerprint,
            ) as stream,
            open_rpc_client(stream) as rpc,
        ):
            ctx = await rpc.bind(ECHO)
            assert await rpc.call(ctx, 0, payload) == payload
            # A large reply only: the OUT direction alone crosses several windows.
            big = await rpc.call(ctx, 1, (2_000_000).to_bytes(4, "little"))
            assert big == bytes(i & 0xFF for i in range(2_000_000))


async def test_wrong_password_is_refused(tunnel: Tunnel, http2: bool) -> None:
    with trio.fail_after(10), pytest.raises(TunnelError) as info:
        async with open_tunnel_stream(
            tunnel.url,
            "127.0.0.1",
            tunnel.backend.epm_port,
            username=USER,
            password="wrong",
            http2=http2,
            fingerprint=tunnel.info.fingerprint,
        ):
            pass
    assert info.value.status == 401


async def test_target_off_the_allow_list_is_refused(tunnel: Tunnel, http2: bool) -> None:
    with trio.fail_after(10), pytest.raises(TunnelError) as info:
        async with open_tunnel_stream(
            tunnel.url,
            "10.0.0.1",
            tunnel.backend.epm_port,
            username=USER,
            password=PASSWORD,
            http2=http2,
            fingerprint=tunnel.info.fingerprint,
        ):
            pass
    if http2:
        assert info.value.status == 403
    else:
        assert (info.value.status, info.value.rpc_error) == (503, 0x6BA)


async def test_a_wrong_pin_never_reaches_http(tunnel: Tunnel, http2: bool) -> None:
    with trio.fail_after(10), pytest.raises(TunnelError, match="pinned"):
        async with open_tunnel_stream(
            tunnel.url,
            "127.0.0.1",
            tunnel.backend.epm_port,
            username=USER,
            password=PASSWORD,
            http2=http2,
            fingerprint="00" * 32,
        ):
            pass
