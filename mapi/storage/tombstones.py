"""Bookkeeping for incremental sync: tombstones, read-state changes, pruning.

Theory of operation
-------------------
[MS-OXCFXICS] 3.2.5.3 in our simple form (the reading side is
:class:`~mapi.storage.sync.SqliteSync`, for :mod:`mapi.objects.sync`). The storage
operations that delete, move or mark messages read write these rows in their own
transaction (:mod:`mapi.storage.folders`, :mod:`mapi.storage.messages`).
Every folder and message row carries the change number (CN) of its last change;
the mailbox-wide counter is ``meta.change_num``. What a CN cannot show is an object
that *left* a folder: these get a tombstone row ``(kind, object id, folder it left,
CN of the leaving, time)``, written in the same transaction as the deletion or move.
A move also gives the object a fresh CN, so it shows up as new in its destination.

Read-flag changes get their own CN in ``read_state`` (as ICS reports read-state
changes apart from content changes), so marking a message read does not make other
open copies of it stale (MAPI_E_OBJECT_CHANGED).

Tombstones are pruned when older than :data:`TOMBSTONE_RETENTION` or beyond
:data:`MAX_TOMBSTONES` rows; ``meta.tombstone_horizon`` remembers the highest CN
pruned, so a sync state older than it is refused (the client resynchronises).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Final

from mapi.model.entryid import EntryKind

#: Tombstones older than this (FILETIME ticks: 30 days) may be pruned.
TOMBSTONE_RETENTION: Final = 30 * 24 * 3600 * 10_000_000
#: At most this many tombstones are kept per mailbox.
MAX_TOMBSTONES: Final = 100_000
#: Prune every this many tombstone ids.
_PRUNE_EVERY: Final = 1024

FOLDER: Final = int(EntryKind.FOLDER)
MESSAGE: Final = int(EntryKind.MESSAGE)


def tombstone(
    conn: sqlite3.Connection, kind: int, object_ids: Iterable[int], folder_id: int, cn: int,
    now: int,
) -> None:  # fmt: skip
    """Record that objects left ``folder_id`` at change number ``cn`` (in a transaction)."""
    last = 0
    for object_id in object_ids:
        last = conn.execute(
            "INSERT INTO tombstones(kind, object_id, folder_id, change_num, time)"
            " VALUES (?, ?, ?, ?, ?) RETURNING id",
            (kind, object_id, folder_id, cn, now),
        ).fetchone()[0]
    if last and last % _PRUNE_EVERY == 0:
        prune(conn, now)


def note_read(conn: sqlite3.Connection, message_ids: Iterable[int], cn: int) -> None:
    """Record a read-flag change of messages at change number ``cn``."""
    conn.executemany(
        "INSERT INTO read_state(message_id, change_num) VALUES (?, ?)"
        " ON CONFLICT(message_id) DO UPDATE SET change_num = excluded.change_num",
        [(mid, cn) for mid in message_ids],
    )


def horizon(conn: sqlite3.Connection) -> int:
    """The highest change number whose tombstones may have been pruned (0: none)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'tombstone_horizon'").fetchone()
    return 0 if row is None else int(row[0])


def prune(
    conn: sqlite3.Connection, now: int, *, retention: int = TOMBSTONE_RETENTION,
    max_rows: int = MAX_TOMBSTONES,
) -> int:  # fmt: skip
    """Drop old tombstones (in a transaction); return how many were dropped."""
    cut = conn.execute(
        "SELECT coalesce(max(change_num), 0) FROM tombstones WHERE time < ?", (now - retention,)
    ).fetchone()[0]
    count = conn.execute("SELECT count(*) FROM tombstones").fetchone()[0]
    if count > max_rows:
        row = conn.execute(
            "SELECT change_num FROM tombstones ORDER BY change_num DESC LIMIT 1 OFFSET ?",
            (max_rows,),
        ).fetchone()
        cut = max(cut, int(row[0]))
    if not cut:
        return 0
    dropped = conn.execute("DELETE FROM tombstones WHERE change_num <= ?", (cut,)).rowcount
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('tombstone_horizon', ?)"
        " ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
        (cut,),
    )
    return int(dropped)


__all__ = ["FOLDER", "MESSAGE", "horizon", "note_read", "prune", "tombstone"]
