"""Restrictions: plain data, validation, a plain-data codec and a Python evaluator.

Theory of operation
-------------------
A restriction is a tree of frozen dataclasses mirroring [MS-OXCDATA] 2.12
(RestrictionType values in the ``rt`` field of the plain form): AND, OR, NOT,
content, property, compare-properties, bitmask, size, exist, sub-object and
comment. :func:`to_plain` / :func:`from_plain` turn a tree into dicts and lists of
ints, strings and bytes (msgpack-ready) and back; :func:`from_plain` checks every
field, the depth (:attr:`~mapi.model.limits.Limits.max_restriction_depth`) and the node
count before building anything, so hostile input is answered with
MAPI_E_TOO_COMPLEX or MAPI_E_INVALID_PARAMETER.

:func:`evaluate` decides a restriction on one row. MAPI semantics: a property or
bitmask or size test on a missing property is false (use EXIST to test presence);
strings compare with NOCASE (as the tables sort); a multi-valued property matches
when any of its values does; content tests follow FL_FULLSTRING / FL_SUBSTRING /
FL_PREFIX with FL_IGNORECASE (Unicode case folding), FL_IGNORENONSPACE and FL_LOOSE.
RELOP_RE uses a small regular-expression dialect (literals, ``.``, ``[...]``,
``*``, ``+``, ``?``, ``^``, ``$``, ``\\`` escapes) matched by a Thompson NFA, so its
time is linear in the text and no pattern can hang the server.

SQL translation for the fast contents-table path lives in :mod:`mapi.tables.contents`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from mapi.budget import current as current_budget
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.limits import DEFAULT_LIMITS, Limits
from mapi.model.properties import PropData, nocase, sort_key, validate, value_size

# RestrictionType ([MS-OXCDATA] 2.12).
RES_AND = 0x00
RES_OR = 0x01
RES_NOT = 0x02
RES_CONTENT = 0x03
RES_PROPERTY = 0x04
RES_COMPAREPROPS = 0x05
RES_BITMASK = 0x06
RES_SIZE = 0x07
RES_EXIST = 0x08
RES_SUBRESTRICTION = 0x09
RES_COMMENT = 0x0A

# Fuzzy levels ([MS-OXCDATA] 2.12.4.1).
FL_FULLSTRING = 0x0000
FL_SUBSTRING = 0x0001
FL_PREFIX = 0x0002
FL_IGNORECASE = 0x00010000
FL_IGNORENONSPACE = 0x00020000
FL_LOOSE = 0x00040000
_FL_LOW = (FL_FULLSTRING, FL_SUBSTRING, FL_PREFIX)
_FL_HIGH = FL_IGNORECASE | FL_IGNORENONSPACE | FL_LOOSE

# Relational operators ([MS-OXCDATA] 2.12.5.1).
RELOP_LT = 0
RELOP_LE = 1
RELOP_GT = 2
RELOP_GE = 3
RELOP_EQ = 4
RELOP_NE = 5
RELOP_RE = 6

# Bitmask operators ([MS-OXCDATA] 2.12.7.1).
BMR_EQZ = 0
BMR_NEZ = 1

_SUBOBJECTS = (pt.PR_MESSAGE_RECIPIENTS, pt.PR_MESSAGE_ATTACHMENTS)


@dataclass(frozen=True, slots=True)
class And:
    restrictions: tuple[Restriction, ...]


@dataclass(frozen=True, slots=True)
class Or:
    restrictions: tuple[Restriction, ...]


@dataclass(frozen=True, slots=True)
class Not:
    restriction: Restriction


@dataclass(frozen=True, slots=True)
class Content:
    fuzzy_level: int
    tag: int
    value: PropData


@dataclass(frozen=True, slots=True)
class Property:
    relop: int
    tag: int
    value: PropData


@dataclass(frozen=True, slots=True)
class CompareProps:
    relop: int
    tag1: int
    tag2: int


@dataclass(frozen=True, slots=True)
class Bitmask:
    bmr: int
    tag: int
    mask: int


@dataclass(frozen=True, slots=True)
class Size:
    relop: int
    tag: int
    size: int


@dataclass(frozen=True, slots=True)
class Exist:
    tag: int


@dataclass(frozen=True, slots=True)
class SubRestriction:
    subobject: int
    restriction: Restriction


@dataclass(frozen=True, slots=True)
class Comment:
    props: tuple[tuple[int, PropData], ...]
    restriction: Restriction | None


Restriction: TypeAlias = (
    And | Or | Not | Content | Property | CompareProps | Bitmask | Size | Exist
    | SubRestriction | Comment
)  # fmt: skip


class RowView(Protocol):
    """What :func:`evaluate` needs of a row."""

    def get(self, tag: int) -> PropData | None:
        """The value of canonical ``tag``, or None when absent."""

    def sub_rows(self, subobject: int) -> Sequence[RowView]:
        """Recipient or attachment rows (PR_MESSAGE_RECIPIENTS / _ATTACHMENTS)."""


class DictRow:
    """A :class:`RowView` over a dict, with optional sub-rows and large-value loaders."""

    def __init__(
        self,
        props: dict[int, PropData],
        sub: Callable[[int], Sequence[RowView]] | None = None,
        large: Callable[[int], PropData | None] | None = None,
        large_tags: frozenset[int] = frozenset(),
    ) -> None:
        self.props = props
        self._sub = sub
        self._large = large
        #: Tags whose values exist but are too large to put in a table row.
        self.large_tags = large_tags

    def get(self, tag: int) -> PropData | None:
        value = self.props.get(tag)
        if value is None and self._large is not None:
            return self._large(tag)
        return value

    def sub_rows(self, subobject: int) -> Sequence[RowView]:
        return self._sub(subobject) if self._sub is not None else ()


# --- Plain data ---------------------------------------------------------------------


def to_plain(res: Restriction) -> dict[str, Any]:
    """The msgpack-ready form of a restriction."""
    if isinstance(res, And | Or):
        rt = RES_AND if isinstance(res, And) else RES_OR
        return {"rt": rt, "res": [to_plain(r) for r in res.restrictions]}
    if isinstance(res, Not):
        return {"rt": RES_NOT, "res": to_plain(res.restriction)}
    if isinstance(res, Content):
        return {"rt": RES_CONTENT, "fuzzy": res.fuzzy_level, "tag": res.tag, "value": res.value}
    if isinstance(res, Property):
        return {"rt": RES_PROPERTY, "relop": res.relop, "tag": res.tag, "value": res.value}
    if isinstance(res, CompareProps):
        return {"rt": RES_COMPAREPROPS, "relop": res.relop, "tag1": res.tag1, "tag2": res.tag2}
    if isinstance(res, Bitmask):
        return {"rt": RES_BITMASK, "bmr": res.bmr, "tag": res.tag, "mask": res.mask}
    if isinstance(res, Size):
        return {"rt": RES_SIZE, "relop": res.relop, "tag": res.tag, "size": res.size}
    if isinstance(res, Exist):
        return {"rt": RES_EXIST, "tag": res.tag}
    if isinstance(res, SubRestriction):
        return {"rt": RES_SUBRESTRICTION, "sub": res.subobject, "res": to_plain(res.restriction)}
    inner = None if res.restriction is None else to_plain(res.restriction)
    return {"rt": RES_COMMENT, "props": [[t, v] for t, v in res.props], "res": inner}


class _Budget:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.nodes = 0

    def enter(self, depth: int) -> None:
        self.nodes += 1
        if depth > self.limits.max_restriction_depth:
            raise errors.TooComplex("restriction nested too deeply")
        if self.nodes > self.limits.max_restriction_nodes:
            raise errors.TooComplex("restriction has too many nodes")


def _field(data: dict[str, Any], name: str) -> Any:
    if name not in data:
        raise errors.InvalidParameter(f"restriction lacks {name!r}")
    return data[name]


def _int_field(data: dict[str, Any], name: str, lo: int, hi: int) -> int:
    value = _field(data, name)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise errors.InvalidParameter(f"bad restriction field {name!r}")
    return value


def _tag_field(data: dict[str, Any], name: str) -> int:
    return _int_field(data, name, 1, 0xFFFFFFFF)


def _relop(data: dict[str, Any]) -> int:
    return _int_field(data, "relop", RELOP_LT, RELOP_RE)


def _valued(tag: int, value: object, limits: Limits) -> PropData:
    if pt.prop_type(tag) & pt.MV_INSTANCE:
        raise errors.TooComplex("MV_INSTANCE restrictions are not supported")
    return validate(tag, value, limits)


def from_plain(data: object, limits: Limits = DEFAULT_LIMITS) -> Restriction:
    """Build and validate a restriction from its plain form.

    Raises:
        InvalidParameter: a malformed node or value.
        TooComplex: too deep or too many nodes.
    """
    return _from_plain(data, 1, _Budget(limits))


def _from_plain(data: object, depth: int, budget: _Budget) -> Restriction:
    budget.enter(depth)
    if not isinstance(data, dict):
        raise errors.InvalidParameter("a restriction is a dict")
    rt = _int_field(data, "rt", RES_AND, RES_COMMENT)
    limits = budget.limits
    if rt in (RES_AND, RES_OR):
        items = _field(data, "res")
        if not isinstance(items, list | tuple):
            raise errors.InvalidParameter("AND/OR need a list")
        children = tuple(_from_plain(item, depth + 1, budget) for item in items)
        return And(children) if rt == RES_AND else Or(children)
    if rt == RES_NOT:
        return Not(_from_plain(_field(data, "res"), depth + 1, budget))
    if rt == RES_CONTENT:
        fuzzy = _int_field(data, "fuzzy", 0, 0xFFFFFFFF)
        if fuzzy & 0xFFFF not in _FL_LOW or fuzzy & ~0xFFFF & ~_FL_HIGH:
            raise errors.InvalidParameter("bad fuzzy level")
        tag = _tag_field(data, "tag")
        base = pt.prop_type(tag) & ~pt.MV_FLAG
        if base not in (pt.PropType.PT_STRING8, pt.PropType.PT_UNICODE, pt.PropType.PT_BINARY):
            raise errors.InvalidParameter("content restrictions need a string or binary tag")
        value = _valued(pt.change_type(tag, base), _field(data, "value"), limits)
        return Content(fuzzy, tag, value)
    if rt == RES_PROPERTY:
        relop = _relop(data)
        tag = _tag_field(data, "tag")
        value_tag = tag
        if relop == RELOP_RE:
            value_tag = pt.change_type(tag, pt.PropType.PT_UNICODE)
        elif pt.is_multi(tag) and not isinstance(data.get("value"), list | tuple):
            value_tag = pt.change_type(tag, pt.prop_type(tag) & ~pt.MV_FLAG)
        return Property(relop, tag, _valued(value_tag, _field(data, "value"), limits))
    if rt == RES_COMPAREPROPS:
        return CompareProps(_relop(data), _tag_field(data, "tag1"), _tag_field(data, "tag2"))
    if rt == RES_BITMASK:
        bmr = _int_field(data, "bmr", BMR_EQZ, BMR_NEZ)
        tag = _tag_field(data, "tag")
        if pt.prop_type(tag) not in (pt.PropType.PT_LONG, pt.PropType.PT_SHORT, pt.PropType.PT_I8):
            raise errors.InvalidParameter("bitmask restrictions need an integer tag")
        return Bitmask(bmr, tag, _int_field(data, "mask", 0, 0xFFFFFFFF))
    if rt == RES_SIZE:
        return Size(_relop(data), _tag_field(data, "tag"), _int_field(data, "size", 0, 0xFFFFFFFF))
    if rt == RES_EXIST:
        return Exist(_tag_field(data, "tag"))
    if rt == RES_SUBRESTRICTION:
        sub = _int_field(data, "sub", 0, 0xFFFFFFFF)
        if sub not in _SUBOBJECTS:
            raise errors.InvalidParameter("sub-restriction on an unknown sub-object")
        return SubRestriction(sub, _from_plain(_field(data, "res"), depth + 1, budget))
    props = _field(data, "props")
    if not isinstance(props, list | tuple) or len(props) > limits.max_props_per_call:
        raise errors.InvalidParameter("comment props must be a list")
    pairs = []
    for item in props:
        if not isinstance(item, list | tuple) or len(item) != 2 or not isinstance(item[0], int):
            raise errors.InvalidParameter("comment props are [tag, value] pairs")
        pairs.append((item[0], validate(item[0], item[1], limits)))
    inner = data.get("res")
    res = None if inner is None else _from_plain(inner, depth + 1, budget)
    return Comment(tuple(pairs), res)


def check(res: Restriction, limits: Limits = DEFAULT_LIMITS) -> Restriction:
    """Validate a restriction built in Python (round trip through the plain form)."""
    return from_plain(to_plain(res), limits)


# --- Evaluation -------------------------------------------------------------------------


def _strip_nonspace(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def content_match(value: PropData | None, pattern: PropData, fuzzy: int) -> bool:
    """The content test on one value (any item of a multi-valued one)."""
    if value is None:
        return False
    if isinstance(value, list):
        return any(content_match(item, pattern, fuzzy) for item in value)
    if isinstance(value, str) and isinstance(pattern, str):
        if fuzzy & (FL_IGNORENONSPACE | FL_LOOSE):
            value, pattern = _strip_nonspace(value), _strip_nonspace(pattern)
        if fuzzy & (FL_IGNORECASE | FL_LOOSE):
            value, pattern = value.casefold(), pattern.casefold()
    elif not (isinstance(value, bytes) and isinstance(pattern, bytes)):
        return False
    low = fuzzy & 0xFFFF
    if low == FL_SUBSTRING:
        return pattern in value  # type: ignore[operator]
    if low == FL_PREFIX:
        return value.startswith(pattern)  # type: ignore[arg-type]
    return value == pattern


def compare(relop: int, left: PropData, right: PropData) -> bool:
    """``left relop right`` with the table ordering (NOCASE strings)."""
    if relop == RELOP_RE:
        return isinstance(left, str) and isinstance(right, str) and regex_search(right, left)
    if isinstance(left, list) and not isinstance(right, list):
        return any(compare(relop, item, right) for item in left)
    a, b = sort_key(left), sort_key(right)
    if a[0] != b[0]:  # different kinds of value never compare
        return relop == RELOP_NE
    if relop == RELOP_LT:
        return bool(a < b)
    if relop == RELOP_LE:
        return bool(a <= b)
    if relop == RELOP_GT:
        return bool(a > b)
    if relop == RELOP_GE:
        return bool(a >= b)
    if relop == RELOP_EQ:
        return bool(a == b)
    return bool(a != b)


def evaluate(res: Restriction, row: RowView) -> bool:
    """Decide ``res`` on ``row`` (callers looping over rows call
    :func:`mapi.budget.tick` per row; long texts are checked inside)."""
    if isinstance(res, And):
        return all(evaluate(r, row) for r in res.restrictions)
    if isinstance(res, Or):
        return any(evaluate(r, row) for r in res.restrictions)
    if isinstance(res, Not):
        return not evaluate(res.restriction, row)
    if isinstance(res, Content):
        return content_match(row.get(pt.canonical_tag(res.tag)), res.value, res.fuzzy_level)
    if isinstance(res, Property):
        value = row.get(pt.canonical_tag(res.tag))
        return value is not None and compare(res.relop, value, res.value)
    if isinstance(res, CompareProps):
        left = row.get(pt.canonical_tag(res.tag1))
        right = row.get(pt.canonical_tag(res.tag2))
        return left is not None and right is not None and compare(res.relop, left, right)
    if isinstance(res, Bitmask):
        value = row.get(pt.canonical_tag(res.tag))
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        hit = value & res.mask
        return hit == 0 if res.bmr == BMR_EQZ else hit != 0
    if isinstance(res, Size):
        value = row.get(pt.canonical_tag(res.tag))
        return value is not None and compare(res.relop, value_size(res.tag, value), res.size)
    if isinstance(res, Exist):
        return row.get(pt.canonical_tag(res.tag)) is not None
    if isinstance(res, SubRestriction):
        return any(evaluate(res.restriction, sub) for sub in row.sub_rows(res.subobject))
    return True if res.restriction is None else evaluate(res.restriction, row)


# --- A linear-time regular expression subset --------------------------------------------

_Atom: TypeAlias = tuple[str, Any]  # ("any", None) | ("lit", c) | ("set", (negated, items))


def _parse_class(pattern: str, i: int) -> tuple[_Atom, int]:
    negated = i < len(pattern) and pattern[i] == "^"
    i += negated
    items: list[tuple[str, str]] = []
    first = True
    while i < len(pattern) and (pattern[i] != "]" or first):
        first = False
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            c = pattern[i]
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            items.append((c, pattern[i + 2]))
            i += 3
        else:
            items.append((c, c))
            i += 1
    if i >= len(pattern):
        raise errors.InvalidParameter("unterminated character class")
    return ("set", (negated, tuple(items))), i + 1


def _compile(pattern: str) -> tuple[list[tuple[_Atom, str]], bool, bool]:
    if len(pattern) > 256:
        raise errors.TooComplex("regular expression too long")
    anchored_start = pattern.startswith("^")
    anchored_end = pattern.endswith("$") and not pattern.endswith("\\$")
    body = pattern[int(anchored_start) : len(pattern) - int(anchored_end)]
    items: list[tuple[_Atom, str]] = []
    i = 0
    while i < len(body):
        c = body[i]
        atom: _Atom
        if c == "\\" and i + 1 < len(body):
            atom, i = ("lit", body[i + 1]), i + 2
        elif c == ".":
            atom, i = ("any", None), i + 1
        elif c == "[":
            atom, i = _parse_class(body, i + 1)
        elif c in "*+?":
            raise errors.InvalidParameter("quantifier without an atom")
        else:
            atom, i = ("lit", c), i + 1
        quant = ""
        if i < len(body) and body[i] in "*+?":
            quant, i = body[i], i + 1
        items.append((atom, quant))
    return items, anchored_start, anchored_end


def _atom_matches(atom: _Atom, c: str) -> bool:
    kind, arg = atom
    if kind == "any":
        return True
    if kind == "lit":
        return bool(c == arg)
    negated, ranges = arg
    hit = any(lo <= c <= hi for lo, hi in ranges)
    return bool(hit != negated)


def regex_search(pattern: str, text: str) -> bool:
    """Does ``pattern`` (the RELOP_RE dialect) match somewhere in ``text``?"""
    items, anchored_start, anchored_end = _compile(pattern)
    n = len(items)

    def closure(states: set[int]) -> set[int]:
        out = set(states)
        stack = list(states)
        while stack:
            s = stack.pop()
            if s < n and items[s][1] in ("*", "?") and s + 1 not in out:
                out.add(s + 1)
                stack.append(s + 1)
        return out

    start = closure({0})
    current = set(start)
    if n in current and not anchored_end:
        return True
    work = current_budget()
    for i, c in enumerate(text):
        if work is not None and not i & 1023:  # the clock costs more than a step
            work.check()
        nxt: set[int] = set()
        for s in current:
            if s < n and _atom_matches(items[s][0], c):
                quant = items[s][1]
                nxt.add(s if quant in ("*", "+") else s + 1)
                if quant == "+":
                    nxt.add(s + 1)
        current = closure(nxt)
        if not anchored_start:
            current |= start
        if n in current and not anchored_end:
            return True
    return n in current


def restriction_tags(res: Restriction) -> set[int]:
    """Canonical tags a restriction reads on the row itself (not in sub-objects)."""
    if isinstance(res, And | Or):
        return set().union(*(restriction_tags(r) for r in res.restrictions))
    if isinstance(res, Not):
        return restriction_tags(res.restriction)
    if isinstance(res, Content | Property | Bitmask | Size | Exist):
        return {pt.canonical_tag(res.tag)}
    if isinstance(res, CompareProps):
        return {pt.canonical_tag(res.tag1), pt.canonical_tag(res.tag2)}
    if isinstance(res, Comment) and res.restriction is not None:
        return restriction_tags(res.restriction)
    return set()


__all__ = [
    "And", "Bitmask", "Comment", "CompareProps", "Content", "DictRow", "Exist", "Not", "Or",
    "Property", "Restriction", "RowView", "Size", "SubRestriction", "check", "compare",
    "content_match", "evaluate", "from_plain", "nocase", "regex_search", "to_plain",
]  # fmt: skip
