"""SMTP submission to an external address, end to end: a real ``serve`` (in process, on
loopback) with the submission listeners and an ``[outbound]`` smarthost that is a sink
SMTP server (aiosmtpd); Python's smtplib authenticates on the STARTTLS port and submits
to a local and an external recipient. The sink receives the external copy once,
DKIM-signed (verified with dkimpy against the server's key), with the MSA's trace
header; the local recipient gets theirs in the Inbox; the sender's copy is in Sent
Items."""

from __future__ import annotations

import email
import smtplib
import ssl
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import trio
from outbound_sink import SinkHandler, free_port, start_sink
from serve_helpers import start_server

from clients.api import connect
from internet_mail.outbound import dkim_sign
from mapi.model import proptags as pt
from mapi_anywhere.config import (
    Config,
    ImapSection,
    OutboundSection,
    Pop3Section,
    ServerSection,
    SubmissionSection,
)
from mapi_anywhere.outbound_service import dkim_key

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # serve's certificate is self-signed
    return ctx


def _submit(port: int, msg: EmailMessage) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("laptop.example.org")
        client.starttls(context=_tls())
        client.ehlo("laptop.example.org")
        client.login("alice", PASSWORDS["alice"])
        return client.send_message(msg)


async def _subjects(running: Any, user: str, role: str) -> list[str]:
    address = f"ncacn_ip_tcp:127.0.0.1[{running.epm_port}]"
    async with connect(address, user, PASSWORDS[user]) as session:
        store = await session.open_store()
        folder = await store.open_folder(await store.special_folder(role))
        return [row[pt.PR_SUBJECT_W] async for row in folder.contents([pt.PR_SUBJECT_W])]


async def test_submission_to_an_external_address_reaches_the_smarthost_signed(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    port = free_port()
    handler = SinkHandler()
    sink = start_sink(port, handler)
    outbound = OutboundSection(
        smarthost="127.0.0.1", smarthost_port=port, smarthost_tls="none",
        retry_initial=0.2, retry_max=0.5, hostname="mail.example.org",
    )  # fmt: skip
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.org>"
    msg["To"] = "friend@remote.example, bob@example.org"
    msg["Subject"] = "Out into the world"
    msg.set_content("Hello from a mail program.\n")
    try:
        running = await start_server(
            nursery, tmp_path / "data", PASSWORDS, emails=True,
            submission=SubmissionSection(port=0, tls_port=0), outbound=outbound,
            imap=ImapSection(enabled=False), pop3=Pop3Section(enabled=False),
        )  # fmt: skip
        with trio.fail_after(60):
            refused = await trio.to_thread.run_sync(_submit, running.submission_port, msg)
            assert refused == {}
            queue = tmp_path / "data" / "queue"
            while not handler.messages or any(queue.glob("*.json")):  # noqa: ASYNC110 - sink thread
                await trio.sleep(0.05)
            await trio.sleep(1.0)  # two retry periods: no second copy comes
            assert await _subjects(running, "alice", "sent") == ["Out into the world"]
            assert await _subjects(running, "bob", "inbox") == ["Out into the world"]
            assert await _subjects(running, "alice", "inbox") == []  # no report
    finally:
        sink.stop()
    [got] = handler.messages
    # Only the external recipient goes out; bob's copy stayed home.
    assert got.sender == "alice@example.org" and got.recipients == ["friend@remote.example"]
    assert got.data.startswith(b"DKIM-Signature:")
    parsed = email.message_from_bytes(got.data, policy=policy.default)
    assert parsed["Subject"] == "Out into the world"
    assert str(parsed["Received"]).startswith("from laptop.example.org")
    assert parsed["Message-ID"] and parsed["Date"]  # added by the MSA (RFC 6409 8)
    body = parsed.get_body(("plain",))
    assert body is not None and body.get_content().strip() == "Hello from a mail program."
    config = Config(server=ServerSection(data_dir=tmp_path / "data"), outbound=outbound)
    key = dkim_key(running.store, config)
    assert key.domain == "example.org"
    record = dkim_sign.txt_record(key).encode()
    assert dkim.verify(got.data, dnsfunc=lambda name, timeout=5: record)
