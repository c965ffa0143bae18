"""The Internet-mail view of a mailbox (IMAP UIDs, POP3 unique ids) in SQLite.

Part of the SQLite backend; the mail front doors (``internet_mail.store``) reach it as
``MailboxDB.mailview`` (see :class:`mapi.storage.api.MailViewStorage`). Methods take the
transaction handle that :meth:`~mapi.storage.db.MailboxDB.transaction` or
:meth:`~mapi.storage.db.MailboxDB.reading` yielded.

Theory of operation
-------------------
IMAP names a message by a UID that is fixed for the message's life in one folder and
never reused there ([RFC 9051] 2.3.1.1); MAPI names it by a message id that a move
keeps. So the view keeps its own map:

``mail_folders``
    One row per folder the view has seen: its ``uidvalidity`` (chosen once, kept by a
    rename or a move of the folder), ``uidnext`` (only grows: an expunged message's uid
    is never given again), the lowest ``highestmodseq`` the folder may report (raised
    when messages leave it, so a client sees that something changed) and whether the
    user subscribed to it. Rows go with their folder (``ON DELETE CASCADE``).
``mail_uids``
    One row per (folder, message) with its uid, the IMAP-only ``\\Deleted`` flag and
    the change number that flag was last set at, and a cache of the message's size as
    the view renders it (``size_cn``: the message's change number the cached sizes
    belong to; -1: none). A message that left the folder leaves a *stale* row, which
    :meth:`SqliteMailView.prune` drops; if it comes back it gets a new uid.
``mail_vanished``
    One row per uid that left a folder (expunged, moved out, deleted through MAPI),
    with the change number it is reported at: :meth:`SqliteMailView.prune` moves the
    stale rows here, at the change number it raises the folder's ``highestmodseq`` to,
    so IMAP's QRESYNC can tell a client which of its uids vanished since the modseq it
    last saw (:meth:`SqliteMailView.vanished`). Kept for the folder's life.

The listing of a folder is one statement: every message with its row of the view (if
any), its read-state change number and the length of its stored MIME original when
that is kept as a stream. The tables are :data:`mapi.storage.schema.UPGRADE_4_TO_5` and
:data:`~mapi.storage.schema.UPGRADE_5_TO_6`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from mapi.model import proptags as pt
from mapi.storage.contents import MessageRecord, record_of
from mapi.storage.schema import MESSAGE_SELECT, OWNER_MESSAGE

_SELECT: Final = ", ".join("m." + column.strip() for column in MESSAGE_SELECT.split(","))
_LISTING: Final = f"""
SELECT {_SELECT}, v.uid, v.deleted, v.modseq, v.size_cn, v.size, v.crlf_size,
       r.change_num, s.length
FROM messages m
LEFT JOIN mail_uids v ON v.folder_id = m.folder_id AND v.message_id = m.id
LEFT JOIN read_state r ON r.message_id = m.id
LEFT JOIN streams s ON s.owner_kind = {OWNER_MESSAGE} AND s.owner_id = m.id
    AND s.tag = {pt.PR_MIME_ORIGINAL}
WHERE m.folder_id = ?
"""


class FolderView(NamedTuple):
    """One folder's row of the view."""

    folder_id: int
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool


class ViewRow(NamedTuple):
    """One message of a folder with its row of the view (``uid`` None: not given one
    yet)."""

    record: MessageRecord
    uid: int | None
    deleted: bool
    #: The change number of the last change of the IMAP-only state (0: none).
    modseq: int
    #: The change number of the last read-flag change (0: none).
    read_cn: int
    #: ``record.change_num`` when the cached sizes are current, else something else.
    size_cn: int
    size: int
    #: The size with CRLF line ends (-1: not computed yet).
    crlf_size: int
    #: Bytes of PR_MIME_ORIGINAL when it is stored as a stream (None: inline or none).
    mime_length: int | None


def _folder(row: Sequence[Any]) -> FolderView:
    fid, validity, uidnext, highest, subscribed = row
    return FolderView(int(fid), int(validity), int(uidnext), int(highest), bool(subscribed))


_FOLDER_SELECT: Final = (
    "SELECT folder_id, uidvalidity, uidnext, highestmodseq, subscribed FROM mail_folders"
)


class SqliteMailView:
    """The SQLite implementation (stateless: one per mailbox object)."""

    __slots__ = ()

    def folders(self, txn: sqlite3.Connection) -> dict[int, FolderView]:
        """Every folder row of the view, by folder id."""
        return {row[0]: _folder(row) for row in txn.execute(_FOLDER_SELECT)}

    def folder(self, txn: sqlite3.Connection, folder_id: int) -> FolderView | None:
        """The view's row of a folder, or None."""
        row = txn.execute(_FOLDER_SELECT + " WHERE folder_id = ?", (folder_id,)).fetchone()
        return None if row is None else _folder(row)

    def add_folder(
        self, txn: sqlite3.Connection, folder_id: int, uidvalidity: int, *, subscribed: bool
    ) -> FolderView:
        """Give a folder its row (write transaction): ``uidvalidity``, or one above every
        other folder's if that is not more; nothing when it has one. Returns the row."""
        top = txn.execute("SELECT max(uidvalidity) FROM mail_folders").fetchone()[0]
        validity = max(uidvalidity, (top or 0) + 1)
        txn.execute(
            "INSERT OR IGNORE INTO mail_folders"
            "(folder_id, uidvalidity, uidnext, highestmodseq, subscribed) VALUES (?, ?, 1, 1, ?)",
            (folder_id, min(validity, 0xFFFFFFFF), int(subscribed)),
        )
        found = self.folder(txn, folder_id)
        assert found is not None
        return found

    def set_subscribed(self, txn: sqlite3.Connection, folder_id: int, subscribed: bool) -> None:
        """Record the folder's subscription (it has a row)."""
        txn.execute(
            "UPDATE mail_folders SET subscribed = ? WHERE folder_id = ?",
            (int(subscribed), folder_id),
        )

    def raise_highest(self, txn: sqlite3.Connection, folder_id: int, modseq: int) -> None:
        """Make the folder's lowest reportable HIGHESTMODSEQ at least ``modseq``."""
        txn.execute(
            "UPDATE mail_folders SET highestmodseq = max(highestmodseq, ?) WHERE folder_id = ?",
            (modseq, folder_id),
        )

    def listing(self, txn: sqlite3.Connection, folder_id: int) -> list[ViewRow]:
        """Every message of the folder with its view row (one statement), in no order."""
        out = []
        for row in txn.execute(_LISTING, (folder_id,)):
            uid, deleted, modseq, size_cn, size, crlf, read_cn, length = row[13:]
            size_cn = -1 if size_cn is None else size_cn
            crlf = -1 if crlf is None else crlf
            view = ViewRow(record_of(row), uid, bool(deleted), modseq or 0, read_cn or 0,
                           size_cn, size or 0, crlf, length)  # fmt: skip
            out.append(view)
        return out

    def row_count(self, txn: sqlite3.Connection, folder_id: int) -> int:
        """How many view rows the folder has (stale ones included)."""
        return int(
            txn.execute("SELECT count(*) FROM mail_uids WHERE folder_id = ?", (folder_id,))
            .fetchone()[0]
        )  # fmt: skip

    def prune(self, txn: sqlite3.Connection, folder_id: int, modseq: int) -> int:
        """Drop the rows of messages no longer in the folder, recording their uids as
        vanished at ``modseq``, and raise the folder's lowest reportable HIGHESTMODSEQ
        to ``modseq`` (write transaction); returns how many."""
        gone = (
            " FROM mail_uids WHERE folder_id = ? AND NOT EXISTS (SELECT 1 FROM messages m"
            " WHERE m.id = mail_uids.message_id AND m.folder_id = mail_uids.folder_id)"
        )
        txn.execute(
            "INSERT OR REPLACE INTO mail_vanished(folder_id, uid, modseq)"
            " SELECT folder_id, uid, ?" + gone,
            (modseq, folder_id),
        )
        cur = txn.execute("DELETE" + gone, (folder_id,))
        self.raise_highest(txn, folder_id, modseq)
        return cur.rowcount

    def vanished(self, txn: sqlite3.Connection, folder_id: int, since: int) -> list[int]:
        """The uids that left the folder at a change number above ``since``, ascending."""
        rows = txn.execute(
            "SELECT uid FROM mail_vanished WHERE folder_id = ? AND modseq > ? ORDER BY uid",
            (folder_id, since),
        )
        return [int(row[0]) for row in rows]

    def assign(
        self, txn: sqlite3.Connection, folder_id: int, message_ids: Sequence[int]
    ) -> list[int]:
        """Give ``message_ids`` (messages of the folder without a uid) the next uids, in
        their order; returns them."""
        view = self.folder(txn, folder_id)
        assert view is not None
        uids = list(range(view.uidnext, view.uidnext + len(message_ids)))
        txn.executemany(
            "INSERT INTO mail_uids(folder_id, uid, message_id) VALUES (?, ?, ?)",
            [(folder_id, uid, mid) for uid, mid in zip(uids, message_ids, strict=True)],
        )
        txn.execute(
            "UPDATE mail_folders SET uidnext = ? WHERE folder_id = ?",
            (view.uidnext + len(message_ids), folder_id),
        )
        return uids

    def message_of(self, txn: sqlite3.Connection, folder_id: int, uid: int) -> int | None:
        """The message with ``uid`` in the folder, if it is still there."""
        row = txn.execute(
            "SELECT v.message_id FROM mail_uids v JOIN messages m ON m.id = v.message_id"
            " AND m.folder_id = v.folder_id WHERE v.folder_id = ? AND v.uid = ?",
            (folder_id, uid),
        ).fetchone()
        return None if row is None else int(row[0])

    def set_deleted(
        self, txn: sqlite3.Connection, folder_id: int, uids: Sequence[int], deleted: bool,
        modseq: int,
    ) -> None:  # fmt: skip
        """Set or clear the IMAP-only ``\\Deleted`` flag of ``uids`` at ``modseq``."""
        txn.executemany(
            "UPDATE mail_uids SET deleted = ?, modseq = ? WHERE folder_id = ? AND uid = ?",
            [(int(deleted), modseq, folder_id, uid) for uid in uids],
        )

    def set_sizes(
        self, txn: sqlite3.Connection, folder_id: int, sizes: Sequence[tuple[int, int, int, int]]
    ) -> None:
        """Cache ``(uid, change number, size, crlf size)`` of messages of the folder."""
        txn.executemany(
            "UPDATE mail_uids SET size_cn = ?, size = ?, crlf_size = ?"
            " WHERE folder_id = ? AND uid = ?",
            [(cn, size, crlf, folder_id, uid) for uid, cn, size, crlf in sizes],
        )


__all__ = ["FolderView", "SqliteMailView", "ViewRow"]
