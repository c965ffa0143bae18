"""The IMAP session core: states, capabilities before and after TLS and login, the
commands' answers as bytes (RFC 9051 section 8's conversation shape), IDLE fed by a
store change, and hostile input that gets only protocol answers."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from internet_mail.imap import (
    Authenticated,
    CloseRequested,
    IdleEnded,
    IdleStarted,
    ImapLimits,
    ImapSession,
    StartTLSRequested,
    State,
)
from internet_mail.imap import responses as r
from internet_mail.imap.testing import MemoryBackend

MESSAGE = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
    b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
    b"Subject: afternoon meeting\r\n"
    b"To: mooch@owatagu.siam.edu.example\r\n"
    b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)


def _session(*, tls: bool = True, login: bool = True) -> tuple[ImapSession, MemoryBackend]:
    backend = MemoryBackend()
    session = ImapSession(backend, tls=tls)
    session.data_to_send()
    if login:
        session.receive_data(b"L LOGIN alice secret\r\n")
        assert session.data_to_send().endswith(
            b"L OK [CAPABILITY " + _caps(session) + b"] logged in\r\n"
        )
    return session, backend


def _caps(session: ImapSession) -> bytes:
    return " ".join(session.capabilities()).encode()


def _say(session: ImapSession, line: bytes) -> bytes:
    session.receive_data(line)
    return session.data_to_send()


def test_greeting_and_capabilities_follow_tls_and_login() -> None:
    session = ImapSession(MemoryBackend())
    greeting = session.data_to_send()
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev2 IMAP4rev1 ")
    assert b"STARTTLS LOGINDISABLED" in greeting and b"AUTH=PLAIN" not in greeting
    assert _say(session, b"a LOGIN alice secret\r\n") == (
        b"a NO [PRIVACYREQUIRED] LOGIN needs TLS\r\n"
    )
    assert b"PRIVACYREQUIRED" in _say(session, b"b AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    assert _say(session, b"c SELECT INBOX\r\n") == b"c BAD SELECT not allowed now\r\n"
    events = session.receive_data(b"d STARTTLS\r\n")
    assert events == [StartTLSRequested()]
    assert session.data_to_send() == b"d OK Begin TLS negotiation now\r\n"
    session.tls_established()
    caps = _say(session, b"e CAPABILITY\r\n")
    assert b"AUTH=PLAIN" in caps and b"LOGINDISABLED" not in caps and b"STARTTLS" not in caps
    assert _say(session, b"f STARTTLS\r\n") == b"f BAD TLS already active\r\n"
    assert b"AUTHENTICATIONFAILED" in _say(session, b"g LOGIN alice wrong\r\n")
    events = session.receive_data(b"h AUTHENTICATE PLAIN\r\n")
    assert session.data_to_send() == b"+ \r\n"
    events = session.receive_data(b"AGFsaWNlAHNlY3JldA==\r\n")
    assert events == [Authenticated(user="alice")]
    assert session.data_to_send().startswith(b"h OK [CAPABILITY IMAP4rev2")
    assert session.state is State.AUTHENTICATED
    assert b"UIDPLUS" in _say(session, b"i CAPABILITY\r\n")
    assert _say(session, b"j LOGIN alice secret\r\n") == b"j BAD LOGIN not allowed now\r\n"


def test_sasl_ir_and_cancel() -> None:
    session, _ = _session(login=False)
    session.receive_data(b"a AUTHENTICATE PLAIN\r\n")
    session.data_to_send()
    assert _say(session, b"*\r\n") == b"a BAD authentication cancelled\r\n"
    out = _say(session, b"b AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    assert out.startswith(b"b OK [CAPABILITY")


def test_rfc9051_section8_shape() -> None:
    """The sample session of RFC 9051 section 8, on our backend's numbers."""
    session, backend = _session()
    for _ in range(3):
        backend.append("INBOX", MESSAGE, frozenset(), dt.datetime(1994, 2, 7, 21, 52, 25,
                       tzinfo=dt.timezone(-dt.timedelta(hours=8))))  # fmt: skip
    validity = backend.boxes["INBOX"].uidvalidity
    out = _say(session, b"a002 select inbox\r\n")
    assert out == (
        b"* 3 EXISTS\r\n"
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] permanent"
        b" flags\r\n"
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
        b"* OK [UIDNEXT 4] predicted next UID\r\n"
        b"* OK [HIGHESTMODSEQ 4] highest\r\n"
        b"a002 OK [READ-WRITE] SELECT completed\r\n" % validity
    )
    out = _say(session, b"a003 fetch 3 full\r\n")
    assert out.startswith(
        b'* 3 FETCH (FLAGS () INTERNALDATE " 7-Feb-1994 21:52:25 -0800" RFC822.SIZE %d'
        b' ENVELOPE ("Mon, 7 Feb 1994 21:52:25 -0800 (PST)" "afternoon meeting"'
        b' (("Fred Foobar" NIL "foobar" "Blurdybloop.example"))' % len(MESSAGE)
    )
    assert out.endswith(
        b' BODY ("text" "plain" ("charset" "US-ASCII") NIL NIL "7bit" 55 1))\r\n'
        b"a003 OK FETCH completed\r\n"
    )
    out = _say(session, b"a004 fetch 3 body[header]\r\n")
    header = MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert out == (
        b"* 3 FETCH (BODY[HEADER] {%d}\r\n" % len(header)
        + header
        + b" FLAGS (\\Seen))\r\na004 OK FETCH completed\r\n"
    )
    out = _say(session, b"a005 store 3 +flags \\deleted\r\n")
    assert out == b"* 3 FETCH (FLAGS (\\Deleted \\Seen))\r\na005 OK STORE completed\r\n"
    assert _say(session, b"a006 logout\r\n") == b"* BYE logging out\r\na006 OK LOGOUT completed\r\n"


def test_uid_commands_uidplus_and_esearch() -> None:
    session, backend = _session()
    out = _say(session, b"a APPEND INBOX (\\Seen) {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    validity = backend.boxes["INBOX"].uidvalidity
    assert out == b"a OK [APPENDUID %d 1] APPEND completed\r\n" % validity
    _say(session, b"a2 APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    assert b"TRYCREATE" in _say(session, b"a3 APPEND Nowhere {1+}\r\nx\r\n")
    _say(session, b"s SELECT INBOX\r\n")
    out = _say(session, b"b UID SEARCH RETURN (MIN MAX COUNT ALL) ALL\r\n")
    assert (
        out == b'* ESEARCH (TAG "b") UID MIN 1 MAX 2 ALL 1:2 COUNT 2\r\nb OK SEARCH completed\r\n'
    )
    out = _say(session, b"c SEARCH RETURN (SAVE) UNSEEN\r\n")
    assert out == b"c OK SEARCH completed\r\n"
    out = _say(session, b"d UID FETCH $ (FLAGS)\r\n")
    assert out == b"* 2 FETCH (FLAGS () UID 2)\r\nd OK FETCH completed\r\n"
    trash = backend.boxes["Trash"].uidvalidity
    out = _say(session, b"e UID COPY 1:2 Trash\r\n")
    assert out == b"e OK [COPYUID %d 1:2 1,2] COPY completed\r\n" % trash
    out = _say(session, b"f UID MOVE 2 Trash\r\n")
    assert out == b"* OK [COPYUID %d 2 3] moved\r\n* 2 EXPUNGE\r\nf OK MOVE completed\r\n" % trash
    out = _say(session, b"g FETCH 5 FLAGS\r\n")
    assert out == b"g BAD invalid sequence number\r\n"
    assert b"NO [CANNOT]" in _say(session, b"h SORT (DATE) UTF-8 ALL\r\n")


def test_condstore_unchangedsince_and_changedsince() -> None:
    session, backend = _session()
    for _ in range(2):
        backend.append("INBOX", MESSAGE, frozenset(), None)
    _say(session, b"s SELECT INBOX (CONDSTORE)\r\n")
    out = _say(session, b"a STORE 1:2 (UNCHANGEDSINCE 2) +FLAGS.SILENT (\\Flagged)\r\n")
    assert out.endswith(b"a OK [MODIFIED 2] STORE completed\r\n")
    out = _say(session, b"b FETCH 1:* (FLAGS) (CHANGEDSINCE 3)\r\n")
    assert out == b"* 1 FETCH (FLAGS (\\Flagged) MODSEQ (4))\r\nb OK FETCH completed\r\n"


def test_idle_sees_store_changes() -> None:
    session, backend = _session()
    _say(session, b"s SELECT INBOX\r\n")
    assert session.receive_data(b"i IDLE\r\n") == [IdleStarted()]
    assert session.data_to_send() == b"+ idling\r\n"
    backend.append("INBOX", MESSAGE, frozenset(), None)
    session.poll()
    assert session.data_to_send() == b"* 1 EXISTS\r\n"
    backend.store("INBOX", [1], "+", frozenset({"\\Seen"}))
    session.poll()
    assert session.data_to_send() == b"* 1 FETCH (FLAGS (\\Seen))\r\n"
    assert session.receive_data(b"DONE\r\n") == [IdleEnded()]
    assert session.data_to_send() == b"i OK IDLE terminated\r\n"


def test_list_status_special_use_and_utf8() -> None:
    session, backend = _session()
    backend.create("Entwürfe", ("\\Drafts",))
    out = _say(session, b'a LIST "" * RETURN (SPECIAL-USE STATUS (MESSAGES))\r\n')
    assert b'* LIST (\\HasNoChildren \\Drafts) "/" Entw&APw-rfe\r\n' in out
    assert b"* STATUS Entw&APw-rfe (MESSAGES 0)\r\n" in out
    assert b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n' in out
    out = _say(session, b'b LIST "" ""\r\n')
    assert out == b'* LIST (\\Noselect) "/" ""\r\nb OK LIST completed\r\n'
    assert (
        _say(session, b"c ENABLE UTF8=ACCEPT\r\n")
        == b"* ENABLED UTF8=ACCEPT\r\nc OK ENABLE completed\r\n"
    )
    out = _say(session, b'd LIST "" "Entw*"\r\n')
    assert (
        out
        == '* LIST (\\HasNoChildren \\Drafts) "/" "Entwürfe"\r\nd OK LIST completed\r\n'.encode()
    )
    assert b"NONEXISTENT" in _say(session, b"e STATUS nope (MESSAGES)\r\n")
    assert b"* QUOTA" in _say(session, b"f GETQUOTAROOT INBOX\r\n")


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("INBOX", b"INBOX"),
        ("with space", b'"with space"'),
        ('q"uote', b'"q\\"uote"'),
        ("line\r\nbreak", b"{11}\r\nline\r\nbreak"),
        ("nil", b'"nil"'),
        ("", b'""'),
    ],
)
def test_astring_quoting_and_literals(value: str, wire: bytes) -> None:
    assert r.astring(value) == wire


def test_utf8_quoting_and_mailbox_names() -> None:
    assert r.quoted_or_literal("ü") == b"{2}\r\n\xc3\xbc"
    assert r.quoted_or_literal("ü", utf8=True) == b'"\xc3\xbc"'
    assert r.mailbox_name("台北", utf8=False) == b"&U,BTFw-"
    assert r.mailbox_name("inbox", utf8=False) == b"INBOX"
    assert r.status_response("blurdybloop", {"MESSAGES": 231, "UIDNEXT": 44292}, utf8=False) == (
        b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n"
    )
    assert r.sequence_text([1, 2, 3, 5, 7, 8]) == "1:3,5,7:8"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=15), st.booleans())
def test_session_takes_any_bytes(chunks: list[bytes], login: bool) -> None:
    limits = ImapLimits(max_line=1024, max_command=4096, max_literal=2048, max_append=4096)
    backend = MemoryBackend()
    backend.append("INBOX", MESSAGE, frozenset(), None)
    session = ImapSession(backend, limits, tls=True)
    if login:
        session.receive_data(b"L LOGIN alice secret\r\ns SELECT INBOX\r\n")
    for chunk in chunks:
        events = session.receive_data(chunk)
        session.data_to_send()
        if any(isinstance(e, CloseRequested) for e in events):
            break
