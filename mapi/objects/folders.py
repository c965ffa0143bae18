"""Folders: the standard hierarchy, folder objects and their operations.

Theory of operation
-------------------
[MS-OXCFOLD] 3.2.5 (RopCreateFolder, RopDeleteFolder, RopMoveFolder, RopCopyFolder,
RopEmptyFolder, RopMoveCopyMessages, RopDeleteMessages, RopSetReadFlags,
RopGetHierarchyTable, RopGetContentsTable) and [MS-OXOSFLD] (special folders).

A mailbox is created on first use with the root folder, the IPM subtree ("Top of
Information Store") and the special folders below it; each special folder has a
*role* (``inbox``, ``deleted``...) so it is found without trusting display names.
Folders are not transacted: every change commits at once in one storage transaction
(the rows live behind ``MailboxDB.folders``, :mod:`mapi.storage.folders`).
Display names are unique among siblings, case-insensitively (MAPI_E_COLLISION).
Special folders cannot be deleted, moved or renamed (MAPI_E_NO_ACCESS).

A *soft* delete (of a folder or of messages) moves the objects into Deleted Items;
inside Deleted Items, or with ``DELETE_HARD_DELETE``, deletion is final and cascades
(subfolders, messages, recipients, attachments, embedded messages, chunks). Moving
a folder below itself fails with MAPI_E_FOLDER_CYCLE. Deleting a folder that still
has messages or subfolders needs ``DEL_MESSAGES`` / ``DEL_FOLDERS``
(MAPI_E_HAS_MESSAGES / MAPI_E_HAS_FOLDERS otherwise).

Counts are computed, never stored: PR_CONTENT_COUNT and PR_CONTENT_UNREAD are
counted by the storage layer on each read, so they cannot drift.

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
from collections.abc import Sequence
from typing import Any, Final

from mapi.access import permissions
from mapi.access.directory import Directory
from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model import restrictions as rs
from mapi.model.entryid import EntryKind
from mapi.model.properties import PropData, validate
from mapi.notify.changes import Change, Op, record
from mapi.objects.base import MapiObject
from mapi.objects.context import StoreContext
from mapi.objects.hierarchy import (
    HIERARCHY_COLUMNS,
    ROLE_TAGS,
    STANDARD_FOLDERS,
    check_name,
    folder_props,
)
from mapi.objects.messages import Message
from mapi.storage.api import FolderRow, Txn
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
        with ctx.db.reading() as txn:
            self._role: str | None = ctx.db.folders.row(txn, folder_id).role

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
        db = self._ctx.db
        with db.reading() as txn:
            props = folder_props(self._ctx, txn, db.folders.row(txn, self.folder_id))
        rights = self._ctx.rights(self.folder_id)
        props[pt.PR_RIGHTS] = rights
        props[pt.PR_ACCESS] = permissions.access_flags(rights)
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
        permissions.check_modify_folder(self._ctx, self.folder_id)

    def _apply(self, sets: list[tuple[int, PropData]], deletes: list[int]) -> None:
        db = self._ctx.db
        with db.transaction() as txn:
            row = db.folders.row(txn, self.folder_id)
            props = dict(row.props)
            for tag in deletes:
                if tag == pt.PR_DISPLAY_NAME_W:
                    continue  # a folder always has a name
                props.pop(tag, None)
            for tag, value in sets:
                if tag == pt.PR_DISPLAY_NAME_W:
                    self._rename(txn, row, value)
                else:
                    props[tag] = value
            db.folders.write_props(
                txn, self.folder_id, props, modified=self._ctx.now(),
                change_num=db.next_change_number(txn),
            )  # fmt: skip
            record(self._ctx, _folder_change(Op.MODIFIED, self.folder_id, row.parent_id))

    def _rename(self, txn: Txn, row: FolderRow, name: object) -> None:
        name = check_name(name, self._ctx.limits)
        if row.role is not None:
            raise errors.NoAccess("special folders cannot be renamed")
        folders = self._ctx.db.folders
        if folders.child_named(txn, row.parent_id, name, excluding=self.folder_id) is not None:
            raise errors.Collision(f"a sibling folder is named {name!r}")
        folders.rename(txn, self.folder_id, name)

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
            name = check_name(name, self._ctx.limits)
            permissions.check_create_subfolder(self._ctx, self.folder_id)
            props: dict[int, PropData] = {}
            if comment is not None:
                props[pt.PR_COMMENT_W] = validate(pt.PR_COMMENT_W, comment, self._ctx.limits)
            if container_class is not None:
                props[pt.PR_CONTAINER_CLASS_W] = validate(
                    pt.PR_CONTAINER_CLASS_W, container_class, self._ctx.limits
                )
            db = self._ctx.db
            with db.transaction() as txn:
                existing = db.folders.child_named(txn, self.folder_id, name)
                if existing is not None:
                    if open_if_exists:
                        # As open_folder would: the name must not open a hidden folder.
                        permissions.check_open_folder(self._ctx, existing)
                        return Folder(self._ctx, existing)
                    raise errors.Collision(f"a subfolder is named {name!r}")
                depth = len(db.folders.ancestors(txn, self.folder_id))
                if depth > self._ctx.limits.max_folder_depth:
                    raise errors.TooComplex("folder hierarchy too deep")
                new_id = db.folders.create(
                    txn, self.folder_id, name, folder_type=pt.FOLDER_GENERIC,
                    now=self._ctx.now(), change_num=db.next_change_number(txn), props=props,
                )  # fmt: skip
                record(self._ctx, _folder_change(Op.CREATED, new_id, self.folder_id))
            return Folder(self._ctx, new_id)

    def _child(self, txn: Txn, entry_id: bytes) -> FolderRow:
        fid = self._ctx.parse(entry_id, EntryKind.FOLDER).object_id
        row = self._ctx.db.folders.child(txn, self.folder_id, fid)
        if row is None:
            raise errors.NotFound("no such subfolder")
        return row

    def delete_folder(self, entry_id: bytes, flags: int = 0) -> None:
        """Delete a subfolder: into Deleted Items, or for good (see module docstring).

        Raises:
            NotFound, HasMessages, HasFolders, NoAccess, UnknownFlags.
        """
        with self._ctx.db.lock:
            self._check_open()
            if flags & ~(DEL_MESSAGES | DEL_FOLDERS | DELETE_HARD_DELETE):
                raise errors.UnknownFlags(f"0x{flags:X}")
            db = self._ctx.db
            folders = db.folders
            with db.transaction() as txn:
                row = self._child(txn, entry_id)
                fid = row.id
                permissions.check_delete_folder(self._ctx, fid)
                if row.role is not None:
                    raise errors.NoAccess("special folders cannot be deleted")
                if not flags & DEL_MESSAGES and folders.has_messages(txn, fid):
                    raise errors.HasMessages("the folder has messages")
                if not flags & DEL_FOLDERS and folders.has_subfolders(txn, fid):
                    raise errors.HasFolders("the folder has subfolders")
                deleted = folders.role_folder(txn, "deleted")
                cn, now = db.next_change_number(txn), self._ctx.now()
                if flags & DELETE_HARD_DELETE or deleted in folders.ancestors(txn, self.folder_id):
                    # For good, with everything below it: ACLs are not inherited, so the
                    # right to destroy each folder of the subtree is checked, not assumed.
                    permissions.check_destroy_subtree(self._ctx, folders.subtree(txn, fid))
                    folders.delete_tree(txn, fid, parent_id=self.folder_id, change_num=cn, now=now)
                    record(self._ctx, _folder_change(Op.DELETED, fid, self.folder_id))
                else:
                    name = folders.unique_name(txn, deleted, row.name)
                    folders.move_tree(
                        txn, fid, deleted, name, change_num=cn, now=now, left=self.folder_id
                    )
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
            db = self._ctx.db
            folders = db.folders
            with db.transaction() as txn:
                row = self._child(txn, entry_id)
                fid = row.id
                name = check_name(new_name, self._ctx.limits) if new_name else row.name
                permissions.check_copy_folder(self._ctx, fid, dest.folder_id, move=move)
                folders.row(txn, dest.folder_id)
                if move and row.role is not None:
                    raise errors.NoAccess("special folders cannot be moved")
                dest_ancestors = folders.ancestors(txn, dest.folder_id)
                if fid in dest_ancestors:
                    raise errors.FolderCycle("cannot put a folder below itself")
                if folders.child_named(txn, dest.folder_id, name, excluding=fid) is not None:
                    raise errors.Collision(f"a folder in the destination is named {name!r}")
                depth = len(dest_ancestors) + folders.subtree_height(txn, fid)
                if depth > self._ctx.limits.max_folder_depth:
                    raise errors.TooComplex("folder hierarchy too deep")
                if move:
                    new_id = fid
                    cn = db.next_change_number(txn)
                    left = self.folder_id if dest.folder_id != self.folder_id else None
                    folders.move_tree(
                        txn, fid, dest.folder_id, name, change_num=cn,
                        now=0 if left is None else self._ctx.now(), left=left,
                    )  # fmt: skip
                    change = _folder_change(Op.MOVED, fid, dest.folder_id, self.folder_id)
                else:
                    new_id = folders.copy_tree(
                        txn, fid, dest.folder_id, name, recursive=recursive,
                        limits=self._ctx.limits, now=self._ctx.now,
                        change_number=lambda: db.next_change_number(txn),
                    )  # fmt: skip
                    change = _folder_change(
                        Op.COPIED, new_id, dest.folder_id, self.folder_id, old_id=fid
                    )
                record(self._ctx, change)
            return Folder(self._ctx, new_id)

    def _check_same_mailbox(self, dest: Folder) -> None:
        """Copies and moves run in one mailbox's database; a folder of another mailbox
        would be taken for the folder of the same number in this one.

        Raises:
            NoSupport: ``dest`` is a folder of another mailbox.
        """
        if dest._ctx.db is not self._ctx.db:
            raise errors.NoSupport("copying or moving between mailboxes is not supported")

    def empty_folder(self, flags: int = 0) -> None:
        """Delete every message and subfolder for good ([MS-OXCFOLD] RopEmptyFolder)."""
        with self._ctx.db.lock:
            self._check_open()
            if flags & ~DELETE_HARD_DELETE:
                raise errors.UnknownFlags(f"0x{flags:X}")
            permissions.check_empty_folder(self._ctx, self.folder_id)
            db = self._ctx.db
            folders = db.folders
            with db.transaction() as txn:
                folders.row(txn, self.folder_id)
                # The subfolders go for good with their subtrees: as delete_folder would
                # ask, the user must own each of them (DELETE_ANY here covers messages).
                for fid in folders.user_children(txn, self.folder_id):
                    permissions.check_destroy_subtree(self._ctx, folders.subtree(txn, fid))
                cn, now = db.next_change_number(txn), self._ctx.now()
                mids, fids = folders.empty(txn, self.folder_id, change_num=cn, now=now)
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
            permissions.check_create_message(self._ctx, self.folder_id)
            return Message.new(self._ctx, self.folder_id)

    def _message_ids(self, txn: Txn, entry_ids: Sequence[bytes]) -> tuple[list[int], bool]:
        """The ids of those of ``entry_ids`` that are messages of this folder, and
        whether some were not."""
        if len(entry_ids) > self._ctx.limits.max_ids_per_call:
            raise errors.InvalidParameter("too many entry ids")
        ids = [self._ctx.parse(eid, EntryKind.MESSAGE).object_id for eid in entry_ids]
        found = self._ctx.db.folders.messages_in(txn, self.folder_id, ids)
        return found, len(found) != len(ids)

    def delete_messages(self, entry_ids: Sequence[bytes], *, hard: bool = False) -> int:
        """Delete messages of this folder (soft: into Deleted Items).

        Returns:
            0, or MAPI_W_PARTIAL_COMPLETION when some ids were not in this folder.
        """
        with self._ctx.db.lock:
            self._check_open()
            permissions.check_delete_messages(self._ctx, self.folder_id)
            db = self._ctx.db
            with db.transaction() as txn:
                ids, partial = self._message_ids(txn, entry_ids)
                deleted = db.folders.role_folder(txn, "deleted")
                hard = hard or self.folder_id == deleted
                cn, now = db.next_change_number(txn), self._ctx.now()
                if hard:
                    db.folders.delete_messages(txn, self.folder_id, ids, change_num=cn, now=now)
                else:  # into Deleted Items (another folder: hard is set in it)
                    db.folders.move_messages(
                        txn, ids, self.folder_id, deleted, change_num=cn, now=now
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
            permissions.check_copy_messages(self._ctx, self.folder_id, dest.folder_id, move=move)
            db = self._ctx.db
            with db.transaction() as txn:
                db.folders.row(txn, dest.folder_id)
                ids, partial = self._message_ids(txn, entry_ids)
                cn = db.next_change_number(txn)
                if move:
                    # The time only stamps tombstones, left when the messages change folder.
                    now = self._ctx.now() if dest.folder_id != self.folder_id else 0
                    db.folders.move_messages(
                        txn, ids, self.folder_id, dest.folder_id, change_num=cn, now=now
                    )
                    changes = [
                        _message_change(Op.MOVED, mid, dest.folder_id, self.folder_id)
                        for mid in ids
                    ]
                else:
                    new_ids = db.folders.copy_messages(
                        txn, ids, dest.folder_id, change_num=cn, limits=self._ctx.limits
                    )
                    changes = [
                        _message_change(Op.COPIED, new, dest.folder_id, self.folder_id, old_id=mid)
                        for mid, new in zip(ids, new_ids, strict=True)
                    ]
                record(self._ctx, *changes)
            return int(errors.MAPI_W_PARTIAL_COMPLETION) if partial else 0

    def set_read_flags(
        self, entry_ids: Sequence[bytes] | None = None, *, clear: bool = False
    ) -> int:
        """Set (or clear) MSGFLAG_READ on messages (None: every message of the folder)."""
        with self._ctx.db.lock:
            self._check_open()
            permissions.check_read_contents(self._ctx, self.folder_id)
            db = self._ctx.db
            with db.transaction() as txn:
                partial = False
                found: list[int] | None = None
                if entry_ids is not None:
                    found, partial = self._message_ids(txn, entry_ids)
                ids = db.folders.read_flag_differs(txn, self.folder_id, found, read=not clear)
                if ids:
                    cn = db.next_change_number(txn)
                    db.folders.set_read(txn, ids, read=not clear, change_num=cn)
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
            permissions.check_read_contents(self._ctx, self.folder_id)
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
                with ctx.db.reading() as txn:
                    self._walk(txn, root, 1, deep, out)
                return out

            return MemoryTable(ctx, HIERARCHY_COLUMNS, load, lambda: ctx.db.generation)

    def _walk(
        self, txn: Txn, parent: int, depth: int, deep: bool, out: list[tuple[int, rs.DictRow]]
    ) -> None:
        for row in self._ctx.db.folders.children(txn, parent):
            fid = row.id
            if not permissions.can_see(self._ctx, fid):
                continue
            props = folder_props(self._ctx, txn, row)
            props[pt.PR_DEPTH] = depth
            out.append((fid, rs.DictRow(props)))
            if deep and depth < self._ctx.limits.max_folder_depth:
                self._walk(txn, fid, depth + 1, deep, out)

    # --- Permissions ------------------------------------------------------------------------------

    def get_permissions(self) -> list[tuple[str, int]]:
        """The ACL rows of this folder as (member, rights); members are user ids or
        "default"."""
        with self._ctx.db.lock:
            self._check_open()
            permissions.check_see_acl(self._ctx, self.folder_id)
            db = self._ctx.db
            with db.reading() as txn:
                return db.acl.members(txn, self.folder_id)

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
            permissions.check_manage_acl(self._ctx, self.folder_id)
            if not isinstance(member, str) or not member:
                raise errors.InvalidParameter("bad member")
            permissions.check_rights(rights)
            db = self._ctx.db
            with db.transaction() as txn:
                member_id = self._member_id(txn, member, revoking=rights == 0)
                db.acl.set(txn, self.folder_id, member_id, rights)

    def _member_id(self, txn: Txn, member: str, *, revoking: bool) -> str:
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
        if revoking and any(m == member for m, _ in self._ctx.db.acl.members(txn, self.folder_id)):
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
    "HIERARCHY_COLUMNS",
    "ROLE_TAGS",
    "STANDARD_FOLDERS",
    "Folder",
    "folder_props",
]
