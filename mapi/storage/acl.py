"""Folder permissions (ACL rows) in SQLite.

Part of the SQLite backend; the core reaches it as ``MailboxDB.acl`` (see
:mod:`mapi.storage.api`). Methods take the transaction handle that
:meth:`~mapi.storage.db.MailboxDB.transaction` or :meth:`~mapi.storage.db.MailboxDB.reading`
yielded.
"""

from __future__ import annotations


class SqliteAcl:
    """The SQLite implementation (stateless: one per mailbox object)."""

    __slots__ = ()
