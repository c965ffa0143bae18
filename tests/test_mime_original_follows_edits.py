"""A received message keeps the bytes that arrived (``PR_MIME_ORIGINAL``) only while
they still say what the message says: a MAPI edit of its content (subject, body,
recipients, attachments) drops them, so IMAP, POP3 and export show the edit at once;
a change of its state (read mark, follow-up flag, "replied", IMAP flags and keywords)
keeps them byte for byte."""

from __future__ import annotations

import re
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
from mapi.objects.messages import Message
from mapi.store import MsgStore, ObjectStore

RAW = (
    b"From: Bob <bob@example.org>\r\nTo: alice@example.com\r\nSubject: As it arrived\r\n"
    b"Message-ID: <m1@example.org>\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"X-Original-Only: kept while unedited\r\n\r\nbody\r\n"
)


def _convert(raw: bytes, limits: Limits, received: int) -> ConvertedMessage:
    return mime_to_mapi(raw, limits=limits, received=received)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    s = ObjectStore(tmp_path / "data", kdf=KdfParams(n=16, r=1, p=1))
    s.add_user("alice", "secret", email="alice@example.com")
    deliver_mime(s, ["alice@example.com"], RAW, convert=_convert)
    yield s
    s.close()


def _imap_body(store: ObjectStore) -> bytes:
    backend = ImapStoreBackends(store).new(None)
    try:
        session = ImapSession(backend, tls=True)
        session.data_to_send()
        session.receive_data(b"a LOGIN alice secret\r\nb SELECT INBOX\r\nc FETCH 1 BODY.PEEK[]\r\n")
        out = session.data_to_send()
        assert b"c OK" in out, out
        match = re.search(rb"BODY\[\] \{(\d+)\}\r\n", out)
        assert match is not None, out
        return out[match.end() : match.end() + int(match.group(1))]
    finally:
        backend.close()


def _open_only_message(store: ObjectStore) -> tuple[MsgStore, Message]:
    ms = store.logon_with_password("alice", "secret").open_store()
    inbox = ms.open_folder(ms.special_folder_id("inbox"))
    table = inbox.contents_table()
    table.set_columns([pt.PR_ENTRYID])
    [row] = table.query_rows(10)
    entry_id = row[0].value
    assert isinstance(entry_id, bytes)
    return ms, ms.open_message(entry_id, writable=True)


def test_state_changes_keep_the_original(store: ObjectStore) -> None:
    assert _imap_body(store).endswith(RAW)
    _, message = _open_only_message(store)
    message.set_read_flag()
    message.set_props([(pt.PR_FLAG_STATUS, 2), (pt.PR_LAST_VERB_EXECUTED, 102)])
    message.save_changes()
    assert _imap_body(store).endswith(RAW)


def test_a_subject_edit_through_mapi_shows_in_imap(store: ObjectStore) -> None:
    _, message = _open_only_message(store)
    message.set_props([(pt.PR_SUBJECT_W, "Edited in Outlook")])
    message.save_changes()
    body = _imap_body(store)
    assert b"Subject: Edited in Outlook" in body
    assert b"X-Original-Only" not in body  # rendered from the properties now


def test_a_recipient_edit_drops_the_original(store: ObjectStore) -> None:
    _, message = _open_only_message(store)
    message.modify_recipients(
        [[(pt.PR_DISPLAY_NAME_W, "Carol"), (pt.PR_EMAIL_ADDRESS_W, "carol@example.net"),
          (pt.PR_ADDRTYPE_W, "SMTP"), (pt.PR_RECIPIENT_TYPE, pt.MAPI_CC)]],
        flags=0x2,
    )  # fmt: skip
    message.save_changes()
    assert b"carol@example.net" in _imap_body(store)
