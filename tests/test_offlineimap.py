"""offlineimap3, a client no one here wrote, makes the first sync of a real ``serve``
(in-process, free loopback ports) into a local Maildir: 200 messages in three folders
(INBOX 120, Archive 50, Projects/2026 30; every third read, every fiftieth flagged for
follow-up), over implicit TLS with serve's self-signed certificate trusted as the CA
(``sslcacertfile``). The Maildir must then hold every message once, with its flags, in
the same folders, and the server must be as it was (the same MAPI view, the same
(folder, UIDVALIDITY, uid, flags) over IMAP). A second run changes nothing. Then
changes in the Maildir (a flag added in two folders, a file deleted, a new message in
Projects/2026) reach the MAPI view in one run; a message deleted locally is expunged,
which the store turns into a move to Deleted Items (docs/imap.md), so the next run
brings that copy down into the Maildir's Deleted Items."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio
from mail_clients import (
    CERT_NAME,
    imap_snapshot,
    initial_view,
    layout_mailbox,
    mail,
    maildir_add,
    maildir_files,
    maildir_find,
    maildir_mark,
    maildir_view,
    run,
    subject,
    view_of,
)
from serve_helpers import start_server

from mapi_anywhere.config import ImapSection

pytestmark = pytest.mark.skipif(
    shutil.which("offlineimap") is None, reason="offlineimap (offlineimap3) is not installed"
)

PASSWORD = "bob-password"
LAYOUT = {"INBOX": range(120), "Archive": range(120, 170), "Projects/2026": range(170, 200)}
EMPTY = ("Deleted Items", "Drafts", "Outbox", "Projects", "Sent Items")

RC = """\
[general]
accounts = bob
metadata = {meta}

[Account bob]
localrepository = near
remoterepository = far

[Repository near]
type = Maildir
localfolders = {root}
sep = /

[Repository far]
type = IMAP
remotehost = 127.0.0.1
remoteport = {port}
remoteuser = bob
remotepass = {password}
ssl = yes
sslcacertfile = {cert}
maxconnections = 2
"""


def offlineimap(rc: Path) -> str:
    """One quiet one-shot run; its output, checked for success."""
    done = run(["offlineimap", "-c", str(rc), "-u", "quiet", "-o"], timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "ERROR" not in output, output
    return output


async def test_offlineimap_first_sync(nursery: trio.Nursery, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = await start_server(
        nursery, data, {"bob": PASSWORD}, emails=True, imap=ImapSection(port=0, tls_port=0)
    )
    root = tmp_path / "Mail"
    rc = tmp_path / "offlineimaprc"
    config = RC.format(
        meta=tmp_path / "meta", root=root, port=server.imaps_port, password=PASSWORD,
        cert=data / CERT_NAME,
    )  # fmt: skip
    rc.write_text(config)
    with trio.fail_after(180):
        await layout_mailbox(server, "bob", PASSWORD, LAYOUT)
        expected = initial_view(LAYOUT, EMPTY)
        assert await view_of(server.epm_port, "bob", PASSWORD) == expected
        before = await trio.to_thread.run_sync(imap_snapshot, server.imaps_port, "bob", PASSWORD)
        assert len(before) == 200

        await trio.to_thread.run_sync(offlineimap, rc)
        assert maildir_view(root) == expected
        assert await view_of(server.epm_port, "bob", PASSWORD) == expected
        snapshot = await trio.to_thread.run_sync(imap_snapshot, server.imaps_port, "bob", PASSWORD)
        assert snapshot == before

        files = maildir_files(root)
        await trio.to_thread.run_sync(offlineimap, rc)
        assert maildir_files(root) == files
        assert (
            await trio.to_thread.run_sync(imap_snapshot, server.imaps_port, "bob", PASSWORD)
            == before
        )

        # Changes in the Maildir reach the server: flags, a deletion, a new message.
        maildir_mark(root, "INBOX", subject(1), "S")
        maildir_mark(root, "Archive", subject(121), "F")
        maildir_find(root, "INBOX", subject(2)).unlink()
        maildir_add(root, "Projects/2026", "near-new", mail("near new"))
        await trio.to_thread.run_sync(offlineimap, rc)
        expected["INBOX"][subject(1)] = "S"
        expected["Archive"][subject(121)] = "F"
        # offlineimap expunges a message deleted locally: into Deleted Items (docs/imap.md).
        expected["Deleted Items"][subject(2)] = expected["INBOX"].pop(subject(2))
        expected["Projects/2026"]["near new"] = ""
        assert await view_of(server.epm_port, "bob", PASSWORD) == expected
        await trio.to_thread.run_sync(offlineimap, rc)  # brings the Deleted Items copy
        assert maildir_view(root) == expected
