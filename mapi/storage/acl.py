"""Folder permissions (ACL rows) in SQLite.

Part of the SQLite backend; the core (:mod:`mapi.access.permissions`, the folder
objects) reaches it as ``MailboxDB.acl`` (see :mod:`mapi.storage.api`). Methods take
the transaction handle that :meth:`~mapi.storage.db.MailboxDB.transaction` or
:meth:`~mapi.storage.db.MailboxDB.reading` yielded.

Theory of operation
-------------------
The ``acl`` table holds one row ``(folder_id, member, rights)`` per folder and member,
unique on ``(folder_id, member)``; ``member`` is a directory user id or
:data:`DEFAULT_MEMBER` (everyone else). A member's rights on a folder are its own row,
else the folder's default row, else nothing (no inheritance): one indexed lookup that
prefers the member's row. Rights 0 are never stored: setting them deletes the row.
Rows go with their folder (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import sqlite3

from mapi.model.rights import DEFAULT_MEMBER, check_rights

#: The ACL member that stands for everyone without a row of their own.


class SqliteAcl:
    """The SQLite implementation (stateless: one per mailbox object)."""

    __slots__ = ()

    def rights(self, txn: sqlite3.Connection, folder_id: int, member: str) -> int:
        """Rights of ``member`` on a folder: its row, else the default row, else 0."""
        row = txn.execute(
            "SELECT rights FROM acl WHERE folder_id = ? AND member IN (?, ?)"
            " ORDER BY member = ? DESC LIMIT 1",
            (folder_id, member, DEFAULT_MEMBER, member),
        ).fetchone()
        return 0 if row is None else int(row[0])

    def set(self, txn: sqlite3.Connection, folder_id: int, member: str, rights: int) -> None:
        """Set (rights > 0) or remove (rights == 0) the ACL row of a member.

        Raises:
            InvalidParameter: bits outside the rights model.
        """
        check_rights(rights)
        if rights:
            txn.execute(
                "INSERT INTO acl(folder_id, member, rights) VALUES (?, ?, ?)"
                " ON CONFLICT(folder_id, member) DO UPDATE SET rights = excluded.rights",
                (folder_id, member, rights),
            )
        else:
            txn.execute("DELETE FROM acl WHERE folder_id = ? AND member = ?", (folder_id, member))

    def members(self, txn: sqlite3.Connection, folder_id: int) -> list[tuple[str, int]]:
        """The ACL rows of a folder, as (member, rights), sorted by member."""
        rows = txn.execute(
            "SELECT member, rights FROM acl WHERE folder_id = ? ORDER BY member", (folder_id,)
        )
        return [(str(m), int(r)) for m, r in rows]

    def grants_anything(self, txn: sqlite3.Connection, member: str) -> bool:
        """True when some folder grants ``member`` (or everyone) any right."""
        row = txn.execute(
            "SELECT 1 FROM acl WHERE member IN (?, ?) AND rights <> 0 LIMIT 1",
            (member, DEFAULT_MEMBER),
        ).fetchone()
        return row is not None


__all__ = ["DEFAULT_MEMBER", "SqliteAcl"]
