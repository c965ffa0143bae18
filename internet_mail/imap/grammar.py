"""The command grammar ([RFC 9051] 9): one complete command's bytes to a ``Command``.

Theory of operation: ``parser.CommandParser`` frames the byte stream (lines and the
literals they announce) and hands each complete command, literals inline as the client
sent them (``{n}`` CRLF then n bytes), to ``parse_command``. A ``_Reader`` walks those
bytes with one method per grammar rule (``atom``, ``astring``, ``sequence_set``,
``search_key``...); any deviation raises ``ParseError``, which the session answers with
a tagged ``BAD``. Limits from ``ImapLimits`` (nesting depth, list items, ranges in a set,
number sizes) are checked while reading, before anything grows.

IMAP4rev1 clients ([RFC 3501]) use the same grammar with a few more words (``CHECK``,
``LSUB``, ``RECENT``/``NEW``/``OLD`` keys, ``RFC822*`` fetch items), all accepted here.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import re
from collections.abc import Callable

from . import commands as c
from .config import ImapLimits

__all__ = ["ParseError", "parse_command", "read_tag"]

MAX_NUMBER = 0xFFFFFFFF
MAX_MODSEQ = 0x7FFFFFFFFFFFFFFF

_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')
_TAG_EXCLUDED = frozenset(b'(){ %*"\\+')
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DATE_TIME = re.compile(
    rb"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\Z"
)
_FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_FETCH_SIMPLE = frozenset(
    {
        "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "RFC822", "RFC822.HEADER",
        "RFC822.TEXT", "BODYSTRUCTURE", "UID", "MODSEQ", "BODY", "SAVEDATE", "EMAILID",
        "THREADID",
    }
)  # fmt: skip
_STATUS_ITEMS = frozenset(
    {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
     "HIGHESTMODSEQ", "APPENDLIMIT"}
)  # fmt: skip
_SEARCH_NOARG = frozenset(
    {"ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN", "UNANSWERED", "UNDELETED",
     "UNDRAFT", "UNFLAGGED", "UNSEEN", "NEW", "OLD", "RECENT"}
)  # fmt: skip
_SEARCH_ASTRING = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_SEARCH_DATE = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
_SYSTEM_FLAGS = {
    f.upper()[1:]: f
    for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}
_SORT_KEYS = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)
_SEARCH_RETURNS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})


class ParseError(Exception):
    """A command that breaks the grammar or a limit: answered ``<tag> BAD <text>``
    (or ``NO [code]`` when ``status`` says so); the connection goes on."""

    def __init__(self, text: str, *, status: str = "BAD", code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.status = status
        self.code = code


def read_tag(data: bytes) -> str | None:
    """The tag that starts ``data`` (``None`` when there is no valid one)."""
    end = 0
    while end < len(data) and 0x20 < data[end] < 0x7F and data[end] not in _TAG_EXCLUDED:
        end += 1
    if end == 0 or (end < len(data) and data[end] not in b" \r\n"):
        return None
    return data[:end].decode("ascii")


class _Reader:
    def __init__(self, data: bytes, limits: ImapLimits) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits
        self.depth = 0
        self.items = 0

    # -- primitives ---------------------------------------------------------------------

    def fail(self, what: str) -> ParseError:
        return ParseError(f"expected {what} at offset {self.pos}")

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def at(self, text: bytes) -> bool:
        return self.data[self.pos : self.pos + len(text)].upper() == text

    def take(self, text: bytes) -> bool:
        if self.at(text):
            self.pos += len(text)
            return True
        return False

    def expect(self, text: bytes) -> None:
        if not self.take(text):
            raise self.fail(repr(text.decode()))

    def sp(self) -> None:
        self.expect(b" ")

    def end(self) -> None:
        if self.data[self.pos :] != b"\r\n":
            raise ParseError(f"unexpected text at offset {self.pos}")

    def at_end(self) -> bool:
        return self.data[self.pos :] == b"\r\n"

    def count(self, n: int = 1) -> None:
        self.items += n
        if self.items > self.limits.max_args:
            raise ParseError("too many arguments")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise ParseError("too deeply nested")

    def leave(self) -> None:
        self.depth -= 1

    def _run(self, accept: Callable[[int], bool]) -> bytes:
        start = self.pos
        data = self.data
        while self.pos < len(data) and accept(data[self.pos]):
            self.pos += 1
        return data[start : self.pos]

    def atom(self, extra: bytes = b"") -> str:
        """An atom (``extra``: specials allowed here, such as ``]`` in an astring)."""
        allowed = frozenset(extra)
        raw = self._run(lambda b: 0x20 < b < 0x7F and (b not in _ATOM_SPECIALS or b in allowed))
        if not raw:
            raise self.fail("an atom")
        return raw.decode("ascii")

    def keyword(self) -> str:
        return self.atom().upper()

    def number(self, maximum: int = MAX_NUMBER) -> int:
        raw = self._run(lambda b: 0x30 <= b <= 0x39)
        if not raw:
            raise self.fail("a number")
        if len(raw) > len(str(maximum)) or int(raw) > maximum:
            raise ParseError("number out of range")
        return int(raw)

    def nz_number(self, maximum: int = MAX_NUMBER) -> int:
        value = self.number(maximum)
        if value == 0:
            raise ParseError("zero where a non-zero number is required")
        return value

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        data = self.data
        while True:
            if self.pos >= len(data):
                raise self.fail("a closing quote")
            b = data[self.pos]
            self.pos += 1
            if b == 0x22:
                return bytes(out)
            if b == 0x5C:
                if self.pos >= len(data) or data[self.pos] not in b'"\\':
                    raise ParseError("bad escape in quoted string")
                b = data[self.pos]
                self.pos += 1
            elif b in b"\r\n\x00":
                raise ParseError("CR, LF or NUL in a quoted string")
            out.append(b)

    def literal(self, *, binary: bool = False) -> bytes:
        if binary:
            self.expect(b"~")
        self.expect(b"{")
        size = self.number()
        self.take(b"+")
        self.expect(b"}\r\n")
        if self.pos + size > len(self.data):
            raise ParseError("literal shorter than announced")
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        if not binary and b"\x00" in value:
            raise ParseError("NUL in a literal (use literal8)")
        return value

    def string(self) -> bytes:
        b = self.peek()
        if b == 0x22:
            return self.quoted()
        if b == 0x7B:
            return self.literal()
        raise self.fail("a string")

    def astring(self) -> bytes:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        return self.atom(b"]").encode("ascii")

    def nstring(self) -> bytes | None:
        if self.take(b"NIL"):
            return None
        return self.string()

    def mailbox(self) -> bytes:
        return self.astring()

    def list_mailbox(self) -> bytes:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        return self.atom(b"]%*").encode("ascii")

    def flag(self) -> str:
        if self.take(b"\\"):
            if self.take(b"*"):
                return "\\*"
            name = self.atom()
            return _SYSTEM_FLAGS.get(name.upper(), "\\" + name)
        return self.atom()

    def paren_list(self, item: Callable[[], str]) -> tuple[str, ...]:
        self.expect(b"(")
        self.enter()
        out: list[str] = []
        if not self.take(b")"):
            while True:
                self.count()
                out.append(item())
                if self.take(b")"):
                    break
                self.sp()
        self.leave()
        return tuple(out)

    def flag_list(self) -> tuple[str, ...]:
        return self.paren_list(self.flag)

    # -- sequence sets --------------------------------------------------------------------

    def seq_number(self) -> int:
        if self.take(b"*"):
            return c.STAR
        return self.nz_number()

    def sequence_set(self) -> c.SequenceSet:
        if self.take(b"$"):
            return c.SequenceSet(saved=True)
        ranges: list[tuple[int, int]] = []
        while True:
            low = self.seq_number()
            high = self.seq_number() if self.take(b":") else low
            ranges.append((low, high))
            if len(ranges) > self.limits.max_ranges:
                raise ParseError("too many ranges in a sequence set")
            if not self.take(b","):
                return c.SequenceSet(tuple(ranges))

    # -- dates ------------------------------------------------------------------------------

    def date(self) -> _dt.date:
        quoted = self.take(b'"')
        raw = self._run(lambda b: b == 0x2D or 0x30 <= b <= 0x39 or 0x41 <= (b & ~0x20) <= 0x5A)
        if quoted:
            self.expect(b'"')
        parts = raw.split(b"-")
        try:
            day, month, year = int(parts[0]), parts[1].decode().upper(), int(parts[2])
            if len(parts) != 3 or len(parts[0]) > 2 or len(parts[2]) != 4:
                raise ValueError
            return _dt.date(year, _MONTHS.index(month) + 1, day)
        except (ValueError, IndexError, UnicodeDecodeError):
            raise ParseError("bad date") from None

    def date_time(self) -> _dt.datetime:
        raw = self.quoted()
        m = _DATE_TIME.match(raw)
        if not m:
            raise ParseError("bad date-time")
        try:
            offset = _dt.timedelta(hours=int(m[8]), minutes=int(m[9]))
            if m[7] == b"-":
                offset = -offset
            return _dt.datetime(
                int(m[3]),
                _MONTHS.index(m[2].decode().upper()) + 1,
                int(m[1]),
                int(m[4]),
                int(m[5]),
                int(m[6]),
                tzinfo=_dt.timezone(offset),
            )
        except ValueError:
            raise ParseError("bad date-time") from None

    # -- search --------------------------------------------------------------------------

    def search_keys(self) -> c.SearchKey:
        keys = [self.search_key()]
        while not self.at_end() and self.peek() != 0x29:
            self.sp()
            keys.append(self.search_key())
        return keys[0] if len(keys) == 1 else c.And(tuple(keys))

    def search_key(self) -> c.SearchKey:
        self.count()
        b = self.peek()
        if b == 0x28:
            self.pos += 1
            self.enter()
            inner = self.search_keys()
            self.expect(b")")
            self.leave()
            return inner if isinstance(inner, c.And) else c.And((inner,))
        if b == 0x2A or b == 0x24 or 0x30 <= b <= 0x39:
            return c.Criterion("SEQ", (self.sequence_set(),))
        name = self.keyword()
        if name in _SEARCH_NOARG:
            return c.Criterion(name)
        if name in ("NOT", "OR"):
            self.sp()
            self.enter()
            first = self.search_key()
            if name == "NOT":
                self.leave()
                return c.Not(first)
            self.sp()
            second = self.search_key()
            self.leave()
            return c.Or(first, second)
        self.sp()
        if name in _SEARCH_ASTRING:
            return c.Criterion(name, (self.astring(),))
        if name in _SEARCH_DATE:
            return c.Criterion(name, (self.date(),))
        if name in ("KEYWORD", "UNKEYWORD"):
            return c.Criterion(name, (self.atom(),))
        if name == "HEADER":
            field = self.astring().decode("utf-8", "replace").upper()
            self.sp()
            return c.Criterion(name, (field, self.astring()))
        if name in ("LARGER", "SMALLER"):
            return c.Criterion(name, (self.number(),))
        if name in ("OLDER", "YOUNGER"):
            return c.Criterion(name, (self.nz_number(),))
        if name == "UID":
            return c.Criterion(name, (self.sequence_set(),))
        if name == "MODSEQ":
            if self.peek() == 0x22:  # entry name and type, ignored by the core
                self.quoted()
                self.sp()
                self.keyword()
                self.sp()
            return c.Criterion(name, (self.number(MAX_MODSEQ),))
        raise ParseError(f"unknown search key {name}")

    def search_returns(self) -> tuple[str, ...]:
        opts = self.paren_list(self.keyword)
        bad = set(opts) - _SEARCH_RETURNS
        if bad:
            raise ParseError(f"unknown search return option {sorted(bad)[0]}")
        return opts

    def charset(self) -> str:
        return self.astring().decode("ascii", "replace").upper()

    # -- fetch ------------------------------------------------------------------------------

    def section(self) -> c.Section:
        self.expect(b"[")
        parts: list[int] = []
        text = ""
        fields: tuple[str, ...] = ()
        while 0x30 <= self.peek() <= 0x39:
            parts.append(self.nz_number())
            if len(parts) > self.limits.max_depth:
                raise ParseError("section nested too deeply")
            if not self.take(b"."):
                break
        if self.peek() != 0x5D:
            text = self.atom().upper()
            if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                self.sp()
                fields = tuple(
                    f.upper() for f in self.paren_list(lambda: self.astring().decode("latin-1"))
                )
                if not fields:
                    raise ParseError("empty header list")
            elif text not in ("HEADER", "TEXT", "MIME") or (text == "MIME" and not parts):
                raise ParseError(f"bad section text {text}")
        self.expect(b"]")
        return c.Section(tuple(parts), text, fields)

    def partial(self) -> tuple[int, int] | None:
        if not self.take(b"<"):
            return None
        origin = self.number()
        self.expect(b".")
        length = self.nz_number()
        self.expect(b">")
        return (origin, length)

    def fetch_att(self) -> list[c.FetchAttribute]:
        self.count()
        start = self.pos
        raw = self._run(lambda b: 0x20 < b < 0x7F and b not in _ATOM_SPECIALS and b != 0x5B)
        if not raw:
            raise self.fail("a fetch item")
        name = raw.decode("ascii").upper()
        if name in _FETCH_MACROS:
            return [c.FetchAttribute(n) for n in _FETCH_MACROS[name]]
        if self.peek() == 0x5B:
            if name not in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"):
                self.pos = start
                raise self.fail("a fetch item")
            section = self.section()
            if name.startswith("BINARY") and section.text:
                raise ParseError("BINARY takes part numbers only")
            partial = None if name == "BINARY.SIZE" else self.partial()
            base = name.partition(".PEEK")[0]
            return [c.FetchAttribute(base, section, partial, peek=name.endswith(".PEEK"))]
        if name not in _FETCH_SIMPLE:
            raise ParseError(f"unknown fetch item {name}")
        return [c.FetchAttribute(name)]

    def fetch_atts(self) -> tuple[c.FetchAttribute, ...]:
        out: list[c.FetchAttribute] = []
        if self.take(b"("):
            self.enter()
            while True:
                out.extend(self.fetch_att())
                if self.take(b")"):
                    break
                self.sp()
            self.leave()
        else:
            out.extend(self.fetch_att())
        return tuple(out)


# -- commands -----------------------------------------------------------------------------


def parse_command(data: bytes, limits: ImapLimits | None = None) -> c.Command:
    """Parse one complete command (its final CRLF included, literals inline).

    Raises:
        ParseError: the bytes break the grammar or a limit; ``.text`` says where.
    """
    r = _Reader(data, limits or ImapLimits())
    tag = read_tag(data)
    if tag is None:
        raise ParseError("missing or invalid tag")
    r.pos = len(tag)
    r.sp()
    name = r.keyword()
    uid = False
    if name == "UID":
        uid = True
        r.sp()
        name = r.keyword()
        if name not in _UID_COMMANDS:
            raise ParseError(f"UID {name} is not a command")
    handler = _COMMANDS.get(name)
    if handler is None:
        raise ParseError(f"unknown command {name}")
    command = handler(r, tag, name, uid)
    r.end()
    return command


def _no_args(cls: type[c.Command]) -> Callable[[_Reader, str, str, bool], c.Command]:
    return lambda r, tag, name, uid: cls(tag=tag)


def _one_mailbox(cls: Callable[..., c.Command]) -> Callable[[_Reader, str, str, bool], c.Command]:
    def parse(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
        r.sp()
        return cls(tag=tag, mailbox=r.mailbox())

    return parse


def _authenticate(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    mech = r.keyword()
    initial: bytes | None = None
    if r.take(b" "):
        if r.take(b"="):
            initial = b""
        else:
            raw = r._run(lambda b: b in _BASE64)
            initial = _b64decode(raw)
    return c.Authenticate(tag=tag, mechanism=mech, initial_response=initial)


_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _b64decode(raw: bytes) -> bytes:
    if not raw or len(raw) % 4:
        raise ParseError("bad base64")
    try:
        return binascii.a2b_base64(raw, strict_mode=True)
    except binascii.Error:
        raise ParseError("bad base64") from None


def _login(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    user = r.astring()
    r.sp()
    return c.Login(tag=tag, user=user, password=r.astring())


def _enable(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    caps: list[str] = []
    while r.take(b" "):
        r.count()
        caps.append(r.keyword())
    if not caps:
        raise r.fail("a capability")
    return c.Enable(tag=tag, capabilities=tuple(caps))


def _id(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    if r.take(b"NIL"):
        return c.Id(tag=tag, params=None)
    r.expect(b"(")
    params: list[tuple[str, str | None]] = []
    if not r.take(b")"):
        while True:
            r.count()
            key = r.string().decode("utf-8", "replace")
            r.sp()
            value = r.nstring()
            params.append((key, None if value is None else value.decode("utf-8", "replace")))
            if r.take(b")"):
                break
            r.sp()
    return c.Id(tag=tag, params=tuple(params))


def _select(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    mailbox = r.mailbox()
    condstore = False
    qresync: c.QresyncParams | None = None
    if r.take(b" "):
        r.expect(b"(")
        r.enter()
        while True:
            r.count()
            param = r.keyword()
            if param == "CONDSTORE":
                condstore = True
            elif param == "QRESYNC":
                r.sp()
                qresync = _qresync(r)
            else:
                raise ParseError(f"unknown select parameter {param}")
            if r.take(b")"):
                break
            r.sp()
        r.leave()
    return c.Select(
        tag=tag,
        mailbox=mailbox,
        read_only=name == "EXAMINE",
        condstore=condstore or qresync is not None,
        qresync=qresync,
    )


def _qresync(r: _Reader) -> c.QresyncParams:
    r.expect(b"(")
    r.enter()
    validity = r.nz_number()
    r.sp()
    modseq = r.number(MAX_MODSEQ)
    known: c.SequenceSet | None = None
    match: tuple[c.SequenceSet, c.SequenceSet] | None = None
    if r.take(b" "):
        if r.peek() != 0x28:
            known = r.sequence_set()
            if r.take(b" "):
                pass
            else:
                r.expect(b")")
                r.leave()
                return c.QresyncParams(uidvalidity=validity, modseq=modseq, known_uids=known)
        r.expect(b"(")
        seqs = r.sequence_set()
        r.sp()
        uids = r.sequence_set()
        r.expect(b")")
        match = (seqs, uids)
    r.expect(b")")
    r.leave()
    return c.QresyncParams(uidvalidity=validity, modseq=modseq, known_uids=known, seq_match=match)


def _create(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    mailbox = r.mailbox()
    use: tuple[str, ...] = ()
    if r.take(b" "):
        r.expect(b"(")
        r.expect(b"USE ")
        use = r.flag_list()
        r.expect(b")")
    return c.Create(tag=tag, mailbox=mailbox, special_use=use)


def _rename(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    old = r.mailbox()
    r.sp()
    return c.Rename(tag=tag, old=old, new=r.mailbox())


def _list(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    selection: tuple[str, ...] = ()
    if r.peek() == 0x28 and name == "LIST":
        selection = r.paren_list(r.keyword)
        r.sp()
    reference = r.mailbox()
    r.sp()
    if r.peek() == 0x28 and name == "LIST":
        r.expect(b"(")
        r.enter()
        pats = [r.list_mailbox()]
        while r.take(b" "):
            r.count()
            pats.append(r.list_mailbox())
        r.expect(b")")
        r.leave()
        patterns = tuple(pats)
    else:
        patterns = (r.list_mailbox(),)
    returns: list[str] = []
    status: tuple[str, ...] = ()
    if name == "LIST" and r.take(b" RETURN ("):
        r.enter()
        if not r.take(b")"):
            while True:
                r.count()
                opt = r.keyword()
                returns.append(opt)
                if opt == "STATUS":
                    r.sp()
                    status = _status_items(r)
                if r.take(b")"):
                    break
                r.sp()
        r.leave()
    return c.List(
        tag=tag,
        reference=reference,
        patterns=patterns,
        selection=selection,
        returns=tuple(returns),
        status_items=status,
        lsub=name == "LSUB",
    )


def _status_items(r: _Reader) -> tuple[str, ...]:
    items = r.paren_list(r.keyword)
    bad = set(items) - _STATUS_ITEMS
    if bad or not items:
        raise ParseError("bad status item list")
    return items


def _status(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    return c.Status(tag=tag, mailbox=mailbox, items=_status_items(r))


def _append(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    flags: tuple[str, ...] = ()
    date: _dt.datetime | None = None
    if r.peek() == 0x28:
        flags = r.flag_list()
        r.sp()
    if r.peek() == 0x22:
        date = r.date_time()
        r.sp()
    binary = False
    if r.take(b"UTF8 ("):
        binary = r.peek() == 0x7E
        message = r.literal(binary=binary)
        r.expect(b")")
    elif r.peek() == 0x7E:
        binary = True
        message = r.literal(binary=True)
    else:
        message = r.literal()
    return c.Append(
        tag=tag, mailbox=mailbox, flags=flags, date=date, message=message, binary=binary
    )


def _expunge(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    if uid:
        r.sp()
        return c.Expunge(tag=tag, uids=r.sequence_set())
    return c.Expunge(tag=tag)


def _search(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    returns: tuple[str, ...] | None = None
    if r.take(b"RETURN "):
        returns = r.search_returns()
        r.sp()
    charset = None
    if r.take(b"CHARSET "):
        charset = r.charset()
        r.sp()
    return c.Search(tag=tag, uid=uid, charset=charset, criteria=r.search_keys(), returns=returns)


def _sort(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    returns: tuple[str, ...] | None = None
    if r.take(b"RETURN "):
        returns = r.search_returns()
        r.sp()
    keys: list[str] = []
    r.expect(b"(")
    r.enter()
    while True:
        r.count()
        key = r.keyword()
        if key != "REVERSE" and key not in _SORT_KEYS:
            raise ParseError(f"unknown sort key {key}")
        keys.append(key)
        if key == "REVERSE":
            r.sp()
            continue
        if r.take(b")"):
            break
        r.sp()
    r.leave()
    r.sp()
    charset = r.charset()
    r.sp()
    criteria = r.search_keys()
    return c.Sort(
        tag=tag, uid=uid, keys=tuple(keys), charset=charset, criteria=criteria, returns=returns
    )


def _thread(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    algorithm = r.keyword()
    r.sp()
    charset = r.charset()
    r.sp()
    return c.Thread(
        tag=tag, uid=uid, algorithm=algorithm, charset=charset, criteria=r.search_keys()
    )


def _fetch(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    seq = r.sequence_set()
    r.sp()
    atts = r.fetch_atts()
    changed: int | None = None
    vanished = False
    if r.take(b" ("):
        r.enter()
        while True:
            r.count()
            mod = r.keyword()
            if mod == "CHANGEDSINCE":
                r.sp()
                changed = r.number(MAX_MODSEQ)
            elif mod == "VANISHED" and uid:
                vanished = True
            else:
                raise ParseError(f"unknown fetch modifier {mod}")
            if r.take(b")"):
                break
            r.sp()
        r.leave()
        if vanished and changed is None:
            raise ParseError("VANISHED needs CHANGEDSINCE")
    if uid and not any(a.name == "UID" for a in atts):
        atts = (*atts, c.FetchAttribute("UID"))
    return c.Fetch(
        tag=tag, uid=uid, sequence=seq, attributes=atts, changed_since=changed, vanished=vanished
    )


def _store(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    seq = r.sequence_set()
    r.sp()
    unchanged: int | None = None
    if r.take(b"(UNCHANGEDSINCE "):
        unchanged = r.number(MAX_MODSEQ)
        r.expect(b") ")
    mode = ""
    if r.take(b"+"):
        mode = "+"
    elif r.take(b"-"):
        mode = "-"
    item = r.keyword()
    if item not in ("FLAGS", "FLAGS.SILENT"):
        raise ParseError("expected FLAGS or FLAGS.SILENT")
    r.sp()
    if r.peek() == 0x28:
        flags = r.flag_list()
    else:
        found = [r.flag()]
        while r.take(b" "):
            r.count()
            found.append(r.flag())
        flags = tuple(found)
    if "\\*" in flags:
        raise ParseError("\\* is not a flag")
    return c.Store(
        tag=tag,
        uid=uid,
        sequence=seq,
        mode=mode,
        silent=item == "FLAGS.SILENT",
        flags=flags,
        unchanged_since=unchanged,
    )


def _copy_move(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    seq = r.sequence_set()
    r.sp()
    cls = c.Copy if name == "COPY" else c.Move
    return cls(tag=tag, uid=uid, sequence=seq, mailbox=r.mailbox())


def _getquota(r: _Reader, tag: str, name: str, uid: bool) -> c.Command:
    r.sp()
    return c.GetQuota(tag=tag, root=r.astring())


_COMMANDS: dict[str, Callable[[_Reader, str, str, bool], c.Command]] = {
    "CAPABILITY": _no_args(c.Capability),
    "NOOP": _no_args(c.Noop),
    "CHECK": _no_args(c.Check),
    "LOGOUT": _no_args(c.Logout),
    "STARTTLS": _no_args(c.StartTLS),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "ENABLE": _enable,
    "ID": _id,
    "SELECT": _select,
    "EXAMINE": _select,
    "CREATE": _create,
    "DELETE": _one_mailbox(c.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(c.Subscribe),
    "UNSUBSCRIBE": _one_mailbox(c.Unsubscribe),
    "LIST": _list,
    "LSUB": _list,
    "NAMESPACE": _no_args(c.Namespace),
    "STATUS": _status,
    "APPEND": _append,
    "IDLE": _no_args(c.Idle),
    "CLOSE": _no_args(c.Close),
    "UNSELECT": _no_args(c.Unselect),
    "EXPUNGE": _expunge,
    "SEARCH": _search,
    "SORT": _sort,
    "THREAD": _thread,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy_move,
    "MOVE": _copy_move,
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _one_mailbox(c.GetQuotaRoot),
}
_UID_COMMANDS = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "SORT", "THREAD", "EXPUNGE"})
