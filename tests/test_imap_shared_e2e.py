"""Other users' folders over a real ``serve`` (in-process, loopback): alice grants bob
reviewer rights on her Inbox through the MAPI client library; Python's imaplib, logged
on as bob, finds the "Other Users/" namespace, lists, examines, searches and fetches
her mail with her UIDs, and is refused a flag change; carol, granted nothing, sees
nothing of alice's."""

from __future__ import annotations

import imaplib
import re
import smtplib
from email.message import EmailMessage
from typing import Any

import pytest
import trio
from mail_helpers import LineClient, client_context
from serve_helpers import start_server

from clients.api import connect
from mapi_anywhere.config import ImapSection, SmtpSection

PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "carol": "carol-password"}
REVIEWER = 0x401  # read items + folder visible
SHARED = '"Other Users/alice/INBOX"'


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Any) -> Any:
    return await start_server(
        nursery, tmp_path / "data", PASSWORDS, emails=True, smtp=SmtpSection(port=0),
        imap=ImapSection(port=0, tls_port=0),
    )  # fmt: skip


def deliver(port: int, subject: str) -> None:
    msg = EmailMessage()
    msg["From"] = "Dan <dan@outside.example>"
    msg["To"] = "alice@example.org"
    msg["Subject"] = subject
    msg.set_content(f"This is {subject}.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.send_message(msg)


def imap_as(port: int, user: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with imaplib.IMAP4("127.0.0.1", port, timeout=30) as imap:
        imap.starttls(client_context())
        imap.login(user, PASSWORDS[user])
        seen["namespace"] = imap.namespace()
        seen["list"] = imap.list('""', '"Other Users/*"')
        if user == "alice":
            seen["select"] = imap.select("INBOX")
            seen["uids"] = imap.uid("SEARCH", "ALL")
        else:
            try:
                seen["select"] = imap.select(SHARED)
            except imaplib.IMAP4.readonly:  # SELECT answered [READ-ONLY]
                seen["readonly"] = True
                seen["select"] = imap.select(SHARED, readonly=True)
            except imaplib.IMAP4.error as exc:
                seen["select"] = ("NO", str(exc))
        if seen["select"][0] == "OK" and user != "alice":
            seen["uids"] = imap.uid("SEARCH", "ALL")
            seen["search"] = imap.search(None, "SUBJECT", "report")
            seen["fetch"] = imap.fetch("1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        imap.logout()
    return seen


async def test_bob_reads_alices_inbox_through_a_grant(server: Any) -> None:
    with trio.fail_after(90):
        for subject in ("hello", "the report", "bye"):
            await trio.to_thread.run_sync(deliver, server.smtp_port, subject)
        before = await trio.to_thread.run_sync(imap_as, server.imap_port, "bob")
        async with connect(
            f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", "alice", PASSWORDS["alice"]
        ) as alice:
            store = await alice.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            await inbox.set_permission("bob", REVIEWER)
        bob = await trio.to_thread.run_sync(imap_as, server.imap_port, "bob")
        # imaplib refuses to send STORE after a read-only SELECT: by hand.
        raw = await LineClient.connect(server.imaps_port, tls=True)
        await raw.line()
        await raw.send(b"L LOGIN bob %s\r\n" % PASSWORDS["bob"].encode())
        assert (await raw.until(b"L "))[-1].startswith(b"L OK")
        await raw.send(b"S SELECT " + SHARED.encode() + b"\r\n")
        selected = await raw.until(b"S ")
        await raw.send(b"F STORE 1 +FLAGS (\\Seen)\r\n")
        refused = (await raw.until(b"F "))[-1]
        await raw.aclose()
        carol = await trio.to_thread.run_sync(imap_as, server.imap_port, "carol")
        owner = await trio.to_thread.run_sync(imap_as, server.imap_port, "alice")
    # Before the grant: the namespace is there, but nothing in it and no such mailbox.
    assert before["namespace"] == ("OK", [b'(("" "/")) (("Other Users/" "/")) NIL'])
    assert before["list"] == ("OK", [None])
    assert before["select"][0] == "NO"
    listed = b"\n".join(line for line in bob["list"][1] if isinstance(line, bytes))
    assert b'(\\Noselect \\HasChildren) "/" "Other Users/alice"' in listed
    assert b'"/" "Other Users/alice/INBOX"' in listed
    assert bob["select"] == ("OK", [b"3"])
    assert bob["readonly"]  # SELECT said [READ-ONLY]: reviewer rights change nothing
    assert bob["uids"] == owner["uids"]  # the owner's UIDs
    assert bob["search"] == ("OK", [b"2"])
    subjects = re.findall(rb"Subject: ([^\r]*)", b" ".join(
        part[1] for part in bob["fetch"][1] if isinstance(part, tuple)
    ))  # fmt: skip
    assert subjects == [b"hello", b"the report", b"bye"]
    assert selected[-1] == b"S OK [READ-ONLY] SELECT completed"
    assert refused.startswith(b"F NO [NOPERM]")
    assert carol["list"] == ("OK", [None])
    assert carol["select"][0] == "NO"
