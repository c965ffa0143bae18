"""POP3 and IMAP of a real ``serve`` (in-process, free loopback ports) with clients no
one here wrote: fetchmail downloads the Inbox over POP3 with implicit TLS (serve's
self-signed certificate checked: ``sslcertck`` with ``sslcertfile``), each message
handed to an MDA that writes it to a file, byte for byte what SMTP delivered after the
Received fields; in ``keep`` mode with ``uidl`` a second run finds nothing new, and the
ids it keeps are the UIDL that Python's poplib sees, the same in two sessions. curl
(the certificate checked with ``--cacert``) lists and retrieves over ``pop3s://``, and
lists mailboxes, fetches a message by UID and searches over ``imaps://``."""

from __future__ import annotations

import poplib
import shutil
import smtplib
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
from mail_clients import CERT_NAME, run
from serve_helpers import start_server

from mapi_anywhere.config import ImapSection, Pop3Section, SmtpSection

PASSWORD = "bob-password"
SUBJECTS = ["lunch on friday", "the quarterly report", "holiday pictures"]


def raw_message(n: int, subject: str) -> bytes:
    return (
        f"From: Carol <carol@outside.example>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <fetch{n}@outside.example>\r\nDate: Tue, 3 Mar 2026 10:0{n}:00 +0100\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Hello Bob,\r\nthis is message {n}: {subject}.\r\n.a line that starts with a dot\r\n"
    ).encode()


MESSAGES = [raw_message(n, s) for n, s in enumerate(SUBJECTS)]


def without_received(data: bytes) -> bytes:
    """The message without the Received fields the servers put on top (ours, and
    fetchmail's)."""
    while data.lower().startswith(b"received:"):
        end = data.index(b"\n") + 1
        while data[end : end + 1] in (b" ", b"\t"):  # folded continuation lines
            end = data.index(b"\n", end) + 1
        data = data[end:]
    return data


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> Any:
    running = await start_server(
        nursery, tmp_path / "data", {"bob": PASSWORD}, emails=True, smtp=SmtpSection(port=0),
        pop3=Pop3Section(port=0, tls_port=0), imap=ImapSection(port=0, tls_port=0),
    )  # fmt: skip

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=20) as client:
            for data in MESSAGES:
                client.sendmail("carol@outside.example", ["bob@example.org"], data)

    with trio.fail_after(60):
        await trio.to_thread.run_sync(send)
    return running


def cert_of(tmp_path: Path) -> Path:
    return tmp_path / "data" / CERT_NAME


def poplib_uidl(port: int, cafile: Path) -> list[bytes]:
    ctx = ssl.create_default_context(cafile=str(cafile))
    pop = poplib.POP3_SSL("127.0.0.1", port, context=ctx, timeout=30)
    try:
        pop.user("bob")
        pop.pass_(PASSWORD)
        ids = pop.uidl()[1]
        pop.quit()
    finally:
        pop.close()
    return ids


FETCHMAILRC = """\
set no bouncemail
set no syslog
poll 127.0.0.1 with protocol POP3 port {port} uidl and options no dns
  user "bob" there with password "{password}" is "nobody" here
  ssl sslcertck sslcertfile "{cert}" sslcommonname "localhost"
  keep no stripcr
  mda "cat > $(mktemp {out}/msg.XXXXXX)"
"""


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail is not installed")
async def test_fetchmail_downloads_the_inbox(server: Any, tmp_path: Path) -> None:
    out = tmp_path / "fetched"
    out.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        FETCHMAILRC.format(
            port=server.pop3s_port, password=PASSWORD, cert=cert_of(tmp_path), out=out
        )
    )
    rc.chmod(0o600)  # fetchmail refuses a readable run control file that holds a password
    idfile = tmp_path / "fetchids"
    command = ["fetchmail", "-f", str(rc), "-i", str(idfile), "--nodetach", "-v"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LC_ALL": "C"}
    with trio.fail_after(120):
        first = await trio.to_thread.run_sync(lambda: run(command, env=env, timeout=60))
        assert first.returncode == 0, first.stdout + first.stderr
        fetched = sorted(out.iterdir())
        got = sorted(without_received(f.read_bytes()) for f in fetched)
        assert got == sorted(MESSAGES)

        # keep + uidl: the second run finds nothing new (fetchmail's status 1: no mail).
        second = await trio.to_thread.run_sync(lambda: run(command, env=env, timeout=60))
        assert second.returncode == 1, second.stdout + second.stderr
        assert sorted(out.iterdir()) == fetched

        # The ids fetchmail kept are the UIDL that poplib gets, twice the same.
        ids = await trio.to_thread.run_sync(poplib_uidl, server.pop3s_port, cert_of(tmp_path))
        again = await trio.to_thread.run_sync(poplib_uidl, server.pop3s_port, cert_of(tmp_path))
    assert ids == again and len(ids) == 3
    uids = [line.split()[1].decode() for line in ids]
    kept = idfile.read_text()
    assert all(uid in kept for uid in uids), kept


def curl_command(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "curl", "-sS", "--max-time", "20", "--cacert", str(cert_of(tmp_path)),
        "-u", f"bob:{PASSWORD}", *extra,
    ]  # fmt: skip


def curl_bytes(command: list[str]) -> bytes:
    done = run(command, timeout=30, text=False)
    assert done.returncode == 0, done.stderr
    out: bytes = done.stdout
    return out


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_pop3s_lists_and_retrieves(server: Any, tmp_path: Path) -> None:
    base = f"pop3s://127.0.0.1:{server.pop3s_port}"
    with trio.fail_after(60):
        listing = await trio.to_thread.run_sync(curl_bytes, curl_command(tmp_path, base + "/"))
        bodies = [
            await trio.to_thread.run_sync(curl_bytes, curl_command(tmp_path, f"{base}/{n}"))
            for n in (1, 2, 3)
        ]
    assert [line.split()[0] for line in listing.splitlines()] == [b"1", b"2", b"3"]
    assert sorted(without_received(b) for b in bodies) == sorted(MESSAGES)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_imaps_lists_fetches_and_searches(server: Any, tmp_path: Path) -> None:
    base = f"imaps://127.0.0.1:{server.imaps_port}"

    def curl(*args: str) -> bytes:
        return curl_bytes(curl_command(tmp_path, *args))

    with trio.fail_after(60):
        listing = await trio.to_thread.run_sync(curl, base + "/")
        second = await trio.to_thread.run_sync(curl, base + "/INBOX;UID=2")
        found = await trio.to_thread.run_sync(
            curl, "-X", "UID SEARCH SUBJECT quarterly", base + "/INBOX"
        )
        none = await trio.to_thread.run_sync(
            curl, "-X", "UID SEARCH SUBJECT nowhere", base + "/INBOX"
        )
        by_query = await trio.to_thread.run_sync(curl, base + "/INBOX?SUBJECT%20holiday")
    lines = listing.splitlines()
    assert b'* LIST (\\HasNoChildren) "/" INBOX' in lines
    assert any(line.endswith(b'"Sent Items"') and b"\\Sent" in line for line in lines)
    assert without_received(second) == MESSAGES[1]
    assert found.strip() == b"* SEARCH 2"
    assert none.strip() == b"* SEARCH"
    assert by_query.strip() == b"* SEARCH 3"
