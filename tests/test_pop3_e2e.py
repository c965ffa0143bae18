"""POP3 end to end: a real ``serve`` (in-process, free loopback ports) with the
store-backed backend; mail delivered by SMTP is downloaded with Python's poplib and
curl pop3s://, UIDL keeps each message's id across sessions, and a DELE applied at
QUIT is seen through MAPI."""

from __future__ import annotations

import poplib
import shutil
import smtplib
import subprocess
from email.message import EmailMessage
from typing import Any

import pytest
import trio
from mail_helpers import client_context
from serve_helpers import start_server

from clients.api import connect
from mapi.model import proptags as pt
from mapi_anywhere.config import Pop3Section, SmtpSection

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Any) -> Any:
    running = await start_server(
        nursery, tmp_path / "data", PASSWORDS, emails=True, smtp=SmtpSection(port=0),
        pop3=Pop3Section(port=0, tls_port=0),
    )  # fmt: skip
    with trio.fail_after(60):
        for subject in ("one", "two", "three"):
            await trio.to_thread.run_sync(deliver, running.smtp_port, subject)
    return running


def deliver(port: int, subject: str) -> None:
    msg = EmailMessage()
    msg["From"] = "Carol <carol@outside.example>"
    msg["To"] = "bob@example.org"
    msg["Subject"] = subject
    msg.set_content(f"This is message {subject}.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.send_message(msg)


def download(port: int, *, delete: int | None = None) -> tuple[list[bytes], list[bytes]]:
    """UIDL and every message (RETR) of bob's maildrop over implicit TLS."""
    pop = poplib.POP3_SSL("127.0.0.1", port, context=client_context(), timeout=30)
    try:
        pop.user("bob")
        pop.pass_(PASSWORDS["bob"])
        uidl = pop.uidl()[1]
        messages = [b"\r\n".join(pop.retr(n)[1]) for n in range(1, len(uidl) + 1)]
        if delete is not None:
            pop.dele(delete)
        pop.quit()
    finally:
        pop.close()
    return uidl, messages


async def test_poplib_downloads_and_uidl_is_stable(server: Any) -> None:
    with trio.fail_after(60):
        first_ids, messages = await trio.to_thread.run_sync(download, server.pop3s_port)
        again, _ = await trio.to_thread.run_sync(lambda: download(server.pop3s_port, delete=1))
        after, rest = await trio.to_thread.run_sync(download, server.pop3s_port)
        async with connect(
            f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", "bob", PASSWORDS["bob"]
        ) as bob:
            store = await bob.open_store()
            inbox = await store.open_folder(await store.special_folder("inbox"))
            subjects = sorted(
                [row[pt.PR_SUBJECT_W] async for row in inbox.contents([pt.PR_SUBJECT_W])]
            )
    assert len(first_ids) == 3 and again == first_ids
    subjects_seen = [m.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for m in messages]
    assert subjects_seen == [b"one", b"two", b"three"]
    assert all(b"This is message" in m for m in messages)
    # The first message went at QUIT; the others kept their ids (numbers 1..2 now).
    kept = [line.split()[1] for line in first_ids[1:]]
    assert [line.split()[1] for line in after] == kept
    assert len(rest) == 2
    assert subjects == ["three", "two"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_pop3s_and_stls(server: Any) -> None:
    def curl(url: str, *extra: str) -> bytes:
        command = ["curl", "-sS", "-k", "--max-time", "20", "-u", f"bob:{PASSWORDS['bob']}"]
        return subprocess.run([*command, *extra, url], capture_output=True, check=True).stdout

    with trio.fail_after(60):
        listing = await trio.to_thread.run_sync(curl, f"pop3s://127.0.0.1:{server.pop3s_port}/")
        second = await trio.to_thread.run_sync(
            curl, f"pop3://127.0.0.1:{server.pop3_port}/2", "--ssl-reqd"
        )
    assert [line.split()[0] for line in listing.splitlines()] == [b"1", b"2", b"3"]
    assert b"Subject: two" in second and b"This is message two." in second
