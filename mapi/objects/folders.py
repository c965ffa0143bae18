"""Folders: the standard hierarchy, folder objects and their operations.

Theory of operation
-------------------
[MS-OXCFOLD] 3.2.5 (RopCreateFolder, RopDeleteFolder, RopMoveFolder, RopCopyFolder,
RopEmptyFolder, RopMoveCopyMessages, RopDeleteMessages, RopSetReadFlags,
RopGetHierarchyTable, RopGetContentsTable) and [MS-OXOSFLD] (special folders).

A mailbox is created on first use with the root folder, the IPM subtree ("Top of
Information Store") and the special folders below it; each special folder has a
*role* (``inbox``, ``deleted``...) so it is found without trusting display names.
Folders are not transacted: every change commits at once in one SQLite transaction.
Display names are unique among siblings, case-insensitively (MAPI_E_COLLISION).
Special folders cannot be deleted, moved or renamed (MAPI_E_NO_ACCESS).

A *soft* delete (of a folder or of messages) moves the objects into Deleted Items;
inside Deleted Items, or with ``DELETE_HARD_DELETE``, deletion is final and cascades
(subfolders, messages, recipients, attachments, embedded messages, chunks). Moving
a folder below itself fails with MAPI_E_FOLDER_CYCLE. Deleting a folder that still
has messages or subfolders needs ``DEL_MESSAGES`` / ``DEL_FOLDERS``
(MAPI_E_HAS_MESSAGES / MAPI_E_HAS_FOLDERS otherwise).

Counts are computed, never stored: PR_CONTENT_COUNT and PR_CONTENT_UNREAD are
``count(*)`` over the ``(folder_id, ...)`` indexes, so they cannot drift.

Copies (of messages or folders, not moves) add to the mailbox's size: one that takes
it past its quota fails with MAPI_E_NOT_ENOUGH_DISK and copies nothing
(:mod:`mapi.objects.quota`).

Every operation records what it changed for the notification hub
(:func:`mapi.notify.changes.record`, published after the commit) and for incremental sync
(fresh change numbers on moves, tombstones in the folder an object left,
read-state change numbers; :mod:`mapi.storage.tombstones`).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from mapi.access import permissions
from mapi.access.directory import Directory
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model import restrictions as rs
from mapi.model.entryid import EntryKind
from mapi.model.properties import PropData, pack_props, unpack_props, validate
from mapi.notify.changes import Change, Op, record
from mapi.objects.base import MapiObject
from mapi.objects.context import StoreContext
from mapi.objects.hierarchy import (
    FOLDER_SELECT,
    HIERARCHY_COLUMNS,
    ROLE_TAGS,
    STANDARD_FOLDERS,
    _ancestors,
    _check_name,
    _row,
    _subtree,
    _subtree_height,
    _touch_subtree,
    _unique_name,
    ensure_standard_folders,
    folder_props,
    role_folder,
)
from mapi.objects.messages import Message
from mapi.storage import tombstones as tomb
from mapi.storage.messages import check_mailbox_room, copy_message
from mapi.storage.propbag import PropBag
from mapi.tables.contents import ContentsTable
from mapi.tables.table import MemoryTable

# RopDeleteFolder flags ([MS-OXCFOLD] 2.2.1.3.1).
DEL_MESSAGES: Final = 0x01
DEL_FOLDERS: Final = 0x04
DELETE_HARD_DELETE: Final = 0x10
# Hierarchy table flags.
CONVENIENT_DEPTH: Final = 0x01
#: What the directory's user ids look like (uuid4 hex).
_USER_ID_RE: Final = re.compile(r"[0-9a-f]{32}")


def _directory(ctx: StoreContext) -> Directory | None:
    """The user directory behind a store context: its mail router is the
    :class:`~mapi.store.ObjectStore`, which holds it (None for tools without one)."""
    directory = getattr(ctx.router, "directory", None)
    return directory if isinstance(directory, Directory) else None


def _folder_change(
    op: Op, fid: int, parent: int | None, old_parent: int | None = None,
    old_id: int | None = None,
) -> Change:  # fmt: skip
    return Change(
        op=op, folder=True, object_id=fid, parent_id=parent, old_parent_id=old_parent,
        old_id=old_id,
    )  # fmt: skip


def _message_change(
    op: Op, mid: int, parent: int, old_parent: int | None = None, old_id: int | None = None
) -> Change:
    return Change(
        op=op, folder=False, object_id=mid, parent_id=parent, old_parent_id=old_parent,
        old_id=old_id,
    )  # fmt: skip


_COMPUTED_TAGS: Final = (
    pt.PR_ENTRYID, pt.PR_RECORD_KEY, pt.PR_INSTANCE_KEY, pt.PR_STORE_ENTRYID,
    pt.PR_STORE_RECORD_KEY, pt.PR_MAPPING_SIGNATURE, pt.PR_OBJECT_TYPE, pt.PR_FOLDER_TYPE,
    pt.PR_CONTENT_COUNT, pt.PR_CONTENT_UNREAD, pt.PR_ASSOC_CONTENT_COUNT, pt.PR_SUBFOLDERS,
    pt.PR_FOLDER_CHILD_COUNT, pt.PR_CREATION_TIME, pt.PR_LAST_MODIFICATION_TIME,
    pt.PR_CHANGE_KEY, pt.PR_MESSAGE_SIZE, pt.PR_PARENT_ENTRYID, pt.PR_ACCESS, pt.PR_RIGHTS,
    pt.PR_DEPTH, *ROLE_TAGS,
)  # fmt: skip


class Folder(MapiObject):
    """An open folder. Changes commit immediately."""

    computed_ids = frozenset(pt.prop_id(t) for t in _COMPUTED_TAGS)

    def __init__(self, ctx: StoreContext, folder_id: int) -> None:
        super().__init__(ctx)
        self.folder_id = folder_id
        with ctx.db.reading() as conn:
            self._role: str | None = _row(conn, folder_id)[4]

    @property
    def entry_id(self) -> bytes:
        return self._ctx.folder_eid(self.folder_id)

    @property
    def role(self) -> str | None:
        """The special-folder role, or None for a user folder."""
        return self._role

    # --- MapiObject hooks ----------------------------------------------------------------

    def _begin(self) -> None:
        self._cache: dict[int, PropData] | None = None

    def _props(self) -> dict[int, PropData]:
        cached: dict[int, PropData] | None = getattr(self, "_cache", None)
        if cached is not None:
            return cached
        with self._ctx.db.reading() as conn:
            props = folder_props(self._ctx, conn, _row(conn, self.folder_id))
        rights = self._ctx.rights(self.folder_id)
        props[pt.PR_RIGHTS] = rights
        access = pt.MAPI_ACCESS_READ
        if rights & permissions.FOLDER_OWNER:
            access |= pt.MAPI_ACCESS_MODIFY | pt.MAPI_ACCESS_DELETE
        if rights & permissions.CREATE_SUBFOLDER:
            access |= pt.MAPI_ACCESS_CREATE_HIERARCHY
        if rights & permissions.CREATE:
            access |= pt.MAPI_ACCESS_CREATE_CONTENTS
        props[pt.PR_ACCESS] = access
        self._cache = props
        return props

    def _bag(self) -> PropBag:
        props = self._props()
        return PropBag({t: v for t, v in props.items() if not self._is_computed(t)})

    def _computed(self, tag: int) -> PropData | None:
        return self._props().get(tag)

    def _computed_tags(self) -> list[int]:
        return [t for t in self._props() if self._is_computed(t)]

    def _read_large(self, tag: int, length: int) -> bytes:  # pragma: no cover - none stored
        raise errors.NotFound()

    def _check_writable(self) -> None:
        self._ctx.require(self.folder_id, permissions.FOLDER_OWNER)

    def _apply(self, sets: list[tuple[int, PropData]], deletes: list[int]) -> None:
        with self._ctx.db.transaction() as conn:
            row = _row(conn, self.folder_id)
            props = unpack_props(row[8])
            for tag in deletes:
                if tag == pt.PR_DISPLAY_NAME_W:
                    continue  # a folder always has a name
                props.pop(tag, None)
            for tag, value in sets:
                if tag == pt.PR_DISPLAY_NAME_W:
                    self._rename(conn, row, value)
                else:
                    props[tag] = value
            conn.execute(
                "UPDATE folders SET props = ?, modified = ?, change_num = ? WHERE id = ?",
                (pack_props(props), self._ctx.now(), self._ctx.db.next_change_number(conn),
                 self.folder_id),
            )  # fmt: skip
            record(self._ctx, _folder_change(Op.MODIFIED, self.folder_id, row[1]))

    def _rename(self, conn: sqlite3.Connection, row: Sequence[Any], name: object) -> None:
        name = _check_name(name, self._ctx.limits)
        if row[4] is not None:
            raise errors.NoAccess("special folders cannot be renamed")
        clash = conn.execute(
            "SELECT 1 FROM folders WHERE parent_id = ? AND name = ? AND id <> ?",
            (row[1], name, self.folder_id),
        ).fetchone()
        if clash:
            raise errors.Collision(f"a sibling folder is named {name!r}")
        conn.execute("UPDATE folders SET name = ? WHERE id = ?", (name, self.folder_id))

    def rename(self, name: str) -> None:
        """Rename the folder.

        Raises:
            Collision: a sibling has that name. NoAccess: a special folder.
        """
        with self._ctx.db.lock:
            self._check_open()
            self._check_writable()
            self._apply([(pt.PR_DISPLAY_NAME_W, name)], [])

    # --- Subfolders --------------------------------------------------------------------------

    def create_folder(
        self,
        name: str,
        *,
        comment: str | None = None,
        container_class: str | None = None,
        open_if_exists: bool = False,
    ) -> Folder:
        """Create a generic subfolder (or open it with ``open_if_exists``).

        Raises:
            Collision: a subfolder has that name (without ``open_if_exists``).
            TooComplex: the hierarchy would be too deep. NoAccess: no CREATE_SUBFOLDER.
        """
        with self._ctx.db.lock:
            self._check_open()
            name = _check_name(name, self._ctx.limits)
            self._ctx.require(self.folder_id, permissions.CREATE_SUBFOLDER)
            props: dict[int, PropData] = {}
            if comment is not None:
                props[pt.PR_COMMENT_W] = validate(pt.PR_COMMENT_W, comment, self._ctx.limits)
            if container_class is not None:
                props[pt.PR_CONTAINER_CLASS_W] = validate(
                    pt.PR_CONTAINER_CLASS_W, container_class, self._ctx.limits
                )
            with self._ctx.db.transaction() as conn:
                existing = conn.execute(
                    "SELECT id FROM folders WHERE parent_id = ? AND name = ?",
                    (self.folder_id, name),
                ).fetchone()
                if existing is not None:
                    if open_if_exists:
                        # As open_folder would: the name must not open a hidden folder.
                        self._ctx.require(int(existing[0]), permissions.FOLDER_VISIBLE)
                        return Folder(self._ctx, int(existing[0]))
                    raise errors.Collision(f"a subfolder is named {name!r}")
                if len(_ancestors(conn, self.folder_id)) > self._ctx.limits.max_folder_depth:
                    raise errors.TooComplex("folder hierarchy too deep")
                now = self._ctx.now()
                new_id = conn.execute(
                    "INSERT INTO folders(parent_id, name, folder_type, role, created, modified,"
                    " change_num, props) VALUES (?, ?, ?, NULL, ?, ?, ?, ?) RETURNING id",
                    (self.folder_id, name, pt.FOLDER_GENERIC, now, now,
                     self._ctx.db.next_change_number(conn), pack_props(props)),
                ).fetchone()[0]  # fmt: skip
                record(self._ctx, _folder_change(Op.CREATED, int(new_id), self.folder_id))
            return Folder(self._ctx, int(new_id))

    def _child(self, conn: sqlite3.Connection, entry_id: bytes) -> Sequence[Any]:
        fid = self._ctx.parse(entry_id, EntryKind.FOLDER).object_id
        row = conn.execute(f"SELECT {FOLDER_SELECT} FROM folders WHERE id = ?", (fid,)).fetchone()
        if row is None or row[1] != self.folder_id:
            raise errors.NotFound("no such subfolder")
        return tuple(row)

    def delete_folder(self, entry_id: bytes, flags: int = 0) -> None:
        """Delete a subfolder: into Deleted Items, or for good (see module docstring).

        Raises:
            NotFound, HasMessages, HasFolders, NoAccess, UnknownFlags.
        """
        with self._ctx.db.lock:
            self._check_open()
            if flags & ~(DEL_MESSAGES | DEL_FOLDERS | DELETE_HARD_DELETE):
                raise errors.UnknownFlags(f"0x{flags:X}")
            with self._ctx.db.transaction() as conn:
                row = self._child(conn, entry_id)
                fid = int(row[0])
                self._ctx.require(fid, permissions.FOLDER_OWNER)
                if row[4] is not None:
                    raise errors.NoAccess("special folders cannot be deleted")
                if (
                    not flags & DEL_MESSAGES
                    and conn.execute(
                        "SELECT 1 FROM messages WHERE folder_id = ? LIMIT 1", (fid,)
                    ).fetchone()
                ):
                    raise errors.HasMessages("the folder has messages")
                if (
                    not flags & DEL_FOLDERS
                    and conn.execute(
                        "SELECT 1 FROM folders WHERE parent_id = ? LIMIT 1", (fid,)
                    ).fetchone()
                ):
                    raise errors.HasFolders("the folder has subfolders")
                deleted = role_folder(conn, "deleted")
                cn = self._ctx.db.next_change_number(conn)
                tomb.tombstone(conn, tomb.FOLDER, [fid], self.folder_id, cn, self._ctx.now())
                if flags & DELETE_HARD_DELETE or deleted in _ancestors(conn, self.folder_id):
                    # For good, with everything below it: ACLs are not inherited, so the
                    # right to destroy each folder of the subtree is checked, not assumed.
                    self._require_all(_subtree(conn, fid), permissions.FOLDER_OWNER)
                    conn.execute("DELETE FROM folders WHERE id = ?", (fid,))
                    record(self._ctx, _folder_change(Op.DELETED, fid, self.folder_id))
                else:
                    name = _unique_name(conn, deleted, str(row[2]))
                    conn.execute(
                        "UPDATE folders SET parent_id = ?, name = ? WHERE id = ?",
                        (deleted, name, fid),
                    )
                    _touch_subtree(conn, fid, cn)
                    record(self._ctx, _folder_change(Op.MOVED, fid, deleted, self.folder_id))

    def copy_folder(
        self,
        entry_id: bytes,
        dest: Folder,
        new_name: str | None = None,
        *,
        move: bool = False,
        recursive: bool = True,
    ) -> Folder:
        """Copy or move a subfolder into ``dest``; return the folder at its new place.

        Raises:
            NotFound, Collision, FolderCycle, NoAccess.
        """
        with self._ctx.db.lock:
            self._check_open()
            dest._check_open()
            self._check_same_mailbox(dest)
            with self._ctx.db.transaction() as conn:
                row = self._child(conn, entry_id)
                fid = int(row[0])
                name = _check_name(new_name, self._ctx.limits) if new_name else str(row[2])
                self._ctx.require(fid, permissions.FOLDER_OWNER if move else permissions.READ_ANY)
                self._ctx.require(dest.folder_id, permissions.CREATE_SUBFOLDER)
                _row(conn, dest.folder_id)
                if move and row[4] is not None:
                    raise errors.NoAccess("special folders cannot be moved")
                if fid in _ancestors(conn, dest.folder_id):
                    raise errors.FolderCycle("cannot put a folder below itself")
                if conn.execute(
                    "SELECT 1 FROM folders WHERE parent_id = ? AND name = ? AND id <> ?",
                    (dest.folder_id, name, fid),
                ).fetchone():
                    raise errors.Collision(f"a folder in the destination is named {name!r}")
                depth = len(_ancestors(conn, dest.folder_id)) + _subtree_height(conn, fid)
                if depth > self._ctx.limits.max_folder_depth:
                    raise errors.TooComplex("folder hierarchy too deep")
                if move:
                    conn.execute(
                        "UPDATE folders SET parent_id = ?, name = ? WHERE id = ?",
                        (dest.folder_id, name, fid),
                    )
                    new_id = fid
                    cn = self._ctx.db.next_change_number(conn)
                    if dest.folder_id != self.folder_id:
                        tomb.tombstone(
                            conn, tomb.FOLDER, [fid], self.folder_id, cn, self._ctx.now()
                        )
                    _touch_subtree(conn, fid, cn)
                    change = _folder_change(Op.MOVED, fid, dest.folder_id, self.folder_id)
                else:
                    new_id = self._copy_tree(conn, fid, dest.folder_id, name, recursive)
                    check_mailbox_room(conn, self._ctx.limits, None)  # copies count
                    change = _folder_change(
                        Op.COPIED, new_id, dest.folder_id, self.folder_id, old_id=fid
                    )
                record(self._ctx, change)
            return Folder(self._ctx, new_id)

    def _copy_tree(
        self, conn: sqlite3.Connection, src: int, parent: int, name: str, recursive: bool
    ) -> int:
        cn = self._ctx.db.next_change_number(conn)
        now = self._ctx.now()
        new_id = int(
            conn.execute(
                "INSERT INTO folders(parent_id, name, folder_type, role, created, modified,"
                " change_num, props) SELECT ?, ?, folder_type, NULL, ?, ?, ?, props"
                " FROM folders WHERE id = ? RETURNING id",
                (parent, name, now, now, cn, src),
            ).fetchone()[0]
        )
        for (mid,) in conn.execute(
            "SELECT id FROM messages WHERE folder_id = ?", (src,)
        ).fetchall():
            copy_message(conn, mid, change_num=cn, folder_id=new_id)
        if recursive:
            children = conn.execute(
                "SELECT id, name FROM folders WHERE parent_id = ?", (src,)
            ).fetchall()
            for child, child_name in children:
                self._copy_tree(conn, child, new_id, child_name, True)
        return new_id

    def _check_same_mailbox(self, dest: Folder) -> None:
        """Copies and moves run in one mailbox's database; a folder of another mailbox
        would be taken for the folder of the same number in this one.

        Raises:
            NoSupport: ``dest`` is a folder of another mailbox.
        """
        if dest._ctx.db is not self._ctx.db:
            raise errors.NoSupport("copying or moving between mailboxes is not supported")

    def _require_all(self, folder_ids: Sequence[int], right: int) -> None:
        """NoAccess unless the user holds ``right`` on every one of ``folder_ids``."""
        if self._ctx.is_owner:
            return
        for fid in folder_ids:
            self._ctx.require(fid, right)

    def empty_folder(self, flags: int = 0) -> None:
        """Delete every message and subfolder for good ([MS-OXCFOLD] RopEmptyFolder)."""
        with self._ctx.db.lock:
            self._check_open()
            if flags & ~DELETE_HARD_DELETE:
                raise errors.UnknownFlags(f"0x{flags:X}")
            self._ctx.require(self.folder_id, permissions.DELETE_ANY)
            with self._ctx.db.transaction() as conn:
                _row(conn, self.folder_id)
                mids = [
                    int(r[0])
                    for r in conn.execute(
                        "SELECT id FROM messages WHERE folder_id = ?", (self.folder_id,)
                    )
                ]
                fids = [
                    int(r[0])
                    for r in conn.execute(
                        "SELECT id FROM folders WHERE parent_id = ? AND role IS NULL",
                        (self.folder_id,),
                    )
                ]
                # The subfolders go for good with their subtrees: as delete_folder would
                # ask, the user must own each of them (DELETE_ANY here covers messages).
                for fid in fids:
                    self._require_all(_subtree(conn, fid), permissions.FOLDER_OWNER)
                cn, now = self._ctx.db.next_change_number(conn), self._ctx.now()
                tomb.tombstone(conn, tomb.MESSAGE, mids, self.folder_id, cn, now)
                tomb.tombstone(conn, tomb.FOLDER, fids, self.folder_id, cn, now)
                conn.execute("DELETE FROM messages WHERE folder_id = ?", (self.folder_id,))
                conn.execute(
                    "DELETE FROM folders WHERE parent_id = ? AND role IS NULL", (self.folder_id,)
                )
                record(
                    self._ctx,
                    *(_message_change(Op.DELETED, m, self.folder_id) for m in mids),
                    *(_folder_change(Op.DELETED, f, self.folder_id) for f in fids),
                )

    # --- Messages ------------------------------------------------------------------------------

    def create_message(self) -> Any:
        """A new, unsaved message in this folder (a :class:`mapi.objects.messages.Message`).

        Raises:
            NoAccess: no CREATE right.
        """
        with self._ctx.db.lock:
            self._check_open()
            self._ctx.require(self.folder_id, permissions.CREATE)
            return Message.new(self._ctx, self.folder_id)

    def _message_ids(
        self, conn: sqlite3.Connection, entry_ids: Sequence[bytes]
    ) -> tuple[list[int], bool]:
        if len(entry_ids) > self._ctx.limits.max_ids_per_call:
            raise errors.InvalidParameter("too many entry ids")
        found, partial = [], False
        for eid in entry_ids:
            mid = self._ctx.parse(eid, EntryKind.MESSAGE).object_id
            row = conn.execute("SELECT folder_id FROM messages WHERE id = ?", (mid,)).fetchone()
            if row is None or row[0] != self.folder_id:
                partial = True
            else:
                found.append(mid)
        return found, partial

    def delete_messages(self, entry_ids: Sequence[bytes], *, hard: bool = False) -> int:
        """Delete messages of this folder (soft: into Deleted Items).

        Returns:
            0, or MAPI_W_PARTIAL_COMPLETION when some ids were not in this folder.
        """
        with self._ctx.db.lock:
            self._check_open()
            self._ctx.require(self.folder_id, permissions.DELETE_ANY)
            with self._ctx.db.transaction() as conn:
                ids, partial = self._message_ids(conn, entry_ids)
                deleted = role_folder(conn, "deleted")
                hard = hard or self.folder_id == deleted
                cn = self._ctx.db.next_change_number(conn)
                tomb.tombstone(conn, tomb.MESSAGE, ids, self.folder_id, cn, self._ctx.now())
                for mid in ids:
                    if hard:
                        conn.execute("DELETE FROM messages WHERE id = ?", (mid,))
                    else:
                        conn.execute(
                            "UPDATE messages SET folder_id = ?, change_num = ? WHERE id = ?",
                            (deleted, cn, mid),
                        )
                if hard:
                    record(
                        self._ctx, *(_message_change(Op.DELETED, m, self.folder_id) for m in ids)
                    )
                else:
                    record(
                        self._ctx,
                        *(_message_change(Op.MOVED, m, deleted, self.folder_id) for m in ids),
                    )
            return int(errors.MAPI_W_PARTIAL_COMPLETION) if partial else 0

    def copy_messages(self, entry_ids: Sequence[bytes], dest: Folder, *, move: bool = False) -> int:
        """Copy or move messages of this folder into ``dest`` (moves keep entry ids).

        Returns:
            0, or MAPI_W_PARTIAL_COMPLETION when some ids were not in this folder.
        """
        with self._ctx.db.lock:
            self._check_open()
            self._check_same_mailbox(dest)
            self._ctx.require(self.folder_id, permissions.READ_ANY)
            if move:
                self._ctx.require(self.folder_id, permissions.DELETE_ANY)
            self._ctx.require(dest.folder_id, permissions.CREATE)
            with self._ctx.db.transaction() as conn:
                _row(conn, dest.folder_id)
                ids, partial = self._message_ids(conn, entry_ids)
                cn = self._ctx.db.next_change_number(conn)
                if move and dest.folder_id != self.folder_id:
                    tomb.tombstone(conn, tomb.MESSAGE, ids, self.folder_id, cn, self._ctx.now())
                changes = []
                for mid in ids:
                    if move:
                        conn.execute(
                            "UPDATE messages SET folder_id = ?, change_num = ? WHERE id = ?",
                            (dest.folder_id, cn, mid),
                        )
                        changes.append(
                            _message_change(Op.MOVED, mid, dest.folder_id, self.folder_id)
                        )
                    else:
                        new = copy_message(conn, mid, change_num=cn, folder_id=dest.folder_id)
                        changes.append(
                            _message_change(
                                Op.COPIED, new, dest.folder_id, self.folder_id, old_id=mid
                            )
                        )
                if not move and ids:
                    check_mailbox_room(conn, self._ctx.limits, None)  # copies count
                record(self._ctx, *changes)
            return int(errors.MAPI_W_PARTIAL_COMPLETION) if partial else 0

    def set_read_flags(
        self, entry_ids: Sequence[bytes] | None = None, *, clear: bool = False
    ) -> int:
        """Set (or clear) MSGFLAG_READ on messages (None: every message of the folder)."""
        with self._ctx.db.lock:
            self._check_open()
            self._ctx.require(self.folder_id, permissions.READ_ANY)
            op = "flags & ~1" if clear else "flags | 1"
            want = 0 if clear else 1
            with self._ctx.db.transaction() as conn:
                partial = False
                if entry_ids is None:
                    ids = [
                        int(r[0])
                        for r in conn.execute(
                            "SELECT id FROM messages WHERE folder_id = ? AND (flags & 1) <> ?",
                            (self.folder_id, want),
                        )
                    ]
                else:
                    found, partial = self._message_ids(conn, entry_ids)
                    ids = [
                        m
                        for m in found
                        if conn.execute("SELECT flags & 1 FROM messages WHERE id = ?", (m,))
                        .fetchone()[0] != want
                    ]  # fmt: skip
                for mid in ids:
                    conn.execute(f"UPDATE messages SET flags = {op} WHERE id = ?", (mid,))
                if ids:
                    tomb.note_read(conn, ids, self._ctx.db.next_change_number(conn))
                    record(
                        self._ctx, *(_message_change(Op.MODIFIED, m, self.folder_id) for m in ids)
                    )
            return int(errors.MAPI_W_PARTIAL_COMPLETION) if partial else 0

    # --- Tables ----------------------------------------------------------------------------------

    def contents_table(self) -> ContentsTable:
        """The contents table of this folder.

        Raises:
            NoAccess: no READ_ANY right.
        """
        with self._ctx.db.lock:
            self._check_open()
            self._ctx.require(self.folder_id, permissions.READ_ANY)
            return ContentsTable(self._ctx, self.folder_id)

    def hierarchy_table(self, flags: int = 0) -> MemoryTable:
        """The subfolders (all descendants with CONVENIENT_DEPTH), with PR_DEPTH."""
        with self._ctx.db.lock:
            self._check_open()
            if flags & ~CONVENIENT_DEPTH:
                raise errors.UnknownFlags(f"0x{flags:X}")
            ctx, root = self._ctx, self.folder_id
            deep = bool(flags & CONVENIENT_DEPTH)

            def load() -> list[tuple[int, rs.DictRow]]:
                out: list[tuple[int, rs.DictRow]] = []
                with ctx.db.reading() as conn:
                    self._walk(conn, root, 1, deep, out)
                return out

            return MemoryTable(ctx, HIERARCHY_COLUMNS, load, lambda: ctx.db.generation)

    def _walk(
        self, conn: sqlite3.Connection, parent: int, depth: int, deep: bool,
        out: list[tuple[int, rs.DictRow]],
    ) -> None:  # fmt: skip
        rows = conn.execute(
            f"SELECT {FOLDER_SELECT} FROM folders WHERE parent_id = ? ORDER BY name, id", (parent,)
        ).fetchall()
        for row in rows:
            fid = int(row[0])
            if not self._ctx.rights(fid) & permissions.FOLDER_VISIBLE:
                continue
            props = folder_props(self._ctx, conn, row)
            props[pt.PR_DEPTH] = depth
            out.append((fid, rs.DictRow(props)))
            if deep and depth < self._ctx.limits.max_folder_depth:
                self._walk(conn, fid, depth + 1, deep, out)

    # --- Permissions ------------------------------------------------------------------------------

    def get_permissions(self) -> list[tuple[str, int]]:
        """The ACL rows of this folder as (member, rights); members are user ids or
        "default"."""
        with self._ctx.db.lock:
            self._check_open()
            self._ctx.require(self.folder_id, permissions.FOLDER_VISIBLE)
            with self._ctx.db.reading() as conn:
                return permissions.members(conn, self.folder_id)

    def permission_rows(self) -> list[tuple[str, str | None, int]]:
        """The ACL rows of this folder as (member, name, rights): the member's login
        name, "default", or None for an account deleted since (its id stays until the
        row is revoked)."""
        rows = self.get_permissions()
        directory = _directory(self._ctx)
        out: list[tuple[str, str | None, int]] = []
        for member, rights in rows:
            name: str | None = member if member == permissions.DEFAULT_MEMBER else None
            if name is None and directory is not None:
                try:
                    name = directory.get_user_by_id(member).username
                except errors.NotFound:
                    name = None
            out.append((member, name, rights))
        return out

    def set_permission(self, member: str, rights: int) -> None:
        """Grant ``rights`` to ``member``; 0 revokes.

        ``member`` is a user's login name or e-mail address, "default" (everyone
        else), or a user id as :meth:`get_permissions` lists them (stored as the id
        either way). A row whose account was deleted can still be revoked by its id.

        Raises:
            NoAccess: the caller is not a folder owner. NotFound: ``member`` is no user.
            InvalidParameter: bad rights.
        """
        with self._ctx.db.lock:
            self._check_open()
            self._ctx.require(self.folder_id, permissions.FOLDER_OWNER)
            if not isinstance(member, str) or not member:
                raise errors.InvalidParameter("bad member")
            permissions.check_rights(rights)
            with self._ctx.db.transaction() as conn:
                member_id = self._member_id(conn, member, revoking=rights == 0)
                permissions.set_member(conn, self.folder_id, member_id, rights)

    def _member_id(self, conn: sqlite3.Connection, member: str, *, revoking: bool) -> str:
        """The ACL key of ``member`` (see :meth:`set_permission`).

        Raises:
            NotFound: no such user (and, when revoking, no row under that key).
        """
        if member == permissions.DEFAULT_MEMBER:
            return member
        directory = _directory(self._ctx)
        if directory is not None:
            record = directory.find_by_address(member)
            if record is None and _USER_ID_RE.fullmatch(member):
                try:
                    record = directory.get_user_by_id(member)
                except errors.NotFound:
                    record = None
            if record is not None:
                return record.user_id
        if revoking and any(m == member for m, _ in permissions.members(conn, self.folder_id)):
            return member  # the row of a deleted account
        raise errors.NotFound(
            f"no user {member!r}: a member is a user's login name or e-mail address,"
            ' or "default" for everyone else'
        )

    def close(self) -> None:
        """Release the folder object."""
        self._closed = True


__all__ = [
    "CONVENIENT_DEPTH",
    "DELETE_HARD_DELETE",
    "DEL_FOLDERS",
    "DEL_MESSAGES",
    "FOLDER_SELECT",
    "HIERARCHY_COLUMNS",
    "ROLE_TAGS",
    "STANDARD_FOLDERS",
    "Folder",
    "ensure_standard_folders",
    "folder_props",
    "role_folder",
]
