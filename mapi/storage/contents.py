"""Contents and hierarchy table queries in SQLite: the rows, restrictions and sorts as SQL.

Part of the SQLite backend; the core reaches it as ``MailboxDB.contents`` (see
:mod:`mapi.storage.api`). Methods take the transaction handle that
:meth:`~mapi.storage.db.MailboxDB.transaction` or :meth:`~mapi.storage.db.MailboxDB.reading`
yielded.
"""

from __future__ import annotations


class SqliteContents:
    """The SQLite implementation (stateless: one per mailbox object)."""

    __slots__ = ()
