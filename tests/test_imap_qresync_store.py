"""QRESYNC over the real MAPI store ([RFC 7162] 3.2): the mail view records the uids
that leave a folder (IMAP EXPUNGE, MAPI hard delete, soft delete and move) with the
modseq they left at; HIGHESTMODSEQ rises with each; ``SELECT (QRESYNC ...)`` reports
exactly them as ``VANISHED (EARLIER)``, across a reopened store, and a version 5
mailbox file gains the table."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from internet_mail.imap import ImapSession
from internet_mail.mime import ConvertedMessage, mime_to_mapi
from internet_mail.store import ImapStoreBackends
from mapi.access.logon import KdfParams
from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.objects.delivery import deliver_mime
from mapi.storage.schema import SCHEMA_VERSION
from mapi.store import MsgStore, ObjectStore

FAST_KDF = KdfParams(n=16, r=1, p=1)


def _convert(raw: bytes, limits: Limits, received: int) -> ConvertedMessage:
    return mime_to_mapi(raw, limits=limits, received=received)


def _deliver(store: ObjectStore, n: int) -> None:
    raw = f"From: b@example.org\r\nTo: alice@example.com\r\nSubject: m{n}\r\n\r\nbody\r\n"
    deliver_mime(store, ["alice@example.com"], raw.encode(), convert=_convert)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    s = ObjectStore(tmp_path / "data", kdf=FAST_KDF)
    s.add_user("alice", "secret", email="alice@example.com")
    yield s
    s.close()


class Client:
    def __init__(self, factory: ImapStoreBackends) -> None:
        self.backend = factory.new(None)
        self.session = ImapSession(self.backend, tls=True)
        self.session.data_to_send()
        self.n = 0
        self.say("LOGIN alice secret")
        self.say("ENABLE QRESYNC")

    def say(self, line: str) -> bytes:
        self.n += 1
        tag = f"t{self.n}".encode()
        self.session.receive_data(tag + b" " + line.encode() + b"\r\n")
        out = self.session.data_to_send()
        assert re.search(rb"(^|\r\n)" + tag + rb" OK", out), out
        return out

    def number(self, what: bytes, out: bytes) -> int:
        found = re.search(what + rb" (\d+)", out)
        assert found is not None, out
        return int(found.group(1))


def _inbox_entry_ids(ms: MsgStore) -> dict[str, bytes]:
    table = ms.open_folder(ms.special_folder_id("inbox")).contents_table()
    table.set_columns([pt.PR_SUBJECT_W, pt.PR_ENTRYID])
    return {str(r[0].value): r[1].value for r in table.query_rows(100)}  # type: ignore[misc]


def test_vanished_records_every_way_out(store: ObjectStore) -> None:
    for n in range(1, 7):
        _deliver(store, n)
    c = Client(ImapStoreBackends(store))
    out = c.say("SELECT INBOX")
    validity, seen = c.number(b"UIDVALIDITY", out), c.number(b"HIGHESTMODSEQ", out)
    # The session's own EXPUNGE: VANISHED, not EXPUNGE.
    c.say("UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert b"* VANISHED 2\r\n" in c.say("EXPUNGE")
    after_expunge = c.number(b"HIGHESTMODSEQ", c.say("STATUS INBOX (HIGHESTMODSEQ)"))
    assert after_expunge > seen
    # MAPI: a hard delete, a soft delete (into Deleted Items) and a move out.
    ms = store.logon_with_password("alice", "secret").open_store()
    inbox = ms.open_folder(ms.special_folder_id("inbox"))
    ids = _inbox_entry_ids(ms)
    inbox.delete_messages([ids["m3"]], hard=True)
    status = c.say("STATUS INBOX (HIGHESTMODSEQ)")
    assert b"* VANISHED 3\r\n" in status  # STATUS in the selected state may say it
    assert c.number(b"HIGHESTMODSEQ", status) > after_expunge
    after_hard = c.number(b"HIGHESTMODSEQ", status)
    inbox.delete_messages([ids["m4"]])
    deleted = ms.open_folder(ms.special_folder_id("deleted"))
    inbox.copy_messages([ids["m5"]], deleted, move=True)
    assert c.say("NOOP").startswith(b"* VANISHED 4:5\r\n")
    c.say("UID STORE 6 +FLAGS.SILENT (\\Flagged)")
    top = c.number(b"HIGHESTMODSEQ", c.say("STATUS INBOX (HIGHESTMODSEQ)"))
    c.say("UNSELECT")
    c.backend.close()
    ms.close()
    # A new connection resynchronises: exactly the uids that left, then the change.
    again = Client(ImapStoreBackends(store))
    out = again.say(f"SELECT INBOX (QRESYNC ({validity} {seen}))")
    assert b"* VANISHED (EARLIER) 2:5\r\n" in out
    assert re.search(rb"\* 2 FETCH \(UID 6 FLAGS \(\\Flagged\) MODSEQ \(%d\)\)" % top, out), out
    assert out.count(b"FETCH") == 1
    out = again.say(f"SELECT INBOX (QRESYNC ({validity} {after_hard}))")
    assert b"* VANISHED (EARLIER) 4:5\r\n" in out
    out = again.say(f"SELECT INBOX (QRESYNC ({validity} {top} 1:4))")
    assert b"VANISHED" not in out
    out = again.say(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {seen} VANISHED)")
    assert b"* VANISHED (EARLIER) 2:5\r\n" in out
    again.backend.close()


def test_a_version_5_mailbox_gains_the_vanished_table(tmp_path: Path) -> None:
    s = ObjectStore(tmp_path / "data", kdf=FAST_KDF)
    s.add_user("alice", "secret", email="alice@example.com")
    _deliver(s, 1)
    _deliver(s, 2)
    path = s.data_dir / "mailboxes" / s.directory.get_user("alice").mailbox
    s.close()
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE mail_vanished; PRAGMA user_version = 5;")
    conn.close()
    again = ObjectStore(tmp_path / "data", kdf=FAST_KDF)
    try:
        c = Client(ImapStoreBackends(again))
        out = c.say("SELECT INBOX")
        seen = c.number(b"HIGHESTMODSEQ", out)
        c.say("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
        c.say("EXPUNGE")
        validity = c.number(b"UIDVALIDITY", out)
        assert b"* VANISHED (EARLIER) 1\r\n" in c.say(f"SELECT INBOX (QRESYNC ({validity} {seen}))")
        c.backend.close()
    finally:
        again.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    conn.close()
