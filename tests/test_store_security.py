"""The store's security on a real ``serve`` on loopback (issue 18, items 2-4 and 6):
impacket's DCE/RPC client (no one here wrote it) binds to the store with NTLM at
PKT_INTEGRITY and PKT_PRIVACY and logs on and runs a batch with msgpack stubs built as
our client builds them; a wrong password, an anonymous bind, an unauthenticated bind
and a bind below ``[rpc] min_auth_level`` are refused; a session id presented by a
connection authenticated as another user is refused and the real peer logged; a
recording of every byte of a LAN session at the default settings holds no subject,
body, attachment byte or session id in clear; a user without an NT hash gets the clear
error, and ``passwd`` mends it; an old directory file gains the column in place."""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import Any

import msgpack
import pytest
import trio
from impacket.dcerpc.v5 import rpcrt
from impacket.dcerpc.v5 import transport as imp_transport
from impacket.uuid import uuidtup_to_bin
from serve_helpers import start_server

from clients.api import client_auth, connect
from dcerpc.client import open_tcp_rpc_client
from dcerpc.errors import BindRejected
from dcerpc.syntax import MSGPACK
from mapi.access.logon import Challenge, KdfParams, client_response
from mapi.model import errors
from mapi.storage.directory import SqliteDirectory
from mapi.store import ObjectStore
from mapi.wire import OP_CONNECT, OP_EXECUTE, STORE_SYNTAX

PASSWORDS = {"alice": "alice-Secret-41", "bob": "bob-Secret-77"}


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_server(nursery, tmp_path / "data", PASSWORDS)


def _impacket(port: int, level: int, user: str, password: str) -> Any:
    tr = imp_transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{port}]")
    tr.set_credentials(user, password, "")
    dce = tr.get_dce_rpc()
    dce.set_auth_type(rpcrt.RPC_C_AUTHN_WINNT)
    dce.set_auth_level(level)
    dce.connect()
    return dce


def _bind_store(dce: Any) -> None:
    dce.bind(
        uuidtup_to_bin((str(STORE_SYNTAX.uuid), "1.0")),
        transfer_syntax=(str(MSGPACK.uuid), f"{MSGPACK.major}.{MSGPACK.minor}"),
    )


def _call(dce: Any, opnum: int, request: dict[str, Any]) -> dict[str, Any]:
    dce.call(opnum, msgpack.packb(request, use_bin_type=True))
    return dict(msgpack.unpackb(dce.recv(), raw=False))


def impacket_logon_and_batch(port: int, level: int, user: str, password: str) -> list[Any]:
    """impacket binds with NTLM at ``level``, logs on (the store's challenge-response,
    stubs as clients/connecting.py builds them) and runs one batch: open the store,
    read its display name."""
    dce = _impacket(port, level, user, password)
    try:
        _bind_store(dce)
        first = _call(dce, OP_CONNECT, {"user": user})
        kdf = first["kdf"]
        challenge = Challenge(user, first["salt"], KdfParams(kdf["n"], kdf["r"], kdf["p"]),
                              first["nonce"])  # fmt: skip
        cnonce, response = client_response(password, challenge)
        reply = _call(dce, OP_CONNECT, {"user": user, "nonce": first["nonce"],
                                        "cnonce": cnonce, "response": response})  # fmt: skip
        assert reply["hresult"] == 0 and reply["user"] == user and reply["proof"]
        batch = [["open_store", {"out": 1}], ["get_props", {"h": 1, "tags": [0x3001001F]}]]
        answer = _call(dce, OP_EXECUTE, {"session": reply["session"], "ops": batch})
        assert answer["hresult"] == 0, answer
        return list(answer["results"])
    finally:
        dce.disconnect()


@pytest.mark.parametrize(
    "level", [rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY]
)
async def test_impacket_logs_on_and_runs_a_batch_over_ntlm(nursery, tmp_path, level):
    # The store's level lowered to integrity so that both levels are admitted.
    server = await start_server(nursery, tmp_path / "d", PASSWORDS, min_auth_level="integrity")
    port = server.service_ports["store"]
    with trio.fail_after(60):
        results = await trio.to_thread.run_sync(
            impacket_logon_and_batch, port, level, "alice", PASSWORDS["alice"]
        )
    assert [r[0] for r in results] == [0, 0]


def impacket_refused(port: int, level: int, user: str, password: str) -> str:
    """What impacket gets when it binds and calls (the error's text, or "accepted")."""
    try:
        dce = _impacket(port, level, user, password)
        try:
            _bind_store(dce)
            _call(dce, OP_CONNECT, {"user": user or "alice"})
        finally:
            dce.disconnect()
    except Exception as exc:  # impacket raises several types
        return f"{type(exc).__name__}: {exc}"
    return "accepted"


async def test_wrong_password_anonymous_and_low_levels_are_refused(server):
    port = server.service_ports["store"]
    privacy = rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY
    with trio.fail_after(60):
        wrong = await trio.to_thread.run_sync(impacket_refused, port, privacy, "alice", "nope")
        anonymous = await trio.to_thread.run_sync(impacket_refused, port, privacy, "", "")
        signed = await trio.to_thread.run_sync(
            impacket_refused, port, rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, "alice",
            PASSWORDS["alice"],
        )  # fmt: skip
    assert "access_denied" in wrong.lower() or "rpc_s_access_denied" in wrong.lower(), wrong
    assert anonymous != "accepted", anonymous
    assert signed != "accepted", signed  # below [rpc] min_auth_level = "privacy"
    # Our own client, unauthenticated: the bind is refused before any handler runs.
    with trio.fail_after(30):
        async with open_tcp_rpc_client("127.0.0.1", port) as rpc:
            with pytest.raises(BindRejected):
                await rpc.bind(STORE_SYNTAX, (MSGPACK,))
        with pytest.raises(errors.LogonFailed):
            async with connect(f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", "alice", "nope"):
                pass


async def test_a_session_id_is_worth_nothing_to_another_user(server, caplog):
    caplog.set_level(logging.INFO, logger="mapi.rpc.service")
    lan = f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"
    port = server.service_ports["store"]
    with trio.fail_after(60):
        async with connect(lan, "alice", PASSWORDS["alice"]) as alice:
            await alice.open_store()
            sid = alice.session_id
            auth = client_auth("bob", PASSWORDS["bob"], "privacy")
            async with open_tcp_rpc_client("127.0.0.1", port, auth=auth) as rpc:
                ctx = await rpc.bind(STORE_SYNTAX, (MSGPACK,))
                for opnum, request in (
                    (OP_EXECUTE, {"session": sid, "ops": [["open_store", {"out": 1}]]}),
                    (OP_CONNECT, {"resume": sid}),
                ):
                    stub = await rpc.call(ctx, opnum, msgpack.packb(request))
                    reply = msgpack.unpackb(stub, raw=False)
                    assert reply["hresult"] == errors.Hresult.MAPI_E_LOGON_FAILED
                bob_port = rpc.stream.socket.getsockname()[1]  # type: ignore[attr-defined]
                # bob cannot log on as alice on his connection either.
                stub = await rpc.call(ctx, OP_CONNECT, msgpack.packb({"user": "alice"}))
                assert msgpack.unpackb(stub)["hresult"] == errors.Hresult.MAPI_E_LOGON_FAILED
            # alice's session is intact.
            assert await alice.open_store()
    refusals = [r.getMessage() for r in caplog.records if "refused session" in r.getMessage()]
    assert len(refusals) == 2, refusals
    assert all("alice" in line and "127.0.0.1:" in line and "as bob" in line for line in refusals)
    if bob_port is not None:
        assert any(f":{bob_port}" in line for line in refusals), refusals


async def _relay(
    listener: trio.SocketListener, target: int, record: list[bytes], nursery: trio.Nursery
) -> None:
    """Forward every connection to ``target``, recording every byte both ways."""

    async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
        try:
            while data := await src.receive_some(65536):
                record.append(data)
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(dst)

    async def handle(client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", target)
        async with trio.open_nursery() as inner:
            inner.start_soon(pump, client, upstream)
            inner.start_soon(pump, upstream, client)

    await trio.serve_listeners(handle, [listener], handler_nursery=nursery)


async def test_a_recorded_lan_session_reveals_nothing(server, nursery):
    """Every byte between our client and the store at the default settings, recorded
    by a relay in the middle: no subject, body, attachment byte or session id."""
    record: list[bytes] = []
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    nursery.start_soon(_relay, listener, server.service_ports["store"], record, nursery)
    relay = f"ncacn_ip_tcp:127.0.0.1[{listener.socket.getsockname()[1]}]"
    subject, body = "Secret merger plans Q3", "The body nobody on the LAN may read"
    attachment = os.urandom(40_000)
    with trio.fail_after(60):
        async with connect(relay, "alice", PASSWORDS["alice"]) as session:
            store = await session.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            msg = await inbox.create_message()
            await msg.set_props({"PR_SUBJECT": subject, "PR_BODY": body})
            att = await msg.create_attachment()
            await att.set_props({"PR_ATTACH_METHOD": 1, "PR_ATTACH_DATA_BIN": attachment})
            await att.save()
            await msg.save()
            rows = [r async for r in inbox.contents(["PR_SUBJECT", "PR_BODY"])]
            assert [r["PR_SUBJECT"] for r in rows] == [subject]
            sid = session.session_id
    wire = b"".join(record)
    assert len(wire) > len(attachment)  # it all went through the relay
    for secret in (subject, body):
        for encoding in ("utf-8", "utf-16-le"):
            assert secret.encode(encoding) not in wire, secret
    assert sid not in wire
    for start in range(0, len(attachment) - 32, 4096):
        assert attachment[start : start + 32] not in wire


async def test_a_user_without_an_nt_hash_gets_a_clear_error_until_passwd(nursery, tmp_path, caplog):
    data = tmp_path / "data"
    old = ObjectStore(data)
    old.add_user("carol", "carol-Secret-1")
    old.close()
    with sqlite3.connect(data / "directory.sqlite3") as db:  # as before NTLM support
        db.execute("UPDATE users SET nt_hash = NULL WHERE username = 'carol'")
    db.close()
    server = await start_server(nursery, data, {})
    lan = f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"
    with trio.fail_after(60):
        with pytest.raises(errors.LogonFailed, match="mapi-anywhere passwd"):
            async with connect(lan, "carol", "carol-Secret-1"):
                pass
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert "no NT hash" in logged and "mapi-anywhere passwd carol" in logged
        assert "carol-Secret-1" not in logged
        await server.store_service.set_password("carol", "carol-Secret-2")
        async with connect(lan, "carol", "carol-Secret-2") as session:
            assert await session.open_store()


def test_an_old_directory_gains_the_nt_hash_column_in_place(tmp_path):
    path = tmp_path / "directory.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            """CREATE TABLE users (user_id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL, email TEXT NOT NULL, salt BLOB NOT NULL,
            kdf_n INTEGER NOT NULL, kdf_r INTEGER NOT NULL, kdf_p INTEGER NOT NULL,
            verifier BLOB NOT NULL, mailbox TEXT NOT NULL UNIQUE, created INTEGER NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0) STRICT;
            INSERT INTO users VALUES ('u1', 'dave', 'Dave', '', x'00', 16, 1, 1, x'00',
            'u1.sqlite3', 0, 0);"""
        )
    db.close()
    rows = SqliteDirectory()
    conn = rows.open(path)
    try:
        assert rows.nt_hashes(conn) == {"dave": None}
        assert rows.set_nt_hash(conn, "dave", b"\x01" * 16)
        assert rows.nt_hashes(conn) == {"dave": b"\x01" * 16}
    finally:
        rows.close(conn)
