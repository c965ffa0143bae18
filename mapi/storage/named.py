"""The named-property map of a mailbox in SQLite: (GUID, name or LID) <-> property id.

Part of the SQLite backend; the core reaches it as ``MailboxDB.named`` (see
:mod:`mapi.storage.api`). Methods take the transaction handle that
:meth:`~mapi.storage.db.MailboxDB.transaction` or :meth:`~mapi.storage.db.MailboxDB.reading`
yielded.

The map is the ``named_props`` table (id, guid, kind, lid, name): one row per name the
mailbox has seen. The rules (which names are tagged properties and need no row, the
order ids are allocated in, the limits) are the model's (:mod:`mapi.model.named`);
this module only looks rows up and adds them. A new id is ``max(id) + 1``, so ids are
never reused as long as rows are never deleted (none is).
"""

from __future__ import annotations

import sqlite3

from mapi.model.limits import Limits
from mapi.model.named import (
    PropName,
    check_name_count,
    check_property_id,
    next_named_id,
    tagged_id,
    tagged_name,
)
from mapi.model.proptags import is_named_id


def _lookup(conn: sqlite3.Connection, name: PropName) -> int | None:
    row = conn.execute(
        "SELECT id FROM named_props WHERE guid = ? AND kind = ? AND lid = ? AND name = ?",
        (name.guid, name.kind, name.lid, name.name),
    ).fetchone()
    return None if row is None else int(row[0])


def _allocate(conn: sqlite3.Connection, name: PropName, limits: Limits) -> int:
    count, top = conn.execute("SELECT count(*), max(id) FROM named_props").fetchone()
    new_id = next_named_id(int(count), None if top is None else int(top), limits)
    conn.execute(
        "INSERT INTO named_props(id, guid, kind, lid, name) VALUES (?, ?, ?, ?, ?)",
        (new_id, name.guid, name.kind, name.lid, name.name),
    )
    return new_id


class SqliteNamedProps:
    """The SQLite implementation (stateless: one per mailbox object)."""

    __slots__ = ()

    def get_ids(
        self, conn: sqlite3.Connection, names: list[PropName], *, create: bool, limits: Limits
    ) -> list[int]:
        """Ids of ``names`` (0 for unknown ones when not creating); call in a write
        transaction when ``create`` is set.

        Raises:
            InvalidParameter: a bad name, or too many names.
            NotEnoughResources: the id range of the store is exhausted.
        """
        check_name_count(names, limits)
        out = []
        for name in names:
            name.validate(limits)
            tagged = tagged_id(name)
            if tagged is not None:
                out.append(tagged)
                continue
            found = _lookup(conn, name)
            if found is not None:
                out.append(found)
            elif not create:
                out.append(0)
            else:
                out.append(_allocate(conn, name, limits))
        return out

    def get_names(self, conn: sqlite3.Connection, ids: list[int]) -> list[PropName | None]:
        """Names of property ids (None where the id is not mapped).

        Raises:
            InvalidParameter: an id that is no property id.
        """
        out: list[PropName | None] = []
        for pid in ids:
            check_property_id(pid)
            if not is_named_id(pid):
                out.append(tagged_name(pid))
                continue
            row = conn.execute(
                "SELECT guid, kind, lid, name FROM named_props WHERE id = ?", (pid,)
            ).fetchone()
            out.append(None if row is None else PropName(row[0], row[1], row[2], row[3]))
        return out

    def is_mapped(self, conn: sqlite3.Connection, pid: int) -> bool:
        """True when a named-range id is mapped in this store."""
        row = conn.execute("SELECT 1 FROM named_props WHERE id = ?", (pid,)).fetchone()
        return row is not None
