"""Proofs of issue 18 on a real ``serve`` on loopback, with peers no one here wrote
where there are some:

* impacket's ``rpcmap.py``, with its default options (NTLM at PKT_PRIVACY when given a
  password), lists the endpoint mapper's and the store's interfaces through the
  management interface, anonymously and with a user's password; a wrong password is
  refused.
* Through the tunnel, a user the proxy authenticated as bob presenting alice's session
  id is refused, and the store logs the real peer (not ``None``).
* A Basic logon through the tunnel fills in a missing NT hash, after which NTLM works.
* Wrong NTLM passwords count in the logon throttle: after enough of them the guessing
  address is refused even with the right password, while the user from another
  address still logs on.
* Our client refuses a server that offers scrypt parameters below the floor (without
  answering) and a server whose proof is wrong (a fake store built on dcerpc's server).
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from serve_helpers import start_server

from clients.api import connect
from clients.connecting import _open_tunnel_store_rpc
from dcerpc.interface import CallContext, Interface
from dcerpc.server import RpcServer
from dcerpc.syntax import MSGPACK
from mapi.access.logon import MIN_KDF_COST, Challenge, KdfParams, derive_key, server_proof
from mapi.model import errors
from mapi.store import ObjectStore
from mapi.wire import OP_CONNECT, OP_EXECUTE, STORE_SYNTAX

PASSWORDS = {"alice": "alice-Secret-41", "bob": "bob-Secret-77"}
RPCMAP = Path(sys.executable).parent / "rpcmap.py"
EPM_UUID = "E1AF8308-5D1F-11C9-91A4-08002B14A0FA v3.0"
MGMT_UUID = "AFA8BD80-7D8A-11C9-BEF4-08002B102989 v1.0"
STORE_UUID = f"{str(STORE_SYNTAX.uuid).upper()} v1.0"


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> Any:
    return await start_server(nursery, tmp_path / "data", PASSWORDS)


# -- impacket's rpcmap.py ------------------------------------------------------------


async def _rpcmap(port: int, *options: str) -> tuple[int, str]:
    """Run rpcmap.py (the venv's console script) with its default options plus
    ``options`` against ``port``; (exit status, output)."""
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, str(RPCMAP), *options, f"ncacn_ip_tcp:127.0.0.1[{port}]"],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def _uuids(output: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^UUID: (.+)$", output, re.MULTILINE)}


@pytest.mark.skipif(not RPCMAP.exists(), reason=f"impacket's rpcmap.py not at {RPCMAP}")
@pytest.mark.parametrize("credentials", ["anonymous", "password"])
async def test_rpcmap_lists_the_interfaces_through_mgmt(server: Any, credentials: str) -> None:
    options = () if credentials == "anonymous" else ("-auth-rpc", "alice:" + PASSWORDS["alice"])
    status, out = await _rpcmap(server.epm_port, *options)
    assert status == 0 and _uuids(out) == {EPM_UUID, MGMT_UUID}, out
    assert "rpcss.dll" in out and "Remote Management Interface" in out
    status, out = await _rpcmap(server.service_ports["store"], *options)
    assert status == 0 and _uuids(out) == {STORE_UUID, MGMT_UUID}, out
    assert "Protocol failed" not in out


@pytest.mark.skipif(not RPCMAP.exists(), reason=f"impacket's rpcmap.py not at {RPCMAP}")
async def test_rpcmap_with_a_wrong_password_is_refused(server: Any) -> None:
    _status, out = await _rpcmap(server.service_ports["store"], "-auth-rpc", "alice:nope")
    assert "rpc_s_access_denied" in out and not _uuids(out), out


# -- sessions through the tunnel -----------------------------------------------------


async def test_through_the_tunnel_bob_cannot_use_alices_session(
    server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mapi.rpc.service")
    url = f"https://127.0.0.1:{server.tunnel.port}/?epm={server.epm_port}"
    fingerprint = server.tunnel.fingerprint
    with trio.fail_after(60):
        async with connect(url, "alice", PASSWORDS["alice"], fingerprint=fingerprint) as alice:
            await alice.open_store()
            sid = alice.session_id
            # bob, authenticated to the proxy (Basic), on a tunnelled store connection
            # without DCE/RPC authentication (the tunnel's default level): the store
            # knows him as the proxy's user.
            bob = _open_tunnel_store_rpc(
                url, "bob", PASSWORDS["bob"], fingerprint=fingerprint, http2=True
            )
            async with bob as (rpc, ctx):
                for opnum, request in (
                    (OP_CONNECT, {"resume": sid}),
                    (OP_EXECUTE, {"session": sid, "ops": [["open_store", {"out": 1}]]}),
                    (OP_CONNECT, {"user": "alice"}),  # nor log on as alice there
                ):
                    stub = await rpc.call(ctx, opnum, msgpack.packb(request))
                    reply = msgpack.unpackb(stub, raw=False)
                    assert reply["hresult"] == errors.Hresult.MAPI_E_LOGON_FAILED, reply
            assert await alice.open_store()  # alice's session is intact
    lines = [r.getMessage() for r in caplog.records]
    refusals = [line for line in lines if "refused session" in line]
    assert len(refusals) == 2, lines
    peer = re.compile(
        r"of alice .* to 127\.0\.0\.1:\d+ through the tunnel \(authenticated as bob\)"
    )
    assert all(peer.search(line) for line in refusals), refusals
    assert not any("from None" in line for line in lines), lines
    assert not any("bob resumed" in line or "alice resumed" in line for line in lines)


# -- the NT hash migration -----------------------------------------------------------


async def test_a_basic_logon_through_the_tunnel_fills_in_the_nt_hash(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    old = ObjectStore(data)
    old.add_user("carol", "carol-Secret-1")
    old.close()
    with sqlite3.connect(data / "directory.sqlite3") as db:  # as before NTLM support
        db.execute("UPDATE users SET nt_hash = NULL WHERE username = 'carol'")
    db.close()
    server = await start_server(nursery, data, {})
    lan = f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"
    url = f"https://127.0.0.1:{server.tunnel.port}/?epm={server.epm_port}"
    with trio.fail_after(90):
        with pytest.raises(errors.LogonFailed):  # NTLM on the LAN: no NT hash yet
            async with connect(lan, "carol", "carol-Secret-1"):
                pass
        # Basic through the tunnel (the password at hand): the hash is filled in.
        tunnel = connect(url, "carol", "carol-Secret-1", fingerprint=server.tunnel.fingerprint)
        async with tunnel as session:
            assert await session.open_store()
        for _ in range(100):  # the migration runs beside the logon: bounded wait
            if server.store.directory.cached_nt_hash("carol") != (True, None):
                break
            await trio.sleep(0.05)
        async with connect(lan, "carol", "carol-Secret-1") as session:  # NTLM at privacy
            assert await session.open_store()
        with pytest.raises(errors.LogonFailed):  # and only with the right password
            async with connect(lan, "carol", "carol-Secret-2"):
                pass
    with sqlite3.connect(data / "directory.sqlite3") as db:
        (stored,) = db.execute("SELECT nt_hash FROM users WHERE username = 'carol'").fetchone()
    db.close()
    assert isinstance(stored, bytes) and len(stored) == 16


# -- NTLM failures in the throttle ---------------------------------------------------


async def test_ntlm_failures_hold_back_the_guesser_not_the_user(
    server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Wrong NTLM passwords at the store's bind, from the LAN (a loopback peer: one
    address the server cannot place), until the throttle holds that address back: then
    even the right password is refused there, without being checked. alice through
    the tunnel (whose peer address the store knows) still logs on."""
    caplog.set_level(logging.INFO, logger="mapi.rpc.service")
    lan = f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"
    held_back = re.compile(r"NTLM logon of 'alice' from .* refused: too many failures")
    with trio.fail_after(60):
        for attempt in range(12):
            with pytest.raises(errors.LogonFailed):
                async with connect(lan, "alice", f"guess {attempt}"):
                    pass
            if any(held_back.search(r.getMessage()) for r in caplog.records):
                break
        failures = [r for r in caplog.records if "failed NTLM logon of 'alice'" in r.getMessage()]
        assert len(failures) >= 5, [r.getMessage() for r in caplog.records]
        # The throttle answers now: 1 s after the free failures, doubling with each
        # failure. One more wrong guess once it is admitted makes the window 2 s; in
        # it, the right password from the guesser's address is refused unchecked.
        await trio.sleep(1.1)
        with pytest.raises(errors.LogonFailed):
            async with connect(lan, "alice", "one more guess"):
                pass
        caplog.clear()
        with pytest.raises(errors.LogonFailed):
            async with connect(lan, "alice", PASSWORDS["alice"]):
                pass
        assert any(held_back.search(r.getMessage()) for r in caplog.records)
        # refused at the bind, before any NT hash lookup or logon call
        assert not any("failed NTLM logon" in r.getMessage() for r in caplog.records)
        assert not any("logged on" in r.getMessage() for r in caplog.records)
        # alice from another address (through the tunnel) is not held back.
        url = f"https://127.0.0.1:{server.tunnel.port}/?epm={server.epm_port}"
        fingerprint = server.tunnel.fingerprint
        async with connect(url, "alice", PASSWORDS["alice"], fingerprint=fingerprint) as s:
            assert await s.open_store()
        # bob, whose failures these were not, logs on from the guesser's address too.
        async with connect(lan, "bob", PASSWORDS["bob"]) as s:
            assert await s.open_store()


# -- our client against a fake store -------------------------------------------------


def _pack(reply: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(reply))


class FakeStore:
    """The store's logon, as a server that does not know the password would fake it:
    a challenge with the given scrypt parameters, then a success with ``proof``
    (None: the true proof, computed from ``password``)."""

    def __init__(self, params: KdfParams, password: str | None = None) -> None:
        self.params = params
        self.password = password
        self.answers: list[dict[str, Any]] = []
        self.salt, self.nonce = os.urandom(16), os.urandom(32)

    async def handler(self, ctx: CallContext, stub: bytes) -> bytes:
        request = msgpack.unpackb(stub, raw=False)
        if ctx.opnum != OP_CONNECT:
            return _pack({"hresult": 0})
        if "response" not in request:
            kdf = {"n": self.params.n, "r": self.params.r, "p": self.params.p}
            return _pack({"hresult": 0, "kdf": kdf, "salt": self.salt, "nonce": self.nonce})
        self.answers.append(request)
        proof = bytes(32)
        if self.password is not None:
            challenge = Challenge(request["user"], self.salt, self.params, self.nonce)
            key = derive_key(self.password, self.salt, self.params)
            proof = server_proof(key, challenge, request["cnonce"])
        return _pack(
            {"hresult": 0, "session": os.urandom(16), "user": request["user"], "proof": proof}
        )


async def _serve_fake(nursery: trio.Nursery, fake: FakeStore) -> int:
    interface = Interface(STORE_SYNTAX, fake.handler, 4, transfer_syntaxes=(MSGPACK,))
    server = RpcServer([interface], name="fake-store")
    listeners = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
    return int(listeners[0].socket.getsockname()[1])


async def _logon(port: int, password: str) -> None:
    address = f"ncacn_ip_tcp:127.0.0.1[{port}]"
    with trio.fail_after(30):
        async with connect(address, "alice", password, auth_level="none"):
            pass


async def test_our_client_refuses_kdf_parameters_below_the_floor(nursery: trio.Nursery) -> None:
    weak = KdfParams(n=16, r=1, p=1)  # the fake server: 6,000 times cheaper
    fake = FakeStore(weak, "alice-Secret-41")
    port = await _serve_fake(nursery, fake)
    with pytest.raises(errors.LogonFailed, match="weaker than the floor"):
        await _logon(port, "alice-Secret-41")
    assert fake.answers == []  # nothing to crack offline was sent
    # Just at the floor, the same fake (which knows the password) is answered.
    fake.params = KdfParams(n=MIN_KDF_COST, r=1, p=1)
    await _logon(port, "alice-Secret-41")
    assert len(fake.answers) == 1


async def test_our_client_refuses_a_server_whose_proof_is_wrong(nursery: trio.Nursery) -> None:
    params = KdfParams(n=MIN_KDF_COST, r=1, p=1)
    impostor = await _serve_fake(nursery, FakeStore(params, password=None))
    with pytest.raises(errors.LogonFailed, match="did not prove"):
        await _logon(impostor, "alice-Secret-41")
    # A server that knows another password proves nothing either.
    other = await _serve_fake(nursery, FakeStore(params, password="not-alices"))
    with pytest.raises(errors.LogonFailed, match="did not prove"):
        await _logon(other, "alice-Secret-41")
    # The true proof is accepted: the refusals above are the proof's, not the fake's.
    genuine = await _serve_fake(nursery, FakeStore(params, password="alice-Secret-41"))
    await _logon(genuine, "alice-Secret-41")
