"""What the notification engine reads of committed changes, in SQLite.

Part of the SQLite backend; the core reaches it as ``MailboxDB.changes`` (see
:mod:`mapi.storage.api`). Methods take the transaction handle that
:meth:`~mapi.storage.db.MailboxDB.transaction` or :meth:`~mapi.storage.db.MailboxDB.reading`
yielded.

Theory of operation
-------------------
After a commit, :mod:`mapi.notify.changes` renders the batch of changes in one read
snapshot. Rows it renders come through the other job objects (message rows from
``MailboxDB.contents``, folder rows and counts from ``MailboxDB.folders``, rights from
``MailboxDB.acl``); this object answers the two questions only the renderer asks and that
need no row: where a folder is now (to report its parent's hierarchy table), and the
order of a folder's subfolders in a hierarchy table without a sort (ids only: no
folder's properties are read for it).
"""

from __future__ import annotations

import sqlite3


class SqliteChanges:
    """The SQLite implementation (stateless: one per mailbox object)."""

    __slots__ = ()

    def parent_of(self, txn: sqlite3.Connection, folder_id: int) -> tuple[bool, int | None]:
        """(whether folder ``folder_id`` exists, its parent's id: None for the root)."""
        row = txn.execute("SELECT parent_id FROM folders WHERE id = ?", (folder_id,)).fetchone()
        return (False, None) if row is None else (True, None if row[0] is None else int(row[0]))

    def subfolder_order(self, txn: sqlite3.Connection, parent_id: int) -> list[int]:
        """The ids of the subfolders of ``parent_id`` by display name then id (the order
        of a hierarchy table without a sort)."""
        rows = txn.execute(
            "SELECT id FROM folders WHERE parent_id = ? ORDER BY name, id", (parent_id,)
        )
        return [int(r[0]) for r in rows]


__all__ = ["SqliteChanges"]
