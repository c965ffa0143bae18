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
"""

from __future__ import annotations

from typing import Final

# The rights model lives in mapi.model.rights (a client imports it without the store);
# its names stay importable from here.
from mapi.model.rights import (
    ALL_RIGHTS,
    CREATE,
    CREATE_SUBFOLDER,
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
from mapi.storage.acl import DEFAULT_MEMBER, SqliteAcl
from mapi.storage.api import Txn

# Transitional: the ``(conn, ...)`` helpers below serve callers not yet on
# ``MailboxDB.acl`` (they assume the SQLite backend); they go once every caller is.
_SQLITE: Final = SqliteAcl()


def folder_rights(txn: Txn, folder_id: int, member: str) -> int:
    """Rights of ``member`` (not the owner) on a folder: its row, else the default row.
    Transitional: ``db.acl.rights(txn, folder_id, member)`` is the same."""
    return _SQLITE.rights(txn, folder_id, member)


def set_member(txn: Txn, folder_id: int, member: str, rights: int) -> None:
    """Set (rights > 0) or remove (rights == 0) the ACL row of a member.
    Transitional: ``db.acl.set(txn, folder_id, member, rights)`` is the same."""
    _SQLITE.set(txn, folder_id, member, rights)


def members(txn: Txn, folder_id: int) -> list[tuple[str, int]]:
    """The ACL rows of a folder, as (member, rights), sorted by member.
    Transitional: ``db.acl.members(txn, folder_id)`` is the same."""
    return _SQLITE.members(txn, folder_id)


def grants_anything(txn: Txn, member: str) -> bool:
    """True when some folder grants ``member`` (or everyone) any right.
    Transitional: ``db.acl.grants_anything(txn, member)`` is the same."""
    return _SQLITE.grants_anything(txn, member)


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
    "check_rights",
    "folder_rights",
    "grants_anything",
    "members",
    "parse_rights",
    "role_name",
    "set_member",
]
