"""The standard hierarchy, folder names and folder properties.

Theory of operation
-------------------
The folder model of :mod:`mapi.objects.folders` ([MS-OXCFOLD], [MS-OXOSFLD]) above the
storage layer: the standard folders a new mailbox gets (each with a *role*, so special
folders are found without trusting display names), folder-name rules, and
:func:`folder_props`, the stored and computed properties of a folder (the counts come
from the storage layer, which computes them and never stores them). The rows live
behind ``MailboxDB.folders`` (:mod:`mapi.storage.folders` in the SQLite backend);
everything here runs inside the caller's transaction or read snapshot and passes its
handle on.
"""

from __future__ import annotations

from typing import Any, Final

from mapi.model import errors
from mapi.model import proptags as pt
from mapi.model.entryid import change_key, instance_key
from mapi.model.properties import PropData
from mapi.objects.context import StoreContext
from mapi.storage.api import FolderRow, StandardFolder, Txn

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


#: :data:`STANDARD_FOLDERS` as the storage layer creates them.
STANDARD_HIERARCHY: Final = tuple(
    StandardFolder(
        role, parent, name, ftype, {} if klass is None else {pt.PR_CONTAINER_CLASS_W: klass}
    )
    for role, parent, name, klass, ftype in STANDARD_FOLDERS
)


def check_name(name: object, limits: Any) -> str:
    """``name`` if it is a valid folder name.

    Raises:
        InvalidParameter: not a string, empty, too long, or containing NUL.
    """
    if not isinstance(name, str) or not 0 < len(name) <= limits.max_folder_name_chars:
        raise errors.InvalidParameter("bad folder name")
    if "\x00" in name:
        raise errors.InvalidParameter("folder name contains NUL")
    return name


def folder_props(ctx: StoreContext, txn: Txn, row: FolderRow) -> dict[int, PropData]:
    """Stored and computed properties of a folder (``row``: as ``db.folders`` reads it)."""
    folders = ctx.db.folders
    fid = row.id
    props = dict(row.props)
    counts = folders.counts(txn, fid)
    eid = ctx.folder_eid(fid)
    props.update(
        {
            pt.PR_DISPLAY_NAME_W: row.name,
            pt.PR_ENTRYID: eid,
            pt.PR_RECORD_KEY: eid,
            pt.PR_INSTANCE_KEY: instance_key(fid),
            pt.PR_STORE_ENTRYID: ctx.store_eid(),
            pt.PR_STORE_RECORD_KEY: ctx.uid,
            pt.PR_MAPPING_SIGNATURE: ctx.uid,
            pt.PR_OBJECT_TYPE: pt.MAPI_FOLDER,
            pt.PR_FOLDER_TYPE: row.folder_type,
            pt.PR_CONTENT_COUNT: counts.messages,
            pt.PR_CONTENT_UNREAD: counts.unread,
            pt.PR_ASSOC_CONTENT_COUNT: 0,
            pt.PR_SUBFOLDERS: counts.subfolders > 0,
            pt.PR_FOLDER_CHILD_COUNT: counts.subfolders,
            pt.PR_CREATION_TIME: row.created,
            pt.PR_LAST_MODIFICATION_TIME: row.modified,
            pt.PR_CHANGE_KEY: change_key(ctx.uid, row.change_num),
            pt.PR_MESSAGE_SIZE: min(counts.size, 0x7FFFFFFF),
            pt.PR_MESSAGE_SIZE_EXTENDED: counts.size,
        }
    )
    if row.parent_id is not None:
        props[pt.PR_PARENT_ENTRYID] = ctx.folder_eid(row.parent_id)
    if row.role in ("root", "inbox"):
        for tag, role in ROLE_TAGS.items():
            props[tag] = ctx.folder_eid(folders.role_folder(txn, role))
    return props


__all__ = [
    "HIERARCHY_COLUMNS",
    "ROLE_TAGS",
    "STANDARD_FOLDERS",
    "STANDARD_HIERARCHY",
    "check_name",
    "folder_props",
]
