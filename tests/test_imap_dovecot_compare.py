"""Our IMAP's BODYSTRUCTURE and ENVELOPE against a reference no one here wrote: Dovecot.

The same messages (tests/internet_mail/mime_corpus.py, plus a few built here with the
standard library's ``email`` package) are appended to a private Dovecot
(bench/dovecot_harness.py) and to our IMAP core, then ``FETCH 1:* (BODYSTRUCTURE
ENVELOPE)`` is asked of both through Python's ``imaplib``. The answers are parsed,
named field by field, normalised only where RFC 9051 leaves the server a choice (each
normalisation below cites its clause) and compared. Every difference is named
("<message>: BODYSTRUCTURE part 2 subtype: ours ..., dovecot ...").

Both servers get the messages by ``APPEND`` through ``imaplib``, which sends them with
CRLF line ends (as SMTP and LMTP deliver them), so both hold the same bytes.

Our side, twice: the session core (``internet_mail.imap.ImapSession``) over the
in-memory backend, driven by a thread on a socketpair as in
tests/internet_mail/test_imap_imaplib.py (the same bytes as Dovecot's APPEND); and the
whole path, a real ``serve`` that got each message through its SMTP listener (stored
in the MAPI store, read back over IMAP with STARTTLS) against Dovecot's LMTP delivery
into its Maildir.

Differences we know and keep are in :data:`KNOWN`, each with the reason; the test
fails on a difference not listed there, and on a listed one that is gone.
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import socket
import sys
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
import trio
from mail_helpers import client_context
from serve_helpers import start_server

from bench.dovecot_harness import Dovecot, dovecot_available
from internet_mail.imap import CloseRequested, ImapSession
from internet_mail.imap.testing import MemoryBackend
from mapi_anywhere.config import ImapSection, SmtpSection

sys.path.insert(0, str(Path(__file__).resolve().parent / "internet_mail"))
from mime_corpus import PDF, PNG, corpus

AVAILABLE, REASON = dovecot_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=REASON)

USER, PASSWORD = "alice", "secret"

# -- the messages ---------------------------------------------------------------------------


def _built() -> dict[str, bytes]:
    """Messages made with ``email.message`` (policy SMTP: CRLF line ends)."""
    out: dict[str, bytes] = {}

    alt = EmailMessage()
    alt["From"] = "Ann Example <ann@example.com>"
    alt["To"] = "Bob <bob@example.org>, carol@example.org"
    alt["Subject"] = "alternative"
    alt["Date"] = "Wed, 02 Dec 2026 09:00:00 +0100"
    alt["Message-ID"] = "<alt-1@example.com>"
    alt.set_content("plain text\n")
    alt.add_alternative("<p>html text</p>\n", subtype="html")
    out["built_alternative"] = alt.as_bytes(policy=SMTP)

    inner = EmailMessage()
    inner["From"] = "Inner Sender <inner@example.net>"
    inner["To"] = "Someone <someone@example.net>"
    inner["Subject"] = "the forwarded one"
    inner["Date"] = "Tue, 01 Dec 2026 08:00:00 +0000"
    inner["Message-ID"] = "<inner-1@example.net>"
    inner.set_content("inner body\n")
    inner.add_attachment(PDF, maintype="application", subtype="pdf", filename="inner.pdf")
    nested = EmailMessage()
    nested["From"] = "Outer <outer@example.com>"
    nested["To"] = "Target <target@example.org>"
    nested["Cc"] = "Copy <copy@example.org>"
    nested["Subject"] = "nested mixed with a message"
    nested["Date"] = "Wed, 02 Dec 2026 10:00:00 +0000"
    nested["Message-ID"] = "<nested-1@example.com>"
    nested["In-Reply-To"] = "<inner-1@example.net>"
    nested.set_content("see attached\n")
    sub = EmailMessage()
    sub.set_content("a part of the inner mixed\n")
    sub.add_attachment(PNG, maintype="image", subtype="png", filename="dot.png")
    nested.add_attachment(sub)  # a multipart/mixed inside the multipart/mixed
    nested.add_attachment(inner)  # message/rfc822
    out["built_nested_mixed_rfc822"] = nested.as_bytes(policy=SMTP)

    words = EmailMessage()
    words["From"] = "Jürgen Müller <juergen@example.de>"
    words["To"] = "Zoë <zoe@example.dk>, 日本 太郎 <taro@example.jp>"
    words["Subject"] = "Grüße aus Köln \u2013 naïve café"
    words["Date"] = "Thu, 03 Dec 2026 11:00:00 +0100"
    words["Message-ID"] = "<words-1@example.de>"
    words.set_content("Grüße\n", charset="utf-8")
    out["built_encoded_words"] = words.as_bytes(policy=SMTP)

    rfc2231 = EmailMessage()
    rfc2231["From"] = "a@example.com"
    rfc2231["To"] = "b@example.com"
    rfc2231["Subject"] = "RFC 2231 file names"
    rfc2231.set_content("two files\n")
    rfc2231.add_attachment(b"x" * 100, maintype="application", subtype="octet-stream",
                           filename=("utf-8", "de", "Übersicht 2026.bin"))  # fmt: skip
    rfc2231.add_attachment(b"y" * 100, maintype="text", subtype="csv",
                           filename="a very long file name " * 4 + ".csv")  # fmt: skip
    out["built_rfc2231_params"] = rfc2231.as_bytes(policy=SMTP)

    out["built_broken_boundary"] = (
        b"From: a@example.com\r\nTo: b@example.com\r\nSubject: wrong boundary\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="right"\r\n\r\n'
        b"preamble\r\n--wrong\r\nContent-Type: text/plain\r\n\r\nnot a part\r\n"
        b"--right\r\nContent-Type: text/html\r\n\r\n<b>a part</b>\r\n--wrong--\r\n"
    )
    return out


def messages() -> dict[str, bytes]:
    return {**corpus(), **_built()}


# -- parsing imaplib's answers ------------------------------------------------------------

_TOKEN = re.compile(rb'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|\{(\d+)\}\r\n|([^\s()"{]+))', re.S)


def _flatten(data: list[Any]) -> bytes:
    """imaplib's FETCH data back into one response text (literals in place)."""
    out = b""
    for item in data:
        if isinstance(item, tuple):
            out += item[0] + b"\r\n" + item[1]
        elif item is not None:
            out += item + b"\r\n"
    return out


def parse_sexp(text: bytes) -> list[Any]:
    """The parenthesised lists, strings (bytes), NIL (None) and atoms (str) of ``text``."""
    stack: list[list[Any]] = [[]]
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos:].strip() == b"":
                break
            raise ValueError(f"cannot parse at {text[pos : pos + 40]!r}")
        pos = m.end()
        if m[1]:
            stack.append([])
        elif m[2]:
            done = stack.pop()
            stack[-1].append(done)
        elif m[3] is not None:
            stack[-1].append(re.sub(rb"\\(.)", rb"\1", m[3]))
        elif m[4] is not None:
            size = int(m[4])
            stack[-1].append(text[pos : pos + size])
            pos += size
        else:
            atom = m[5].decode()
            stack[-1].append(None if atom.upper() == "NIL" else atom)
    return stack[0]


def fetch_structures(imap: imaplib.IMAP4) -> list[dict[str, Any]]:
    """``FETCH 1:* (BODYSTRUCTURE ENVELOPE)``: one dict a message, in sequence order."""
    typ, data = imap.fetch("1:*", "(BODYSTRUCTURE ENVELOPE)")
    assert typ == "OK", data
    items = parse_sexp(_flatten(data))
    out: list[dict[str, Any]] = []
    for seq, attrs in zip(items[::2], items[1::2], strict=True):
        assert int(seq) == len(out) + 1
        pairs = dict(zip(attrs[::2], attrs[1::2], strict=True))
        out.append({str(k).upper(): v for k, v in pairs.items()})
    return out


# -- naming and normalising ---------------------------------------------------------------
#
# Normalisations, each where RFC 9051 (or the MIME RFCs it defers to) leaves a choice:
#
# N1  Media type, subtype, parameter names, transfer encoding and disposition type are
#     case-insensitive (RFC 2045 5.1 and 6.1, RFC 2183 2); RFC 9051 7.5.2 passes them
#     through as strings without fixing a case (its examples use both). Lowercased.
# N2  A string may be sent quoted or as a literal (RFC 9051 4.3): the parser reads both
#     to the same bytes.
# N3  Trailing body extension data may be left out (RFC 9051 7.5.2 "Extension data ...
#     can be returned with a BODYSTRUCTURE fetch"; body-ext-1part and body-ext-mpart in
#     section 9 make each trailing item optional): a missing trailing item is NIL.
# N4  RFC 2231 continuations (``filename*0*``, ``filename*1*``) are one parameter split
#     for line length (RFC 2231 3); RFC 9051 7.5.2 passes parameters through "as
#     defined in [MIME-IMB]" and does not say whether a server joins them (Dovecot
#     does, we do not). Joined, in order, under ``name*`` when the first piece is
#     extended (``*0*``), else ``name``, at the place of the first piece.

_ENVELOPE = ("date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc",
             "in-reply-to", "message-id")  # fmt: skip
_BASIC = ("type", "subtype", "params", "id", "description", "encoding", "size")
_EXT_1 = ("md5", "disposition", "language", "location")
_EXT_M = ("params", "disposition", "language", "location")


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, bytes) else value


_CONTINUED = re.compile(rb"^(.+)\*(\d+)(\*?)$")


def _params(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    pairs = [(_lower(k), v) for k, v in zip(value[::2], value[1::2], strict=False)]  # N1
    out: list[Any] = []
    pieces: dict[bytes, list[tuple[int, bytes, bytes]]] = {}
    for key, val in pairs:
        m = _CONTINUED.match(key) if isinstance(key, bytes) else None
        if m is None:
            out.append((key, val))
            continue
        if m[1] not in pieces:
            pieces[m[1]] = []
            out.append(m[1])  # the joined parameter goes here (N4)
        pieces[m[1]].append((int(m[2]), m[3], val or b""))
    for i, item in enumerate(out):
        if isinstance(item, bytes):
            parts = sorted(pieces[item])
            name = item + b"*" if parts[0][1] else item
            out[i] = (name, b"".join(val for _, _, val in parts))
    return out


def _disposition(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        return value
    return [_lower(value[0]), _params(value[1]) if len(value) > 1 else None]  # N1


def name_envelope(env: list[Any]) -> dict[str, Any]:
    named = dict(zip(_ENVELOPE, env, strict=True))
    for key in ("from", "sender", "reply-to", "to", "cc", "bcc"):
        if isinstance(named[key], list):
            named[key] = [tuple(addr) for addr in named[key]]
    return named


def name_body(body: list[Any], path: str = "") -> dict[str, Any]:
    """A BODYSTRUCTURE as named fields; parts keyed by their section number."""
    if body and isinstance(body[0], list):  # multipart: parts, then the subtype
        count = next(i for i, item in enumerate(body) if not isinstance(item, list))
        named: dict[str, Any] = {"subtype": _lower(body[count])}
        for i, child in enumerate(body[:count], 1):
            named[f"part {path}{i}"] = name_body(child, f"{path}{i}.")
        ext = body[count + 1 :] + [None] * len(_EXT_M)  # N3
        named.update(zip(_EXT_M, ext, strict=False))
        named["params"] = _params(named["params"])
        named["disposition"] = _disposition(named["disposition"])
        return named
    named = dict(zip(_BASIC, body, strict=False))
    for key in ("type", "subtype", "encoding"):
        named[key] = _lower(named[key])  # N1
    named["params"] = _params(named["params"])
    rest = body[len(_BASIC) :]
    if (named["type"], named["subtype"]) in ((b"message", b"rfc822"), (b"message", b"global")):
        named["envelope"] = name_envelope(rest[0])
        named["message"] = name_body(rest[1], path)
        named["lines"] = rest[2]
        rest = rest[3:]
    elif named["type"] == b"text":
        named["lines"] = rest[0]
        rest = rest[1:]
    ext = rest + [None] * len(_EXT_1)  # N3
    named.update(zip(_EXT_1, ext, strict=False))
    named["disposition"] = _disposition(named["disposition"])
    return named


def differences(name: str, ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    out: list[str] = []

    def walk(where: str, a: Any, b: Any) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in list(a) + [k for k in b if k not in a]:
                walk(f"{where} {key}", a.get(key, "<absent>"), b.get(key, "<absent>"))
        elif a != b:
            out.append(f"{name}:{where}: ours {a!r}, dovecot {b!r}")

    walk(" ENVELOPE", name_envelope(ours["ENVELOPE"]), name_envelope(theirs["ENVELOPE"]))
    walk(" BODYSTRUCTURE", name_body(ours["BODYSTRUCTURE"]), name_body(theirs["BODYSTRUCTURE"]))
    return out


#: Differences we keep, by the start of their description, with the reason.
KNOWN: dict[str, str] = {
    "broken_boundary_never_used: BODYSTRUCTURE": (
        "a multipart/mixed whose boundary never occurs: Dovecot answers a multipart "
        "with one empty text/plain part (the text is a preamble, RFC 2046 5.1.1); we "
        "describe the body as one text/plain part, so a client shows the text. "
        "RFC 9051 has no rule for broken MIME; both are valid syntax"
    ),
    "obsolete_syntax_comments: ENVELOPE to:": (
        "'plain@example.com (Plain Person)': Dovecot takes the comment as the name; "
        "RFC 9051 7.5.2 defines addr-name as the RFC 5322 phrase, which this address "
        "lacks, so we answer NIL"
    ),
}


# -- the two servers --------------------------------------------------------------------------


def _append_all(imap: imaplib.IMAP4, msgs: dict[str, bytes]) -> list[str]:
    """APPEND each message to INBOX; returns the names of those the server took."""
    taken = []
    for name, raw in msgs.items():
        try:
            typ, _ = imap.append("INBOX", "", None, raw)
        except imaplib.IMAP4.error:
            continue
        if typ == "OK":
            taken.append(name)
    return taken


class _Imaplib(imaplib.IMAP4):
    """imaplib over an already connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock_given = sock
        super().__init__("in-process")

    def open(self, host: str = "", port: int = 143, timeout: float | None = None) -> None:
        self.host = host
        self.port = port
        self.sock = self._sock_given
        self.file = self.sock.makefile("rb")


def _serve(sock: socket.socket, session: ImapSession) -> None:
    with sock:
        sock.sendall(session.data_to_send())
        while True:
            data = sock.recv(65536)
            events = session.receive_data(data)
            sock.sendall(session.data_to_send())
            if not data or any(isinstance(e, CloseRequested) for e in events):
                return


def _deliver_all(port: int, msgs: dict[str, bytes], *, lmtp: bool) -> list[str]:
    """Deliver each message to USER by SMTP (or LMTP); returns the names taken."""
    taken = []
    kind = smtplib.LMTP if lmtp else smtplib.SMTP
    with kind("127.0.0.1", port, timeout=30) as client:
        for name, raw in msgs.items():
            try:
                # CRLF line ends, as imaplib's APPEND sends them (our SMTP refuses a
                # bare LF: the smuggling defence of docs/smtp.md).
                data = re.sub(rb"\r?\n", b"\r\n", raw)
                client.sendmail("sender@example.net", [f"{USER}@example.org"], data)
            except smtplib.SMTPException:
                continue
            taken.append(name)
    return taken


def dovecot_answers(
    msgs: dict[str, bytes], *, lmtp: bool = False
) -> tuple[list[str], list[dict[str, Any]]]:
    with Dovecot({USER: PASSWORD}) as dove:
        imap = imaplib.IMAP4("127.0.0.1", dove.imap_port, timeout=30)
        try:
            imap.login(USER, PASSWORD)
            taken = (
                _deliver_all(dove.lmtp_port, msgs, lmtp=True) if lmtp else _append_all(imap, msgs)
            )
            imap.select("INBOX")
            return taken, fetch_structures(imap)
        finally:
            imap.logout()


def our_answers(msgs: dict[str, bytes]) -> tuple[list[str], list[dict[str, Any]]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(30)
    theirs.settimeout(30)
    session = ImapSession(MemoryBackend(USER, PASSWORD))
    session.tls_established()  # faked: this test is about the answers, not the transport
    thread = threading.Thread(target=_serve, args=(theirs, session), daemon=True)
    thread.start()
    try:
        imap = _Imaplib(ours)
        imap.login(USER, PASSWORD)
        taken = _append_all(imap, msgs)
        imap.select("INBOX")
        answers = fetch_structures(imap)
        imap.logout()
        return taken, answers
    finally:
        ours.close()
        thread.join(10)


@pytest.fixture(scope="module")
def answers() -> Iterator[dict[str, tuple[list[str], list[dict[str, Any]]]]]:
    msgs = messages()
    yield {"dovecot": dovecot_answers(msgs), "ours": our_answers(msgs)}


# -- the tests ---------------------------------------------------------------------------------


def test_the_same_messages_are_taken(
    answers: dict[str, tuple[list[str], list[dict[str, Any]]]],
) -> None:
    taken_ours, _ = answers["ours"]
    taken_theirs, _ = answers["dovecot"]
    assert set(messages()) - set(taken_theirs) <= {"empty"}  # Dovecot refuses 0 bytes
    assert set(taken_theirs) <= set(taken_ours)


def _compare(
    ours: tuple[list[str], list[dict[str, Any]]], theirs: tuple[list[str], list[dict[str, Any]]]
) -> None:
    taken_ours, answers_ours = ours
    taken_theirs, answers_theirs = theirs
    ours_by_name = dict(zip(taken_ours, answers_ours, strict=True))
    found: list[str] = []
    for name, theirs_one in zip(taken_theirs, answers_theirs, strict=True):
        if name in ours_by_name:
            found += differences(name, ours_by_name[name], theirs_one)
    unexplained = [d for d in found if not any(d.startswith(k) for k in KNOWN)]
    stale = [k for k in KNOWN if not any(d.startswith(k) for d in found)]
    assert unexplained == [], "\n".join(unexplained)
    assert stale == [], f"listed in KNOWN but no longer different: {stale}"


def test_bodystructure_and_envelope_match_dovecot(
    answers: dict[str, tuple[list[str], list[dict[str, Any]]]],
) -> None:
    _compare(answers["ours"], answers["dovecot"])


def _serve_answers(smtp_port: int, imap_port: int, msgs: dict[str, bytes]) -> Any:
    taken = _deliver_all(smtp_port, msgs, lmtp=False)
    with imaplib.IMAP4("127.0.0.1", imap_port, timeout=30) as imap:
        imap.starttls(client_context())
        imap.login(USER, PASSWORD)
        imap.select("INBOX")
        return taken, fetch_structures(imap)


async def test_mail_delivered_to_serve_matches_dovecots_lmtp(nursery: trio.Nursery,
                                                           tmp_path: Path) -> None:  # fmt: skip
    """The whole path: each message delivered by SMTP to a real ``serve`` (stored,
    converted, its MIME original kept) and by LMTP to Dovecot, then fetched by IMAP
    from both. Each server adds its own trace fields at the top; ENVELOPE and
    BODYSTRUCTURE do not show them."""
    msgs = messages()
    server = await start_server(
        nursery, tmp_path / "data", {USER: PASSWORD}, emails=True,
        smtp=SmtpSection(port=0), imap=ImapSection(port=0, tls_port=0),
    )  # fmt: skip
    with trio.fail_after(120):
        theirs = await trio.to_thread.run_sync(lambda: dovecot_answers(msgs, lmtp=True))
        ours = await trio.to_thread.run_sync(
            _serve_answers, server.smtp_port, server.imap_port, msgs
        )
    assert set(msgs) - set(theirs[0]) == set(), "Dovecot refused some"
    assert set(msgs) - set(ours[0]) == set(), "serve refused some"
    _compare(ours, theirs)
