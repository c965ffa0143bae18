"""The NSPI operations ([MS-OXNSPI] 3.1.4.1) on a GAL snapshot: a sans-IO core.

Theory of operation
-------------------
Each method of :class:`NspiCore` is one NSPI call after its stub was decoded: plain
values in (a :class:`~dcerpc.idl.nspi.Stat`, tag lists, restrictions), a result code and
plain values out, nothing about handles, sockets or threads. The service
(:mod:`mapi.addressbook.service`) decodes, checks the context handle, calls one of these
and encodes. A call works on one immutable :class:`~mapi.addressbook.gal.Gal`.

Positions (3.1.4.5 and the STAT of 2.2.8): a container's table is its entries in display
name order; a position is an index ``0 .. N`` (``N``: past the last row). The STAT gives
it as ``CurrentRec``: ``MID_BEGINNING_OF_TABLE`` is 0, ``MID_END_OF_TABLE`` is N, a MId
is that row's index, and ``MID_CURRENT`` means the fractional position ``NumPos /
TotalRecs`` of the table (``NumPos`` alone when ``TotalRecs`` is 0), scaled to N and
clamped. A MId that is in no row is ``NotFound`` (3.1.4.1.4 constraint 5), the STAT
left as it came. ``Delta`` then moves the position, clamped to ``0 .. N``. Every STAT
we return is normalised: ``CurrentRec`` the MId at the position (``MID_END_OF_TABLE``
at N), ``NumPos`` the position, ``TotalRecs`` N, ``Delta`` 0. So out-of-range
``NumPos``, ``TotalRecs`` and ``Delta`` are clamped, never an error, and the invariants
``0 <= NumPos <= TotalRecs`` and "CurrentRec is the row at NumPos" always hold on the
way out.

Sort orders: ``SortTypeDisplayName`` and ``SortTypePhoneticDisplayName`` (we keep no
phonetic names: the same order) on tables; the template sort types only where the spec
allows them (nowhere here); anything else is ``GeneralFailure``. Code pages: 8-bit
strings (``PT_STRING8``) are encoded in the STAT's code page (``CP_TELETEX`` as Latin-1,
the Windows and ISO code pages Python knows, 65001 UTF-8; an unknown code page is
``InvalidCodepage`` at NspiBind, ``CP_WINUNICODE`` too, as 3.1.4.1.1 asks, and an
unknown one is ``InvalidCodepage`` in every later call that answers strings); a
``PT_UNSPECIFIED`` column is answered in Unicode. A property an entry lacks comes back
as ``PT_ERROR`` with ``NotFound`` (NspiGetProps then returns ``ErrorsReturned``; for an
object that is not there it answers as if the object had no properties, 3.1.4.1.7
constraint 11).

Restrictions (2.2.5, for NspiGetMatches): AND, OR, NOT, content (full string, substring,
prefix; case is always ignored), property (the six relational operators; strings
compared case-folded), compare-props, bitmask, size, exist; ``PR_ANR`` in a content or
property restriction is ambiguous name resolution. Sub-restrictions and regular
expressions are ``TooComplex``, as is a restriction deeper than :data:`MAX_DEPTH` or
larger than :data:`MAX_NODES` nodes.
"""

from __future__ import annotations

import bisect
import codecs
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from dcerpc.idl.nspi import (
    RES_AND,
    RES_BITMASK,
    RES_COMPAREPROPS,
    RES_CONTENT,
    RES_EXIST,
    RES_NOT,
    RES_OR,
    RES_PROPERTY,
    RES_SIZE,
    PropertyName,
    PropertyRow,
    PropertyValue,
    Restriction,
    Stat,
)
from mapi import budget
from mapi.addressbook import props as p
from mapi.addressbook.gal import ENTRY_TAGS, Container, Gal, GalEntry, fold

#: Most rows one NspiQueryRows / NspiSeekEntries answers (a client pages for more).
MAX_ROWS: Final = 1000
#: Most rows NspiSeekEntries returns from the position it found (a client pages on
#: with NspiQueryRows from the STAT it gets back).
SEEK_ROWS: Final = 50
#: Most strings one NspiResolveNames(W) or NspiDNToMId resolves.
MAX_NAMES: Final = 1000
#: Restriction limits (beyond: TooComplex).
MAX_DEPTH: Final = 32
MAX_NODES: Final = 256

#: Columns of NspiQueryRows / NspiResolveNames when the client gives none (3.1.4.1.8).
DEFAULT_COLUMNS: Final = (
    p.PR_EMS_AB_CONTAINERID,
    p.PR_OBJECT_TYPE,
    p.PR_DISPLAY_TYPE,
    p.with_type(p.PR_DISPLAY_NAME, p.PT_STRING8),
    p.with_type(p.PR_PRIMARY_TELEPHONE_NUMBER, p.PT_STRING8),
    p.with_type(p.PR_DEPARTMENT_NAME, p.PT_STRING8),
    p.with_type(p.PR_OFFICE_LOCATION, p.PT_STRING8),
)

_STRING_TYPES = (p.PT_STRING8, p.PT_UNICODE, p.PT_UNSPECIFIED)
_MV_STRING_TYPES = (p.PT_MV_STRING8, p.PT_MV_UNICODE)


def codec_of(code_page: int) -> str | None:
    """The Python codec of an NSPI code page for 8-bit strings (None: not supported).
    0 (``CP_ACP``, "the server's default", what a client that never set it sends) is
    Latin-1, as ``CP_TELETEX``."""
    if code_page in (p.CP_TELETEX, 0):
        return "latin-1"
    if code_page in (p.CP_WINUNICODE, 65001):
        return "utf-8"
    try:
        return codecs.lookup(f"cp{code_page}").name
    except LookupError:
        return None


def _encode8(text: str, code_page: int) -> bytes:
    return text.encode(codec_of(code_page) or "latin-1", "replace")


def decode8(raw: bytes, code_page: int) -> str:
    return raw.decode(codec_of(code_page) or "latin-1", "replace")


@dataclass(frozen=True, slots=True)
class Reply:
    """A result code and the call's [out] values by IDL name (besides the STAT)."""

    result: int
    stat: Stat | None = None
    values: dict[str, Any] | None = None


class NspiCore:
    """The NSPI operations on one snapshot (``gal``)."""

    def __init__(self, gal: Gal) -> None:
        self.gal = gal

    # -- positions ----------------------------------------------------------------------

    def container(self, stat: Stat) -> Container | None:
        for c in self.gal.containers:
            if c.cid == stat.container_id:
                return c
        return None

    def table(self, stat: Stat) -> Sequence[int] | None:
        """The MIds of the STAT's container in display-name order (None: unknown)."""
        if stat.container_id not in self.gal.container_ids:
            return None
        return self.gal.mids

    def locate(self, stat: Stat, count: int) -> int | None:
        """The position the STAT names before its Delta (see the module docstring);
        None when ``CurrentRec`` is a MId of no row."""
        cur = stat.current_rec
        if cur == p.MID_BEGINNING_OF_TABLE:
            return 0
        if cur == p.MID_END_OF_TABLE:
            return count
        if cur != p.MID_CURRENT:
            return self.gal.position.get(cur)
        pos = stat.num_pos * count // stat.total_recs if stat.total_recs > 0 else stat.num_pos
        return max(0, min(count, pos))

    def at(self, stat: Stat, pos: int, count: int) -> Stat:
        """``stat`` normalised at position ``pos`` of a table of ``count`` rows."""
        mids = self.gal.mids
        current = mids[pos] if pos < count else p.MID_END_OF_TABLE
        return replace(stat, current_rec=current, delta=0, num_pos=pos, total_recs=count)

    def moved(self, stat: Stat, count: int) -> tuple[int, int] | None:
        """(position before Delta, position after it, clamped); None when
        ``CurrentRec`` is a MId of no row."""
        start = self.locate(stat, count)
        if start is None:
            return None
        return start, max(0, min(count, start + stat.delta))

    # -- values -------------------------------------------------------------------------

    def prop(self, values: dict[int, object], tag: int, code_page: int) -> PropertyValue:
        """The value of ``tag`` (type converted for strings) or a NotFound error value."""
        typ = p.prop_type(tag)
        key = p.prop_id(tag)
        for stored_tag, value in values.items():
            if p.prop_id(stored_tag) != key:
                continue
            stored = p.prop_type(stored_tag)
            if stored == p.PT_UNICODE and typ in _STRING_TYPES:
                assert isinstance(value, str)
                if typ == p.PT_STRING8:
                    return PropertyValue(tag, _encode8(value, code_page))
                return PropertyValue(p.with_type(tag, p.PT_UNICODE), value)
            if stored == p.PT_MV_UNICODE and typ in (*_MV_STRING_TYPES, 0x1000):
                assert isinstance(value, list)
                if typ == p.PT_MV_STRING8:
                    return PropertyValue(tag, [_encode8(v, code_page) for v in value])
                return PropertyValue(p.with_type(tag, p.PT_MV_UNICODE), list(value))
            if typ in (stored, p.PT_UNSPECIFIED):
                return PropertyValue(stored_tag, value)
            break
        return PropertyValue(p.error_tag(tag), p.NOT_FOUND)

    def entry_values(self, entry: GalEntry, flags: int, cid: int) -> dict[int, object]:
        values = entry.values(self.gal.server_guid)
        values[p.PR_EMS_AB_CONTAINERID] = cid
        if flags & p.F_EPH_ID:
            values[p.PR_ENTRYID] = entry.ephemeral_entry_id(self.gal.server_guid)
        return values

    def row(
        self, entry: GalEntry, tags: Sequence[int], code_page: int, flags: int, cid: int = 0
    ) -> PropertyRow:
        values = self.entry_values(entry, flags, cid)
        return PropertyRow([self.prop(values, tag, code_page) for tag in tags])

    def rows(
        self, mids: Sequence[int], tags: Sequence[int], stat: Stat, flags: int
    ) -> list[PropertyRow]:
        by_mid = self.gal.by_mid
        out: list[PropertyRow] = []
        for mid in mids:
            budget.tick()
            entry = by_mid.get(mid)
            if entry is None:  # an explicit table may name what is not there
                out.append(PropertyRow([PropertyValue(p.error_tag(t), p.NOT_FOUND) for t in tags]))
            else:
                out.append(self.row(entry, tags, stat.code_page, flags, stat.container_id))
        return out

    # -- the calls ----------------------------------------------------------------------

    def bind(self, flags: int, stat: Stat) -> Reply:
        """NspiBind (3.1.4.1.1): the code page must be one we can serve."""
        if stat.code_page == p.CP_WINUNICODE or codec_of(stat.code_page) is None:
            return Reply(p.INVALID_CODEPAGE)
        return Reply(p.SUCCESS, values={"pServerGuid": self.gal.server_guid})

    def update_stat(self, stat: Stat, want_delta: bool) -> Reply:
        """NspiUpdateStat (3.1.4.1.4): apply Delta; plDelta is the rows actually moved."""
        if stat.sort_type not in p.TABLE_SORT_TYPES:
            return Reply(p.GENERAL_FAILURE)
        table = self.table(stat)
        if table is None:
            return Reply(p.INVALID_BOOKMARK)
        moved = self.moved(stat, len(table))
        if moved is None:
            return Reply(p.NOT_FOUND)
        start, pos = moved
        return Reply(
            p.SUCCESS,
            self.at(stat, pos, len(table)),
            {"plDelta": (pos - start) if want_delta else None},
        )

    def query_rows(
        self,
        flags: int,
        stat: Stat,
        etable: Sequence[int] | None,
        count: int,
        tags: Sequence[int] | None,
    ) -> Reply:
        """NspiQueryRows (3.1.4.1.8): ``count`` rows from the STAT's position (moved by
        Delta), or the rows of an explicit table (``etable``; the STAT is then kept)."""
        columns = tuple(tags) if tags is not None else DEFAULT_COLUMNS
        if codec_of(stat.code_page) is None:
            return Reply(p.INVALID_CODEPAGE)
        if etable is not None:
            return Reply(
                p.SUCCESS, stat, {"ppRows": self.rows(etable[:MAX_ROWS], columns, stat, flags)}
            )
        if count == 0:
            return Reply(p.INVALID_PARAMETER)
        if stat.sort_type not in p.TABLE_SORT_TYPES:
            return Reply(p.GENERAL_FAILURE)
        table = self.table(stat)
        if table is None:
            return Reply(p.INVALID_BOOKMARK)
        n = len(table)
        moved = self.moved(stat, n)
        if moved is None:
            return Reply(p.NOT_FOUND)
        pos = moved[1]
        end = min(n, pos + min(count, MAX_ROWS))
        rows = self.rows(table[pos:end], columns, stat, flags)
        return Reply(p.SUCCESS, self.at(stat, end, n), {"ppRows": rows})

    def seek_entries(
        self,
        stat: Stat,
        target: PropertyValue,
        etable: Sequence[int] | None,
        tags: Sequence[int] | None,
    ) -> Reply:
        """NspiSeekEntries (3.1.4.1.9): the first row whose display name sorts at or
        after the target's, ignoring case. With ``tags``, the rows from there (at most
        :data:`SEEK_ROWS`)."""
        if stat.sort_type not in p.TABLE_SORT_TYPES:
            return Reply(p.GENERAL_FAILURE)
        if codec_of(stat.code_page) is None:
            return Reply(p.INVALID_CODEPAGE)
        if p.prop_id(target.tag) != p.prop_id(p.PR_DISPLAY_NAME) or p.prop_type(target.tag) not in (
            p.PT_STRING8,
            p.PT_UNICODE,
        ):
            return Reply(p.GENERAL_FAILURE)
        text = target.value
        if isinstance(text, bytes):
            text = decode8(text, stat.code_page)
        if not isinstance(text, str):
            return Reply(p.GENERAL_FAILURE)
        key = fold(text)
        gal = self.gal
        if etable is not None:
            candidates = [m for m in etable if m in gal.by_mid]
            candidates.sort(key=gal.position.__getitem__)
            found = next(
                (i for i, m in enumerate(candidates) if gal.sort_keys[gal.position[m]] >= key), None
            )
            if found is None:
                return Reply(p.NOT_FOUND)
            n = len(candidates)
            out = replace(stat, current_rec=candidates[found], delta=0, num_pos=found, total_recs=n)
            chosen = candidates[found:]
        else:
            table = self.table(stat)
            if table is None:
                return Reply(p.INVALID_BOOKMARK)
            n = len(table)
            pos = bisect.bisect_left(gal.sort_keys, key)
            if pos >= n:
                return Reply(p.NOT_FOUND)
            out = self.at(stat, pos, n)
            chosen = list(table[pos : pos + SEEK_ROWS])
        rows = self.rows(chosen[:SEEK_ROWS], tags, stat, 0) if tags is not None else None
        return Reply(p.SUCCESS, out, {"ppRows": rows})

    def get_matches(
        self,
        stat: Stat,
        res: Restriction | None,
        prop_name: PropertyName | None,
        requested: int,
        tags: Sequence[int] | None,
    ) -> Reply:
        """NspiGetMatches (3.1.4.1.10): the rows of the container matching ``res``, in
        table order; more than ``requested`` is TableTooBig. The STAT describes the
        explicit table of the matches, at its beginning."""
        if stat.sort_type not in p.TABLE_SORT_TYPES:
            return Reply(p.GENERAL_FAILURE)
        if codec_of(stat.code_page) is None:
            return Reply(p.INVALID_CODEPAGE)
        if prop_name is not None:
            return Reply(p.NOT_FOUND)  # no link attributes (members, reports) here
        table = self.table(stat)
        if table is None:
            return Reply(p.INVALID_BOOKMARK)
        if res is None:
            return Reply(p.TOO_COMPLEX)
        check = compile_restriction(res, stat.code_page)
        if check is None:
            return Reply(p.TOO_COMPLEX)
        matches: list[int] = []
        by_mid = self.gal.by_mid
        for mid in table:
            budget.tick()
            entry = by_mid[mid]
            if check(self.entry_values(entry, 0, stat.container_id)):
                matches.append(mid)
                if len(matches) > requested:
                    return Reply(p.TABLE_TOO_BIG)
        out = replace(
            stat,
            current_rec=p.MID_BEGINNING_OF_TABLE,
            delta=0,
            num_pos=0,
            total_recs=len(matches),
        )
        rows = self.rows(matches, tags, stat, 0) if tags is not None else None
        return Reply(p.SUCCESS, out, {"ppOutMIds": matches, "ppRows": rows})

    def resort_restriction(self, stat: Stat, mids: Sequence[int]) -> Reply:
        """NspiResortRestriction (3.1.4.1.11): the known MIds of ``mids`` in display
        name order (unknown ones and repeats dropped)."""
        if stat.sort_type not in p.TABLE_SORT_TYPES:
            return Reply(p.GENERAL_FAILURE)
        position = self.gal.position
        kept = sorted({m for m in mids if m in position}, key=position.__getitem__)
        if stat.current_rec in kept:
            out = replace(stat, num_pos=kept.index(stat.current_rec), total_recs=len(kept), delta=0)
        else:
            out = replace(
                stat,
                current_rec=p.MID_BEGINNING_OF_TABLE,
                num_pos=0,
                total_recs=len(kept),
                delta=0,
            )
        return Reply(p.SUCCESS, out, {"ppOutMIds": kept})

    def dn_to_mid(self, names: Sequence[bytes | None]) -> Reply:
        """NspiDNToMId (3.1.4.1.13): legacy DNs (and ``/guid=`` or ``/o=NT5/.../cn=``
        object-GUID DNs) to MIds, 0 for a name that is not there."""
        gal = self.gal
        out: list[int] = []
        for raw in names[:MAX_NAMES]:
            mid = 0
            if raw is not None:
                dn = fold(raw.decode("latin-1"))
                mid = gal.by_dn.get(dn, 0) or gal.mid_of_guid_dn(dn)
            out.append(mid)
        return Reply(p.SUCCESS, values={"ppOutMIds": out})

    def get_prop_list(self, flags: int, mid: int, code_page: int) -> Reply:
        """NspiGetPropList (3.1.4.1.6): the tags the object has (8-bit string types
        unless the code page is CP_WINUNICODE)."""
        if codec_of(code_page) is None:
            return Reply(p.INVALID_CODEPAGE)
        entry = self.gal.by_mid.get(mid)
        if entry is None:
            return Reply(p.NOT_FOUND)
        unicode = code_page == p.CP_WINUNICODE
        tags = [t if unicode else _eight_bit(t) for t in self.entry_values(entry, flags, 0)]
        return Reply(p.SUCCESS, values={"ppPropTags": tags})

    def get_props(self, flags: int, stat: Stat, tags: Sequence[int] | None) -> Reply:
        """NspiGetProps (3.1.4.1.7): the row of the object ``CurrentRec`` names (all
        its properties when ``tags`` is NULL); ErrorsReturned when a value is missing."""
        if codec_of(stat.code_page) is None:
            return Reply(p.INVALID_CODEPAGE)
        entry = self.gal.by_mid.get(stat.current_rec)
        if entry is None:  # as if the object were there with no properties (constraint 11)
            props = [PropertyValue(p.error_tag(t), p.NOT_FOUND) for t in tags or ()]
            result = p.ERRORS_RETURNED if props else p.SUCCESS
            return Reply(result, values={"ppRows": PropertyRow(props)})
        if tags is None:
            unicode = stat.code_page == p.CP_WINUNICODE
            tags = [t if unicode else _eight_bit(t) for t in self.entry_values(entry, flags, 0)]
        row = self.row(entry, tags, stat.code_page, flags, stat.container_id)
        assert row.props is not None
        failed = any(p.prop_type(v.tag) == p.PT_ERROR for v in row.props)
        return Reply(p.ERRORS_RETURNED if failed else p.SUCCESS, values={"ppRows": row})

    def compare_mids(self, stat: Stat, mid1: int, mid2: int) -> Reply:
        """NspiCompareMIds (3.1.4.1.12): <0, 0, >0 as MId1 sorts before, with, after MId2."""
        if stat.sort_type not in p.TABLE_SORT_TYPES:
            return Reply(p.GENERAL_FAILURE)
        pos = self.gal.position
        if mid1 not in pos or mid2 not in pos:
            return Reply(p.GENERAL_FAILURE)
        diff = pos[mid1] - pos[mid2]
        return Reply(p.SUCCESS, values={"plResult": (diff > 0) - (diff < 0)})

    def query_columns(self, flags: int) -> Reply:
        """NspiQueryColumns (3.1.4.1.5): every column we serve."""
        unicode = bool(flags & p.NSPI_UNICODE_PROPTYPES)
        tags = [t if unicode else _eight_bit(t) for t in (*ENTRY_TAGS, p.PR_EMS_AB_CONTAINERID)]
        return Reply(p.SUCCESS, values={"ppColumns": tags})

    def get_names_from_ids(self, guid: bytes | None, tags: Sequence[int] | None) -> Reply:
        """NspiGetNamesFromIDs (3.1.4.1.14): we have no named properties. A NULL tag
        list asks for every name (none); each given tag maps to no name."""
        if tags is None:
            return Reply(p.SUCCESS, values={"ppReturnedPropTags": [], "ppNames": []})
        names = [PropertyName(None, 0) for _ in tags]
        returned = [p.error_tag(t) for t in tags]
        result = p.ERRORS_RETURNED if tags else p.SUCCESS
        return Reply(result, values={"ppReturnedPropTags": returned, "ppNames": names})

    def get_ids_from_names(self, flags: int, names: Sequence[PropertyName | None]) -> Reply:
        """NspiGetIDsFromNames (3.1.4.1.15): no named properties, none created."""
        if flags & 0x2:  # MAPI_CREATE: the directory is not ours to extend
            return Reply(p.NOT_SUPPORTED)
        tags = [p.PT_ERROR for _ in names]
        return Reply(p.ERRORS_RETURNED if names else p.SUCCESS, values={"ppPropTags": tags})

    def resolve_names(
        self, stat: Stat, tags: Sequence[int] | None, names: Sequence[str | None]
    ) -> Reply:
        """NspiResolveNames(W) (3.1.4.1.16-17): one MId per string (MID_UNRESOLVED,
        MID_AMBIGUOUS or the entry's MId), and one row per resolved name."""
        if len(names) > MAX_NAMES:
            return Reply(p.TOO_COMPLEX)
        if codec_of(stat.code_page) is None:
            return Reply(p.INVALID_CODEPAGE)
        if self.table(stat) is None:
            return Reply(p.INVALID_BOOKMARK)
        columns = tuple(tags) if tags is not None else DEFAULT_COLUMNS
        mids: list[int] = []
        for name in names:
            budget.tick()
            found = self.gal.resolve(name) if name else []
            if not found:
                mids.append(p.MID_UNRESOLVED)
            elif len(found) > 1:
                mids.append(p.MID_AMBIGUOUS)
            else:
                mids.append(found[0])
        resolved = [m for m in mids if m not in (p.MID_UNRESOLVED, p.MID_AMBIGUOUS)]
        rows = self.rows(resolved, columns, stat, 0)
        return Reply(p.SUCCESS, values={"ppMIds": mids, "ppRows": rows})

    def special_table(self, flags: int, stat: Stat, version: int) -> Reply:
        """NspiGetSpecialTable (3.1.4.1.3): the hierarchy table (our containers), or,
        with NspiAddressCreationTemplates, the templates table (empty: none here). A
        client already holding this version of the hierarchy gets no rows. Names in
        8-bit strings need a code page we know (else InvalidCodepage, ppRows NULL)."""
        if not flags & p.NSPI_UNICODE_STRINGS and codec_of(stat.code_page) is None:
            return Reply(p.INVALID_CODEPAGE)
        if flags & p.NSPI_ADDRESS_CREATION_TEMPLATES:
            return Reply(p.SUCCESS, values={"lpVersion": version, "ppRows": []})
        gal = self.gal
        if version == gal.version:
            return Reply(p.SUCCESS, values={"lpVersion": gal.version, "ppRows": None})
        name_tag = p.PR_DISPLAY_NAME
        if not flags & p.NSPI_UNICODE_STRINGS:
            name_tag = p.with_type(name_tag, p.PT_STRING8)
        rows: list[PropertyRow] = []
        for c in gal.containers:
            name: object = c.name
            if not flags & p.NSPI_UNICODE_STRINGS:
                name = _encode8(c.name, stat.code_page)
            rows.append(
                PropertyRow(
                    [
                        PropertyValue(p.PR_ENTRYID, gal.container_entry_id(c)),
                        PropertyValue(p.PR_CONTAINER_FLAGS, p.AB_RECIPIENTS | p.AB_UNMODIFIABLE),
                        PropertyValue(p.PR_DEPTH, c.depth),
                        PropertyValue(p.PR_EMS_AB_CONTAINERID, c.cid),
                        PropertyValue(name_tag, name),
                        PropertyValue(p.PR_EMS_AB_IS_MASTER, 0),
                    ]
                )
            )
        return Reply(p.SUCCESS, values={"lpVersion": gal.version, "ppRows": rows})


def _eight_bit(tag: int) -> int:
    typ = p.prop_type(tag)
    if typ == p.PT_UNICODE:
        return p.with_type(tag, p.PT_STRING8)
    if typ == p.PT_MV_UNICODE:
        return p.with_type(tag, p.PT_MV_STRING8)
    return tag


# -- restrictions ------------------------------------------------------------------------

Check = Callable[[dict[int, object]], bool]

FL_FULLSTRING: Final = 0
FL_SUBSTRING: Final = 1
FL_PREFIX: Final = 2


def _measure(res: Restriction) -> bool:
    """Whether ``res`` is within :data:`MAX_DEPTH` and :data:`MAX_NODES` (iterative:
    the decoder accepts chains far deeper than Python's stack)."""
    stack: list[tuple[Restriction | None, int]] = [(res, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH or nodes > MAX_NODES:
            return False
        if node is None:
            continue
        if node.rt in (RES_AND, RES_OR):
            stack.extend((child, depth + 1) for child in node.res or [])
        elif node.rt == RES_NOT:
            stack.append((node.res, depth + 1))
    return True


def _lookup(values: dict[int, object], tag: int) -> object | None:
    key = p.prop_id(tag)
    for stored, value in values.items():
        if p.prop_id(stored) == key:
            return value
    return None


def _text_of(value: object, code_page: int) -> str | None:
    if isinstance(value, bytes):
        return decode8(value, code_page)
    if isinstance(value, str):
        return value
    return None


def _anr_check(text: str) -> Check:
    key = fold(text.strip())

    def check(values: dict[int, object]) -> bool:
        if not key:
            return False
        names = [
            values.get(t)
            for t in (p.PR_DISPLAY_NAME, p.PR_ACCOUNT, p.PR_SMTP_ADDRESS, p.PR_EMAIL_ADDRESS)
        ]
        for name in names:
            if not isinstance(name, str):
                continue
            folded = fold(name)
            if folded == key or folded.startswith(key):
                return True
            if any(word.startswith(key) for word in folded.split()):
                return True
        return False

    return check


def _compare(left: object, right: object, relop: int) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        left, right = fold(left), fold(right)
    try:
        if relop == 0:
            return bool(left < right)  # type: ignore[operator]
        if relop == 1:
            return bool(left <= right)  # type: ignore[operator]
        if relop == 2:
            return bool(left > right)  # type: ignore[operator]
        if relop == 3:
            return bool(left >= right)  # type: ignore[operator]
    except TypeError:
        return False
    if relop == 4:
        return left == right
    if relop == 5:
        return left != right
    return False


def _size(value: object) -> int:
    if isinstance(value, str):
        return 2 * (len(value) + 1)
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, list):
        return sum(_size(v) for v in value)
    return 4


def compile_restriction(res: Restriction, code_page: int) -> Check | None:
    """A predicate over an entry's values, or None when ``res`` is TooComplex."""
    if not _measure(res):
        return None
    try:
        return _compile(res, code_page)
    except _TooComplex:
        return None


class _TooComplex(Exception):
    pass


def _compile(res: Restriction | None, cp: int) -> Check:
    if res is None:
        raise _TooComplex
    rt = res.rt
    if rt in (RES_AND, RES_OR):
        children = [_compile(c, cp) for c in res.res or []]
        if rt == RES_AND:
            return lambda v: all(c(v) for c in children)
        return lambda v: any(c(v) for c in children)
    if rt == RES_NOT:
        inner = _compile(res.res, cp)
        return lambda v: not inner(v)
    if rt == RES_CONTENT:
        c = res.res
        wanted = _text_of(c.prop.value if c.prop is not None else None, cp)
        if wanted is None:
            raise _TooComplex
        if p.prop_id(c.prop_tag) == p.prop_id(p.PR_ANR):
            return _anr_check(wanted)
        how = c.fuzzy_level & 0xFFFF
        key = fold(wanted)
        tag = c.prop_tag

        def content(v: dict[int, object]) -> bool:
            value = _lookup(v, tag)
            items = value if isinstance(value, list) else [value]
            for item in items:
                text = _text_of(item, cp)
                if text is None:
                    continue
                text = fold(text)
                if how == FL_SUBSTRING and key in text:
                    return True
                if how == FL_PREFIX and text.startswith(key):
                    return True
                if how == FL_FULLSTRING and text == key:
                    return True
            return False

        return content
    if rt == RES_PROPERTY:
        r = res.res
        if r.prop is None or r.relop == 6:  # RELOP_RE: no regular expressions
            raise _TooComplex
        target = r.prop.value
        if isinstance(target, bytes) and p.prop_type(r.prop.tag) == p.PT_STRING8:
            target = decode8(target, cp)
        if p.prop_id(r.prop_tag) == p.prop_id(p.PR_ANR) and isinstance(target, str):
            return _anr_check(target)
        tag, relop = r.prop_tag, r.relop

        def prop(v: dict[int, object]) -> bool:
            value = _lookup(v, tag)
            return value is not None and _compare(value, target, relop)

        return prop
    if rt == RES_COMPAREPROPS:
        r = res.res
        return lambda v: _compare(_lookup(v, r.prop_tag1), _lookup(v, r.prop_tag2), r.relop)
    if rt == RES_BITMASK:
        r = res.res

        def bitmask(v: dict[int, object]) -> bool:
            value = _lookup(v, r.prop_tag)
            if not isinstance(value, int):
                return False
            hit = bool(value & r.mask)
            return hit if r.rel_bmr == 1 else not hit

        return bitmask
    if rt == RES_SIZE:
        r = res.res

        def size(v: dict[int, object]) -> bool:
            value = _lookup(v, r.prop_tag)
            return value is not None and _compare(_size(value), r.cb, r.relop)

        return size
    if rt == RES_EXIST:
        tag = res.res.prop_tag
        return lambda v: _lookup(v, tag) is not None
    raise _TooComplex  # sub-restrictions: no sub-objects here


def server_guid_of(secret: bytes) -> bytes:
    """A stable server GUID (NspiBind's pServerGuid) derived from the server secret."""
    return uuid.uuid5(uuid.NAMESPACE_OID, "mapi-anywhere-nspi:" + secret.hex()).bytes_le
