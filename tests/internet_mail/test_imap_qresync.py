"""QRESYNC ([RFC 7162] 3.2) in the session core over the in-memory backend: VANISHED
instead of EXPUNGE once enabled, ``SELECT ... (QRESYNC (...))`` and ``UID FETCH ...
(CHANGEDSINCE m VANISHED)`` reporting ``VANISHED (EARLIER)``, HIGHESTMODSEQ rising when
messages leave, byte for byte."""

from __future__ import annotations

import re

from internet_mail.imap import ImapSession
from internet_mail.imap.testing import MemoryBackend

MESSAGE = b"From: a@example.org\r\nSubject: hello\r\n\r\nbody\r\n"


def _login(backend: MemoryBackend) -> ImapSession:
    session = ImapSession(backend, tls=True)
    session.data_to_send()
    session.receive_data(b"L LOGIN alice secret\r\n")
    assert b"L OK" in session.data_to_send()
    return session


def _say(session: ImapSession, line: bytes) -> bytes:
    session.receive_data(line)
    return session.data_to_send()


def _filled(count: int) -> MemoryBackend:
    backend = MemoryBackend()
    for _ in range(count):
        backend.append("INBOX", MESSAGE, frozenset(), None)
    return backend


def _highest(session: ImapSession) -> int:
    found = re.search(
        rb"HIGHESTMODSEQ (\d+)", _say(session, b"st STATUS INBOX (HIGHESTMODSEQ)\r\n")
    )
    assert found is not None
    return int(found.group(1))


def test_enabled_qresync_announces_expunges_as_vanished() -> None:
    backend = _filled(5)
    session = _login(backend)
    assert _say(session, b"e ENABLE QRESYNC\r\n") == (
        b"* ENABLED QRESYNC\r\ne OK ENABLE completed\r\n"
    )
    _say(session, b"s SELECT INBOX\r\n")
    _say(session, b"d STORE 2,4 +FLAGS.SILENT (\\Deleted)\r\n")
    assert _say(session, b"x EXPUNGE\r\n") == b"* VANISHED 2,4\r\nx OK EXPUNGE completed\r\n"
    # UID EXPUNGE too; the sequence numbers moved up (3 messages left: uids 1, 3, 5).
    _say(session, b"d STORE 1:3 +FLAGS.SILENT (\\Deleted)\r\n")
    assert _say(session, b"u UID EXPUNGE 3:5\r\n") == (
        b"* VANISHED 3,5\r\nu OK EXPUNGE completed\r\n"
    )
    assert _say(session, b"f FETCH 1 (UID)\r\n") == b"* 1 FETCH (UID 1)\r\nf OK FETCH completed\r\n"


def test_without_qresync_expunges_stay_expunge_responses() -> None:
    session = _login(_filled(5))
    _say(session, b"s SELECT INBOX\r\n")
    _say(session, b"d STORE 2,4 +FLAGS.SILENT (\\Deleted)\r\n")
    assert _say(session, b"x EXPUNGE\r\n") == (
        b"* 4 EXPUNGE\r\n* 2 EXPUNGE\r\nx OK EXPUNGE completed\r\n"
    )


def test_another_connections_expunge_and_move_arrive_as_vanished() -> None:
    backend = _filled(4)
    session = _login(backend)
    _say(session, b"e ENABLE QRESYNC\r\n")
    _say(session, b"s SELECT INBOX\r\n")
    other = _login(backend.connect())
    _say(other, b"s SELECT INBOX\r\n")
    _say(other, b"d UID STORE 3 +FLAGS.SILENT (\\Deleted)\r\n")
    _say(other, b"x EXPUNGE\r\n")
    # No VANISHED during a FETCH by sequence number (RFC 9051 7.5.1) ...
    assert _say(session, b"f FETCH 1 (UID)\r\n") == b"* 1 FETCH (UID 1)\r\nf OK FETCH completed\r\n"
    # ... but at the next command that allows it.
    assert _say(session, b"n NOOP\r\n") == b"* VANISHED 3\r\nn OK NOOP completed\r\n"
    # The session's own MOVE: VANISHED before the tagged OK (RFC 6851 3.3).
    assert _say(session, b"m UID MOVE 1 Trash\r\n") == (
        b"* OK [COPYUID 1003 1 1] moved\r\n* VANISHED 1\r\nm OK MOVE completed\r\n"
    )


def test_highestmodseq_rises_when_messages_leave() -> None:
    backend = _filled(3)
    session = _login(backend)
    before = _highest(session)
    _say(session, b"s SELECT INBOX\r\n")
    _say(session, b"d STORE 3 +FLAGS.SILENT (\\Deleted)\r\n")
    marked = _highest(session)
    _say(session, b"x EXPUNGE\r\n")
    assert before < marked < _highest(session)
    moved = _highest(session)
    _say(session, b"m MOVE 1 Trash\r\n")
    assert _highest(session) > moved


def test_select_qresync_reports_vanished_earlier_and_changed_flags() -> None:
    backend = _filled(6)
    session = _login(backend)
    _say(session, b"e ENABLE QRESYNC\r\n")
    reply = _say(session, b"s SELECT INBOX\r\n")
    validity = int(re.search(rb"UIDVALIDITY (\d+)", reply).group(1))  # type: ignore[union-attr]
    seen = int(re.search(rb"HIGHESTMODSEQ (\d+)", reply).group(1))  # type: ignore[union-attr]
    _say(session, b"d UID STORE 2,3,5 +FLAGS.SILENT (\\Deleted)\r\n")
    _say(session, b"x EXPUNGE\r\n")
    _say(session, b"f UID STORE 6 +FLAGS.SILENT (\\Flagged)\r\n")
    _say(session, b"c UNSELECT\r\n")
    reply = _say(session, b"s SELECT INBOX (QRESYNC (%d %d))\r\n" % (validity, seen))
    lines = reply.split(b"\r\n")
    at = next(i for i, ln in enumerate(lines) if b"HIGHESTMODSEQ" in ln)
    top = int(re.search(rb"HIGHESTMODSEQ (\d+)", lines[at]).group(1))  # type: ignore[union-attr]
    assert lines[at + 1] == b"* VANISHED (EARLIER) 2:3,5"
    assert lines[at + 2] == b"* 3 FETCH (UID 6 FLAGS (\\Flagged) MODSEQ (%d))" % top
    assert lines[at + 3] == b"s OK [READ-WRITE] SELECT completed"
    # Known UIDs limit what is reported; the 3-message list is ignored as a hint.
    reply = _say(session, b"s EXAMINE INBOX (QRESYNC (%d %d 1:3 (1:2 1:2)))\r\n" % (validity, seen))
    assert reply.startswith(b"* OK [CLOSED] previous mailbox closed\r\n")
    assert b"* VANISHED (EARLIER) 2:3\r\n" in reply
    # A client that saw the removal is not told again; a stale UIDVALIDITY gets nothing.
    assert b"VANISHED" not in _say(
        session, b"s SELECT INBOX (QRESYNC (%d %d))\r\n" % (validity, top)
    )
    reply = _say(session, b"s SELECT INBOX (QRESYNC (%d 1))\r\n" % (validity + 1))
    assert b"VANISHED" not in reply and b"FETCH" not in reply


def test_qresync_parameters_need_enable() -> None:
    session = _login(_filled(2))
    assert _say(session, b"s SELECT INBOX (QRESYNC (1 1))\r\n") == (
        b"s BAD ENABLE QRESYNC first\r\n"
    )
    _say(session, b"s SELECT INBOX\r\n")
    assert _say(session, b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n") == (
        b"f BAD ENABLE QRESYNC first\r\n"
    )


def test_uid_fetch_vanished_modifier() -> None:
    backend = _filled(8)
    session = _login(backend)
    _say(session, b"e ENABLE QRESYNC\r\n")
    _say(session, b"s SELECT INBOX\r\n")
    _say(session, b"d UID STORE 1,4,7,8 +FLAGS.SILENT (\\Deleted)\r\n")
    since = _highest(session)
    _say(session, b"x EXPUNGE\r\n")
    _say(session, b"f UID STORE 5 +FLAGS.SILENT (\\Seen)\r\n")
    top = _highest(session)
    # RFC 7162 3.2.6's shape: VANISHED (EARLIER) for the set's UIDs, then the changes.
    assert _say(session, b"a UID FETCH 3:7 (FLAGS) (CHANGEDSINCE %d VANISHED)\r\n" % since) == (
        b"* VANISHED (EARLIER) 4,7\r\n"
        b"* 3 FETCH (FLAGS (\\Seen) UID 5 MODSEQ (%d))\r\n"
        b"a OK FETCH completed\r\n" % top
    )
    # "*" reaches the largest UID ever used, expunged ones included.
    assert _say(session, b"b UID FETCH 6:* (FLAGS) (CHANGEDSINCE %d VANISHED)\r\n" % since) == (
        b"* VANISHED (EARLIER) 7:8\r\nb OK FETCH completed\r\n"
    )
    assert _say(session, b"c UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)\r\n" % top) == (
        b"c OK FETCH completed\r\n"
    )
