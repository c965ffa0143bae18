"""What the tests with independent mail clients (mbsync, offlineimap, fetchmail, curl)
share: a fast way to fill a mailbox, the MAPI view of it (folder -> subject -> flags),
a Maildir read the same way, an IMAP snapshot of (folder, UIDVALIDITY, uid, flags), and
running a client program with a bound in time."""

from __future__ import annotations

import collections
import imaplib
import re
import smtplib
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trio
from mail_helpers import client_context

from clients.api import Folder, Session, connect
from internet_mail.mime import ConvertedMessage, mime_to_mapi
from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.objects.delivery import deliver_mime

#: serve's self-signed certificate (the tunnel's, made on first start) in its data dir.
CERT_NAME = "tunnel-cert.pem"

#: folder path -> subject -> flags (sorted letters: F flagged, S seen).
View = dict[str, dict[str, str]]


def _convert(raw: bytes, limits: Limits, received: int) -> ConvertedMessage:
    return mime_to_mapi(raw, limits=limits, received=received)


def mail(subject: str, to: str = "bob@example.org") -> bytes:
    """A small Internet message with a unique Message-ID."""
    token = re.sub(r"[^A-Za-z0-9]+", ".", subject).strip(".")
    return (
        f"From: Carol <carol@outside.example>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{token}@outside.example>\r\n"
        f"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\nThis is {subject}.\r\n"
    ).encode()


def fill(store: Any, address: str, subjects: Iterable[str]) -> None:
    """Deliver one message per subject to ``address``'s Inbox straight into ``store``
    (serve's ObjectStore), as the SMTP listener does but without the round trips.
    Blocking: run it in a worker thread."""
    for subject in subjects:
        deliver_mime(store, [address], mail(subject, address), convert=_convert)


def smtp_deliver(port: int, subject: str, to: str = "bob@example.org") -> None:
    """One message through serve's SMTP listener (blocking)."""
    msg = EmailMessage()
    msg["From"] = "Carol <carol@outside.example>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(f"This is {subject}.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.send_message(msg)


def _is_mail(container_class: Any) -> bool:
    return not container_class or str(container_class).startswith("IPF.Note")


async def mapi_folders(session: Session) -> dict[str, Folder]:
    """The mail folders below the IPM subtree by path (display names joined by ``/``;
    the Inbox is ``INBOX``, as IMAP names it), opened."""
    store = await session.open_store()
    inbox_eid = await store.special_folder("inbox")
    out: dict[str, Folder] = {}
    pending: list[tuple[str, Folder]] = [
        ("", await store.open_folder(await store.special_folder("ipm_subtree")))
    ]
    while pending:
        prefix, folder = pending.pop()
        columns = [pt.PR_ENTRYID, pt.PR_DISPLAY_NAME_W, pt.PR_CONTAINER_CLASS_W]
        async for row in folder.subfolders(columns):
            if not _is_mail(row.get(pt.PR_CONTAINER_CLASS_W)):
                continue
            eid = row[pt.PR_ENTRYID]
            name = "INBOX" if eid == inbox_eid else row[pt.PR_DISPLAY_NAME_W]
            path = prefix + name
            child = await store.open_folder(eid)
            out[path] = child
            pending.append((path + "/", child))
    return out


def mapi_flags(row: Mapping[Any, Any]) -> str:
    flags = ""
    if row.get(pt.PR_FLAG_STATUS) == 2:
        flags += "F"
    if row.get(pt.PR_MESSAGE_FLAGS, 0) & pt.MSGFLAG_READ:
        flags += "S"
    return flags


async def mapi_view(session: Session) -> View:
    """Every mail folder's messages as subject -> flags, read through the MAPI client."""
    view: View = {}
    for path, folder in (await mapi_folders(session)).items():
        columns = [pt.PR_SUBJECT_W, pt.PR_MESSAGE_FLAGS, pt.PR_FLAG_STATUS]
        rows = [row async for row in folder.contents(columns)]
        subjects = [row[pt.PR_SUBJECT_W] for row in rows]
        duplicates = [s for s, n in collections.Counter(subjects).items() if n > 1]
        assert not duplicates, f"MAPI {path}: twice: {duplicates}"
        view[path] = {row[pt.PR_SUBJECT_W]: mapi_flags(row) for row in rows}
    return view


async def mapi_entry_ids(folder: Folder) -> dict[str, bytes]:
    """Subject -> entry id of a folder's messages."""
    columns = [pt.PR_ENTRYID, pt.PR_SUBJECT_W]
    return {row[pt.PR_SUBJECT_W]: row[pt.PR_ENTRYID] async for row in folder.contents(columns)}


def maildir_flags(name: str) -> str:
    """The flags of a Maildir file name (``...:2,FS``), the letters we compare."""
    _, sep, info = name.rpartition(":2,")
    return "".join(sorted(c for c in info if c in "FS")) if sep else ""


def _subject(path: Path) -> str:
    with path.open("rb") as f:
        for line in f:
            if line.lower().startswith(b"subject:"):
                return line[8:].strip().decode()
            if not line.strip():
                break
    raise AssertionError(f"{path}: no Subject")


def maildir_folders(root: Path) -> list[Path]:
    """The Maildir folders under ``root`` (directories with cur/ and new/)."""
    return sorted(p.parent for p in root.rglob("cur") if (p.parent / "new").is_dir())


def maildir_view(root: Path) -> View:
    """Every Maildir folder under ``root`` as subject -> flags."""
    view: View = {}
    for folder in maildir_folders(root):
        files = [f for sub in ("cur", "new") for f in sorted((folder / sub).iterdir())]
        entries = [(_subject(f), f.name) for f in files]
        duplicates = [s for s, n in collections.Counter(s for s, _ in entries).items() if n > 1]
        assert not duplicates, f"Maildir {folder}: twice: {duplicates}"
        view[folder.relative_to(root).as_posix()] = {s: maildir_flags(n) for s, n in entries}
    return view


def maildir_files(root: Path) -> set[str]:
    """Every file under ``root`` (messages and the client's state), relative."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def maildir_find(root: Path, folder: str, subject: str) -> Path:
    """The file of the message with ``subject`` in the Maildir ``folder``."""
    for sub in ("cur", "new"):
        for f in (root / folder / sub).iterdir():
            if _subject(f) == subject:
                return f
    raise AssertionError(f"{subject!r} not in Maildir {folder}")


def maildir_mark(root: Path, folder: str, subject: str, letter: str) -> None:
    """Add the flag ``letter`` to a message of the Maildir ``folder``, as a mail program
    does: the file renamed into cur/ with the letter in its info (``:2,``)."""
    path = maildir_find(root, folder, subject)
    base, _, info = path.name.partition(":2,")
    flags = "".join(sorted(set(info + letter)))
    path.rename(root / folder / "cur" / f"{base}:2,{flags}")


def maildir_add(root: Path, folder: str, name: str, data: bytes) -> None:
    """Drop a new message into the Maildir ``folder`` (made when missing)."""
    for sub in ("cur", "new", "tmp"):
        (root / folder / sub).mkdir(parents=True, exist_ok=True)
    (root / folder / "tmp" / name).write_bytes(data)
    (root / folder / "tmp" / name).rename(root / folder / "new" / name)


def imap_snapshot(port: int, user: str, password: str) -> set[tuple[str, int, int, str]]:
    """(mailbox, UIDVALIDITY, uid, flags) of every message, over implicit TLS with
    EXAMINE (read-only: taking the snapshot changes nothing). Blocking."""
    out: set[tuple[str, int, int, str]] = set()
    with imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_context(), timeout=30) as imap:
        imap.login(user, password)
        status, listing = imap.list()
        assert status == "OK"
        for line in listing:
            assert isinstance(line, bytes)
            quoted = line.rsplit(b' "/" ', 1)[1].decode()
            name = quoted.strip('"')
            if "\\Noselect" in line.decode():
                continue
            status, _ = imap.select(quoted, readonly=True)
            assert status == "OK", name
            validity = int(imap.response("UIDVALIDITY")[1][0] or 0)
            status, data = imap.uid("FETCH", "1:*", "(FLAGS)")
            assert status == "OK"
            for item in data:
                if not isinstance(item, bytes):
                    continue
                match = re.search(rb"UID (\d+)", item)
                flags = re.search(rb"FLAGS \(([^)]*)\)", item)
                if match is None:  # an unsolicited update (another session's change)
                    continue
                assert flags, item
                out.add((name, validity, int(match[1]), flags[1].decode()))
            imap.close()
        imap.logout()
    return out


def run(
    args: Sequence[str], *, timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a client program (blocking), its output captured (as text unless
    ``text=False``)."""
    kwargs.setdefault("text", True)
    return subprocess.run(list(args), capture_output=True, timeout=timeout, **kwargs)


def subject(n: int) -> str:
    """The subject of message ``n`` of a filled mailbox."""
    return f"message {n}"


def initial_flags(n: int) -> str:
    """Message ``n``'s flags as :func:`layout_mailbox` sets them: every fiftieth
    flagged for follow-up, every third read."""
    return ("F" if n % 50 == 0 else "") + ("S" if n % 3 == 0 else "")


def initial_view(layout: Mapping[str, range], empty: Iterable[str]) -> View:
    """The view of a mailbox filled by :func:`layout_mailbox` (``empty``: the folders
    with no message)."""
    view: View = {folder: {} for folder in empty}
    for folder, numbers in layout.items():
        view[folder] = {subject(n): initial_flags(n) for n in numbers}
    return view


async def layout_mailbox(
    server: Any, user: str, password: str, layout: Mapping[str, range]
) -> None:
    """Fill ``user``'s mailbox on a running serve: ``layout`` is folder path -> message
    numbers. Every message is delivered to the Inbox (:func:`fill`); then through the
    MAPI client the read and follow-up flags are set (:func:`initial_flags`), the other
    folders made (parents too) and their messages moved there."""
    numbers = [n for numbers in layout.values() for n in numbers]
    address = f"{user}@example.org"
    await trio.to_thread.run_sync(fill, server.store, address, map(subject, numbers))
    async with connect(f"ncacn_ip_tcp:127.0.0.1[{server.epm_port}]", user, password) as session:
        store = await session.open_store()
        inbox = await store.open_folder(await store.special_folder("inbox"))
        ids = await mapi_entry_ids(inbox)
        await inbox.set_read_flags([ids[subject(n)] for n in numbers if "S" in initial_flags(n)])
        for n in numbers:
            if "F" in initial_flags(n):
                message = await store.open_message(ids[subject(n)], write=True)
                await message.set_props({pt.PR_FLAG_STATUS: 2})
                await message.save()
        top = await store.open_folder(await store.special_folder("ipm_subtree"))
        for path, numbers_here in layout.items():
            if path == "INBOX":
                continue
            folder = top
            for name in path.split("/"):
                folder = await folder.create_folder(name, open_if_exists=True)
            await inbox.copy_messages([ids[subject(n)] for n in numbers_here], folder, move=True)


async def view_of(epm_port: int, user: str, password: str) -> View:
    """:func:`mapi_view` of ``user``'s mailbox, over a MAPI session of its own."""
    async with connect(f"ncacn_ip_tcp:127.0.0.1[{epm_port}]", user, password) as session:
        return await mapi_view(session)
