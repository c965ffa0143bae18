"""Evaluating SEARCH keys ([RFC 9051] 6.4.4) against one message.

``matches(key, ctx)`` walks the key tree; ``ctx`` gives the message's metadata and, only
when a key needs it, its parsed body (header and text searches), so flag, size, date and
UID searches never read a message. Text matching is case-insensitive substring on the
raw bytes (MIME-decoded matching is the store mapping's job).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass

from . import commands as c
from .backend import MessageInfo
from .message import Part

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
    "OLD": ("\\Recent", False),
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ADDRESS_KEYS = {"BCC", "CC", "FROM", "TO", "SUBJECT"}


@dataclass(slots=True)
class Context:
    info: MessageInfo
    seq: int
    largest_seq: int
    largest_uid: int
    load: Callable[[], Part]
    saved: list[int]
    _part: Part | None = None

    @property
    def part(self) -> Part:
        if self._part is None:
            self._part = self.load()
        return self._part


def _contains(haystack: bytes | None, needle: bytes) -> bool:
    return haystack is not None and needle.lower() in haystack.lower()


def _sent_date(part: Part) -> _dt.date | None:
    raw = part.get("DATE")
    if raw is None:
        return None
    text = raw.decode("latin-1").split(",")[-1].split()
    try:
        day, mon, year = int(text[0]), text[1][:3].title(), int(text[2])
        month = _MONTHS.index(mon) + 1
        return _dt.date(year, month, day)
    except (ValueError, IndexError):
        return None


def _compare(name: str, when: _dt.date | None, target: _dt.date) -> bool:
    if when is None:
        return False
    if name.endswith("BEFORE"):
        return when < target
    if name.endswith("ON"):
        return when == target
    return when >= target


def matches(key: c.SearchKey, ctx: Context) -> bool:
    if isinstance(key, c.And):
        return all(matches(k, ctx) for k in key.keys)
    if isinstance(key, c.Or):
        return matches(key.left, ctx) or matches(key.right, ctx)
    if isinstance(key, c.Not):
        return not matches(key.key, ctx)
    name, args = key.name, key.args
    info = ctx.info
    if name in ("ALL", "OLD"):
        return True
    if name in ("NEW", "RECENT"):
        return False
    if name in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[name]
        return (flag in info.flags) == present
    if name in ("KEYWORD", "UNKEYWORD"):
        has = str(args[0]).lower() in {f.lower() for f in info.flags}
        return has == (name == "KEYWORD")
    if name == "SEQ":
        seqset = args[0]
        assert isinstance(seqset, c.SequenceSet)
        if seqset.saved:
            return info.uid in ctx.saved
        return seqset.contains(ctx.seq, ctx.largest_seq)
    if name == "UID":
        seqset = args[0]
        assert isinstance(seqset, c.SequenceSet)
        if seqset.saved:
            return info.uid in ctx.saved
        return seqset.contains(info.uid, ctx.largest_uid)
    if name in ("LARGER", "SMALLER"):
        size = args[0]
        assert isinstance(size, int)
        return info.size > size if name == "LARGER" else info.size < size
    if name == "MODSEQ":
        return info.modseq >= int(str(args[0]))
    if name in ("BEFORE", "ON", "SINCE"):
        target = args[0]
        assert isinstance(target, _dt.date)
        return _compare(name, info.internal_date.date(), target)
    if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
        target = args[0]
        assert isinstance(target, _dt.date)
        return _compare(name, _sent_date(ctx.part), target)
    needle = args[-1] if args else b""
    assert isinstance(needle, bytes)
    if name in _ADDRESS_KEYS:
        return _contains(ctx.part.get(name), needle)
    if name == "HEADER":
        field = str(args[0])
        value = ctx.part.get(field)
        return value is not None and (not needle or _contains(value, needle))
    if name == "BODY":
        return _contains(ctx.part.body, needle)
    if name == "TEXT":
        return _contains(ctx.part.header, needle) or _contains(ctx.part.body, needle)
    return False
