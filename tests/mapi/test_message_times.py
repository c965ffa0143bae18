"""Times of messages made through the API (creation, last modification, delivery), so
"newest first" holds for drafts and mail alike; and the server's answer to a value too
large for one set_props call, which points at streams. End to end: a real server on
loopback, the client library."""

from __future__ import annotations

import pytest
import trio
from serve_helpers import start_server

from clients.api import Call, connect
from mapi.model import errors
from mapi.model import proptags as pt

PASSWORDS = {"alice": "correct horse", "bob": "battery staple"}
TIMES = ["PR_CREATION_TIME", "PR_LAST_MODIFICATION_TIME", "PR_MESSAGE_DELIVERY_TIME"]


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_server(nursery, tmp_path / "data", PASSWORDS, emails=True)


def session_of(server, user: str):
    return connect(f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", user, PASSWORDS[user])


async def _save(folder, subject: str, **extra: object) -> bytes:
    msg = await folder.create_message()
    await msg.set_props({"PR_SUBJECT": subject, **extra})
    return bytes(await msg.save())


async def test_a_saved_message_has_creation_modification_and_delivery_times(server) -> None:
    with trio.fail_after(60):
        async with session_of(server, "alice") as session:
            store = await session.open_store()
            drafts = await store.open_folder(await store.special_folder("drafts"))
            msg = await drafts.create_message()
            created = (await msg.get_props(["PR_CREATION_TIME"]))["PR_CREATION_TIME"]
            await msg.set_props({"PR_SUBJECT": "draft"})
            eid = await msg.save()
            first = await (await store.open_message(eid)).get_props(TIMES)
            assert first["PR_CREATION_TIME"] == created
            delivered = first.get("PR_MESSAGE_DELIVERY_TIME")  # stamped at the first save
            assert isinstance(delivered, int), first
            assert created <= delivered <= first["PR_LAST_MODIFICATION_TIME"]
            # A later save moves the modification time only.
            await msg.set_props({"PR_SUBJECT": "draft, edited"})
            await msg.save()
            again = await (await store.open_message(eid)).get_props(TIMES)
            assert again["PR_CREATION_TIME"] == created
            assert again["PR_MESSAGE_DELIVERY_TIME"] == delivered
            assert again["PR_LAST_MODIFICATION_TIME"] >= first["PR_LAST_MODIFICATION_TIME"]


async def test_a_delivery_time_the_client_sets_is_kept(server) -> None:
    imported = 125_000_000_000_000_000  # an importer's original date
    with trio.fail_after(60):
        async with session_of(server, "alice") as session:
            store = await session.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            eid = await _save(inbox, "old mail", PR_MESSAGE_DELIVERY_TIME=imported)
            props = await (await store.open_message(eid)).get_props(TIMES)
            assert props["PR_MESSAGE_DELIVERY_TIME"] == imported


async def test_newest_first_holds_for_saved_and_delivered_messages(server) -> None:
    with trio.fail_after(60):
        async with session_of(server, "alice") as alice, session_of(server, "bob") as bob:
            store = await alice.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            await _save(inbox, "first, saved")
            bobs = await bob.open_store()
            drafts = await bobs.open_folder(await bobs.special_folder("drafts"))
            mail = await drafts.create_message()
            await mail.set_props({"PR_SUBJECT": "second, delivered"})
            await mail.add_recipient("Alice", "alice@example.org")
            await mail.save()
            assert (await mail.submit())["delivered"] == 1
            await _save(inbox, "third, saved")
            sort = [("PR_MESSAGE_DELIVERY_TIME", True)]
            rows = [row["PR_SUBJECT"] async for row in inbox.contents(["PR_SUBJECT"], sort=sort)]
            assert rows == ["third, saved", "second, delivered", "first, saved"]


@pytest.mark.parametrize(
    ("prop", "value"),
    [("PR_BODY", "x" * 600_000), ("PR_RTF_COMPRESSED", b"x" * 1_100_000)],
    ids=["string", "binary"],
)
async def test_a_value_too_large_for_set_props_points_to_streams(
    server, prop: str, value: object
) -> None:
    """The server's own answer, as any client gets it (ours checks before sending, so
    the call is made raw here)."""
    with trio.fail_after(60):
        async with connect(
            f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", "alice", PASSWORDS["alice"]
        ) as session:
            store = await session.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            msg = await inbox.create_message()
            props = [[pt.PR_SUBJECT_W, "big"], [pt.tag_from_name(prop), value]]
            raw = Call(session, "set_props", {"h": msg.handle, "props": props}, lambda h, v: v)
            with pytest.raises(errors.TooBig) as caught:
                await raw
            text = str(caught.value)
            assert text.startswith(f"MAPI_E_TOO_BIG: {pt.tag_name(pt.tag_from_name(prop))} (")
            assert text.endswith("; write it through a stream (open_stream)")
            # Nothing of the call was applied; the same value through a stream works.
            assert "PR_SUBJECT" not in await msg.get_props(["PR_SUBJECT"])
            stream = await msg.open_stream(prop, create=True)
            data = value.encode("utf-16-le") if isinstance(value, str) else value
            assert isinstance(data, bytes)
            for at in range(0, len(data), 1 << 20):
                await stream.write(data[at : at + (1 << 20)])
            await stream.commit()
            await msg.save()
            assert await stream.size() == len(data)
