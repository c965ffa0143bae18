"""mbsync (isync), a client no one here wrote, syncs a real ``serve`` (in-process, every
listener on a free loopback port) with a local Maildir, both ways.

A mailbox of 1,000 messages in several folders (INBOX 600, Archive 300, Projects/2026
100; every third message read, every fiftieth flagged for follow-up) is filled through
the store (``deliver_mime``, as SMTP delivers, without 1,000 round trips) and arranged
through the MAPI client. mbsync's first run (implicit TLS, serve's self-signed
certificate trusted with ``CertificateFile``) must bring every message with its flags.
Then both sides change: new mail (SMTP; a file dropped in the Maildir), flags (the MAPI
read and follow-up flags; ``S`` and ``F`` added to Maildir file names), a move through
MAPI, a deletion on each side (a MAPI delete; ``T`` plus ``Expunge Both``), a new folder
on each side; the second run must carry each change across, checked in the MAPI view
(through the MAPI client) and in the Maildir. A third run must change nothing: the same
(folder, UIDVALIDITY, uid, flags) over IMAP, the same MAPI view, the same Maildir files,
and no command that changes anything in mbsync's protocol trace.

The store's IMAP EXPUNGE moves a message into Deleted Items (from there it is gone for
good; docs/imap.md), as a MAPI delete does. So a message deleted in the Maildir's INBOX
comes back in the Maildir's ``Deleted Items`` folder, in the same run: mbsync syncs INBOX
before the other folders (a message expunged from a folder synced after Deleted Items
would come down on the next run instead).
"""

from __future__ import annotations

import re
import shutil
import time
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
    maildir_mark,
    maildir_view,
    mapi_entry_ids,
    mapi_folders,
    run,
    smtp_deliver,
    subject,
    view_of,
)
from serve_helpers import start_server

from clients.api import connect
from mapi.model import proptags as pt
from mapi_anywhere.config import ImapSection, SmtpSection

pytestmark = pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync is not installed")

PASSWORD = "bob-password"
ADDRESS = "bob@example.org"
#: Where the first 1,000 messages live: folder -> message numbers.
LAYOUT = {"INBOX": range(600), "Archive": range(600, 900), "Projects/2026": range(900, 1000)}
EMPTY = ("Deleted Items", "Drafts", "Outbox", "Projects", "Sent Items")

RC = """\
IMAPAccount bob
Host 127.0.0.1
Port {port}
User bob
Pass {password}
SSLType IMAPS
CertificateFile {cert}
PipelineDepth 50

IMAPStore far
Account bob

MaildirStore near
Path {root}/
Inbox {root}/INBOX
SubFolders Verbatim

Channel mail
Far :far:
Near :near:
Patterns *
Create Both
Expunge Both
SyncState *
"""


def mbsync(rc: Path, *extra: str) -> str:
    """One ``mbsync -a`` run; its output (stdout and stderr), checked for success."""
    done = run(["mbsync", "-c", str(rc), *extra, "-a"], timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not re.search(r"(?im)^(error|warning)\b", output), output
    return output


#: IMAP commands that change a mailbox (in mbsync's -Dn trace: ">>> tag COMMAND ...").
CHANGING = re.compile(
    rb">>> \d+ (UID STORE|STORE|APPEND|EXPUNGE|UID EXPUNGE|CREATE|DELETE|RENAME|MOVE|"
    rb"UID MOVE|COPY|UID COPY)\b"
)


async def test_mbsync_two_way_sync_of_1000_messages(nursery: trio.Nursery, tmp_path: Path) -> None:
    started = time.perf_counter()
    data = tmp_path / "data"
    server = await start_server(
        nursery, data, {"bob": PASSWORD}, emails=True, smtp=SmtpSection(port=0),
        imap=ImapSection(port=0, tls_port=0),
    )  # fmt: skip
    root = tmp_path / "Mail"
    root.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        RC.format(port=server.imaps_port, password=PASSWORD, cert=data / CERT_NAME, root=root)
    )
    with trio.fail_after(240):
        await layout_mailbox(server, "bob", PASSWORD, LAYOUT)
        filled = time.perf_counter()
        expected = initial_view(LAYOUT, EMPTY)
        assert await view_of(server.epm_port, "bob", PASSWORD) == expected

        # 1. The first sync brings everything, and changes nothing on the server.
        before = await trio.to_thread.run_sync(imap_snapshot, server.imaps_port, "bob", PASSWORD)
        assert len(before) == 1000
        await trio.to_thread.run_sync(mbsync, rc)
        first = time.perf_counter()
        assert maildir_view(root) == expected
        assert await view_of(server.epm_port, "bob", PASSWORD) == expected
        assert (
            await trio.to_thread.run_sync(imap_snapshot, server.imaps_port, "bob", PASSWORD)
            == before
        )

        # 2. Changes on both sides.
        await trio.to_thread.run_sync(smtp_deliver, server.smtp_port, "far new 1")
        async with connect(f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", "bob", PASSWORD) as bob:
            store = await bob.open_store()
            folders = await mapi_folders(bob)
            inbox = folders["INBOX"]
            ids = await mapi_entry_ids(inbox)
            read = await store.open_message(ids[subject(1)])
            await read.set_read_flag()
            flagged = await store.open_message(ids[subject(2)], write=True)
            await flagged.set_props({pt.PR_FLAG_STATUS: 2})
            await flagged.save()
            await inbox.copy_messages([ids[subject(4)]], folders["Archive"], move=True)
            await inbox.delete_messages([ids[subject(5)]])  # into Deleted Items
            top = await store.open_folder(await store.special_folder("ipm_subtree"))
            server_side = await top.create_folder("Server Side")
            await inbox.copy_messages([ids[subject(7)]], server_side, move=True)
        inbox_box = expected["INBOX"]
        inbox_box["far new 1"] = ""
        inbox_box[subject(1)] = "S"
        inbox_box[subject(2)] = "F"
        expected["Archive"][subject(4)] = inbox_box.pop(subject(4))
        expected["Deleted Items"][subject(5)] = inbox_box.pop(subject(5))
        expected["Server Side"] = {subject(7): inbox_box.pop(subject(7))}

        maildir_add(root, "INBOX", "near-new-1", mail("near new 1"))
        maildir_add(root, "Archive", "near-new-2:2,S", mail("near new 2"))
        maildir_add(root, "Near Side", "near-new-3:2,F", mail("near new 3"))
        for n, letter in ((10, "S"), (11, "F"), (20, "T")):
            maildir_mark(root, "INBOX", subject(n), letter)
        inbox_box["near new 1"] = ""
        expected["Archive"]["near new 2"] = "S"
        expected["Near Side"] = {"near new 3": "F"}
        inbox_box[subject(10)] = "S"
        inbox_box[subject(11)] = "F"
        # Expunged on the server: into Deleted Items (docs/imap.md).
        expected["Deleted Items"][subject(20)] = inbox_box.pop(subject(20))

        await trio.to_thread.run_sync(mbsync, rc)
        second = time.perf_counter()
        assert await view_of(server.epm_port, "bob", PASSWORD) == expected
        assert maildir_view(root) == expected

        # 3. Nothing left to do: a third run changes nothing on either side.
        snapshot = await trio.to_thread.run_sync(imap_snapshot, server.imaps_port, "bob", PASSWORD)
        files = maildir_files(root)
        trace = await trio.to_thread.run_sync(mbsync, rc, "-Dn")
        assert ">>> " in trace and " UID FETCH " in trace, trace  # the trace is there
        changing = CHANGING.findall(trace.encode())
        assert not changing, changing
        assert maildir_files(root) == files
        assert await view_of(server.epm_port, "bob", PASSWORD) == expected
        assert (
            await trio.to_thread.run_sync(imap_snapshot, server.imaps_port, "bob", PASSWORD)
            == snapshot
        )
    print(
        f"mbsync test: fill+arrange {filled - started:.1f} s, first sync {first - filled:.1f} s, "
        f"second {second - first:.1f} s, total {time.perf_counter() - started:.1f} s"
    )


async def test_mbsync_over_starttls(nursery: trio.Nursery, tmp_path: Path) -> None:
    """The same first sync over the STARTTLS port (``SSLType STARTTLS``): LOGIN is
    refused in clear (LOGINDISABLED), so mbsync must upgrade first; a smaller mailbox."""
    data = tmp_path / "data"
    server = await start_server(
        nursery, data, {"bob": PASSWORD}, emails=True, imap=ImapSection(port=0, tls_port=0)
    )
    root = tmp_path / "Mail"
    root.mkdir()
    rc = tmp_path / "mbsyncrc"
    config = RC.format(port=server.imap_port, password=PASSWORD, cert=data / CERT_NAME, root=root)
    rc.write_text(config.replace("SSLType IMAPS", "SSLType STARTTLS"))
    layout = {"INBOX": range(20), "Archive": range(20, 30)}
    with trio.fail_after(120):
        await layout_mailbox(server, "bob", PASSWORD, layout)
        expected = initial_view(layout, ("Deleted Items", "Drafts", "Outbox", "Sent Items"))
        output = await trio.to_thread.run_sync(mbsync, rc, "-Dn")
        assert ">>> 1 STARTTLS\n1 OK" in output and "Connection is now encrypted" in output
        assert maildir_view(root) == expected
        assert await view_of(server.epm_port, "bob", PASSWORD) == expected
