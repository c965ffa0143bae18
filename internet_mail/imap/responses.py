"""Serializing responses ([RFC 9051] 7, 9): strings, lists, response codes, data.

Theory of operation: every function returns the bytes of one response or one piece of
one, so the session only joins them. Strings take the cheapest form the grammar
allows: an atom where an astring is wanted and the text is atom-safe, a quoted string
for short text without CR, LF, NUL, ``"``-heavy or 8-bit content (8-bit only when the
client enabled ``UTF8=ACCEPT`` or speaks IMAP4rev2), a literal ``{n}`` otherwise.
Mailbox names are modified UTF-7 ([RFC 3501] 5.1.3, ``mutf7``) unless UTF-8 is on.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable

from . import mutf7

__all__ = [
    "astring",
    "continuation",
    "date_time",
    "flag_list",
    "list_response",
    "literal",
    "mailbox_name",
    "nstring",
    "paren",
    "quoted_or_literal",
    "tagged",
    "untagged",
]

_ATOM_SAFE = frozenset(
    b"!#&'+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz|}~$"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Quoted strings longer than this are sent as literals.
MAX_QUOTED = 1024


def literal(value: bytes, *, binary: bool = False) -> bytes:
    """``{n}`` CRLF value (``~{n}`` for ``literal8``)."""
    return (b"~" if binary else b"") + b"{%d}\r\n" % len(value) + value


def quoted_or_literal(value: str | bytes, *, utf8: bool = False) -> bytes:
    """A ``string``: quoted when the grammar allows, else a literal."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if (
        len(raw) <= MAX_QUOTED
        and not any(b in b"\r\n\x00" for b in raw)
        and (utf8 or raw.isascii())
    ):
        if utf8 and not raw.isascii():
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return literal(raw)
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(raw)


def astring(value: str | bytes, *, utf8: bool = False) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if raw and all(b in _ATOM_SAFE for b in raw) and raw.upper() != b"NIL":
        return raw
    return quoted_or_literal(raw, utf8=utf8)


def nstring(value: str | bytes | None, *, utf8: bool = False) -> bytes:
    if value is None:
        return b"NIL"
    return quoted_or_literal(value, utf8=utf8)


def mailbox_name(name: str, *, utf8: bool) -> bytes:
    """A mailbox name for the wire: UTF-8 or modified UTF-7."""
    if name.upper() == "INBOX":
        return b"INBOX"
    return astring(name if utf8 else mutf7.encode(name), utf8=utf8)


def paren(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def flag_list(flags: Iterable[str]) -> bytes:
    return paren(f.encode("utf-8") for f in flags)


def date_time(when: _dt.datetime) -> bytes:
    """``"dd-Mon-yyyy hh:mm:ss +zzzz"`` ([RFC 9051] ``date-time``)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    offset = when.utcoffset() or _dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    text = (
        f'"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} '
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} "
        f'{sign}{minutes // 60:02d}{minutes % 60:02d}"'
    )
    return text.encode("ascii")


def tagged(tag: str, status: str, text: str, code: str | None = None) -> bytes:
    """``<tag> OK|NO|BAD [code] text`` CRLF."""
    return _status(tag, status, text, code)


def untagged(data: bytes) -> bytes:
    return b"* " + data + b"\r\n"


def untagged_status(status: str, text: str, code: str | None = None) -> bytes:
    """``* OK|NO|BAD|BYE|PREAUTH [code] text`` CRLF."""
    return _status("*", status, text, code)


def continuation(text: str = "") -> bytes:
    return b"+ " + _clean(text).encode("utf-8") + b"\r\n"


def _clean(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def _status(tag: str, status: str, text: str, code: str | None) -> bytes:
    parts = [tag, status]
    if code:
        parts.append(f"[{_clean(code)}]")
    parts.append(_clean(text) or status)
    return " ".join(parts).encode("utf-8") + b"\r\n"


def list_response(
    attributes: Iterable[str],
    delimiter: str | None,
    name: str,
    *,
    utf8: bool,
    lsub: bool = False,
    extra: bytes = b"",
) -> bytes:
    """``* LIST (attrs) "/" name`` (``extra``: LIST-EXTENDED data such as OLDNAME)."""
    delim = b"NIL" if delimiter is None else quoted_or_literal(delimiter)
    line = (
        (b"LSUB " if lsub else b"LIST ")
        + flag_list(attributes)
        + b" "
        + delim
        + b" "
        + mailbox_name(name, utf8=utf8)
    )
    return untagged(line + (b" " + extra if extra else b""))


def status_response(name: str, items: dict[str, int], *, utf8: bool) -> bytes:
    body = b" ".join(f"{k} {v}".encode("ascii") for k, v in items.items())
    return untagged(b"STATUS " + mailbox_name(name, utf8=utf8) + b" (" + body + b")")


def sequence_text(numbers: Iterable[int]) -> str:
    """Compact ``1:3,7,9:10`` for sorted numbers ([RFC 9051] ``sequence-set``)."""
    out: list[str] = []
    start = prev = -1
    for n in numbers:
        if prev >= 0 and n == prev + 1:
            prev = n
            continue
        if start >= 0:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start >= 0:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)
