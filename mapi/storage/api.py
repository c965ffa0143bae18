"""What the store core asks of a storage backend.

The core (objects, tables, notifications, access, the store facade) holds no SQL and
imports no database module: it opens a mailbox as a :class:`MailboxStorage` and works
inside the transactions it hands out, through one object per job (folders, messages,
contents tables, sync, changes for notifications, permissions, named properties). The
SQLite backend (:mod:`mapi.storage.db` and the modules it wires) is the one
implementation today; a second one (PostgreSQL) is a module beside it that provides the
same objects with the same methods. See ``docs/architecture.md``, "Storage backends".
"""

from __future__ import annotations

from typing import Any, TypeAlias

#: A backend's transaction handle, as :meth:`MailboxStorage.transaction` and
#: :meth:`MailboxStorage.reading` yield it: opaque to the core, which only passes it
#: back to the storage methods it calls inside that transaction.
Txn: TypeAlias = Any
