"""The object store end to end: a real server on loopback, real SQLite files, the client
library finding the store through the endpoint mapper, every kind of operation, the
error paths, permissions, and durability across a kill -9 of the server process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import trio
from serve_helpers import FREE_PORTS, start_server

from clients.api import Folder, connect
from dcerpc.auth_context import ClientAuth
from dcerpc.client import open_tcp_rpc_client
from dcerpc.syntax import MSGPACK
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.rpc.service import OP_EXECUTE, STORE_SYNTAX

PASSWORDS = {"alice": "correct horse", "bob": "battery staple"}


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_server(nursery, tmp_path / "data", PASSWORDS)


def epm_address(server) -> str:
    return f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"


@pytest.fixture(params=["lan", "tunnel-h2", "tunnel-http1"])
def transport(request):
    """The same scenarios on the LAN and through both HTTPS tunnels."""
    return request.param


def open_session(server, transport: str, user: str, password: str | None = None):
    password = PASSWORDS[user] if password is None else password
    if transport == "lan":
        return connect(epm_address(server), user, password)
    tunnel = server.tunnel
    url = f"https://127.0.0.1:{tunnel.port}/?epm={server.epm_port}"
    return connect(
        url, user, password, fingerprint=tunnel.fingerprint, http2=transport == "tunnel-h2"
    )


async def test_logon_discovery_and_wrong_password(server, transport):
    with trio.fail_after(30):
        async with open_session(server, transport, "alice") as session:
            assert session.user == "alice"
        if transport == "lan":  # the store's own port works too, without the EPM
            direct = f"ncacn_ip_tcp:127.0.0.1[{server.service_ports['store']}]"
            async with connect(direct, "bob", PASSWORDS["bob"]) as session:
                assert session.user == "bob"
        with pytest.raises(errors.LogonFailed):
            async with open_session(server, transport, "alice", "wrong"):
                pass
        with pytest.raises(errors.LogonFailed):
            async with open_session(server, transport, "nobody", "x"):
                pass


async def _folder(store, role: str) -> Folder:
    return await store.open_folder(await store.special_folder(role))


async def test_messages_folders_tables_and_streams(server, transport):
    with trio.fail_after(60):
        async with open_session(server, transport, "alice") as session:
            store = await session.open_store()
            inbox = await _folder(store, "inbox")
            projects = await inbox.create_folder("Projects")

            # A message, its recipients and a streamed attachment, saved in one go.
            attachment_data = os.urandom(300_000)  # several 64 KiB chunks
            msg = await projects.create_message()
            await msg.set_props(
                {
                    "PR_SUBJECT": "Quarterly report",
                    "PR_BODY": "See attached.",
                    "PR_MESSAGE_CLASS": "IPM.Note",
                    "PR_MESSAGE_DELIVERY_TIME": 133_000_000_000_000_000,
                }
            )
            await msg.add_recipient("Bob", "bob@localhost")
            await msg.add_recipient("Carol", "carol@localhost", pt.MAPI_CC)
            att = await msg.create_attachment()
            await att.set_props(
                {
                    "PR_ATTACH_METHOD": 1,
                    "PR_ATTACH_LONG_FILENAME": "report.bin",
                    "PR_ATTACH_MIME_TAG": "application/octet-stream",
                }
            )
            stream = await att.open_stream("PR_ATTACH_DATA_BIN", write=True, create=True)
            for start in range(0, len(attachment_data), 65536):
                await stream.write(attachment_data[start : start + 65536])
            await stream.commit()
            await att.save()

            # Not saved yet: another session does not see it.
            async with open_session(server, transport, "alice") as other:
                other_store = await other.open_store()
                other_inbox = await _folder(other_store, "inbox")
                sub = [r async for r in other_inbox.subfolders(["PR_DISPLAY_NAME"])]
                assert "Projects" in [r["PR_DISPLAY_NAME"] for r in sub]
                other_projects = await other_inbox.create_folder("Projects", open_if_exists=True)
                assert [r async for r in other_projects.contents(["PR_SUBJECT"])] == []

                eid = await msg.save()
                rows = [r async for r in other_projects.contents(["PR_SUBJECT", "PR_ENTRYID"])]
                assert [r["PR_SUBJECT"] for r in rows] == ["Quarterly report"]
                assert rows[0]["PR_ENTRYID"] == eid

            # Read it back: properties, recipients, attachment via the stream.
            reopened = await store.open_message(eid)
            props = await reopened.get_props(
                ["PR_SUBJECT", "PR_HASATTACH", "PR_MESSAGE_SIZE", "PR_IMPORTANCE"]
            )
            assert props["PR_SUBJECT"] == "Quarterly report"
            assert props["PR_HASATTACH"] is True
            assert props["PR_MESSAGE_SIZE"] > 300_000
            assert props.errors == {pt.PR_IMPORTANCE: errors.Hresult.MAPI_E_NOT_FOUND}
            recipients = await reopened.recipient_table()
            await recipients.set_columns(["PR_DISPLAY_NAME", "PR_RECIPIENT_TYPE"])
            rows = await recipients.query_rows(10)
            assert [(r["PR_DISPLAY_NAME"], r["PR_RECIPIENT_TYPE"]) for r in rows] == [
                ("Bob", pt.MAPI_TO),
                ("Carol", pt.MAPI_CC),
            ]
            att = await reopened.open_attachment(0)
            stream = await att.open_stream("PR_ATTACH_DATA_BIN")
            assert await stream.size() == len(attachment_data)
            received = b""
            while chunk := await stream.read(100_000):
                received += chunk
            assert received == attachment_data

            # Tables: sort, restrict, seek, position, in one round trip each.
            for i in range(20):
                m = await projects.create_message()
                await m.set_props(
                    {
                        "PR_SUBJECT": f"item {i:02d}" + (" urgent" if i % 5 == 0 else ""),
                        "PR_MESSAGE_DELIVERY_TIME": 133_000_000_000_000_000 + i,
                    }
                )
                await m.save()
            newest_first = [
                r["PR_SUBJECT"]
                async for r in projects.contents(
                    ["PR_SUBJECT"], sort=[("PR_MESSAGE_DELIVERY_TIME", True)], page=7
                )
            ]
            assert newest_first[:2] == ["item 19", "item 18"]
            assert len(newest_first) == 21
            urgent = [
                r["PR_SUBJECT"]
                async for r in projects.contents(
                    ["PR_SUBJECT"],
                    restriction={"rt": 3, "fuzzy": 0x10001, "tag": "PR_SUBJECT", "value": "URGENT"},
                )
            ]
            assert sorted(urgent) == [
                "item 00 urgent",
                "item 05 urgent",
                "item 10 urgent",
                "item 15 urgent",
            ]
            async with session.batch() as batch:
                table = batch.add(projects.contents_table())
                batch.add(table.set_columns(["PR_SUBJECT"]))
                batch.add(table.sort([("PR_SUBJECT", False)]))
                batch.add(table.seek(0, 10))
                page = batch.add(table.query_rows(3))
                position = batch.add(table.position())
            # Case-insensitive order: "item 00 urgent" .. "item 19", then "Quarterly report".
            assert [r["PR_SUBJECT"] for r in page.result] == [
                "item 10 urgent",
                "item 11",
                "item 12",
            ]
            assert position.result == [13, 21]

            # Move, copy, soft and hard delete.
            drafts = await _folder(store, "drafts")
            assert await projects.copy_messages([eid], drafts) == 0
            assert await projects.copy_messages([eid], inbox, move=True) == 0
            partial = await projects.copy_messages([eid], drafts)  # no longer in Projects
            assert partial == errors.Hresult.MAPI_W_PARTIAL_COMPLETION
            assert await inbox.delete_messages([eid]) == 0  # soft: to Deleted Items
            deleted = await _folder(store, "deleted")
            in_deleted = [r["PR_SUBJECT"] async for r in deleted.contents(["PR_SUBJECT"])]
            assert "Quarterly report" in in_deleted
            assert await deleted.delete_messages([eid], hard=True) == 0
            with pytest.raises((errors.NotFound, errors.ObjectDeleted)):
                await store.open_message(eid)


async def test_error_paths_and_malformed_batches(server, transport):
    with trio.fail_after(30):
        async with open_session(server, transport, "alice") as session:
            store = await session.open_store()
            with pytest.raises((errors.NotFound, errors.InvalidEntryId)):
                await store.open_message(b"\x00" * 30)
            results = await session.execute([["get_props", {"h": 999}]])
            assert results[0][0] == errors.Hresult.MAPI_E_INVALID_OBJECT
            inbox = await _folder(store, "inbox")
            table = await inbox.contents_table()
            results = await session.execute(
                [
                    ["no_such_op", {}],
                    ["get_props", {"h": "x"}],
                    "not an op",
                    ["query_rows", {"h": table.handle, "count": "many"}],
                    ["query_rows", {"h": store.handle, "count": 5}],  # a store is not a table
                    ["restrict", {"h": table.handle, "restriction": {"rt": 99}}],
                ]
            )
            assert [r[0] for r in results] == [
                errors.Hresult.MAPI_E_NO_SUPPORT,
                errors.Hresult.MAPI_E_INVALID_PARAMETER,
                errors.Hresult.MAPI_E_INVALID_PARAMETER,
                errors.Hresult.MAPI_E_INVALID_PARAMETER,
                errors.Hresult.MAPI_E_INVALID_OBJECT,
                errors.Hresult.MAPI_E_INVALID_PARAMETER,
            ]
            with pytest.raises(errors.InvalidParameter):
                await session.execute("not a list")  # type: ignore[arg-type]

        # Raw stubs that are not msgpack, or not maps, get MAPI_E_INVALID_PARAMETER.
        store_port = server.service_ports["store"]
        async with open_tcp_rpc_client("127.0.0.1", store_port, auth=_auth("alice")) as rpc:
            ctx = await rpc.bind(STORE_SYNTAX, (MSGPACK,))
            for stub in (b"\xc1garbage", msgpack.packb([1, 2]), msgpack.packb({"session": 5})):
                reply = msgpack.unpackb(await rpc.call(ctx, OP_EXECUTE, stub))
                assert reply["hresult"] in (
                    errors.Hresult.MAPI_E_INVALID_PARAMETER,
                    errors.Hresult.MAPI_E_LOGON_FAILED,
                )


async def test_a_user_cannot_open_another_users_mailbox(server, transport):
    with trio.fail_after(30):
        async with open_session(server, transport, "alice") as alice:
            await alice.open_store()  # creates alice's mailbox
        async with open_session(server, transport, "bob") as bob:
            with pytest.raises(errors.NoAccess):
                await bob.open_store("alice")
        # With a reviewer permission on her Inbox, Bob can open her store and that folder.
        async with open_session(server, transport, "alice") as alice:
            store = await alice.open_store()
            inbox = await _folder(store, "inbox")
            bob_id = (await trio.to_thread.run_sync(server.store.directory.get_user, "bob")).user_id
            await inbox.set_permission(bob_id, 0x401)  # read items + folder visible
        async with open_session(server, transport, "bob") as bob:
            store = await bob.open_store("alice")
            inbox = await _folder(store, "inbox")
            assert [r async for r in inbox.contents(["PR_SUBJECT"])] == []
            drafts_eid = await store.special_folder("drafts")
            with pytest.raises(errors.NoAccess):
                await store.open_folder(drafts_eid)


def _start_server(data_dir: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mapi_anywhere",
            "serve",
            "--epm-port",
            str(port),
            *FREE_PORTS,
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for _ in range(200):
        line = proc.stdout.readline()
        if not line or "ready" in line:
            break
    return proc


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_saved_messages_survive_kill_9(tmp_path):
    """Every save the server acknowledged is present after kill -9 and a restart."""
    data_dir = tmp_path / "data"
    port = _free_port()
    proc = await trio.to_thread.run_sync(_start_server, data_dir, port)
    address = f"ncacn_ip_tcp:127.0.0.1[{port}]"
    password = (data_dir / "demo-password.txt").read_text().strip()
    saved = []
    try:
        with trio.fail_after(60):
            async with connect(address, "demo", password) as session:
                store = await session.open_store()
                inbox = await _folder(store, "inbox")
                for i in range(25):
                    msg = await inbox.create_message()
                    await msg.set_props({"PR_SUBJECT": f"durable {i}"})
                    await msg.save()
                    saved.append(f"durable {i}")
                unsaved = await inbox.create_message()
                await unsaved.set_props({"PR_SUBJECT": "never saved"})
                proc.send_signal(signal.SIGKILL)
                await trio.to_thread.run_sync(proc.communicate)
    finally:
        if proc.poll() is None:
            proc.kill()
            await trio.to_thread.run_sync(proc.communicate)
    proc = await trio.to_thread.run_sync(_start_server, data_dir, port)
    try:
        with trio.fail_after(60):
            async with connect(address, "demo", password) as session:
                store = await session.open_store()
                inbox = await _folder(store, "inbox")
                subjects = {r["PR_SUBJECT"] async for r in inbox.contents(["PR_SUBJECT"])}
        assert subjects == set(saved)
    finally:
        proc.send_signal(signal.SIGINT)
        await trio.to_thread.run_sync(proc.communicate)


PS_PUBLIC_STRINGS = bytes.fromhex("2903020000000000c000000000000046")


async def test_named_properties_embedded_messages_and_folder_operations(server, transport):
    with trio.fail_after(60):
        async with open_session(server, transport, "alice") as session:
            store = await session.open_store()
            inbox = await _folder(store, "inbox")

            # Named properties: unknown without create, then mapped per store, both ways.
            names = [(PS_PUBLIC_STRINGS, "Keywords"), (PS_PUBLIC_STRINGS, 0x8001)]
            ids = await store.get_ids_from_names(names, create=True)
            assert all(0x8000 <= i <= 0xFFFE for i in ids) and ids[0] != ids[1]
            assert await store.get_ids_from_names(names) == ids
            back = await store.get_names_from_ids(ids)
            assert back == [[PS_PUBLIC_STRINGS, 1, "Keywords"], [PS_PUBLIC_STRINGS, 0, 0x8001]]
            keywords_tag = pt.make_tag(ids[0], pt.PropType.PT_MV_UNICODE)

            # A message with a named property and an embedded message.
            msg = await inbox.create_message()
            await msg.set_props({"PR_SUBJECT": "outer", keywords_tag: ["a", "b"]})
            att = await msg.create_attachment()
            await att.set_props({"PR_ATTACH_METHOD": 5, "PR_DISPLAY_NAME": "inner.msg"})
            inner = await att.open_embedded(create=True)
            await inner.set_props({"PR_SUBJECT": "inner"})
            await inner.save()
            await att.save()
            eid = await msg.save()
            reopened = await store.open_message(eid)
            props = await reopened.get_props([keywords_tag, "PR_HASATTACH"])
            assert props[keywords_tag] == ["a", "b"] and props["PR_HASATTACH"] is True
            embedded = await (await reopened.open_attachment(0)).open_embedded()
            assert (await embedded.get_props(["PR_SUBJECT"]))["PR_SUBJECT"] == "inner"

            # Read flags.
            assert await inbox.set_read_flags([eid]) == 0
            flags = (await reopened.get_props(["PR_MESSAGE_FLAGS"]))["PR_MESSAGE_FLAGS"]
            assert flags & pt.MSGFLAG_READ

            # Folders: create, rename, copy, move, empty, delete; the hierarchy table.
            a = await inbox.create_folder("A")
            await a.create_folder("A1")
            await a.rename("Alpha")
            eid_a = (await a.get_props(["PR_ENTRYID"]))["PR_ENTRYID"]
            drafts = await _folder(store, "drafts")
            await inbox.copy_folder(eid_a, drafts, name="Alpha copy")
            tree = [r["PR_DISPLAY_NAME"] async for r in drafts.subfolders(["PR_DISPLAY_NAME"])]
            assert tree == ["Alpha copy"]
            await inbox.copy_folder(eid_a, drafts, move=True)
            names_after = sorted(
                [r["PR_DISPLAY_NAME"] async for r in drafts.subfolders(["PR_DISPLAY_NAME"])]
            )
            assert names_after == ["Alpha", "Alpha copy"]
            assert "Alpha" not in [
                r["PR_DISPLAY_NAME"] async for r in inbox.subfolders(["PR_DISPLAY_NAME"])
            ]
            with pytest.raises(errors.Collision):
                await drafts.create_folder("Alpha")
            await inbox.empty()
            assert [r async for r in inbox.contents(["PR_SUBJECT"])] == []
            rows = [r async for r in drafts.subfolders(["PR_DISPLAY_NAME", "PR_ENTRYID"])]
            copy_eid = next(r["PR_ENTRYID"] for r in rows if r["PR_DISPLAY_NAME"] == "Alpha copy")
            with pytest.raises(errors.HasFolders):
                await drafts.delete_folder(copy_eid)
            await drafts.delete_folder(copy_eid, flags=0x01 | 0x04 | 0x10)
            assert [r["PR_DISPLAY_NAME"] async for r in drafts.subfolders(["PR_DISPLAY_NAME"])] == [
                "Alpha"
            ]


def _auth(user: str) -> ClientAuth:
    """NTLM at privacy, as the store needs by default."""
    return ClientAuth(user=user, password=PASSWORDS[user])


async def _raw_store_call(rpc, ctx_id: int, opnum: int, request: dict) -> dict:
    return msgpack.unpackb(await rpc.call(ctx_id, opnum, msgpack.packb(request)))


async def test_logon_flood_and_oversized_names_are_refused(server):
    from mapi.rpc.service import OP_CONNECT

    with trio.fail_after(30):
        store_port = server.service_ports["store"]
        async with open_tcp_rpc_client("127.0.0.1", store_port, auth=_auth("alice")) as rpc:
            ctx_id = await rpc.bind(STORE_SYNTAX, (MSGPACK,))
            long_name = await _raw_store_call(rpc, ctx_id, OP_CONNECT, {"user": "x" * 10_000})
            assert long_name["hresult"] == errors.Hresult.MAPI_E_INVALID_PARAMETER
            # Logons begun on one connection (its own user's: it authenticated as alice).
            answers = [
                (await _raw_store_call(rpc, ctx_id, OP_CONNECT, {"user": "alice"}))["hresult"]
                for i in range(12)
            ]
            assert answers[:8] == [0] * 8
            assert set(answers[8:]) == {errors.Hresult.MAPI_E_NOT_ENOUGH_RESOURCES}
        # Another connection (a legitimate user) is not affected.
        async with connect(epm_address(server), "alice", PASSWORDS["alice"]) as session:
            assert session.user == "alice"


async def test_delegates_cannot_create_named_properties_in_another_mailbox(server):
    with trio.fail_after(30):
        async with connect(epm_address(server), "alice", PASSWORDS["alice"]) as alice:
            store = await alice.open_store()
            calendar = await _folder(store, "calendar")
            bob_id = (await trio.to_thread.run_sync(server.store.directory.get_user, "bob")).user_id
            await calendar.set_permission(bob_id, 0x400)  # folder visible
        async with connect(epm_address(server), "bob", PASSWORDS["bob"]) as bob:
            store = await bob.open_store("alice")
            with pytest.raises(errors.NoAccess):
                await store.get_ids_from_names([(PS_PUBLIC_STRINGS, "Spam")], create=True)


async def test_batch_results_are_bounded(server):
    from mapi.rpc import ops

    with trio.fail_after(60):
        async with connect(epm_address(server), "alice", PASSWORDS["alice"]) as session:
            store = await session.open_store()
            inbox = await _folder(store, "inbox")
            msg = await inbox.create_message()
            att = await msg.create_attachment()
            stream = await att.open_stream("PR_ATTACH_DATA_BIN", write=True, create=True)
            await stream.write(b"x" * ops.MAX_READ)
            await stream.commit()
            seek = ["seek_stream", {"h": stream.handle, "offset": 0}]
            read = ["read_stream", {"h": stream.handle, "size": ops.MAX_READ}]
            reads = [seek, read] * 20  # 20 MiB asked for, over the 16 MiB budget
            reads += [seek]
            results = await session.execute(reads)
            codes = [r[0] for r in results]
            assert codes[1] == 0 and len(results[1][1]) == ops.MAX_READ
            assert errors.Hresult.MAPI_E_TOO_BIG in codes
            assert codes[-1] == errors.Hresult.MAPI_E_TOO_BIG  # not run once the budget is full


async def test_a_batch_queued_behind_disconnect_does_not_run(server):
    from mapi.rpc.service import OP_DISCONNECT

    with trio.fail_after(30):
        async with connect(epm_address(server), "alice", PASSWORDS["alice"]) as session:
            results = {}

            async def batch():
                try:
                    results["batch"] = await session.execute([["open_store", {"out": 1}]])
                except errors.LogonFailed as exc:
                    results["batch"] = exc

            async with trio.open_nursery() as nursery:
                await _raw_store_call(
                    session.rpc, session.context_id, OP_DISCONNECT, {"session": session.session_id}
                )
                nursery.start_soon(batch)
            assert isinstance(results["batch"], errors.LogonFailed)


async def test_repeated_wrong_passwords_delay_further_logons(server, transport):
    with trio.fail_after(60):
        for _ in range(6):  # five free failures, then the delays begin
            with pytest.raises(errors.LogonFailed):
                async with open_session(server, transport, "bob", "not-the-password"):
                    pass
        # Now even the right password is refused until the delay has passed.
        with pytest.raises(errors.LogonFailed):
            async with open_session(server, transport, "bob"):
                pass
        # Other users are not affected.
        async with open_session(server, transport, "alice") as session:
            assert session.user == "alice"


@pytest.mark.parametrize("role", ["none", "reviewer", "editor", "owner"])
async def test_folder_permission_roles_over_rpc(server, role):
    """What each role on Alice's Inbox lets Bob do, checked over the wire."""
    from mapi.access.permissions import ROLES

    lan = epm_address(server)
    with trio.fail_after(60):
        async with connect(lan, "alice", PASSWORDS["alice"]) as alice:
            store = await alice.open_store()
            inbox = await _folder(store, "inbox")
            msg = await inbox.create_message()
            await msg.set_props({"PR_SUBJECT": "alice's"})
            eid = await msg.save()
            bob_id = (await trio.to_thread.run_sync(server.store.directory.get_user, "bob")).user_id
            await inbox.set_permission(bob_id, ROLES[role])
        async with connect(lan, "bob", PASSWORDS["bob"]) as bob:
            if role == "none":
                with pytest.raises(errors.NoAccess):
                    await bob.open_store("alice")
                return
            store = await bob.open_store("alice")
            inbox = await _folder(store, "inbox")
            subjects = [r["PR_SUBJECT"] async for r in inbox.contents(["PR_SUBJECT"])]
            assert subjects == ["alice's"]  # every role here may read

            async def can(call) -> bool:
                try:
                    await call
                except errors.NoAccess:
                    return False
                return True

            created = await can(inbox.create_message())
            deleted = await can(inbox.delete_messages([eid], hard=True))
            subfolder = await can(inbox.create_folder("bob's"))
            acl = await can(inbox.set_permission(bob_id, ROLES[role]))
            expected = {
                "reviewer": (False, False, False, False),
                "editor": (True, True, False, False),
                "owner": (True, True, True, True),
            }[role]
            assert (created, deleted, subfolder, acl) == expected
            # No role on the Inbox opens any other folder of hers.
            with pytest.raises(errors.NoAccess):
                await store.open_folder(await store.special_folder("sent"))
