"""NTLM and Negotiate on the tunnel's HTTP/1.1 connections ([MS-RPCH] 3.2.2.5), Basic
with Windows user-name forms, HTTP/1.0 keep-alive channels, and NTLM refused on HTTP/2
with HTTP_1_1_REQUIRED: real processes and sockets on loopback (impacket, curl, raw
TLS connections), the proxy started with an in-memory NT-hash directory."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
import trio
from impacket import http as impacket_http
from impacket.dcerpc.v5 import epm, transport
from impacket.dcerpc.v5.rpch import RPCProxyClientException
from impacket.dcerpc.v5.rpcrt import RPC_C_AUTHN_LEVEL_PKT_PRIVACY, RPC_C_AUTHN_WINNT
from ntlm_helpers import (
    NtlmDirectory,
    RawConnection,
    impacket_lookup,
    ntlm_handshake,
    ntlm_header,
)
from tunnel_helpers import (
    AUTH,
    FAST,
    PASSWORD,
    USER,
    Backend,
    Tunnel,
    connect,
    start_tunnel,
    still_serving,
)

from dcerpc.auth_context import ServerSecurity
from dcerpc.ntlm import NtlmInitiator
from dcerpc.server import RpcServer
from endpoint_mapper import EPM_SYNTAX, EndpointDatabase, Tower, epm_interface, mgmt_interface

AUTODISCOVER = "/autodiscover/autodiscover.xml"
REQUEST = (
    b'<?xml version="1.0"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
    b'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>alice@example.test'
    b"</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/"
    b"autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request>"
    b"</Autodiscover>"
)
ECHO_PATH = "/rpc/rpcproxy.dll?localhost:593"


@pytest.fixture
def directory() -> NtlmDirectory:
    return NtlmDirectory()


@pytest.fixture
async def opened() -> AsyncIterator[list[RawConnection]]:
    """Raw connections a test opened, closed after it."""
    conns: list[RawConnection] = []
    yield conns
    for conn in conns:
        await trio.aclose_forcefully(conn.stream)


async def _raw(tunnel: Tunnel, opened: list[RawConnection]) -> RawConnection:
    conn = RawConnection(await connect(tunnel))
    opened.append(conn)
    return conn


@pytest.fixture
async def ntlm_tunnel(
    nursery: trio.Nursery, backend: Backend, tmp_path: Path, directory: NtlmDirectory
) -> Tunnel:
    return await start_tunnel(nursery, backend, tmp_path / "data", authenticate=directory)


async def _lookup(tunnel: Tunnel, **kwargs: object) -> list[str]:
    with trio.fail_after(30):
        return await trio.to_thread.run_sync(
            lambda: impacket_lookup(
                tunnel.info.port,
                "127.0.0.1",
                tunnel.backend.epm_port,
                **kwargs,  # type: ignore[arg-type]
            )
        )


# -- impacket's ncacn_http client ---------------------------------------------------------------


async def test_impacket_authenticates_with_ntlm_and_binds_through_the_tunnel(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory
) -> None:
    bindings = await _lookup(ntlm_tunnel)
    assert f"ncacn_ip_tcp:127.0.0.1[{ntlm_tunnel.backend.epm_port}]" in bindings
    # Each channel's connection did its own handshake; Basic was never tried.
    assert [u for u, _ in directory.succeeded] == [USER, USER]
    assert directory.basic == [] and directory.failed == []


async def test_impacket_ntlm_with_a_domain(ntlm_tunnel: Tunnel, directory: NtlmDirectory) -> None:
    assert len(await _lookup(ntlm_tunnel, domain="EXAMPLE")) == 2
    assert (USER, "EXAMPLE") in directory.lookups


async def test_impacket_ntlm_wrong_password_is_401_and_counted(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory
) -> None:
    with pytest.raises(RPCProxyClientException, match="401"):
        await _lookup(ntlm_tunnel, password="wrong")
    assert directory.failed and directory.failed[0] == (USER, "127.0.0.1")
    assert directory.succeeded == []
    await still_serving(ntlm_tunnel)


async def test_impacket_ntlm_held_back_by_the_throttle(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory
) -> None:
    directory.held.add(USER)
    with pytest.raises(RPCProxyClientException, match="401"):
        await _lookup(ntlm_tunnel)
    # Refused before the NT hash was looked up, and not counted again.
    assert directory.lookups == [] and directory.failed == []


async def test_impacket_basic_when_only_basic_is_offered(
    nursery: trio.Nursery, backend: Backend, tmp_path: Path, directory: NtlmDirectory
) -> None:
    config = replace(FAST, auth_schemes=("basic",))
    tunnel = await start_tunnel(nursery, backend, tmp_path / "d", config, authenticate=directory)
    # impacket's Basic sends DOMAIN\user: the bare name reaches the directory.
    assert len(await _lookup(tunnel, domain="EXAMPLE")) == 2
    assert directory.basic and set(directory.basic) == {USER}
    assert directory.succeeded == []


async def test_impacket_basic_chosen_by_the_client(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory
) -> None:
    assert len(await _lookup(ntlm_tunnel, auth_type=impacket_http.AUTH_BASIC)) == 2
    assert set(directory.basic) == {USER} and directory.succeeded == []


async def test_impacket_http10_keep_alive_channels_with_ntlm(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory
) -> None:
    """Channel requests as HTTP/1.0 + Connection: Keep-Alive (as Samba sends them): the
    401 keeps the connection, the AUTHENTICATE and the channel follow on it."""
    assert len(await _lookup(ntlm_tunnel, http10=True)) == 2
    assert [u for u, _ in directory.succeeded] == [USER, USER]


# -- curl -----------------------------------------------------------------------------------------


def _curl(port: int, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "-sk", "--max-time", "20", "-o", "-", "-w", "\n%{http_code} %{http_version}",
         *args, "-H", "Content-Type: text/xml", "--data-binary", REQUEST.decode(),
         f"https://127.0.0.1:{port}{AUTODISCOVER}"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@needs_curl
@pytest.mark.parametrize("user", [USER, f"EXAMPLE\\{USER}", f"\\{USER}", f"{USER}@example.test"])
@pytest.mark.parametrize("backend", ["tcp"], indirect=True)
async def test_curl_ntlm_gets_the_autodiscover_document(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory, user: str
) -> None:
    with trio.fail_after(30):
        done = await trio.to_thread.run_sync(
            _curl, ntlm_tunnel.info.port, "--http1.1", "--ntlm", "-u", f"{user}:{PASSWORD}"
        )
    body, _, status = done.stdout.rpartition(b"\n")
    assert status.split()[0] == b"200", done
    assert b"<Autodiscover" in body and b"EXPR" in body
    assert [u for u, _ in directory.succeeded] == [USER]


@needs_curl
@pytest.mark.parametrize("backend", ["tcp"], indirect=True)
async def test_curl_ntlm_over_http2_is_sent_to_http11(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory
) -> None:
    """curl asks for h2 and tries NTLM there: RST_STREAM(HTTP_1_1_REQUIRED) makes it
    retry on HTTP/1.1, where the handshake succeeds."""
    with trio.fail_after(30):
        done = await trio.to_thread.run_sync(
            _curl, ntlm_tunnel.info.port, "--http2", "--ntlm", "-u", f"{USER}:{PASSWORD}"
        )
    body, _, status = done.stdout.rpartition(b"\n")
    assert status.split() == [b"200", b"1.1"], done
    assert b"<Autodiscover" in body


@needs_curl
@pytest.mark.parametrize("backend", ["tcp"], indirect=True)
async def test_curl_basic_name_forms(ntlm_tunnel: Tunnel, directory: NtlmDirectory) -> None:
    for user in (f"\\{USER}", f"EXAMPLE\\{USER}", f"{USER}@example.test"):
        for version in ("--http1.1", "--http2"):
            with trio.fail_after(30):
                done = await trio.to_thread.run_sync(
                    _curl, ntlm_tunnel.info.port, version, "--basic", "-u", f"{user}:{PASSWORD}"
                )
            assert done.stdout.rpartition(b"\n")[2].split()[0] == b"200", (user, version, done)
    assert set(directory.basic) == {USER}


# -- raw HTTP/1.1: the handshake, the connection's identity, HTTP/1.0 ---------------------------

pytestmark_tcp = pytest.mark.parametrize("backend", ["tcp"], indirect=True)


@pytestmark_tcp
@pytest.mark.parametrize("scheme", ["NTLM", "Negotiate"])
async def test_handshake_then_the_connection_is_the_users(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory, scheme: str, opened: list[RawConnection]
) -> None:
    with trio.fail_after(20):
        conn = await _raw(ntlm_tunnel, opened)
        first = await conn.request("POST", AUTODISCOVER, {"Host": "x", "Content-Length": "0"})
        assert first.status == 401
        offers = first.headers("www-authenticate")
        assert offers == ["Negotiate", "NTLM", 'Basic realm="mapi-anywhere"']
        reply = await ntlm_handshake(conn, "POST", AUTODISCOVER, scheme=scheme, body=REQUEST)
        assert reply.status == 200 and b"<Autodiscover" in reply.body
        if scheme == "Negotiate":  # SPNEGO's last word (accept-completed + mechListMIC)
            assert reply.headers("www-authenticate")[0].startswith("Negotiate ")
        # Later requests on this connection are the user's without credentials...
        echo = await conn.request("RPC_IN_DATA", ECHO_PATH, {"Host": "x", "Content-Length": "0"})
        assert echo.status == 200
        # ...and a new connection must authenticate on its own.
        other = await _raw(ntlm_tunnel, opened)
        again = await other.request("RPC_IN_DATA", ECHO_PATH, {"Host": "x", "Content-Length": "0"})
        assert again.status == 401
    assert [u for u, _ in directory.succeeded] == [USER]


@pytestmark_tcp
@pytest.mark.parametrize(
    ("user", "domain"),
    [(USER, ""), (f"EXAMPLE\\{USER}", ""), (f"\\{USER}", ""), (f"{USER}@example.test", ""),
     (USER, "EXAMPLE")],
)  # fmt: skip
async def test_ntlm_user_name_forms(
    ntlm_tunnel: Tunnel,
    directory: NtlmDirectory,
    user: str,
    domain: str,
    opened: list[RawConnection],
) -> None:
    with trio.fail_after(20):
        conn = await _raw(ntlm_tunnel, opened)
        reply = await ntlm_handshake(conn, "RPC_IN_DATA", ECHO_PATH, user=user, domain=domain)
    assert reply.status == 200, reply.head
    assert directory.succeeded == [(USER, "127.0.0.1")]
    assert directory.lookups[0][0] == USER


@pytestmark_tcp
@pytest.mark.parametrize("user", [f"\\{USER}", f"EXAMPLE\\{USER}", f"{USER}@example.test"])
async def test_basic_user_name_forms(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory, user: str, opened: list[RawConnection]
) -> None:
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    with trio.fail_after(20):
        conn = await _raw(ntlm_tunnel, opened)
        reply = await conn.request(
            "RPC_IN_DATA", ECHO_PATH,
            {"Host": "x", "Content-Length": "0", "Authorization": f"Basic {token}"},
        )  # fmt: skip
    assert reply.status == 200
    assert directory.basic == [USER]


@pytestmark_tcp
async def test_http10_keep_alive_handshake_and_requests(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory, opened: list[RawConnection]
) -> None:
    keep = {"Connection": "Keep-Alive"}
    with trio.fail_after(20):
        conn = await _raw(ntlm_tunnel, opened)
        reply = await ntlm_handshake(conn, "RPC_IN_DATA", ECHO_PATH, version="HTTP/1.0", extra=keep)
        assert reply.status == 200 and "keep-alive" in reply.head.lower()
        for _ in range(3):  # the connection stays, and stays the user's
            echo = await conn.request(
                "RPC_IN_DATA", ECHO_PATH, {**keep, "Content-Length": "0"}, version="HTTP/1.0"
            )
            assert echo.status == 200
        # Without keep-alive an HTTP/1.0 answer closes the connection, as before.
        last = await conn.request(
            "RPC_IN_DATA", ECHO_PATH, {"Content-Length": "0"}, version="HTTP/1.0"
        )
        assert last.status == 200
        assert await conn.closed()


# -- HTTP/2 ---------------------------------------------------------------------------------------


@pytestmark_tcp
@pytest.mark.parametrize("scheme", ["NTLM", "Negotiate"])
async def test_ntlm_on_http2_is_reset_with_http_1_1_required(
    ntlm_tunnel: Tunnel, scheme: str, opened: list[RawConnection]
) -> None:
    token = NtlmInitiator(USER, PASSWORD).step()
    with trio.fail_after(20):
        stream = await connect(ntlm_tunnel, "h2")
        opened.append(RawConnection(stream))
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        headers = [
            (":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
            (":path", AUTODISCOVER), *ntlm_header(scheme, token).items(),
        ]  # fmt: skip
        conn.send_headers(1, [(k.lower(), v) for k, v in headers], end_stream=True)
        await stream.send_all(conn.data_to_send())
        code = None
        while code is None:
            data = await stream.receive_some(65536)
            assert data, "closed without an answer"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamReset):
                    code = event.error_code
                assert not isinstance(event, h2.events.ResponseReceived)
            await stream.send_all(conn.data_to_send())
        assert code == 0xD  # HTTP_1_1_REQUIRED
        # Basic still works on the same HTTP/2 connection.
        conn.send_headers(
            3,
            [(":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
             (":path", AUTODISCOVER), ("authorization", AUTH)],
            end_stream=False,
        )  # fmt: skip
        conn.send_data(3, REQUEST, end_stream=True)
        await stream.send_all(conn.data_to_send())
        status = None
        while status is None:
            data = await stream.receive_some(65536)
            assert data
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
            await stream.send_all(conn.data_to_send())
        assert status == b"200"


# -- the store sees who the proxy authenticated ------------------------------------------------


@pytest.mark.parametrize("backend", ["attached"], indirect=True)
async def test_attached_backend_sees_the_proxy_user(
    ntlm_tunnel: Tunnel, directory: NtlmDirectory
) -> None:
    seen: list[object] = []
    server = ntlm_tunnel.backend.server
    original = server.attach

    def spy(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        seen.append(kwargs.get("proxy_user"))
        return original(*args, **kwargs)  # type: ignore[arg-type]

    server.attach = spy  # type: ignore[method-assign]
    assert len(await _lookup(ntlm_tunnel)) == 2
    assert seen == [USER]


# -- NTLM to the proxy, then NTLM at privacy to the RPC server through it ------------------------


def _sealed_lookup(tunnel_port: int, epm_port: int) -> list[str]:

    rpctransport = transport.DCERPCTransportFactory(f"ncacn_http:127.0.0.1[{epm_port}]")
    rpctransport.set_rpc_proxy_url(f"https://127.0.0.1:{tunnel_port}/rpc/rpcproxy.dll")
    rpctransport.set_credentials(USER, PASSWORD)
    rpctransport.set_connect_timeout(10)
    dce = rpctransport.get_dce_rpc()
    dce.set_credentials(USER, PASSWORD)
    dce.set_auth_type(RPC_C_AUTHN_WINNT)
    dce.set_auth_level(RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    dce.connect()
    try:
        entries = epm.hept_lookup(None, dce=dce)
        return [epm.PrintStringBinding(e["tower"]["Floors"]) for e in entries]
    finally:
        dce.disconnect()


@pytest.mark.parametrize("attached", [False, True])
async def test_impacket_ntlm_to_the_proxy_then_sealed_bind_through_it(
    nursery: trio.Nursery, tmp_path: Path, directory: NtlmDirectory, attached: bool
) -> None:
    """The proxy authenticates the HTTP connections with NTLM; the DCE/RPC bind through
    the tunnel authenticates again, NTLM at PKT_PRIVACY, with the RPC server's own
    security provider (the store's wiring does the same with the directory)."""

    db = EndpointDatabase()
    security = ServerSecurity(lookup_nt_hash=directory.lookup_nt_hash)
    server = RpcServer([epm_interface(db), mgmt_interface()], name="epm", security=security)
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    db.register(EPM_SYNTAX, [Tower.tcp(EPM_SYNTAX, "127.0.0.1", port)], "Endpoint mapper")
    backend = Backend(db, port, server, attached)
    tunnel = await start_tunnel(nursery, backend, tmp_path / "data", authenticate=directory)
    with trio.fail_after(30):
        bindings = await trio.to_thread.run_sync(_sealed_lookup, tunnel.info.port, port)
    assert f"ncacn_ip_tcp:127.0.0.1[{port}]" in bindings
    assert [u for u, _ in directory.succeeded] == [USER, USER]
    # The bind looked the user up too (its own NTLM exchange, inside the tunnel).
    assert directory.lookups.count((USER, "")) >= 3
