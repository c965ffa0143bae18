"""Contents table queries in SQLite: message rows, restrictions and sorts as SQL.

Part of the SQLite backend; the core reaches it as ``MailboxDB.contents`` (see
:mod:`mapi.storage.api`). Methods take the transaction handle that
:meth:`~mapi.storage.db.MailboxDB.transaction` or :meth:`~mapi.storage.db.MailboxDB.reading`
yielded.

Theory of operation
-------------------
The SQL side of :mod:`mapi.tables.contents`. A contents table whose sort keys are all
hot columns (:data:`~mapi.storage.schema.MESSAGE_COLUMNS`) and whose restriction SQL can
express gets a :class:`ContentsPlan` (:meth:`SqliteContents.plan`) and runs entirely in
SQLite: the row count is ``count(*)`` over the ``(folder_id, column, id)`` index, a page
is ``ORDER BY column, id LIMIT ? OFFSET ?`` selecting ids only (a covering-index walk, no
table row touched for skipped rows), then one ``id IN (...)`` fetch of the page
(:meth:`SqliteContents.records`). Ties break on ``id`` in the direction of the last sort
key so a single-key sort is one index scan.

Otherwise the core evaluates the table in Python, and the conjuncts SQL can express
still pre-filter the candidate rows here (:meth:`SqliteContents.prefilter`,
:meth:`SqliteContents.candidates`).

Translation keeps MAPI's two-valued logic: every leaf is ``(col IS NOT NULL AND ...)``
so that ``NOT`` of a test on a missing property is true, as in Python. Content tests
call the ``mapi_content`` SQL function (registered by :func:`mapi.storage.db.connect`),
which is :func:`mapi.model.restrictions.content_match` itself.

Message rows leave this module as :class:`MessageRecord` values; the sub-objects a
restriction may look into (recipients, attachments) and large values are read on demand
(:meth:`SqliteContents.recipients`, :meth:`SqliteContents.attachments`,
:meth:`SqliteContents.read_large`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from mapi.model import proptags as pt
from mapi.model import restrictions as rs
from mapi.model.properties import PropData, unpack_props
from mapi.storage import chunks
from mapi.storage.messages import load_recipients, row_props
from mapi.storage.schema import MESSAGE_COLUMNS, MESSAGE_SELECT, OWNER_MESSAGE

_OPS: Final = {rs.RELOP_LT: "<", rs.RELOP_LE: "<=", rs.RELOP_GT: ">", rs.RELOP_GE: ">=",
               rs.RELOP_EQ: "=", rs.RELOP_NE: "<>"}  # fmt: skip
_STRING_COLUMNS: Final = ("subject", "message_class")


class MessageRecord(NamedTuple):
    """One message row as the core sees it.

    ``props`` holds the stored properties with the hot columns folded in (a fresh dict
    the caller may keep and extend); the other fields are the server-owned values. (A
    named tuple: a page builds one per row, and a frozen dataclass costs a third of a
    row's decoding more.)
    """

    id: int
    folder_id: int | None
    props: dict[int, PropData]
    size: int
    created: int
    modified: int
    change_num: int
    has_attach: bool


def record_of(row: Sequence[Any]) -> MessageRecord:
    """The record of a row selected with :data:`~mapi.storage.schema.MESSAGE_SELECT`
    (SQLite returns its INTEGER columns as ints already)."""
    return MessageRecord(
        row[0], row[1], row_props(row), row[5], row[8], row[9], row[10], bool(row[11])
    )


@dataclass(frozen=True, slots=True)
class ContentsPlan:
    """A contents table SQLite runs entirely: WHERE fragment, its params, ORDER BY."""

    where: str
    params: tuple[object, ...]
    order: str


@dataclass(frozen=True, slots=True)
class Prefilter:
    """The part of a restriction SQLite evaluates before the core sees candidate rows."""

    where: str
    params: tuple[object, ...]


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


def order_sql(sort: Sequence[tuple[int, bool]]) -> str | None:
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


class SqliteContents:
    """The SQLite implementation (stateless: one per mailbox object)."""

    __slots__ = ()

    # --- Plans (no database access) ------------------------------------------------------

    def plan(
        self, restriction: rs.Restriction | None, sort: Sequence[tuple[int, bool]]
    ) -> ContentsPlan | None:
        """The plan of a table SQLite can run entirely, or None (the core evaluates it)."""
        where, params, rest = split_sql(restriction)
        order = order_sql(sort)
        if rest is not None or order is None:
            return None
        return ContentsPlan(where, tuple(params), order)

    def prefilter(
        self, restriction: rs.Restriction | None
    ) -> tuple[Prefilter, rs.Restriction | None]:
        """The part of ``restriction`` SQLite evaluates, and the remainder (None: nothing
        left) the core must evaluate on the candidates."""
        where, params, rest = split_sql(restriction)
        return Prefilter(where, tuple(params)), rest

    # --- The SQL path ---------------------------------------------------------------------

    def count(self, txn: sqlite3.Connection, folder_id: int, plan: ContentsPlan) -> int:
        """The number of rows of the table."""
        return int(
            txn.execute(
                f"SELECT count(*) FROM messages WHERE folder_id = ? AND ({plan.where})",
                (folder_id, *plan.params),
            ).fetchone()[0]
        )

    def keys(
        self, txn: sqlite3.Connection, folder_id: int, plan: ContentsPlan, offset: int, limit: int
    ) -> list[int]:
        """The message ids of rows ``offset`` to ``offset + limit`` in table order."""
        return [
            int(r[0])
            for r in txn.execute(
                f"SELECT id FROM messages WHERE folder_id = ? AND ({plan.where})"
                f" ORDER BY {plan.order} LIMIT ? OFFSET ?",
                (folder_id, *plan.params, limit, offset),
            )
        ]

    def position(
        self, txn: sqlite3.Connection, folder_id: int, plan: ContentsPlan, key: int
    ) -> int | None:
        """The index of message ``key`` in table order, or None if it is not a row."""
        ids = txn.execute(
            f"SELECT id FROM messages WHERE folder_id = ? AND ({plan.where}) ORDER BY {plan.order}",
            (folder_id, *plan.params),
        )
        for index, (db_id,) in enumerate(ids):
            if db_id == key:
                return index
        return None

    def records(self, txn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, MessageRecord]:
        """The messages of ``ids`` that exist, by id (one statement)."""
        marks = ",".join("?" * len(ids))
        return {
            int(r[0]): record_of(r)
            for r in txn.execute(
                f"SELECT {MESSAGE_SELECT} FROM messages WHERE id IN ({marks})", ids
            )
        }

    def large_tags(self, txn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, frozenset[int]]:
        """Message id -> tags of its values stored as streams (ids without any left out)."""
        marks = ",".join("?" * len(ids))
        found: dict[int, set[int]] = {}
        for owner, tag in txn.execute(
            f"SELECT owner_id, tag FROM streams WHERE owner_kind = {OWNER_MESSAGE}"
            f" AND owner_id IN ({marks})",
            ids,
        ):
            found.setdefault(int(owner), set()).add(int(tag))
        return {key: frozenset(tags) for key, tags in found.items()}

    # --- The Python path -------------------------------------------------------------------

    def candidates(
        self, txn: sqlite3.Connection, folder_id: int, prefilter: Prefilter, limit: int
    ) -> list[MessageRecord]:
        """The messages of a folder the prefilter selects, in id order: at most
        ``limit + 1`` of them, so that the caller sees when there are more than ``limit``."""
        rows = txn.execute(
            f"SELECT {MESSAGE_SELECT} FROM messages WHERE folder_id = ? AND ({prefilter.where})"
            " ORDER BY id LIMIT ?",
            (folder_id, *prefilter.params, limit + 1),
        ).fetchall()
        return [record_of(r) for r in rows]

    # --- Single rows and what a restriction looks into ---------------------------------

    def record(
        self, txn: sqlite3.Connection, message_id: int, folder_id: int | None = None
    ) -> MessageRecord | None:
        """Message ``message_id`` (only if it is in ``folder_id``, when given), or None."""
        if folder_id is None:
            row = txn.execute(
                f"SELECT {MESSAGE_SELECT} FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
        else:
            row = txn.execute(
                f"SELECT {MESSAGE_SELECT} FROM messages WHERE id = ? AND folder_id = ?",
                (message_id, folder_id),
            ).fetchone()
        return None if row is None else record_of(row)

    def recipients(self, txn: sqlite3.Connection, message_id: int) -> list[dict[int, PropData]]:
        """The committed recipient rows of a message (with PR_ROWID), in row order."""
        return load_recipients(txn, message_id)

    def attachments(self, txn: sqlite3.Connection, message_id: int) -> list[dict[int, PropData]]:
        """The committed attachments of a message (with PR_ATTACH_NUM and
        PR_ATTACH_SIZE), in number order."""
        out = []
        for num, size, blob in txn.execute(
            "SELECT num, size, props FROM attachments WHERE message_id = ? ORDER BY num",
            (message_id,),
        ):
            props = unpack_props(blob)
            props[pt.PR_ATTACH_NUM] = num
            props[pt.PR_ATTACH_SIZE] = size
            out.append(props)
        return out

    def read_large(
        self, txn: sqlite3.Connection, message_id: int, tag: int, max_bytes: int
    ) -> bytes | None:
        """All the bytes of a message's large value ``tag``; None when it has none or it
        is longer than ``max_bytes``."""
        length = chunks.lengths(txn, OWNER_MESSAGE, message_id).get(tag)
        if length is None or length > max_bytes:
            return None
        return chunks.read(txn, OWNER_MESSAGE, message_id, tag, 0, length)


__all__ = [
    "ContentsPlan",
    "MessageRecord",
    "Prefilter",
    "SqliteContents",
    "order_sql",
    "record_of",
    "split_sql",
    "to_sql",
]
