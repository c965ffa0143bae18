"""Contents tables: message rows and the SQL fast path.

Theory of operation
-------------------
[MS-OXCTABL] 3.2.5 over [MS-OXCFOLD] 3.2.5.14 (RopGetContentsTable). A contents table
whose sort keys are all hot columns and whose restriction SQL can express runs
entirely in SQLite: the row count is ``count(*)`` over the ``(folder_id, column,
id)`` index, a page is ``ORDER BY column, id LIMIT ? OFFSET ?`` selecting ids only
(a covering-index walk, no table row touched for skipped rows), then one
``id IN (...)`` fetch of the page. Ties break on ``id`` in the direction of the last
sort key so a single-key sort is one index scan.

Otherwise the table is evaluated in Python (:class:`~mapi.tables.table.MemoryTable`): the
conjuncts SQL can express still pre-filter in SQLite, the remainder is evaluated per
row (sub-restrictions load recipients and attachments lazily; content tests on
large values read them from chunk rows), and the result is sorted with the same
ordering (``NULL`` first, NOCASE strings).

Translation keeps MAPI's two-valued logic: every leaf is ``(col IS NOT NULL AND
...)`` so that ``NOT`` of a test on a missing property is true, as in Python.
Content tests call the ``mapi_content`` SQL function, which is
:func:`mapi.model.restrictions.content_match` itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from mapi.access import permissions
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model import restrictions as rs
from mapi.model.entryid import change_key, instance_key
from mapi.model.properties import PropData, from_stream_bytes, unpack_props
from mapi.objects.context import StoreContext
from mapi.storage import chunks
from mapi.storage.messages import load_recipients, row_props
from mapi.storage.schema import MESSAGE_COLUMNS, MESSAGE_SELECT, OWNER_ATTACHMENT, OWNER_MESSAGE
from mapi.tables.table import Key, MemoryTable, SortKey, Table

DEFAULT_COLUMNS = (
    pt.PR_ENTRYID,
    pt.PR_INSTANCE_KEY,
    pt.PR_SUBJECT_W,
    pt.PR_MESSAGE_DELIVERY_TIME,
    pt.PR_MESSAGE_FLAGS,
    pt.PR_MESSAGE_SIZE,
    pt.PR_MESSAGE_CLASS_W,
)
_OPS = {rs.RELOP_LT: "<", rs.RELOP_LE: "<=", rs.RELOP_GT: ">", rs.RELOP_GE: ">=",
        rs.RELOP_EQ: "=", rs.RELOP_NE: "<>"}  # fmt: skip
_STRING_COLUMNS = ("subject", "message_class")


def message_computed(ctx: StoreContext, row: Sequence[Any]) -> dict[int, PropData]:
    """Server-owned properties of a message row selected with MESSAGE_SELECT."""
    db_id, folder_id = int(row[0]), row[1]
    out: dict[int, PropData] = {
        pt.PR_INSTANCE_KEY: instance_key(db_id),
        pt.PR_MESSAGE_SIZE: row[5],
        pt.PR_MESSAGE_SIZE_EXTENDED: row[5],
        pt.PR_CREATION_TIME: row[8],
        pt.PR_LAST_MODIFICATION_TIME: row[9],
        pt.PR_CHANGE_KEY: change_key(ctx.uid, int(row[10])),
        pt.PR_HASATTACH: bool(row[11]),
        pt.PR_OBJECT_TYPE: pt.MAPI_MESSAGE,
        pt.PR_STORE_ENTRYID: ctx.store_eid(),
        pt.PR_STORE_RECORD_KEY: ctx.uid,
        pt.PR_MAPPING_SIGNATURE: ctx.uid,
    }
    if folder_id is not None:
        eid = ctx.message_eid(db_id)
        out[pt.PR_ENTRYID] = eid
        out[pt.PR_RECORD_KEY] = eid
        out[pt.PR_PARENT_ENTRYID] = ctx.folder_eid(int(folder_id))
    return out


def message_row(ctx: StoreContext, conn: sqlite3.Connection, row: Sequence[Any]) -> rs.DictRow:
    """A table row for a message: stored, hot and computed properties."""
    props = row_props(row)
    props.update(message_computed(ctx, row))
    db_id = int(row[0])

    def sub(which: int) -> list[rs.DictRow]:
        if which == pt.PR_MESSAGE_RECIPIENTS:
            return [rs.DictRow(r) for r in load_recipients(conn, db_id)]
        rows = conn.execute(
            "SELECT id, num, size, props FROM attachments WHERE message_id = ? ORDER BY num",
            (db_id,),
        ).fetchall()
        out = []
        for attach_id, num, size, blob in rows:
            aprops = unpack_props(blob)
            aprops[pt.PR_ATTACH_NUM] = num
            aprops[pt.PR_ATTACH_SIZE] = size
            del attach_id
            out.append(rs.DictRow(aprops))
        return out

    def large(tag: int) -> PropData | None:
        length = chunks.lengths(conn, OWNER_MESSAGE, db_id).get(tag)
        if length is None or length > ctx.limits.max_value_bytes:
            return None
        return from_stream_bytes(tag, chunks.read(conn, OWNER_MESSAGE, db_id, tag, 0, length))

    return rs.DictRow(props, sub, large)


# --- SQL translation ------------------------------------------------------------------


def to_sql(res: rs.Restriction) -> tuple[str, list[object]] | None:
    """A WHERE fragment equivalent to ``res``, or None when SQL cannot express it."""
    if isinstance(res, rs.And | rs.Or):
        parts = [to_sql(r) for r in res.restrictions]
        if any(p is None for p in parts):
            return None
        if not parts:
            return ("1", []) if isinstance(res, rs.And) else ("0", [])
        joiner = " AND " if isinstance(res, rs.And) else " OR "
        sql = joiner.join(f"({p[0]})" for p in parts if p is not None)
        return sql, [v for p in parts if p is not None for v in p[1]]
    if isinstance(res, rs.Not):
        inner = to_sql(res.restriction)
        return None if inner is None else (f"NOT ({inner[0]})", inner[1])
    if isinstance(res, rs.Comment):
        return ("1", []) if res.restriction is None else to_sql(res.restriction)
    if isinstance(res, rs.Exist):
        col = MESSAGE_COLUMNS.get(pt.canonical_tag(res.tag))
        return None if col is None else (f"{col} IS NOT NULL", [])
    if isinstance(res, rs.Property):
        col = MESSAGE_COLUMNS.get(pt.canonical_tag(res.tag))
        if col is None or res.relop not in _OPS or isinstance(res.value, list | bytes):
            return None
        value = int(res.value) if isinstance(res.value, bool) else res.value
        return f"({col} IS NOT NULL AND {col} {_OPS[res.relop]} ?)", [value]
    if isinstance(res, rs.Content):
        col = MESSAGE_COLUMNS.get(pt.canonical_tag(res.tag))
        if col not in _STRING_COLUMNS or not isinstance(res.value, str):
            return None
        return (
            f"({col} IS NOT NULL AND mapi_content({col}, ?, ?))",
            [res.value, res.fuzzy_level],
        )
    if isinstance(res, rs.Bitmask):
        col = MESSAGE_COLUMNS.get(pt.canonical_tag(res.tag))
        if col != "flags":
            return None
        op = "=" if res.bmr == rs.BMR_EQZ else "<>"
        return f"({col} IS NOT NULL AND ({col} & ?) {op} 0)", [res.mask]
    return None


def split_sql(res: rs.Restriction | None) -> tuple[str, list[object], rs.Restriction | None]:
    """(SQL prefilter, params, remainder for Python) of a restriction."""
    if res is None:
        return "1", [], None
    whole = to_sql(res)
    if whole is not None:
        return whole[0], whole[1], None
    if isinstance(res, rs.And):
        sql_parts, params, rest = [], [], []
        for child in res.restrictions:
            part = to_sql(child)
            if part is None:
                rest.append(child)
            else:
                sql_parts.append(f"({part[0]})")
                params.extend(part[1])
        remainder = rest[0] if len(rest) == 1 else rs.And(tuple(rest))
        return (" AND ".join(sql_parts) or "1"), params, remainder
    return "1", [], res


def order_sql(sort: Sequence[SortKey]) -> str | None:
    """ORDER BY clause for a sort on hot columns, or None."""
    parts = []
    for tag, desc in sort:
        col = MESSAGE_COLUMNS.get(pt.canonical_tag(tag))
        if col is None:
            return None
        parts.append(f"{col} {'DESC' if desc else 'ASC'}")
    last_desc = bool(sort) and sort[-1][1]
    parts.append(f"id {'DESC' if last_desc else 'ASC'}")
    return ", ".join(parts)


class ContentsTable(MemoryTable):
    """The contents table of one folder (SQL fast path when possible)."""

    def __init__(self, ctx: StoreContext, folder_id: int, *, checked: bool = True) -> None:
        """``checked``: every call checks the user's READ_ANY on the folder (a table a
        client holds); False for the store's own tables (the notification renderer,
        which filters what it sends by each subscriber's rights)."""
        super().__init__(ctx, DEFAULT_COLUMNS, self._load, lambda: self._ctx.db.generation)
        self._folder_id = folder_id
        self._checked = checked
        self._plan: tuple[str, list[object], str] | None = self._make_plan()

    def _authorize(self) -> None:
        if self._checked:
            self._ctx.require(self._folder_id, permissions.READ_ANY)

    def _make_plan(self) -> tuple[str, list[object], str] | None:
        where, params, rest = split_sql(self._restriction)
        order = order_sql(self._sort)
        if rest is not None or order is None:
            return None
        return where, params, order

    def _changed(self) -> None:
        super()._changed()
        self._plan = self._make_plan()

    @property
    def uses_sql(self) -> bool:
        """True when the current sort and restriction run entirely in SQLite."""
        return self._plan is not None

    # Python path: load candidates with the SQL-expressible part of the restriction.
    def _load(self) -> list[tuple[Key, rs.DictRow]]:
        where, params, _ = split_sql(self._restriction)
        with self._ctx.db.reading() as conn:
            rows = conn.execute(
                f"SELECT {MESSAGE_SELECT} FROM messages WHERE folder_id = ? AND ({where})"
                " ORDER BY id",
                [self._folder_id, *params],
            ).fetchall()
            if len(rows) > self._ctx.limits.max_materialized_rows:
                raise errors.TableTooBig("too many rows to evaluate this table")
            return [(int(r[0]), message_row(self._ctx, conn, r)) for r in rows]

    # SQL path overrides.
    def _count(self) -> int:
        if self._plan is None:
            return super()._count()
        where, params, _ = self._plan
        with self._ctx.db.reading() as conn:
            return int(
                conn.execute(
                    f"SELECT count(*) FROM messages WHERE folder_id = ? AND ({where})",
                    [self._folder_id, *params],
                ).fetchone()[0]
            )

    def _keys(self, offset: int, limit: int) -> list[Key]:
        if self._plan is None:
            return super()._keys(offset, limit)
        if limit <= 0:
            return []
        where, params, order = self._plan
        with self._ctx.db.reading() as conn:
            return [
                int(r[0])
                for r in conn.execute(
                    f"SELECT id FROM messages WHERE folder_id = ? AND ({where})"
                    f" ORDER BY {order} LIMIT ? OFFSET ?",
                    [self._folder_id, *params, limit, offset],
                )
            ]

    def _rows(self, keys: list[Key]) -> list[rs.DictRow]:
        if self._plan is None:
            return super()._rows(keys)
        if not keys:
            return []
        marks = ",".join("?" * len(keys))
        with self._ctx.db.reading() as conn:
            fetched = {
                int(r[0]): r
                for r in conn.execute(
                    f"SELECT {MESSAGE_SELECT} FROM messages WHERE id IN ({marks})", keys
                )
            }
            large: dict[int, set[int]] = {}
            for owner, tag in conn.execute(
                f"SELECT owner_id, tag FROM streams WHERE owner_kind = {OWNER_MESSAGE}"
                f" AND owner_id IN ({marks})",
                keys,
            ):
                large.setdefault(int(owner), set()).add(int(tag))
            out = []
            for key in keys:
                row = fetched.get(key)
                if row is None:  # deleted between the two statements
                    out.append(rs.DictRow({}))
                    continue
                dict_row = message_row(self._ctx, conn, row)
                dict_row.large_tags = frozenset(large.get(key, ()))
                out.append(dict_row)
            return out

    def _position_of(self, key: Key) -> int | None:
        if self._plan is None:
            return super()._position_of(key)
        where, params, order = self._plan
        with self._ctx.db.reading() as conn:
            ids = conn.execute(
                f"SELECT id FROM messages WHERE folder_id = ? AND ({where}) ORDER BY {order}",
                [self._folder_id, *params],
            )
            for index, (db_id,) in enumerate(ids):
                if db_id == key:
                    return index
        return None


__all__ = ["ContentsTable", "Table", "message_computed", "message_row"]
_ = OWNER_ATTACHMENT
