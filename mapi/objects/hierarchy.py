"""Folder rows: the standard hierarchy, row helpers and folder properties.

Theory of operation
-------------------
The SQL side of :mod:`mapi.objects.folders` ([MS-OXCFOLD], [MS-OXOSFLD]): the standard
folders a new mailbox gets (each with a *role*, so special folders are found without
trusting display names), lookups by role, ancestry and subtree queries (cycle and
depth checks, sync change numbers for moved subtrees), unique names among
siblings, and :func:`folder_props`, the stored and computed properties of a folder
row (counts are ``count(*)`` over the indexes, never stored). Everything here runs
inside the caller's transaction or read snapshot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.entryid import change_key, instance_key
from mapi.model.properties import PropData, pack_props, unpack_props
from mapi.objects.context import StoreContext

FOLDER_SELECT: Final = (
    "id, parent_id, name, folder_type, role, created, modified, change_num, props"
)

#: (role, parent role, display name, container class, folder type)
STANDARD_FOLDERS: Final = (
    ("root", None, "", None, pt.FOLDER_ROOT),
    ("ipm_subtree", "root", "Top of Information Store", None, pt.FOLDER_GENERIC),
    ("inbox", "ipm_subtree", "Inbox", "IPF.Note", pt.FOLDER_GENERIC),
    ("outbox", "ipm_subtree", "Outbox", "IPF.Note", pt.FOLDER_GENERIC),
    ("sent", "ipm_subtree", "Sent Items", "IPF.Note", pt.FOLDER_GENERIC),
    ("deleted", "ipm_subtree", "Deleted Items", "IPF.Note", pt.FOLDER_GENERIC),
    ("drafts", "ipm_subtree", "Drafts", "IPF.Note", pt.FOLDER_GENERIC),
    ("calendar", "ipm_subtree", "Calendar", "IPF.Appointment", pt.FOLDER_GENERIC),
    ("contacts", "ipm_subtree", "Contacts", "IPF.Contact", pt.FOLDER_GENERIC),
    ("tasks", "ipm_subtree", "Tasks", "IPF.Task", pt.FOLDER_GENERIC),
    ("notes", "ipm_subtree", "Notes", "IPF.StickyNote", pt.FOLDER_GENERIC),
    ("journal", "ipm_subtree", "Journal", "IPF.Journal", pt.FOLDER_GENERIC),
)

#: Special-folder entry ids published on the root folder and the Inbox.
ROLE_TAGS: Final = {
    pt.PR_IPM_APPOINTMENT_ENTRYID: "calendar",
    pt.PR_IPM_CONTACT_ENTRYID: "contacts",
    pt.PR_IPM_JOURNAL_ENTRYID: "journal",
    pt.PR_IPM_NOTE_ENTRYID: "notes",
    pt.PR_IPM_TASK_ENTRYID: "tasks",
    pt.PR_IPM_DRAFTS_ENTRYID: "drafts",
}

HIERARCHY_COLUMNS: Final = (
    pt.PR_ENTRYID,
    pt.PR_INSTANCE_KEY,
    pt.PR_DISPLAY_NAME_W,
    pt.PR_CONTENT_COUNT,
    pt.PR_CONTENT_UNREAD,
    pt.PR_SUBFOLDERS,
    pt.PR_DEPTH,
)


def ensure_standard_folders(conn: sqlite3.Connection, now: int) -> None:
    """Create the standard folders if the mailbox has none (inside a transaction)."""
    if conn.execute("SELECT 1 FROM folders WHERE role = 'root'").fetchone():
        return
    ids: dict[str, int] = {}
    for role, parent, name, klass, ftype in STANDARD_FOLDERS:
        props: dict[int, PropData] = {} if klass is None else {pt.PR_CONTAINER_CLASS_W: klass}
        ids[role] = conn.execute(
            "INSERT INTO folders(parent_id, name, folder_type, role, created, modified,"
            " change_num, props) VALUES (?, ?, ?, ?, ?, ?, 0, ?) RETURNING id",
            (ids.get(parent) if parent else None, name, ftype, role, now, now, pack_props(props)),
        ).fetchone()[0]


def role_folder(conn: sqlite3.Connection, role: str) -> int:
    """The id of the special folder with ``role``."""
    row = conn.execute("SELECT id FROM folders WHERE role = ?", (role,)).fetchone()
    if row is None:
        raise errors.NotFound(f"no {role} folder")
    return int(row[0])


def _row(conn: sqlite3.Connection, folder_id: int) -> Sequence[Any]:
    row = conn.execute(f"SELECT {FOLDER_SELECT} FROM folders WHERE id = ?", (folder_id,)).fetchone()
    if row is None:
        raise errors.ObjectDeleted(f"folder {folder_id} does not exist")
    return tuple(row)


def _ancestors(conn: sqlite3.Connection, folder_id: int) -> list[int]:
    rows = conn.execute(
        "WITH RECURSIVE up(id, parent_id) AS ("
        " SELECT id, parent_id FROM folders WHERE id = ?"
        " UNION ALL SELECT f.id, f.parent_id FROM folders f JOIN up ON f.id = up.parent_id)"
        " SELECT id FROM up",
        (folder_id,),
    )
    return [int(r[0]) for r in rows]


def _subtree(conn: sqlite3.Connection, folder_id: int) -> list[int]:
    """``folder_id`` and every folder below it."""
    rows = conn.execute(
        "WITH RECURSIVE down(id) AS (SELECT ?"
        " UNION ALL SELECT f.id FROM folders f JOIN down ON f.parent_id = down.id)"
        " SELECT id FROM down",
        (folder_id,),
    )
    return [int(r[0]) for r in rows]


def _subtree_height(conn: sqlite3.Connection, folder_id: int) -> int:
    row = conn.execute(
        "WITH RECURSIVE down(id, depth) AS (SELECT ?, 0"
        " UNION ALL SELECT f.id, down.depth + 1 FROM folders f JOIN down ON f.parent_id = down.id)"
        " SELECT max(depth) FROM down",
        (folder_id,),
    ).fetchone()
    return int(row[0])


def _unique_name(conn: sqlite3.Connection, parent: int, name: str) -> str:
    candidate, n = name, 1
    while conn.execute(
        "SELECT 1 FROM folders WHERE parent_id = ? AND name = ?", (parent, candidate)
    ).fetchone():
        n += 1
        candidate = f"{name} ({n})"
    return candidate


def _touch_subtree(conn: sqlite3.Connection, folder_id: int, cn: int) -> None:
    """Give a moved folder and its descendants change number ``cn`` (for sync)."""
    conn.execute(
        "WITH RECURSIVE down(id) AS (SELECT ?"
        " UNION ALL SELECT f.id FROM folders f JOIN down ON f.parent_id = down.id)"
        " UPDATE folders SET change_num = ? WHERE id IN (SELECT id FROM down)",
        (folder_id, cn),
    )


def _check_name(name: object, limits: Any) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= limits.max_folder_name_chars:
        raise errors.InvalidParameter("bad folder name")
    if "\x00" in name:
        raise errors.InvalidParameter("folder name contains NUL")
    return name


def folder_props(
    ctx: StoreContext, conn: sqlite3.Connection, row: Sequence[Any]
) -> dict[int, PropData]:
    """Stored and computed properties of a folder row (FOLDER_SELECT order)."""
    fid = int(row[0])
    props = unpack_props(row[8])
    count, unread, size = conn.execute(
        "SELECT count(*), coalesce(sum((flags & 1) = 0), 0), coalesce(sum(size), 0)"
        " FROM messages WHERE folder_id = ?",
        (fid,),
    ).fetchone()
    children = conn.execute("SELECT count(*) FROM folders WHERE parent_id = ?", (fid,)).fetchone()[
        0
    ]
    eid = ctx.folder_eid(fid)
    props.update(
        {
            pt.PR_DISPLAY_NAME_W: row[2],
            pt.PR_ENTRYID: eid,
            pt.PR_RECORD_KEY: eid,
            pt.PR_INSTANCE_KEY: instance_key(fid),
            pt.PR_STORE_ENTRYID: ctx.store_eid(),
            pt.PR_STORE_RECORD_KEY: ctx.uid,
            pt.PR_MAPPING_SIGNATURE: ctx.uid,
            pt.PR_OBJECT_TYPE: pt.MAPI_FOLDER,
            pt.PR_FOLDER_TYPE: row[3],
            pt.PR_CONTENT_COUNT: count,
            pt.PR_CONTENT_UNREAD: unread,
            pt.PR_ASSOC_CONTENT_COUNT: 0,
            pt.PR_SUBFOLDERS: children > 0,
            pt.PR_FOLDER_CHILD_COUNT: children,
            pt.PR_CREATION_TIME: row[5],
            pt.PR_LAST_MODIFICATION_TIME: row[6],
            pt.PR_CHANGE_KEY: change_key(ctx.uid, int(row[7])),
            pt.PR_MESSAGE_SIZE: min(size, 0x7FFFFFFF),
            pt.PR_MESSAGE_SIZE_EXTENDED: size,
        }
    )
    if row[1] is not None:
        props[pt.PR_PARENT_ENTRYID] = ctx.folder_eid(int(row[1]))
    if row[4] in ("root", "inbox"):
        for tag, role in ROLE_TAGS.items():
            props[tag] = ctx.folder_eid(role_folder(conn, role))
    return props


__all__ = [
    "FOLDER_SELECT",
    "HIERARCHY_COLUMNS",
    "ROLE_TAGS",
    "STANDARD_FOLDERS",
    "ensure_standard_folders",
    "folder_props",
    "role_folder",
]
