"""A message's MIME structure for FETCH: ENVELOPE, BODYSTRUCTURE and body sections.

Theory of operation ([RFC 9051] 6.4.5, 7.5.2; [RFC 2045]/[RFC 2046] for MIME): the
stored message is bytes; ``Part.parse`` splits header from body, reads Content-Type and
its parameters, and for ``multipart/*`` splits the body at the boundary (parts nested
at most ``MAX_DEPTH`` deep and ``MAX_PARTS`` many), for ``message/rfc822`` parses the
enclosed message. Nothing is decoded for ``BODY[...]``: IMAP hands out the bytes as
stored; ``BINARY[...]`` ([RFC 3516]) takes a part's body with its
Content-Transfer-Encoding removed (:func:`transfer_decoded`). The standard ``email``
package is not used because it loads ``socket`` (the core is sans-IO).

This is the core's own reading, good enough for the in-memory backend and the tests;
the store mapping may serve these from the stored MIME conversion instead.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field

from . import commands as c
from .responses import nstring, paren

MAX_DEPTH = 20
MAX_PARTS = 500

_PARAM = re.compile(rb';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]*)', re.S)


def _split_header(raw: bytes) -> tuple[bytes, bytes]:
    # A leading empty line is an empty header (RFC 5322 2.1; RFC 2046 5.1.1: a body
    # part may have no header fields), whatever blank line follows later.
    if raw.startswith((b"\r\n", b"\n")):
        n = 2 if raw.startswith(b"\r\n") else 1
        return raw[:n], raw[n:]
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = raw.find(sep)
        if at >= 0 and (sep == b"\r\n\r\n" or raw.find(b"\r\n\r\n") < 0):
            return raw[: at + len(sep)], raw[at + len(sep) :]
    return raw, b""


def _fields(header: bytes) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for line in re.split(rb"\r?\n(?![ \t])", header):
        name, sep, value = line.partition(b":")
        if sep and name and b" " not in name.strip():
            out.append((name.strip().decode("latin-1").upper(), value.strip()))
    return out


def _unfold(value: bytes) -> bytes:
    return re.sub(rb"\r?\n[ \t]", b" ", value)


@dataclass(slots=True)
class Part:
    header: bytes
    body: bytes
    fields: list[tuple[str, bytes]]
    type: str = "TEXT"
    subtype: str = "PLAIN"
    params: list[tuple[bytes, bytes]] = field(default_factory=list)
    children: list[Part] = field(default_factory=list)
    message: Part | None = None
    #: The first value of each field by name, made on the first :meth:`get` (a header
    #: kept in a cache answers many searches).
    _first: dict[str, bytes] | None = None

    @classmethod
    def parse(cls, raw: bytes, depth: int = 0, budget: list[int] | None = None,
              default: tuple[str, str] = ("TEXT", "PLAIN")) -> Part:  # fmt: skip
        budget = budget if budget is not None else [MAX_PARTS]
        budget[0] -= 1
        header, body = _split_header(raw)
        part = cls(header, body, _fields(header))
        ctype = part.get("CONTENT-TYPE")
        mtype, params = default, []
        if ctype:
            main = _unfold(ctype).split(b";", 1)[0].strip()
            t, sep, s = main.partition(b"/")
            if sep and t.strip() and s.strip():
                mtype = (t.strip().decode("latin-1").upper(), s.strip().decode("latin-1").upper())
            params = [(k, v.strip(b'"')) for k, v in _PARAM.findall(_unfold(ctype))]
        part.type, part.subtype = mtype
        part.params = params
        if depth >= MAX_DEPTH or budget[0] <= 0:
            return part
        if part.type == "MULTIPART":
            boundary = next((v for k, v in params if k.lower() == b"boundary"), b"")
            if boundary:
                sub = ("MESSAGE", "RFC822") if part.subtype == "DIGEST" else ("TEXT", "PLAIN")
                for chunk in _split_multipart(body, boundary):
                    if budget[0] <= 0:
                        break
                    part.children.append(cls.parse(chunk, depth + 1, budget, sub))
        elif (part.type, part.subtype) == ("MESSAGE", "RFC822"):
            part.message = cls.parse(body, depth + 1, budget)
        return part

    @classmethod
    def parse_header(cls, raw: bytes) -> Part:
        """The header of ``raw`` (a message, or its first bytes up to at least the end of
        its header) as a part without a body: what ENVELOPE and header searches read."""
        return cls.parse(_split_header(raw)[0])

    def get(self, name: str) -> bytes | None:
        """The first value of field ``name`` (upper case), None when there is none."""
        first = self._first
        if first is None:
            first = {}
            for key, value in self.fields:
                first.setdefault(key, value)
            self._first = first
        return first.get(name)

    # -- sections --------------------------------------------------------------------------

    def find(self, numbers: tuple[int, ...]) -> Part | None:
        part: Part | None = self
        for n in numbers:
            if part is None:
                return None
            if part.message is not None:
                part = part.message
            if part.children:
                part = part.children[n - 1] if n <= len(part.children) else None
            elif n != 1:
                return None
        return part

    def section(self, section: c.Section) -> bytes | None:
        """The bytes ``BODY[section]`` names; None when the part does not exist."""
        part = self.find(section.part)
        if part is None:
            return None
        if not section.text:
            if not section.part:
                return part.header + part.body
            return part.body
        if section.text == "MIME":
            return part.header
        target = part.message if section.part and part.message is not None else part
        if section.part and part.message is None:
            return None  # HEADER/TEXT of a part that is not a message/rfc822
        if section.text == "TEXT":
            return target.body
        if section.text == "HEADER":
            return target.header
        wanted = set(section.fields)
        keep = section.text == "HEADER.FIELDS"
        lines = re.split(rb"(?<=\n)(?![ \t])", target.header)
        out = [
            ln
            for ln in lines
            if ln.strip()
            and (ln.split(b":", 1)[0].strip().decode("latin-1").upper() in wanted) == keep
        ]
        return b"".join(out) + b"\r\n"

    # -- structure ------------------------------------------------------------------------

    def envelope(self) -> bytes:
        def text(name: str) -> bytes:
            value = self.get(name)
            return nstring(None if value is None else _unfold(value))

        def addrs(name: str) -> bytes:
            value = self.get(name)
            if name in ("SENDER", "REPLY-TO") and value is None:
                value = self.get("FROM")
            return _address_list(None if value is None else _unfold(value))

        return paren(
            [
                text("DATE"),
                text("SUBJECT"),
                addrs("FROM"),
                addrs("SENDER"),
                addrs("REPLY-TO"),
                addrs("TO"),
                addrs("CC"),
                addrs("BCC"),
                text("IN-REPLY-TO"),
                text("MESSAGE-ID"),
            ]
        )

    def body_structure(self, extended: bool = True) -> bytes:
        if self.type == "MULTIPART" and self.children:
            items = [b"".join(ch.body_structure(extended) for ch in self.children)]
            items.append(nstring(self.subtype.lower()))
            if extended:
                items += [self._params(), self._disposition(), self._language(), b"NIL"]
            return paren(items)
        kind = "MULTIPART" if self.type == "MULTIPART" else self.type
        if kind == "MULTIPART":  # a multipart without parts: describe it as text
            kind, sub = "TEXT", "PLAIN"
        else:
            sub = self.subtype
        items = [
            nstring(kind.lower()),
            nstring(sub.lower()),
            self._params(),
            nstring(self._field("CONTENT-ID")),
            nstring(self._field("CONTENT-DESCRIPTION")),
            nstring((self._field("CONTENT-TRANSFER-ENCODING") or b"7bit").lower()),
            str(len(self.body)).encode(),
        ]
        if (kind, sub) == ("MESSAGE", "RFC822") and self.message is not None:
            items += [
                self.message.envelope(),
                self.message.body_structure(extended),
                str(_lines(self.body)).encode(),
            ]
        elif kind == "TEXT":
            items.append(str(_lines(self.body)).encode())
        if extended:
            items += [nstring(self._field("CONTENT-MD5")), self._disposition(),
                      self._language(), nstring(self._field("CONTENT-LOCATION"))]  # fmt: skip
        return paren(items)

    def _field(self, name: str) -> bytes | None:
        value = self.get(name)
        return None if value is None else _unfold(value)

    def _params(self) -> bytes:
        params = self.params
        if self.type == "TEXT" and not any(k.lower() == b"charset" for k, _ in params):
            params = [*params, (b"charset", b"us-ascii")]  # RFC 2045 5.2's default
        if not params:
            return b"NIL"
        return paren(nstring(k.lower()) + b" " + nstring(v) for k, v in params)

    def _disposition(self) -> bytes:
        value = self._field("CONTENT-DISPOSITION")
        if not value:
            return b"NIL"
        kind = value.split(b";", 1)[0].strip()
        params = [(k, v.strip(b'"')) for k, v in _PARAM.findall(value)]
        plist = (
            paren(nstring(k.lower()) + b" " + nstring(v) for k, v in params) if params else b"NIL"
        )
        return paren([nstring(kind.lower()), plist])

    def _language(self) -> bytes:
        value = self._field("CONTENT-LANGUAGE")
        return nstring(value) if value else b"NIL"


#: Content-Transfer-Encodings whose bodies are the content as is ([RFC 2045] 6.2).
_IDENTITY_CTE = frozenset({b"", b"7bit", b"8bit", b"binary"})
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def transfer_decoded(part: Part) -> bytes | None:
    """``part``'s body with its Content-Transfer-Encoding removed ([RFC 3516] 4.2,
    ``BINARY[...]``): base64 and quoted-printable decoded, 7bit, 8bit, binary (or none)
    as they are; None for an encoding it does not know (``UNKNOWN-CTE``).

    Decoding is lenient, as RFC 2045 6.7/6.8 asks of readers: characters outside the
    base64 alphabet are skipped and a short final group is completed; a malformed
    quoted-printable escape is kept as it stands."""
    value = part.get("CONTENT-TRANSFER-ENCODING")
    cte = b"" if value is None else _unfold(value).strip().lower()
    if cte in _IDENTITY_CTE:
        return part.body
    if cte == b"base64":
        data = _NOT_BASE64.sub(b"", part.body.split(b"=", 1)[0])
        if len(data) % 4 == 1:
            data = data[:-1]  # a lone final character carries no whole byte
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    if cte == b"quoted-printable":
        return binascii.a2b_qp(part.body)
    return None


def _lines(body: bytes) -> int:
    """Lines of ``body``: its line ends. The CRLF before a boundary belongs to the
    boundary (RFC 2046 5.1.1), so a part's last line often has none: it is not
    counted, as Dovecot and other servers count."""
    return body.count(b"\n")


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    delim = b"--" + boundary
    pieces: list[bytes] = []
    start: int | None = None
    pos = 0
    while True:
        at = body.find(delim, pos)
        if at < 0:
            break
        if at != 0 and body[at - 1 : at] != b"\n":
            pos = at + len(delim)
            continue
        line_end = body.find(b"\n", at)
        line_end = len(body) if line_end < 0 else line_end + 1
        if start is not None:
            end = at
            if body[end - 2 : end] == b"\r\n":
                end -= 2
            elif body[end - 1 : end] == b"\n":
                end -= 1
            pieces.append(body[start:end])
        if body[at + len(delim) : at + len(delim) + 2] == b"--":
            return pieces
        start = line_end
        pos = line_end
        if len(pieces) >= MAX_PARTS:
            break
    if start is not None and start < len(body):
        pieces.append(body[start:])
    return pieces


# -- addresses ([RFC 5322] 3.4), for ENVELOPE ---------------------------------------------

_TOKEN = re.compile(rb'\s*("(?:[^"\\]|\\.)*"|<[^>]*>|\([^()]*\)|[,:;]|[^\s",:;<(]+)', re.S)


def _address_list(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    out: list[bytes] = []
    words: list[bytes] = []
    angle: bytes | None = None
    group = False
    for m in _TOKEN.finditer(value):
        tok = m[1]
        if tok.startswith(b"("):
            continue
        if tok == b":" and not group:
            out.append(paren([b"NIL", b"NIL", nstring(b" ".join(map(_unquote, words))), b"NIL"]))
            words, group = [], True
        elif tok in (b",", b";"):
            if words or angle is not None:
                out.append(_address(words, angle))
            words, angle = [], None
            if tok == b";" and group:
                out.append(b"(NIL NIL NIL NIL)")
                group = False
        elif tok.startswith(b"<"):
            angle = tok[1:-1].strip()
        else:
            words.append(tok)
        if len(out) > 1000:
            break
    if words or angle is not None:
        out.append(_address(words, angle))
    return paren(out) if out else b"NIL"


def _address(words: list[bytes], angle: bytes | None) -> bytes:
    if angle is None:
        spec, name = b"".join(words), None
    else:
        spec = angle
        name = b" ".join(_unquote(w) for w in words) or None
    spec = spec.split(b":")[-1]  # drop a source route
    mailbox, at, host = spec.rpartition(b"@")
    if not at:
        mailbox, host = spec, b""
    return paren([nstring(name), b"NIL", nstring(mailbox or None), nstring(host or None)])


def _unquote(word: bytes) -> bytes:
    """A phrase word as text: a quoted-string without its quotes and escapes
    ([RFC 5322] 3.2.4)."""
    if len(word) >= 2 and word.startswith(b'"') and word.endswith(b'"'):
        return re.sub(rb"\\(.)", rb"\1", word[1:-1], flags=re.S)
    return word
