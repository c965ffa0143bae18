"""QRESYNC end to end ([RFC 7162] 3.2) over a real ``serve`` (in-process, every
listener on a free loopback port): an idling client that enabled QRESYNC hears
``* VANISHED`` when another IMAP connection expunges and when a MAPI client deletes and
moves messages; on reconnecting, ``SELECT INBOX (QRESYNC (v m))`` answers
``VANISHED (EARLIER)`` with exactly the removed uids and FETCHes the changed message."""

from __future__ import annotations

import re
import smtplib
from email.message import EmailMessage
from typing import Any

import pytest
import trio
from mail_helpers import LineClient
from serve_helpers import start_server

from clients.api import connect
from mapi.model import proptags as pt
from mapi_anywhere.config import ImapSection, SmtpSection

PASSWORDS = {"bob": "bob-password"}


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Any) -> Any:
    return await start_server(
        nursery, tmp_path / "data", PASSWORDS, emails=True, smtp=SmtpSection(port=0),
        imap=ImapSection(port=0, tls_port=0),
    )  # fmt: skip


def deliver(port: int, subjects: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        for subject in subjects:
            msg = EmailMessage()
            msg["From"] = "Carol <carol@outside.example>"
            msg["To"] = "bob@example.org"
            msg["Subject"] = subject
            msg.set_content(f"This is {subject}.\n")
            client.send_message(msg)


async def login(port: int) -> LineClient:
    client = await LineClient.connect(port, tls=True)
    await client.line()
    await client.send(b"L LOGIN bob %s\r\nE ENABLE QRESYNC\r\n" % PASSWORDS["bob"].encode())
    assert (await client.until(b"L "))[-1].startswith(b"L OK")
    assert (await client.until(b"E "))[-1].startswith(b"E OK")
    return client


async def command(client: LineClient, tag: bytes, line: bytes) -> list[bytes]:
    await client.send(tag + b" " + line + b"\r\n")
    lines = await client.until(tag + b" ")
    assert lines[-1].startswith(tag + b" OK"), lines
    return lines


def number(name: bytes, lines: list[bytes]) -> int:
    found = re.search(name + rb" (\d+)", b"\n".join(lines))
    assert found is not None, lines
    return int(found.group(1))


async def test_vanished_live_and_on_resync(server: Any) -> None:
    with trio.fail_after(90):
        subjects = [f"m{n}" for n in range(1, 7)]
        await trio.to_thread.run_sync(deliver, server.smtp_port, subjects)
        first = await login(server.imaps_port)
        selected = await command(first, b"S", b"SELECT INBOX")
        assert b"* 6 EXISTS" in selected
        validity, seen = number(b"UIDVALIDITY", selected), number(b"HIGHESTMODSEQ", selected)
        await first.send(b"I IDLE\r\n")
        assert (await first.line()).startswith(b"+ ")

        # Another IMAP connection expunges uid 2.
        other = await login(server.imaps_port)
        await command(other, b"S", b"SELECT INBOX")
        await command(other, b"D", b"UID STORE 2 +FLAGS.SILENT (\\Deleted)")
        assert b"* VANISHED 2" in await command(other, b"X", b"UID EXPUNGE 2")
        with trio.fail_after(10):
            line = await first.line()
            while line.startswith(b"* ") and b"FETCH" in line:  # the \Deleted flag first
                line = await first.line()
            assert line == b"* VANISHED 2"

        # A MAPI client deletes m3 for good, m4 into Deleted Items, and moves m5 away;
        # it marks m6 read.
        async with connect(
            f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", "bob", PASSWORDS["bob"]
        ) as bob:
            store = await bob.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            sent = await store.open_folder(await store.special_folder("sent"))
            ids = {
                row[pt.PR_SUBJECT_W]: row[pt.PR_ENTRYID]
                async for row in inbox.contents([pt.PR_SUBJECT_W, pt.PR_ENTRYID])
            }
            await inbox.delete_messages([ids["m3"]], hard=True)
            await inbox.delete_messages([ids["m4"]])
            await inbox.copy_messages([ids["m5"]], sent, move=True)
            await inbox.set_read_flags([ids["m6"]])
        heard: set[int] = set()
        with trio.fail_after(10):
            while heard != {3, 4, 5}:
                line = await first.line()
                assert not line.endswith(b"EXPUNGE"), line
                if line.startswith(b"* VANISHED "):
                    for part in line[len(b"* VANISHED ") :].split(b","):
                        low, _, high = part.partition(b":")
                        heard.update(range(int(low), int(high or low) + 1))
        await first.send(b"DONE\r\n")
        await first.until(b"I ")
        await first.aclose()
        await other.aclose()

        # A reconnecting client resynchronises from the modseq it had.
        again = await login(server.imaps_port)
        lines = await command(again, b"Q", b"SELECT INBOX (QRESYNC (%d %d))" % (validity, seen))
        assert b"* 2 EXISTS" in lines
        assert b"* VANISHED (EARLIER) 2:5" in lines
        fetched = [ln for ln in lines if b" FETCH " in ln]
        assert len(fetched) == 1 and fetched[0].startswith(b"* 2 FETCH (UID 6 FLAGS (\\Seen)")
        # Told nothing again from the HIGHESTMODSEQ it has now.
        top = number(b"HIGHESTMODSEQ", lines)
        assert top > seen
        lines = await command(again, b"R", b"SELECT INBOX (QRESYNC (%d %d))" % (validity, top))
        assert not any(b"VANISHED" in ln or b" FETCH " in ln for ln in lines)
        lines = await command(
            again, b"F", b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % seen
        )
        assert lines[0] == b"* VANISHED (EARLIER) 2:5"
        await again.aclose()
