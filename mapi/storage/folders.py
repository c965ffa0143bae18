"""Folder rows in SQLite: the hierarchy, folder properties, renames, the delete and copy cascades.

Part of the SQLite backend; the core (:mod:`mapi.objects.folders`,
:mod:`mapi.objects.hierarchy`) reaches it as ``MailboxDB.folders`` (see
:mod:`mapi.storage.api`). Methods take the transaction handle that
:meth:`~mapi.storage.db.MailboxDB.transaction` or :meth:`~mapi.storage.db.MailboxDB.reading`
yielded; the writing ones run inside the caller's transaction.

Theory of operation
-------------------
A folder is a row of ``folders`` (``id, parent_id, name, folder_type, role, created,
modified, change_num, props``; ``props`` is the packed property blob of
:mod:`mapi.model.properties`); the core sees it as a :class:`FolderRow` with the
properties unpacked. Display names are unique among siblings through the
``(parent_id, name)`` index (``COLLATE NOCASE``). Special folders carry a ``role``.

Counts are never stored: :meth:`SqliteFolders.counts` is ``count(*)`` (and sums of
unread flags and sizes) over the ``(folder_id, ...)`` index of ``messages`` and the
``parent_id`` index of ``folders``, so they cannot drift.

Ancestry, subtrees and subtree heights are recursive CTEs over ``parent_id``. A
final deletion (:meth:`SqliteFolders.delete_tree`, :meth:`SqliteFolders.empty`,
:meth:`SqliteFolders.delete_messages`) deletes the top rows only: the schema's
``ON DELETE CASCADE`` foreign keys take subfolders, messages, recipients,
attachments and embedded messages with them, and the chunk triggers release the
stream data. Every operation that makes an object leave a folder writes its
tombstone (:mod:`mapi.storage.tombstones`) in the same transaction; a moved subtree
gets the move's change number on every folder, so sync shows it as new in its new
place. Copies (:meth:`SqliteFolders.copy_tree`, :meth:`SqliteFolders.copy_messages`)
duplicate rows with :func:`mapi.storage.messages.copy_message` and then check the
mailbox's quota (:func:`mapi.storage.messages.check_mailbox_room`): a copy past it
raises MAPI_E_NOT_ENOUGH_DISK and the caller's transaction keeps nothing of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from mapi.model import errors
from mapi.model.limits import Limits
from mapi.model.properties import PropData, pack_props, unpack_props
from mapi.storage import tombstones as tomb
from mapi.storage.messages import check_mailbox_room, copy_message

#: The columns of a folder row, in :class:`FolderRow` order.
FOLDER_SELECT: Final = (
    "id, parent_id, name, folder_type, role, created, modified, change_num, props"
)


class FolderRow(NamedTuple):
    """One folder as stored (its fields in :data:`FOLDER_SELECT` order)."""

    id: int
    parent_id: int | None
    name: str
    folder_type: int
    #: The special-folder role (``inbox``, ``deleted``...), None for a user folder.
    role: str | None
    created: int
    modified: int
    change_num: int
    #: The stored (not computed) properties.
    props: dict[int, PropData]

    @classmethod
    def from_sql(cls, row: Sequence[Any]) -> FolderRow:
        """A row selected as :data:`FOLDER_SELECT` (``props`` still packed)."""
        return cls(
            int(row[0]), None if row[1] is None else int(row[1]), str(row[2]), int(row[3]),
            row[4], int(row[5]), int(row[6]), int(row[7]), unpack_props(row[8]),
        )  # fmt: skip


class FolderCounts(NamedTuple):
    """What a folder's computed counts are made of."""

    messages: int
    unread: int
    #: The sum of the messages' sizes.
    size: int
    subfolders: int


class StandardFolder(NamedTuple):
    """One folder of the standard hierarchy a new mailbox gets."""

    role: str
    #: The role of its parent (None: the root).
    parent_role: str | None
    name: str
    folder_type: int
    props: dict[int, PropData]


_INSERT: Final = (
    "INSERT INTO folders(parent_id, name, folder_type, role, created, modified, change_num,"
    " props) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_SUBTREE: Final = (
    "WITH RECURSIVE down(id) AS (SELECT ?"
    " UNION ALL SELECT f.id FROM folders f JOIN down ON f.parent_id = down.id)"
)


class SqliteFolders:
    """The SQLite implementation (stateless: one per mailbox object)."""

    __slots__ = ()

    # --- Reading ---------------------------------------------------------------------

    def get(self, txn: sqlite3.Connection, folder_id: int) -> FolderRow | None:
        """The folder ``folder_id``, or None."""
        row = txn.execute(f"SELECT {FOLDER_SELECT} FROM folders WHERE id = ?", (folder_id,))
        found = row.fetchone()
        return None if found is None else FolderRow.from_sql(found)

    def row(self, txn: sqlite3.Connection, folder_id: int) -> FolderRow:
        """The folder ``folder_id``.

        Raises:
            ObjectDeleted: no such folder (any more).
        """
        found = self.get(txn, folder_id)
        if found is None:
            raise errors.ObjectDeleted(f"folder {folder_id} does not exist")
        return found

    def child(self, txn: sqlite3.Connection, parent_id: int, folder_id: int) -> FolderRow | None:
        """The folder ``folder_id`` if it is a direct child of ``parent_id``, else None."""
        found = self.get(txn, folder_id)
        return found if found is not None and found.parent_id == parent_id else None

    def children(self, txn: sqlite3.Connection, parent_id: int) -> list[FolderRow]:
        """The subfolders of ``parent_id``, by name then id (the hierarchy table's order)."""
        rows = txn.execute(
            f"SELECT {FOLDER_SELECT} FROM folders WHERE parent_id = ? ORDER BY name, id",
            (parent_id,),
        ).fetchall()
        return [FolderRow.from_sql(r) for r in rows]

    def user_children(self, txn: sqlite3.Connection, parent_id: int) -> list[int]:
        """The ids of the subfolders of ``parent_id`` that are not special folders."""
        rows = txn.execute(
            "SELECT id FROM folders WHERE parent_id = ? AND role IS NULL", (parent_id,)
        )
        return [int(r[0]) for r in rows]

    def role_folder(self, txn: sqlite3.Connection, role: str) -> int:
        """The id of the special folder with ``role``.

        Raises:
            NotFound: the mailbox has none.
        """
        row = txn.execute("SELECT id FROM folders WHERE role = ?", (role,)).fetchone()
        if row is None:
            raise errors.NotFound(f"no {role} folder")
        return int(row[0])

    def counts(self, txn: sqlite3.Connection, folder_id: int) -> FolderCounts:
        """Messages, unread messages, their total size, and subfolders of a folder."""
        count, unread, size = txn.execute(
            "SELECT count(*), coalesce(sum((flags & 1) = 0), 0), coalesce(sum(size), 0)"
            " FROM messages WHERE folder_id = ?",
            (folder_id,),
        ).fetchone()
        (children,) = txn.execute(
            "SELECT count(*) FROM folders WHERE parent_id = ?", (folder_id,)
        ).fetchone()
        return FolderCounts(int(count), int(unread), int(size), int(children))

    def has_messages(self, txn: sqlite3.Connection, folder_id: int) -> bool:
        """True when the folder holds a message."""
        row = txn.execute("SELECT 1 FROM messages WHERE folder_id = ? LIMIT 1", (folder_id,))
        return row.fetchone() is not None

    def has_subfolders(self, txn: sqlite3.Connection, folder_id: int) -> bool:
        """True when the folder has a subfolder."""
        row = txn.execute("SELECT 1 FROM folders WHERE parent_id = ? LIMIT 1", (folder_id,))
        return row.fetchone() is not None

    def child_named(
        self, txn: sqlite3.Connection, parent_id: int | None, name: str, *,
        excluding: int | None = None,
    ) -> int | None:  # fmt: skip
        """The id of the subfolder of ``parent_id`` named ``name`` (case-insensitively),
        other than ``excluding``; None if there is none (always for ``parent_id`` None:
        the root has no siblings)."""
        if excluding is None:
            row = txn.execute(
                "SELECT id FROM folders WHERE parent_id = ? AND name = ?", (parent_id, name)
            ).fetchone()
        else:
            row = txn.execute(
                "SELECT id FROM folders WHERE parent_id = ? AND name = ? AND id <> ?",
                (parent_id, name, excluding),
            ).fetchone()
        return None if row is None else int(row[0])

    def unique_name(self, txn: sqlite3.Connection, parent_id: int, name: str) -> str:
        """``name``, or ``name (2)``, ``name (3)``... : the first no subfolder of
        ``parent_id`` has."""
        candidate, n = name, 1
        while self.child_named(txn, parent_id, candidate) is not None:
            n += 1
            candidate = f"{name} ({n})"
        return candidate

    def ancestors(self, txn: sqlite3.Connection, folder_id: int) -> list[int]:
        """``folder_id`` and the folders above it, up to the root."""
        rows = txn.execute(
            "WITH RECURSIVE up(id, parent_id) AS ("
            " SELECT id, parent_id FROM folders WHERE id = ?"
            " UNION ALL SELECT f.id, f.parent_id FROM folders f JOIN up ON f.id = up.parent_id)"
            " SELECT id FROM up",
            (folder_id,),
        )
        return [int(r[0]) for r in rows]

    def subtree(self, txn: sqlite3.Connection, folder_id: int) -> list[int]:
        """``folder_id`` and every folder below it."""
        rows = txn.execute(f"{_SUBTREE} SELECT id FROM down", (folder_id,))
        return [int(r[0]) for r in rows]

    def subtree_height(self, txn: sqlite3.Connection, folder_id: int) -> int:
        """How many levels of folders are below ``folder_id`` (0: none)."""
        row = txn.execute(
            "WITH RECURSIVE down(id, depth) AS (SELECT ?, 0"
            " UNION ALL SELECT f.id, down.depth + 1 FROM folders f"
            " JOIN down ON f.parent_id = down.id)"
            " SELECT max(depth) FROM down",
            (folder_id,),
        ).fetchone()
        return int(row[0])

    def message_ids(self, txn: sqlite3.Connection, folder_id: int) -> list[int]:
        """The ids of the messages of a folder."""
        rows = txn.execute("SELECT id FROM messages WHERE folder_id = ?", (folder_id,))
        return [int(r[0]) for r in rows]

    def messages_in(
        self, txn: sqlite3.Connection, folder_id: int, message_ids: Sequence[int]
    ) -> list[int]:
        """Those of ``message_ids`` that are messages of ``folder_id`` (in their order,
        repeats kept)."""
        found = []
        for mid in message_ids:
            row = txn.execute("SELECT folder_id FROM messages WHERE id = ?", (mid,)).fetchone()
            if row is not None and row[0] == folder_id:
                found.append(mid)
        return found

    def read_flag_differs(
        self, txn: sqlite3.Connection, folder_id: int, message_ids: Sequence[int] | None,
        *, read: bool,
    ) -> list[int]:  # fmt: skip
        """The messages whose read flag is not ``read``: of ``message_ids`` (messages of
        the folder), or of every message of the folder when None."""
        want = int(read)
        if message_ids is None:
            rows = txn.execute(
                "SELECT id FROM messages WHERE folder_id = ? AND (flags & 1) <> ?",
                (folder_id, want),
            )
            return [int(r[0]) for r in rows]
        return [
            m
            for m in message_ids
            if txn.execute("SELECT flags & 1 FROM messages WHERE id = ?", (m,)).fetchone()[0]
            != want
        ]

    # --- Writing folders -------------------------------------------------------------

    def create_standard(
        self, txn: sqlite3.Connection, folders: Sequence[StandardFolder], now: int
    ) -> bool:
        """Create ``folders`` (parents first, change number 0) unless the mailbox has a
        root folder; True when they were created."""
        if txn.execute("SELECT 1 FROM folders WHERE role = 'root'").fetchone():
            return False
        ids: dict[str, int] = {}
        for spec in folders:
            parent = ids.get(spec.parent_role) if spec.parent_role else None
            ids[spec.role] = txn.execute(
                _INSERT,
                (parent, spec.name, spec.folder_type, spec.role, now, now, 0,
                 pack_props(spec.props)),
            ).fetchone()[0]  # fmt: skip
        return True

    def create(
        self, txn: sqlite3.Connection, parent_id: int, name: str, *, folder_type: int,
        now: int, change_num: int, props: dict[int, PropData],
    ) -> int:  # fmt: skip
        """Add a user folder (no role) below ``parent_id``; return its id."""
        row = txn.execute(
            _INSERT, (parent_id, name, folder_type, None, now, now, change_num, pack_props(props))
        ).fetchone()
        return int(row[0])

    def write_props(
        self, txn: sqlite3.Connection, folder_id: int, props: dict[int, PropData], *,
        modified: int, change_num: int,
    ) -> None:  # fmt: skip
        """Replace the stored properties of a folder and stamp the change."""
        txn.execute(
            "UPDATE folders SET props = ?, modified = ?, change_num = ? WHERE id = ?",
            (pack_props(props), modified, change_num, folder_id),
        )

    def rename(self, txn: sqlite3.Connection, folder_id: int, name: str) -> None:
        """Set a folder's display name (the caller checked for a clash)."""
        txn.execute("UPDATE folders SET name = ? WHERE id = ?", (name, folder_id))

    def move_tree(
        self, txn: sqlite3.Connection, folder_id: int, parent_id: int, name: str, *,
        change_num: int, now: int, left: int | None,
    ) -> None:  # fmt: skip
        """Move a folder (with its subtree) below ``parent_id`` under ``name``; every
        folder of the subtree gets ``change_num``. ``left``: the folder it leaves, which
        gets a tombstone for it (None: no tombstone, e.g. a rename in place)."""
        txn.execute(
            "UPDATE folders SET parent_id = ?, name = ? WHERE id = ?", (parent_id, name, folder_id)
        )
        if left is not None:
            tomb.tombstone(txn, tomb.FOLDER, [folder_id], left, change_num, now)
        txn.execute(
            f"{_SUBTREE} UPDATE folders SET change_num = ? WHERE id IN (SELECT id FROM down)",
            (folder_id, change_num),
        )

    def delete_tree(
        self, txn: sqlite3.Connection, folder_id: int, *, parent_id: int, change_num: int,
        now: int,
    ) -> None:  # fmt: skip
        """Delete a folder for good with everything below it (subfolders, messages,
        recipients, attachments, embedded messages, stream data), leaving a tombstone
        in ``parent_id``."""
        tomb.tombstone(txn, tomb.FOLDER, [folder_id], parent_id, change_num, now)
        txn.execute("DELETE FROM folders WHERE id = ?", (folder_id,))

    def copy_tree(
        self, txn: sqlite3.Connection, src: int, parent_id: int, name: str, *,
        recursive: bool, limits: Limits, now: Callable[[], int],
        change_number: Callable[[], int],
    ) -> int:  # fmt: skip
        """Copy folder ``src`` with its messages (and, ``recursive``, its subfolders)
        below ``parent_id`` as ``name``; return the new folder's id. Each new folder
        takes a fresh ``change_number()`` and ``now()``; its messages take the folder's.

        Raises:
            NotEnoughDisk: the copy would take the mailbox past its quota.
        """
        new_id = self._copy_tree(txn, src, parent_id, name, recursive, now, change_number)
        check_mailbox_room(txn, limits, None)  # copies count
        return new_id

    def _copy_tree(
        self, txn: sqlite3.Connection, src: int, parent_id: int, name: str, recursive: bool,
        now: Callable[[], int], change_number: Callable[[], int],
    ) -> int:  # fmt: skip
        cn = change_number()
        stamp = now()
        new_id = int(
            txn.execute(
                "INSERT INTO folders(parent_id, name, folder_type, role, created, modified,"
                " change_num, props) SELECT ?, ?, folder_type, NULL, ?, ?, ?, props"
                " FROM folders WHERE id = ? RETURNING id",
                (parent_id, name, stamp, stamp, cn, src),
            ).fetchone()[0]
        )
        for mid in self.message_ids(txn, src):
            copy_message(txn, mid, change_num=cn, folder_id=new_id)
        if recursive:
            children = txn.execute(
                "SELECT id, name FROM folders WHERE parent_id = ?", (src,)
            ).fetchall()
            for child, child_name in children:
                self._copy_tree(txn, child, new_id, child_name, True, now, change_number)
        return new_id

    def empty(
        self, txn: sqlite3.Connection, folder_id: int, *, change_num: int, now: int
    ) -> tuple[list[int], list[int]]:
        """Delete every message and every user subfolder (with its subtree) of a folder
        for good, with tombstones; return (message ids, subfolder ids) deleted."""
        mids = self.message_ids(txn, folder_id)
        fids = self.user_children(txn, folder_id)
        tomb.tombstone(txn, tomb.MESSAGE, mids, folder_id, change_num, now)
        tomb.tombstone(txn, tomb.FOLDER, fids, folder_id, change_num, now)
        txn.execute("DELETE FROM messages WHERE folder_id = ?", (folder_id,))
        txn.execute("DELETE FROM folders WHERE parent_id = ? AND role IS NULL", (folder_id,))
        return mids, fids

    # --- Writing messages of folders -------------------------------------------------

    def delete_messages(
        self, txn: sqlite3.Connection, folder_id: int, message_ids: Sequence[int], *,
        change_num: int, now: int,
    ) -> None:  # fmt: skip
        """Delete messages of ``folder_id`` for good, with tombstones."""
        tomb.tombstone(txn, tomb.MESSAGE, message_ids, folder_id, change_num, now)
        for mid in message_ids:
            txn.execute("DELETE FROM messages WHERE id = ?", (mid,))

    def move_messages(
        self, txn: sqlite3.Connection, message_ids: Sequence[int], src: int, dest: int, *,
        change_num: int, now: int,
    ) -> None:  # fmt: skip
        """Move messages of ``src`` into ``dest`` (keeping their ids) with change number
        ``change_num``, leaving tombstones in ``src`` when it is another folder."""
        if dest != src:
            tomb.tombstone(txn, tomb.MESSAGE, message_ids, src, change_num, now)
        for mid in message_ids:
            txn.execute(
                "UPDATE messages SET folder_id = ?, change_num = ? WHERE id = ?",
                (dest, change_num, mid),
            )

    def copy_messages(
        self, txn: sqlite3.Connection, message_ids: Sequence[int], dest: int, *,
        change_num: int, limits: Limits,
    ) -> list[int]:  # fmt: skip
        """Copy messages (with recipients, attachments, embedded messages) into
        ``dest``; return the new ids, in order.

        Raises:
            NotEnoughDisk: the copies would take the mailbox past its quota.
        """
        new = [copy_message(txn, mid, change_num=change_num, folder_id=dest) for mid in message_ids]
        if new:
            check_mailbox_room(txn, limits, None)  # copies count
        return new

    def set_read(
        self, txn: sqlite3.Connection, message_ids: Sequence[int], *, read: bool, change_num: int
    ) -> None:
        """Set (``read``) or clear MSGFLAG_READ on messages, recording the read-state
        change at ``change_num`` for sync."""
        op = "flags | 1" if read else "flags & ~1"
        for mid in message_ids:
            txn.execute(f"UPDATE messages SET flags = {op} WHERE id = ?", (mid,))
        tomb.note_read(txn, message_ids, change_num)


__all__ = [
    "FOLDER_SELECT",
    "FolderCounts",
    "FolderRow",
    "SqliteFolders",
    "StandardFolder",
]
