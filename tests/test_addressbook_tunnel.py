"""The address book through the HTTPS tunnel on Outlook Anywhere's well-known ports.

The allow list (unit): our names only (configured, ``localhost``, the NetBIOS and DNS
names the tunnel's NTLM CHALLENGE announces), the registered ports as before, and
6001/6002/6004 mapped to the store's and the address book's ports; nothing else opens.

End to end: a real ``serve`` on loopback and impacket's ``ncacn_http`` transport (no
one here wrote it) with NTLM at the proxy and NTLM at packet privacy inside. Given no
RPC server name (``ncacn_http:[6004]``), impacket takes the NetBIOS name from the
proxy's NTLM CHALLENGE, as ``exchanger.py`` does; the proxy accepts it and leads 6004
to NSPI, 6002 to the referral service (and NSPI), 6001 to the store. Other names and
ports are refused with ``RPC Error: 6ba``. The proxy URL names the tunnel's dynamic
port (``set_rpc_proxy_url``); every wait is bounded.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from impacket.dcerpc.v5 import nspi, oxabref, rpcrt
from impacket.dcerpc.v5 import transport as imp_transport
from impacket.dcerpc.v5.rpch import RPCProxyClientException
from impacket.uuid import uuidtup_to_bin

from dcerpc.syntax import MSGPACK
from mapi.wire import STORE_SYNTAX
from mapi_anywhere.serve import tunnel_target_names, well_known_ports
from tests.serve_helpers import start_server
from tunnel.http_auth import server_names as tunnel_ntlm_names
from tunnel.policy import AllowList, Target

USERS = {"alice": "pw-alice-1", "bob": "pw-bob-1"}
NAME = 0x3001001F


def test_allow_list_maps_the_well_known_ports_for_our_names_only():
    names = tunnel_target_names(["mail.example.org"])
    assert "MAIL" in names  # the NTLM CHALLENGE's NetBIOS name
    allow = AllowList(
        names,
        lambda: {1135, 40001, 40002},
        well_known=well_known_ports({"store": 40001, "addressbook": 40002}),
    )
    for server in ("mail.example.org", "MAIL", "mail", "localhost", "127.0.0.1"):
        assert allow.resolve(Target(server.lower(), 6001)) == ("127.0.0.1", 40001)
        assert allow.resolve(Target(server.lower(), 6002)) == ("127.0.0.1", 40002)
        assert allow.resolve(Target(server.lower(), 6004)) == ("127.0.0.1", 40002)
        assert allow.resolve(Target(server.lower(), 40002)) == ("127.0.0.1", 40002)
        for port in (6003, 6005, 593, 135, 22, 443):
            assert allow.resolve(Target(server.lower(), port)) is None
    for stranger in ("evil.example", "mail.example.org.evil", "10.0.0.1", "mail2"):
        for port in (6001, 6002, 6004, 40002):
            assert allow.resolve(Target(stranger, port)) is None
    # No configured names: the CHALLENGE's default names are ours.
    default = tunnel_target_names([])
    assert tunnel_ntlm_names([]).netbios_computer in default
    # Without an address book, 6002/6004 lead nowhere.
    assert well_known_ports({"store": 5}) == {6001: 5}
    with pytest.raises(ValueError):
        AllowList(["x"], lambda: (), well_known={6004: 0})


@pytest.fixture
async def server(nursery, tmp_path):
    running = await start_server(nursery, tmp_path / "data", USERS, emails=True)
    await running.gal.refresh()
    return running


def _dce(tunnel_port: int, binding: str) -> Any:
    tr = imp_transport.DCERPCTransportFactory(binding)
    tr.set_rpc_proxy_url(f"https://127.0.0.1:{tunnel_port}/rpc/rpcproxy.dll")
    tr.set_credentials("alice", USERS["alice"], "")
    tr.set_connect_timeout(15)
    dce = tr.get_dce_rpc()
    dce.set_credentials("alice", USERS["alice"], "")
    dce.set_auth_type(rpcrt.RPC_C_AUTHN_WINNT)
    dce.set_auth_level(rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    try:
        dce.connect()
    except Exception:
        # impacket leaves the channels it opened unclosed when the proxy refuses.
        for channel in tr._RPCProxyClient__channels.values():
            channel.close()
        raise
    return dce


def _nspi_names(tunnel_port: int, binding: str) -> list[str]:
    dce = _dce(tunnel_port, binding)
    try:
        dce.bind(nspi.MSRPC_UUID_NSPI)
        handle = nspi.hNspiBind(dce)["contextHandle"]
        rows = nspi.hNspiQueryRows(dce, handle, Count=50, pPropTags=[NAME])["ppRows"]
        return [r[NAME] for r in nspi.simplifyPropertyRowSet(rows)]
    finally:
        dce.disconnect()


def _referral(tunnel_port: int, binding: str) -> str:
    dce = _dce(tunnel_port, binding)
    try:
        dce.bind(oxabref.MSRPC_UUID_OXABREF)
        resp = oxabref.hRfrGetNewDSA(dce, pUserDN="/o=mapi-anywhere/cn=alice")
        return str(resp["ppszServer"]).rstrip("\x00")
    finally:
        dce.disconnect()


def _store_bind(tunnel_port: int, binding: str) -> bool:
    dce = _dce(tunnel_port, binding)
    try:
        dce.bind(
            uuidtup_to_bin((str(STORE_SYNTAX.uuid), "1.0")),
            transfer_syntax=(str(MSGPACK.uuid), f"{MSGPACK.major}.{MSGPACK.minor}"),
        )
        return True
    finally:
        dce.disconnect()


async def test_well_known_ports_through_the_tunnel_with_the_challenge_name(server):
    port = server.tunnel.port
    with trio.fail_after(120):
        by_ntlm_name = await trio.to_thread.run_sync(_nspi_names, port, "ncacn_http:[6004]")
        on_6002 = await trio.to_thread.run_sync(_nspi_names, port, "ncacn_http:localhost[6002]")
        referral = await trio.to_thread.run_sync(_referral, port, "ncacn_http:[6002]")
        store = await trio.to_thread.run_sync(_store_bind, port, "ncacn_http:localhost[6001]")
    users = await trio.to_thread.run_sync(server.store.directory.list_users)
    expected = sorted((u.display_name for u in users if not u.hidden), key=str.casefold)
    assert by_ntlm_name == expected
    assert on_6002 == expected
    assert referral == server.addressbook.server_fqdn
    assert store


@pytest.mark.parametrize("binding", ["ncacn_http:evil.example[6004]", "ncacn_http:localhost[6003]"])
async def test_other_names_and_ports_stay_refused(server, binding):
    with trio.fail_after(60):
        with pytest.raises(RPCProxyClientException) as caught:
            await trio.to_thread.run_sync(_nspi_names, server.tunnel.port, binding)
    assert "6ba" in str(caught.value).lower()
