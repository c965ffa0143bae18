"""SMTP submission end to end (RFC 6409 on the STARTTLS port, RFC 8314 on the implicit
TLS port): a real ``serve`` on loopback, independent clients (Python's smtplib, swaks,
curl) authenticating with the users' passwords, and the results read back through our
MAPI client: the recipient's Inbox, the sender's Sent Items, and what is refused."""

from __future__ import annotations

import shutil
import smtplib
import ssl
import subprocess
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
import trio
from serve_helpers import start_server

from clients.api import Session, connect
from clients.cli_messages import read_stream
from internet_mail.smtp.submission import complete_headers, header_names
from mapi.model import proptags as pt
from mapi_anywhere.config import SubmissionSection

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_server(
        nursery, tmp_path / "data", PASSWORDS, emails=True,
        submission=SubmissionSection(port=0, tls_port=0),
    )  # fmt: skip


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # serve's certificate is self-signed
    return ctx


def note(subject: str, sender: str = "alice@example.org", to: str = "bob@example.org") -> Any:
    msg = EmailMessage()
    msg["From"] = f"Alice <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Hello from a mail program.\n")
    return msg


def submit_587(port: int, msg: Any, user: str = "alice", password: str | None = None) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("laptop.example.org")
        assert not client.has_extn("auth"), "AUTH must not be offered before TLS"
        client.starttls(context=_tls())
        client.ehlo("laptop.example.org")
        assert "PLAIN" in client.esmtp_features["auth"].split()
        client.login(user, password or PASSWORDS[user])
        return client.send_message(msg)


def submit_465(port: int, msg: Any, user: str = "alice") -> Any:
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=20, context=_tls()) as client:
        client.ehlo("laptop.example.org")
        client.login(user, PASSWORDS[user])
        return client.send_message(msg)


def session(server: Any, user: str) -> Any:
    return connect(f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", user, PASSWORDS[user])


async def folder_rows(user: Session, role: str) -> list[Any]:
    store = await user.open_store()
    folder = await store.open_folder(await store.special_folder(role))
    columns = [pt.PR_SUBJECT_W, pt.PR_ENTRYID, pt.PR_MESSAGE_FLAGS]
    return [row async for row in folder.contents(columns)]


async def test_starttls_submission_reaches_inbox_and_sent_items(server):
    with trio.fail_after(60):
        refused = await trio.to_thread.run_sync(
            submit_587, server.submission_port, note("Lunch on Friday?")
        )
        assert refused == {}
        async with session(server, "bob") as bob:
            [row] = await folder_rows(bob, "inbox")
            assert row[pt.PR_SUBJECT_W] == "Lunch on Friday?"
            assert row[pt.PR_MESSAGE_FLAGS] & pt.MSGFLAG_READ == 0
            store = await bob.open_store()
            message = await store.open_message(row[pt.PR_ENTRYID])
            raw = await read_stream(message, pt.PR_MIME_ORIGINAL)
            # The MSA's trace header, and the Date and Message-ID it added (RFC 6409 8).
            assert raw.startswith(b"Received: from laptop.example.org")
            assert b"with ESMTPSA" in raw
            assert {"date", "message-id"} <= header_names(raw.split(b"\r\n", 4)[-1])
        async with session(server, "alice") as alice:
            [sent] = await folder_rows(alice, "sent")
            assert sent[pt.PR_SUBJECT_W] == "Lunch on Friday?"
            assert sent[pt.PR_MESSAGE_FLAGS] & pt.MSGFLAG_READ
            assert await folder_rows(alice, "inbox") == []


async def test_implicit_tls_submission_with_an_address_as_login(server):
    with trio.fail_after(60):
        msg = note("Over port 465")
        refused = await trio.to_thread.run_sync(
            lambda: submit_465(server.submissions_port, msg, user="alice")
        )
        assert refused == {}
        # Mail programs often log on with the address: it names the same user.
        await trio.to_thread.run_sync(
            lambda: submit_587(
                server.submission_port, note("By address"), "alice", PASSWORDS["alice"]
            )
        )

        def by_address() -> Any:
            with smtplib.SMTP_SSL(
                "127.0.0.1", server.submissions_port, timeout=20, context=_tls()
            ) as client:
                client.login("alice@example.org", PASSWORDS["alice"])
                return client.send_message(note("Logged on by address"))

        assert await trio.to_thread.run_sync(by_address) == {}
        async with session(server, "bob") as bob:
            subjects = sorted(r[pt.PR_SUBJECT_W] for r in await folder_rows(bob, "inbox"))
        assert subjects == ["By address", "Logged on by address", "Over port 465"]


async def test_wrong_password_and_no_auth_are_refused(server):
    def wrong() -> int:
        with smtplib.SMTP("127.0.0.1", server.submission_port, timeout=20) as client:
            client.starttls(context=_tls())
            try:
                client.login("alice", "not-her-password")
            except smtplib.SMTPAuthenticationError as exc:
                return exc.smtp_code
        return 0

    def unauthenticated() -> int:
        with smtplib.SMTP("127.0.0.1", server.submission_port, timeout=20) as client:
            client.starttls(context=_tls())
            client.ehlo()
            code, _ = client.mail("alice@example.org")
            return code

    with trio.fail_after(60):
        assert await trio.to_thread.run_sync(wrong) == 535
        assert await trio.to_thread.run_sync(unauthenticated) == 530
        async with session(server, "bob") as bob:
            assert await folder_rows(bob, "inbox") == []


async def test_sender_must_be_the_users_own_address(server):
    def forge() -> int:
        try:
            submit_587(server.submission_port, note("Forged", sender="bob@example.org"))
        except smtplib.SMTPDataError as exc:
            assert b"5.7.1" in exc.smtp_error
            return exc.smtp_code
        return 250

    with trio.fail_after(60):
        assert await trio.to_thread.run_sync(forge) == 550
        async with session(server, "bob") as bob:
            assert await folder_rows(bob, "inbox") == []
        async with session(server, "alice") as alice:
            assert await folder_rows(alice, "sent") == []


async def test_remote_recipients_are_refused_while_outbound_is_off(server):
    def remote() -> dict[str, Any]:
        try:
            submit_587(server.submission_port, note("Out", to="someone@elsewhere.example"))
        except smtplib.SMTPRecipientsRefused as exc:
            return {k: v[0] for k, v in exc.recipients.items()}
        return {}

    with trio.fail_after(60):
        assert await trio.to_thread.run_sync(remote) == {"someone@elsewhere.example": 550}


async def test_a_retry_after_a_lost_reply_files_one_copy(server):
    """The same bytes submitted twice (a client that lost the 250 retries): one copy in
    the Inbox, one in Sent Items."""
    msg = note("Sent twice")
    msg["Date"] = "Sun, 06 Dec 2026 10:00:00 +0000"
    msg["Message-ID"] = "<twice@example.org>"
    with trio.fail_after(60):
        for _ in range(2):
            await trio.to_thread.run_sync(submit_587, server.submission_port, msg)
        async with session(server, "alice") as alice:
            assert len(await folder_rows(alice, "sent")) == 1


async def test_a_retry_without_date_or_message_id_files_one_copy(server):
    """The headers the submission server adds differ at each attempt; a retry of the
    same transaction still files one copy in each mailbox."""
    msg = note("No Message-ID")
    assert "Message-ID" not in msg and "Date" not in msg
    with trio.fail_after(60):
        for _ in range(2):
            await trio.to_thread.run_sync(submit_587, server.submission_port, msg)
        async with session(server, "alice") as alice:
            assert len(await folder_rows(alice, "sent")) == 1
        async with session(server, "bob") as bob:
            assert len(await folder_rows(bob, "inbox")) == 1


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
async def test_swaks_submits_with_starttls_and_auth(server):
    with trio.fail_after(60):
        argv = [
            "swaks", "--server", f"127.0.0.1:{server.submission_port}", "--tls",
            "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", PASSWORDS["alice"],
            "--from", "alice@example.org", "--to", "bob@example.org",
            "--header", "Subject: From swaks", "--body", "swaks body", "--timeout", "20",
        ]  # fmt: skip
        result = await trio.to_thread.run_sync(
            lambda: subprocess.run(argv, capture_output=True, text=True, timeout=40)
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "235 2.7.0" in result.stdout
        async with session(server, "bob") as bob:
            assert [r[pt.PR_SUBJECT_W] for r in await folder_rows(bob, "inbox")] == ["From swaks"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_smtps_submits(server, tmp_path):
    mail = tmp_path / "mail.txt"
    mail.write_bytes(
        b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\n"
        b"Subject: From curl\r\n\r\nSent by curl over implicit TLS.\r\n"
    )
    with trio.fail_after(60):
        argv = [
            "curl", "-sS", "-k", f"smtps://127.0.0.1:{server.submissions_port}",
            "--user", f"alice:{PASSWORDS['alice']}", "--mail-from", "alice@example.org",
            "--mail-rcpt", "bob@example.org", "--upload-file", str(mail), "--max-time", "30",
        ]  # fmt: skip
        result = await trio.to_thread.run_sync(
            lambda: subprocess.run(argv, capture_output=True, text=True, timeout=40)
        )
        assert result.returncode == 0, result.stderr
        async with session(server, "bob") as bob:
            [row] = await folder_rows(bob, "inbox")
            assert row[pt.PR_SUBJECT_W] == "From curl"
            store = await bob.open_store()
            message = await store.open_message(row[pt.PR_ENTRYID])
            raw = await read_stream(message, pt.PR_MIME_ORIGINAL)
            assert b"Message-ID: <" in raw  # curl sent none: the MSA added it


def test_complete_headers_adds_only_what_is_missing() -> None:
    now = datetime(2026, 12, 6, 13, 0, tzinfo=UTC)
    bare = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"
    done = complete_headers(bare, now=now, domain="mail.example.org", unique="abc")
    assert done == (
        b"Date: Sun, 06 Dec 2026 13:00:00 +0000\r\nMessage-ID: <abc@mail.example.org>\r\n" + bare
    )
    assert complete_headers(done, now=now, domain="x", unique="y") == done
    # A body line that looks like a header does not count.
    tricky = b"From: a@example.org\r\n\r\nDate: in the body\r\n"
    assert complete_headers(tricky, now=now, domain="d", unique="u").startswith(b"Date: ")
