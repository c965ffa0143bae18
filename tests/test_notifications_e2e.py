"""Notifications end to end: mail from A to B, B's live view (new-mail, object and table
events) on the LAN and through both tunnels, and a cut connection resumed with no event
lost and none twice."""

from __future__ import annotations

import pytest
import trio
from serve_helpers import start_server

from clients.api import Session, connect
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.wire import EventType

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
EVERYTHING = (
    EventType.NEW_MAIL
    | EventType.OBJECT_CREATED
    | EventType.OBJECT_DELETED
    | EventType.OBJECT_MODIFIED
    | EventType.OBJECT_MOVED
    | EventType.OBJECT_COPIED
)
DELEGATE = 0x0000047B  # read, create, edit any, delete any, folder visible


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_server(nursery, tmp_path / "data", PASSWORDS, emails=True)


@pytest.fixture(params=["lan", "tunnel-h2", "tunnel-http1"])
def transport(request):
    return request.param


def open_session(server, transport: str, user: str, resume: Session | None = None):
    if transport == "lan":
        address = f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"
        return connect(address, user, PASSWORDS[user], resume=resume)
    url = f"https://127.0.0.1:{server.tunnel.port}/?epm={server.epm_port}"
    return connect(
        url, user, PASSWORDS[user], fingerprint=server.tunnel.fingerprint,
        http2=transport == "tunnel-h2", resume=resume,
    )  # fmt: skip


async def next_events(session: Session, count: int) -> list:
    """Exactly ``count`` more events (several long-polls if need be)."""
    got: list = []
    with trio.fail_after(20):
        while len(got) < count:
            got += await session.wait_for_events(poll_seconds=10)
    assert len(got) == count, got
    return got


async def send(alice_session: Session, subject: str, to: str = "bob@example.org") -> None:
    store = await alice_session.open_store()
    drafts = await store.open_folder(await store.special_folder("drafts"))
    msg = await drafts.create_message()
    await msg.set_props({"PR_SUBJECT": subject, "PR_BODY": "hello"})
    await msg.add_recipient("Bob", to)
    await msg.save()
    result = await msg.submit()
    assert result["delivered"] == 1 and result["undeliverable"] == []


async def test_mail_events_and_table_view_stay_live(server, transport):
    with trio.fail_after(90):
        async with (
            connect(f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", "alice",
                    PASSWORDS["alice"]) as alice,
            open_session(server, transport, "bob") as bob,
        ):  # fmt: skip
            bob_store = await bob.open_store()
            inbox_eid = await bob_store.special_folder("inbox")
            inbox = await bob_store.open_folder(inbox_eid)
            archive = await inbox.create_folder("Archive")
            archive_eid = (await archive.get_props(["PR_ENTRYID"]))["PR_ENTRYID"]
            bob_id = (await trio.to_thread.run_sync(server.store.directory.get_user, "bob")).user_id
            alice_id = (
                await trio.to_thread.run_sync(server.store.directory.get_user, "alice")
            ).user_id
            await inbox.set_permission(alice_id, DELEGATE)
            await archive.set_permission(alice_id, DELEGATE)
            await bob_store.advise(EVERYTHING)
            await bob_store.advise_table(inbox_eid, "contents", ["PR_SUBJECT"])
            assert await bob.wait_for_events(poll_seconds=0) == []

            # A sends to B: B sees the new mail and the row in its open Inbox table.
            await send(alice, "Lunch?")
            events = await next_events(bob, 4)
            names = sorted(e.name for e in events)
            assert names == ["new_mail", "object_created", "object_modified", "table_modified"]
            new_mail = next(e for e in events if e.name == "new_mail")
            assert new_mail["parent_id"] == inbox_eid
            row_added = next(e for e in events if e.name == "table_modified")
            assert row_added["table_event"] == 3  # TABLE_ROW_ADDED
            assert dict(row_added["row"])[pt.PR_SUBJECT] == "Lunch?"
            message_eid = new_mail["entry_id"]
            assert [e.seq for e in events] == sorted(e.seq for e in events)

            # A, as B's delegate, moves the message to Archive, then deletes it.
            alice_view = await alice.open_store("bob")
            a_inbox = await alice_view.open_folder(inbox_eid)
            a_archive = await alice_view.open_folder(archive_eid)
            assert await a_inbox.copy_messages([message_eid], a_archive, move=True) == 0
            moved = await next_events(bob, 4)
            by_name = {e.name: e for e in moved}
            assert set(by_name) == {"object_moved", "table_modified", "object_modified"}
            assert by_name["object_moved"]["old_parent_id"] == inbox_eid
            assert by_name["object_moved"]["parent_id"] == archive_eid
            assert by_name["table_modified"]["table_event"] == 4  # TABLE_ROW_DELETED
            new_eid = by_name["object_moved"]["entry_id"]
            assert await a_archive.delete_messages([new_eid], hard=True) == 0
            deleted = await next_events(bob, 2)
            assert sorted(e.name for e in deleted) == ["object_deleted", "object_modified"]
            assert next(e for e in deleted if e.name == "object_deleted")["entry_id"] == new_eid
            assert await bob.wait_for_events(poll_seconds=0) == []  # nothing else

            # Unknown recipient: a non-delivery report lands in A's Inbox.
            store = await alice.open_store()
            drafts = await store.open_folder(await store.special_folder("drafts"))
            msg = await drafts.create_message()
            await msg.set_props({"PR_SUBJECT": "to nobody"})
            await msg.add_recipient("Nobody", "nobody@example.org")
            result = await msg.submit()
            assert result["undeliverable"] == ["nobody@example.org"]
            ndr = await store.open_message(result["ndr"])
            ndr_props = await ndr.get_props(["PR_MESSAGE_CLASS", "PR_SUBJECT"])
            assert ndr_props["PR_MESSAGE_CLASS"] == "REPORT.IPM.Note.NDR"
            assert "to nobody" in ndr_props["PR_SUBJECT"]
            del bob_id


async def test_cut_connection_resumes_without_losing_events(server, transport):
    with trio.fail_after(90):
        async with connect(
            f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", "alice", PASSWORDS["alice"]
        ) as alice:
            async with open_session(server, transport, "bob") as bob:
                store = await bob.open_store()
                await store.advise(EventType.NEW_MAIL)
                await send(alice, "first")
                (first,) = await next_events(bob, 1)
                assert first.name == "new_mail"
                # The connection is cut (the socket or tunnel dies under the client).
                await bob.rpc.stream.aclose()
                with pytest.raises(Exception):  # noqa: B017 - any transport error
                    await bob.wait_for_events(poll_seconds=0)
                cut = bob
            # Meanwhile, more mail arrives.
            await send(alice, "second")
            await send(alice, "third")
            async with open_session(server, transport, "bob", resume=cut) as bob:
                events = await next_events(bob, 2)
                assert [e.name for e in events] == ["new_mail", "new_mail"]
                assert [e.seq for e in events] == [first.seq + 1, first.seq + 2]
                assert await bob.wait_for_events(poll_seconds=0) == []  # none twice
            # After disconnect the session is gone: resuming fails, a new logon is needed.
        with pytest.raises(errors.LogonFailed):
            async with open_session(server, transport, "bob", resume=cut):
                pass


async def test_lan_client_gets_a_udp_wakeup_when_events_are_queued(server):
    lan = f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]"
    with trio.fail_after(30):
        async with (
            connect(lan, "alice", PASSWORDS["alice"]) as alice,
            connect(lan, "bob", PASSWORDS["bob"], wake_udp=True) as bob,
        ):
            store = await bob.open_store()
            await store.advise(EventType.NEW_MAIL)
            await send(alice, "wake up")
            await bob.wait_for_wakeup()  # the datagram, before any poll
            (event,) = await bob.wait_for_events(poll_seconds=0)
            assert event.name == "new_mail"
        with pytest.raises(ValueError, match="LAN"):
            async with connect(f"https://127.0.0.1:{server.tunnel.port}/", "bob",
                               PASSWORDS["bob"], wake_udp=True):  # fmt: skip
                pass


async def test_wake_port_must_be_unprivileged(server):
    import msgpack

    from dcerpc.auth_context import ClientAuth
    from dcerpc.client import open_tcp_rpc_client
    from dcerpc.syntax import MSGPACK
    from mapi.rpc.service import OP_CONNECT, STORE_SYNTAX

    with trio.fail_after(30):
        auth = ClientAuth(user="bob", password=PASSWORDS["bob"])  # NTLM: the default level
        async with open_tcp_rpc_client(
            "127.0.0.1", server.service_ports["store"], auth=auth
        ) as rpc:
            ctx_id = await rpc.bind(STORE_SYNTAX, (MSGPACK,))
            first = msgpack.unpackb(
                await rpc.call(ctx_id, OP_CONNECT, msgpack.packb({"user": "bob"}))
            )
            from mapi.access.logon import Challenge, KdfParams, client_response

            kdf = first["kdf"]
            challenge = Challenge("bob", first["salt"], KdfParams(kdf["n"], kdf["r"], kdf["p"]),
                                  first["nonce"])  # fmt: skip
            cnonce, response = client_response(PASSWORDS["bob"], challenge)
            request = {"user": "bob", "nonce": first["nonce"], "cnonce": cnonce,
                       "response": response, "wake_port": 53}  # fmt: skip
            reply = msgpack.unpackb(await rpc.call(ctx_id, OP_CONNECT, msgpack.packb(request)))
            assert reply["hresult"] == errors.Hresult.MAPI_E_INVALID_PARAMETER
