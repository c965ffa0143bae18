"""The IMAP backend over the real MAPI store: the session core driven against a SQLite
store in a temporary directory, the MAPI view checked after each IMAP action and the
IMAP view after MAPI actions (delivery, read flag, move), UIDs that survive reopening
the store and are never reused, and ``watch`` fired by changes through any door."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from internet_mail.imap import ImapSession
from internet_mail.mime import ConvertedMessage, mime_to_mapi
from internet_mail.store import ImapStoreBackend, ImapStoreBackends
from mapi.access.logon import KdfParams
from mapi.access.throttle import LogonThrottle
from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.model.properties import PropValue
from mapi.objects.delivery import deliver_mime
from mapi.objects.folders import Folder
from mapi.store import MsgStore, ObjectStore

FAST_KDF = KdfParams(n=16, r=1, p=1)


def _convert(raw: bytes, limits: Limits, received: int) -> ConvertedMessage:
    return mime_to_mapi(raw, limits=limits, received=received)


def _mail(n: int, subject: str = "hello") -> bytes:
    return (
        f"From: Bob <bob@example.org>\r\nTo: alice@example.com\r\nSubject: {subject} {n}\r\n"
        f"Message-ID: <m{n}@example.org>\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\n"
        f"body {n}\r\n"
    ).encode()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    s = ObjectStore(tmp_path / "data", kdf=FAST_KDF)
    s.add_user("alice", "secret", email="alice@example.com")
    yield s
    s.close()


def _deliver(store: ObjectStore, n: int, subject: str = "hello") -> None:
    deliver_mime(store, ["alice@example.com"], _mail(n, subject), convert=_convert)


class Client:
    """One IMAP connection: the session core over a store backend."""

    def __init__(self, factory: ImapStoreBackends) -> None:
        self.backend: ImapStoreBackend = factory.new("192.0.2.1")
        self.session = ImapSession(self.backend, tls=True)
        self.session.data_to_send()
        self.n = 0

    def say(self, line: str | bytes) -> bytes:
        self.n += 1
        tag = f"t{self.n}".encode()
        data = line.encode() if isinstance(line, str) else line
        self.session.receive_data(tag + b" " + data + b"\r\n")
        out = self.session.data_to_send()
        assert re.search(rb"(^|\r\n)" + tag + rb" OK", out), out
        return out

    def fails(self, line: str) -> bytes:
        self.n += 1
        tag = f"t{self.n}".encode()
        self.session.receive_data(tag + b" " + line.encode() + b"\r\n")
        out = self.session.data_to_send()
        assert re.search(rb"(^|\r\n)" + tag + rb" (NO|BAD)", out), out
        return out

    def login(self) -> Client:
        self.say("LOGIN alice secret")
        return self

    def close(self) -> None:
        self.backend.close()


def _uids(out: bytes) -> list[int]:
    return [int(u) for u in re.findall(rb"UID (\d+)", out)]


def _mapi(store: ObjectStore) -> MsgStore:
    return store.logon_with_password("alice", "secret").open_store()


def _inbox_subjects(ms: MsgStore) -> dict[str, int]:
    inbox = ms.open_folder(ms.special_folder_id("inbox"))
    table = inbox.contents_table()
    table.set_columns([pt.PR_SUBJECT_W, pt.PR_MESSAGE_FLAGS])
    rows = table.query_rows(100)
    return {str(r[0].value): _int(r[1].value) for r in rows}


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def _bytes(value: object) -> bytes:
    assert isinstance(value, bytes)
    return value


def test_login_list_and_special_use(store: ObjectStore) -> None:
    factory = ImapStoreBackends(store)
    bad = Client(factory)
    bad.fails("LOGIN alice wrong")
    c = Client(factory).login()
    out = c.say('LIST "" "*" RETURN (SPECIAL-USE SUBSCRIBED)')
    assert b'(\\HasNoChildren \\Subscribed) "/" INBOX' in out
    assert b"\\Sent" in out and b'"Sent Items"' in out
    assert b"\\Trash" in out and b"\\Drafts" in out
    assert b"Calendar" not in out and b"Contacts" not in out  # not mail folders
    c.say("CREATE Work/2024")
    out = c.say('LIST "" "*"')
    assert b'(\\HasChildren) "/" Work' in out and b'"/" Work/2024' in out
    ms = _mapi(store)
    root = ms.open_folder(ms.special_folder_id("ipm_subtree"))
    table = root.hierarchy_table()
    table.set_columns([pt.PR_DISPLAY_NAME_W])
    assert "Work" in [r[0].value for r in table.query_rows(50)]
    c.say("RENAME Work/2024 Archive2024")
    out = c.say('LIST "" "*"')
    assert b"Work/2024" not in out and b"Archive2024" in out
    c.fails("DELETE INBOX")
    c.fails('DELETE "Sent Items"')
    c.say("UNSUBSCRIBE Work")
    out = c.say('LIST (SUBSCRIBED) "" "*"')
    assert b'"/" Work\r\n' not in out
    c.say("DELETE Archive2024")
    assert b"Archive2024" not in c.say('LIST "" "*"')
    c.close()


def test_delivery_flags_both_ways_and_expunge(store: ObjectStore) -> None:
    for n in range(3):
        _deliver(store, n)
    factory = ImapStoreBackends(store)
    c = Client(factory).login()
    out = c.say("SELECT INBOX")
    assert b"* 3 EXISTS" in out
    validity = int(re.search(rb"UIDVALIDITY (\d+)", out).group(1))  # type: ignore[union-attr]
    out = c.say("FETCH 1:* (UID FLAGS RFC822.SIZE)")
    assert _uids(out) == [1, 2, 3]
    sizes = [int(s) for s in re.findall(rb"RFC822.SIZE (\d+)", out)]
    body = c.say("UID FETCH 1 (BODY.PEEK[])")
    assert b"body 0" in body and b"\\Seen" not in body
    assert sizes[0] == len(c.backend.body("INBOX", 1))
    # IMAP -> MAPI: \Seen is the read flag, \Flagged the follow-up flag, keywords.
    c.say("STORE 1 +FLAGS (\\Seen \\Flagged $Work)")
    c.say("STORE 2 +FLAGS (\\Answered)")
    ms = _mapi(store)
    flags = _inbox_subjects(ms)
    assert flags["hello 0"] & pt.MSGFLAG_READ and not flags["hello 1"] & pt.MSGFLAG_READ
    inbox = ms.open_folder(ms.special_folder_id("inbox"))
    table = inbox.contents_table()
    table.set_columns([pt.PR_ENTRYID, pt.PR_SUBJECT_W])
    eids = {str(r[1].value): _bytes(r[0].value) for r in table.query_rows(10)}
    m0 = ms.open_message(eids["hello 0"]).get_props([pt.PR_FLAG_STATUS]).as_dict()
    assert m0[pt.PR_FLAG_STATUS] == 2
    m1 = ms.open_message(eids["hello 1"]).get_props([pt.PR_LAST_VERB_EXECUTED]).as_dict()
    assert m1[pt.PR_LAST_VERB_EXECUTED] == 102
    out = c.say("UID FETCH 1:2 (FLAGS)")
    assert b"$Work" in out and b"\\Flagged" in out and b"\\Answered" in out
    # MAPI -> IMAP: a read flag set through MAPI shows as \Seen (and a modseq change).
    ms.open_message(eids["hello 2"]).set_read_flag()
    out = c.say("NOOP")
    assert re.search(rb"\* 3 FETCH \(FLAGS \([^)]*\\Seen", out), out
    # \Deleted is the view's own; EXPUNGE deletes as MAPI does (into Deleted Items).
    c.say("STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert "hello 1" in _inbox_subjects(ms)
    out = c.say("EXPUNGE")
    assert b"* 2 EXPUNGE" in out
    assert "hello 1" not in _inbox_subjects(ms)
    out = c.say('STATUS "Deleted Items" (MESSAGES UIDNEXT)')
    assert b"MESSAGES 1" in out
    c.close()
    # Reopened, the UIDs and UIDVALIDITY are the same; expunged uid 2 is never reused.
    store.close()
    again = ObjectStore(store.data_dir, kdf=FAST_KDF)
    try:
        _deliver(again, 9)
        c2 = Client(ImapStoreBackends(again)).login()
        out = c2.say("SELECT INBOX")
        assert f"UIDVALIDITY {validity}".encode() in out
        assert _uids(c2.say("FETCH 1:* (UID)")) == [1, 3, 4]
        c2.close()
    finally:
        again.close()


def test_moves_copies_append_get_new_uids(store: ObjectStore) -> None:
    for n in range(2):
        _deliver(store, n)
    c = Client(ImapStoreBackends(store)).login()
    c.say("CREATE Keep")
    c.say("SELECT INBOX")
    out = c.say("UID COPY 1 Keep")
    assert b"COPYUID" in out
    out = c.say("UID MOVE 2 Keep")
    assert re.search(rb"COPYUID \d+ 2 2", out), out
    assert b"* 2 EXPUNGE" in out
    raw = _mail(7, "appended")
    out = c.say(b"APPEND Keep (\\Seen) {%d+}\r\n" % len(raw) + raw)
    uid = int(re.search(rb"APPENDUID \d+ (\d+)", out).group(1))  # type: ignore[union-attr]
    assert uid == 3
    assert c.backend.body("Keep", uid) == raw  # exactly what was appended
    # A MAPI move of the message back into the Inbox gives it a new uid there.
    ms = _mapi(store)
    keep = ms.open_folder(
        next(
            _bytes(r[0].value)
            for r in _rows(ms.open_folder(ms.special_folder_id("ipm_subtree")))
            if r[1].value == "Keep"
        )
    )
    table = keep.contents_table()
    table.set_columns([pt.PR_ENTRYID, pt.PR_SUBJECT_W])
    moved = [_bytes(r[0].value) for r in table.query_rows(10) if r[1].value == "hello 1"]
    keep.copy_messages(moved, ms.open_folder(ms.special_folder_id("inbox")), move=True)
    out = c.say("NOOP")
    assert b"* 2 EXISTS" in out
    assert _uids(c.say("FETCH 2 (UID)")) == [3]
    c.close()


def _rows(folder: Folder) -> list[list[PropValue]]:
    table = folder.hierarchy_table()
    table.set_columns([pt.PR_ENTRYID, pt.PR_DISPLAY_NAME_W])
    return [list(r) for r in table.query_rows(50)]


def test_watch_fires_on_delivery_mapi_and_imap_changes(store: ObjectStore) -> None:
    _deliver(store, 0)
    factory = ImapStoreBackends(store)
    c = Client(factory).login()
    other = Client(factory).login()
    fired = threading.Event()
    stop = c.backend.watch("INBOX", fired.set)
    _deliver(store, 1)  # an SMTP delivery
    assert fired.is_set()
    fired.clear()
    ms = _mapi(store)
    inbox = ms.open_folder(ms.special_folder_id("inbox"))
    inbox.set_read_flags(None)  # MAPI
    assert fired.is_set()
    fired.clear()
    other.say("SELECT INBOX")
    other.say("STORE 1 +FLAGS (\\Deleted)")  # IMAP-only state, another connection
    assert fired.is_set()
    stop()
    fired.clear()
    _deliver(store, 2)
    assert not fired.is_set()
    c.close()
    other.close()


def test_throttle_refuses_a_guesser(store: ObjectStore) -> None:
    now = [0.0]
    throttle = LogonThrottle(free_failures=1)
    factory = ImapStoreBackends(store, throttle=throttle, clock=lambda: now[0])
    for _ in range(2):
        Client(factory).fails("LOGIN alice wrong")
    # Held back now: even the right password is refused until the delay has passed.
    Client(factory).fails("LOGIN alice secret")
    now[0] += 3600
    Client(factory).login().close()


def test_a_message_made_through_mapi_is_rendered_with_a_stable_size(
    store: ObjectStore,
) -> None:
    ms = _mapi(store)
    drafts = ms.open_folder(ms.special_folder_id("drafts"))
    msg = drafts.create_message()
    msg.set_props([(pt.PR_SUBJECT_W, "made in MAPI"), (pt.PR_BODY_W, "text body")])
    msg.save_changes()
    c = Client(ImapStoreBackends(store)).login()
    c.say("SELECT Drafts")
    out = c.say("FETCH 1 (FLAGS RFC822.SIZE)")
    assert b"\\Draft" in out
    size = int(re.search(rb"RFC822.SIZE (\d+)", out).group(1))  # type: ignore[union-attr]
    raw = c.backend.body("Drafts", 1)
    assert size == len(raw) and b"made in MAPI" in raw and raw == c.backend.body("Drafts", 1)
    c.close()


def test_a_version_4_mailbox_gains_the_view(tmp_path: Path) -> None:
    s = ObjectStore(tmp_path / "data", kdf=FAST_KDF)
    s.add_user("alice", "secret", email="alice@example.com")
    _deliver(s, 0)
    user = s.directory.get_user("alice")
    path = s.data_dir / "mailboxes" / user.mailbox
    s.close()
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE mail_uids; DROP TABLE mail_folders; PRAGMA user_version = 4;")
    conn.close()
    again = ObjectStore(tmp_path / "data", kdf=FAST_KDF)
    try:
        c = Client(ImapStoreBackends(again)).login()
        assert b"* 1 EXISTS" in c.say("SELECT INBOX")
        c.close()
    finally:
        again.close()


def test_large_folder_listing_is_cached(store: ObjectStore) -> None:
    for n in range(200):
        _deliver(store, n)
    c = Client(ImapStoreBackends(store)).login()
    c.say("SELECT INBOX")
    out = c.say("FETCH 1:* (UID FLAGS RFC822.SIZE)")
    assert len(_uids(out)) == 200
    view = c.backend.view
    folder = view.box("INBOX").folder_id
    first = view.entries(folder)
    assert view.entries(folder)[1] is first[1]  # nothing committed: nothing read again
    c.close()
