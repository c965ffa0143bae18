"""Interop: impacket's ncacn_http transport (RPC over HTTP v2, an independent client)
through our proxy to our endpoint mapper, authenticating with Basic.

impacket's AUTO mode first sends ``RPC_IN_DATA /rpc/rpcproxy.dll`` (no query) with an
NTLM type 1 and needs a 401; we offer Basic only, so it switches to Basic. It does not
verify certificates. Its string binding only accepts RpcProxy ports 80/443, so the
proxy URL is set directly. impacket is blocking: it runs in a worker thread."""

from __future__ import annotations

import pytest
import trio
from impacket.dcerpc.v5 import epm, transport
from impacket.dcerpc.v5.rpch import RPCProxyClientException
from tunnel_helpers import PASSWORD, USER, Tunnel


def _impacket_lookup(tunnel_port: int, server: str, epm_port: int, password: str) -> list[str]:
    rpctransport = transport.DCERPCTransportFactory(f"ncacn_http:{server}[{epm_port}]")
    rpctransport.set_rpc_proxy_url(f"https://127.0.0.1:{tunnel_port}/rpc/rpcproxy.dll")
    rpctransport.set_credentials(USER, password)
    rpctransport.set_connect_timeout(10)
    dce = rpctransport.get_dce_rpc()
    try:
        dce.connect()
    except Exception:
        # impacket leaves the channels it opened unclosed when the proxy refuses.
        for channel in rpctransport._RPCProxyClient__channels.values():
            channel.close()
        raise
    try:
        entries = epm.hept_lookup(None, dce=dce)
        return [epm.PrintStringBinding(e["tower"]["Floors"]) for e in entries]
    finally:
        dce.disconnect()


async def test_impacket_hept_lookup_through_our_proxy(tunnel: Tunnel) -> None:
    with trio.fail_after(30):
        bindings = await trio.to_thread.run_sync(
            _impacket_lookup, tunnel.info.port, "127.0.0.1", tunnel.backend.epm_port, PASSWORD
        )
    assert f"ncacn_ip_tcp:127.0.0.1[{tunnel.backend.epm_port}]" in bindings
    assert len(bindings) == 2  # the endpoint mapper and the echo interface


async def test_impacket_twice_in_a_row_and_with_a_server_name(tunnel: Tunnel) -> None:
    with trio.fail_after(30):
        for server in ("localhost", "mail.example.test"):
            bindings = await trio.to_thread.run_sync(
                _impacket_lookup, tunnel.info.port, server, tunnel.backend.epm_port, PASSWORD
            )
            assert len(bindings) == 2


async def test_impacket_sees_401_for_a_wrong_password(tunnel: Tunnel) -> None:
    with trio.fail_after(30), pytest.raises(RPCProxyClientException, match="401"):
        await trio.to_thread.run_sync(
            _impacket_lookup, tunnel.info.port, "127.0.0.1", tunnel.backend.epm_port, "nope"
        )


async def test_impacket_sees_rpc_error_6ba_off_the_allow_list(tunnel: Tunnel) -> None:
    with trio.fail_after(30), pytest.raises(RPCProxyClientException) as info:
        await trio.to_thread.run_sync(
            _impacket_lookup, tunnel.info.port, "10.1.2.3", tunnel.backend.epm_port, PASSWORD
        )
    assert info.value.error_code == 0x6BA
