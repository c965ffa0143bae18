"""The tunnel client bounds its wait for a proxy's flow-control credit (send_timeout), so a
proxy that stops reading fails the tunnel instead of hanging the caller: what lets the
RPC client send small requests without a deadline of its own (dcerpc.client)."""

from __future__ import annotations

import socket

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trio

from dcerpc.client import RpcClient
from tunnel.config import TunnelConfig
from tunnel.drivers.h2_client import H2TunnelStream, h2_tunnel


async def stingy_proxy(stream: trio.SocketStream, window: int) -> None:
    """An h2 server that answers 200 and then never returns any credit."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    await stream.send_all(conn.data_to_send())
    while data := await stream.receive_some(65536):
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                conn.send_headers(event.stream_id, [(":status", "200")])
        await stream.send_all(conn.data_to_send())  # settings acks; never a WINDOW_UPDATE


async def test_a_proxy_that_grants_no_credit_fails_the_send() -> None:
    a, b = socket.socketpair()
    client_end = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    proxy_end = trio.SocketStream(trio.socket.from_stdlib_socket(b))
    config = TunnelConfig(port=0, send_timeout=0.5)
    assert H2TunnelStream.bounded_waits and RpcClient  # what dcerpc.client relies on
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stingy_proxy, proxy_end, 1000)
        with trio.fail_after(10):
            async with h2_tunnel(client_end, config, "proxy", "/", [], open_timeout=5) as tunnel:
                await trio.sleep(0.1)  # the proxy's SETTINGS (a 1000-byte window) are in
                with pytest.raises(trio.BrokenResourceError, match="stopped reading"):
                    await tunnel.send_all(b"x" * 5000)
        nursery.cancel_scope.cancel()
    await trio.aclose_forcefully(proxy_end)
