"""ENVELOPE and BODYSTRUCTURE details that tests/test_imap_dovecot_compare.py found
different from Dovecot's, pinned on ``internet_mail.imap.message`` directly."""

from __future__ import annotations

from internet_mail.imap.message import Part

DIGEST = (
    b"From: digest@example.org\r\nSubject: Digest\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/digest; boundary="d"\r\n\r\n'
    b"--d\r\n\r\nFrom: one@example.org\r\nSubject: first\r\n\r\nfirst body\r\n"
    b"--d--\r\n"
)


def test_a_part_that_starts_with_an_empty_line_has_an_empty_header() -> None:
    # RFC 2046 5.1.1: a body part may have no header fields; in a digest it is then a
    # message/rfc822 whose own header follows the empty line.
    part = Part.parse(DIGEST).children[0]
    assert part.header == b"\r\n"
    assert part.body == b"From: one@example.org\r\nSubject: first\r\n\r\nfirst body"
    assert part.message is not None and part.message.get("SUBJECT") == b"first"
    structure = Part.parse(DIGEST).body_structure()
    assert structure.startswith(b'(("message" "rfc822" NIL NIL NIL "7bit" 51 (NIL "first" ')


def test_a_headerless_message_keeps_its_text_as_the_body() -> None:
    part = Part.parse(b"\r\nFrom: x@y\r\n\r\nbody\r\n")
    assert part.header == b"\r\n" and part.body == b"From: x@y\r\n\r\nbody\r\n"


def test_a_quoted_display_name_loses_its_quotes_and_escapes() -> None:
    raw = b'From: (c) "Quoted \\"Name\\"" <q@example.com>\r\nTo: "A, B" <ab@example.com>\r\n\r\n'
    envelope = Part.parse(raw).envelope()
    assert b'(("Quoted \\"Name\\"" NIL "q" "example.com"))' in envelope
    assert b'(("A, B" NIL "ab" "example.com"))' in envelope


def test_a_text_part_without_charset_gets_the_default_after_its_parameters() -> None:
    # RFC 2045 5.2: text without a charset parameter is us-ascii.
    raw = b"Content-Type: text/x-diff; name=fix.diff\r\n\r\n--- a\r\n+++ b\r\n"
    structure = Part.parse(raw).body_structure()
    assert structure.startswith(b'("text" "x-diff" ("name" "fix.diff" "charset" "us-ascii") ')


def test_lines_are_the_line_ends() -> None:
    assert Part.parse(b"Subject: a\r\n\r\nabc").body_structure(False).endswith(b" 3 0)")
    assert Part.parse(b"Subject: a\r\n\r\nabc\r\ndef").body_structure(False).endswith(b" 8 1)")
    assert Part.parse(b"Subject: a\r\n\r\nabc\r\n").body_structure(False).endswith(b" 5 1)")
    # The CRLF before a boundary is the boundary's (RFC 2046 5.1.1): "one" has no line end.
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n\r\n--b--\r\n"
    )
    structure = Part.parse(raw).body_structure(False)
    assert b'"7bit" 3 0)' in structure and b'"7bit" 5 1)' in structure
