"""BINARY ([RFC 3516]) in the session core: ``BINARY[part]``, ``BINARY.PEEK[part]`` and
``BINARY.SIZE[part]`` answer the part's content with its Content-Transfer-Encoding
removed (base64, quoted-printable decoded; 7bit/8bit/binary as they are), partial
ranges apply to the decoded bytes, data with NUL goes as a ``literal8``, and an
encoding the server does not know answers ``NO [UNKNOWN-CTE]``."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from internet_mail.imap import ImapSession
from internet_mail.imap.message import Part, transfer_decoded
from internet_mail.imap.testing import MemoryBackend

PAYLOAD = bytes(range(256)) * 3  # NUL and every other octet
TEXT = "Grüße, naïve café — ünïcödé\r\nline two = equals\r\n".encode()
QP = (
    b"Gr=C3=BC=C3=9Fe, na=C3=AFve caf=C3=A9 =E2=80=94 =C3=BCn=C3=AFc=C3=B6d=C3=A9\r\n"
    b"line two =3D equals=\r\n\r\n"
)
B64 = base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n")

MESSAGE = (
    b"From: a@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + QP + b"\r\n"
    b"--XX\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: BASE64\r\n\r\n" + B64 + b"\r\n"
    b"--XX\r\nContent-Type: text/plain\r\n\r\nplain seven bit\r\n"
    b"--XX\r\nContent-Type: application/x-thing\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n`\r\nend\r\n"
    b"--XX--\r\n"
)
SINGLE = (
    b"From: a@example.org\r\nContent-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"hello\x00world") + b"\r\n"
)


def _session() -> ImapSession:
    backend = MemoryBackend()
    backend.append("INBOX", MESSAGE, frozenset(), None)
    backend.append("INBOX", SINGLE, frozenset(), None)
    session = ImapSession(backend, tls=True)
    session.data_to_send()
    session.receive_data(b"L LOGIN alice secret\r\nS SELECT INBOX\r\n")
    assert b"S OK" in session.data_to_send()
    return session


def _say(session: ImapSession, line: bytes) -> bytes:
    session.receive_data(line)
    return session.data_to_send()


def test_quoted_printable_part_is_decoded() -> None:
    session = _session()
    assert _say(session, b"a FETCH 1 (BINARY.PEEK[1])\r\n") == (
        b"* 1 FETCH (BINARY[1] {%d}\r\n%s)\r\na OK FETCH completed\r\n" % (len(TEXT), TEXT)
    )
    assert _say(session, b"b FETCH 1 (BINARY.SIZE[1])\r\n") == (
        b"* 1 FETCH (BINARY.SIZE[1] %d)\r\nb OK FETCH completed\r\n" % len(TEXT)
    )
    # BODY[1] still gives the bytes as stored.
    assert QP in _say(session, b"c FETCH 1 (BODY.PEEK[1])\r\n")


def test_base64_part_with_nul_goes_as_literal8() -> None:
    session = _session()
    assert _say(session, b"a FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])\r\n") == (
        b"* 1 FETCH (BINARY[2] ~{%d}\r\n%s BINARY.SIZE[2] %d)\r\na OK FETCH completed\r\n"
        % (len(PAYLOAD), PAYLOAD, len(PAYLOAD))
    )
    # A partial range counts decoded octets; one without NUL is a plain literal.
    assert _say(session, b"b FETCH 1 (BINARY.PEEK[2]<65.10>)\r\n") == (
        b"* 1 FETCH (BINARY[2]<65> {10}\r\nABCDEFGHIJ)\r\nb OK FETCH completed\r\n"
    )
    assert _say(session, b"c FETCH 1 (BINARY.PEEK[2]<0.2>)\r\n") == (
        b"* 1 FETCH (BINARY[2]<0> ~{2}\r\n\x00\x01)\r\nc OK FETCH completed\r\n"
    )


def test_identity_encodings_single_part_and_missing_parts() -> None:
    session = _session()
    assert _say(session, b"a FETCH 1 (BINARY.PEEK[3])\r\n") == (
        b"* 1 FETCH (BINARY[3] {15}\r\nplain seven bit)\r\na OK FETCH completed\r\n"
    )
    # A message that is not multipart: part 1 is its body, decoded.
    assert _say(session, b"b FETCH 2 (BINARY.PEEK[1] BINARY.SIZE[1])\r\n") == (
        b"* 2 FETCH (BINARY[1] ~{11}\r\nhello\x00world BINARY.SIZE[1] 11)\r\n"
        b"b OK FETCH completed\r\n"
    )
    assert _say(session, b"c FETCH 1 (BINARY.PEEK[9])\r\n") == (
        b"* 1 FETCH (BINARY[9] NIL)\r\nc OK FETCH completed\r\n"
    )


def test_unknown_encoding_answers_unknown_cte() -> None:
    session = _session()
    assert _say(session, b"a FETCH 1 (BINARY.PEEK[4])\r\n") == (
        b"a NO [UNKNOWN-CTE] unknown Content-Transfer-Encoding\r\n"
    )
    assert _say(session, b"b FETCH 1 (BINARY.SIZE[4])\r\n") == (
        b"b NO [UNKNOWN-CTE] unknown Content-Transfer-Encoding\r\n"
    )


def test_binary_without_peek_sets_seen() -> None:
    session = _session()
    out = _say(session, b"a FETCH 1 (BINARY[3])\r\n")
    assert b"\\Seen" in out and out.endswith(b"a OK FETCH completed\r\n")


def _part(cte: bytes, body: bytes) -> Part:
    return Part.parse(b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + body)


def test_lenient_decoding() -> None:
    assert transfer_decoded(_part(b"base64", b"aGVs\r\nbG8*!=\r\n")) == b"hello"
    assert transfer_decoded(_part(b"base64", b"aGVsbG8")) == b"hello"  # padding missing
    assert transfer_decoded(_part(b"base64", b"aGVsbG8=trailing")) == b"hello"
    assert transfer_decoded(_part(b"base64", b"aGVsbA5")) == b"hell\x0e"
    assert transfer_decoded(_part(b"base64", b"aGVsb")) == b"hel"  # lone final char
    assert transfer_decoded(_part(b"Quoted-Printable", b"a=3D=\r\nb =ZZ\r\n")) == b"a=b =ZZ\r\n"
    assert transfer_decoded(_part(b" 8bit ", b"\xff\x00")) == b"\xff\x00"
    assert transfer_decoded(_part(b"x-gzip", b"data")) is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500), st.sampled_from([b"base64", b"quoted-printable", b"7bit"]))
def test_any_body_decodes_or_is_refused_cleanly(body: bytes, cte: bytes) -> None:
    out = transfer_decoded(_part(cte, body))
    assert isinstance(out, bytes) and len(out) <= len(body)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_base64_round_trip(data: bytes) -> None:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    assert transfer_decoded(_part(b"base64", encoded)) == data
