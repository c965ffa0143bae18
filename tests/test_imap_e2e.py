"""IMAP end to end: a real ``serve`` (in-process, every listener on a free loopback
port) with the store-backed backends; mail delivered by SMTP (smtplib) reaches an
IDLE client at once, and Python's imaplib reads and changes the Inbox (SELECT, FETCH,
SEARCH, STORE), the change seen through MAPI."""

from __future__ import annotations

import imaplib
import smtplib
from email.message import EmailMessage
from typing import Any

import pytest
import trio
from mail_helpers import LineClient, client_context
from serve_helpers import start_server

from clients.api import connect
from mapi.model import proptags as pt
from mapi_anywhere.config import ImapSection, SmtpSection

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Any) -> Any:
    return await start_server(
        nursery, tmp_path / "data", PASSWORDS, emails=True, smtp=SmtpSection(port=0),
        imap=ImapSection(port=0, tls_port=0),
    )  # fmt: skip


def deliver(port: int, subject: str, to: str = "bob@example.org") -> None:
    msg = EmailMessage()
    msg["From"] = "Carol <carol@outside.example>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(f"This is {subject}.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.send_message(msg)


async def login(port: int, user: str) -> LineClient:
    client = await LineClient.connect(port, tls=True)
    await client.line()
    await client.send(b"L LOGIN %s %s\r\n" % (user.encode(), PASSWORDS[user].encode()))
    assert (await client.until(b"L "))[-1].startswith(b"L OK")
    await client.send(b"S SELECT INBOX\r\n")
    assert (await client.until(b"S "))[-1].startswith(b"S OK")
    return client


async def test_idle_sees_mail_delivered_by_smtp(server: Any) -> None:
    with trio.fail_after(60):
        await trio.to_thread.run_sync(deliver, server.smtp_port, "first")
        idler = await login(server.imaps_port, "bob")
        await idler.send(b"I IDLE\r\n")
        assert (await idler.line()).startswith(b"+ ")
        await trio.to_thread.run_sync(deliver, server.smtp_port, "second")
        with trio.fail_after(5):  # pushed by the store's notification, not polled
            assert await idler.line() == b"* 2 EXISTS"
        await idler.send(b"DONE\r\n")
        assert await idler.line() == b"I OK IDLE terminated"
        await idler.send(b"F FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
        fetched = await idler.until(b"F ")
        assert b"Subject: second" in b"\n".join(fetched) and fetched[-1].startswith(b"F OK")
        await idler.aclose()


def imaplib_session(port: int) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with imaplib.IMAP4("127.0.0.1", port, timeout=30) as imap:
        imap.starttls(client_context())
        imap.login("bob@example.org", PASSWORDS["bob"])  # the e-mail address works too
        seen["select"] = imap.select("INBOX")
        seen["search"] = imap.search(None, "SUBJECT", "report")
        seen["fetch"] = imap.fetch("1:*", "(UID FLAGS RFC822.SIZE ENVELOPE)")
        seen["body"] = imap.fetch("2", "(BODY.PEEK[TEXT])")
        seen["store"] = imap.store("2", "+FLAGS", "(\\Seen \\Flagged)")
        seen["unseen"] = imap.search(None, "UNSEEN")
        seen["list"] = imap.list()
        imap.logout()
    return seen


async def test_imaplib_reads_and_flags_the_inbox(server: Any) -> None:
    with trio.fail_after(90):
        for subject in ("hello", "the report", "bye"):
            await trio.to_thread.run_sync(deliver, server.smtp_port, subject)
        seen = await trio.to_thread.run_sync(imaplib_session, server.imap_port)
        async with connect(
            f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", "bob", PASSWORDS["bob"]
        ) as bob:
            store = await bob.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            rows = [
                row
                async for row in inbox.contents(
                    [pt.PR_SUBJECT_W, pt.PR_MESSAGE_FLAGS, pt.PR_FLAG_STATUS]
                )
            ]
    assert seen["select"] == ("OK", [b"3"])
    assert seen["search"] == ("OK", [b"2"])
    status, fetched = seen["fetch"]
    assert status == "OK" and len([f for f in fetched if isinstance(f, bytes)]) == 3
    assert b'"the report"' in b" ".join(f for f in fetched if isinstance(f, bytes))
    assert b"This is the report." in seen["body"][1][0][1]
    assert seen["unseen"] == ("OK", [b"1 3"])
    assert any(b'"INBOX"' in line or b" INBOX" in line for line in seen["list"][1])
    # Seen and Flagged reached MAPI: the read flag and the follow-up flag.
    by_subject = {row[pt.PR_SUBJECT_W]: row for row in rows}
    report = by_subject["the report"]
    assert report[pt.PR_MESSAGE_FLAGS] & 0x1  # MSGFLAG_READ
    assert report.get(pt.PR_FLAG_STATUS) == 2  # followupFlagged
    assert not by_subject["hello"][pt.PR_MESSAGE_FLAGS] & 0x1
