"""The named-property map of a mailbox in SQLite: (GUID, name or LID) <-> property id.

Part of the SQLite backend; the core reaches it as ``MailboxDB.named`` (see
:mod:`mapi.storage.api`). Methods take the transaction handle that
:meth:`~mapi.storage.db.MailboxDB.transaction` or :meth:`~mapi.storage.db.MailboxDB.reading`
yielded.
"""

from __future__ import annotations


class SqliteNamedProps:
    """The SQLite implementation (stateless: one per mailbox object)."""

    __slots__ = ()
