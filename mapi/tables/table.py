"""Tables: columns, sort orders, restrictions, a cursor and bookmarks.

Theory of operation
-------------------
[MS-OXCTABL] 3.2.5: a table is an ordered view of rows (folders, messages,
recipients, attachments) with a column set, a sort order, a restriction, a cursor
(an index between 0 and the row count) and bookmarks. :class:`Table` implements the
whole client-visible behaviour on top of four hooks that a row source provides:
count the rows, list the keys of a range of rows, fetch rows by key, and find the
position of a key.

* ``query_rows(n)`` with ``n > 0`` returns rows from the cursor forward and advances
  the cursor (unless ``TBL_NOADVANCE``); with ``n < 0`` it moves the cursor back
  ``|n|`` rows and returns those rows in table order, leaving the cursor at the first
  of them (so repeated negative queries page backward), as IMAPITable::QueryRows.
* ``seek_row(origin, n)`` moves from BOOKMARK_BEGINNING / CURRENT / END or a
  bookmark and returns the number of rows actually moved (signed, clamped).
* A bookmark remembers the key of the row at the cursor and its position; seeking
  to it finds that row again even if rows were added or deleted before it; if the
  row is gone the cursor stays at its old position (clamped).
* ``find_row`` evaluates a restriction row by row from an origin, forward or
  backward (DIR_BACKWARD), and moves the cursor to the first match.
* ``sort_table`` and ``restrict`` reset the cursor to the beginning and drop
  bookmarks ([MS-OXCTABL] 3.2.5.2, 3.2.5.3).

Missing properties come back as PT_ERROR values with MAPI_E_NOT_FOUND, values too
large for a row with MAPI_E_NOT_ENOUGH_MEMORY. :class:`MemoryTable` is the row
source for tables evaluated in Python (hierarchy, recipients, attachments, and
contents tables whose sort or restriction SQL cannot express); it recomputes when
its version callback changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from mapi.budget import tick
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model import restrictions as rs
from mapi.model.properties import PropValue, sort_key
from mapi.objects.context import StoreContext

TBL_NOADVANCE: Final = 0x1
BOOKMARK_BEGINNING: Final = 0
BOOKMARK_CURRENT: Final = 1
BOOKMARK_END: Final = 2
DIR_BACKWARD: Final = 0x1
_FIND_BATCH: Final = 256

SortKey = tuple[int, bool]
Key = int


def check_sort(sort: Sequence[tuple[int, bool]], max_keys: int) -> tuple[SortKey, ...]:
    """Validate a sort order: (tag, descending) pairs on single-valued types."""
    if len(sort) > max_keys:
        raise errors.TooComplex("too many sort keys")
    out = []
    for item in sort:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise errors.InvalidParameter("sort keys are (tag, descending) pairs")
        tag, desc = item
        if not isinstance(tag, int) or not 0 < tag <= 0xFFFFFFFF or not isinstance(desc, bool):
            raise errors.InvalidParameter("bad sort key")
        if pt.prop_type(tag) & (pt.MV_FLAG | pt.MV_INSTANCE):
            raise errors.TooComplex("sorting on multi-valued properties is not supported")
        if pt.prop_type(tag) in (pt.PropType.PT_ERROR, pt.PropType.PT_OBJECT):
            raise errors.InvalidParameter("cannot sort on this type")
        out.append((tag, desc))
    return tuple(out)


def build_row(row: rs.DictRow, columns: Sequence[int]) -> list[PropValue]:
    """The values of ``columns`` in ``row`` (PT_ERROR where absent or too large)."""
    out = []
    for tag in columns:
        canon = pt.canonical_tag(tag)
        if pt.prop_type(tag) == pt.PropType.PT_UNSPECIFIED:
            pid = pt.prop_id(tag)
            canon = next((t for t in row.props if pt.prop_id(t) == pid), tag)
            tag = canon
        value = row.props.get(canon)
        if value is not None:
            out.append(PropValue(tag, value))
        elif canon in row.large_tags:
            out.append(PropValue(pt.error_tag(tag), int(errors.Hresult.MAPI_E_NOT_ENOUGH_MEMORY)))
        else:
            out.append(PropValue(pt.error_tag(tag), int(errors.Hresult.MAPI_E_NOT_FOUND)))
    return out


def _matching(
    res: rs.Restriction, rows: list[tuple[Key, rs.DictRow]]
) -> list[tuple[Key, rs.DictRow]]:
    """The rows ``res`` selects, the work budget checked per row."""
    selected = []
    for item in rows:
        tick()
        if rs.evaluate(res, item[1]):
            selected.append(item)
    return selected


def sort_rows(
    rows: list[tuple[Key, rs.DictRow]], sort: Sequence[SortKey]
) -> list[tuple[Key, rs.DictRow]]:
    """Stable multi-key sort (last key first), keeping the source order for ties."""
    for tag, desc in reversed(sort):
        canon = pt.canonical_tag(tag)

        def key(item: tuple[Key, rs.DictRow], canon: int = canon) -> Any:
            tick()  # the keys are computed once per pass, before the sort
            return sort_key(item[1].props.get(canon))

        rows.sort(key=key, reverse=desc)
    return rows


class Table:
    """A MAPI table. Subclasses supply the row source (see the module docstring)."""

    def __init__(self, ctx: StoreContext, default_columns: Sequence[int]) -> None:
        self._ctx = ctx
        self._columns: list[int] = list(default_columns)
        self._sort: tuple[SortKey, ...] = ()
        self._restriction: rs.Restriction | None = None
        self._pos = 0
        self._bookmarks: dict[int, tuple[int, Key | None]] = {}
        self._next_bookmark = 3
        self._closed = False

    # --- Row-source hooks -------------------------------------------------------------

    def _count(self) -> int:
        raise NotImplementedError

    def _keys(self, offset: int, limit: int) -> list[Key]:
        raise NotImplementedError

    def _rows(self, keys: list[Key]) -> list[rs.DictRow]:
        raise NotImplementedError

    def _position_of(self, key: Key) -> int | None:
        raise NotImplementedError

    def _changed(self) -> None:
        """Sort order or restriction changed."""

    # --- Public API --------------------------------------------------------------------

    def _enter(self) -> None:
        if self._closed:
            raise errors.InvalidObject("the table is closed")
        self._authorize()

    def _authorize(self) -> None:
        """Raise if the user may no longer read what the table shows (checked on every
        call: rights can be revoked while a table is open)."""

    def set_columns(self, columns: Sequence[int]) -> None:
        """Choose the columns query_rows returns.

        Raises:
            InvalidParameter: not a list of tags, or more than the column limit.
        """
        with self._ctx.db.lock:
            self._enter()
            if not 0 < len(columns) <= self._ctx.limits.max_columns:
                raise errors.InvalidParameter("bad column count")
            for tag in columns:
                if not isinstance(tag, int) or isinstance(tag, bool) or not 0 <= tag <= 0xFFFFFFFF:
                    raise errors.InvalidParameter(f"bad column {tag!r}")
                if pt.prop_type(tag) & pt.MV_INSTANCE:
                    raise errors.TooComplex("MV_INSTANCE columns are not supported")
            self._columns = list(columns)

    def sort_table(self, sort: Sequence[tuple[int, bool]]) -> None:
        """Sort by (tag, descending) keys; resets the cursor and bookmarks."""
        with self._ctx.db.lock:
            self._enter()
            self._sort = check_sort(sort, self._ctx.limits.max_sort_keys)
            self._reset()

    def restrict(self, restriction: rs.Restriction | None) -> None:
        """Filter rows (None removes the filter); resets the cursor and bookmarks."""
        with self._ctx.db.lock:
            self._enter()
            self._restriction = (
                None if restriction is None else rs.check(restriction, self._ctx.limits)
            )
            self._reset()

    def _reset(self) -> None:
        self._pos = 0
        self._bookmarks.clear()
        self._changed()

    def get_row_count(self) -> int:
        """The number of rows (after the restriction)."""
        with self._ctx.db.lock:
            self._enter()
            return self._count()

    def query_position(self) -> tuple[int, int]:
        """(current row, row count) — numerator and denominator of QueryPosition."""
        with self._ctx.db.lock:
            self._enter()
            total = self._count()
            self._pos = min(self._pos, total)
            return self._pos, total

    def query_rows(self, count: int, flags: int = 0) -> list[list[PropValue]]:
        """Read up to ``|count|`` rows (see the module docstring for direction).

        Raises:
            InvalidParameter: count is 0 or not an int.
            UnknownFlags: flags other than TBL_NOADVANCE.
        """
        with self._ctx.db.lock:
            self._enter()
            if not isinstance(count, int) or isinstance(count, bool) or count == 0:
                raise errors.InvalidParameter("row count must be a non-zero int")
            if flags & ~TBL_NOADVANCE:
                raise errors.UnknownFlags(f"0x{flags:X}")
            limit = min(abs(count), self._ctx.limits.max_rows_per_query)
            total = self._count()
            self._pos = min(self._pos, total)
            if count > 0:
                start = self._pos
                keys = self._keys(start, limit)
                if not flags & TBL_NOADVANCE:
                    self._pos = start + len(keys)
            else:
                start = max(0, self._pos - limit)
                keys = self._keys(start, self._pos - start)
                if not flags & TBL_NOADVANCE:
                    self._pos = start
            return [build_row(row, self._columns) for row in self._rows(keys)]

    def _origin(self, origin: int) -> int:
        total = self._count()
        if origin == BOOKMARK_BEGINNING:
            return 0
        if origin == BOOKMARK_CURRENT:
            return min(self._pos, total)
        if origin == BOOKMARK_END:
            return total
        return self._bookmark_position(origin, total)

    def seek_row(self, origin: int, count: int) -> int:
        """Move the cursor ``count`` rows from ``origin``; return the rows moved.

        Raises:
            InvalidBookmark: an unknown bookmark.
        """
        with self._ctx.db.lock:
            self._enter()
            if not isinstance(count, int) or isinstance(count, bool):
                raise errors.InvalidParameter("row count must be an int")
            base = self._origin(origin)
            target = max(0, min(base + count, self._count()))
            self._pos = target
            return target - base

    def create_bookmark(self) -> int:
        """Bookmark the cursor position; return the bookmark handle.

        Raises:
            NotEnoughMemory: too many bookmarks on this table.
        """
        with self._ctx.db.lock:
            self._enter()
            if len(self._bookmarks) >= self._ctx.limits.max_bookmarks:
                raise errors.NotEnoughMemory("too many bookmarks")
            total = self._count()
            self._pos = min(self._pos, total)
            keys = self._keys(self._pos, 1)
            handle = self._next_bookmark
            self._next_bookmark += 1
            self._bookmarks[handle] = (self._pos, keys[0] if keys else None)
            return handle

    def free_bookmark(self, bookmark: int) -> None:
        """Release a bookmark.

        Raises:
            InvalidBookmark: unknown handle.
        """
        with self._ctx.db.lock:
            self._enter()
            if self._bookmarks.pop(bookmark, None) is None:
                raise errors.InvalidBookmark(str(bookmark))

    def _bookmark_position(self, bookmark: int, total: int) -> int:
        entry = self._bookmarks.get(bookmark)
        if entry is None:
            raise errors.InvalidBookmark(str(bookmark))
        pos, key = entry
        if key is None:
            return min(pos, total)
        if self._keys(pos, 1) == [key]:
            return pos
        found = self._position_of(key)
        return min(pos, total) if found is None else found

    def seek_row_bookmark(self, bookmark: int, count: int) -> int:
        """seek_row from a bookmark."""
        return self.seek_row(bookmark, count)

    def find_row(
        self, restriction: rs.Restriction, origin: int = BOOKMARK_CURRENT, flags: int = 0
    ) -> list[PropValue]:
        """Move the cursor to the first row from ``origin`` that matches; return it.

        Raises:
            NotFound: no row matches.
            InvalidBookmark: unknown origin bookmark.
            UnknownFlags: flags other than DIR_BACKWARD.
        """
        with self._ctx.db.lock:
            self._enter()
            if flags & ~DIR_BACKWARD:
                raise errors.UnknownFlags(f"0x{flags:X}")
            res = rs.check(restriction, self._ctx.limits)
            start = self._origin(origin)
            total = self._count()
            backward = bool(flags & DIR_BACKWARD)
            pos = start - 1 if backward else start
            while 0 <= pos < total:
                first = max(0, pos - _FIND_BATCH + 1) if backward else pos
                size = (pos - first + 1) if backward else min(_FIND_BATCH, total - pos)
                keys = self._keys(first, size)
                rows = list(zip(range(first, first + len(keys)), self._rows(keys), strict=True))
                if backward:
                    rows.reverse()
                for index, row in rows:
                    tick()
                    if rs.evaluate(res, row):
                        self._pos = index
                        return build_row(row, self._columns)
                if not keys:
                    break
                pos = first - 1 if backward else first + len(keys)
            raise errors.NotFound("no row matches")

    def close(self) -> None:
        """Release the table."""
        with self._ctx.db.lock:
            self._closed = True
            self._bookmarks.clear()


class MemoryTable(Table):
    """A table evaluated in Python over rows from a loader, cached per version."""

    def __init__(
        self,
        ctx: StoreContext,
        default_columns: Sequence[int],
        loader: Callable[[], list[tuple[Key, rs.DictRow]]],
        version: Callable[[], object],
    ) -> None:
        super().__init__(ctx, default_columns)
        self._loader = loader
        self._version = version
        self._cache_version: object = object()
        self._cache: list[tuple[Key, rs.DictRow]] = []
        self._index: dict[Key, int] = {}

    def _changed(self) -> None:
        self._cache_version = object()

    def _materialize(self) -> list[tuple[Key, rs.DictRow]]:
        version = self._version()
        if version == self._cache_version:
            return self._cache
        rows = self._loader()
        if self._restriction is not None:
            res = self._restriction
            rows = _matching(res, rows)
        if len(rows) > self._ctx.limits.max_materialized_rows:
            raise errors.TableTooBig("too many rows to evaluate this table")
        self._cache = sort_rows(rows, self._sort)
        self._index = {key: i for i, (key, _) in enumerate(self._cache)}
        self._cache_version = version
        return self._cache

    def _count(self) -> int:
        return len(self._materialize())

    def _keys(self, offset: int, limit: int) -> list[Key]:
        return [key for key, _ in self._materialize()[offset : offset + limit]]

    def _rows(self, keys: list[Key]) -> list[rs.DictRow]:
        rows = self._materialize()
        return [rows[self._index[key]][1] for key in keys]

    def _position_of(self, key: Key) -> int | None:
        self._materialize()
        return self._index.get(key)
