"""Parsing and formatting for ``mapi-cli``: property names, values, tables, ``--where``.

Everything here is pure: strings in, strings or plain data out. Property values are
shown the way a MAPI user reads them: PT_SYSTIME (a FILETIME, 100 ns ticks since
1601-01-01 UTC) as ISO 8601 local time, binary values as hex, message flags by name.
In ``--json`` output the same conversions apply, except that integers (sizes, flags)
stay integers.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import Any

from clients.cli_safety import printable, safe_json
from mapi.model import proptags as pt
from mapi.model import restrictions as rs

#: FILETIME ticks (100 ns) between 1601-01-01 and 1970-01-01.
FILETIME_EPOCH_OFFSET = 116_444_736_000_000_000
_TICKS_PER_SECOND = 10_000_000


class UsageError(Exception):
    """Bad command-line input found after parsing (exit status 2)."""


# --- Times ------------------------------------------------------------------------


def filetime_to_datetime(filetime: int) -> dt.datetime:
    """A FILETIME as an aware datetime in local time."""
    seconds, ticks = divmod(filetime - FILETIME_EPOCH_OFFSET, _TICKS_PER_SECOND)
    utc = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
        seconds=seconds, microseconds=ticks // 10
    )
    return utc.astimezone()


def datetime_to_filetime(value: dt.datetime) -> int:
    """An aware (or local naive) datetime as a FILETIME."""
    if value.tzinfo is None:
        value = value.astimezone()
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return FILETIME_EPOCH_OFFSET + (delta // dt.timedelta(microseconds=1)) * 10


def now_filetime() -> int:
    """The current time as a FILETIME."""
    return datetime_to_filetime(dt.datetime.now(dt.UTC))


def format_time(filetime: int) -> str:
    """ISO 8601 local time, to the second."""
    try:
        return filetime_to_datetime(filetime).isoformat(timespec="seconds")
    except (OverflowError, ValueError):
        return str(filetime)


# --- Property names -------------------------------------------------------------------


def parse_tag(name: str) -> int:
    """A tag from ``PR_SUBJECT``, ``subject``, ``message_delivery_time`` or ``0x0037001F``.

    Raises:
        UsageError: the name is unknown.
    """
    text = name.strip()
    candidates = [text, text.upper()]
    if not text.upper().startswith("PR_"):
        candidates.append("PR_" + text.upper())
    for candidate in candidates:
        try:
            return pt.tag_from_name(candidate)
        except KeyError:
            continue
    raise UsageError(f"unknown property {name!r} (use a PR_* name or a hex tag like 0x0037001F)")


def parse_tags(text: str) -> list[int]:
    """Comma-separated property names."""
    return [parse_tag(part) for part in text.split(",") if part.strip()]


def display_name(tag: int) -> str:
    """The user-facing name of ``tag``: ``PR_SUBJECT`` rather than ``PR_SUBJECT_W``."""
    name = pt.tag_name(tag)
    if name.endswith("_W") and pt.NAME_TAGS.get(name[:-2]) == tag:
        return name[:-2]
    return name


def column_header(tag: int) -> str:
    """A short column header: ``SUBJECT`` for PR_SUBJECT."""
    name = display_name(tag)
    return name[3:] if name.startswith("PR_") else name


# --- Values ---------------------------------------------------------------------------

_FLAG_NAMES = (
    (pt.MSGFLAG_UNSENT, "unsent"),
    (pt.MSGFLAG_HASATTACH, "attach"),
    (pt.MSGFLAG_FROMME, "fromme"),
    (pt.MSGFLAG_ASSOCIATED, "associated"),
    (pt.MSGFLAG_SUBMIT, "submit"),
)
_SIZE_TAGS = frozenset({pt.PR_MESSAGE_SIZE, pt.PR_MESSAGE_SIZE_EXTENDED, pt.PR_ATTACH_SIZE})


def flag_names(flags: int) -> list[str]:
    """PR_MESSAGE_FLAGS as words: ``read``/``unread`` then the other bits set."""
    names = ["read" if flags & pt.MSGFLAG_READ else "unread"]
    names += [name for bit, name in _FLAG_NAMES if flags & bit]
    return names


def human_size(size: int) -> str:
    """``1.5 MiB`` style sizes."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def json_value(tag: int, value: Any) -> Any:
    """A property value for JSON output."""
    ptype = pt.prop_type(tag) & ~pt.MV_FLAG
    if value is None:
        return None
    if isinstance(value, list):
        return [json_value(pt.change_type(tag, ptype), v) for v in value]
    if ptype == pt.PropType.PT_SYSTIME and isinstance(value, int):
        return format_time(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def text_value(tag: int, value: Any, *, width: int | None = None) -> str:
    """A property value for one line of text output, shortened to ``width`` characters if
    given; line breaks become spaces and control characters escapes (it is untrusted)."""
    if value is None:
        text = ""
    elif tag == pt.PR_MESSAGE_FLAGS and isinstance(value, int):
        text = ",".join(flag_names(value))
    elif tag in _SIZE_TAGS and isinstance(value, int):
        text = human_size(value)
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    else:
        plain = json_value(tag, value)
        text = "; ".join(map(str, plain)) if isinstance(plain, list) else str(plain)
    text = printable(text.replace("\r\n", " ").replace("\r", " ").replace("\n", " "))
    if width is not None and len(text) > width:
        text = text[: max(width - 1, 0)] + "\u2026"
    return text


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: set[int]) -> str:
    """Aligned columns; ``right`` holds the indexes of right-aligned columns."""
    body = [list(row) for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in body)])


def dump_json(data: Any) -> str:
    """JSON text for ``--json`` output (bytes as hex, anything else via ``str``), with
    terminal-unsafe characters as ``\\uXXXX`` escapes (:func:`clients.cli_safety.safe_json`)."""
    return safe_json(data)


# --- --sort and --where ---------------------------------------------------------------


def parse_sort(text: str) -> list[tuple[int, bool]]:
    """``-PR_MESSAGE_DELIVERY_TIME,PR_SUBJECT`` -> ``[(tag, descending), ...]``."""
    keys = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        descending = part.startswith("-")
        keys.append((parse_tag(part.lstrip("+-")), descending))
    if not keys:
        raise UsageError("--sort needs at least one property")
    return keys


_WHERE = re.compile(r"^\s*(?P<name>[A-Za-z0-9_]+)\s*(?P<op>~|!=|>=|<=|=|>|<)\s*(?P<value>.*)$")
_RELOPS = {
    "=": rs.RELOP_EQ,
    "!=": rs.RELOP_NE,
    ">": rs.RELOP_GT,
    ">=": rs.RELOP_GE,
    "<": rs.RELOP_LT,
    "<=": rs.RELOP_LE,
}
_INT_TYPES = (pt.PropType.PT_SHORT, pt.PropType.PT_LONG, pt.PropType.PT_I8)


def _parse_time(text: str) -> int:
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"not a date/time: {text!r} (use ISO 8601, e.g. 2024-05-01 or 2024-05-01T09:30)"
        ) from None
    return datetime_to_filetime(value)


def _typed_value(tag: int, text: str) -> Any:
    ptype = pt.prop_type(tag)
    if ptype in (pt.PropType.PT_UNICODE, pt.PropType.PT_STRING8):
        return text
    if ptype in _INT_TYPES:
        try:
            return int(text, 0)
        except ValueError:
            raise UsageError(f"{display_name(tag)} takes an integer, not {text!r}") from None
    if ptype in (pt.PropType.PT_FLOAT, pt.PropType.PT_DOUBLE):
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{display_name(tag)} takes a number, not {text!r}") from None
    if ptype == pt.PropType.PT_BOOLEAN:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes"):
            return True
        if lowered in ("0", "false", "no"):
            return False
        raise UsageError(f"{display_name(tag)} takes true or false, not {text!r}")
    if ptype == pt.PropType.PT_SYSTIME:
        return _parse_time(text)
    if ptype == pt.PropType.PT_BINARY:
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise UsageError(f"{display_name(tag)} takes hex bytes, not {text!r}") from None
    raise UsageError(f"cannot filter on {display_name(tag)} (type 0x{ptype:04X})")


def parse_where(condition: str) -> dict[str, Any]:
    """One ``--where`` condition as a restriction in plain form.

    ``PROP~TEXT`` is a case-insensitive substring test; ``=`` and ``!=`` compare (strings
    without regard to case); ``>``, ``>=``, ``<``, ``<=`` compare numbers and times.

    Raises:
        UsageError: not of the form ``PROP OP VALUE``, or a value of the wrong type.
    """
    match = _WHERE.match(condition)
    if match is None:
        raise UsageError(
            f"bad --where {condition!r}: expected PROP OP VALUE with OP one of "
            "~ = != > >= < <= (e.g. 'PR_SUBJECT~report')"
        )
    tag = parse_tag(match["name"])
    op, text = match["op"], match["value"]
    if op == "~":
        if pt.prop_type(tag) not in (pt.PropType.PT_UNICODE, pt.PropType.PT_STRING8):
            raise UsageError(f"~ needs a string property; {display_name(tag)} is not one")
        return {
            "rt": rs.RES_CONTENT,
            "fuzzy": rs.FL_SUBSTRING | rs.FL_IGNORECASE,
            "tag": tag,
            "value": text,
        }
    return {
        "rt": rs.RES_PROPERTY,
        "relop": _RELOPS[op],
        "tag": tag,
        "value": _typed_value(tag, text),
    }


def combine_where(conditions: Sequence[str]) -> dict[str, Any] | None:
    """Every ``--where`` condition ANDed together, or None without any."""
    parts = [parse_where(c) for c in conditions]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return {"rt": rs.RES_AND, "res": parts}
