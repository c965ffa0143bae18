"""Folder rows in SQLite: the hierarchy, folder properties, renames, the delete and copy cascades.

Part of the SQLite backend; the core reaches it as ``MailboxDB.folders`` (see
:mod:`mapi.storage.api`). Methods take the transaction handle that
:meth:`~mapi.storage.db.MailboxDB.transaction` or :meth:`~mapi.storage.db.MailboxDB.reading`
yielded.
"""

from __future__ import annotations


class SqliteFolders:
    """The SQLite implementation (stateless: one per mailbox object)."""

    __slots__ = ()
