"""DCE/RPC security on real loopback sockets: impacket's DCE/RPC client (NTLM at
PKT_INTEGRITY and PKT_PRIVACY) and our own client (NTLM and SPNEGO at every level)
against an RpcServer of ours serving a small test interface, the endpoint mapper and
the management interface; refusals (wrong password, too low a level, anonymous where
the policy says no) and Samba's rpcclient (``epmlookup`` as a user and anonymously, at
sign and seal, NTLM and SPNEGO) when it is installed and we may listen on port 135.

impacket's GSS_NEGOTIATE client speaks Kerberos only, so SPNEGO is exercised with our
own client and Samba's. Rules: loopback, port 0 (135 on 127.0.0.2 for rpcclient, which
dials nothing else), every test bounded by ``fail_after``."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import uuid
from typing import Any

import pytest
import trio
from impacket.dcerpc.v5 import epm, mgmt, rpcrt
from impacket.dcerpc.v5 import transport as imp_transport
from impacket.uuid import uuidtup_to_bin

from dcerpc.auth_context import ClientAuth, ServerSecurity
from dcerpc.client import open_tcp_rpc_client
from dcerpc.errors import BindRejected, ConnectionClosed, FaultStatus, RpcFault
from dcerpc.interface import CallContext, Interface
from dcerpc.ntlm import ServerNames
from dcerpc.ntlm_crypto import nt_hash
from dcerpc.security import AuthLevel, AuthPolicy, AuthType, CallerAuth
from dcerpc.server import RpcServer
from dcerpc.syntax import SyntaxId
from endpoint_mapper import EPM_SYNTAX, EndpointDatabase, Tower, epm_interface, mgmt_interface

SECURE = SyntaxId(uuid.UUID("6b2f6a0e-92c2-4f0c-8d4a-8a7c0f3e51d1"), 1, 0)
RELAXED = SyntaxId(uuid.UUID("6b2f6a0e-92c2-4f0c-8d4a-8a7c0f3e51d2"), 1, 0)
USERS = {"alice": nt_hash("s3cret")}


class Recorder:
    def __init__(self) -> None:
        self.callers: list[CallerAuth | None] = []

    async def handler(self, ctx: CallContext, stub: bytes) -> bytes:
        self.callers.append(ctx.auth)
        return stub[::-1]


@pytest.fixture
async def served(nursery):
    recorder = Recorder()
    db = EndpointDatabase()
    db.register(SECURE, [Tower.tcp(SECURE, "0.0.0.0", 4242)], "secure test interface")
    server = RpcServer(
        [
            Interface(
                SECURE,
                recorder.handler,
                2,
                name="secure",
                policy=AuthPolicy(AuthLevel.PKT_INTEGRITY, allow_anonymous=False),
            ),
            Interface(RELAXED, recorder.handler, 2, name="relaxed", policy=AuthPolicy()),
            epm_interface(db),
            mgmt_interface(),
        ],
        security=ServerSecurity(
            lookup_nt_hash=lambda user, domain: USERS.get(user.lower()),
            names=ServerNames("SRV01", "LAB", "srv01.lab.example", "lab.example"),
        ),
        name="secure-test",
    )
    listeners = await nursery.start(server.serve_tcp, 0)
    return listeners[0].socket.getsockname()[1], recorder


def impacket_call(
    port: int, level: int, *, user: str = "alice", password: str = "s3cret", iface=SECURE
) -> bytes:
    """Bind with impacket's NTLM at ``level`` and make one (fragmented) call."""
    tr = imp_transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{port}]")
    tr.set_credentials(user, password, "LAB")
    dce = tr.get_dce_rpc()
    dce.set_auth_type(rpcrt.RPC_C_AUTHN_WINNT)
    dce.set_auth_level(level)
    dce.connect()
    try:
        dce.bind(uuidtup_to_bin((str(iface.uuid), "1.0")))
        dce.call(1, b"0123456789abcdef" * 700)
        return bytes(dce.recv())
    finally:
        dce.disconnect()


def impacket_epm(port: int, level: int, user: str, password: str) -> dict[str, Any]:
    """What rpcdump/rpcmap do over an authenticated connection: ept_lookup, then the
    management interface's inq_if_ids on another connection."""
    out: dict[str, Any] = {}
    for what in ("lookup", "mgmt"):
        tr = imp_transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{port}]")
        tr.set_credentials(user, password, "")
        dce = tr.get_dce_rpc()
        dce.set_auth_level(level)
        dce.connect()
        try:
            if what == "lookup":
                out[what] = epm.hept_lookup(None, dce=dce)
            else:
                dce.bind(mgmt.MSRPC_UUID_MGMT)
                out[what] = mgmt.hinq_if_ids(dce)["if_id_vector"]["count"]
        finally:
            dce.disconnect()
    return out


@pytest.mark.parametrize(
    "level", [rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY]
)
async def test_impacket_ntlm_calls(served, level):
    port, recorder = served
    with trio.fail_after(20):
        reply = await trio.to_thread.run_sync(impacket_call, port, level)
    assert reply == (b"0123456789abcdef" * 700)[::-1]
    caller = recorder.callers[-1]
    assert caller is not None
    assert (caller.user, caller.domain, caller.auth_level, caller.anonymous) == (
        "alice",
        "LAB",
        level,
        False,
    )
    assert caller.auth_type == AuthType.NTLM


@pytest.mark.parametrize(
    ("user", "password"), [("alice", "s3cret"), ("", "")], ids=["user", "anonymous"]
)
async def test_impacket_endpoint_mapper_at_privacy(served, user, password):
    port, _ = served
    with trio.fail_after(20):
        got = await trio.to_thread.run_sync(
            impacket_epm, port, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, user, password
        )
    assert [e["annotation"] for e in got["lookup"]] == [b"secure test interface\x00"]
    assert got["mgmt"] == 4


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"password": "wrong"}, "wrong password"),
        ({"user": "mallory"}, "unknown user"),
        ({"level": rpcrt.RPC_C_AUTHN_LEVEL_CONNECT}, "below the policy"),
        ({"level": rpcrt.RPC_C_AUTHN_LEVEL_NONE}, "unauthenticated"),
        ({"user": "", "password": ""}, "anonymous"),
    ],
)
async def test_impacket_refused(served, kwargs, what):
    port, recorder = served
    level = kwargs.pop("level", rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    with trio.fail_after(20), pytest.raises(rpcrt.DCERPCException):
        await trio.to_thread.run_sync(lambda: impacket_call(port, level, **kwargs))
    assert recorder.callers == []  # no handler ran
    # The server goes on serving.
    with trio.fail_after(20):
        await trio.to_thread.run_sync(impacket_call, port, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)


@pytest.mark.parametrize("auth_type", [AuthType.NTLM, AuthType.SPNEGO])
@pytest.mark.parametrize(
    "level", [AuthLevel.CONNECT, AuthLevel.PKT_INTEGRITY, AuthLevel.PKT_PRIVACY]
)
async def test_our_client_at_each_level(served, auth_type, level):
    port, recorder = served
    auth = ClientAuth(user="alice", password="s3cret", auth_type=auth_type, auth_level=level)
    iface = SECURE if level >= AuthLevel.PKT_INTEGRITY else RELAXED
    stub = bytes(range(256)) * 500
    with trio.fail_after(10):
        async with open_tcp_rpc_client("127.0.0.1", port, auth=auth) as rpc:
            ctx = await rpc.bind(iface)
            for _ in range(3):
                assert await rpc.call(ctx, 0, stub) == stub[::-1]
            # An alter_context for another interface on the authenticated connection.
            epm_ctx = await rpc.bind(EPM_SYNTAX)
            assert epm_ctx != ctx
    caller = recorder.callers[-1]
    assert caller is not None and (caller.user, caller.auth_level) == ("alice", level)
    assert caller.auth_type == auth_type


async def test_our_client_refusals(served):
    port, recorder = served
    with trio.fail_after(10):
        wrong = ClientAuth(user="alice", password="nope")
        async with open_tcp_rpc_client("127.0.0.1", port, auth=wrong) as rpc:
            ctx = await rpc.bind(SECURE)  # NTLM: the failure shows at the first call
            with pytest.raises(RpcFault) as info:
                await rpc.call(ctx, 0, b"x")
            assert info.value.status == FaultStatus.ACCESS_DENIED
        spnego = ClientAuth(user="alice", password="nope", auth_type=AuthType.SPNEGO)
        async with open_tcp_rpc_client("127.0.0.1", port, auth=spnego) as rpc:
            with pytest.raises((BindRejected, ConnectionClosed)):
                await rpc.bind(SECURE)
        async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
            with pytest.raises(BindRejected):
                await rpc.bind(SECURE)
        anon = ClientAuth(user="", password="", auth_level=AuthLevel.PKT_PRIVACY)
        async with open_tcp_rpc_client("127.0.0.1", port, auth=anon) as rpc:
            ctx = await rpc.bind(SECURE)
            with pytest.raises(RpcFault) as info:
                await rpc.call(ctx, 0, b"x")
            assert info.value.status == FaultStatus.ACCESS_DENIED
            # Anonymous may use what admits it.
            relaxed = await rpc.bind(RELAXED)
            assert await rpc.call(relaxed, 0, b"ab") == b"ba"
    assert [c.anonymous if c else None for c in recorder.callers] == [True]


# -- Samba's rpcclient -------------------------------------------------------------------
#
# rpcclient reaches the endpoint mapper on port 135 whatever endpoint the binding names
# (it ignores "[port]" for the epmapper pipe), so these tests listen on 135 of a loopback
# address of their own, which needs root; they skip with the reason otherwise.

SAMBA_HOST = "127.0.0.2"
SAMBA_ENTRIES = 5


def _samba_skip_reason() -> str | None:
    if shutil.which("rpcclient") is None:
        return "Samba's rpcclient is not installed (.ci/run installs smbclient)"
    if os.geteuid() != 0:
        return "rpcclient dials port 135 only; listening there needs root"
    return None


@pytest.fixture
async def epm_on_135(nursery):
    reason = _samba_skip_reason()
    if reason:
        pytest.skip(reason)
    try:  # probe first: an error inside nursery.start would come wrapped
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((SAMBA_HOST, 135))
    except OSError as exc:
        pytest.skip(f"cannot listen on {SAMBA_HOST}:135: {exc}")
    db = EndpointDatabase()
    for i in range(SAMBA_ENTRIES):
        syntax = SyntaxId(uuid.UUID(int=0x6B2F6A0E_92C2_4F0C_8D4A_8A7C0F3E5100 + i), 1, 0)
        db.register(syntax, [Tower.tcp(syntax, "0.0.0.0", 4300 + i)], f"samba interop {i}")
    server = RpcServer(
        [epm_interface(db), mgmt_interface()],
        security=ServerSecurity(
            lookup_nt_hash=lambda user, domain: USERS.get(user.lower()),
            names=ServerNames("SRV01", "LAB", "srv01.lab.example", "lab.example"),
        ),
        name="samba-interop",
    )
    await nursery.start(server.serve_tcp, 135, SAMBA_HOST)
    return db


async def rpcclient(options: str, credentials: str, command: str) -> tuple[int, str]:
    binding = f"ncacn_ip_tcp:{SAMBA_HOST}" + (f"[{options}]" if options else "")
    cmd = ["rpcclient", binding, "-U", credentials, "-W", "LAB", "-c", command]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)

    with trio.fail_after(40):  # the bug this guards against was an endless listing
        result = await trio.to_thread.run_sync(run)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("options", ["", "sign", "seal", "spnego,seal", "spnego,sign"])
@pytest.mark.parametrize("credentials", ["alice%s3cret", "%"], ids=["user", "anonymous"])
async def test_rpcclient_epmlookup_terminates_and_lists_every_entry(
    epm_on_135, options, credentials
):
    """Samba's ``rpcclient epmlookup`` asks for one entry at a time until the status is
    not 0 (issue 18, item 8), over NTLM or SPNEGO at integrity or privacy, as a user or
    anonymously (Samba's anonymous NTLM has no extended session security)."""
    status, output = await rpcclient(options, credentials, "epmlookup")
    assert status == 0, output
    listed = re.findall(r"\[(\d+),abstract_syntax=[^]]*\]: (samba interop \d)", output)
    assert listed == [(str(4300 + i), f"samba interop {i}") for i in range(SAMBA_ENTRIES)]
    assert "no more entries" in output


@pytest.mark.parametrize("options", ["sign", "seal", "spnego,seal"])
async def test_rpcclient_wrong_password_is_refused(epm_on_135, options):
    # NTLM's auth3 has no answer, so the refusal shows at the first call (rpcclient
    # then exits 0); SPNEGO's alter_context leg is refused at bind time.
    _, output = await rpcclient(options, "alice%wrong", "epmlookup")
    assert "NT_STATUS_ACCESS_DENIED" in output
    assert "samba interop" not in output
    status, output = await rpcclient(options, "alice%s3cret", "epmlookup")  # still serving
    assert status == 0 and output.count("samba interop") == SAMBA_ENTRIES
