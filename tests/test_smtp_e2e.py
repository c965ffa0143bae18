"""Incoming Internet mail end to end: a real ``serve`` with its SMTP listener on
loopback, independent clients (Python's smtplib, swaks) delivering, and the messages
read back through our MAPI client, with the NEW_MAIL event of a subscribed session."""

from __future__ import annotations

import shutil
import smtplib
import socket
import ssl
import subprocess
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest
import trio
from serve_helpers import start_server

from clients.api import Session, connect
from clients.cli_messages import read_stream
from mapi.model import proptags as pt
from mapi.wire import EventType
from mapi_anywhere.config import SmtpSection

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
ATTACHMENT = bytes(range(256)) * 40  # 10 KB, every byte value


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_server(
        nursery, tmp_path / "data", PASSWORDS, emails=True, smtp=SmtpSection(port=0)
    )


def session(server: Any, user: str) -> Any:
    return connect(f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", user, PASSWORDS[user])


def sample(subject: str, to: str = "bob@example.org") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Carol Outside <carol@outside.example>"
    msg["To"] = f"Bob <{to}>"
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="outside.example")
    msg.set_content("Hello Bob,\nthe report is attached.\n")
    msg.add_attachment(
        ATTACHMENT, maintype="application", subtype="octet-stream", filename="report.bin"
    )
    return msg


def smtp_send(
    port: int, msg: EmailMessage, *, starttls: bool = False, to: str | None = None
) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("client.outside.example")
        if starttls:
            assert client.has_extn("starttls")
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # serve's certificate is self-signed
            client.starttls(context=ctx)
            client.ehlo("client.outside.example")
        assert not client.has_extn("auth")  # no AUTH on the incoming listener
        return client.send_message(msg, to_addrs=[to] if to else None)


async def inbox_messages(bob: Session) -> list[Any]:
    store = await bob.open_store()
    inbox = await store.open_folder(await store.special_folder("inbox"))
    return [row async for row in inbox.contents([pt.PR_SUBJECT_W, pt.PR_ENTRYID])]


async def subjects(server: Any) -> list[str]:
    async with session(server, "bob") as bob:
        return sorted(row[pt.PR_SUBJECT_W] for row in await inbox_messages(bob))


async def test_smtplib_multipart_reaches_the_inbox_with_new_mail(server):
    with trio.fail_after(60):
        async with session(server, "bob") as bob:
            store = await bob.open_store()
            inbox_eid = await store.special_folder("inbox")
            await store.advise(EventType.NEW_MAIL)
            assert await bob.wait_for_events(poll_seconds=0) == []
            refused = await trio.to_thread.run_sync(
                lambda: smtp_send(server.smtp_port, sample("Quarterly report"))
            )
            assert refused == {}
            events: list[Any] = []
            while not any(e.name == "new_mail" for e in events):
                events += await bob.wait_for_events(poll_seconds=10)
            new_mail = next(e for e in events if e.name == "new_mail")
            assert new_mail["parent_id"] == inbox_eid

            [row] = await inbox_messages(bob)
            assert row[pt.PR_SUBJECT_W] == "Quarterly report"
            message = await store.open_message(row[pt.PR_ENTRYID])
            props = await message.get_props(
                [
                    pt.PR_SUBJECT_W, pt.PR_BODY_W, pt.PR_SENT_REPRESENTING_NAME_W,
                    pt.PR_SENT_REPRESENTING_SMTP_ADDRESS_W, pt.PR_MESSAGE_FLAGS,
                    pt.PR_RECEIVED_BY_SMTP_ADDRESS_W, pt.PR_MESSAGE_TO_ME, pt.PR_HASATTACH,
                ]
            )  # fmt: skip
            assert props[pt.PR_SUBJECT_W] == "Quarterly report"
            assert props[pt.PR_SENT_REPRESENTING_NAME_W] == "Carol Outside"
            assert props[pt.PR_SENT_REPRESENTING_SMTP_ADDRESS_W] == "carol@outside.example"
            assert (
                props[pt.PR_BODY_W].replace("\r\n", "\n") == "Hello Bob,\nthe report is attached.\n"
            )
            assert props[pt.PR_MESSAGE_FLAGS] & pt.MSGFLAG_READ == 0  # unread
            assert props[pt.PR_RECEIVED_BY_SMTP_ADDRESS_W] == "bob@example.org"
            assert props[pt.PR_MESSAGE_TO_ME] is True
            assert props[pt.PR_HASATTACH] is True

            table = await message.attachment_table()
            await table.set_columns([pt.PR_ATTACH_NUM, pt.PR_ATTACH_LONG_FILENAME_W])
            [attach_row] = await table.query_rows(10)
            assert attach_row[pt.PR_ATTACH_LONG_FILENAME_W] == "report.bin"
            attachment = await message.open_attachment(attach_row[pt.PR_ATTACH_NUM])
            assert await read_stream(attachment, pt.PR_ATTACH_DATA_BIN) == ATTACHMENT

            # The bytes as received, our Received header first (RFC 5321 4.4).
            original = await read_stream(message, pt.PR_MIME_ORIGINAL)
            assert original.startswith(b"Received: from client.outside.example ([127.0.0.1])")
            assert b"for <bob@example.org>" in original.split(b"\r\n\r\n", 1)[0]
            assert b"\r\nSubject: Quarterly report\r\n" in original


def rcpt_reply(port: int, to: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("client.outside.example")
        client.mail("carol@outside.example")
        return client.rcpt(to)


async def test_unknown_local_recipient_is_refused_at_rcpt(server):
    with trio.fail_after(30):
        code, text = await trio.to_thread.run_sync(
            rcpt_reply, server.smtp_port, "nobody@example.org"
        )
        assert (code, text[:5]) == (550, b"5.1.1")
        # Known users are found by address and, at localhost, by login name.
        assert (await trio.to_thread.run_sync(rcpt_reply, server.smtp_port, "BOB@example.org"))[
            0
        ] == 250
        assert (await trio.to_thread.run_sync(rcpt_reply, server.smtp_port, "alice@localhost"))[
            0
        ] == 250


@pytest.mark.parametrize(
    "to",
    ["someone@other.example", "bob%other.example@example.org", "bob!other.example@example.org"],
)
async def test_external_recipient_is_not_relayed(server, to):
    with trio.fail_after(30):
        code, text = await trio.to_thread.run_sync(rcpt_reply, server.smtp_port, to)
        assert (code, text[:5]) == (550, b"5.7.1")


async def test_starttls_then_delivery(server):
    with trio.fail_after(60):
        refused = await trio.to_thread.run_sync(
            lambda: smtp_send(server.smtp_port, sample("Under TLS"), starttls=True)
        )
        assert refused == {}
        assert await subjects(server) == ["Under TLS"]
        async with session(server, "bob") as bob:
            [row] = await inbox_messages(bob)
            message = await (await bob.open_store()).open_message(row[pt.PR_ENTRYID])
            original = await read_stream(message, pt.PR_MIME_ORIGINAL)
            assert b"\twith ESMTPS\r\n" in original.split(b"\r\n\r\n", 1)[0]


def _dialogue(port: int, payload: bytes) -> bytes:
    """Send ``payload`` after the greeting; everything the server said until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


async def test_smuggling_delivers_one_message_never_two(server):
    smuggle = (
        b"EHLO attacker.example\r\n"
        b"MAIL FROM:<carol@outside.example>\r\n"
        b"RCPT TO:<bob@example.org>\r\n"
        b"DATA\r\n"
        b"Subject: first\r\n\r\nhello\n.\r\n"  # <LF>.<CRLF>: not the end of the data
        b"MAIL FROM:<evil@outside.example>\r\n"
        b"RCPT TO:<bob@example.org>\r\n"
        b"DATA\r\n"
        b"Subject: smuggled\r\n\r\nboo\r\n"
        b".\r\n"  # the real end
        b"MAIL FROM:<carol@outside.example>\r\n"
        b"RCPT TO:<bob@example.org>\r\n"
        b"DATA\r\n"
        b"Subject: clean\r\n\r\nhi\r\n.\r\n"
        b"QUIT\r\n"
    )
    with trio.fail_after(30):
        replies = await trio.to_thread.run_sync(_dialogue, server.smtp_port, smuggle)
        lines = replies.split(b"\r\n")
        assert sum(1 for line in lines if line.startswith(b"354")) == 2, replies
        assert sum(1 for line in lines if line.startswith(b"250 2.0.0")) == 1, replies
        assert any(line.startswith(b"550 5.6.11") for line in lines), replies
        assert await subjects(server) == ["clean"]


def _swaks(port: int, subject: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(port), "--helo", "swaks.outside.example",
         "--from", "dave@outside.example", "--to", "bob@example.org",
         "--header", f"Subject: {subject}", "--body", "Sent by swaks.", *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.skipif(
    shutil.which("swaks") is None,
    reason="swaks is not installed (apt-get install swaks; .ci/run installs it)",
)
async def test_swaks_plain_and_starttls(server):
    with trio.fail_after(120):
        plain = await trio.to_thread.run_sync(_swaks, server.smtp_port, "swaks plain")
        assert plain.returncode == 0, plain.stdout + plain.stderr
        tls = await trio.to_thread.run_sync(lambda: _swaks(server.smtp_port, "swaks tls", "--tls"))
        assert tls.returncode == 0, tls.stdout + tls.stderr
        assert "STARTTLS" in tls.stdout
        assert await subjects(server) == ["swaks plain", "swaks tls"]
        async with session(server, "bob") as bob:
            store = await bob.open_store()
            for row in await inbox_messages(bob):
                message = await store.open_message(row[pt.PR_ENTRYID])
                props = await message.get_props(
                    [pt.PR_BODY_W, pt.PR_SENT_REPRESENTING_SMTP_ADDRESS_W]
                )
                assert props[pt.PR_SENT_REPRESENTING_SMTP_ADDRESS_W] == "dave@outside.example"
                assert props[pt.PR_BODY_W].strip() == "Sent by swaks."


@pytest.mark.parametrize("postmaster", ["postmaster", "Postmaster@example.org"])
async def test_postmaster_is_always_accepted_and_read(server, postmaster):
    """RFC 5321 4.5.1: <postmaster> and postmaster@ a local domain are accepted; with no
    such user and no [smtp] postmaster, the first account by login name reads them."""
    msg = sample("For the postmaster", to=postmaster)
    with trio.fail_after(60):
        refused = await trio.to_thread.run_sync(
            lambda: smtp_send(server.smtp_port, msg, to=postmaster)
        )
        assert refused == {}
        async with session(server, "alice") as alice:
            store = await alice.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            rows = [row async for row in inbox.contents([pt.PR_SUBJECT_W])]
        assert [row[pt.PR_SUBJECT_W] for row in rows] == ["For the postmaster"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
async def test_curl_delivers_over_smtp(server, tmp_path, tls):
    """curl's SMTP client, plain and with STARTTLS required (--ssl-reqd), on the
    incoming listener; the message reads back with its subject and body."""
    mail = tmp_path / "mail.txt"
    mail.write_bytes(
        b"From: Carol <carol@outside.example>\r\nTo: bob@example.org\r\n"
        b"Subject: curl " + (b"starttls" if tls else b"plain") + b"\r\n\r\nHello from curl.\r\n"
    )
    argv = [
        "curl", "-sS", f"smtp://127.0.0.1:{server.smtp_port}", "--mail-from",
        "carol@outside.example", "--mail-rcpt", "bob@example.org", "--upload-file", str(mail),
        "--max-time", "30", *(["--ssl-reqd", "-k"] if tls else []),
    ]  # fmt: skip
    with trio.fail_after(60):
        result = await trio.to_thread.run_sync(
            lambda: subprocess.run(argv, capture_output=True, text=True, timeout=40)
        )
        assert result.returncode == 0, result.stderr
        assert await subjects(server) == ["curl " + ("starttls" if tls else "plain")]
