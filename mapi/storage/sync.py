"""Change numbers and what changed since a sync state, in SQLite.

Part of the SQLite backend; the core reaches it as ``MailboxDB.sync`` (see
:mod:`mapi.storage.api`). Methods take the transaction handle that
:meth:`~mapi.storage.db.MailboxDB.transaction` or :meth:`~mapi.storage.db.MailboxDB.reading`
yielded.

Theory of operation
-------------------
The storage side of :mod:`mapi.objects.sync` ([MS-OXCFXICS] in our simple form). The
change-number counter is ``meta.change_num``; every ``folders`` and ``messages`` row
carries the CN of its last change, ``tombstones`` the objects that left a folder and
``read_state`` the read-flag changes (written by :mod:`mapi.storage.tombstones` inside
the storage operations that delete, move or mark messages read).

A page of changes since CN ``since`` merges several *sources*, each a query selecting
``(cn, id)`` rows with a CN condition: changed messages, message tombstones and read
changes of the folder (:meth:`SqliteSync.contents_page`), or changed folders and folder
tombstones of the subtree below a folder, found with a recursive CTE
(:meth:`SqliteSync.hierarchy_page`). Each source is read with ``cn > since ORDER BY cn
LIMIT max_items + 1``; the merged entries are cut at ``max_items`` but never inside one
CN: the entries of the boundary CN are read again in full with ``cn = boundary``, and the
page then covers up to that CN. Deleted ids come without those that are changed in the
same page or back in the scope (moved out and back in); read changes come with the
message's current flags.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from mapi.storage import tombstones as tomb

_CHANGED, _DELETED, _READ = 0, 1, 2

_SUBTREE: Final = (
    "WITH RECURSIVE down(id) AS (SELECT ?"
    " UNION ALL SELECT f.id FROM folders f JOIN down ON f.parent_id = down.id) "
)

#: A source of sync entries: (entry type, SQL selecting ``cn, id`` with a ``{cn}``
#: placeholder for the CN condition, its params before the CN).
_Source = tuple[int, str, list[Any]]


@dataclass(frozen=True, slots=True)
class SyncPage:
    """One page of changes since a CN, in CN order within each list (database ids).

    ``deleted`` leaves out objects changed in this page or present in the scope again;
    ``read`` holds (message id, current PR_MESSAGE_FLAGS) of messages whose read flag
    changed but that did not otherwise change. ``upto`` is the CN the page covers up to
    (the counter when complete); ``more`` tells that changes above ``upto`` wait.
    """

    changed: list[int]
    deleted: list[int]
    read: list[tuple[int, int]]
    upto: int
    more: bool


def _page(
    conn: sqlite3.Connection, sources: Sequence[_Source], since: int, max_items: int
) -> tuple[list[tuple[int, int, int]], int | None]:
    """Entries (cn, type, id) in CN order, at most ``max_items`` unless one CN is larger.

    Returns the entries and the CN they cover up to when cut (None: complete).
    """
    entries: list[tuple[int, int, int]] = []
    for kind, sql, params in sources:
        rows = conn.execute(
            sql.format(cn="> ?") + " ORDER BY 1 LIMIT ?", [*params, since, max_items + 1]
        )
        entries.extend((int(cn), kind, int(oid)) for cn, oid in rows)
    entries.sort()
    if len(entries) <= max_items:
        return entries, None
    boundary = entries[max_items - 1][0]
    out = [e for e in entries if e[0] < boundary]
    for kind, sql, params in sources:
        rows = conn.execute(sql.format(cn="= ?"), [*params, boundary])
        out.extend((int(cn), kind, int(oid)) for cn, oid in rows)
    return out, boundary


def _split(entries: list[tuple[int, int, int]]) -> tuple[list[int], list[int], list[int]]:
    out: tuple[dict[int, None], dict[int, None], dict[int, None]] = ({}, {}, {})
    for _, kind, oid in entries:
        out[kind][oid] = None
    return list(out[0]), [i for i in out[1] if i not in out[0]], list(out[2])


def _present(conn: sqlite3.Connection, sql: str, scope: int, ids: list[int]) -> set[int]:
    if not ids:
        return set()
    marks = ",".join("?" * len(ids))
    return {int(r[0]) for r in conn.execute(f"{sql} ({marks})", [scope, *ids])}


class SqliteSync:
    """The SQLite implementation (stateless: one per mailbox object)."""

    __slots__ = ()

    # --- Change numbers and tombstones ---------------------------------------------------

    def next_change_number(self, txn: sqlite3.Connection) -> int:
        """Allocate a change number (inside a write transaction)."""
        row = txn.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'change_num' RETURNING value"
        ).fetchone()
        return int(row[0])

    def counter(self, txn: sqlite3.Connection) -> int:
        """The highest change number allocated so far."""
        return int(txn.execute("SELECT value FROM meta WHERE key = 'change_num'").fetchone()[0])

    def horizon(self, txn: sqlite3.Connection) -> int:
        """The highest change number whose tombstones may have been pruned (0: none)."""
        return tomb.horizon(txn)

    def prune(self, txn: sqlite3.Connection, now: int) -> int:
        """Drop old tombstones (inside a write transaction); return how many."""
        return tomb.prune(txn, now)

    # --- What changed -------------------------------------------------------------------

    def contents_page(
        self, txn: sqlite3.Connection, folder_id: int, since: int, max_items: int
    ) -> SyncPage:
        """Messages of ``folder_id`` changed (created, modified, moved in), deleted (moved
        out) or read since CN ``since`` (-1: initial, changes only), one page."""
        fid = folder_id
        sources: list[_Source] = [
            (_CHANGED, "SELECT change_num, id FROM messages"
             " WHERE folder_id = ? AND change_num {cn}", [fid]),
        ]  # fmt: skip
        if since >= 0:
            sources += [
                (_DELETED, "SELECT change_num, object_id FROM tombstones"
                 " WHERE kind = ? AND folder_id = ? AND change_num {cn}", [tomb.MESSAGE, fid]),
                (_READ, "SELECT r.change_num, m.id FROM read_state r"
                 " JOIN messages m ON m.id = r.message_id WHERE m.folder_id = ?"
                 " AND m.change_num <= ? AND r.change_num {cn}", [fid, since]),
            ]  # fmt: skip
        entries, cut = _page(txn, sources, since, max_items)
        changed, deleted, read = _split(entries)
        present = _present(
            txn, "SELECT id FROM messages WHERE folder_id = ? AND id IN", fid, deleted
        )
        flags = {
            int(m): int(f)
            for m, f in txn.execute(
                f"SELECT id, flags FROM messages WHERE id IN ({','.join('?' * len(read))})",
                read,
            )
        }
        return SyncPage(
            changed,
            [m for m in deleted if m not in present],
            [(m, flags[m]) for m in read if m in flags],
            self.counter(txn) if cut is None else cut,
            cut is not None,
        )

    def hierarchy_page(
        self, txn: sqlite3.Connection, folder_id: int, since: int, max_items: int
    ) -> SyncPage:
        """Folders below ``folder_id`` (the whole subtree, not itself) changed (created,
        modified, moved in) or deleted (moved out) since CN ``since``, one page. A folder
        that left is reported alone; its descendants are implied."""
        fid = folder_id
        sources: list[_Source] = [
            (_CHANGED, _SUBTREE + "SELECT change_num, id FROM folders"
             " WHERE id IN (SELECT id FROM down) AND id <> ? AND change_num {cn}", [fid, fid]),
        ]  # fmt: skip
        if since >= 0:
            sources.append(
                (_DELETED, _SUBTREE + "SELECT change_num, object_id FROM tombstones"
                 " WHERE kind = ? AND folder_id IN (SELECT id FROM down)"
                 " AND change_num {cn}", [fid, tomb.FOLDER]),
            )  # fmt: skip
        entries, cut = _page(txn, sources, since, max_items)
        changed, deleted, _ = _split(entries)
        present = _present(
            txn, _SUBTREE + "SELECT id FROM down WHERE id <> ?1 AND id IN", fid, deleted
        )
        return SyncPage(
            changed,
            [f for f in deleted if f not in present],
            [],
            self.counter(txn) if cut is None else cut,
            cut is not None,
        )


__all__ = ["SqliteSync", "SyncPage"]
