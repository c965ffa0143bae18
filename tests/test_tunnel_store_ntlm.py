"""Through a real ``serve``'s HTTPS tunnel with impacket (issue 18, item 5): NTLM to the
proxy, then an NTLM bind at PKT_PRIVACY to the store itself, a logon and a batch; the
proxy's throttle counts NTLM failures; Basic still works, and fills in a missing NT hash.

impacket's ``ncacn_http`` transport is a client no one here wrote: it authenticates each
RPC over HTTP channel to the proxy ([MS-RPCH] 3.2.2.5), then the DCE/RPC bind through the
tunnel authenticates again with the store's own security provider.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import trio
from impacket.dcerpc.v5 import rpcrt
from impacket.dcerpc.v5 import transport as imp_transport
from impacket.dcerpc.v5.rpch import RPCProxyClientException
from impacket.uuid import uuidtup_to_bin
from serve_helpers import start_server

from dcerpc.syntax import MSGPACK
from mapi.access.logon import Challenge, KdfParams, client_response
from mapi.wire import OP_CONNECT, OP_EXECUTE, STORE_SYNTAX

PASSWORDS = {"alice": "alice-Secret-41", "bob": "bob-Secret-77"}


def _store_through_tunnel(tunnel_port: int, store_port: int, user: str, password: str) -> list[Any]:
    """impacket: the proxy (NTLM, or Basic), then the store at PKT_PRIVACY with NTLM, the
    store's challenge-response logon and one batch (open the store, read its name)."""
    tr = imp_transport.DCERPCTransportFactory(f"ncacn_http:127.0.0.1[{store_port}]")
    tr.set_rpc_proxy_url(f"https://127.0.0.1:{tunnel_port}/rpc/rpcproxy.dll")
    tr.set_credentials(user, password, "")
    tr.set_connect_timeout(15)
    dce = tr.get_dce_rpc()
    dce.set_credentials(user, password, "")
    dce.set_auth_type(rpcrt.RPC_C_AUTHN_WINNT)
    dce.set_auth_level(rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    try:
        dce.connect()
    except Exception:
        # impacket leaves the channels it opened unclosed when the proxy refuses.
        for channel in tr._RPCProxyClient__channels.values():
            channel.close()
        raise
    try:
        dce.bind(
            uuidtup_to_bin((str(STORE_SYNTAX.uuid), "1.0")),
            transfer_syntax=(str(MSGPACK.uuid), f"{MSGPACK.major}.{MSGPACK.minor}"),
        )

        def call(opnum: int, request: dict[str, Any]) -> dict[str, Any]:
            dce.call(opnum, msgpack.packb(request, use_bin_type=True))
            return dict(msgpack.unpackb(dce.recv(), raw=False))

        first = call(OP_CONNECT, {"user": user})
        kdf = first["kdf"]
        challenge = Challenge(
            user, first["salt"], KdfParams(kdf["n"], kdf["r"], kdf["p"]), first["nonce"]
        )
        cnonce, response = client_response(password, challenge)
        reply = call(
            OP_CONNECT,
            {"user": user, "nonce": first["nonce"], "cnonce": cnonce, "response": response},
        )
        assert reply["hresult"] == 0 and reply["user"] == user, reply
        batch = [["open_store", {"out": 1}], ["get_props", {"h": 1, "tags": [0x3001001F]}]]
        answer = call(OP_EXECUTE, {"session": reply["session"], "ops": batch})
        assert answer["hresult"] == 0, answer
        return list(answer["results"])
    finally:
        dce.disconnect()


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Any) -> Any:
    return await start_server(nursery, tmp_path / "data", PASSWORDS)


async def test_impacket_ntlm_to_the_proxy_then_a_sealed_store_session(server: Any) -> None:
    assert server.tunnel is not None
    with trio.fail_after(90):
        results = await trio.to_thread.run_sync(
            _store_through_tunnel,
            server.tunnel.port,
            server.service_ports["store"],
            "alice",
            PASSWORDS["alice"],
        )
    assert [r[0] for r in results] == [0, 0]
    assert results[1][1][0][1]  # the store's display name came back, decrypted


async def test_wrong_ntlm_passwords_at_the_proxy_count_in_the_logon_throttle(
    server: Any,
) -> None:
    """Each wrong NTLM password is a 401 and a failure in the shared throttle; past its
    free failures the guesser's address is held back, the right password included."""
    assert server.tunnel is not None and server.authenticator is not None
    throttle = server.authenticator.throttle
    args = (server.tunnel.port, server.service_ports["store"], "alice")
    with trio.fail_after(120):
        for _ in range(12):  # 5 free failures per (user, address); bounded
            with pytest.raises(RPCProxyClientException, match="401"):
                await trio.to_thread.run_sync(_store_through_tunnel, *args, "wrong-password")
            if throttle.delay("alice", "127.0.0.1", trio.current_time()) > 0:
                break
        assert throttle.delay("alice", "127.0.0.1", trio.current_time()) > 0
        with pytest.raises(RPCProxyClientException, match="401"):
            await trio.to_thread.run_sync(_store_through_tunnel, *args, PASSWORDS["alice"])
