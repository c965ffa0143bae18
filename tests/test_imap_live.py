"""IMAP and MAPI live, both ways, on a real ``serve`` (in-process, free loopback ports).

- An IDLE client (implicit TLS) hears, while idling and without sending a command, a
  message delivered by SMTP (``EXISTS``), the read flag and the follow-up flag set
  through the MAPI client (``FETCH (FLAGS ...)``) and a message moved away through MAPI
  (``EXPUNGE``). tests/test_imap_e2e.py covers the SMTP case alone; this adds the MAPI
  changes.
- A MAPI session subscribed to the Inbox (``advise`` on the folder and on the store)
  gets, as events, ``\\Seen`` and ``\\Flagged`` set through IMAP (STORE), and a message
  moved through IMAP (UID MOVE): ``object_moved`` from the Inbox into the target, with
  the same entry id (the store's move keeps it).

Each wait is bounded (``trio.fail_after``); no timing is asserted."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio
from mail_clients import mapi_entry_ids, mapi_folders, smtp_deliver
from mail_helpers import LineClient
from serve_helpers import start_server

from clients.api import Event, Session, connect
from mapi.model import proptags as pt
from mapi.wire import EventType
from mapi_anywhere.config import ImapSection, SmtpSection

PASSWORD = "bob-password"
#: How long a pushed change may take to arrive (a bound, not a timing assertion).
PUSHED = 10


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Any) -> Any:
    running = await start_server(
        nursery, tmp_path / "data", {"bob": PASSWORD}, emails=True, smtp=SmtpSection(port=0),
        imap=ImapSection(port=0, tls_port=0),
    )  # fmt: skip
    with trio.fail_after(60):
        for subject in ("one", "two", "three"):
            await trio.to_thread.run_sync(smtp_deliver, running.smtp_port, subject)
    return running


async def imap_login(port: int) -> LineClient:
    client = await LineClient.connect(port, tls=True)
    await client.line()
    await client.send(b"L LOGIN bob %s\r\n" % PASSWORD.encode())
    assert (await client.until(b"L "))[-1].startswith(b"L OK")
    await client.send(b"S SELECT INBOX\r\n")
    assert (await client.until(b"S "))[-1].startswith(b"S OK")
    return client


async def uid_of(client: LineClient, subject: str) -> int:
    await client.send(b"U UID SEARCH SUBJECT %s\r\n" % subject.encode())
    lines = await client.until(b"U ")
    assert lines[-1].startswith(b"U OK"), lines
    [uid] = next(line for line in lines if line.startswith(b"* SEARCH")).split()[2:]
    return int(uid)


def mapi(server: Any) -> Any:
    return connect(f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", "bob", PASSWORD)


async def test_idle_hears_smtp_delivery_and_mapi_changes(server: Any) -> None:
    with trio.fail_after(90):
        idler = await imap_login(server.imaps_port)
        await idler.send(b"F FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
        listing = b"\n".join(await idler.until(b"F OK"))
        # Sequence numbers of "two" and "three" (delivery order).
        assert re.search(
            rb"\* 2 FETCH \(UID \d+ FLAGS \(\) BODY\[HEADER.FIELDS \(SUBJECT\)\]", listing
        )
        await idler.send(b"I IDLE\r\n")
        assert (await idler.line()).startswith(b"+ ")

        await trio.to_thread.run_sync(smtp_deliver, server.smtp_port, "four")
        with trio.fail_after(PUSHED):
            assert await idler.line() == b"* 4 EXISTS"

        async with mapi(server) as bob:
            store = await bob.open_store()
            folders = await mapi_folders(bob)
            ids = await mapi_entry_ids(folders["INBOX"])
            message = await store.open_message(ids["two"])
            await message.set_read_flag()
            with trio.fail_after(PUSHED):
                assert await idler.line() == b"* 2 FETCH (FLAGS (\\Seen))"
            message = await store.open_message(ids["three"], write=True)
            await message.set_props({pt.PR_FLAG_STATUS: 2})
            await message.save()
            with trio.fail_after(PUSHED):
                assert await idler.line() == b"* 3 FETCH (FLAGS (\\Flagged))"
            top = await store.open_folder(await store.special_folder("ipm_subtree"))
            archive = await top.create_folder("Archive")
            await folders["INBOX"].copy_messages([ids["one"]], archive, move=True)
            with trio.fail_after(PUSHED):
                assert await idler.line() == b"* 1 EXPUNGE"

        await idler.send(b"DONE\r\n")
        assert await idler.line() == b"I OK IDLE terminated"
        await idler.send(b"G FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
        after = b"\n".join(await idler.until(b"G OK"))
        await idler.aclose()
    subjects = re.findall(rb"Subject: (\w+)", after)
    assert subjects == [b"two", b"three", b"four"]
    assert b"* 1 FETCH (FLAGS (\\Seen)" in after and b"* 2 FETCH (FLAGS (\\Flagged)" in after


async def events_until(session: Session, done: Any, limit: float = PUSHED) -> list[Event]:
    """Events from ``session`` until ``done(events)`` holds (bounded in time)."""
    events: list[Event] = []
    with trio.fail_after(limit):
        while not done(events):
            events += await session.wait_for_events(poll_seconds=2)
    return events


async def test_mapi_subscriber_sees_imap_flags_and_move(server: Any) -> None:
    with trio.fail_after(90):
        async with mapi(server) as bob:
            store = await bob.open_store()
            inbox_eid = await store.special_folder("inbox")
            inbox = await store.open_folder(inbox_eid)
            ids = await mapi_entry_ids(inbox)
            top = await store.open_folder(await store.special_folder("ipm_subtree"))
            archive = await top.create_folder("Archive")
            archive_eid = (await archive.get_props([pt.PR_ENTRYID]))[pt.PR_ENTRYID]
            await store.advise(EventType.OBJECT_MODIFIED, inbox_eid)
            await store.advise(EventType.OBJECT_MOVED)
            assert await bob.wait_for_events(poll_seconds=0) == []

            imap = await imap_login(server.imaps_port)
            uid = await uid_of(imap, "two")
            await imap.send(b"A UID STORE %d +FLAGS (\\Seen)\r\n" % uid)
            assert (await imap.until(b"A "))[-1].startswith(b"A OK")

            def modified(eid: bytes) -> Any:
                return lambda events: any(
                    e.name == "object_modified" and e.get("entry_id") == eid for e in events
                )

            seen = await events_until(bob, modified(ids["two"]))
            flags = await (await store.open_message(ids["two"])).get_props([pt.PR_MESSAGE_FLAGS])
            assert flags[pt.PR_MESSAGE_FLAGS] & pt.MSGFLAG_READ, seen

            uid3 = await uid_of(imap, "three")
            await imap.send(b"B UID STORE %d +FLAGS (\\Flagged)\r\n" % uid3)
            assert (await imap.until(b"B "))[-1].startswith(b"B OK")
            await events_until(bob, modified(ids["three"]))
            status = await (await store.open_message(ids["three"])).get_props([pt.PR_FLAG_STATUS])
            assert status.get(pt.PR_FLAG_STATUS) == 2

            await imap.send(b"M UID MOVE %d Archive\r\n" % uid)
            moved_lines = await imap.until(b"M ")
            assert moved_lines[-1].startswith(b"M OK"), moved_lines
            events = await events_until(
                bob, lambda events: any(e.name == "object_moved" for e in events)
            )
            moved = next(e for e in events if e.name == "object_moved")
            assert moved["entry_id"] == ids["two"]  # the store's move keeps the message id
            assert moved["parent_id"] == archive_eid
            assert moved["old_parent_id"] == inbox_eid
            assert set(await mapi_entry_ids(archive)) == {"two"}
            assert set(await mapi_entry_ids(inbox)) == {"one", "three"}
            await imap.aclose()
