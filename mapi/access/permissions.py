"""Folder permissions: rights bits, roles and the per-folder ACL.

Theory of operation
-------------------
Rights are the [MS-OXCPERM] 2.2.7 ``PidTagMemberRights`` bits; the roles clients
offer are fixed combinations of them, Exchange's (:data:`ROLES`: owner 0x7FB,
publishing_editor 0x4FB, editor 0x47B, publishing_author 0x49B, author 0x41B,
nonediting_author 0x413, reviewer 0x401, contributor 0x402, none 0; "none" removes
the member's row). Each folder of a mailbox has ACL rows ``(folder_id, member,
rights)`` where ``member`` is a user id from the directory or :data:`DEFAULT_MEMBER`
(everyone else): ids are stable and never reused, so a re-created account with an
old name inherits nothing. Clients name members by login name or e-mail address
(:meth:`mapi.objects.folders.Folder.set_permission` resolves them; a name that is no user is
refused) and see them by name (:meth:`mapi.objects.folders.Folder.permission_rows`). There
is no inheritance: a folder without a row for a user grants what its default row
grants, and no default row means nothing.

The mailbox owner holds every right on every folder. Anyone else needs
``FOLDER_VISIBLE`` to open a folder or see it in a hierarchy table, ``READ_ANY`` to
read its contents, ``CREATE`` to add messages, ``EDIT_ANY``/``DELETE_ANY`` to change or
delete messages, ``CREATE_SUBFOLDER`` to add folders and ``FOLDER_OWNER`` to change
the folder itself or its ACL. The "own" rights (``EDIT_OWNED``, ``DELETE_OWNED``)
grant nothing here because the store does not record message creators; that is the
conservative reading. Failures raise MAPI_E_NO_ACCESS.

What each folder operation needs is written once, here, as a named check
(:func:`check_modify_folder`, :func:`check_copy_folder`...) that the folder objects
call; they take the acting user's view (a :class:`Viewer`, in practice the
:class:`~mapi.objects.context.StoreContext`), which answers the user's rights on a
folder. Deleting a folder for good, or emptying one, destroys a whole subtree: as
rights are not inherited, the user must own every folder of it
(:func:`check_destroy_subtree`). The ACL rows themselves live behind ``MailboxDB.acl``
(:mod:`mapi.storage.acl` in the SQLite backend).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from mapi.model import errors
from mapi.model import proptags as pt

# The rights model lives in mapi.model.rights (a client imports it without the store);
# its names stay importable from here.
from mapi.model.rights import (
    ALL_RIGHTS,
    CREATE,
    CREATE_SUBFOLDER,
    DEFAULT_MEMBER,
    DELETE_ANY,
    DELETE_OWNED,
    EDIT_ANY,
    EDIT_OWNED,
    FOLDER_CONTACT,
    FOLDER_OWNER,
    FOLDER_VISIBLE,
    READ_ANY,
    ROLES,
    check_rights,
    parse_rights,
    role_name,
)


class Viewer(Protocol):
    """The acting user's view of a mailbox, as the checks need it."""

    @property
    def is_owner(self) -> bool:
        """True for the mailbox owner, who holds every right."""

    def rights(self, folder_id: int) -> int:
        """The user's rights on a folder."""


# --- The checks ------------------------------------------------------------------------


def require(viewer: Viewer, folder_id: int, right: int) -> None:
    """Raise MAPI_E_NO_ACCESS unless the user holds every bit of ``right`` on the folder."""
    if viewer.rights(folder_id) & right != right:
        raise errors.NoAccess("permission denied")


def can_see(viewer: Viewer, folder_id: int) -> bool:
    """True when the user may see the folder (in a hierarchy table, say)."""
    return bool(viewer.rights(folder_id) & FOLDER_VISIBLE)


def access_flags(rights: int) -> int:
    """PR_ACCESS of a folder for a user holding ``rights`` on it."""
    access = pt.MAPI_ACCESS_READ
    if rights & FOLDER_OWNER:
        access |= pt.MAPI_ACCESS_MODIFY | pt.MAPI_ACCESS_DELETE
    if rights & CREATE_SUBFOLDER:
        access |= pt.MAPI_ACCESS_CREATE_HIERARCHY
    if rights & CREATE:
        access |= pt.MAPI_ACCESS_CREATE_CONTENTS
    return access


def check_open_folder(viewer: Viewer, folder_id: int) -> None:
    """Opening a folder (also by name, as create-folder's open-if-exists does)."""
    require(viewer, folder_id, FOLDER_VISIBLE)


def check_modify_folder(viewer: Viewer, folder_id: int) -> None:
    """Changing a folder's properties or name."""
    require(viewer, folder_id, FOLDER_OWNER)


def check_create_subfolder(viewer: Viewer, folder_id: int) -> None:
    """Adding a subfolder to a folder."""
    require(viewer, folder_id, CREATE_SUBFOLDER)


def check_delete_folder(viewer: Viewer, folder_id: int) -> None:
    """Deleting a folder (into Deleted Items or for good)."""
    require(viewer, folder_id, FOLDER_OWNER)


def check_destroy_subtree(viewer: Viewer, folder_ids: Iterable[int]) -> None:
    """Deleting a subtree for good: the user must own each of its folders."""
    if viewer.is_owner:
        return
    for fid in folder_ids:
        require(viewer, fid, FOLDER_OWNER)


def check_copy_folder(viewer: Viewer, folder_id: int, dest_id: int, *, move: bool) -> None:
    """Copying (reading it) or moving (owning it) a folder into ``dest_id``."""
    require(viewer, folder_id, FOLDER_OWNER if move else READ_ANY)
    require(viewer, dest_id, CREATE_SUBFOLDER)


def check_empty_folder(viewer: Viewer, folder_id: int) -> None:
    """Emptying a folder (its messages; each subfolder's subtree needs
    :func:`check_destroy_subtree` as well)."""
    require(viewer, folder_id, DELETE_ANY)


def check_create_message(viewer: Viewer, folder_id: int) -> None:
    """Adding a message to a folder."""
    require(viewer, folder_id, CREATE)


def check_read_contents(viewer: Viewer, folder_id: int) -> None:
    """Reading a folder's messages: its contents table, its read flags."""
    require(viewer, folder_id, READ_ANY)


def check_delete_messages(viewer: Viewer, folder_id: int) -> None:
    """Deleting messages of a folder."""
    require(viewer, folder_id, DELETE_ANY)


def check_copy_messages(viewer: Viewer, folder_id: int, dest_id: int, *, move: bool) -> None:
    """Copying messages of a folder (reading them), or moving them (and deleting them
    from it), into ``dest_id``."""
    require(viewer, folder_id, READ_ANY)
    if move:
        require(viewer, folder_id, DELETE_ANY)
    require(viewer, dest_id, CREATE)


def check_save_message(viewer: Viewer, folder_id: int, *, created_here: bool) -> None:
    """Saving a message into ``folder_id``: CREATE for a message this object made (the
    right that made it; the store records no creators for EDIT_OWNED), EDIT_ANY for any
    other. Checked again at every save, where the message is now."""
    require(viewer, folder_id, CREATE if created_here else EDIT_ANY)


def check_open_message(viewer: Viewer, folder_id: int, *, writable: bool) -> None:
    """Opening a message of ``folder_id``: READ_ANY, and EDIT_ANY to write it."""
    require(viewer, folder_id, READ_ANY)
    if writable:
        require(viewer, folder_id, EDIT_ANY)


def check_sync_contents(viewer: Viewer, folder_id: int) -> None:
    """An incremental sync of a folder's contents reads them: READ_ANY."""
    require(viewer, folder_id, READ_ANY)


def check_sync_hierarchy(viewer: Viewer, folder_id: int) -> None:
    """An incremental sync of a hierarchy starts at a folder the user can see."""
    require(viewer, folder_id, FOLDER_VISIBLE)


def check_prune_tombstones(viewer: Viewer, folder_id: int) -> None:
    """Pruning the mailbox's old tombstones (maintenance): the folder's owner only."""
    require(viewer, folder_id, FOLDER_OWNER)


def check_see_acl(viewer: Viewer, folder_id: int) -> None:
    """Listing a folder's ACL."""
    require(viewer, folder_id, FOLDER_VISIBLE)


def check_manage_acl(viewer: Viewer, folder_id: int) -> None:
    """Changing a folder's ACL."""
    require(viewer, folder_id, FOLDER_OWNER)


__all__ = [
    "ALL_RIGHTS",
    "CREATE",
    "CREATE_SUBFOLDER",
    "DEFAULT_MEMBER",
    "DELETE_ANY",
    "DELETE_OWNED",
    "EDIT_ANY",
    "EDIT_OWNED",
    "FOLDER_CONTACT",
    "FOLDER_OWNER",
    "FOLDER_VISIBLE",
    "READ_ANY",
    "ROLES",
    "Viewer",
    "access_flags",
    "can_see",
    "check_copy_folder",
    "check_copy_messages",
    "check_create_message",
    "check_create_subfolder",
    "check_delete_folder",
    "check_delete_messages",
    "check_destroy_subtree",
    "check_empty_folder",
    "check_manage_acl",
    "check_modify_folder",
    "check_open_folder",
    "check_read_contents",
    "check_rights",
    "check_see_acl",
    "parse_rights",
    "require",
    "role_name",
]
