"""The POP3 backend over the real MAPI store: the session core against a SQLite store in
a temporary directory; the maildrop lock, UIDL kept across sessions (and the store's
reopening), CRLF sizes, and deletions applied at QUIT only, as MAPI deletes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from internet_mail.mime import ConvertedMessage, mime_to_mapi
from internet_mail.pop3 import AuthenticationRequested, Pop3Session
from internet_mail.store import Pop3StoreBackend, Pop3StoreBackends
from mapi.access.logon import KdfParams
from mapi.model import proptags as pt
from mapi.model.limits import Limits
from mapi.objects.delivery import deliver_mime
from mapi.store import ObjectStore

FAST_KDF = KdfParams(n=16, r=1, p=1)


def _convert(raw: bytes, limits: Limits, received: int) -> ConvertedMessage:
    return mime_to_mapi(raw, limits=limits, received=received)


def _deliver(store: ObjectStore, n: int, *, bare_lf: bool = False) -> bytes:
    raw = (
        f"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: pop {n}\r\n\r\n"
        f"line one of {n}\r\n.starts with a dot\r\n"
    ).encode()
    if bare_lf:
        raw = raw.replace(b"\r\n", b"\n")
    deliver_mime(store, ["alice@example.com"], raw, convert=_convert)
    return raw


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    s = ObjectStore(tmp_path / "data", kdf=FAST_KDF)
    s.add_user("alice", "secret", email="alice@example.com")
    yield s
    s.close()


class Client:
    """One POP3 connection: the core, its backend, and the driver's part of the login."""

    def __init__(self, factory: Pop3StoreBackends) -> None:
        self.backend: Pop3StoreBackend = factory.new("192.0.2.7")
        self.session = Pop3Session(self.backend, tls=True)
        self.session.data_to_send()

    def say(self, line: bytes) -> bytes:
        events = self.session.receive_data(line + b"\r\n")
        for event in events:
            if isinstance(event, AuthenticationRequested):
                name = self.backend.authenticate(event.user, event.password)
                self.session.authentication_result(name is not None, user=name)
        return self.session.data_to_send()

    def login(self, user: bytes = b"alice") -> bytes:
        self.say(b"USER " + user)
        return self.say(b"PASS secret")

    def uidl(self) -> list[bytes]:
        return re.findall(rb"\r\n\d+ (\S+)", self.say(b"UIDL"))

    def close(self) -> None:
        self.session.connection_lost()
        self.backend.close()


def test_lock_uidl_sizes_and_delete_at_quit(store: ObjectStore) -> None:
    raws = [_deliver(store, 0), _deliver(store, 1, bare_lf=True)]
    factory = Pop3StoreBackends(store)
    a = Client(factory)
    assert a.login().startswith(b"+OK")
    b = Client(factory)
    assert b"[IN-USE]" in b.login(b"alice@example.com")  # the same maildrop, locked
    b.close()
    listing = a.say(b"LIST")
    sizes = [int(s) for s in re.findall(rb"\r\n\d+ (\d+)", listing)]
    crlf = [len(r.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) for r in raws]
    assert sizes == crlf
    first = a.uidl()
    assert len(first) == 2 and len(set(first)) == 2
    assert b"..starts with a dot" in a.say(b"RETR 2")
    a.say(b"DELE 1")
    a.close()  # the connection dropped: no deletion applied, the lock released
    c = Client(factory)
    c.login()
    assert c.uidl() == first
    c.say(b"DELE 1")
    assert c.say(b"QUIT").startswith(b"+OK")
    c.close()
    # The deletion is a MAPI one: the message is in Deleted Items now.
    ms = store.logon_with_password("alice", "secret").open_store()
    deleted = ms.open_folder(ms.special_folder_id("deleted"))
    table = deleted.contents_table()
    table.set_columns([pt.PR_SUBJECT_W])
    assert [r[0].value for r in table.query_rows(10)] == ["pop 0"]
    _deliver(store, 2)
    d = Client(factory)
    d.login()
    now = d.uidl()
    assert now[0] == first[1] and now[1] not in first  # kept, and a fresh one
    d.close()


def test_uidl_survives_reopening_the_store(store: ObjectStore) -> None:
    _deliver(store, 0)
    a = Client(Pop3StoreBackends(store))
    a.login()
    first = a.uidl()
    a.close()
    store.close()
    again = ObjectStore(store.data_dir, kdf=FAST_KDF)
    try:
        b = Client(Pop3StoreBackends(again))
        b.login()
        assert b.uidl() == first
        b.close()
    finally:
        again.close()


def test_wrong_password_is_refused(store: ObjectStore) -> None:
    a = Client(Pop3StoreBackends(store))
    a.say(b"USER alice")
    assert a.say(b"PASS nope").startswith(b"-ERR")
    a.close()
