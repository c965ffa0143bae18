"""Other users' folders in IMAP: the session core over the store backend, with folder
permissions granted through MAPI. NAMESPACE names the "Other Users/" prefix; LIST
shows exactly the folders granted (and nothing of users who granted nothing); SELECT
is read-only without the right to change messages, FETCH and SEARCH read the owner's
messages with the owner's UIDs; changes need their rights (NO [NOPERM]); revoking a
grant hides the folder again."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from internet_mail.imap import ImapSession
from internet_mail.imap.backend import BackendError
from internet_mail.mime import ConvertedMessage, mime_to_mapi
from internet_mail.store import ImapStoreBackend, ImapStoreBackends
from mapi.access.logon import KdfParams
from mapi.access.permissions import (
    CREATE,
    DELETE_ANY,
    EDIT_ANY,
    FOLDER_VISIBLE,
    READ_ANY,
    ROLES,
)
from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.objects.delivery import deliver_mime
from mapi.objects.folders import Folder
from mapi.store import MsgStore, ObjectStore

FAST_KDF = KdfParams(n=16, r=1, p=1)
READER = ROLES["reviewer"]


def _convert(raw: bytes, limits: Limits, received: int) -> ConvertedMessage:
    return mime_to_mapi(raw, limits=limits, received=received)


def _mail(n: int, subject: str) -> bytes:
    return (
        f"From: Dan <dan@example.org>\r\nTo: alice@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <m{n}@example.org>\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\n"
        f"body {n}\r\n"
    ).encode()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    s = ObjectStore(tmp_path / "data", kdf=FAST_KDF)
    for name in ("alice", "bob", "carol"):
        s.add_user(name, "secret", email=f"{name}@example.com")
    for n, subject in enumerate(("hello", "the report", "bye"), 1):
        deliver_mime(s, ["alice@example.com"], _mail(n, subject), convert=_convert)
    yield s
    s.close()


class Client:
    """One IMAP connection of ``user``: the session core over a store backend."""

    def __init__(self, factory: ImapStoreBackends, user: str) -> None:
        self.backend: ImapStoreBackend = factory.new("192.0.2.1")
        self.session = ImapSession(self.backend, tls=True)
        self.session.data_to_send()
        self.n = 0
        self.say(f"LOGIN {user} secret")

    def _send(self, line: str) -> tuple[bytes, bytes]:
        self.n += 1
        tag = f"t{self.n}".encode()
        self.session.receive_data(tag + b" " + line.encode() + b"\r\n")
        return tag, self.session.data_to_send()

    def say(self, line: str) -> bytes:
        tag, out = self._send(line)
        assert re.search(rb"(^|\r\n)" + tag + rb" OK", out), out
        return out

    def fails(self, line: str, code: bytes) -> bytes:
        tag, out = self._send(line)
        assert re.search(rb"(^|\r\n)" + tag + rb" NO \[" + code + rb"\]", out), out
        return out

    def close(self) -> None:
        self.backend.close()


class Owner:
    """Alice through MAPI: her folders and their permissions."""

    def __init__(self, store: ObjectStore) -> None:
        self.session = store.logon_with_password("alice", "secret")
        self.ms: MsgStore = self.session.open_store()
        self.inbox = self.ms.open_folder(self.ms.special_folder_id("inbox"))
        self.projects = self.inbox.create_folder("Projects", container_class="IPF.Note")
        self.secret = self.inbox.create_folder("Secret", container_class="IPF.Note")

    def grant(self, folder: Folder, user: str, rights: int) -> None:
        folder.set_permission(user, rights)

    def close(self) -> None:
        self.ms.close()
        self.session.logoff()


def _listed(out: bytes) -> dict[str, bytes]:
    """LIST answers by mailbox name: their attributes."""
    found = re.findall(rb'\* LIST \(([^)]*)\) "/" ("[^"]*"|\S+)', out)
    return {name.strip(b'"').decode(): attrs for attrs, name in found}


def test_namespace_list_select_fetch_search(store: ObjectStore) -> None:
    factory = ImapStoreBackends(store)
    alice = Owner(store)
    alice.grant(alice.inbox, "bob", READER)
    alice.grant(alice.projects, "bob", READER)
    alice.grant(alice.secret, "bob", FOLDER_VISIBLE)  # seen, not readable
    bob = Client(factory, "bob")
    carol = Client(factory, "carol")
    mine = Client(factory, "alice")
    try:
        out = bob.say("NAMESPACE")
        assert b'* NAMESPACE (("" "/")) (("Other Users/" "/")) NIL' in out
        listed = _listed(bob.say('LIST "" "*"'))
        assert listed["Other Users"] == b"\\Noselect \\HasChildren"
        assert listed["Other Users/alice"] == b"\\Noselect \\HasChildren"
        assert listed["Other Users/alice/INBOX"] == b"\\HasChildren"
        assert listed["Other Users/alice/INBOX/Projects"] == b"\\HasNoChildren"
        assert listed["Other Users/alice/INBOX/Secret"] == b"\\Noselect \\HasNoChildren"
        assert not any("Sent Items" in n for n in listed if n.startswith("Other Users/"))
        assert "INBOX" in listed  # bob's own are there as before
        top = _listed(bob.say('LIST "" "Other Users/%"'))
        assert list(top) == ["Other Users/alice"]
        level = _listed(bob.say('LIST "Other Users/alice/" "%"'))
        assert list(level) == ["Other Users/alice/INBOX"]

        # Read-only: the rights do not allow changing messages.
        out = bob.say('SELECT "Other Users/alice/INBOX"')
        assert b"* 3 EXISTS" in out and b"[READ-ONLY]" in out
        owner = mine.say("SELECT INBOX")
        validity = re.search(rb"UIDVALIDITY (\d+)", owner)
        assert validity is not None and validity.group(0) in out  # the owner's UIDs
        out = bob.say("UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert out.count(b"Subject: ") == 3 and b"Subject: the report" in out
        assert mine.say("UID FETCH 1:* (UID)").count(b"UID ") == 3
        assert re.findall(rb"UID (\d+)", out) == re.findall(
            rb"UID (\d+)", mine.say("UID FETCH 1:* (UID)")
        )
        out = bob.say("UID SEARCH SUBJECT report")
        assert re.search(rb"\* SEARCH \d+\r\n", out)
        out = bob.say("FETCH 2 (BODY[TEXT])")
        assert b"body 2" in out
        bob.fails("STORE 1 +FLAGS (\\Seen)", b"NOPERM")
        bob.fails("EXPUNGE", b"NOPERM")
        bob.fails('APPEND "Other Users/alice/INBOX" {4+}\r\nhi\r\n', b"NOPERM")
        bob.fails('COPY 1 "Other Users/alice/INBOX/Projects"', b"NOPERM")
        bob.fails('CREATE "Other Users/alice/INBOX/New"', b"NOPERM")
        # Nothing was changed: FETCH BODY[] by a read-only session sets no \Seen.
        assert b"\\Seen" not in mine.say("FETCH 1:* (FLAGS)")
        # A copy out of the shared folder into bob's own mailbox.
        out = bob.say("COPY 1:2 INBOX")
        assert b"COPYUID" in out
        assert b"MESSAGES 2" in bob.say("STATUS INBOX (MESSAGES)")
        out = bob.say('STATUS "Other Users/alice/INBOX/Projects" (MESSAGES UIDNEXT)')
        assert b"MESSAGES 0" in out
        bob.fails('SELECT "Other Users/alice/INBOX/Secret"', b"NOPERM")
        bob.fails('SELECT "Other Users/alice/Sent Items"', b"NONEXISTENT")
        bob.fails('SELECT "Other Users/carol/INBOX"', b"NONEXISTENT")

        # carol was granted nothing: no other users, nothing of alice's.
        out = carol.say('LIST "" "*"')
        assert b"Other Users" not in out and b"alice" not in out
        carol.fails('SELECT "Other Users/alice/INBOX"', b"NONEXISTENT")
        carol.fails('STATUS "Other Users/alice/INBOX" (MESSAGES)', b"NONEXISTENT")
    finally:
        bob.close()
        carol.close()
        mine.close()
        alice.close()


def test_revoking_hides_and_rights_allow_changes(store: ObjectStore) -> None:
    factory = ImapStoreBackends(store)
    alice = Owner(store)
    alice.grant(alice.inbox, "bob", READER)
    bob = Client(factory, "bob")
    mine = Client(factory, "alice")
    try:
        assert "Other Users/alice/INBOX" in _listed(bob.say('LIST "" "*"'))
        alice.grant(alice.inbox, "bob", 0)
        out = bob.say('LIST "" "*"')
        assert b"Other Users" not in out
        bob.fails('SELECT "Other Users/alice/INBOX"', b"NONEXISTENT")

        # An editor may flag, delete and add.
        alice.grant(alice.inbox, "bob", READ_ANY | FOLDER_VISIBLE | EDIT_ANY | DELETE_ANY | CREATE)
        out = bob.say('SELECT "Other Users/alice/INBOX"')
        assert b"[READ-WRITE]" in out
        bob.say("STORE 1 +FLAGS (\\Seen)")
        mine.say("SELECT INBOX")
        flags = mine.say("FETCH 1 (FLAGS)")
        assert b"\\Seen" in flags  # alice's read flag, set by bob
        out = bob.say("UID STORE 3 +FLAGS (\\Deleted)")
        assert b"* 3 EXPUNGE" in bob.say("EXPUNGE")
        assert b"* 2 EXISTS" in mine.say("SELECT INBOX")
        msg = "From: bob@example.com\r\nSubject: from bob\r\n\r\nhi\r\n"
        out = bob.say(f'APPEND "Other Users/alice/INBOX" {{{len(msg)}+}}\r\n{msg}')
        assert b"APPENDUID" in out
        assert b"* 3 EXISTS" in mine.say("NOOP")
        fetched = mine.say("FETCH 3 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"Subject: from bob" in fetched
    finally:
        bob.close()
        mine.close()
        alice.close()


def test_inbox_messages_through_mapi_rights(store: ObjectStore) -> None:
    """What bob reads through IMAP is alice's Inbox as MAPI sees it."""
    alice = Owner(store)
    alice.grant(alice.inbox, "bob", READER)
    table = alice.inbox.contents_table()
    table.set_columns([pt.PR_SUBJECT_W])
    subjects = sorted(str(r[0].value) for r in table.query_rows(10))
    bob = Client(ImapStoreBackends(store), "bob")
    try:
        bob.say('EXAMINE "Other Users/alice/INBOX"')
        out = bob.say("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        got = sorted(s.decode() for s in re.findall(rb"Subject: ([^\r]*)", out))
        assert got == subjects
    finally:
        bob.close()
        alice.close()


def test_idle_on_a_shared_folder_hears_the_owners_mail(store: ObjectStore) -> None:
    """``watch`` (IDLE) on another user's folder is fed by that mailbox's changes,
    and needs the right to read it."""
    alice = Owner(store)
    alice.grant(alice.inbox, "bob", READER)
    alice.grant(alice.secret, "bob", FOLDER_VISIBLE)
    bob = Client(ImapStoreBackends(store), "bob")
    try:
        fired = threading.Event()
        stop = bob.backend.watch("Other Users/alice/INBOX", fired.set)
        deliver_mime(store, ["alice@example.com"], _mail(9, "late"), convert=_convert)
        assert fired.is_set()
        stop()
        with pytest.raises(BackendError) as refused:
            bob.backend.watch("Other Users/alice/INBOX/Secret", fired.set)
        assert refused.value.code == "NOPERM"
        bob.say('EXAMINE "Other Users/alice/INBOX"')
        assert b"Subject: late" in bob.say("FETCH 4 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    finally:
        bob.close()
        alice.close()
