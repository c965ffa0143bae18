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

import sqlite3
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

DEFAULT_MEMBER: Final = "default"


def folder_rights(conn: sqlite3.Connection, folder_id: int, member: str) -> int:
    """Rights of ``member`` (not the owner) on a folder: its row, else the default row."""
    row = conn.execute(
        "SELECT rights FROM acl WHERE folder_id = ? AND member IN (?, ?)"
        " ORDER BY member = ? DESC LIMIT 1",
        (folder_id, member, DEFAULT_MEMBER, member),
    ).fetchone()
    return 0 if row is None else int(row[0])


def set_member(conn: sqlite3.Connection, folder_id: int, member: str, rights: int) -> None:
    """Set (rights > 0) or remove (rights == 0) the ACL row of a member."""
    check_rights(rights)
    if rights:
        conn.execute(
            "INSERT INTO acl(folder_id, member, rights) VALUES (?, ?, ?)"
            " ON CONFLICT(folder_id, member) DO UPDATE SET rights = excluded.rights",
            (folder_id, member, rights),
        )
    else:
        conn.execute("DELETE FROM acl WHERE folder_id = ? AND member = ?", (folder_id, member))


def members(conn: sqlite3.Connection, folder_id: int) -> list[tuple[str, int]]:
    """The ACL rows of a folder, as (member, rights), sorted by member."""
    rows = conn.execute(
        "SELECT member, rights FROM acl WHERE folder_id = ? ORDER BY member", (folder_id,)
    )
    return [(str(m), int(r)) for m, r in rows]


def grants_anything(conn: sqlite3.Connection, member: str) -> bool:
    """True when some folder grants ``member`` (or everyone) any right."""
    row = conn.execute(
        "SELECT 1 FROM acl WHERE member IN (?, ?) AND rights <> 0 LIMIT 1",
        (member, DEFAULT_MEMBER),
    ).fetchone()
    return row is not None


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
