"""Outbound mail end to end: a real ``serve`` (in-process, loopback), a message
submitted through our MAPI client to an external address, delivered to a sink SMTP
server (aiosmtpd) configured as the smarthost, DKIM-signed; a refusal gives the sender
an NDR in their Inbox."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path
from typing import Any

import dkim
import trio
from outbound_sink import SinkHandler, free_port, start_sink

from clients.api import connect
from internet_mail.outbound import dkim_sign
from mapi.model import proptags as pt
from mapi_anywhere.config import (
    Config,
    EndpointMapperSection,
    ImapSection,
    OutboundSection,
    Pop3Section,
    RpcAuthSection,
    ServerSection,
    SmtpSection,
    SubmissionSection,
    TunnelSection,
)
from mapi_anywhere.outbound_service import dkim_key
from mapi_anywhere.serve import run_server
from tunnel.config import TunnelConfig

PASSWORD = "alice-password"


async def _serve(nursery: trio.Nursery, data_dir: Path, sink_port: int) -> Any:
    config = Config(
        server=ServerSection(data_dir=data_dir),
        endpoint_mapper=EndpointMapperSection(port=0),
        tunnel=TunnelSection(settings=TunnelConfig(port=0)),
        rpc_auth=RpcAuthSection(min_auth_level="privacy"),
        smtp=SmtpSection(enabled=False),
        submission=SubmissionSection(enabled=False),
        imap=ImapSection(enabled=False),
        pop3=Pop3Section(enabled=False),
        outbound=OutboundSection(
            smarthost="127.0.0.1", smarthost_port=sink_port, smarthost_tls="none",
            retry_initial=0.2, retry_max=0.5, hostname="mail.example.org",
        ),
    )  # fmt: skip
    running = await nursery.start(run_server, config)
    await trio.to_thread.run_sync(
        lambda: running.store.add_user("alice", PASSWORD, email="alice@example.org")
    )
    return running, config


async def _submit(running: Any, to: str, subject: str) -> dict[str, Any]:
    async with connect(f"ncacn_ip_tcp:127.0.0.1[{running.epm_port}]", "alice", PASSWORD) as s:
        store = await s.open_store()
        drafts = await store.open_folder(await store.special_folder("drafts"))
        msg = await drafts.create_message()
        await msg.set_props({"PR_SUBJECT": subject, "PR_BODY": "Hello from MAPI.\r\n"})
        await msg.add_recipient("Someone", to)
        await msg.save()
        result: dict[str, Any] = await msg.submit()
        return result


async def _inbox_subjects(running: Any) -> list[tuple[str, str]]:
    async with connect(f"ncacn_ip_tcp:127.0.0.1[{running.epm_port}]", "alice", PASSWORD) as s:
        store = await s.open_store()
        inbox = await store.open_folder(await store.special_folder("inbox"))
        cols = [pt.PR_SUBJECT_W, pt.PR_MESSAGE_CLASS_W]
        return [(r[pt.PR_SUBJECT_W], r[pt.PR_MESSAGE_CLASS_W]) async for r in inbox.contents(cols)]


async def _until(check: Any) -> None:
    with trio.fail_after(30):
        while not await check():  # noqa: ASYNC110 - the sink's thread and the store
            await trio.sleep(0.1)


async def test_mapi_submission_reaches_the_smarthost_signed(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    port = free_port()
    handler = SinkHandler()
    sink = start_sink(port, handler)
    try:
        running, config = await _serve(nursery, tmp_path / "data", port)
        result = await _submit(running, "friend@remote.example", "Outbound hello")
        assert result["undeliverable"] == []

        async def arrived() -> bool:
            return bool(handler.messages)

        await _until(arrived)
    finally:
        sink.stop()
    [got] = handler.messages
    assert got.sender == "alice@example.org" and got.recipients == ["friend@remote.example"]
    parsed = email.message_from_bytes(got.data, policy=policy.default)
    assert parsed["Subject"] == "Outbound hello"
    assert "alice@example.org" in parsed["From"]
    assert "friend@remote.example" in parsed["To"]
    assert parsed.get_body(("plain",)).get_content().strip() == "Hello from MAPI."  # type: ignore[union-attr]
    key = dkim_key(running.store, config)
    assert key.domain == "example.org"
    record = dkim_sign.txt_record(key).encode()
    assert dkim.verify(got.data, dnsfunc=lambda name, timeout=5: record)


async def test_refused_mail_gives_the_sender_an_ndr(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = free_port()
    handler = SinkHandler(rcpt_reply="550 5.1.1 nobody here by that name")
    sink = start_sink(port, handler)
    try:
        running, _ = await _serve(nursery, tmp_path / "data", port)
        await _submit(running, "ghost@remote.example", "To a ghost")

        async def reported() -> bool:
            return any(s.startswith("Undeliverable") for s, _ in await _inbox_subjects(running))

        await _until(reported)
    finally:
        sink.stop()
    [(subject, cls)] = await _inbox_subjects(running)
    assert subject == "Undeliverable: To a ghost" and cls == "REPORT.IPM.Note.NDR"
    assert handler.messages == []
